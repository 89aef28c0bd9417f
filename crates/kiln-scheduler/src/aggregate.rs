//! What observers (the dashboard, `/metrics`) need, kept up to date from the event stream.
//!
//! [`ClusterAggregates`] folds [`SchedulerEvent`]s into figures whose size depends on the
//! number of workers and task prefixes, never on the number of tasks: counts per prefix and
//! state, totals (compute time, output bytes, transfers, spills), per-worker CPU, memory and
//! recent log lines, a bounded ring of task-stream rectangles and a bounded memory/CPU time
//! series. Applying an event is O(1) (a prefix lookup by pointer); [`ClusterAggregates::snapshot`]
//! copies the bounded parts, so a dashboard refresh costs the same with ten tasks or ten
//! million. Like the state machine it owns no clock: times are passed in.
//!
//! Two ways to keep the per-prefix progress: fold every [`SchedulerEvent::TaskTransition`]
//! (an observer that only has the event stream), or, beside the scheduler's state, read the
//! counts the state keeps in place with [`ClusterAggregates::sync`] before each snapshot and
//! observe at [`crate::ObserveLevel::Workers`] or [`crate::ObserveLevel::TaskStream`], which
//! records no event per transition. The scheduler server does the latter: it is what keeps a
//! served dashboard nearly free when nobody watches.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use kiln_protocol::messages::{MemoryReport, WorkerId, WorkerInfo};
use rustc_hash::FxHashMap;
use serde::Serialize;

use crate::{SchedulerEvent, SchedulerState, TaskState, WorkerActivity};

/// How many rectangles the task stream keeps by default (Dask keeps 100,000; the browser draws
/// the most recent window, so fewer suffice).
pub const DEFAULT_STREAM_CAPACITY: usize = 20_000;
/// How many samples of the cluster's memory and CPU are kept (10 minutes at one a second).
pub const SERIES_CAPACITY: usize = 600;
/// Log lines kept per worker.
pub const WORKER_LOG_CAPACITY: usize = 50;
/// Recent task failures kept.
pub const ERROR_CAPACITY: usize = 100;

/// Task states in the order of the counts arrays ([`TaskState::ALL`]).
fn state_index(state: TaskState) -> usize {
    // `ALL` lists the states in declaration order (a test checks it).
    state as usize
}

/// Per task prefix (the kind of task).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PrefixStats {
    /// The prefix (key name without its token).
    pub name: Arc<str>,
    /// Live tasks per state, indexed like [`TaskState::ALL`].
    pub counts: [u64; 7],
    /// Tasks that reached memory since this prefix last had nothing left to do (the progress
    /// bar's filled part; reset when new work arrives for an idle prefix).
    pub done: u64,
    /// Tasks that erred in the same window.
    pub erred: u64,
    /// Seconds of compute spent on this prefix, ever.
    pub compute_seconds: f64,
    /// Bytes of results produced by this prefix, ever.
    pub output_bytes: u64,
    /// Tasks of this prefix that finished, ever.
    pub finished_total: u64,
}

impl PrefixStats {
    /// Tasks not finished yet: waiting, queued, no-worker or processing.
    pub fn remaining(&self) -> u64 {
        self.counts[state_index(TaskState::Waiting)]
            + self.counts[state_index(TaskState::Queued)]
            + self.counts[state_index(TaskState::NoWorker)]
            + self.counts[state_index(TaskState::Processing)]
    }
}

