//! Invariants: every cross-reference the state keeps (index ↔ slot, deps ↔ dependents,
//! waiter counts, worker books ↔ task fields, client wants ↔ task wants, occupancy ↔ charges)
//! checked in one pass. Tests call [`SchedulerState::check_invariants`] after every event.
//!
//! The violation is a typed error naming the broken rule, so a test can print it and a
//! future caller can match on it.

use std::sync::Arc;

use kiln_graph::Key;
use kiln_protocol::messages::{ClientId, WorkerId};
use thiserror::Error;

use super::arena::TaskSlot;
use super::{DATASETS, SchedulerState, TaskState};

/// The first broken invariant [`SchedulerState::check_invariants`] found.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum InvariantViolation {
    /// A task breaks a rule about itself or its neighbours.
    #[error("task {key}: {rule}")]
    Task {
        /// The task.
        key: Key,
        /// What is wrong.
        rule: String,
    },
    /// A worker's books disagree with the tasks.
    #[error("worker {worker}: {rule}")]
    Worker {
        /// The worker.
        worker: WorkerId,
        /// What is wrong.
        rule: String,
    },
    /// A client's wants disagree with the tasks.
    #[error("client {client}: {rule}")]
    Client {
        /// The client.
        client: ClientId,
        /// What is wrong.
        rule: String,
    },
    /// Scheduler-wide bookkeeping (interned names, kernels, in-flight copies) is off.
    #[error("scheduler: {0}")]
    State(String),
}

impl SchedulerState {
    /// Checks every internal invariant; tests call it after every event.
    ///
    /// # Errors
    /// The first violated invariant: which task, worker or client, and what is wrong.
    pub fn check_invariants(&self) -> Result<(), InvariantViolation> {
        for (i, task) in self.tasks.iter().enumerate() {
            if task.live {
                let t = TaskSlot::new(i as u32);
                self.check_task(t).map_err(|rule| InvariantViolation::Task { key: task.key.clone(), rule })?;
            }
        }
        for w in self.workers.values() {
            self.check_worker(w.info.id).map_err(|rule| InvariantViolation::Worker { worker: w.info.id, rule })?;
        }
        for &c in self.clients.keys() {
            self.check_client(c).map_err(|rule| InvariantViolation::Client { client: c, rule })?;
        }
        self.check_bookkeeping().map_err(InvariantViolation::State)
    }

    fn is_live(&self, t: TaskSlot) -> bool {
        self.tasks.get(t).is_some_and(|x| x.live)
    }

