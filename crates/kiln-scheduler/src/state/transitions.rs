//! The task state machine: how a task moves between released, waiting, queued, no-worker,
//! processing, memory and erred, and what each move does to its neighbours' counters.
//!
//! Kept apart from the event handlers so that every rule about task states sits in one file:
//! the event handlers decide *which* transition an outside message asks for; this module
//! decides what that transition means. Walks over dependents are iterative (deep chains).

use kiln_graph::Key;
use kiln_graph::portable::InputSpec;
use kiln_protocol::messages::{ComputeTask, SchedulerToClient, SchedulerToWorker, TaskFailure, WhoHas, WorkerId};

use super::arena::{BodyInput, TaskSlot};
use super::observe::SchedulerEvent;
use super::{Command, DATASETS, SchedulerState, TaskState};

impl SchedulerState {
    /// Makes a released task and everything it needs head for memory.
    pub(super) fn compute(&mut self, root: TaskSlot) {
        // Iterative post-order walk: dependencies are decided before their dependents.
        let mut stack = std::mem::take(&mut self.stack);
        stack.clear();
        stack.push(root);
        while let Some(&t) = stack.last() {
            if self.tasks[t].state != TaskState::Released {
                stack.pop();
                continue;
            }
            let mut pending = false;
            for i in 0..self.tasks[t].deps.len() {
                let d = self.tasks[t].deps[i];
                if self.tasks[d].state == TaskState::Released {
                    stack.push(d);
                    pending = true;
                }
            }
            if pending {
                continue;
            }
            stack.pop();
            self.start_waiting(t);
        }
        self.stack = stack;
    }

    /// Released → waiting (its released dependencies are already waiting or further).
    pub(super) fn start_waiting(&mut self, t: TaskSlot) {
        if self.tasks[t].body.is_none() {
            // Scattered data that was lost cannot come back.
            let key = self.tasks[t].key.clone();
            let failure = TaskFailure::raised(
                key,
                "this value was scattered by a client and is lost (its worker left); it cannot be recomputed",
            );
            self.err(t, failure);
            return;
        }
        let mut waiting_on = 0;
        let mut failed = None;
        for i in 0..self.tasks[t].deps.len() {
            let d = self.tasks[t].deps[i];
            match self.tasks[d].state {
                TaskState::Memory => {}
                TaskState::Erred => failed = self.tasks[d].failure.as_deref().cloned(),
                _ => waiting_on += 1,
            }
            self.tasks[d].waiters += 1;
        }
        self.tasks[t].waiting_on = waiting_on;
        self.set_state(t, TaskState::Waiting);
        if let Some(failure) = failed {
            self.err(t, failure);
        } else if waiting_on == 0 {
            self.ready(t);
        }
    }

    /// Inputs all in memory: queue (roots), assign, or park without workers.
    pub(super) fn ready(&mut self, t: TaskSlot) {
        let task = &self.tasks[t];
        if !self.has_running_worker() {
            // No worker, or every one paused: wait for one to join or resume.
            self.no_worker.insert((task.priority, t));
            self.set_state(t, TaskState::NoWorker);
            return;
        }
        if task.deps.is_empty() {
            self.queued.insert((task.priority, t));
            self.set_state(t, TaskState::Queued);
            self.roots_added = true;
            return;
        }
        let w = self.place(t);
        self.assign(t, w);
    }