/// Per worker, as the events told it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkerStats {
    /// Who it is.
    pub id: WorkerId,
    /// Its name.
    pub name: String,
    /// Its data address.
    pub address: String,
    /// Compute threads.
    pub nthreads: u32,
    /// Memory limit in bytes (0: none).
    pub memory_limit: u64,
    /// Last memory report (managed, spilled, process).
    pub managed: u64,
    /// Bytes spilled to disk.
    pub spilled: u64,
    /// Process resident memory.
    pub process: u64,
    /// CPU, percent of one core, from the last heartbeat.
    pub cpu_percent: f32,
    /// Whether it paused for memory.
    pub paused: bool,
    /// Whether it is being retired.
    pub retiring: bool,
    /// When it joined (observer's clock, µs since the Unix epoch).
    pub joined_us: u64,
    /// When it last reported (same clock).
    pub last_seen_us: u64,
    /// Tasks it finished.
    pub tasks_finished: u64,
    /// Tasks that failed on it.
    pub tasks_failed: u64,
    /// Bytes it fetched from peers.
    pub transfer_bytes: u64,
    /// Bytes it wrote to disk.
    pub spill_bytes: u64,
    /// Bytes its process read from its kiln connections since it started (last heartbeat).
    pub network_read_bytes: u64,
    /// Bytes its process wrote to its kiln connections since it started (last heartbeat).
    pub network_written_bytes: u64,
    /// Read rate between its last two heartbeats, bytes per second.
    pub network_read_bps: f64,
    /// Write rate between its last two heartbeats, bytes per second.
    pub network_written_bps: f64,
    /// When the network totals were last reported (observer's clock, µs; 0: never), the base
    /// of the next rate.
    #[serde(skip)]
    pub network_at_us: u64,
    /// Recent log lines (joined, paused, failures, ...), oldest first.
    pub log: VecDeque<String>,
}

impl WorkerStats {
    /// Memory the worker uses beyond the results it manages (interpreter, buffers, fragments).
    pub fn unmanaged(&self) -> u64 {
        self.process.saturating_sub(self.managed)
    }
}

/// What a task-stream rectangle stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamKind {
    /// A task ran.
    Compute,
    /// A task failed.
    Error,
    /// A value was fetched from a peer.
    Transfer,
    /// A value was written to disk.
    Spill,
    /// A value was read back from disk.
    Unspill,
}

/// One rectangle of the task stream.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StreamEntry {
    /// Increasing number, so a viewer can merge successive windows without duplicates.
    pub seq: u64,
    /// The worker.
    pub worker: WorkerId,
    /// The compute thread (transfers, spills and failures: 0).
    pub thread: u32,
    /// Index into the prefixes (for colour and name); transfers and spills carry their
    /// value's prefix when known, else `u32::MAX`.
    pub prefix: u32,
    /// What it is.
    pub kind: StreamKind,
    /// Start, µs since the Unix epoch.
    pub start_us: u64,
    /// Duration in µs.
    pub duration_us: u64,
    /// Bytes produced, moved or spilled.
    pub nbytes: u64,
}

/// One sample of the cluster's memory and CPU.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sample {
    /// When, µs since the Unix epoch.
    pub time_us: u64,
    /// Managed bytes over all workers.
    pub managed: u64,
    /// Unmanaged bytes over all workers.
    pub unmanaged: u64,
    /// Spilled bytes over all workers.
    pub spilled: u64,
    /// CPU over all workers, percent of one core.
    pub cpu_percent: f32,
}

/// A recent task failure.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorEntry {
    /// The task (as text).
    pub key: String,
    /// The error message.
    pub message: String,
    /// When the scheduler learned of it, µs since the Unix epoch.
    pub time_us: u64,
}

/// Totals over the cluster's life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Totals {
    /// Tasks finished.
    pub tasks_finished: u64,
    /// Tasks erred (including dependents of failed tasks).
    pub tasks_erred: u64,
    /// Bytes fetched between workers.
    pub transfer_bytes: u64,
    /// Transfers.
    pub transfers: u64,
    /// Bytes written to disk by spilling.
    pub spill_bytes: u64,
    /// Bytes read back from disk.
    pub unspill_bytes: u64,
    /// Workers that joined.
    pub workers_joined: u64,
    /// Workers that left.
    pub workers_left: u64,
    /// Tasks stolen.
    pub stolen: u64,
    /// Server loop iterations timed ([`ClusterAggregates::record_tick`]).
    pub ticks: u64,
    /// Their total duration in seconds.
    pub tick_seconds: f64,
    /// The longest one since the last snapshot, in seconds.
    pub tick_max_seconds: f64,
}

