//! A typed stream of what the scheduler did, for observers (the dashboard, tests, logs).
//!
//! Recording is off by default: the only cost is one well-predicted branch per transition,
//! and no event value is built, no key cloned, when nobody observes. When an observer turns
//! it on ([`SchedulerState::observe`], [`SchedulerState::observe_level`]), events accumulate
//! beside the commands and the server drains them after each batch
//! ([`SchedulerState::drain_observations_into`]), the same pull model as commands, so the
//! state machine stays free of channels and callbacks.
//!
//! Progress per task prefix (tasks per state, finished, erred, compute time, output bytes) is
//! counted in place by the state at every level, a few integer increments per transition, and
//! read with [`SchedulerState::prefix_progress`]. A dashboard therefore needs no event per
//! transition: it observes at [`ObserveLevel::Workers`] while nobody watches and at
//! [`ObserveLevel::TaskStream`] (one event per task run) while a live page is open.
//!
//! At [`ObserveLevel::Everything`], replaying the stream reproduces the scheduler's task
//! table: every task enters with a transition from `None` and leaves with a transition to
//! `None`.

use std::sync::Arc;

use kiln_graph::Key;
use kiln_protocol::messages::{ActivityKind, ActivityRecord, MemoryReport, TaskFailure, WorkerId, WorkerInfo};

use super::arena::TaskSlot;
use super::{SchedulerState, TaskState};

/// Something the scheduler did or learned.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum SchedulerEvent {
    /// A task changed state. `from: None` is a task the scheduler just learned of; `to: None`
    /// is a task it forgot.
    TaskTransition {
        /// The task.
        key: Key,
        /// Its key prefix (the kind of task), shared with the scheduler's estimates.
        prefix: Arc<str>,
        /// The state it left.
        from: Option<TaskState>,
        /// The state it entered.
        to: Option<TaskState>,
        /// The worker it is processing on or held by, when it entered `processing` or
        /// `memory`.
        worker: Option<WorkerId>,
    },
    /// A task failed, or was given up on (see [`kiln_protocol::messages::FailureKind`]).
    /// Its dependents then move to `erred` with the same failure.
    TaskErred {
        /// The task.
        key: Key,
        /// The failure.
        failure: TaskFailure,
    },
    /// A worker registered.
    WorkerJoined(WorkerInfo),
    /// A worker left or was declared dead.
    WorkerLeft {
        /// The worker.
        worker: WorkerId,
        /// Why.
        reason: String,
    },
    /// A worker is being retired: no new work, its unique results move elsewhere.
    WorkerRetiring(WorkerId),
    /// A task moved from one worker to another by work stealing.
    Stolen {
        /// The task.
        key: Key,
        /// The saturated worker it left.
        from: WorkerId,
        /// The worker that runs it now.
        to: WorkerId,
    },
    /// A worker's heartbeat brought its memory figures.
    MemoryReported(MemoryReport),
    /// A worker's heartbeat brought its CPU use (percent of one core, since its last one).
    CpuReported {
        /// The worker.
        worker: WorkerId,
        /// Percent of one core.
        cpu_percent: f32,
    },
    /// A worker's heartbeat brought its process's network byte totals (since it started).
    NetworkReported {
        /// The worker.
        worker: WorkerId,
        /// Bytes read from its kiln connections.
        read_bytes: u64,
        /// Bytes written to them.
        written_bytes: u64,
    },
    /// A task processing on `worker` ended there (recorded just before its transition), with
    /// the timing the worker reported: one rectangle of the dashboard's task stream.
    TaskRan {
        /// The task.
        key: Key,
        /// Its key prefix.
        prefix: Arc<str>,
        /// The worker that ran it.
        worker: WorkerId,
        /// The worker's compute thread; `None` for a failure (workers do not time those).
        thread: Option<u32>,
        /// When it started, in microseconds since the Unix epoch on the worker's clock (0 for a
        /// failure).
        started_us: u64,
        /// Its run time in microseconds.
        duration_us: u64,
        /// Its result's size (0 for a failure).
        nbytes: u64,
        /// Whether it failed instead.
        failed: bool,
    },
    /// A worker reported something it did on its own (a transfer, a spill, a pause).
    Worker {
        /// The worker.
        worker: WorkerId,
        /// What it did.
        activity: WorkerActivity,
    },
}

/// What a worker does on its own that observers want to see; the server forwards these with
/// [`super::Event::WorkerActivity`] when workers report them.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum WorkerActivity {
    /// The worker fetched a value from a peer.
    Transfer {
        /// The value.
        key: Key,
        /// The peer it came from.
        from: WorkerId,
        /// Its size.
        nbytes: u64,
        /// When the fetch started, in microseconds since the Unix epoch (worker's clock).
        started_us: u64,
        /// How long the fetch took, in microseconds.
        duration_us: u64,
    },
    /// The worker moved a value to disk to stay under its memory limit.
    Spilled {
        /// The value.
        key: Key,
        /// Its size.
        nbytes: u64,
        /// When the write started, in microseconds since the Unix epoch (worker's clock).
        started_us: u64,
        /// How long it took, in microseconds.
        duration_us: u64,
    },
    /// The worker read a spilled value back into memory.
    Unspilled {
        /// The value.
        key: Key,
        /// Its size.
        nbytes: u64,
        /// When the read started, in microseconds since the Unix epoch (worker's clock).
        started_us: u64,
        /// How long it took, in microseconds.
        duration_us: u64,
    },
    /// The worker stopped (`true`) or resumed (`false`) starting tasks because of memory
    /// pressure.
    Paused(bool),
}