    pub(super) fn assign(&mut self, t: TaskSlot, w: WorkerId) {
        let estimate = self.estimate_us(t);
        let task = &mut self.tasks[t];
        task.processing_on = Some(w);
        task.charged_us = estimate as f32;
        let estimate = task.charged_us as f64;
        let worker = self.workers.get_mut(&w).expect("assign to a known worker");
        worker.processing.insert(t);
        self.idle.remove(&w);
        worker.occupancy_us += estimate;
        self.set_state(t, TaskState::Processing);
        let task = &self.tasks[t];
        let body = task.body.as_ref().expect("only tasks with a body are computed");
        let mut who_has = Vec::new();
        let inputs = body
            .inputs
            .iter()
            .map(|i| match i {
                BodyInput::Dep(d) => {
                    let dep = &self.tasks[*d];
                    if !dep.who_has.contains(&w) && !who_has.iter().any(|h: &WhoHas| h.key == dep.key) {
                        who_has.push(WhoHas {
                            key: dep.key.clone(),
                            holders: dep.who_has.to_vec(),
                            nbytes: dep.nbytes,
                        });
                    }
                    InputSpec::Task(dep.key.clone())
                }
                BodyInput::Literal(e) => InputSpec::Literal((**e).clone()),
            })
            .collect();
        let compute = ComputeTask {
            key: task.key.clone(),
            kernel: (*body.kernel).clone(),
            inputs,
            who_has,
            priority: task.priority,
        };
        self.commands.push(Command::Worker(w, SchedulerToWorker::Compute(compute)));
    }

    /// Takes a processing task off its worker's books.
    pub(super) fn unassign(&mut self, t: TaskSlot) {
        let task = &mut self.tasks[t];
        let estimate = task.charged_us as f64;
        let Some(w) = task.processing_on.take() else { return };
        if let Some(worker) = self.workers.get_mut(&w) {
            worker.processing.remove(&t);
            worker.occupancy_us = (worker.occupancy_us - estimate).max(0.0);
            if worker.processing.is_empty() {
                self.idle.insert(w);
            }
        }
    }

    /// Task `key` finished on `worker`; `ran` is when it started and on which thread, if it
    /// ran there just now (the task stream's rectangle).
    pub(super) fn finished(
        &mut self,
        worker: WorkerId,
        key: &Key,
        nbytes: u64,
        duration_us: u64,
        ran: Option<(u64, u32)>,
    ) {
        let Some(t) = self.find(key) else {
            self.free_on(worker, key.clone());
            return;
        };
        let task = &self.tasks[t];
        if task.state != TaskState::Processing || task.processing_on != Some(worker) {
            if task.state == TaskState::Memory {
                self.add_replica(t, worker, nbytes);
            } else {
                // A result nobody asked this worker for any more.
                self.free_on(worker, key.clone());
            }
            return;
        }
        if let Some((started_us, thread)) = ran
            && self.records_runs()
        {
            self.record_ran(t, worker, nbytes, Some((started_us, duration_us, thread)));
        }
        self.unassign(t);
        if let Some(w) = self.workers.get_mut(&worker) {
            w.finished += 1;
        }
        if let Some(name) = self.names.get_mut(self.tasks[t].key.shared_name()) {
            name.done += 1;
        }
        {
            let p = &mut self.prefixes[self.tasks[t].prefix as usize];
            p.finished += 1;
            p.compute_us += duration_us as f64;
            p.output_bytes += nbytes;
            // An exponential moving average learns fast and follows drift.
            let alpha = if p.finished == 1 { 1.0 } else { 0.2 };
            p.duration_us += alpha * (duration_us as f64 - p.duration_us);
            p.nbytes += alpha * (nbytes as f64 - p.nbytes);
        }
        let task = &mut self.tasks[t];
        task.nbytes = nbytes;
        task.who_has.clear();
        task.who_has.push(worker);
        task.suspicious = 0;
        self.set_state(t, TaskState::Memory);
        if let Some(w) = self.workers.get_mut(&worker) {
            w.has_what.insert(t);
            w.nbytes += nbytes;
        }
        for i in 0..self.tasks[t].wanted_by.len() {
            let client = self.tasks[t].wanted_by[i];
            if client != DATASETS {
                let task = &self.tasks[t];
                let message =
                    SchedulerToClient::InMemory { key: task.key.clone(), holders: task.who_has.to_vec(), nbytes };
                self.commands.push(Command::Client(client, message));
            }
        }
        self.inputs_arrived(t);
        self.leave_active(t);
        if self.tasks[t].wanted_by.is_empty() && self.tasks[t].waiters == 0 {
            self.release(t);
        }
        self.fill_slots(worker);
    }

