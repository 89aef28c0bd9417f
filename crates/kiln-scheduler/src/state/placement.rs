//! Placement and stealing: which worker runs a task, how many root tasks a worker may hold,
//! and moving queued work from saturated workers to idle ones.
//!
//! These are the scheduling *policy* (the rest of the state is bookkeeping), so a new policy
//! changes this module and [`super::Config`] and nothing else.

use kiln_graph::Key;
use kiln_protocol::messages::{Priority, SchedulerToWorker, WorkerId};
use smallvec::SmallVec;

use super::arena::TaskSlot;
use super::observe::SchedulerEvent;
use super::{Command, SchedulerState, TaskState, Worker};

impl SchedulerState {
    /// Periodic balancing (the server calls it about every 100 ms): idle workers take queued
    /// work from saturated ones when moving its inputs is cheap compared with running it.
    /// Stealing is transactional: the victim is asked first and gives the task up only if it
    /// has not started, so nothing runs twice in the normal case.
    pub(super) fn tick(&mut self, now: u64) {
        let _ = now;
        if !self.config.work_stealing || self.workers.len() < 2 {
            return;
        }
        let thieves: Vec<WorkerId> = self
            .workers
            .values()
            .filter(|w| w.processing.len() < w.info.nthreads.max(1) as usize && self.takes_work(w.info.id))
            .map(|w| w.info.id)
            .collect();
        for thief in thieves {
            let room = {
                let w = &self.workers[&thief];
                w.info.nthreads.max(1) as usize - w.processing.len().min(w.info.nthreads.max(1) as usize)
            };
            let pending_for_thief = self.steals.values().filter(|&&t| t == thief).count();
            let mut wanted = room.saturating_sub(pending_for_thief);
            while wanted > 0 {
                // The victim with the most work beyond its threads.
                let Some(victim) = self
                    .workers
                    .values()
                    .filter(|w| w.info.id != thief)
                    .map(|w| {
                        let in_flight = w.processing.iter().filter(|t| self.steals.contains_key(t)).count();
                        // A paused worker starts nothing new: all its tasks are excess.
                        let running = if w.paused { 0 } else { w.info.nthreads.max(1) as usize };
                        let excess = w.processing.len().saturating_sub(in_flight + running);
                        (excess, w.info.id)
                    })
                    .filter(|&(excess, _)| excess > 0)
                    .max()
                    .map(|(_, id)| id)
                else {
                    break;
                };
                let Some(t) = self.steal_candidate(victim, thief) else { break };
                self.steals.insert(t, thief);
                let key = self.tasks[t].key.clone();
                self.commands.push(Command::Worker(victim, SchedulerToWorker::Steal { key }));
                wanted -= 1;
            }
        }
    }

    /// The victim's task that is last in its order and cheap to move to the thief.
    pub(super) fn steal_candidate(&self, victim: WorkerId, thief: WorkerId) -> Option<TaskSlot> {
        let w = &self.workers[&victim];
        // How long the victim's last task waits: its queue's estimated work per thread.
        let wait_us = w.processing.iter().map(|&t| self.estimate_us(t)).sum::<f64>() / w.info.nthreads.max(1) as f64;
        let mut best: Option<(Priority, TaskSlot)> = None;
        for &t in &w.processing {
            if self.steals.contains_key(&t) {
                continue;
            }
            let task = &self.tasks[t];
            let transfer: u64 = task
                .deps
                .iter()
                .filter(|&&d| !self.tasks[d].who_has.contains(&thief))
                .map(|&d| self.tasks[d].nbytes)
                .sum();
            let transfer_us = transfer as f64 / self.config.bandwidth * 1e6;
            if transfer_us > self.config.steal_cost_ratio * wait_us {
                continue;
            }
            // The victim runs in priority order: its last task would wait longest.
            if best.is_none_or(|(p, _)| task.priority > p) {
                best = Some((task.priority, t));
            }
        }
        best.map(|(_, t)| t)
    }

    pub(super) fn steal_response(&mut self, victim: WorkerId, key: &Key, stolen: bool) {
        let Some(t) = self.find(key) else { return };
        let Some(thief) = self.steals.remove(&t) else { return };
        let task = &self.tasks[t];
        if !stolen || task.state != TaskState::Processing || task.processing_on != Some(victim) {
            return;
        }
        self.unassign(t);
        if !self.has_running_worker() {
            // Every worker paused meanwhile: the task waits for one to resume.
            self.reset_to_waiting(t);
            return;
        }
        let target = if self.takes_work(thief) { thief } else { self.place(t) };
        self.assign(t, target);
        self.stolen += 1;
        self.record(|s| SchedulerEvent::Stolen { key: s.tasks[t].key.clone(), from: victim, to: target });
    }