impl WorkerActivity {
    /// The observer's view of a record a worker sent with its heartbeat.
    pub fn from_record(record: ActivityRecord) -> WorkerActivity {
        let ActivityRecord { kind, key, nbytes, started_us, duration_us } = record;
        match kind {
            ActivityKind::Transfer { from } => WorkerActivity::Transfer { key, from, nbytes, started_us, duration_us },
            ActivityKind::Spill => WorkerActivity::Spilled { key, nbytes, started_us, duration_us },
            ActivityKind::Unspill => WorkerActivity::Unspilled { key, nbytes, started_us, duration_us },
        }
    }
}

/// How much of the event stream is recorded, from nothing to everything; each level records
/// what the previous one does and more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum ObserveLevel {
    /// Nothing (the default).
    #[default]
    Off,
    /// Events about workers and rare task events: joins, departures, retirements, heartbeats
    /// (memory, CPU, transfers, spills, pauses), steals and failures. Nothing per task that
    /// succeeds.
    Workers,
    /// Also [`SchedulerEvent::TaskRan`], once per task run (a dashboard's task stream).
    TaskStream,
    /// Also [`SchedulerEvent::TaskTransition`], about five per task.
    Everything,
}

impl SchedulerState {
    /// Records that task `t`, processing on `worker`, ended there (finished with the timing
    /// given, or failed with `timing: None`); only while observed.
    #[cold]
    #[inline(never)]
    pub(super) fn record_ran(&mut self, t: TaskSlot, worker: WorkerId, nbytes: u64, timing: Option<(u64, u64, u32)>) {
        let task = &self.tasks[t];
        let (started_us, duration_us, thread) = match timing {
            Some((started, duration, thread)) => (started, duration, Some(thread)),
            None => (0, 0, None),
        };
        let event = SchedulerEvent::TaskRan {
            key: task.key.clone(),
            prefix: self.prefixes[task.prefix as usize].name.clone(),
            worker,
            thread,
            started_us,
            duration_us,
            nbytes,
            failed: timing.is_none(),
        };
        if let Some(events) = &mut self.observations {
            events.push(event);
        }
    }

    /// Starts (`true`, [`ObserveLevel::Everything`]) or stops (`false`) recording
    /// [`SchedulerEvent`]s. Stopping drops what was not drained.
    pub fn observe(&mut self, on: bool) {
        self.observe_level(if on { ObserveLevel::Everything } else { ObserveLevel::Off });
    }

    /// Records events up to `level` from now on; [`ObserveLevel::Off`] drops what was not
    /// drained.
    pub fn observe_level(&mut self, level: ObserveLevel) {
        self.observe_level = level;
        self.observations =
            if level > ObserveLevel::Off { Some(self.observations.take().unwrap_or_default()) } else { None };
    }

    /// What is being recorded.
    pub fn observed_level(&self) -> ObserveLevel {
        self.observe_level
    }

    /// Whether events are being recorded.
    pub fn is_observed(&self) -> bool {
        self.observations.is_some()
    }

    /// Whether each task run is recorded ([`SchedulerEvent::TaskRan`]).
    #[inline]
    pub(super) fn records_runs(&self) -> bool {
        self.observe_level >= ObserveLevel::TaskStream
    }

    /// Whether each transition is recorded ([`SchedulerEvent::TaskTransition`]).
    #[inline]
    pub(super) fn records_transitions(&self) -> bool {
        self.observe_level == ObserveLevel::Everything
    }

    /// Appends the events recorded since the last call to `out` (reusing its allocation).
    pub fn drain_observations_into(&mut self, out: &mut Vec<SchedulerEvent>) {
        if let Some(events) = &mut self.observations {
            out.append(events);
        }
    }

    /// Records the event `make` builds, only while observed (so nothing is built otherwise).
    #[inline]
    pub(super) fn record(&mut self, make: impl FnOnce(&SchedulerState) -> SchedulerEvent) {
        if self.observations.is_some() {
            let event = make(self);
            if let Some(events) = &mut self.observations {
                events.push(event);
            }
        }
    }

    /// Moves task `t` to state `to`, counting it in its prefix's progress and recording the
    /// transition while observed at [`ObserveLevel::Everything`].
    #[inline]
    pub(super) fn set_state(&mut self, t: TaskSlot, to: TaskState) {
        let task = &mut self.tasks[t];
        let from = std::mem::replace(&mut task.state, to);
        let stats = &mut self.prefixes[task.prefix as usize];
        stats.counts[from as usize] -= 1;
        stats.counts[to as usize] += 1;
        match to {
            TaskState::Memory if from == TaskState::Processing => stats.done += 1,
            TaskState::Erred => {
                stats.erred += 1;
                stats.erred_total += 1;
            }
            _ => {}
        }
        if matches!(from, TaskState::NoWorker | TaskState::Queued)
            || matches!(to, TaskState::NoWorker | TaskState::Queued)
        {
            // The set of tasks that may be unrunnable changed (see `expire_unrunnable`).
            self.parked_changes = self.parked_changes.wrapping_add(1);
        }
        if self.records_transitions() {
            self.record_transition(t, Some(from), Some(to));
        }
    }

    /// Records a transition of `t` (kept out of line: the hot path only checks the flag).
    #[cold]
    #[inline(never)]
    pub(super) fn record_transition(&mut self, t: TaskSlot, from: Option<TaskState>, to: Option<TaskState>) {
        let task = &self.tasks[t];
        let worker = match to {
            Some(TaskState::Processing) => task.processing_on,
            Some(TaskState::Memory) => task.who_has.first().copied(),
            _ => None,
        };
        let event = SchedulerEvent::TaskTransition {
            key: task.key.clone(),
            prefix: self.prefixes[task.prefix as usize].name.clone(),
            from,
            to,
            worker,
        };
        if let Some(events) = &mut self.observations {
            events.push(event);
        }
    }
}