    pub(super) fn add_replica(&mut self, t: TaskSlot, worker: WorkerId, nbytes: u64) {
        if self.replicating.get(&t) == Some(&worker) {
            self.replicating.remove(&t);
            // Its bytes were counted when the copy was requested.
            if let Some(w) = self.workers.get_mut(&worker) {
                w.nbytes = w.nbytes.saturating_sub(nbytes);
            }
        }
        let task = &mut self.tasks[t];
        if task.who_has.contains(&worker) {
            return;
        }
        task.who_has.push(worker);
        task.nbytes = nbytes;
        let was = task.state;
        if let Some(w) = self.workers.get_mut(&worker) {
            w.has_what.insert(t);
            w.nbytes += nbytes;
        }
        if was != TaskState::Memory {
            if was.is_active() {
                if was == TaskState::Processing {
                    self.unassign(t);
                }
                self.queued.remove(&(self.tasks[t].priority, t));
                self.no_worker.remove(&(self.tasks[t].priority, t));
                self.leave_active(t);
            }
            self.set_state(t, TaskState::Memory);
            self.inputs_arrived(t);
        }
    }

    /// `t` is now in memory: its waiting dependents are one input closer to ready.
    pub(super) fn inputs_arrived(&mut self, t: TaskSlot) {
        for i in 0..self.tasks[t].dependents.len() {
            let d = self.tasks[t].dependents[i];
            let dep = &mut self.tasks[d];
            if dep.state == TaskState::Waiting {
                dep.waiting_on -= 1;
                if dep.waiting_on == 0 {
                    self.ready(d);
                }
            }
        }
    }

    /// A task leaves the active states: its inputs lose a waiter, and may be released.
    pub(super) fn leave_active(&mut self, t: TaskSlot) {
        for i in 0..self.tasks[t].deps.len() {
            let d = self.tasks[t].deps[i];
            let dep = &mut self.tasks[d];
            dep.waiters -= 1;
            if dep.waiters == 0 && dep.wanted_by.is_empty() {
                // Deferred: releasing may release its own inputs, and chains are deep.
                self.pending_release.push(d);
            }
        }
    }

    /// Queues `key` to be freed on `worker`; one `Free` per worker goes out when the event ends.
    pub(super) fn free_on(&mut self, worker: WorkerId, key: Key) {
        self.pending_free.entry(worker).or_default().push(key);
    }

    /// Nobody wants `t` and no active dependent needs it: stop computing it or free it.
    pub(super) fn release_if_unneeded(&mut self, t: TaskSlot) {
        let task = &self.tasks[t];
        if !task.wanted_by.is_empty() || task.waiters > 0 {
            return;
        }
        match task.state {
            TaskState::Processing => {
                let w = task.processing_on;
                let key = task.key.clone();
                self.unassign(t);
                if let Some(w) = w {
                    self.free_on(w, key);
                }
                self.leave_active(t);
                self.set_state(t, TaskState::Released);
                self.forget_if_unreferenced(t);
            }
            TaskState::Queued | TaskState::NoWorker | TaskState::Waiting => {
                let priority = task.priority;
                self.queued.remove(&(priority, t));
                self.no_worker.remove(&(priority, t));
                self.leave_active(t);
                self.set_state(t, TaskState::Released);
                self.forget_if_unreferenced(t);
            }
            TaskState::Memory => self.release(t),
            TaskState::Released | TaskState::Erred => self.forget_if_unreferenced(t),
        }
    }

    /// Memory → released: the holders free it.
    pub(super) fn release(&mut self, t: TaskSlot) {
        let task = &mut self.tasks[t];
        if task.state == TaskState::Memory {
            let holders = std::mem::take(&mut task.who_has);
            let nbytes = task.nbytes;
            let key = task.key.clone();
            self.set_state(t, TaskState::Released);
            for w in holders {
                if let Some(worker) = self.workers.get_mut(&w) {
                    worker.has_what.remove(&t);
                    worker.nbytes = worker.nbytes.saturating_sub(nbytes);
                    self.free_on(w, key.clone());
                }
            }
        }
        self.forget_if_unreferenced(t);
    }

