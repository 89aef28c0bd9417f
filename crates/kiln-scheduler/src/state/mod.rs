//! The scheduler's state: tasks in an arena, workers, clients, and the transitions between
//! task states.
//!
//! Everything enters through [`SchedulerState::handle`], one [`Event`] at a time with the
//! current time; commands for workers and clients accumulate until the server drains them
//! ([`SchedulerState::drain_commands_into`]), and, when an observer asked for them, a typed
//! record of what happened accumulates beside them ([`SchedulerState::drain_observations_into`]).
//! Queries are plain `&self` methods.
//!
//! The children split the one state by concern, each an `impl SchedulerState` block over the
//! same fields (so no child owns a copy of anything):
//! - `arena`: the task arena, typed slots, interned names, kernels and prefixes;
//! - `events`: the [`Event`] enum and how each event is applied;
//! - `transitions`: the task state machine (waiting → processing → memory → released ...);
//! - `placement`: where tasks run, root-task queuing and work stealing;
//! - `retirement`: moving data off retiring workers before they leave;
//! - `observe`: the typed stream of what the scheduler did, for the dashboard;
//! - `queries`: typed read-only views (loads, memory reports, estimates, counts);
//! - `invariants`: the consistency check tests run after every event.

mod arena;
mod events;
mod invariants;
mod observe;
mod placement;
mod queries;
mod retirement;
mod transitions;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use hashbrown::HashTable;
use kiln_graph::{KernelSpec, Key};
use kiln_protocol::messages::{
    ClientId, MemoryReport, Priority, SchedulerToClient, SchedulerToWorker, WorkerId, WorkerInfo,
};
use rustc_hash::{FxBuildHasher, FxHashMap, FxHashSet};

use arena::{NameCount, PrefixStats, TaskArena, TaskSlot};
pub use events::Event;
pub use invariants::InvariantViolation;
pub use observe::{ObserveLevel, SchedulerEvent, WorkerActivity};
pub use queries::{GraphNode, GraphView, PrefixEstimate, PrefixProgress, StateCounts, TASK_INFO_NEIGHBOURS, TaskInfo};

/// A message the server must send.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// To one worker.
    Worker(WorkerId, SchedulerToWorker),
    /// To one client.
    Client(ClientId, SchedulerToClient),
}

/// Tunables of the scheduling policy.
#[derive(Debug, Clone)]
pub struct Config {
    /// Root tasks a worker may hold per thread before the rest wait in the scheduler's queue
    /// (Dask's `worker-saturation`).
    pub worker_saturation: f64,
    /// For short root tasks, queue enough per worker to cover this much estimated work, so
    /// tiny tasks are not paced by network round trips (microseconds).
    pub root_window_us: f64,
    /// ... but never more root results than this many bytes per worker.
    pub root_window_bytes: u64,
    /// Assumed network bandwidth for placement (bytes per second).
    pub bandwidth: f64,
    /// Duration assumed for a kind of task never seen finishing (microseconds).
    pub default_duration_us: f64,
    /// A task that was running on this many workers that died errs instead of running again.
    pub allowed_failures: u32,
    /// Move queued work from saturated workers to idle ones (see [`Event::Tick`]).
    pub work_stealing: bool,
    /// Steal a task only if moving its inputs takes less than this fraction of the time it
    /// would wait in its worker's queue.
    pub steal_cost_ratio: f64,
    /// Milliseconds a task that no worker can run (there is no worker, or every worker is
    /// retiring) waits before it errs with a "no workers" failure; `None` waits forever
    /// (Dask's `distributed.scheduler.no-workers-timeout`). The clock starts when the task
    /// becomes unrunnable and restarts whenever a worker joins; expiry is checked on
    /// [`Event::Tick`].
    ///
    /// The default is 5 minutes, not Dask's "forever": a computation on a cluster that has
    /// lost every worker (a kernel that kills its process, every worker retired) must end
    /// with an error rather than hang without a word, while a client that submits before its
    /// workers have started (a cluster coming up, containers being scheduled) gets minutes,
    /// far more than a worker process takes to join. Clusters whose workers wait in a batch
    /// queue set a longer timeout or `None`.
    pub no_workers_timeout_ms: Option<u64>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            worker_saturation: 1.1,
            root_window_us: 2_000.0,
            root_window_bytes: 16 << 20,
            bandwidth: 1e9,
            default_duration_us: 500.0,
            allowed_failures: 3,
            work_stealing: true,
            steal_cost_ratio: 0.5,
            no_workers_timeout_ms: Some(300_000),
        }
    }
}

