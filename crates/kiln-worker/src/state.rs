//! [`WorkerState`]: every decision of a worker, as transitions between [`KeyState`]s.
//!
//! Each call of [`WorkerState::handle`] takes one [`Event`] and the current time and appends the
//! resulting [`Instruction`]s to a caller-owned vector (reused across events, so an event costs
//! no allocation of its own). The hot path of a task is: `Compute` with its inputs at hand →
//! `Run` at once while a thread slot is free (the ready heap is skipped when it is empty) →
//! `TaskFinished` → `Keep` + `Send(Finished)`.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use kiln_graph::Key;
use kiln_protocol::messages::{ActivityRecord, Priority, TaskFailure, WhoHas, WorkerId, WorkerInfo, WorkerToScheduler};
use rustc_hash::FxHashMap;
use smallvec::SmallVec;

/// One hand-off of a task to the compute threads. A task run twice (freed, then computed
/// again) gets two ids, so a late result of the first run is recognized and dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RunId(pub u64);

/// A spill file, named by the state so that a late spill completion for a released or
/// re-spilled key is recognized (the shell turns it into a path in its spill directory).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpillFile(pub u64);

/// Memory thresholds of a worker with a memory limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemoryLimits {
    /// The memory limit in bytes.
    pub limit: u64,
    /// Spill least recently used values while held values exceed this fraction of the limit.
    pub target: f64,
    /// Spill while the process's memory exceeds this fraction.
    pub spill: f64,
    /// Start no task while the process's memory exceeds this fraction.
    pub pause: f64,
    /// Values fetched from peers at once at most, in bytes, as this fraction of the limit (one
    /// value is fetched whatever its size when nothing else is arriving): a burst of tasks
    /// whose inputs are elsewhere would otherwise bring them all in before any of them runs.
    pub transfer: f64,
}

impl MemoryLimits {
    /// Dask's fractions (target 0.6, spill 0.7, pause 0.8, transfer 0.1) of `limit`; `None`
    /// for 0 (no limit).
    pub fn with_limit(limit: u64) -> Option<Self> {
        (limit > 0).then_some(MemoryLimits { limit, target: 0.6, spill: 0.7, pause: 0.8, transfer: 0.1 })
    }

    fn bytes(&self, fraction: f64) -> u64 {
        (self.limit as f64 * fraction) as u64
    }
}

/// How a worker behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Threads that run tasks.
    pub nthreads: usize,
    /// Tasks handed to the compute threads per thread before the rest wait, in priority order,
    /// in the state. More hides the round trip between a thread and the state; fewer keeps
    /// priorities fresh and tasks stealable without asking the threads.
    pub tasks_per_thread: usize,
    /// Memory thresholds; `None`: no limit, nothing spills or pauses.
    pub memory: Option<MemoryLimits>,
    /// Spills written at the same time at most (each holds an encoded copy of its value).
    pub max_spills_in_flight: usize,
    /// Spilled values read back at the same time at most: reading back every input of a burst
    /// of tasks at once would overrun the memory limit before any of them runs.
    pub max_unspills_in_flight: usize,
    /// How long a leaving worker waits for its running tasks, in microseconds.
    pub leave_patience_us: u64,
    /// After a failed spill write, how long to wait before trying to spill again, in
    /// microseconds; doubled after each failed retry up to 12 times this.
    pub spill_retry_us: u64,
    /// How long a memory pause that waiting cannot end (nothing running, no value held) lasts
    /// before [`Config::when_stuck`] applies, in microseconds: long enough for freed memory to
    /// show in a measurement, short enough that the cluster barely notices.
    pub stuck_grace_us: u64,
    /// What a worker does once such a pause has lasted [`Config::stuck_grace_us`].
    pub when_stuck: WhenStuck,
}

/// What a worker does when it is paused for process memory while it runs nothing and holds no
/// value: nothing it could finish, spill or free would lower its memory, so waiting would last
/// forever (see [`Notice::PauseCannotEnd`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenStuck {
    /// Leave (handing back unstarted tasks, as on `Leave`) and stop with
    /// [`WorkerState::wants_fresh_start`] set, so that a nanny starts a new process: one that
    /// holds no data loses nothing by restarting, and a fresh process sheds whatever the old
    /// one could not free. Only a worker that has run a task does this; one that is over the
    /// threshold before running anything would be no better restarted, and resumes instead.
    Restart,
    /// Resume with a warning, and pause for process memory again only after it has fallen
    /// under the pause threshold once (spilling still bounds what the worker holds): a worker
    /// without a nanny, which nothing would restart.
    Resume,
}

impl Config {
    /// `nthreads` threads, no memory limit, 16 queued tasks per thread, 30 s to leave; a pause
    /// that waiting cannot end resumes after 3 s.
    pub fn new(nthreads: usize) -> Self {
        Config {
            nthreads,
            tasks_per_thread: 16,
            memory: None,
            max_spills_in_flight: 1,
            max_unspills_in_flight: 2,
            leave_patience_us: 30_000_000,
            spill_retry_us: 5_000_000,
            stuck_grace_us: 3_000_000,
            when_stuck: WhenStuck::Resume,
        }
    }

    fn max_in_flight(&self) -> usize {
        self.nthreads.saturating_mul(self.tasks_per_thread).max(1)
    }
}

/// A configuration [`WorkerState::new`] refuses.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// No thread to run tasks on.
    #[error("a worker needs at least one thread")]
    NoThreads,
    /// No task may be handed to the threads.
    #[error("tasks_per_thread must be at least 1")]
    NoTaskSlots,
    /// Memory fractions out of order or out of (0, 1].
    #[error("memory fractions must satisfy 0 < target <= spill <= pause <= 1 (got {target}, {spill}, {pause})")]
    Fractions {
        /// The target fraction.
        target: f64,
        /// The spill fraction.
        spill: f64,
        /// The pause fraction.
        pause: f64,
    },
    /// The transfer fraction is out of (0, 1].
    #[error("the transfer fraction must satisfy 0 < transfer <= 1 (got {0})")]
    TransferFraction(f64),
    /// Spilling configured without a slot to spill or read back in.
    #[error("max_spills_in_flight and max_unspills_in_flight must be at least 1")]
    NoSpillSlots,
}

/// Why a value could not be spilled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpillError {
    /// The value has no codec (or its codec failed): this value stays in memory, others may
    /// still spill.
    #[error("cannot encode the value: {0}")]
    Unencodable(String),
    /// Writing failed (disk full, directory gone): spilling stops for this worker.
    #[error("cannot write the spill file: {0}")]
    Io(String),
}

/// An invariant of [`WorkerState`] that does not hold (a bug in the state machine).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("worker state invariant violated: {0}")]
pub struct InvariantError(pub String);

/// Where a key is (see the crate docs for the transitions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyState {
    /// A task whose inputs are being fetched or read back from disk.
    Waiting,
    /// A task with every input in memory, waiting for a thread slot or for memory to fall.
    Ready,
    /// A task handed to the compute threads (queued there or running).
    Executing,
    /// A value being fetched from a peer.
    Fetching,
    /// A value in memory.
    Memory,
    /// A value on disk.
    Spilled,
    /// A value on disk being read back.
    Unspilling,
}

impl KeyState {
    /// Every state, in the order [`WorkerState::key_counts`] counts them.
    pub const ALL: [KeyState; 7] = [
        KeyState::Waiting,
        KeyState::Ready,
        KeyState::Executing,
        KeyState::Fetching,
        KeyState::Memory,
        KeyState::Spilled,
        KeyState::Unspilling,
    ];
}

/// Something that happened: a scheduler message, a completion from the shell, or time.
#[derive(Debug)]
pub enum Event<P> {
    /// The scheduler accepted this worker.
    Registered {
        /// This worker's id.
        id: WorkerId,
        /// Every worker, this one included.
        peers: Vec<WorkerInfo>,
    },
    /// A peer joined.
    PeerAdded(WorkerInfo),
    /// A peer left.
    PeerRemoved(WorkerId),
    /// Run a task once its inputs are here.
    Compute {
        /// The task.
        key: Key,
        /// Its dependencies, in any order, duplicates allowed.
        deps: SmallVec<[Key; 2]>,
        /// Holders and sizes of dependencies this worker may not hold.
        who_has: Vec<WhoHas>,
        /// Run order among ready tasks (smaller first).
        priority: Priority,
        /// What the shell needs to run it; handed back in [`Instruction::Run`].
        payload: P,
    },
    /// The shell could not prepare a task (unknown kernel, bad literal).
    TaskRejected {
        /// The task.
        key: Key,
        /// Why.
        message: String,
    },
    /// Forget these keys (results, or tasks not finished).
    Free {
        /// The keys.
        keys: Vec<Key>,
    },
    /// Give this task up if it has not started.
    Steal {
        /// The task.
        key: Key,
    },
    /// Copy these values from their holders and keep them.
    Acquire {
        /// Keys, who holds them and their sizes.
        keys: Vec<WhoHas>,
    },
    /// Hand back unstarted work, let running tasks finish, then stop.
    Leave,
    /// The connection to the scheduler is gone: it reschedules this worker's work, so
    /// everything is forgotten and the worker rejoins as a new one.
    SchedulerLost,
    /// A fetch from `holder` ended: values that arrived (held by the shell until
    /// [`Instruction::Keep`]) and keys the holder does not have.
    Fetched {
        /// Who was asked.
        holder: WorkerId,
        /// Keys that arrived, with their sizes in bytes.
        arrived: Vec<(Key, u64)>,
        /// Keys the holder did not have (or that did not decode).
        missing: Vec<Key>,
    },
    /// A fetch from `holder` failed as a whole (connection lost, bad reply).
    FetchFailed {
        /// Who was asked.
        holder: WorkerId,
        /// The keys asked for.
        keys: Vec<Key>,
    },
    /// A run ended with a value (held by the shell until [`Instruction::Keep`]).
    TaskFinished {
        /// The task.
        key: Key,
        /// The run.
        run: RunId,
        /// The result's size in bytes.
        nbytes: u64,
        /// The kernel's run time.
        duration_us: u64,
        /// When the kernel started (microseconds since the Unix epoch), passed on to the
        /// scheduler for observers.
        started_us: u64,
        /// The compute thread that ran it.
        thread: u32,
    },
    /// A run ended with an error.
    TaskFailed {
        /// The task.
        key: Key,
        /// The run.
        run: RunId,
        /// The failure for the client.
        failure: TaskFailure,
    },
    /// A cancelled run reached a thread and was skipped.
    TaskSkipped {
        /// The task.
        key: Key,
        /// The run.
        run: RunId,
    },
    /// The answer to [`Instruction::Unqueue`]: `taken` when the run had not started (it will
    /// never report).
    Unqueued {
        /// The task.
        key: Key,
        /// The run.
        run: RunId,
        /// Whether the run was removed before it started.
        taken: bool,
    },
    /// The answer to [`Instruction::DrainQueue`]: runs removed before they started.
    QueueDrained {
        /// The runs and their tasks.
        unstarted: Vec<(RunId, Key)>,
    },
    /// A client put values on this worker (already in the shell's store).
    Received {
        /// Keys and sizes in bytes.
        entries: Vec<(Key, u64)>,
    },
    /// The process's resident memory, measured.
    MemoryMeasured {
        /// Bytes.
        process_bytes: u64,
    },
    /// Time to tell the scheduler this worker is alive.
    HeartbeatDue {
        /// The process's resident memory now.
        process_bytes: u64,
        /// The process's CPU use since the last heartbeat, in percent of one core.
        cpu_percent: f32,
        /// Transfers and spills the shell timed since the last heartbeat (passed on as is).
        activity: Vec<ActivityRecord>,
        /// Records the shell dropped to keep `activity` bounded.
        activity_dropped: u32,
        /// The process's network byte totals, read and written (passed on as is).
        network_bytes: (u64, u64),
    },
    /// A spill file is written.
    SpillDone {
        /// The key.
        key: Key,
        /// The file.
        file: SpillFile,
    },
    /// A spill failed; the value is still in memory.
    SpillFailed {
        /// The key.
        key: Key,
        /// The file (may be partly written).
        file: SpillFile,
        /// Why.
        error: SpillError,
    },
    /// A spilled value was read back (held by the shell until [`Instruction::Keep`]).
    Unspilled {
        /// The key.
        key: Key,
        /// The file it was read from.
        file: SpillFile,
    },
    /// A spill file could not be read back: the value is lost.
    UnspillFailed {
        /// The key.
        key: Key,
        /// The file.
        file: SpillFile,
        /// Why.
        message: String,
    },
    /// Time passed (see [`WorkerState::next_deadline`]).
    Tick,
}