    /// Marks `t` and its active dependents erred and tells the clients that want them.
    pub(super) fn err(&mut self, t: TaskSlot, failure: TaskFailure) {
        if !matches!(self.tasks[t].state, TaskState::Erred | TaskState::Memory) {
            self.record(|s| SchedulerEvent::TaskErred { key: s.tasks[t].key.clone(), failure: failure.clone() });
        }
        let mut stack = vec![t];
        let mut erred = Vec::new();
        while let Some(t) = stack.pop() {
            let task = &self.tasks[t];
            if task.state == TaskState::Erred || task.state == TaskState::Memory {
                continue;
            }
            let was = task.state;
            if was == TaskState::Processing {
                self.unassign(t);
            }
            let priority = self.tasks[t].priority;
            self.queued.remove(&(priority, t));
            self.no_worker.remove(&(priority, t));
            if was.is_active() {
                self.leave_active(t);
            }
            self.tasks[t].failure = Some(Box::new(failure.clone()));
            self.set_state(t, TaskState::Erred);
            let task = &self.tasks[t];
            for &client in &task.wanted_by {
                if client != DATASETS {
                    self.commands.push(Command::Client(
                        client,
                        SchedulerToClient::Erred { key: task.key.clone(), failure: failure.clone() },
                    ));
                }
            }
            for i in 0..self.tasks[t].dependents.len() {
                let d = self.tasks[t].dependents[i];
                if self.tasks[d].state.is_active() {
                    stack.push(d);
                }
            }
            erred.push(t);
        }
        for t in erred {
            self.forget_if_unreferenced(t);
        }
    }

    /// A processing task whose worker died or handed it back goes back to waiting.
    pub(super) fn reset_to_waiting(&mut self, t: TaskSlot) {
        let task = &self.tasks[t];
        if !task.state.is_active() {
            return;
        }
        let priority = task.priority;
        self.queued.remove(&(priority, t));
        self.no_worker.remove(&(priority, t));
        // Leaving and re-entering the active set keeps the waiter counts exact.
        self.leave_active_without_release(t);
        self.set_state(t, TaskState::Released);
        if self.tasks[t].wanted_by.is_empty() && self.tasks[t].waiters == 0 {
            self.forget_if_unreferenced(t);
            return;
        }
        self.compute(t);
    }

    pub(super) fn leave_active_without_release(&mut self, t: TaskSlot) {
        for i in 0..self.tasks[t].deps.len() {
            let d = self.tasks[t].deps[i];
            self.tasks[d].waiters -= 1;
        }
    }

    /// A value lost its last replica: recompute it if someone still needs it.
    pub(super) fn lose(&mut self, t: TaskSlot) {
        self.set_state(t, TaskState::Released);
        let task = &self.tasks[t];
        let needed = !task.wanted_by.is_empty() || task.waiters > 0;
        // Dependents already waiting counted it as done; they wait for it again.
        for i in 0..self.tasks[t].dependents.len() {
            let d = self.tasks[t].dependents[i];
            let dep = &mut self.tasks[d];
            match dep.state {
                TaskState::Waiting => dep.waiting_on += 1,
                TaskState::Queued | TaskState::NoWorker | TaskState::Processing => {
                    // It was ready with this input; it must wait for the recomputation.
                    let was = dep.state;
                    let priority = dep.priority;
                    if was == TaskState::Processing {
                        let w = dep.processing_on;
                        let key = dep.key.clone();
                        self.unassign(d);
                        if let Some(w) = w {
                            self.free_on(w, key);
                        }
                    }
                    self.queued.remove(&(priority, d));
                    self.no_worker.remove(&(priority, d));
                    self.tasks[d].waiting_on = 1;
                    self.set_state(d, TaskState::Waiting);
                }
                _ => {}
            }
        }
        if needed {
            self.compute(t);
        } else {
            self.forget_if_unreferenced(t);
        }
    }
}