/// A copy of the aggregates for one refresh, shared by every viewer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AggregateSnapshot {
    /// When it was taken, µs since the Unix epoch.
    pub time_us: u64,
    /// Live tasks per state, indexed like [`TaskState::ALL`].
    pub counts: [u64; 7],
    /// Per prefix, in order of first appearance (stream entries index into this).
    pub prefixes: Vec<PrefixStats>,
    /// Per worker, by id.
    pub workers: Vec<WorkerStats>,
    /// The most recent task-stream entries (at most the requested number), oldest first.
    pub stream: Vec<StreamEntry>,
    /// Memory and CPU samples, oldest first.
    pub series: Vec<Sample>,
    /// Recent failures, oldest first.
    pub errors: Vec<ErrorEntry>,
    /// Totals.
    pub totals: Totals,
}

/// The observers' figures, folded from [`SchedulerEvent`]s (see the module docs).
#[derive(Debug, Clone)]
pub struct ClusterAggregates {
    prefixes: Vec<PrefixStats>,
    // Keyed by the address of the scheduler's interned prefix name; the `Arc` kept in
    // `PrefixStats::name` keeps that address from being reused for another name.
    by_pointer: FxHashMap<usize, u32>,
    by_name: FxHashMap<Arc<str>, u32>,
    counts: [u64; 7],
    workers: BTreeMap<WorkerId, WorkerStats>,
    stream: VecDeque<StreamEntry>,
    stream_capacity: usize,
    next_seq: u64,
    series: VecDeque<Sample>,
    errors: VecDeque<ErrorEntry>,
    totals: Totals,
}

impl Default for ClusterAggregates {
    fn default() -> Self {
        ClusterAggregates::new(DEFAULT_STREAM_CAPACITY)
    }
}

impl ClusterAggregates {
    /// Empty aggregates whose task stream keeps at most `stream_capacity` rectangles.
    pub fn new(stream_capacity: usize) -> Self {
        ClusterAggregates {
            prefixes: Vec::new(),
            by_pointer: FxHashMap::default(),
            by_name: FxHashMap::default(),
            counts: [0; 7],
            workers: BTreeMap::new(),
            stream: VecDeque::new(),
            stream_capacity: stream_capacity.max(1),
            next_seq: 0,
            series: VecDeque::new(),
            errors: VecDeque::new(),
            totals: Totals::default(),
        }
    }

    fn prefix(&mut self, name: &Arc<str>) -> u32 {
        let pointer = Arc::as_ptr(name) as *const u8 as usize;
        if let Some(&i) = self.by_pointer.get(&pointer) {
            return i;
        }
        // A new interned name, possibly equal to one seen before (the scheduler may intern it
        // again after forgetting every task of that kind).
        let i = match self.by_name.get(name) {
            Some(&i) => i,
            None => {
                let i = self.prefixes.len() as u32;
                self.prefixes.push(PrefixStats {
                    name: name.clone(),
                    counts: [0; 7],
                    done: 0,
                    erred: 0,
                    compute_seconds: 0.0,
                    output_bytes: 0,
                    finished_total: 0,
                });
                self.by_name.insert(name.clone(), i);
                i
            }
        };
        self.prefixes[i as usize].name = name.clone();
        self.by_pointer.insert(pointer, i);
        i
    }

    fn prefix_by_name(&mut self, name: &Arc<str>) -> u32 {
        match self.by_name.get(name) {
            Some(&i) => i,
            None => self.prefix(name),
        }
    }

    /// Replaces the per-prefix progress, the live task counts, the task totals and each
    /// worker's task counters with the figures `state` keeps in place: O(prefixes + workers).
    /// Call it before a snapshot when events are recorded below
    /// [`crate::ObserveLevel::Everything`].
    pub fn sync(&mut self, state: &SchedulerState) {
        let mut counts = [0u64; 7];
        let (mut finished, mut erred) = (0, 0);
        for p in state.prefix_progress() {
            let i = self.prefix_by_name(&p.prefix) as usize;
            let stats = &mut self.prefixes[i];
            stats.counts = p.counts;
            stats.done = p.done;
            stats.erred = p.erred;
            stats.compute_seconds = p.compute_seconds;
            stats.output_bytes = p.output_bytes;
            stats.finished_total = p.finished_total;
            for (total, n) in counts.iter_mut().zip(p.counts) {
                *total += n;
            }
            finished += p.finished_total;
            erred += p.erred_total;
        }
        self.counts = counts;
        self.totals.tasks_finished = finished;
        self.totals.tasks_erred = erred;
        for (id, w) in self.workers.iter_mut() {
            if let Some(load) = state.worker_load(*id) {
                w.tasks_finished = load.tasks_finished;
                w.tasks_failed = load.tasks_failed;
            }
        }
    }

