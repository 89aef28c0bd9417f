//! Graceful retirement: a retiring worker gets no new work, its unique results are copied to
//! workers that stay, and only then is it told to leave, so retiring never loses data.
//!
//! Separate because it is a small protocol of its own (acquire, received, close) that runs at
//! the end of every event while any worker is retiring.

use std::collections::BTreeMap;

use kiln_protocol::messages::{SchedulerToWorker, WhoHas, WorkerId};

use super::arena::TaskSlot;
use super::observe::SchedulerEvent;
use super::{Command, SchedulerState};

impl SchedulerState {
    /// Retires workers: no new work goes to them, their unique results are copied to workers
    /// that stay, then they are told to leave. A worker is not retired while it is the only
    /// one left to hold data.
    /// Retires workers on an operator's request (the dashboard's `retire_workers`), as a
    /// client's [`kiln_protocol::messages::ClientToScheduler::RetireWorkers`] does. Returns the
    /// ids that are not registered workers (nothing is done for those).
    pub fn retire(&mut self, ids: &[WorkerId]) -> Vec<WorkerId> {
        let unknown: Vec<WorkerId> = ids.iter().copied().filter(|w| !self.workers.contains_key(w)).collect();
        self.retire_workers(ids);
        self.finish_event();
        unknown
    }

    pub(super) fn retire_workers(&mut self, ids: &[WorkerId]) {
        for &id in ids {
            if self.workers.contains_key(&id) && self.retiring.insert(id) {
                self.record(|_| SchedulerEvent::WorkerRetiring(id));
                self.idle.remove(&id);
            }
        }
        self.advance_retirements();
    }

    pub(super) fn advance_retirements(&mut self) {
        let staying: Vec<WorkerId> = self.workers.keys().copied().filter(|w| !self.retiring.contains(w)).collect();
        let retiring: Vec<WorkerId> = self.retiring.iter().copied().filter(|w| !self.closing.contains(w)).collect();
        for id in retiring {
            let w = &self.workers[&id];
            let unique: Vec<TaskSlot> = w
                .has_what
                .iter()
                .copied()
                .filter(|&t| {
                    let task = &self.tasks[t];
                    task.who_has.len() == 1 && (!task.wanted_by.is_empty() || task.waiters > 0)
                })
                .collect();
            if unique.is_empty() && w.processing.is_empty() {
                self.closing.insert(id);
                let reason = "retired: its results are held elsewhere".to_string();
                self.commands.push(Command::Worker(id, SchedulerToWorker::Close { reason }));
                continue;
            }
            if staying.is_empty() {
                continue;
            }
            let mut batches: BTreeMap<WorkerId, Vec<WhoHas>> = BTreeMap::new();
            for t in unique {
                if self.replicating.contains_key(&t) {
                    continue;
                }
                // The staying worker holding the fewest bytes takes it.
                let target = *staying.iter().min_by_key(|w| self.workers[*w].nbytes).expect("non-empty");
                self.replicating.insert(t, target);
                if let Some(tw) = self.workers.get_mut(&target) {
                    // Counted now so the next pick spreads the load.
                    tw.nbytes += self.tasks[t].nbytes;
                }
                let task = &self.tasks[t];
                let located = WhoHas { key: task.key.clone(), holders: vec![id], nbytes: task.nbytes };
                batches.entry(target).or_default().push(located);
            }
            for (target, keys) in batches {
                self.commands.push(Command::Worker(target, SchedulerToWorker::Acquire { keys }));
            }
        }
    }
}