    fn check_task(&self, t: TaskSlot) -> Result<(), String> {
        let live = |t: TaskSlot| self.is_live(t);
        let task = &self.tasks[t];
        let k: &Key = &task.key;
        if self.find(k) != Some(t) {
            return Err("index does not map to its slot".into());
        }
        for &d in &task.deps {
            if !live(d) {
                return Err(format!("dependency slot {d} is forgotten"));
            }
            if !self.tasks[d].dependents.contains(&t) {
                return Err("not among its dependency's dependents".into());
            }
        }
        for &d in &task.dependents {
            if !live(d) || !self.tasks[d].deps.contains(&t) {
                return Err(format!("dependent {d} does not list it"));
            }
        }
        let waiters = task.dependents.iter().filter(|&&d| self.tasks[d].state.is_active()).count() as u32;
        if waiters != task.waiters {
            return Err(format!("waiters {} but {} active dependents", task.waiters, waiters));
        }
        match task.state {
            TaskState::Waiting => {
                let not_ready = task.deps.iter().filter(|&&d| self.tasks[d].state != TaskState::Memory).count() as u32;
                if not_ready != task.waiting_on || not_ready == 0 {
                    return Err(format!("waiting on {} but {} inputs not in memory", task.waiting_on, not_ready));
                }
                for &d in &task.deps {
                    let ds = self.tasks[d].state;
                    if !matches!(ds, TaskState::Memory) && !ds.is_active() {
                        return Err(format!("waits on {} which is {ds:?}", self.tasks[d].key));
                    }
                }
            }
            TaskState::Queued | TaskState::NoWorker | TaskState::Processing => {
                if let Some(&d) = task.deps.iter().find(|&&d| self.tasks[d].state != TaskState::Memory) {
                    return Err(format!("{:?} but input {} is not in memory", task.state, self.tasks[d].key));
                }
            }
            _ => {}
        }
        let in_queue = self.queued.contains(&(task.priority, t));
        if in_queue != (task.state == TaskState::Queued) {
            return Err(format!("state {:?} but queued={in_queue}", task.state));
        }
        let parked = self.no_worker.contains(&(task.priority, t));
        if parked != (task.state == TaskState::NoWorker) {
            return Err(format!("state {:?} but no-worker={parked}", task.state));
        }
        if task.state == TaskState::Processing {
            match task.processing_on.and_then(|w| self.workers.get(&w)) {
                Some(w) if w.processing.contains(&t) => {}
                _ => return Err(format!("processing on {:?} which does not list it", task.processing_on)),
            }
        } else if task.processing_on.is_some() {
            return Err(format!("{:?} but processing_on is set", task.state));
        }
        if (task.state == TaskState::Memory) == task.who_has.is_empty() {
            return Err(format!("state {:?} with {} holders", task.state, task.who_has.len()));
        }
        for w in &task.who_has {
            match self.workers.get(w) {
                Some(worker) if worker.has_what.contains(&t) => {}
                _ => return Err(format!("held by {w} which does not list it")),
            }
        }
        if task.state == TaskState::Erred && task.failure.is_none() {
            return Err("erred without a failure".into());
        }
        for c in &task.wanted_by {
            if *c != DATASETS && !self.clients.get(c).is_some_and(|cl| cl.wants.contains(&t)) {
                return Err(format!("wanted by client {c} which does not list it"));
            }
        }
        // Nothing needs a released task: it would never be computed.
        if task.state == TaskState::Released && !task.wanted_by.is_empty() && task.body.is_some() {
            return Err("released but wanted".into());
        }
        Ok(())
    }

    fn check_worker(&self, id: WorkerId) -> Result<(), String> {
        let live = |t: TaskSlot| self.is_live(t);
        let w = &self.workers[&id];
        let charged: f64 = w.processing.iter().map(|&t| self.tasks[t].charged_us as f64).sum();
        if (charged - w.occupancy_us).abs() > 1e-6 * charged.max(1.0) * (w.processing.len() + 1) as f64 {
            return Err(format!("occupancy {} µs but its tasks were charged {charged} µs", w.occupancy_us));
        }
        for &t in &w.processing {
            if !live(t) || self.tasks[t].processing_on != Some(id) {
                return Err(format!("lists processing slot {t} that is not processing there"));
            }
        }
        for &t in &w.has_what {
            if !live(t) || !self.tasks[t].who_has.contains(&id) {
                return Err(format!("lists held slot {t} that does not name it"));
            }
        }
        Ok(())
    }

    fn check_client(&self, c: ClientId) -> Result<(), String> {
        for &t in &self.clients[&c].wants {
            if !self.is_live(t) || !self.tasks[t].wanted_by.contains(&c) {
                return Err(format!("wants slot {t} that does not name it"));
            }
        }
        Ok(())
    }

    fn check_bookkeeping(&self) -> Result<(), String> {
        let live = |t: TaskSlot| self.is_live(t);
        for (&t, target) in &self.replicating {
            if !live(t) || !self.workers.contains_key(target) {
                return Err(format!("copy of slot {t} to worker {target} refers to a forgotten task or worker"));
            }
        }
        for (&t, thief) in &self.steals {
            if !live(t) || !self.workers.contains_key(thief) {
                return Err(format!("steal of slot {t} to worker {thief} refers to a forgotten task or worker"));
            }
        }
        if self.task_count() == 0 && !self.names.is_empty() {
            return Err(format!("{} names are interned while no task is known", self.names.len()));
        }
        if let Some(k) = self.kernels.iter().find(|k| Arc::strong_count(k) < 2) {
            return Err(format!("kernel spec {} is interned but no task uses it", k.id));
        }
        if self.has_running_worker() && !self.no_worker.is_empty() {
            return Err("tasks wait for workers while a worker is running (not paused)".into());
        }
        Ok(())
    }
}