    fn prefix_of_key_name(&self, key: &kiln_graph::Key) -> u32 {
        self.by_name.get(key.prefix()).copied().unwrap_or(u32::MAX)
    }

    fn push_stream(&mut self, mut entry: StreamEntry) {
        entry.seq = self.next_seq;
        self.next_seq += 1;
        if self.stream.len() == self.stream_capacity {
            self.stream.pop_front();
        }
        self.stream.push_back(entry);
    }

    fn log(&mut self, worker: WorkerId, line: String) {
        if let Some(w) = self.workers.get_mut(&worker) {
            if w.log.len() == WORKER_LOG_CAPACITY {
                w.log.pop_front();
            }
            w.log.push_back(line);
        }
    }

    /// Folds one event in; `now_us` is the observer's clock (µs since the Unix epoch).
    pub fn apply(&mut self, event: &SchedulerEvent, now_us: u64) {
        match event {
            SchedulerEvent::TaskTransition { prefix, from, to, .. } => {
                let p = self.prefix(prefix) as usize;
                let stats = &mut self.prefixes[p];
                if from.is_none() && stats.remaining() == 0 {
                    // New work for an idle prefix starts a fresh progress bar.
                    stats.done = 0;
                    stats.erred = 0;
                }
                if let Some(from) = from {
                    let i = state_index(*from);
                    stats.counts[i] = stats.counts[i].saturating_sub(1);
                    self.counts[i] = self.counts[i].saturating_sub(1);
                }
                if let Some(to) = to {
                    let i = state_index(*to);
                    stats.counts[i] += 1;
                    self.counts[i] += 1;
                    match to {
                        TaskState::Memory if *from == Some(TaskState::Processing) => stats.done += 1,
                        TaskState::Erred => {
                            stats.erred += 1;
                            self.totals.tasks_erred += 1;
                        }
                        _ => {}
                    }
                }
            }
            SchedulerEvent::TaskRan { key, prefix, worker, thread, started_us, duration_us, nbytes, failed } => {
                let p = self.prefix(prefix);
                let stats = &mut self.prefixes[p as usize];
                let (kind, start) = if *failed {
                    (StreamKind::Error, now_us)
                } else {
                    stats.compute_seconds += *duration_us as f64 / 1e6;
                    stats.output_bytes += nbytes;
                    stats.finished_total += 1;
                    self.totals.tasks_finished += 1;
                    (StreamKind::Compute, *started_us)
                };
                if let Some(w) = self.workers.get_mut(worker) {
                    w.last_seen_us = now_us;
                    if *failed {
                        w.tasks_failed += 1;
                    } else {
                        w.tasks_finished += 1;
                    }
                }
                if *failed {
                    self.log(*worker, format!("task {key} failed"));
                }
                self.push_stream(StreamEntry {
                    seq: 0,
                    worker: *worker,
                    thread: thread.unwrap_or(0),
                    prefix: p,
                    kind,
                    start_us: start,
                    duration_us: *duration_us,
                    nbytes: *nbytes,
                });
            }
            SchedulerEvent::TaskErred { key, failure } => {
                if self.errors.len() == ERROR_CAPACITY {
                    self.errors.pop_front();
                }
                let message = if failure.key == *key {
                    failure.message.clone()
                } else {
                    format!("depends on {}, which failed: {}", failure.key, failure.message)
                };
                self.errors.push_back(ErrorEntry { key: key.to_string(), message, time_us: now_us });
            }
            SchedulerEvent::WorkerJoined(info) => {
                self.totals.workers_joined += 1;
                self.workers.insert(info.id, new_worker(info, now_us));
                self.log(info.id, "joined".into());
            }
            SchedulerEvent::WorkerLeft { worker, reason } => {
                self.totals.workers_left += 1;
                self.workers.remove(worker);
                let _ = reason;
            }
            SchedulerEvent::WorkerRetiring(worker) => {
                if let Some(w) = self.workers.get_mut(worker) {
                    w.retiring = true;
                }
                self.log(*worker, "retiring".into());
            }
            SchedulerEvent::Stolen { key, from, to } => {
                self.totals.stolen += 1;
                self.log(*from, format!("{key} stolen by worker {to}"));
            }
            SchedulerEvent::MemoryReported(MemoryReport { worker, managed, spilled, process }) => {
                if let Some(w) = self.workers.get_mut(worker) {
                    w.managed = *managed;
                    w.spilled = *spilled;
                    w.process = *process;
                    w.last_seen_us = now_us;
                }
            }
            SchedulerEvent::CpuReported { worker, cpu_percent } => {
                if let Some(w) = self.workers.get_mut(worker) {
                    w.cpu_percent = if cpu_percent.is_finite() { cpu_percent.max(0.0) } else { 0.0 };
                }
            }
            SchedulerEvent::NetworkReported { worker, read_bytes, written_bytes } => {
                if let Some(w) = self.workers.get_mut(worker) {
                    let elapsed_us = now_us.saturating_sub(w.network_at_us);
                    // The first report has no base; a restarted process reports smaller totals
                    // (saturating to a zero rate rather than a huge one).
                    if w.network_at_us != 0 && elapsed_us > 0 {
                        let per_second = |new: u64, old: u64| new.saturating_sub(old) as f64 * 1e6 / elapsed_us as f64;
                        w.network_read_bps = per_second(*read_bytes, w.network_read_bytes);
                        w.network_written_bps = per_second(*written_bytes, w.network_written_bytes);
                    }
                    w.network_read_bytes = *read_bytes;
                    w.network_written_bytes = *written_bytes;
                    w.network_at_us = now_us;
                }
            }
            SchedulerEvent::Worker { worker, activity } => self.activity(*worker, activity),
        }
    }