/// Something the shell must do.
#[derive(Debug)]
pub enum Instruction<P> {
    /// Send a message to the scheduler.
    Send(WorkerToScheduler),
    /// Ask `holder` for these values; answer with [`Event::Fetched`] or [`Event::FetchFailed`].
    Fetch {
        /// The worker to ask ([`WorkerState::peer_address`] has its address).
        holder: WorkerId,
        /// The keys.
        keys: Vec<Key>,
    },
    /// Hand a task to the compute threads; its inputs are all in the store's memory, and stay
    /// there (neither released nor spilled) until the run reports back. Answer
    /// with exactly one of [`Event::TaskFinished`], [`Event::TaskFailed`],
    /// [`Event::TaskSkipped`], or the run listed in [`Event::QueueDrained`] /
    /// [`Event::Unqueued`] with `taken`.
    Run {
        /// The run.
        run: RunId,
        /// The task.
        key: Key,
        /// Its priority among queued runs.
        priority: Priority,
        /// What the shell gave with [`Event::Compute`].
        payload: P,
    },
    /// The task was freed: skip the run if it has not started (its result is not wanted).
    Cancel {
        /// The run.
        run: RunId,
    },
    /// Remove the run from the queue if it has not started; answer with [`Event::Unqueued`].
    Unqueue {
        /// The run.
        run: RunId,
        /// Its task.
        key: Key,
    },
    /// Remove every run that has not started (and with `close`, stop the threads once the
    /// running ones end); answer with [`Event::QueueDrained`].
    DrainQueue {
        /// Whether the threads stop.
        close: bool,
    },
    /// Put the value that arrived with the current event (a result, a fetched or read-back
    /// value) into the store's memory, replacing any disk copy. Arrived values not kept are
    /// dropped.
    Keep {
        /// The key.
        key: Key,
    },
    /// Write this value to `file`; answer with [`Event::SpillDone`] or [`Event::SpillFailed`].
    /// The value stays in memory meanwhile.
    Spill {
        /// The key.
        key: Key,
        /// Where.
        file: SpillFile,
    },
    /// The spill is accepted: drop the in-memory copy and serve the value from `file`.
    Evict {
        /// The key.
        key: Key,
        /// Its file.
        file: SpillFile,
    },
    /// Read a spilled value back; answer with [`Event::Unspilled`] or [`Event::UnspillFailed`].
    Unspill {
        /// The key.
        key: Key,
        /// Its file.
        file: SpillFile,
    },
    /// Forget a value: drop it from memory and delete its spill file if it has one.
    Release {
        /// The key.
        key: Key,
        /// Its spill file.
        file: Option<SpillFile>,
    },
    /// Delete a spill file no value refers to any more.
    DeleteFile {
        /// The file.
        file: SpillFile,
    },
    /// Something an operator should know (the shell logs it).
    Notice(Notice),
    /// Leaving is complete: flush what was sent and stop.
    Stop,
}

/// Operator-facing news from the state.
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    /// The worker leaves: `returned` tasks it had not started go back to the scheduler.
    Leaving {
        /// How many unstarted tasks are handed back.
        returned: usize,
    },
    /// No task starts until this changes (the scheduler is told too).
    Paused {
        /// Why.
        reason: PauseReason,
    },
    /// The reason to pause is gone: tasks start again (the scheduler is told too).
    Resumed {
        /// The process's memory.
        process_bytes: u64,
        /// How long the worker was paused.
        paused_for_us: u64,
    },
    /// A value cannot be spilled; it stays in memory and is not tried again.
    Unspillable {
        /// The key.
        key: Key,
        /// Why.
        error: SpillError,
    },
    /// Writing a spill file failed: the value stays in memory and spilling stops for this
    /// worker (pausing still bounds its memory) until a retry after `retry_in_us` succeeds.
    /// Failed retries are not noticed again.
    SpillingStopped {
        /// The value whose spill failed.
        key: Key,
        /// Why.
        error: SpillError,
        /// When spilling is tried again.
        retry_in_us: u64,
    },
    /// A spill write succeeded after spilling had stopped: spilling works again.
    SpillingResumed,
    /// A spilled value could not be read back; the scheduler recomputes it for the tasks here.
    ValueLost {
        /// The key.
        key: Key,
        /// Why.
        message: String,
    },
    /// Paused for process memory with nothing running and no value held for
    /// [`Config::stuck_grace_us`]: the memory is not the worker's data and waiting cannot free
    /// it. With `restart` the worker leaves for a fresh process ([`WhenStuck::Restart`]),
    /// otherwise it resumes ([`WhenStuck::Resume`]).
    PauseCannotEnd {
        /// The process's memory.
        process_bytes: u64,
        /// The memory limit.
        limit: u64,
        /// The pause fraction.
        fraction: f64,
        /// Whether the worker leaves to be restarted (else it resumes).
        restart: bool,
    },
    /// Running tasks did not end within the leave patience; the worker leaves without them.
    LeaveTimedOut {
        /// Tasks still running.
        running: usize,
    },
}

/// Why a worker pauses (see [`Notice::Paused`]); its `Display` is the sentence the worker logs
/// and sends to the scheduler.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PauseReason {
    /// The process's memory is over the pause fraction of the limit.
    Memory {
        /// The process's memory.
        process_bytes: u64,
        /// The memory limit.
        limit: u64,
        /// The pause fraction.
        fraction: f64,
    },
    /// Writing a spill file failed while held values are over the target: spilling can no
    /// longer bound memory, so no task starts until a retry succeeds or values are freed.
    SpillFailed {
        /// Bytes of values in memory.
        managed_bytes: u64,
        /// The memory limit.
        limit: u64,
        /// The target fraction.
        fraction: f64,
    },
}

impl std::fmt::Display for PauseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            PauseReason::Memory { process_bytes, limit, fraction } => write!(
                f,
                "process memory {} > {:.0} % of {} limit",
                Megabytes(process_bytes),
                fraction * 100.0,
                Megabytes(limit)
            ),
            PauseReason::SpillFailed { managed_bytes, limit, fraction } => write!(
                f,
                "spilling to disk failed with {} held > {:.0} % of {} limit",
                Megabytes(managed_bytes),
                fraction * 100.0,
                Megabytes(limit)
            ),
        }
    }
}

/// Bytes shown in decimal megabytes, as `--memory-limit 200MB` is given.
struct Megabytes(u64);

impl std::fmt::Display for Megabytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mb = self.0 as f64 / 1e6;
        if mb < 10.0 { write!(f, "{mb:.1} MB") } else { write!(f, "{mb:.0} MB") }
    }
}

/// A task of this worker not handed to the threads yet.
#[derive(Debug)]
struct PendingTask<P> {
    /// Distinct dependencies; each holds one pin on its entry.
    deps: SmallVec<[Key; 2]>,
    priority: Priority,
    payload: P,
    /// Dependencies still being fetched or read back.
    missing: u32,
    /// Tie-break among equal priorities (arrival order), and the identity of its ready-heap
    /// item.
    seq: u64,
}

#[derive(Debug)]
enum Slot<P> {
    Waiting(PendingTask<P>),
    Ready(PendingTask<P>),
    Executing {
        run: RunId,
        /// A steal asked the threads to give the run back; the answer is pending.
        stealing: bool,
    },
    Fetching {
        /// The holder to ask, or asked now.
        asked: WorkerId,
        /// The size its holder reported, counted against the bytes arriving at once.
        nbytes: u64,
        /// `Fetch` was sent (else it waits in the fetch queue).
        requested: bool,
        /// Holders not asked yet.
        untried: SmallVec<[WorkerId; 2]>,
        /// Holders that did not have it.
        tried: SmallVec<[WorkerId; 2]>,
        /// Waiting tasks that need it.
        waiters: SmallVec<[Key; 2]>,
        /// The scheduler asked to keep it (`Acquire`).
        acquire: bool,
    },
    Memory {
        nbytes: u64,
        /// The scheduler knows this worker holds it (else: borrowed for local tasks).
        held: bool,
        /// Last use, for least-recently-used spilling (0 without a memory limit).
        tick: u64,
        /// A spill of it is being written.
        spilling: Option<SpillFile>,
        /// `false` once its codec failed: never tried again.
        spillable: bool,
    },
    Spilled {
        nbytes: u64,
        file: SpillFile,
        held: bool,
    },
    Unspilling {
        nbytes: u64,
        file: SpillFile,
        held: bool,
        waiters: SmallVec<[Key; 2]>,
        /// `Unspill` was sent (else it waits in the unspill queue).
        reading: bool,
    },
}

#[derive(Debug)]
struct Entry<P> {
    slot: Slot<P>,
    /// Waiting or ready tasks that need this value, and runs in flight that hold it; a pinned
    /// value is never spilled or dropped.
    pins: u32,
}

#[derive(Debug)]
struct Leaving {
    returned: Vec<Key>,
    deadline: u64,
}