/// A task's state (see the crate docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TaskState {
    /// Known, not in memory, not being computed.
    Released,
    /// Needed; some inputs are not in memory yet.
    Waiting,
    /// A ready root task waiting for a worker slot.
    Queued,
    /// Ready, but there is no worker.
    NoWorker,
    /// Assigned to a worker.
    Processing,
    /// Held by at least one worker.
    Memory,
    /// Failed, or depends on a failed task.
    Erred,
}

impl TaskState {
    /// Every state, in the order of the crate docs.
    pub const ALL: [TaskState; 7] = [
        TaskState::Released,
        TaskState::Waiting,
        TaskState::Queued,
        TaskState::NoWorker,
        TaskState::Processing,
        TaskState::Memory,
        TaskState::Erred,
    ];

    /// States in which a task still needs its inputs.
    fn is_active(self) -> bool {
        matches!(self, TaskState::Waiting | TaskState::Queued | TaskState::NoWorker | TaskState::Processing)
    }

    /// The state's name as Dask spells it (`no-worker`, `processing`, ...).
    pub fn name(self) -> &'static str {
        match self {
            TaskState::Released => "released",
            TaskState::Waiting => "waiting",
            TaskState::Queued => "queued",
            TaskState::NoWorker => "no-worker",
            TaskState::Processing => "processing",
            TaskState::Memory => "memory",
            TaskState::Erred => "erred",
        }
    }
}

/// The pseudo-client that holds references for published datasets. The server hands out
/// client ids counting up from 1, so this one is never a real connection's id.
const DATASETS: ClientId = ClientId::new(u32::MAX);

/// A worker's load, as the scheduler sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerLoad {
    /// Tasks assigned and not finished.
    pub processing: usize,
    /// Results held.
    pub held: usize,
    /// Bytes of results held.
    pub nbytes: u64,
    /// Estimated seconds of assigned work per thread.
    pub occupancy_s: f64,
    /// The worker's last reported memory.
    pub reported: MemoryReport,
    /// Time of the last message from the worker.
    pub last_seen: u64,
    /// Whether it paused (memory pressure) and takes no new tasks.
    pub paused: bool,
    /// Whether it is being retired.
    pub retiring: bool,
    /// Tasks it finished since it joined.
    pub tasks_finished: u64,
    /// Tasks that failed on it since it joined.
    pub tasks_failed: u64,
}

struct Worker {
    info: WorkerInfo,
    processing: FxHashSet<TaskSlot>,
    has_what: FxHashSet<TaskSlot>,
    nbytes: u64,
    occupancy_us: f64,
    reported: MemoryReport,
    last_seen: u64,
    /// The worker said it is paused (memory pressure, a failed spill): it gets no new tasks
    /// but still serves its data.
    paused: bool,
    /// Tasks it finished, and tasks that failed on it, ever (observers' counters).
    finished: u64,
    failed: u64,
}

#[derive(Default)]
struct Client {
    wants: FxHashSet<TaskSlot>,
}