    fn activity(&mut self, worker: WorkerId, activity: &WorkerActivity) {
        let (kind, key, nbytes, start_us, duration_us) = match activity {
            WorkerActivity::Transfer { key, nbytes, started_us, duration_us, .. } => {
                self.totals.transfer_bytes += nbytes;
                self.totals.transfers += 1;
                if let Some(w) = self.workers.get_mut(&worker) {
                    w.transfer_bytes += nbytes;
                }
                (StreamKind::Transfer, key, *nbytes, *started_us, *duration_us)
            }
            WorkerActivity::Spilled { key, nbytes, started_us, duration_us } => {
                self.totals.spill_bytes += nbytes;
                if let Some(w) = self.workers.get_mut(&worker) {
                    w.spill_bytes += nbytes;
                }
                (StreamKind::Spill, key, *nbytes, *started_us, *duration_us)
            }
            WorkerActivity::Unspilled { key, nbytes, started_us, duration_us } => {
                self.totals.unspill_bytes += nbytes;
                (StreamKind::Unspill, key, *nbytes, *started_us, *duration_us)
            }
            WorkerActivity::Paused(paused) => {
                if let Some(w) = self.workers.get_mut(&worker) {
                    w.paused = *paused;
                }
                self.log(worker, if *paused { "paused (memory)".into() } else { "resumed".into() });
                return;
            }
        };
        let prefix = self.prefix_of_key_name(key);
        self.push_stream(StreamEntry { seq: 0, worker, thread: 0, prefix, kind, start_us, duration_us, nbytes });
    }

    /// Records how long one turn of the server's loop took (the `tick duration` metric).
    pub fn record_tick(&mut self, seconds: f64) {
        self.totals.ticks += 1;
        self.totals.tick_seconds += seconds;
        self.totals.tick_max_seconds = self.totals.tick_max_seconds.max(seconds);
    }

    /// Appends a memory and CPU sample of the whole cluster (the server calls this about once
    /// a second); the oldest beyond [`SERIES_CAPACITY`] is dropped.
    pub fn sample(&mut self, now_us: u64) {
        let mut s = Sample { time_us: now_us, managed: 0, unmanaged: 0, spilled: 0, cpu_percent: 0.0 };
        for w in self.workers.values() {
            s.managed += w.managed;
            s.unmanaged += w.unmanaged();
            s.spilled += w.spilled;
            s.cpu_percent += w.cpu_percent;
        }
        if self.series.len() == SERIES_CAPACITY {
            self.series.pop_front();
        }
        self.series.push_back(s);
    }