/// The worker's decisions: events and the current time in, instructions out.
///
/// ```
/// use kiln_worker::{Config, Event, Instruction, WorkerState};
/// use kiln_graph::Key;
/// let mut state: WorkerState<&str> = WorkerState::new(Config::new(1)).unwrap();
/// let mut out = Vec::new();
/// let key = Key::new("x");
/// let compute = Event::Compute {
///     key: key.clone(),
///     deps: Default::default(),
///     who_has: vec![],
///     priority: Default::default(),
///     payload: "kernel",
/// };
/// state.handle(compute, 0, &mut out);
/// assert!(matches!(&out[..], [Instruction::Run { payload: "kernel", .. }]));
/// ```
#[derive(Debug)]
pub struct WorkerState<P> {
    config: Config,
    id: Option<WorkerId>,
    peers: FxHashMap<WorkerId, String>,
    keys: FxHashMap<Key, Entry<P>>,
    /// Ready tasks by priority; items of tasks no longer ready are skipped when popped.
    ready: BinaryHeap<Reverse<(Priority, u64, Key)>>,
    ready_count: usize,
    next_seq: u64,
    next_run: u64,
    next_file: u64,
    /// Runs handed to the threads and not reported back (including runs of freed tasks).
    in_flight: usize,
    /// Entries in `Executing`.
    executing: usize,
    /// The inputs of each run in flight, pinned until the run reports back: a run queued to
    /// the threads holds its inputs from the hand-off to its end, so releasing or spilling
    /// them at the hand-off would free nothing while the count said it had (sixteen queued
    /// runs of a sort held 80 MB that a 128 MB worker no longer counted).
    run_inputs: FxHashMap<RunId, SmallVec<[Key; 2]>>,
    /// Held, unpinned-or-not, spillable values in memory by last use (memory limit only).
    lru: BTreeMap<u64, Key>,
    tick: u64,
    managed: u64,
    spilled: u64,
    spilling_bytes: u64,
    spills_in_flight: usize,
    /// Values to read back, in the order tasks asked (stale items are skipped).
    unspill_queue: std::collections::VecDeque<Key>,
    /// `Unspill`s not answered yet.
    unspills_in_flight: usize,
    /// Values to fetch, in the order tasks asked (stale items are skipped).
    fetch_queue: std::collections::VecDeque<Key>,
    /// Values asked of peers and not arrived: how many, and their reported bytes.
    fetches_in_flight: usize,
    incoming_bytes: u64,
    /// The files being read back and their values' sizes: memory already promised to reads.
    reading: SmallVec<[(SpillFile, u64); 2]>,
    /// Bytes sent to spill since the last memory measurement (not yet visible in it).
    spilled_since_measure: u64,
    /// Bytes computed, read back, fetched or received since the last memory measurement (not
    /// yet visible in it).
    grown_since_measure: u64,
    process_bytes: u64,
    paused_since: Option<u64>,
    /// The last measured process memory is over the pause fraction.
    memory_over: bool,
    /// Recent results' average size in bytes (0: none yet).
    result_bytes: u64,
    /// Since when the worker has been paused for memory with nothing running and nothing held.
    stuck_since: Option<u64>,
    /// A stuck pause was ended ([`WhenStuck::Resume`]): process memory pauses again only
    /// after it has fallen under the pause threshold once.
    pause_waived: bool,
    /// The worker left because a pause could not end ([`WhenStuck::Restart`]).
    fresh_start: bool,
    spilling_stopped: bool,
    /// While spilling is stopped: no spill is tried before this time (`None`: one may be).
    spill_retry_at: Option<u64>,
    /// The wait before the next retry of a stopped spilling.
    spill_backoff_us: u64,
    leaving: Option<Leaving>,
    /// A `DrainQueue` is unanswered.
    draining: bool,
    stopped: bool,
}

impl<P> WorkerState<P> {
    /// A worker that knows nothing yet.
    ///
    /// # Errors
    /// A [`ConfigError`] for a configuration that cannot work.
    pub fn new(config: Config) -> Result<Self, ConfigError> {
        if config.nthreads == 0 {
            return Err(ConfigError::NoThreads);
        }
        if config.tasks_per_thread == 0 {
            return Err(ConfigError::NoTaskSlots);
        }
        if let Some(m) = &config.memory {
            if !(0.0 < m.target && m.target <= m.spill && m.spill <= m.pause && m.pause <= 1.0) {
                return Err(ConfigError::Fractions { target: m.target, spill: m.spill, pause: m.pause });
            }
            if !(0.0 < m.transfer && m.transfer <= 1.0) {
                return Err(ConfigError::TransferFraction(m.transfer));
            }
            if config.max_spills_in_flight == 0 || config.max_unspills_in_flight == 0 {
                return Err(ConfigError::NoSpillSlots);
            }
        }
        Ok(WorkerState {
            config,
            id: None,
            peers: FxHashMap::default(),
            keys: FxHashMap::default(),
            ready: BinaryHeap::new(),
            ready_count: 0,
            next_seq: 0,
            next_run: 0,
            next_file: 0,
            in_flight: 0,
            executing: 0,
            run_inputs: FxHashMap::default(),
            lru: BTreeMap::new(),
            tick: 0,
            managed: 0,
            spilled: 0,
            spilling_bytes: 0,
            spills_in_flight: 0,
            unspill_queue: std::collections::VecDeque::new(),
            unspills_in_flight: 0,
            fetch_queue: std::collections::VecDeque::new(),
            fetches_in_flight: 0,
            incoming_bytes: 0,
            reading: SmallVec::new(),
            spilled_since_measure: 0,
            grown_since_measure: 0,
            process_bytes: 0,
            paused_since: None,
            memory_over: false,
            result_bytes: 0,
            stuck_since: None,
            pause_waived: false,
            fresh_start: false,
            spilling_stopped: false,
            spill_retry_at: None,
            spill_backoff_us: 0,
            leaving: None,
            draining: false,
            stopped: false,
        })
    }

    /// This worker's id, once registered.
    pub fn id(&self) -> Option<WorkerId> {
        self.id
    }

    /// A peer's data address.
    pub fn peer_address(&self, id: WorkerId) -> Option<&str> {
        self.peers.get(&id).map(String::as_str)
    }

    /// Where `key` is; `None`: released (or never known).
    pub fn key_state(&self, key: &Key) -> Option<KeyState> {
        self.keys.get(key).map(|e| match e.slot {
            Slot::Waiting(_) => KeyState::Waiting,
            Slot::Ready(_) => KeyState::Ready,
            Slot::Executing { .. } => KeyState::Executing,
            Slot::Fetching { .. } => KeyState::Fetching,
            Slot::Memory { .. } => KeyState::Memory,
            Slot::Spilled { .. } => KeyState::Spilled,
            Slot::Unspilling { .. } => KeyState::Unspilling,
        })
    }

    /// How many keys are in each state, in the order of [`KeyState::ALL`]. It walks every
    /// key, so it is for occasional observers (a metrics scrape), not for each event.
    pub fn key_counts(&self) -> [usize; 7] {
        let mut counts = [0; 7];
        for entry in self.keys.values() {
            let i = match entry.slot {
                Slot::Waiting(_) => 0,
                Slot::Ready(_) => 1,
                Slot::Executing { .. } => 2,
                Slot::Fetching { .. } => 3,
                Slot::Memory { .. } => 4,
                Slot::Spilled { .. } => 5,
                Slot::Unspilling { .. } => 6,
            };
            counts[i] += 1;
        }
        counts
    }

    /// Bytes of values in memory.
    pub fn managed_bytes(&self) -> u64 {
        self.managed
    }

    /// Bytes of values on disk.
    pub fn spilled_bytes(&self) -> u64 {
        self.spilled
    }

    /// Runs handed to the threads and not reported back.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Values asked of peers and not arrived yet, and their sizes as reported by their
    /// holders: what [`MemoryLimits::transfer`] bounds.
    pub fn incoming(&self) -> (usize, u64) {
        (self.fetches_in_flight, self.incoming_bytes)
    }

    /// Values waiting for their turn to be fetched (some may no longer be wanted).
    pub fn fetches_queued(&self) -> usize {
        self.fetch_queue.len()
    }

    /// Whether memory pressure holds tasks back.
    pub fn is_paused(&self) -> bool {
        self.paused_since.is_some()
    }

    /// Whether a spill write failed and spilling stopped.
    pub fn spilling_stopped(&self) -> bool {
        self.spilling_stopped
    }

    /// Whether the state has asked the shell to stop.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Whether the worker left because a memory pause could not end ([`WhenStuck::Restart`]):
    /// its process should exit so that a nanny starts a fresh one.
    pub fn wants_fresh_start(&self) -> bool {
        self.fresh_start
    }

    /// When the shell must send [`Event::Tick`] at the latest (`None`: no deadline pending).
    pub fn next_deadline(&self) -> Option<u64> {
        if self.stopped {
            return None;
        }
        let leave = self.leaving.as_ref().map(|l| l.deadline);
        let stuck = self.stuck_since.map(|t| t.saturating_add(self.config.stuck_grace_us));
        [leave, self.spill_retry_at, stuck].into_iter().flatten().min()
    }

    /// Why the worker is paused now (`None`: it is not).
    pub fn pause_reason(&self) -> Option<PauseReason> {
        self.paused_since.and_then(|_| self.wanted_pause())
    }

    /// Whether the worker should be paused, and why: process memory first, then a spill
    /// failure that leaves held memory over the target.
    fn wanted_pause(&self) -> Option<PauseReason> {
        let limits = self.config.memory?;
        if self.memory_over && !self.pause_waived {
            return Some(PauseReason::Memory {
                process_bytes: self.process_bytes,
                limit: limits.limit,
                fraction: limits.pause,
            });
        }
        (self.spilling_stopped && self.managed > limits.bytes(limits.target)).then_some(PauseReason::SpillFailed {
            managed_bytes: self.managed,
            limit: limits.limit,
            fraction: limits.target,
        })
    }

    /// Pauses or resumes when the reason changed, telling the operator and the scheduler
    /// once per change.
    fn update_pause(&mut self, now: u64, out: &mut Vec<Instruction<P>>) {
        if self.stopped {
            // Nothing is sent after `Stop`.
            return;
        }
        match (self.wanted_pause(), self.paused_since) {
            (Some(reason), None) => {
                self.paused_since = Some(now);
                out.push(Instruction::Send(WorkerToScheduler::Paused { paused: true, reason: reason.to_string() }));
                out.push(Instruction::Notice(Notice::Paused { reason }));
            }
            (None, Some(since)) => {
                self.paused_since = None;
                let paused_for_us = now.saturating_sub(since);
                out.push(Instruction::Send(WorkerToScheduler::Paused { paused: false, reason: "resumed".into() }));
                out.push(Instruction::Notice(Notice::Resumed { process_bytes: self.process_bytes, paused_for_us }));
            }
            _ => {}
        }
    }