/// The distributed scheduler's complete state (see the crate docs).
pub struct SchedulerState {
    config: Config,
    tasks: TaskArena,
    free: Vec<TaskSlot>,
    index: HashTable<TaskSlot>,
    /// Interned task names and how many tasks carry each.
    names: hashbrown::HashMap<Arc<str>, NameCount, FxBuildHasher>,
    /// The last name's prefix id: graphs list the tasks of one name together.
    last_prefix: Option<(Arc<str>, u32)>,
    kernels: FxHashSet<Arc<KernelSpec>>,
    prefixes: Vec<PrefixStats>,
    prefix_index: FxHashMap<Arc<str>, u32>,
    workers: BTreeMap<WorkerId, Worker>,
    clients: FxHashMap<ClientId, Client>,
    queued: BTreeSet<(Priority, TaskSlot)>,
    no_worker: BTreeSet<(Priority, TaskSlot)>,
    datasets: BTreeMap<String, Vec<Key>>,
    generation: u32,
    commands: Vec<Command>,
    /// What happened, for observers; `None` (the default) records nothing, so the hot path
    /// pays one predictable branch per transition.
    observations: Option<Vec<SchedulerEvent>>,
    /// What goes into `observations`.
    observe_level: ObserveLevel,
    /// Scratch stack for iterative graph walks (deep chains must not recurse).
    stack: Vec<TaskSlot>,
    /// Workers with nothing to do, candidates for any task.
    idle: BTreeSet<WorkerId>,
    /// Tasks that lost their last waiter during the current event.
    pending_release: Vec<TaskSlot>,
    /// Results to free, per worker, sent when the event ends.
    pending_free: BTreeMap<WorkerId, Vec<Key>>,
    /// Root tasks were queued during the current event.
    roots_added: bool,
    /// Steal requests in flight: task → the idle worker that will get it.
    steals: FxHashMap<TaskSlot, WorkerId>,
    /// Tasks moved by stealing (for reports and tests).
    stolen: u64,
    /// Workers being retired: no new work; their unique results move elsewhere first.
    retiring: BTreeSet<WorkerId>,
    /// Retired workers told to leave.
    closing: BTreeSet<WorkerId>,
    /// Results being copied off retiring workers: task → the worker fetching it.
    replicating: FxHashMap<TaskSlot, WorkerId>,
    /// Tasks no worker can run, keyed as in `no_worker`/`queued` (a reused slot has another
    /// priority), with the time they were first seen so (see [`Config::no_workers_timeout_ms`]).
    unrunnable: BTreeMap<(Priority, TaskSlot), u64>,
    /// Counts tasks entering or leaving no-worker or queued, so a tick that finds nothing
    /// changed skips re-walking the parked tasks.
    parked_changes: u64,
    /// `parked_changes` and "no worker takes work" when `unrunnable` was last brought up to
    /// date, and the earliest time in it then.
    unrunnable_synced: Option<(u64, bool)>,
    unrunnable_earliest: u64,
    /// Workers that ever left, and how many of them were retired, for the no-workers message.
    workers_left: u64,
    workers_retired: u64,
}

impl SchedulerState {
    /// An empty scheduler.
    pub fn new(config: Config) -> Self {
        SchedulerState {
            config,
            tasks: TaskArena::default(),
            free: Vec::new(),
            index: HashTable::new(),
            names: hashbrown::HashMap::default(),
            last_prefix: None,
            kernels: FxHashSet::default(),
            prefixes: Vec::new(),
            prefix_index: FxHashMap::default(),
            workers: BTreeMap::new(),
            clients: FxHashMap::default(),
            queued: BTreeSet::new(),
            no_worker: BTreeSet::new(),
            datasets: BTreeMap::new(),
            generation: 0,
            commands: Vec::new(),
            observations: None,
            observe_level: ObserveLevel::Off,
            stack: Vec::new(),
            idle: BTreeSet::new(),
            pending_release: Vec::new(),
            pending_free: BTreeMap::new(),
            roots_added: false,
            steals: FxHashMap::default(),
            stolen: 0,
            retiring: BTreeSet::new(),
            closing: BTreeSet::new(),
            replicating: FxHashMap::default(),
            unrunnable: BTreeMap::new(),
            parked_changes: 0,
            unrunnable_synced: None,
            unrunnable_earliest: u64::MAX,
            workers_left: 0,
            workers_retired: 0,
        }
    }

    /// The commands produced since the last call.
    pub fn take_commands(&mut self) -> Vec<Command> {
        std::mem::take(&mut self.commands)
    }

    /// Appends the commands produced since the last call to `out` (reusing its allocation).
    pub fn drain_commands_into(&mut self, out: &mut Vec<Command>) {
        out.append(&mut self.commands);
    }

    /// Whether worker `id` may be given new tasks: known, not paused, not retiring.
    fn takes_work(&self, id: WorkerId) -> bool {
        self.workers.get(&id).is_some_and(|w| !w.paused) && !self.retiring.contains(&id)
    }

    /// Whether some worker is not paused (tasks park in `no-worker` otherwise).
    fn has_running_worker(&self) -> bool {
        self.workers.values().any(|w| !w.paused)
    }

    /// Ends an event: releases what became unneeded, then hands queued roots to workers.
    fn finish_event(&mut self) {
        while let Some(t) = self.pending_release.pop() {
            if self.tasks[t].live {
                self.release_if_unneeded(t);
            }
        }
        self.fill_after_event();
        if !self.retiring.is_empty() {
            self.advance_retirements();
        }
        for (worker, keys) in std::mem::take(&mut self.pending_free) {
            self.commands.push(Command::Worker(worker, SchedulerToWorker::Free { keys }));
        }
    }
}