    /// Live tasks per state, indexed like [`TaskState::ALL`].
    pub fn counts(&self) -> [u64; 7] {
        self.counts
    }

    /// Per-prefix figures.
    pub fn prefixes(&self) -> &[PrefixStats] {
        &self.prefixes
    }

    /// One worker's figures.
    pub fn worker(&self, id: WorkerId) -> Option<&WorkerStats> {
        self.workers.get(&id)
    }

    /// Totals.
    pub fn totals(&self) -> Totals {
        self.totals
    }

    /// The task stream, oldest first.
    pub fn stream(&self) -> impl Iterator<Item = &StreamEntry> {
        self.stream.iter()
    }

    /// A copy for viewers, with at most the `stream_tail` most recent stream entries. The
    /// longest tick is reset, so each snapshot reports the worst since the previous one.
    pub fn snapshot(&mut self, now_us: u64, stream_tail: usize) -> AggregateSnapshot {
        self.snapshot_since(now_us, 0, stream_tail)
    }

    /// Like [`ClusterAggregates::snapshot`], with only the stream entries numbered `since` or
    /// later: a live view that merges entries by number needs only what is new.
    pub fn snapshot_since(&mut self, now_us: u64, since: u64, stream_tail: usize) -> AggregateSnapshot {
        let new = self.stream.iter().rev().take_while(|e| e.seq >= since).count();
        let skip = self.stream.len() - new.min(stream_tail);
        let snapshot = AggregateSnapshot {
            time_us: now_us,
            counts: self.counts,
            prefixes: self.prefixes.clone(),
            workers: self.workers.values().cloned().collect(),
            stream: self.stream.iter().skip(skip).cloned().collect(),
            series: self.series.iter().copied().collect(),
            errors: self.errors.iter().cloned().collect(),
            totals: self.totals,
        };
        self.totals.tick_max_seconds = 0.0;
        snapshot
    }
}

fn new_worker(info: &WorkerInfo, now_us: u64) -> WorkerStats {
    WorkerStats {
        id: info.id,
        name: info.name.clone(),
        address: info.address.clone(),
        nthreads: info.nthreads,
        memory_limit: info.memory_limit,
        managed: 0,
        spilled: 0,
        process: 0,
        cpu_percent: 0.0,
        paused: false,
        retiring: false,
        joined_us: now_us,
        last_seen_us: now_us,
        tasks_finished: 0,
        tasks_failed: 0,
        transfer_bytes: 0,
        spill_bytes: 0,
        network_read_bytes: 0,
        network_written_bytes: 0,
        network_read_bps: 0.0,
        network_written_bps: 0.0,
        network_at_us: 0,
        log: VecDeque::new(),
    }
}

#[cfg(test)]
mod tests {
    use kiln_graph::Key;
    use kiln_protocol::messages::{TaskFailure, WriteToken};

    use super::*;

    fn info(id: u32) -> WorkerInfo {
        WorkerInfo {
            id: WorkerId::new(id),
            address: format!("w{id}:1"),
            name: format!("w{id}"),
            nthreads: 2,
            memory_limit: 1000,
            write_token: WriteToken::default(),
        }
    }

    fn transition(prefix: &Arc<str>, i: u32, from: Option<TaskState>, to: Option<TaskState>) -> SchedulerEvent {
        SchedulerEvent::TaskTransition {
            key: Key::with_index(format!("{prefix}-ab12"), [i]),
            prefix: prefix.clone(),
            from,
            to,
            worker: None,
        }
    }