    pub(super) fn estimate_us(&self, t: TaskSlot) -> f64 {
        let p = &self.prefixes[self.tasks[t].prefix as usize];
        if p.finished > 0 { p.duration_us } else { self.config.default_duration_us }
    }

    /// How many root tasks a worker may hold, given the kind of the next queued root.
    pub(super) fn root_slots(&self, w: &Worker, next: Option<TaskSlot>) -> usize {
        let threads = w.info.nthreads.max(1) as f64;
        let base = (threads * self.config.worker_saturation).ceil().max(1.0) as usize;
        let Some(t) = next else { return base };
        let p = &self.prefixes[self.tasks[t].prefix as usize];
        if p.finished == 0 {
            return base;
        }
        // Short tasks: cover a window of work so round trips do not pace the worker, unless
        // their results would take too much memory.
        let by_time = (threads * self.config.root_window_us / p.duration_us.max(0.1)) as usize;
        let by_bytes = (self.config.root_window_bytes as f64 / p.nbytes.max(1.0)) as usize;
        base.max(by_time.min(by_bytes).min(10_000))
    }

    /// After an event that queued root tasks: every worker takes what it has room for, the
    /// least loaded first, one task at a time so the queue spreads evenly.
    pub(super) fn fill_after_event(&mut self) {
        if !std::mem::take(&mut self.roots_added) || self.queued.is_empty() {
            return;
        }
        let mut open: Vec<WorkerId> = self.workers.keys().copied().filter(|&w| self.takes_work(w)).collect();
        while !open.is_empty() && !self.queued.is_empty() {
            open.retain(|&id| {
                let Some(&(priority, t)) = self.queued.first() else { return false };
                let w = &self.workers[&id];
                if w.processing.len() >= self.root_slots(w, Some(t)) {
                    return false;
                }
                self.queued.remove(&(priority, t));
                self.assign(t, id);
                true
            });
        }
    }

    /// Gives queued root tasks to worker `id` while it has room.
    pub(super) fn fill_slots(&mut self, id: WorkerId) {
        if !self.takes_work(id) {
            return;
        }
        loop {
            let Some(&(priority, t)) = self.queued.first() else { return };
            let Some(w) = self.workers.get(&id) else { return };
            if w.processing.len() >= self.root_slots(w, Some(t)) {
                return;
            }
            self.queued.remove(&(priority, t));
            self.assign(t, id);
        }
    }

    /// The best worker for a non-root task: the one holding most of its input bytes, weighed
    /// against how busy it is.
    pub(super) fn place(&self, t: TaskSlot) -> WorkerId {
        let task = &self.tasks[t];
        let total_bytes: u64 = task.deps.iter().map(|&d| self.tasks[d].nbytes).sum();
        let cost = |w: &Worker| -> f64 {
            let local: u64 = task
                .deps
                .iter()
                .filter(|&&d| self.tasks[d].who_has.contains(&w.info.id))
                .map(|&d| self.tasks[d].nbytes)
                .sum();
            let transfer_s = (total_bytes - local) as f64 / self.config.bandwidth;
            w.occupancy_us / 1e6 / w.info.nthreads.max(1) as f64 + transfer_s
        };
        let mut best: Option<(f64, WorkerId)> = None;
        let mut consider = |w: &Worker| {
            let c = cost(w);
            if best.is_none_or(|(bc, bw)| c < bc || (c == bc && w.info.id < bw)) {
                best = Some((c, w.info.id));
            }
        };
        let mut seen: SmallVec<[WorkerId; 8]> = SmallVec::new();
        let mut any = false;
        for &d in &task.deps {
            for &w in &self.tasks[d].who_has {
                if !seen.contains(&w)
                    && self.takes_work(w)
                    && let Some(worker) = self.workers.get(&w)
                {
                    seen.push(w);
                    consider(worker);
                    any = true;
                }
            }
        }
        // Idle workers compete too: moving a little data beats waiting in a queue.
        for w in self.idle.iter().filter(|&&w| self.takes_work(w)).take(8) {
            if !seen.contains(w)
                && let Some(worker) = self.workers.get(w)
            {
                consider(worker);
                any = true;
            }
        }
        if !any {
            // Every holder is retiring or paused: the least busy worker that takes work.
            for w in self.workers.values().filter(|w| self.takes_work(w.info.id)) {
                consider(w);
                any = true;
            }
        }
        if !any {
            // Only retiring workers are running: one of them rather than a paused one.
            for w in self.workers.values().filter(|w| !w.paused) {
                consider(w);
            }
        }
        match best {
            Some((_, w)) => w,
            None => *self.workers.keys().next().expect("place is only called with workers"),
        }
    }
}