    /// Checks the state's bookkeeping against itself; tests call it after every event.
    ///
    /// # Errors
    /// The first violated invariant.
    pub fn check_invariants(&self) -> Result<(), InvariantError> {
        let fail = |m: String| Err(InvariantError(m));
        let limited = self.config.memory.is_some();
        let (mut managed, mut spilled, mut spilling_bytes, mut spilling) = (0u64, 0u64, 0u64, 0usize);
        let (mut executing, mut ready, mut reading_count) = (0usize, 0usize, 0usize);
        let (mut fetching, mut incoming) = (0usize, 0u64);
        let mut pins: FxHashMap<&Key, u32> = FxHashMap::default();
        let mut waits: FxHashMap<&Key, u32> = FxHashMap::default();
        for (key, entry) in &self.keys {
            match &entry.slot {
                Slot::Waiting(task) | Slot::Ready(task) => {
                    let is_ready = matches!(entry.slot, Slot::Ready(_));
                    if entry.pins != 0 {
                        return fail(format!("{key}: a pending task is pinned"));
                    }
                    let mut absent = 0;
                    for dep in &task.deps {
                        *pins.entry(dep).or_default() += 1;
                        match self.keys.get(dep).map(|e| &e.slot) {
                            Some(Slot::Memory { .. }) => {}
                            Some(Slot::Fetching { waiters, .. } | Slot::Unspilling { waiters, .. }) => {
                                if waiters.iter().filter(|w| *w == key).count() != 1 {
                                    return fail(format!("{key}: not listed once as a waiter of {dep}"));
                                }
                                *waits.entry(dep).or_default() += 1;
                                absent += 1;
                            }
                            _ => return fail(format!("{key}: input {dep} is {:?}", self.key_state(dep))),
                        }
                    }
                    if absent != task.missing || (is_ready != (absent == 0)) {
                        return fail(format!("{key}: {absent} inputs absent, {} counted", task.missing));
                    }
                    if is_ready {
                        ready += 1;
                        if self.leaving.is_some() {
                            return fail(format!("{key}: ready while leaving"));
                        }
                        let queued = self.ready.iter().any(|Reverse((_, seq, k))| k == key && *seq == task.seq);
                        if !queued {
                            return fail(format!("{key}: ready but not in the ready heap"));
                        }
                    } else if self.leaving.is_some() {
                        return fail(format!("{key}: waiting while leaving"));
                    }
                }
                Slot::Executing { .. } => executing += 1,
                Slot::Fetching { waiters, acquire, requested, nbytes, .. } => {
                    if waiters.len() as u32 > entry.pins || (!acquire && entry.pins as usize != waiters.len()) {
                        return fail(format!("{key}: fetching for {} waiters with {} pins", waiters.len(), entry.pins));
                    }
                    if *requested {
                        fetching += 1;
                        incoming = incoming.saturating_add(*nbytes);
                    } else if !self.fetch_queue.contains(key) {
                        return fail(format!("{key}: to be fetched but not queued"));
                    } else if !acquire && entry.pins == 0 {
                        return fail(format!("{key}: queued for a fetch nobody wants"));
                    }
                }
                Slot::Memory { nbytes, held, tick, spilling: s, spillable } => {
                    managed += nbytes;
                    if s.is_some() {
                        spilling_bytes += nbytes;
                        spilling += 1;
                    }
                    if !held && entry.pins == 0 {
                        return fail(format!("{key}: a borrowed value nobody needs is kept"));
                    }
                    let candidate = limited && *held && entry.pins == 0 && s.is_none() && *spillable;
                    if candidate != (self.lru.get(tick) == Some(key)) {
                        return fail(format!("{key}: spill candidate {candidate} disagrees with the LRU"));
                    }
                }
                Slot::Spilled { nbytes, held, .. } => {
                    spilled += nbytes;
                    if entry.pins != 0 || !held {
                        return fail(format!("{key}: spilled but pinned or borrowed"));
                    }
                }
                Slot::Unspilling { nbytes, reading, .. } => {
                    spilled += nbytes;
                    if *reading {
                        reading_count += 1;
                    } else if !self.unspill_queue.contains(key) {
                        return fail(format!("{key}: to be read back but not queued"));
                    }
                }
            }
        }
        for deps in self.run_inputs.values() {
            for dep in deps {
                *pins.entry(dep).or_default() += 1;
                if !matches!(self.keys.get(dep).map(|e| &e.slot), Some(Slot::Memory { .. })) {
                    return fail(format!("{dep}: held by a run but {:?}", self.key_state(dep)));
                }
            }
        }
        if self.run_inputs.len() > self.in_flight {
            return fail(format!("{} runs hold inputs, {} in flight", self.run_inputs.len(), self.in_flight));
        }
        for (key, entry) in &self.keys {
            let expected = pins.get(key).copied().unwrap_or(0);
            if entry.pins != expected {
                return fail(format!("{key}: {} pins, {expected} tasks need it", entry.pins));
            }
            if let Slot::Unspilling { waiters, .. } = &entry.slot
                && waits.get(key).copied().unwrap_or(0) as usize != waiters.len()
            {
                return fail(format!("{key}: unspilling for tasks that do not wait"));
            }
            if let Slot::Fetching { waiters, .. } = &entry.slot
                && waits.get(key).copied().unwrap_or(0) as usize != waiters.len()
            {
                return fail(format!("{key}: fetching for tasks that do not wait"));
            }
        }
        if self.lru.len() != self.lru.values().filter(|k| self.keys.contains_key(*k)).count() {
            return fail("the LRU names released keys".into());
        }
        if (managed, spilled, spilling_bytes) != (self.managed, self.spilled, self.spilling_bytes) {
            return fail(format!(
                "bytes: counted {managed}/{spilled}/{spilling_bytes}, kept {}/{}/{}",
                self.managed, self.spilled, self.spilling_bytes
            ));
        }
        if executing != self.executing || ready != self.ready_count {
            return fail(format!(
                "counted {executing} executing / {ready} ready, kept {}/{}",
                self.executing, self.ready_count
            ));
        }
        if self.executing > self.in_flight || self.in_flight > self.config.max_in_flight() {
            return fail(format!(
                "{} executing, {} runs in flight, limit {}",
                self.executing,
                self.in_flight,
                self.config.max_in_flight()
            ));
        }
        if (fetching, incoming) != (self.fetches_in_flight, self.incoming_bytes) {
            return fail(format!(
                "fetches: counted {fetching} asked for {incoming} bytes, kept {}/{}",
                self.fetches_in_flight, self.incoming_bytes
            ));
        }
        if spilling > self.spills_in_flight || self.spills_in_flight > self.config.max_spills_in_flight {
            return fail(format!("{spilling} values spilling, {} spills in flight", self.spills_in_flight));
        }
        if reading_count > self.unspills_in_flight
            || self.unspills_in_flight > self.config.max_unspills_in_flight
            || self.reading.len() != self.unspills_in_flight
        {
            return fail(format!("{reading_count} values read back, {} unspills in flight", self.unspills_in_flight));
        }
        if !limited && (self.spills_in_flight > 0 || spilled > 0 || self.paused_since.is_some()) {
            return fail("spilling or pausing without a memory limit".into());
        }
        if self.pause_waived && !limited {
            return fail("a pause waived without a memory limit".into());
        }
        if self.fresh_start && self.leaving.is_none() {
            return fail("wants a fresh start without leaving".into());
        }
        Ok(())
    }

    /// Handles one event at time `now` (microseconds on any monotonic clock), appending what
    /// the shell must do to `out`.
    pub fn handle(&mut self, event: Event<P>, now: u64, out: &mut Vec<Instruction<P>>) {
        if self.stopped {
            return;
        }
        if self.spill_retry_at.is_some_and(|at| now >= at) {
            // The backoff is over: the next spill is a retry.
            self.spill_retry_at = None;
        }
        match event {
            Event::Registered { id, peers } => {
                self.id = Some(id);
                self.peers = peers.into_iter().map(|w| (w.id, w.address)).collect();
                if let Some(reason) = self.pause_reason() {
                    // A scheduler that lost this worker knows it as a new one, not paused.
                    out.push(Instruction::Send(WorkerToScheduler::Paused { paused: true, reason: reason.to_string() }));
                }
            }
            Event::PeerAdded(info) => {
                self.peers.insert(info.id, info.address);
            }
            Event::PeerRemoved(id) => {
                self.peers.remove(&id);
            }
            Event::Compute { key, deps, who_has, priority, payload } => {
                self.compute(key, deps, &who_has, priority, payload, out)
            }
            Event::TaskRejected { key, message } => {
                let failure = TaskFailure::raised(key.clone(), message);
                out.push(Instruction::Send(WorkerToScheduler::Failed { key, failure }));
            }
            Event::Free { keys } => {
                for key in keys {
                    self.free(key, out);
                }
            }
            Event::Steal { key } => self.steal(key, out),
            Event::Acquire { keys } => self.acquire(keys, out),
            Event::Leave => self.leave(now, out),
            Event::SchedulerLost => self.reset(out),
            Event::Fetched { holder, arrived, missing } => {
                let mut received = Vec::new();
                for (key, nbytes) in arrived {
                    self.arrived(key, nbytes, &mut received, out);
                }
                if !received.is_empty() {
                    out.push(Instruction::Send(WorkerToScheduler::Received { entries: received }));
                }
                for key in missing {
                    self.not_at(holder, key, out);
                }
            }
            Event::FetchFailed { holder, keys } => {
                for key in keys {
                    self.not_at(holder, key, out);
                }
            }
            Event::TaskFinished { key, run, nbytes, duration_us, started_us, thread } => {
                self.finished(key, run, nbytes, (duration_us, started_us, thread), out)
            }
            Event::TaskFailed { key, run, failure } => {
                self.in_flight = self.in_flight.saturating_sub(1);
                self.run_ended(run, out);
                if self.is_run(&key, run) {
                    self.remove_executing(&key);
                    out.push(Instruction::Send(WorkerToScheduler::Failed { key, failure }));
                }
                self.finish_leaving_if_done(out);
            }
            Event::TaskSkipped { key, run } => {
                self.in_flight = self.in_flight.saturating_sub(1);
                self.run_ended(run, out);
                if self.is_run(&key, run) {
                    self.remove_executing(&key);
                }
                self.finish_leaving_if_done(out);
            }
            Event::Unqueued { key, run, taken } => self.unqueued(key, run, taken, out),
            Event::QueueDrained { unstarted } => {
                self.draining = false;
                self.in_flight = self.in_flight.saturating_sub(unstarted.len());
                for (run, key) in unstarted {
                    self.run_ended(run, out);
                    if self.is_run(&key, run) {
                        self.remove_executing(&key);
                        if let Some(leaving) = &mut self.leaving {
                            leaving.returned.push(key);
                        }
                    }
                }
                self.finish_leaving_if_done(out);
            }
            Event::Received { entries } => {
                for (key, nbytes) in &entries {
                    self.hold(key, Some(*nbytes));
                }
                out.push(Instruction::Send(WorkerToScheduler::Received { entries }));
            }
            Event::MemoryMeasured { process_bytes } => self.memory_measured(process_bytes),
            Event::HeartbeatDue { process_bytes, cpu_percent, activity, activity_dropped, network_bytes } => {
                out.push(Instruction::Send(WorkerToScheduler::Heartbeat {
                    managed_bytes: self.managed,
                    spilled_bytes: self.spilled,
                    process_bytes,
                    cpu_percent,
                    activity,
                    activity_dropped,
                    network_read_bytes: network_bytes.0,
                    network_written_bytes: network_bytes.1,
                }));
            }
            Event::SpillDone { key, file } => self.spill_done(key, file, out),
            Event::SpillFailed { key, file, error } => self.spill_failed(key, file, error, now, out),
            Event::Unspilled { key, file } => self.unspilled(key, file, out),
            Event::UnspillFailed { key, file, message } => self.unspill_failed(key, file, message, out),
            Event::Tick => {
                if let Some(leaving) = &self.leaving
                    && now >= leaving.deadline
                {
                    out.push(Instruction::Notice(Notice::LeaveTimedOut { running: self.executing }));
                    self.stop(out);
                }
            }
        }
        self.spill_if_needed(out);
        self.end_stuck_pause(now, out);
        self.update_pause(now, out);
        if self.stuck_since.is_none() && self.stuck() {
            // The grace starts with the pause, not with the next event.
            self.stuck_since = Some(now);
        }
        // Ready tasks start first: a task that can run makes the worker busy, and a busy
        // worker reads back only what fits under the target.
        self.start_ready(out);
        self.start_unspills(out);
        self.start_fetches(out);
        self.start_input_of_first_waiting(out);
    }