    #[test]
    fn counts_follow_transitions_and_progress_resets_for_new_work() {
        use TaskState::*;
        let mut a = ClusterAggregates::new(4);
        let add: Arc<str> = Arc::from("add");
        for i in 0..3 {
            a.apply(&transition(&add, i, None, Some(Waiting)), 0);
            a.apply(&transition(&add, i, Some(Waiting), Some(Processing)), 0);
        }
        assert_eq!(a.prefixes()[0].remaining(), 3);
        for i in 0..3 {
            a.apply(&transition(&add, i, Some(Processing), Some(Memory)), 0);
        }
        let p = &a.prefixes()[0];
        assert_eq!((p.done, p.remaining()), (3, 0));
        assert_eq!(a.counts()[state_index(Memory)], 3);
        // Forgotten results leave the counts but not the finished bar.
        for i in 0..3 {
            a.apply(&transition(&add, i, Some(Memory), None), 0);
        }
        assert_eq!(a.counts(), [0; 7]);
        assert_eq!(a.prefixes()[0].done, 3);
        // New work for the idle prefix starts a new bar; an equal name interned again (a new
        // `Arc`) is the same prefix.
        let again: Arc<str> = Arc::from("add");
        a.apply(&transition(&again, 9, None, Some(Queued)), 0);
        assert_eq!(a.prefixes().len(), 1);
        assert_eq!((a.prefixes()[0].done, a.prefixes()[0].remaining()), (0, 1));
        a.apply(&transition(&again, 9, Some(Queued), Some(Erred)), 0);
        assert_eq!((a.prefixes()[0].erred, a.totals().tasks_erred), (1, 1));
    }

    #[test]
    fn the_stream_is_a_bounded_ring_with_increasing_sequence_numbers() {
        let mut a = ClusterAggregates::new(3);
        a.apply(&SchedulerEvent::WorkerJoined(info(0)), 5);
        let sum: Arc<str> = Arc::from("sum");
        for i in 0..5u64 {
            a.apply(
                &SchedulerEvent::TaskRan {
                    key: Key::with_index("sum-ff", [i as u32]),
                    prefix: sum.clone(),
                    worker: WorkerId::new(0),
                    thread: Some((i % 2) as u32),
                    started_us: 100 * i,
                    duration_us: 1_000_000,
                    nbytes: 8,
                    failed: false,
                },
                10,
            );
        }
        let seqs: Vec<u64> = a.stream().map(|e| e.seq).collect();
        assert_eq!(seqs, [2, 3, 4]);
        assert_eq!(a.stream().last().unwrap().thread, 0);
        let p = &a.prefixes()[0];
        assert_eq!((p.finished_total, p.output_bytes, p.compute_seconds), (5, 40, 5.0));
        assert_eq!(a.worker(WorkerId::new(0)).unwrap().tasks_finished, 5);
        let snap = a.snapshot(20, 2);
        assert_eq!(snap.stream.iter().map(|e| e.seq).collect::<Vec<_>>(), [3, 4]);
        assert_eq!(a.snapshot_since(20, 4, 10).stream.len(), 1);
        assert!(a.snapshot_since(20, 5, 10).stream.is_empty());
        assert_eq!(a.snapshot_since(20, 0, 10).stream.len(), 3);
    }