    /// When memory holds back every read-back and fetch and nothing is under way (no run, spill,
    /// read-back or fetch), nothing would ever change: one missing input of the
    /// first waiting task by priority is read back or fetched (without one, the first value the
    /// scheduler asked to keep). One task at a time then becomes ready; bringing back inputs of
    /// many tasks at once would fill memory with values none of them can run without (they
    /// wait for fetches a pause holds back).
    fn start_input_of_first_waiting(&mut self, out: &mut Vec<Instruction<P>>) {
        // Every input not asked for yet is queued for a read-back or a fetch. Checked on every
        // event, so the cheap tests come first.
        let nothing_missing = self.unspill_queue.is_empty() && self.fetch_queue.is_empty();
        let busy = self.in_flight > 0
            || self.spills_in_flight > 0
            || self.unspills_in_flight > 0
            || self.fetches_in_flight > 0;
        if nothing_missing || busy || self.leaving.is_some() || self.stopped {
            return;
        }
        // A ready task that consumes inputs will start (a pause lets one through when nothing
        // else lowers memory); ready tasks without inputs may wait for the pause to end.
        if self.ready_consumer().is_some() {
            return;
        }
        let first = self
            .keys
            .values()
            .filter_map(|e| match &e.slot {
                Slot::Waiting(task) => Some(task),
                _ => None,
            })
            .min_by(|a, b| (a.priority, a.seq).cmp(&(b.priority, b.seq)));
        // Without a waiting task, a value the scheduler asked to keep (`Acquire`, a retiring
        // worker's data) is what is missing.
        let candidates = match first {
            Some(task) => task.deps.to_vec(),
            None => {
                let keys = &self.keys;
                let unasked = |k: &&Key| {
                    matches!(keys.get(*k), Some(Entry { slot: Slot::Fetching { requested: false, .. }, .. }))
                };
                self.fetch_queue.iter().find(unasked).cloned().into_iter().collect()
            }
        };
        for dep in candidates {
            match self.keys.get_mut(&dep).map(|e| &mut e.slot) {
                Some(Slot::Unspilling { nbytes, file, reading, .. }) if !*reading => {
                    *reading = true;
                    self.unspills_in_flight += 1;
                    self.reading.push((*file, *nbytes));
                    out.push(Instruction::Unspill { key: dep, file: *file });
                    return;
                }
                Some(Slot::Fetching { requested, asked, nbytes, .. }) if !*requested => {
                    *requested = true;
                    self.fetches_in_flight += 1;
                    self.incoming_bytes = self.incoming_bytes.saturating_add(*nbytes);
                    out.push(Instruction::Fetch { holder: *asked, keys: vec![dep] });
                    return;
                }
                _ => {}
            }
        }
    }

    /// Paused for process memory while running nothing and holding no value: the memory is
    /// the process's own (allocator arenas, caches, a library's buffers), so no task finishing,
    /// no spill and no free can lower it. After the grace period, the worker leaves to be
    /// restarted or resumes ([`WhenStuck`]), telling the operator why.
    fn end_stuck_pause(&mut self, now: u64, out: &mut Vec<Instruction<P>>) {
        if !self.stuck() {
            self.stuck_since = None;
            return;
        }
        let since = *self.stuck_since.get_or_insert(now);
        if now.saturating_sub(since) < self.config.stuck_grace_us {
            return;
        }
        self.stuck_since = None;
        let Some(limits) = self.config.memory else { return };
        // A worker that never ran a task would be just as far over in a fresh process.
        let restart = self.config.when_stuck == WhenStuck::Restart && self.next_run > 0;
        out.push(Instruction::Notice(Notice::PauseCannotEnd {
            process_bytes: self.process_bytes,
            limit: limits.limit,
            fraction: limits.pause,
            restart,
        }));
        if restart {
            self.fresh_start = true;
            self.leave(now, out);
        } else {
            self.pause_waived = true;
        }
    }

    /// Paused for process memory that waiting cannot lower (not yet waived).
    fn stuck(&self) -> bool {
        self.paused_since.is_some() && self.memory_over && !self.pause_waived && self.holds_nothing()
    }

    /// Nothing runs, no value is in memory, on disk or on its way, and no spill or read-back
    /// is under way: only waiting or ready tasks, which a leave hands back.
    fn holds_nothing(&self) -> bool {
        self.in_flight == 0
            && self.executing == 0
            && self.managed == 0
            && self.spilled == 0
            && self.spills_in_flight == 0
            && self.unspills_in_flight == 0
            && self.leaving.is_none()
            && !self.stopped
            && self.keys.values().all(|e| matches!(e.slot, Slot::Waiting(_) | Slot::Ready(_)))
    }

    /// Sends queued `Unspill`s while slots are free and memory has room for the value under
    /// the target (paused: none), so reading back never outruns spilling. The process's memory
    /// must have room under the spill threshold too: values waiting tasks pin cannot be spilled
    /// again, so reading back up to the target on top of a large unmanaged share (allocator
    /// pages, buffers) left a 128 MiB worker no room for the running task's own copies. With
    /// nothing at all under way, [`Self::start_input_of_first_waiting`] reads one anyway.
    fn start_unspills(&mut self, out: &mut Vec<Instruction<P>>) {
        while self.unspills_in_flight < self.config.max_unspills_in_flight {
            let Some(key) = self.unspill_queue.front() else { return };
            let Some(Entry { slot: Slot::Unspilling { nbytes, reading: false, .. }, .. }) = self.keys.get(key) else {
                self.unspill_queue.pop_front();
                continue;
            };
            let promised: u64 = self.reading.iter().map(|(_, n)| n).sum();
            let room = self.config.memory.is_none_or(|l| {
                self.paused_since.is_none()
                    && self.managed.saturating_sub(self.spilling_bytes) + promised + nbytes <= l.bytes(l.target)
                    && self.process_estimate() + promised + nbytes <= l.bytes(l.spill)
            });
            if !room {
                return;
            }
            let nbytes = *nbytes;
            let Some(key) = self.unspill_queue.pop_front() else { return };
            if let Some(Entry { slot: Slot::Unspilling { file, reading, .. }, .. }) = self.keys.get_mut(&key) {
                *reading = true;
                self.unspills_in_flight += 1;
                self.reading.push((*file, nbytes));
                out.push(Instruction::Unspill { key, file: *file });
            }
        }
    }

    // ---- tasks ----

    fn compute(
        &mut self,
        key: Key,
        mut deps: SmallVec<[Key; 2]>,
        who_has: &[WhoHas],
        priority: Priority,
        payload: P,
        out: &mut Vec<Instruction<P>>,
    ) {
        if let Some(leaving) = &mut self.leaving {
            leaving.returned.push(key);
            return;
        }
        if let Some(Entry { slot: Slot::Fetching { asked, waiters, requested, nbytes, .. }, .. }) =
            self.keys.get_mut(&key)
        {
            // The scheduler wants it computed here: its holder is gone (a fetch from a peer cut
            // off may never answer). The fetch is abandoned, its late answer ignored, and the
            // tasks waiting for it are reported so the scheduler sends them again.
            let (asked, waiters, requested, nbytes) = (*asked, std::mem::take(waiters), *requested, *nbytes);
            self.keys.remove(&key);
            self.fetch_ended(requested, nbytes);
            let tried = if requested { vec![asked] } else { Vec::new() };
            self.fail_waiters(&key, waiters, tried, out);
        }
        if let Some(entry) = self.keys.get_mut(&key) {
            // Equal keys are equal computations: a value already here answers at once; a task
            // already under way answers when it ends.
            let nbytes = match &mut entry.slot {
                Slot::Memory { nbytes, .. } | Slot::Spilled { nbytes, .. } | Slot::Unspilling { nbytes, .. } => {
                    Some(*nbytes)
                }
                _ => None,
            };
            if let Some(nbytes) = nbytes {
                self.hold(&key, None);
                // Not run here: no start time or thread for observers.
                let done = WorkerToScheduler::Finished { key, nbytes, duration_us: 0, started_us: 0, thread: 0 };
                out.push(Instruction::Send(done));
            }
            return;
        }
        dedup(&mut deps);
        // First pass, without changing anything: every dependency must be here, on its way,
        // or fetchable; otherwise the scheduler must find it another way.
        for dep in &deps {
            let problem = match self.keys.get(dep).map(|e| &e.slot) {
                Some(Slot::Memory { .. } | Slot::Spilled { .. } | Slot::Unspilling { .. } | Slot::Fetching { .. }) => {
                    None
                }
                // A task of this worker not finished: the scheduler should not have sent this.
                Some(_) => Some(Vec::new()),
                None => {
                    let holders = holders_of(who_has, dep).map_or(&[][..], |w| &w.holders);
                    (!holders.iter().any(|h| self.can_fetch_from(*h))).then(|| holders.to_vec())
                }
            };
            if let Some(tried) = problem {
                out.push(Instruction::Send(WorkerToScheduler::MissingDependency { key, missing: dep.clone(), tried }));
                return;
            }
        }
        let mut missing = 0u32;
        for dep in &deps {
            let id = self.id;
            let peers = &self.peers;
            let fetch_queue = &mut self.fetch_queue;
            let entry = self.keys.entry(dep.clone()).or_insert_with(|| {
                let (holders, nbytes) = holders_of(who_has, dep).map_or((&[][..], 0), |w| (&w.holders[..], w.nbytes));
                let mut candidates = holders
                    .iter()
                    .copied()
                    .filter(|h| Some(*h) != id && peers.contains_key(h))
                    .collect::<SmallVec<_>>();
                let asked = candidates.remove(0);
                fetch_queue.push_back(dep.clone());
                Entry {
                    slot: Slot::Fetching {
                        asked,
                        nbytes,
                        requested: false,
                        untried: candidates,
                        tried: SmallVec::new(),
                        waiters: SmallVec::new(),
                        acquire: false,
                    },
                    pins: 0,
                }
            });
            entry.pins += 1;
            if let Slot::Spilled { nbytes, file, held } = entry.slot {
                entry.slot = Slot::Unspilling { nbytes, file, held, waiters: SmallVec::new(), reading: false };
                self.unspill_queue.push_back(dep.clone());
            }
            match &mut entry.slot {
                Slot::Fetching { waiters, .. } | Slot::Unspilling { waiters, .. } => {
                    waiters.push(key.clone());
                    missing += 1;
                }
                Slot::Memory { held, spilling: None, spillable: true, tick, .. } if *held => {
                    // Pinned values are not spill candidates.
                    self.lru.remove(tick);
                }
                _ => {}
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let task = PendingTask { deps, priority, payload, missing, seq };
        if missing > 0 {
            self.keys.insert(key, Entry { slot: Slot::Waiting(task), pins: 0 });
        } else if self.ready_count == 0 && self.may_start() {
            // The hot path: straight to the threads, no heap.
            self.run(key, task, out);
        } else {
            self.push_ready(key, task);
        }
    }

    fn may_start(&self) -> bool {
        self.in_flight < self.runs_allowed()
            && self.paused_since.is_none()
            && !self.spill_backlog()
            && self.leaving.is_none()
            && !self.stopped
    }

    /// Runs that may be in flight now. Runs queued for the threads start whatever memory does
    /// meanwhile, so under a memory limit only as many are queued beyond the threads as their
    /// results (at the recent average size) fit under the target: sixteen queued 4 MB chunks
    /// took a 128 MB worker 31 MB past its target under CPU load, and its peak to 161 MB.
    fn runs_allowed(&self) -> usize {
        let max = self.config.max_in_flight();
        let Some(limits) = self.config.memory else { return max };
        if self.result_bytes == 0 {
            return max;
        }
        let room = limits.bytes(limits.target).saturating_sub(self.managed);
        let fit = usize::try_from(room / self.result_bytes).unwrap_or(usize::MAX);
        fit.clamp(self.config.nthreads.min(max), max)
    }

    /// Held memory is over the target while values are being written out: new tasks wait for
    /// the writes, so producing results never outruns spilling them (the process-memory pause,
    /// sampled, would react only after the fact).
    fn spill_backlog(&self) -> bool {
        self.spills_in_flight > 0 && self.config.memory.is_some_and(|l| self.managed > l.bytes(l.target))
    }

    fn push_ready(&mut self, key: Key, task: PendingTask<P>) {
        self.ready.push(Reverse((task.priority, task.seq, key.clone())));
        self.ready_count += 1;
        self.keys.insert(key, Entry { slot: Slot::Ready(task), pins: 0 });
    }

    /// Paused with nothing under way that could lower memory: every value in memory is pinned
    /// by a ready task (or cannot be spilled) and no thread is busy. Holding on would wait
    /// forever, since only running those tasks unpins their inputs; one task runs at a time.
    fn paused_without_way_out(&self) -> bool {
        self.paused_since.is_some()
            && self.in_flight == 0
            && self.spills_in_flight == 0
            && self.leaving.is_none()
            && !self.stopped
            && (self.spilling_stopped || !self.lru.keys().any(|t| self.lru_key_unpinned(*t)))
    }

    fn lru_key_unpinned(&self, tick: u64) -> bool {
        self.lru.get(&tick).and_then(|k| self.keys.get(k)).is_some_and(|e| e.pins == 0)
    }

    /// The first ready task by priority that has inputs, which running would unpin.
    fn ready_consumer(&self) -> Option<Key> {
        if self.ready_count == 0 {
            return None;
        }
        let keys = &self.keys;
        self.ready
            .iter()
            .filter(|Reverse((_, seq, key))| {
                matches!(keys.get(key), Some(Entry { slot: Slot::Ready(t), .. }) if t.seq == *seq && !t.deps.is_empty())
            })
            .min()
            .map(|Reverse((_, _, key))| key.clone())
    }

    /// Hands ready tasks to the threads while slots are free.
    fn start_ready(&mut self, out: &mut Vec<Instruction<P>>) {
        if self.ready_count > 0 && !self.may_start() && self.paused_without_way_out() {
            // Only a task that consumes pinned inputs can lower memory; the first by priority.
            if let Some(key) = self.ready_consumer()
                && let Some(Entry { slot: Slot::Ready(task), .. }) = self.keys.remove(&key)
            {
                self.ready_count -= 1;
                self.run(key, task, out);
            }
        }
        while self.ready_count > 0 && self.may_start() {
            let Some(Reverse((_, seq, key))) = self.ready.pop() else { break };
            let live = matches!(self.keys.get(&key), Some(Entry { slot: Slot::Ready(t), .. }) if t.seq == seq);
            if !live {
                continue;
            }
            self.ready_count -= 1;
            let Some(entry) = self.keys.remove(&key) else { continue };
            let Slot::Ready(task) = entry.slot else { continue };
            self.run(key, task, out);
        }
        // Items of tasks freed or stolen while ready linger until popped; rebuild when they
        // dominate so the heap stays proportional to the ready tasks.
        if self.ready.len() > 2 * self.ready_count + 64 {
            let keys = &self.keys;
            self.ready.retain(
                |Reverse((_, seq, key))| matches!(keys.get(key), Some(Entry { slot: Slot::Ready(t), .. }) if t.seq == *seq),
            );
        }
    }

    fn run(&mut self, key: Key, task: PendingTask<P>, out: &mut Vec<Instruction<P>>) {
        let run = RunId(self.next_run);
        self.next_run += 1;
        self.in_flight += 1;
        self.executing += 1;
        let PendingTask { deps, priority, payload, .. } = task;
        self.keys.insert(key.clone(), Entry { slot: Slot::Executing { run, stealing: false }, pins: 0 });
        out.push(Instruction::Run { run, key, priority, payload });
        // The pins pass from the task to its run.
        if !deps.is_empty() {
            self.run_inputs.insert(run, deps);
        }
    }

    /// A run reported back (finished, failed, skipped, or given back unstarted): the inputs it
    /// held are unpinned.
    fn run_ended(&mut self, run: RunId, out: &mut Vec<Instruction<P>>) {
        for dep in self.run_inputs.remove(&run).unwrap_or_default() {
            self.unpin(&dep, out);
        }
    }

    fn is_run(&self, key: &Key, run: RunId) -> bool {
        matches!(self.keys.get(key), Some(Entry { slot: Slot::Executing { run: r, .. }, .. }) if *r == run)
    }

    fn remove_executing(&mut self, key: &Key) {
        self.keys.remove(key);
        self.executing -= 1;
    }

    /// `timing` is the run's duration, start (Unix µs) and thread, passed on to the scheduler.
    fn finished(&mut self, key: Key, run: RunId, nbytes: u64, timing: (u64, u64, u32), out: &mut Vec<Instruction<P>>) {
        let (duration_us, started_us, thread) = timing;
        self.in_flight = self.in_flight.saturating_sub(1);
        self.run_ended(run, out);
        if !self.is_run(&key, run) {
            // Freed (or stolen, or forgotten) meanwhile: nobody wants this result.
            self.finish_leaving_if_done(out);
            return;
        }
        self.executing -= 1;
        // A moving average of result sizes (weight 1/4 for the newest), for `runs_allowed`.
        self.result_bytes = if self.result_bytes == 0 {
            nbytes
        } else {
            self.result_bytes.saturating_mul(3).saturating_add(nbytes) / 4
        };
        let tick = self.next_tick();
        if let Some(entry) = self.keys.get_mut(&key) {
            entry.slot = Slot::Memory { nbytes, held: true, tick, spilling: None, spillable: true };
        }
        self.managed += nbytes;
        self.grown_since_measure += nbytes;
        if self.config.memory.is_some() {
            self.lru.insert(tick, key.clone());
        }
        out.push(Instruction::Keep { key: key.clone() });
        out.push(Instruction::Send(WorkerToScheduler::Finished { key, nbytes, duration_us, started_us, thread }));
        self.finish_leaving_if_done(out);
    }

    /// Drops a task that has not been handed to the threads, with its pins and waits.
    fn drop_pending(&mut self, key: &Key, out: &mut Vec<Instruction<P>>) {
        let Some(entry) = self.keys.remove(key) else { return };
        let task = match entry.slot {
            Slot::Waiting(task) => task,
            Slot::Ready(task) => {
                self.ready_count -= 1;
                task
            }
            other => {
                self.keys.insert(key.clone(), Entry { slot: other, pins: entry.pins });
                return;
            }
        };
        for dep in &task.deps {
            if let Some(Entry { slot: Slot::Fetching { waiters, .. } | Slot::Unspilling { waiters, .. }, .. }) =
                self.keys.get_mut(dep)
            {
                waiters.retain(|w| w != key);
            }
            self.unpin(dep, out);
        }
    }

    fn unpin(&mut self, dep: &Key, out: &mut Vec<Instruction<P>>) {
        let Some(entry) = self.keys.get_mut(dep) else { return };
        entry.pins = entry.pins.saturating_sub(1);
        if entry.pins > 0 {
            return;
        }
        match &entry.slot {
            Slot::Memory { held: false, nbytes, spilling, .. } => {
                // A borrowed input whose last task has started.
                let (nbytes, spilling) = (*nbytes, *spilling);
                self.keys.remove(dep);
                self.forget_memory(nbytes, spilling);
                out.push(Instruction::Release { key: dep.clone(), file: None });
            }
            Slot::Unspilling { held: false, nbytes, file, .. } => {
                let (nbytes, file) = (*nbytes, *file);
                self.keys.remove(dep);
                self.spilled -= nbytes;
                out.push(Instruction::Release { key: dep.clone(), file: Some(file) });
            }
            &Slot::Unspilling { held: true, nbytes, file, reading: false, .. } => {
                // Nobody needs it back before it is read: it stays on disk.
                entry.slot = Slot::Spilled { nbytes, file, held: true };
            }
            Slot::Fetching { requested: false, acquire: false, .. } => {
                // Not asked for yet and no longer wanted: its queue item is skipped as stale.
                self.keys.remove(dep);
            }
            Slot::Memory { held: true, spilling: None, spillable: true, tick, .. } if self.config.memory.is_some() => {
                let tick = *tick;
                self.lru.insert(tick, dep.clone());
            }
            _ => {}
        }
    }

    fn input_arrived(&mut self, task: &Key) {
        let Some(entry) = self.keys.get_mut(task) else { return };
        let Slot::Waiting(pending) = &mut entry.slot else { return };
        pending.missing = pending.missing.saturating_sub(1);
        if pending.missing > 0 {
            return;
        }
        let Some(entry) = self.keys.remove(task) else { return };
        if let Slot::Waiting(pending) = entry.slot {
            self.push_ready(task.clone(), pending);
        }
    }

    /// Fails the waiting tasks of a value that cannot be had.
    fn fail_waiters(
        &mut self,
        dep: &Key,
        waiters: SmallVec<[Key; 2]>,
        tried: Vec<WorkerId>,
        out: &mut Vec<Instruction<P>>,
    ) {
        for task in waiters {
            if matches!(self.keys.get(&task), Some(Entry { slot: Slot::Waiting(_), .. })) {
                self.drop_pending(&task, out);
                out.push(Instruction::Send(WorkerToScheduler::MissingDependency {
                    key: task,
                    missing: dep.clone(),
                    tried: tried.clone(),
                }));
            }
        }
    }

    // ---- scheduler requests ----

    fn free(&mut self, key: Key, out: &mut Vec<Instruction<P>>) {
        let Some(entry) = self.keys.get_mut(&key) else { return };
        let pinned = entry.pins > 0;
        match &mut entry.slot {
            Slot::Waiting(_) | Slot::Ready(_) => self.drop_pending(&key, out),
            Slot::Executing { run, .. } => {
                let run = *run;
                self.remove_executing(&key);
                out.push(Instruction::Cancel { run });
                self.finish_leaving_if_done(out);
            }
            Slot::Memory { held, .. } | Slot::Spilled { held, .. } | Slot::Unspilling { held, .. } if pinned => {
                // Local tasks still need it (pinned values are not in the LRU): it goes when
                // they have started.
                *held = false;
            }
            Slot::Memory { held: true, nbytes, spilling, tick, .. } => {
                let (nbytes, spilling, tick) = (*nbytes, *spilling, *tick);
                self.keys.remove(&key);
                self.lru.remove(&tick);
                self.forget_memory(nbytes, spilling);
                out.push(Instruction::Release { key, file: None });
            }
            Slot::Spilled { nbytes, file, .. } => {
                let (nbytes, file) = (*nbytes, *file);
                self.keys.remove(&key);
                self.spilled -= nbytes;
                out.push(Instruction::Release { key, file: Some(file) });
            }
            Slot::Fetching { requested: false, .. } if !pinned => {
                self.keys.remove(&key);
            }
            Slot::Fetching { acquire, .. } => *acquire = false,
            // Borrowed values are not the scheduler's to free.
            Slot::Memory { held: false, .. } | Slot::Unspilling { .. } => {}
        }
    }

    fn forget_memory(&mut self, nbytes: u64, spilling: Option<SpillFile>) {
        self.managed -= nbytes;
        if spilling.is_some() {
            // The spill's completion finds no entry and deletes its file.
            self.spilling_bytes -= nbytes;
        }
    }

    fn steal(&mut self, key: Key, out: &mut Vec<Instruction<P>>) {
        let stolen = match self.keys.get_mut(&key).map(|e| &mut e.slot) {
            Some(Slot::Waiting(_) | Slot::Ready(_)) => {
                self.drop_pending(&key, out);
                true
            }
            Some(Slot::Executing { run, stealing }) => {
                // Handed to the threads: only they know whether it started.
                if !*stealing {
                    *stealing = true;
                    out.push(Instruction::Unqueue { run: *run, key });
                }
                return;
            }
            _ => false,
        };
        out.push(Instruction::Send(WorkerToScheduler::StealResponse { key, stolen }));
    }

    fn unqueued(&mut self, key: Key, run: RunId, taken: bool, out: &mut Vec<Instruction<P>>) {
        if taken {
            self.in_flight = self.in_flight.saturating_sub(1);
            self.run_ended(run, out);
        }
        if let Some(Entry { slot: Slot::Executing { run: r, stealing }, .. }) = self.keys.get_mut(&key)
            && *r == run
        {
            if taken {
                self.remove_executing(&key);
            } else {
                *stealing = false;
            }
        }
        out.push(Instruction::Send(WorkerToScheduler::StealResponse { key, stolen: taken }));
        self.finish_leaving_if_done(out);
    }

    fn acquire(&mut self, keys: Vec<WhoHas>, out: &mut Vec<Instruction<P>>) {
        let mut received = Vec::new();
        for WhoHas { key, holders, nbytes } in keys {
            match self.keys.get_mut(&key).map(|e| &mut e.slot) {
                Some(Slot::Memory { nbytes, .. } | Slot::Spilled { nbytes, .. } | Slot::Unspilling { nbytes, .. }) => {
                    received.push((key.clone(), *nbytes));
                    self.hold(&key, None);
                }
                Some(Slot::Fetching { acquire, .. }) => *acquire = true,
                Some(_) => {}
                None => {
                    let mut candidates: SmallVec<[WorkerId; 2]> =
                        holders.iter().copied().filter(|h| self.can_fetch_from(*h)).collect();
                    if candidates.is_empty() {
                        // The scheduler asks again while the copy is still needed.
                        continue;
                    }
                    let asked = candidates.remove(0);
                    self.fetch_queue.push_back(key.clone());
                    let slot = Slot::Fetching {
                        asked,
                        nbytes,
                        requested: false,
                        untried: candidates,
                        tried: SmallVec::new(),
                        waiters: SmallVec::new(),
                        acquire: true,
                    };
                    self.keys.insert(key, Entry { slot, pins: 0 });
                }
            }
        }
        if !received.is_empty() {
            out.push(Instruction::Send(WorkerToScheduler::Received { entries: received }));
        }
    }

    /// Marks a value the scheduler knows about (a result, an acquired copy, scattered data);
    /// `nbytes` creates it in memory when it is not known yet.
    fn hold(&mut self, key: &Key, nbytes: Option<u64>) {
        let tick = self.next_tick();
        let limited = self.config.memory.is_some();
        match self.keys.get_mut(key) {
            Some(entry) => match &mut entry.slot {
                Slot::Memory { held, tick: t, spilling, spillable, .. } => {
                    if !*held && limited && entry.pins == 0 && spilling.is_none() && *spillable {
                        self.lru.insert(*t, key.clone());
                    }
                    *held = true;
                }
                Slot::Spilled { held, .. } | Slot::Unspilling { held, .. } => *held = true,
                _ => {}
            },
            None => {
                if let Some(nbytes) = nbytes {
                    let slot = Slot::Memory { nbytes, held: true, tick, spilling: None, spillable: true };
                    self.keys.insert(key.clone(), Entry { slot, pins: 0 });
                    self.managed += nbytes;
                    self.grown_since_measure += nbytes;
                    if limited {
                        self.lru.insert(tick, key.clone());
                    }
                }
            }
        }
    }

    fn can_fetch_from(&self, holder: WorkerId) -> bool {
        Some(holder) != self.id && self.peers.contains_key(&holder)
    }

    fn next_tick(&mut self) -> u64 {
        if self.config.memory.is_none() {
            return 0;
        }
        self.tick += 1;
        self.tick
    }

    // ---- data arriving ----

    fn arrived(&mut self, key: Key, nbytes: u64, received: &mut Vec<(Key, u64)>, out: &mut Vec<Instruction<P>>) {
        let tick = self.next_tick();
        let Some(entry) = self.keys.get_mut(&key) else { return };
        let Slot::Fetching { waiters, acquire, requested, nbytes: asked_bytes, .. } = &mut entry.slot else { return };
        let (acquire, requested, asked_bytes) = (*acquire, *requested, *asked_bytes);
        let waiters = std::mem::take(waiters);
        if entry.pins == 0 && !acquire {
            // Every task that wanted it is gone.
            self.keys.remove(&key);
            self.fetch_ended(requested, asked_bytes);
            return;
        }
        entry.slot = Slot::Memory { nbytes, held: acquire, tick, spilling: None, spillable: true };
        let unpinned = entry.pins == 0;
        // A late answer to an abandoned request may fill an entry not asked for yet: its queue
        // item is skipped as stale.
        self.fetch_ended(requested, asked_bytes);
        self.managed += nbytes;
        self.grown_since_measure += nbytes;
        if acquire {
            if unpinned && self.config.memory.is_some() {
                self.lru.insert(tick, key.clone());
            }
            received.push((key.clone(), nbytes));
        }
        out.push(Instruction::Keep { key });
        for task in waiters {
            self.input_arrived(&task);
        }
    }

    /// `holder` does not have `key` (or could not be reached): try the next holder, or give up.
    fn not_at(&mut self, holder: WorkerId, key: Key, out: &mut Vec<Instruction<P>>) {
        let Some(entry) = self.keys.get_mut(&key) else { return };
        let Slot::Fetching { asked, untried, tried, waiters, acquire, requested: true, nbytes } = &mut entry.slot
        else {
            // Not asked yet: the answer is to an abandoned request.
            return;
        };
        if *asked != holder {
            return;
        }
        tried.push(holder);
        let nbytes = *nbytes;
        if entry.pins == 0 && !*acquire {
            self.keys.remove(&key);
            self.fetch_ended(true, nbytes);
            return;
        }
        let id = self.id;
        let peers = &self.peers;
        untried.retain(|h| Some(*h) != id && peers.contains_key(h));
        if !untried.is_empty() {
            *asked = untried.remove(0);
            out.push(Instruction::Fetch { holder: *asked, keys: vec![key] });
            return;
        }
        let waiters = std::mem::take(waiters);
        let tried = tried.to_vec();
        self.keys.remove(&key);
        self.fetch_ended(true, nbytes);
        self.fail_waiters(&key, waiters, tried, out);
    }

    /// A fetching entry is gone (arrived, given up or abandoned): a request's bytes no longer
    /// arrive.
    fn fetch_ended(&mut self, requested: bool, nbytes: u64) {
        if requested {
            self.fetches_in_flight = self.fetches_in_flight.saturating_sub(1);
            self.incoming_bytes = self.incoming_bytes.saturating_sub(nbytes);
        }
    }

    /// Bytes that may be arriving from peers at once (`None`: no bound).
    fn incoming_limit(&self) -> Option<u64> {
        self.config.memory.map(|l| l.bytes(l.transfer))
    }

    /// Sends queued fetches, grouped by holder, while the bytes arriving stay under the
    /// transfer limit and the process's memory with them under the spill threshold (one value
    /// always, when nothing else arrives). Paused or over the spill threshold, a worker fetches
    /// nothing: what arrives would only push memory further up, since tasks waiting for other
    /// inputs pin the values already here. With nothing at all under way,
    /// [`Self::start_input_of_first_waiting`] fetches one anyway.
    fn start_fetches(&mut self, out: &mut Vec<Instruction<P>>) {
        if self.stopped || self.fetch_queue.is_empty() {
            return;
        }
        // Over the spill threshold, arrivals are held back as in a pause: tasks waiting for
        // other inputs pin the values already here, so what arrives could not be spilled and
        // would leave the running task no room for its own copies.
        if self.paused_since.is_some() || self.over_spill_with(self.incoming_bytes) {
            return;
        }
        let limit = self.incoming_limit();
        let mut batches: SmallVec<[(WorkerId, Vec<Key>); 2]> = SmallVec::new();
        while let Some(key) = self.fetch_queue.front() {
            let Some(Entry { slot: Slot::Fetching { requested: false, nbytes, .. }, .. }) = self.keys.get(key) else {
                self.fetch_queue.pop_front();
                continue;
            };
            // Sizes come from the scheduler: a bogus huge one must not overflow the sum.
            let more = self.incoming_bytes.saturating_add(*nbytes);
            let fits = self.fetches_in_flight == 0 || (limit.is_none_or(|l| more <= l) && !self.over_spill_with(more));
            if !fits {
                break;
            }
            let Some(Entry { slot: Slot::Fetching { requested, asked, .. }, .. }) = self.keys.get_mut(key) else {
                break;
            };
            *requested = true;
            let asked = *asked;
            self.fetches_in_flight += 1;
            self.incoming_bytes = more;
            let Some(key) = self.fetch_queue.pop_front() else { break };
            match batches.iter_mut().find(|(h, _)| *h == asked) {
                Some((_, keys)) => keys.push(key),
                None => batches.push((asked, vec![key])),
            }
        }
        for (holder, keys) in batches {
            out.push(Instruction::Fetch { holder, keys });
        }
    }

    // ---- memory ----

    /// The process's memory now, as far as the state knows: the last measurement, less what
    /// was spilled since, plus what was computed, read back, fetched or received since.
    fn process_estimate(&self) -> u64 {
        self.process_bytes.saturating_sub(self.spilled_since_measure).saturating_add(self.grown_since_measure)
    }

    /// The process's memory would be over the spill threshold with `more` bytes on top.
    fn over_spill_with(&self, more: u64) -> bool {
        self.config.memory.is_some_and(|l| self.process_estimate().saturating_add(more) > l.bytes(l.spill))
    }

    /// Records the process's memory; [`Self::update_pause`] acts on it at the end of the event.
    fn memory_measured(&mut self, process_bytes: u64) {
        self.process_bytes = process_bytes;
        self.spilled_since_measure = 0;
        self.grown_since_measure = 0;
        let Some(limits) = self.config.memory else { return };
        self.memory_over = process_bytes > limits.bytes(limits.pause);
        if !self.memory_over {
            // The memory a waived pause could not free is gone: pausing works as before.
            self.pause_waived = false;
        }
    }

    /// Spills least recently used held values while memory is over the target (held bytes)
    /// or the spill threshold (process bytes), a few writes at a time.
    fn spill_if_needed(&mut self, out: &mut Vec<Instruction<P>>) {
        let Some(limits) = self.config.memory else { return };
        if self.stopped || (self.spilling_stopped && self.spill_retry_at.is_some()) {
            return;
        }
        // A retry after a failed write probes the disk with one spill at a time.
        let slots = if self.spilling_stopped { 1 } else { self.config.max_spills_in_flight };
        while self.spills_in_flight < slots {
            let over_target = self.managed - self.spilling_bytes > limits.bytes(limits.target);
            let over_process =
                self.process_bytes.saturating_sub(self.spilled_since_measure) > limits.bytes(limits.spill);
            if !over_target && !over_process {
                return;
            }
            let keys = &self.keys;
            let victim = self.lru.iter().find(|(_, k)| keys.get(*k).is_some_and(|e| e.pins == 0));
            let Some((&tick, key)) = victim else { return };
            let key = key.clone();
            self.lru.remove(&tick);
            let file = SpillFile(self.next_file);
            self.next_file += 1;
            let Some(Entry { slot: Slot::Memory { nbytes, spilling, .. }, .. }) = self.keys.get_mut(&key) else {
                return;
            };
            *spilling = Some(file);
            let nbytes = *nbytes;
            self.spilling_bytes += nbytes;
            self.spills_in_flight += 1;
            self.spilled_since_measure += nbytes;
            out.push(Instruction::Spill { key, file });
        }
    }

    fn spill_done(&mut self, key: Key, file: SpillFile, out: &mut Vec<Instruction<P>>) {
        self.spills_in_flight = self.spills_in_flight.saturating_sub(1);
        let Some(entry) = self.keys.get_mut(&key) else {
            out.push(Instruction::DeleteFile { file });
            return;
        };
        let Slot::Memory { nbytes, held, spilling, .. } = &mut entry.slot else {
            out.push(Instruction::DeleteFile { file });
            return;
        };
        if *spilling != Some(file) {
            out.push(Instruction::DeleteFile { file });
            return;
        }
        let (nbytes, held) = (*nbytes, *held);
        *spilling = None;
        self.spilling_bytes -= nbytes;
        if self.spilling_stopped {
            // The disk took a file again.
            self.spilling_stopped = false;
            self.spill_retry_at = None;
            self.spill_backoff_us = 0;
            out.push(Instruction::Notice(Notice::SpillingResumed));
        }
        if entry.pins > 0 {
            // A task started needing it while it was written: keep it in memory.
            out.push(Instruction::DeleteFile { file });
            return;
        }
        if !held {
            // Borrowed values are pinned; one that is not is dropped elsewhere. Keep it.
            out.push(Instruction::DeleteFile { file });
            return;
        }
        entry.slot = Slot::Spilled { nbytes, file, held };
        self.managed -= nbytes;
        self.spilled += nbytes;
        out.push(Instruction::Evict { key, file });
    }

    fn spill_failed(&mut self, key: Key, file: SpillFile, error: SpillError, now: u64, out: &mut Vec<Instruction<P>>) {
        self.spills_in_flight = self.spills_in_flight.saturating_sub(1);
        out.push(Instruction::DeleteFile { file });
        let disk_failed = matches!(error, SpillError::Io(_));
        // Only the first failure is news; failed retries wait longer, silently.
        let first_failure = disk_failed && !self.spilling_stopped;
        if disk_failed {
            let base = self.config.spill_retry_us.max(1);
            self.spill_backoff_us =
                if first_failure { base } else { self.spill_backoff_us.saturating_mul(2).min(base.saturating_mul(12)) };
            self.spilling_stopped = true;
            self.spill_retry_at = Some(now.saturating_add(self.spill_backoff_us));
        }
        let mine = match self.keys.get_mut(&key) {
            Some(Entry { slot: Slot::Memory { nbytes, spilling, spillable, tick, held }, pins })
                if *spilling == Some(file) =>
            {
                *spilling = None;
                self.spilling_bytes -= *nbytes;
                if disk_failed {
                    if *held && *pins == 0 {
                        self.lru.insert(*tick, key.clone());
                    }
                } else {
                    *spillable = false;
                }
                true
            }
            _ => false,
        };
        if first_failure {
            out.push(Instruction::Notice(Notice::SpillingStopped { key, error, retry_in_us: self.spill_backoff_us }));
        } else if !disk_failed && mine {
            out.push(Instruction::Notice(Notice::Unspillable { key, error }));
        }
    }

    fn unspilled(&mut self, key: Key, file: SpillFile, out: &mut Vec<Instruction<P>>) {
        // Every `Unspill` is answered once, whatever became of its key.
        self.unspills_in_flight = self.unspills_in_flight.saturating_sub(1);
        self.reading.retain(|(f, _)| *f != file);
        let tick = self.next_tick();
        let Some(entry) = self.keys.get_mut(&key) else { return };
        let Slot::Unspilling { nbytes, file: f, held, waiters, reading: true } = &mut entry.slot else { return };
        if *f != file {
            return;
        }
        let (nbytes, held, waiters) = (*nbytes, *held, std::mem::take(waiters));
        entry.slot = Slot::Memory { nbytes, held, tick, spilling: None, spillable: true };
        if entry.pins == 0 && self.config.memory.is_some() {
            // The tasks that wanted it are gone (a borrowed value would have been released).
            self.lru.insert(tick, key.clone());
        }
        self.spilled -= nbytes;
        self.managed += nbytes;
        self.grown_since_measure += nbytes;
        out.push(Instruction::Keep { key });
        out.push(Instruction::DeleteFile { file });
        for task in waiters {
            self.input_arrived(&task);
        }
    }

    fn unspill_failed(&mut self, key: Key, file: SpillFile, message: String, out: &mut Vec<Instruction<P>>) {
        self.unspills_in_flight = self.unspills_in_flight.saturating_sub(1);
        self.reading.retain(|(f, _)| *f != file);
        let Some(Entry { slot: Slot::Unspilling { nbytes, file: f, waiters, reading: true, .. }, .. }) =
            self.keys.get_mut(&key)
        else {
            return;
        };
        if *f != file {
            return;
        }
        let (nbytes, waiters) = (*nbytes, std::mem::take(waiters));
        self.keys.remove(&key);
        self.spilled -= nbytes;
        out.push(Instruction::Release { key: key.clone(), file: Some(file) });
        out.push(Instruction::Notice(Notice::ValueLost { key: key.clone(), message }));
        let tried = self.id.into_iter().collect();
        self.fail_waiters(&key, waiters, tried, out);
    }

    // ---- leaving and resetting ----

    fn leave(&mut self, now: u64, out: &mut Vec<Instruction<P>>) {
        if self.leaving.is_some() {
            return;
        }
        let pending: Vec<Key> = self
            .keys
            .iter()
            .filter(|(_, e)| matches!(e.slot, Slot::Waiting(_) | Slot::Ready(_)))
            .map(|(k, _)| k.clone())
            .collect();
        for key in &pending {
            self.drop_pending(key, out);
        }
        self.ready.clear();
        let deadline = now.saturating_add(self.config.leave_patience_us);
        self.leaving = Some(Leaving { returned: pending, deadline });
        self.draining = true;
        out.push(Instruction::DrainQueue { close: true });
    }

    fn finish_leaving_if_done(&mut self, out: &mut Vec<Instruction<P>>) {
        if self.leaving.is_some() && !self.draining && self.executing == 0 {
            self.stop(out);
        }
    }

    fn stop(&mut self, out: &mut Vec<Instruction<P>>) {
        if self.stopped {
            return;
        }
        let returned = self.leaving.as_mut().map(|l| std::mem::take(&mut l.returned)).unwrap_or_default();
        if self.leaving.is_some() {
            out.push(Instruction::Notice(Notice::Leaving { returned: returned.len() }));
        }
        out.push(Instruction::Send(WorkerToScheduler::Leaving { returned }));
        out.push(Instruction::Stop);
        self.stopped = true;
    }

    /// Forgets everything: the scheduler that lost this worker has rescheduled its work.
    /// Runs already handed to the threads still report (and are recognized as stale).
    fn reset(&mut self, out: &mut Vec<Instruction<P>>) {
        self.draining = true;
        out.push(Instruction::DrainQueue { close: false });
        for (key, entry) in self.keys.drain() {
            match entry.slot {
                // A spill still being written finds no entry and deletes its file.
                Slot::Memory { .. } => out.push(Instruction::Release { key, file: None }),
                Slot::Spilled { file, .. } | Slot::Unspilling { file, .. } => {
                    out.push(Instruction::Release { key, file: Some(file) })
                }
                _ => {}
            }
        }
        self.ready.clear();
        self.unspill_queue.clear();
        // Answers to requests already sent find no entry and are dropped.
        self.fetch_queue.clear();
        self.fetches_in_flight = 0;
        self.incoming_bytes = 0;
        self.ready_count = 0;
        self.executing = 0;
        // The runs' inputs are released above; their late reports must not unpin keys of the
        // same names computed after the reset.
        self.run_inputs.clear();
        self.lru.clear();
        self.managed = 0;
        self.spilled = 0;
        self.spilling_bytes = 0;
        self.id = None;
        self.peers.clear();
    }
}

/// Removes repeated keys, keeping the first of each.
fn dedup(keys: &mut SmallVec<[Key; 2]>) {
    if keys.len() < 2 {
        return;
    }
    if keys.len() <= 8 {
        let mut i = 1;
        while i < keys.len() {
            if keys[..i].contains(&keys[i]) {
                keys.remove(i);
            } else {
                i += 1;
            }
        }
    } else {
        keys.sort_unstable();
        keys.dedup();
    }
}

fn holders_of<'a>(who_has: &'a [WhoHas], key: &Key) -> Option<&'a WhoHas> {
    who_has.iter().find(|w| w.key == *key)
}