    #[test]
    fn worker_figures_transfers_spills_and_errors() {
        let mut a = ClusterAggregates::default();
        a.apply(&SchedulerEvent::WorkerJoined(info(0)), 1);
        a.apply(&SchedulerEvent::WorkerJoined(info(1)), 1);
        let w0 = WorkerId::new(0);
        let report = MemoryReport { worker: w0, managed: 100, spilled: 30, process: 250 };
        a.apply(&SchedulerEvent::MemoryReported(report), 2);
        a.apply(&SchedulerEvent::CpuReported { worker: w0, cpu_percent: 150.0 }, 2);
        a.apply(&SchedulerEvent::CpuReported { worker: WorkerId::new(1), cpu_percent: f32::NAN }, 2);
        let x: Arc<str> = Arc::from("x");
        a.apply(&transition(&x, 0, None, Some(TaskState::Waiting)), 2);
        let transfer = WorkerActivity::Transfer {
            key: Key::with_index("x-ab12", [0]),
            from: WorkerId::new(1),
            nbytes: 64,
            started_us: 3,
            duration_us: 4,
        };
        a.apply(&SchedulerEvent::Worker { worker: w0, activity: transfer }, 3);
        let spill = WorkerActivity::Spilled { key: Key::new("y"), nbytes: 32, started_us: 5, duration_us: 6 };
        a.apply(&SchedulerEvent::Worker { worker: w0, activity: spill }, 3);
        a.apply(&SchedulerEvent::Worker { worker: w0, activity: WorkerActivity::Paused(true) }, 3);
        let failure = TaskFailure::raised(Key::new("x-ab12"), "boom");
        a.apply(&SchedulerEvent::TaskErred { key: Key::new("z"), failure }, 4);
        a.sample(7);

        let snap = a.snapshot(8, 100);
        let w = &snap.workers[0];
        assert_eq!((w.managed, w.unmanaged(), w.spilled, w.cpu_percent), (100, 150, 30, 150.0));
        assert!(w.paused);
        assert_eq!(w.log.iter().map(String::as_str).collect::<Vec<_>>(), ["joined", "paused (memory)"]);
        assert_eq!(snap.workers[1].cpu_percent, 0.0);
        assert_eq!(
            snap.stream.iter().map(|e| (e.kind, e.prefix)).collect::<Vec<_>>(),
            [(StreamKind::Transfer, 0), (StreamKind::Spill, u32::MAX)]
        );
        assert_eq!((snap.totals.transfer_bytes, snap.totals.spill_bytes), (64, 32));
        assert_eq!(snap.errors[0].message, "depends on 'x-ab12', which failed: boom");
        assert_eq!(snap.series, [Sample { time_us: 7, managed: 100, unmanaged: 150, spilled: 30, cpu_percent: 150.0 }]);
        a.apply(&SchedulerEvent::WorkerLeft { worker: w0, reason: "gone".into() }, 9);
        assert!(a.worker(w0).is_none());
        assert_eq!(a.totals().workers_left, 1);
    }

    #[test]
    fn network_totals_give_rates_between_heartbeats() {
        let mut a = ClusterAggregates::default();
        a.apply(&SchedulerEvent::WorkerJoined(info(0)), 1);
        let w0 = WorkerId::new(0);
        let report =
            |read_bytes, written_bytes| SchedulerEvent::NetworkReported { worker: w0, read_bytes, written_bytes };
        a.apply(&report(1_000, 500), 2_000_000);
        let w = a.worker(w0).unwrap();
        assert_eq!((w.network_read_bytes, w.network_written_bytes), (1_000, 500));
        assert_eq!((w.network_read_bps, w.network_written_bps), (0.0, 0.0), "no base for a rate yet");
        a.apply(&report(5_000, 2_500), 4_000_000);
        let w = a.worker(w0).unwrap();
        assert_eq!((w.network_read_bps, w.network_written_bps), (2_000.0, 1_000.0));
        // A restarted process reports smaller totals: the rate is zero, not a wrapped number.
        a.apply(&report(10, 10), 5_000_000);
        let w = a.worker(w0).unwrap();
        assert_eq!((w.network_read_bytes, w.network_read_bps, w.network_written_bps), (10, 0.0, 0.0));
        // Reports for a worker that left are ignored.
        a.apply(&SchedulerEvent::NetworkReported { worker: WorkerId::new(9), read_bytes: 1, written_bytes: 1 }, 6);
        assert!(a.worker(WorkerId::new(9)).is_none());
    }

    #[test]
    fn state_indices_follow_the_order_of_all() {
        for (i, state) in TaskState::ALL.iter().enumerate() {
            assert_eq!(state_index(*state), i, "{state:?}");
        }
    }

    #[test]
    fn the_series_is_bounded() {
        let mut a = ClusterAggregates::default();
        for t in 0..(SERIES_CAPACITY as u64 + 10) {
            a.sample(t);
        }
        let snap = a.snapshot(0, 0);
        assert_eq!(snap.series.len(), SERIES_CAPACITY);
        assert_eq!(snap.series[0].time_us, 10);
    }

    #[test]
    fn tick_figures_report_the_worst_since_the_last_snapshot() {
        let mut a = ClusterAggregates::default();
        a.record_tick(0.5);
        a.record_tick(0.25);
        assert_eq!(a.snapshot(0, 0).totals.tick_max_seconds, 0.5);
        a.record_tick(0.125);
        let t = a.snapshot(0, 0).totals;
        assert_eq!((t.ticks, t.tick_seconds, t.tick_max_seconds), (3, 0.875, 0.125));
    }
}
