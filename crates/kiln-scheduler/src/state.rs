//! The scheduler's state: tasks in an arena, workers, clients, and the transitions between
//! task states. Every public method is one event; commands accumulate until
//! [`SchedulerState::take_commands`].

use std::collections::{BTreeMap, BTreeSet};
use std::hash::BuildHasher;
use std::sync::Arc;

use hashbrown::HashTable;
use kiln_graph::portable::InputSpec;
use kiln_graph::{Encoded, KernelSpec, Key};
use kiln_protocol::messages::{
    ClientId, ClientToScheduler, ComputeTask, MemoryReport, Priority, ScatteredEntry, SchedulerToClient,
    SchedulerToWorker, SubmittedTask, TaskFailure, WorkerId, WorkerInfo, WorkerToScheduler,
};
use rustc_hash::{FxBuildHasher, FxHashMap, FxHashSet};
use smallvec::SmallVec;

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
    /// Move queued work from saturated workers to idle ones (see [`SchedulerState::tick`]).
    pub work_stealing: bool,
    /// Steal a task only if moving its inputs takes less than this fraction of the time it
    /// would wait in its worker's queue.
    pub steal_cost_ratio: f64,
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
        }
    }
}

/// A task's state (see the crate docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
    /// States in which a task still needs its inputs.
    fn is_active(self) -> bool {
        matches!(self, TaskState::Waiting | TaskState::Queued | TaskState::NoWorker | TaskState::Processing)
    }
}

const NONE: u32 = u32::MAX;
/// The pseudo-client that holds references for published datasets.
const DATASETS: ClientId = ClientId::MAX;

/// What a task runs, kept for (re)computation: lineage lets the scheduler recompute a value
/// lost with a worker.
struct Body {
    /// Shared: the tasks of one array operation usually run the same kernel with the same
    /// parameters.
    kernel: Arc<KernelSpec>,
    /// Inline for the common one- and two-input tasks: one allocation per body.
    inputs: SmallVec<[BodyInput; 2]>,
}

enum BodyInput {
    /// A dependency, by arena slot (deps outlive their dependents' bodies).
    Dep(u32),
    /// Boxed: literals are rarer than dependencies and much larger.
    Literal(Box<Encoded>),
}

struct Task {
    key: Key,
    /// `None` for data placed by a client (scatter): it cannot be recomputed.
    body: Option<Box<Body>>,
    deps: SmallVec<[u32; 2]>,
    dependents: SmallVec<[u32; 2]>,
    state: TaskState,
    priority: Priority,
    /// While waiting: dependencies not in memory.
    waiting_on: u32,
    /// Dependents in an active state (they still need this value).
    waiters: u32,
    wanted_by: SmallVec<[ClientId; 1]>,
    who_has: SmallVec<[WorkerId; 1]>,
    processing_on: WorkerId,
    nbytes: u64,
    prefix: u32,
    failure: Option<Box<TaskFailure>>,
    /// Workers that died while running it.
    suspicious: u32,
    /// The run-time estimate charged to its worker's occupancy when assigned, so the same
    /// amount comes off again even if the estimate has been learned since.
    charged_us: f32,
    /// Position in the arena's free list chain, or live.
    live: bool,
}

struct PrefixStats {
    name: Arc<str>,
    duration_us: f64,
    nbytes: f64,
    finished: u64,
}

/// A worker's load, as the scheduler sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkerLoad {
    /// Tasks assigned and not finished.
    pub processing: usize,
    /// Results held.
    pub held: usize,
    /// Bytes of results held.
    pub nbytes: u64,
    /// Estimated seconds of assigned work per thread.
    pub occupancy_s: f64,
    /// Last reported managed/spilled/process bytes.
    pub reported: (u64, u64, u64),
    /// Time of the last message from the worker.
    pub last_seen: u64,
}

struct Worker {
    info: WorkerInfo,
    processing: FxHashSet<u32>,
    has_what: FxHashSet<u32>,
    nbytes: u64,
    occupancy_us: f64,
    reported: (u64, u64, u64),
    last_seen: u64,
}

#[derive(Default)]
struct Client {
    wants: FxHashSet<u32>,
}

/// The distributed scheduler's complete state (see the crate docs).
pub struct SchedulerState {
    config: Config,
    tasks: Vec<Task>,
    free: Vec<u32>,
    index: HashTable<u32>,
    /// Interned task names and how many tasks carry each.
    names: hashbrown::HashMap<Arc<str>, u32, FxBuildHasher>,
    /// The last name's prefix id: graphs list the tasks of one name together.
    last_prefix: Option<(Arc<str>, u32)>,
    kernels: FxHashSet<Arc<KernelSpec>>,
    prefixes: Vec<PrefixStats>,
    prefix_index: FxHashMap<Arc<str>, u32>,
    workers: BTreeMap<WorkerId, Worker>,
    clients: FxHashMap<ClientId, Client>,
    queued: BTreeSet<(Priority, u32)>,
    no_worker: BTreeSet<(Priority, u32)>,
    datasets: BTreeMap<String, Vec<Key>>,
    generation: u32,
    commands: Vec<Command>,
    /// Scratch stack for iterative graph walks (deep chains must not recurse).
    stack: Vec<u32>,
    /// Workers with nothing to do, candidates for any task.
    idle: BTreeSet<WorkerId>,
    /// Tasks that lost their last waiter during the current event.
    pending_release: Vec<u32>,
    /// Results to free, per worker, sent when the event ends.
    pending_free: BTreeMap<WorkerId, Vec<Key>>,
    /// Root tasks were queued during the current event.
    roots_added: bool,
    /// Steal requests in flight: task → the idle worker that will get it.
    steals: FxHashMap<u32, WorkerId>,
    /// Tasks moved by stealing (for reports and tests).
    stolen: u64,
    /// Workers being retired: no new work; their unique results move elsewhere first.
    retiring: BTreeSet<WorkerId>,
    /// Retired workers told to leave.
    closing: BTreeSet<WorkerId>,
    /// Results being copied off retiring workers: task → the worker fetching it.
    replicating: FxHashMap<u32, WorkerId>,
}

fn hash_key(key: &Key) -> u64 {
    FxBuildHasher.hash_one(key)
}

impl SchedulerState {
    /// An empty scheduler.
    pub fn new(config: Config) -> Self {
        SchedulerState {
            config,
            tasks: Vec::new(),
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

    // ----- queries -------------------------------------------------------------------------

    /// Number of tasks the scheduler knows (not forgotten).
    pub fn task_count(&self) -> usize {
        self.tasks.len() - self.free.len()
    }

    /// The state of a task, `None` when unknown or forgotten.
    pub fn task_state(&self, key: &Key) -> Option<TaskState> {
        self.find(key).map(|t| self.tasks[t as usize].state)
    }

    /// Workers holding a key.
    pub fn who_has(&self, key: &Key) -> Vec<WorkerId> {
        self.find(key).map(|t| self.tasks[t as usize].who_has.to_vec()).unwrap_or_default()
    }

    /// The worker a task is processing on.
    pub fn processing_on(&self, key: &Key) -> Option<WorkerId> {
        self.find(key).map(|t| self.tasks[t as usize].processing_on).filter(|&w| w != NONE)
    }

    /// The registered workers.
    pub fn workers(&self) -> Vec<WorkerInfo> {
        self.workers.values().map(|w| w.info.clone()).collect()
    }

    /// One worker's load.
    pub fn worker_load(&self, id: WorkerId) -> Option<WorkerLoad> {
        self.workers.get(&id).map(|w| WorkerLoad {
            processing: w.processing.len(),
            held: w.has_what.len(),
            nbytes: w.nbytes,
            occupancy_s: w.occupancy_us / 1e6 / w.info.nthreads.max(1) as f64,
            reported: w.reported,
            last_seen: w.last_seen,
        })
    }

    /// Root tasks waiting for a worker slot.
    pub fn queued_count(&self) -> usize {
        self.queued.len()
    }

    /// The learned mean duration of a kind of task (by key prefix), in microseconds.
    pub fn duration_estimate_us(&self, prefix: &str) -> Option<f64> {
        self.prefix_index
            .get(prefix)
            .map(|&p| &self.prefixes[p as usize])
            .filter(|p| p.finished > 0)
            .map(|p| p.duration_us)
    }

    /// The learned mean duration (µs) and result size (bytes) of every kind of task seen
    /// finishing, by key prefix.
    pub fn estimates(&self) -> Vec<(String, f64, f64)> {
        self.prefixes.iter().filter(|p| p.finished > 0).map(|p| (p.name.to_string(), p.duration_us, p.nbytes)).collect()
    }

    /// Counts of tasks per state.
    pub fn state_counts(&self) -> BTreeMap<&'static str, usize> {
        let mut counts = BTreeMap::new();
        for t in self.tasks.iter().filter(|t| t.live) {
            *counts.entry(state_name(t.state)).or_insert(0) += 1;
        }
        counts
    }

    /// Approximate heap bytes held per task (for the memory budget benchmark).
    pub fn approx_bytes(&self) -> usize {
        let mut total = self.tasks.capacity() * std::mem::size_of::<Task>();
        total += self.index.capacity() * (std::mem::size_of::<u32>() + 1);
        for t in self.tasks.iter().filter(|t| t.live) {
            if let Some(body) = &t.body {
                total += std::mem::size_of::<Body>();
                if body.inputs.spilled() {
                    total += body.inputs.capacity() * std::mem::size_of::<BodyInput>();
                }
                for input in &body.inputs {
                    if let BodyInput::Literal(e) = input {
                        total += std::mem::size_of::<Encoded>() + e.nbytes() + e.tag.capacity();
                    }
                }
            }
            if t.deps.spilled() {
                total += t.deps.capacity() * 4;
            }
            if t.dependents.spilled() {
                total += t.dependents.capacity() * 4;
            }
            if t.key.index().len() > 4 {
                total += t.key.index().len() * 4;
            }
        }
        total += self
            .kernels
            .iter()
            .map(|k| std::mem::size_of::<KernelSpec>() + 16 + k.id.len() + k.params.len())
            .sum::<usize>();
        total + self.names.keys().map(|n| n.len() + 20).sum::<usize>()
    }

    fn find(&self, key: &Key) -> Option<u32> {
        let tasks = &self.tasks;
        self.index.find(hash_key(key), |&t| tasks[t as usize].key == *key).copied()
    }

    // ----- events: workers -----------------------------------------------------------------

    /// A worker registered.
    pub fn add_worker(&mut self, info: WorkerInfo, now: u64) {
        let id = info.id;
        for w in self.workers.values() {
            self.commands.push(Command::Worker(w.info.id, SchedulerToWorker::WorkerAdded(info.clone())));
        }
        for &c in self.clients.keys() {
            self.commands.push(Command::Client(c, SchedulerToClient::WorkerAdded(info.clone())));
        }
        self.workers.insert(
            id,
            Worker {
                info,
                processing: FxHashSet::default(),
                has_what: FxHashSet::default(),
                nbytes: 0,
                occupancy_us: 0.0,
                reported: (0, 0, 0),
                last_seen: now,
            },
        );
        let all = self.workers();
        self.commands.push(Command::Worker(id, SchedulerToWorker::Registered { id, workers: all }));
        self.idle.insert(id);
        let stranded: Vec<u32> = std::mem::take(&mut self.no_worker).into_iter().map(|(_, t)| t).collect();
        for t in stranded {
            self.tasks[t as usize].state = TaskState::Waiting;
            self.ready(t);
        }
        self.roots_added = true;
        self.finish_event();
    }

    /// A worker is gone (connection lost, missed heartbeats, or it left). What it was running
    /// is rescheduled; what only it held is recomputed if still needed.
    pub fn remove_worker(&mut self, id: WorkerId, reason: &str) {
        let Some(worker) = self.workers.remove(&id) else { return };
        self.idle.remove(&id);
        // Steals from or to this worker will never be answered.
        self.steals.retain(|t, thief| *thief != id && !worker.processing.contains(t));
        self.retiring.remove(&id);
        self.closing.remove(&id);
        self.replicating.retain(|_, target| *target != id);
        for w in self.workers.values() {
            self.commands.push(Command::Worker(w.info.id, SchedulerToWorker::WorkerRemoved(id)));
        }
        for &c in self.clients.keys() {
            self.commands.push(Command::Client(c, SchedulerToClient::WorkerRemoved(id)));
        }
        // Results it held: drop the replica; a value with no replica left is lost.
        let mut lost = Vec::new();
        for &t in &worker.has_what {
            let task = &mut self.tasks[t as usize];
            task.who_has.retain(|w| *w != id);
            if task.who_has.is_empty() && task.state == TaskState::Memory {
                lost.push(t);
            }
        }
        // Tasks it was running go back to waiting (or err after too many deaths).
        let mut running: Vec<u32> = worker.processing.iter().copied().collect();
        running.sort_unstable_by_key(|&t| self.tasks[t as usize].priority);
        // A worker runs its tasks in priority order: only the first `nthreads` were likely
        // executing, so only they are suspected of having killed it.
        let executing = worker.info.nthreads.max(1) as usize;
        for (i, &t) in running.iter().enumerate() {
            let task = &mut self.tasks[t as usize];
            task.processing_on = NONE;
            if i < executing {
                task.suspicious += 1;
            }
        }
        for t in lost {
            self.lose(t);
        }
        for t in running {
            let task = &self.tasks[t as usize];
            if task.state != TaskState::Processing {
                continue;
            }
            if task.suspicious >= self.config.allowed_failures {
                let failure = TaskFailure {
                    key: task.key.clone(),
                    message: format!(
                        "{} workers died while running this task (last: worker {id}, {reason}); it is marked erred \
                         instead of being tried again",
                        task.suspicious
                    ),
                };
                self.err(t, failure);
            } else {
                self.reset_to_waiting(t);
            }
        }
        self.roots_added = true;
        self.finish_event();
    }

    /// A message from a worker.
    pub fn worker_message(&mut self, worker: WorkerId, message: WorkerToScheduler, now: u64) {
        if let Some(w) = self.workers.get_mut(&worker) {
            w.last_seen = now;
        } else {
            return;
        }
        match message {
            WorkerToScheduler::Register { .. } => {}
            WorkerToScheduler::Finished { key, nbytes, duration_us } => {
                self.finished(worker, &key, nbytes, duration_us)
            }
            WorkerToScheduler::Failed { key, failure } => {
                if let Some(t) = self.find(&key)
                    && self.tasks[t as usize].state == TaskState::Processing
                    && self.tasks[t as usize].processing_on == worker
                {
                    self.unassign(t);
                    self.err(t, failure);
                }
            }
            WorkerToScheduler::MissingDependency { key, missing, tried } => {
                self.missing_dependency(worker, &key, &missing, &tried)
            }
            WorkerToScheduler::Received { entries } => {
                for (key, nbytes) in entries {
                    if let Some(t) = self.find(&key) {
                        self.add_replica(t, worker, nbytes);
                    }
                }
            }
            WorkerToScheduler::Heartbeat { managed_bytes, spilled_bytes, process_bytes } => {
                if let Some(w) = self.workers.get_mut(&worker) {
                    w.reported = (managed_bytes, spilled_bytes, process_bytes);
                }
            }
            WorkerToScheduler::StealResponse { key, stolen } => self.steal_response(worker, &key, stolen),
            WorkerToScheduler::Leaving { returned } => {
                for key in returned {
                    if let Some(t) = self.find(&key)
                        && self.tasks[t as usize].processing_on == worker
                    {
                        self.unassign(t);
                        self.reset_to_waiting(t);
                    }
                }
            }
        }
        self.finish_event();
    }

    /// Periodic balancing (the server calls it about every 100 ms): idle workers take queued
    /// work from saturated ones when moving its inputs is cheap compared with running it.
    /// Stealing is transactional: the victim is asked first and gives the task up only if it
    /// has not started, so nothing runs twice in the normal case.
    pub fn tick(&mut self, now: u64) {
        let _ = now;
        if !self.config.work_stealing || self.workers.len() < 2 {
            return;
        }
        let thieves: Vec<WorkerId> = self
            .workers
            .values()
            .filter(|w| w.processing.len() < w.info.nthreads.max(1) as usize && !self.retiring.contains(&w.info.id))
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
                        let excess = w.processing.len().saturating_sub(in_flight + w.info.nthreads.max(1) as usize);
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
                let key = self.tasks[t as usize].key.clone();
                self.commands.push(Command::Worker(victim, SchedulerToWorker::Steal { key }));
                wanted -= 1;
            }
        }
    }

    /// The victim's task that is last in its order and cheap to move to the thief.
    fn steal_candidate(&self, victim: WorkerId, thief: WorkerId) -> Option<u32> {
        let w = &self.workers[&victim];
        // How long the victim's last task waits: its queue's estimated work per thread.
        let wait_us = w.processing.iter().map(|&t| self.estimate_us(t)).sum::<f64>() / w.info.nthreads.max(1) as f64;
        let mut best: Option<(Priority, u32)> = None;
        for &t in &w.processing {
            if self.steals.contains_key(&t) {
                continue;
            }
            let task = &self.tasks[t as usize];
            let transfer: u64 = task
                .deps
                .iter()
                .filter(|&&d| !self.tasks[d as usize].who_has.contains(&thief))
                .map(|&d| self.tasks[d as usize].nbytes)
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

    fn steal_response(&mut self, victim: WorkerId, key: &Key, stolen: bool) {
        let Some(t) = self.find(key) else { return };
        let Some(thief) = self.steals.remove(&t) else { return };
        let task = &self.tasks[t as usize];
        if !stolen || task.state != TaskState::Processing || task.processing_on != victim {
            return;
        }
        self.unassign(t);
        let target = if self.workers.contains_key(&thief) { thief } else { self.place(t) };
        self.assign(t, target);
        self.stolen += 1;
    }

    /// Tasks moved between workers by stealing so far.
    pub fn stolen_count(&self) -> u64 {
        self.stolen
    }

    /// Workers not heard from since `deadline` (for the server's heartbeat check).
    pub fn silent_workers(&self, deadline: u64) -> Vec<WorkerId> {
        self.workers.values().filter(|w| w.last_seen < deadline).map(|w| w.info.id).collect()
    }

    // ----- events: clients -----------------------------------------------------------------

    /// A client connected.
    pub fn add_client(&mut self, client: ClientId) {
        self.clients.entry(client).or_default();
        let workers = self.workers();
        self.commands.push(Command::Client(client, SchedulerToClient::Welcome { client, workers }));
    }

    /// A client disconnected: its references are dropped.
    pub fn remove_client(&mut self, client: ClientId) {
        if let Some(c) = self.clients.remove(&client) {
            for t in c.wants {
                self.drop_want(t, client);
            }
        }
        self.finish_event();
    }

    /// A message from a client.
    pub fn client_message(&mut self, client: ClientId, message: ClientToScheduler, now: u64) {
        let _ = now;
        if !self.clients.contains_key(&client) {
            return;
        }
        match message {
            ClientToScheduler::UpdateGraph { tasks, wanted } => self.update_graph(client, tasks, wanted),
            ClientToScheduler::Want { keys } => {
                for key in keys {
                    match self.find(&key) {
                        Some(t) => self.want(t, client),
                        None => self.commands.push(Command::Client(
                            client,
                            SchedulerToClient::Cancelled {
                                reason: format!("{key} is not known to the scheduler"),
                                key,
                            },
                        )),
                    }
                }
            }
            ClientToScheduler::Release { keys } => {
                for key in keys {
                    self.client_releases(client, &key);
                }
            }
            ClientToScheduler::Cancel { keys } => {
                for key in keys {
                    self.client_releases(client, &key);
                    self.commands.push(Command::Client(
                        client,
                        SchedulerToClient::Cancelled { key, reason: "cancelled by the client".into() },
                    ));
                }
            }
            ClientToScheduler::Scattered { entries } => self.scattered(client, entries),
            ClientToScheduler::Publish { name, keys, overwrite } => {
                if self.datasets.contains_key(&name) && !overwrite {
                    self.commands.push(Command::Client(
                        client,
                        SchedulerToClient::Refused {
                            request: None,
                            message: format!("a dataset named {name:?} is already published"),
                        },
                    ));
                    return;
                }
                self.unpublish(&name);
                let mut found = Vec::with_capacity(keys.len());
                for key in keys {
                    match self.find(&key) {
                        Some(t) => {
                            self.add_want(t, DATASETS);
                            found.push(key);
                        }
                        None => {
                            self.commands.push(Command::Client(
                                client,
                                SchedulerToClient::Refused {
                                    request: None,
                                    message: format!("cannot publish {name:?}: {key} is not known to the scheduler"),
                                },
                            ));
                        }
                    }
                }
                self.datasets.insert(name, found);
            }
            ClientToScheduler::Unpublish { name } => self.unpublish(&name),
            ClientToScheduler::GetDataset { request, name } => {
                let keys = self.datasets.get(&name).cloned();
                self.commands.push(Command::Client(client, SchedulerToClient::Dataset { request, keys }));
            }
            ClientToScheduler::ListDatasets { request } => {
                let names = self.datasets.keys().cloned().collect();
                self.commands.push(Command::Client(client, SchedulerToClient::Datasets { request, names }));
            }
            ClientToScheduler::WhoHas { request, keys } => {
                let holders = keys.iter().map(|k| self.who_has(k)).collect();
                self.commands.push(Command::Client(client, SchedulerToClient::WhoHas { request, holders }));
            }
            ClientToScheduler::WorkerMemory { request } => {
                let workers = self
                    .workers
                    .values()
                    .map(|w| MemoryReport {
                        worker: w.info.id,
                        managed: w.reported.0,
                        spilled: w.reported.1,
                        process: w.reported.2,
                    })
                    .collect();
                self.commands.push(Command::Client(client, SchedulerToClient::WorkerMemory { request, workers }));
            }
            ClientToScheduler::RetireWorkers { workers } => self.retire_workers(&workers),
            ClientToScheduler::ClusterLoad { request } => {
                let live = self.tasks.iter().filter(|t| t.live);
                let waiting = live.filter(|t| t.state == TaskState::Waiting).count() as u64;
                let processing = self.workers.values().map(|w| w.processing.len() as u64).sum();
                let threads = self
                    .workers
                    .values()
                    .filter(|w| !self.retiring.contains(&w.info.id))
                    .map(|w| w.info.nthreads as u64)
                    .sum();
                self.commands.push(Command::Client(
                    client,
                    SchedulerToClient::ClusterLoad {
                        request,
                        queued: self.queued.len() as u64,
                        processing,
                        waiting,
                        workers: self.workers.len() as u64,
                        threads,
                    },
                ));
            }
            ClientToScheduler::ShutdownCluster => {
                self.shutdown_cluster(client);
            }
        }
        self.finish_event();
    }

    fn shutdown_cluster(&mut self, client: ClientId) {
        for w in self.workers.values() {
            self.commands.push(Command::Worker(
                w.info.id,
                SchedulerToWorker::Close { reason: "the cluster is shutting down".into() },
            ));
        }
        for &c in self.clients.keys() {
            self.commands.push(Command::Client(
                c,
                SchedulerToClient::Shutdown { reason: format!("client {client} shut the cluster down") },
            ));
        }
    }

    fn unpublish(&mut self, name: &str) {
        if let Some(keys) = self.datasets.remove(name) {
            for key in keys {
                if let Some(t) = self.find(&key) {
                    self.drop_want(t, DATASETS);
                }
            }
        }
    }

    /// Shares one name allocation among a name's tasks, counting them so the name goes with
    /// its last task (names are per graph in delayed code; a long-running scheduler must not
    /// keep them all).
    fn intern(&mut self, key: Key) -> Key {
        match self.names.get_key_value_mut(key.shared_name()) {
            Some((name, count)) => {
                *count += 1;
                Key::from_shared(name, key.index())
            }
            None => {
                self.names.insert(key.shared_name().clone(), 1);
                key
            }
        }
    }

    /// One task of this name is gone; the name goes with the last one.
    fn forget_name(&mut self, key: Key) {
        if let Some(count) = self.names.get_mut(key.shared_name()) {
            *count -= 1;
            if *count == 0 {
                self.names.remove(key.shared_name());
                if self.last_prefix.as_ref().is_some_and(|(n, _)| Arc::ptr_eq(n, key.shared_name())) {
                    self.last_prefix = None;
                }
            }
        }
    }

    fn intern_kernel(&mut self, kernel: KernelSpec) -> Arc<KernelSpec> {
        match self.kernels.get(&kernel) {
            Some(k) => k.clone(),
            None => {
                let k = Arc::new(kernel);
                self.kernels.insert(k.clone());
                k
            }
        }
    }

    fn prefix_of(&mut self, key: &Key) -> u32 {
        if let Some((name, p)) = &self.last_prefix
            && Arc::ptr_eq(name, key.shared_name())
        {
            return *p;
        }
        let p = self.prefix_of_slow(key);
        self.last_prefix = Some((key.shared_name().clone(), p));
        p
    }

    fn prefix_of_slow(&mut self, key: &Key) -> u32 {
        let prefix = key.prefix();
        if let Some(&p) = self.prefix_index.get(prefix) {
            return p;
        }
        let name: Arc<str> = prefix.into();
        let p = self.prefixes.len() as u32;
        self.prefixes.push(PrefixStats { name: name.clone(), duration_us: 0.0, nbytes: 0.0, finished: 0 });
        self.prefix_index.insert(name, p);
        p
    }

    fn insert_task(&mut self, key: Key, body: Option<Box<Body>>, deps: SmallVec<[u32; 2]>, priority: Priority) -> u32 {
        let hash = hash_key(&key);
        self.insert_task_hashed(key, hash, body, deps, priority)
    }

    fn insert_task_hashed(
        &mut self,
        key: Key,
        hash: u64,
        body: Option<Box<Body>>,
        deps: SmallVec<[u32; 2]>,
        priority: Priority,
    ) -> u32 {
        let key = self.intern(key);
        let prefix = self.prefix_of(&key);
        let task = Task {
            key,
            body,
            deps,
            dependents: SmallVec::new(),
            state: TaskState::Released,
            priority,
            waiting_on: 0,
            waiters: 0,
            wanted_by: SmallVec::new(),
            who_has: SmallVec::new(),
            processing_on: NONE,
            nbytes: 0,
            prefix,
            failure: None,
            suspicious: 0,
            charged_us: 0.0,
            live: true,
        };
        let slot = match self.free.pop() {
            Some(slot) => {
                self.tasks[slot as usize] = task;
                slot
            }
            None => {
                self.tasks.push(task);
                (self.tasks.len() - 1) as u32
            }
        };
        let tasks = &self.tasks;
        self.index.insert_unique(hash, slot, |&t| hash_key(&tasks[t as usize].key));
        for i in 0..self.tasks[slot as usize].deps.len() {
            let d = self.tasks[slot as usize].deps[i];
            self.tasks[d as usize].dependents.push(slot);
        }
        slot
    }

    fn update_graph(&mut self, client: ClientId, tasks: Vec<SubmittedTask>, wanted: Vec<Key>) {
        self.generation += 1;
        let generation = self.generation;
        let mut inserted = Vec::with_capacity(tasks.len());
        for SubmittedTask { spec, order } in tasks {
            let hash = hash_key(&spec.key);
            let tasks = &self.tasks;
            if self.index.find(hash, |&t| tasks[t as usize].key == spec.key).is_some() {
                continue;
            }
            let mut deps: SmallVec<[u32; 2]> = SmallVec::new();
            let mut inputs: SmallVec<[BodyInput; 2]> = SmallVec::with_capacity(spec.inputs.len());
            let mut missing = None;
            for input in spec.inputs {
                match input {
                    InputSpec::Task(k) => match self.find(&k) {
                        Some(d) => {
                            if !deps.contains(&d) {
                                deps.push(d);
                            }
                            inputs.push(BodyInput::Dep(d));
                        }
                        None => {
                            missing = Some(k);
                            break;
                        }
                    },
                    InputSpec::Literal(e) => inputs.push(BodyInput::Literal(Box::new(e))),
                }
            }
            if let Some(missing) = missing {
                let failure = TaskFailure {
                    key: spec.key.clone(),
                    message: format!(
                        "depends on {missing}, which the scheduler does not know (released or never submitted)"
                    ),
                };
                let t = self.insert_task(spec.key, None, SmallVec::new(), Priority { generation, order });
                self.tasks[t as usize].failure = Some(Box::new(failure));
                self.tasks[t as usize].state = TaskState::Erred;
                inserted.push(t);
                continue;
            }
            let kernel = self.intern_kernel(spec.kernel);
            let body = Box::new(Body { kernel, inputs });
            inserted.push(self.insert_task_hashed(spec.key, hash, Some(body), deps, Priority { generation, order }));
        }
        for key in wanted {
            match self.find(&key) {
                Some(t) => self.want(t, client),
                None => self.commands.push(Command::Client(
                    client,
                    SchedulerToClient::Cancelled { reason: format!("{key} is not known to the scheduler"), key },
                )),
            }
        }
        // Submitted tasks that nothing wanted are not kept (dependents first, so chains go).
        for &t in inserted.iter().rev() {
            self.forget_if_unreferenced(t);
        }
    }

    fn add_want(&mut self, t: u32, client: ClientId) {
        let task = &mut self.tasks[t as usize];
        if !task.wanted_by.contains(&client) {
            task.wanted_by.push(client);
        }
        if let Some(c) = self.clients.get_mut(&client) {
            c.wants.insert(t);
        }
    }

    /// A client wants `t`: tell it now if done, else make sure it gets computed.
    fn want(&mut self, t: u32, client: ClientId) {
        self.add_want(t, client);
        let task = &self.tasks[t as usize];
        match task.state {
            TaskState::Memory => {
                let message = SchedulerToClient::InMemory {
                    key: task.key.clone(),
                    holders: task.who_has.to_vec(),
                    nbytes: task.nbytes,
                };
                self.commands.push(Command::Client(client, message));
            }
            TaskState::Erred => {
                let failure = task
                    .failure
                    .as_deref()
                    .cloned()
                    .unwrap_or_else(|| TaskFailure { key: task.key.clone(), message: "erred".into() });
                self.commands
                    .push(Command::Client(client, SchedulerToClient::Erred { key: task.key.clone(), failure }));
            }
            TaskState::Released => self.compute(t),
            _ => {}
        }
    }

    /// A client drops its reference on `key` (release or cancel).
    fn client_releases(&mut self, client: ClientId, key: &Key) {
        if let Some(t) = self.find(key) {
            if let Some(c) = self.clients.get_mut(&client) {
                c.wants.remove(&t);
            }
            self.drop_want(t, client);
        }
    }

    fn drop_want(&mut self, t: u32, client: ClientId) {
        let task = &mut self.tasks[t as usize];
        task.wanted_by.retain(|c| *c != client);
        if task.wanted_by.is_empty() {
            self.release_if_unneeded(t);
        }
    }

    fn scattered(&mut self, client: ClientId, entries: Vec<ScatteredEntry>) {
        for ScatteredEntry { key, worker, nbytes } in entries {
            if !self.workers.contains_key(&worker) {
                self.commands.push(Command::Client(
                    client,
                    SchedulerToClient::Cancelled {
                        key,
                        reason: format!("worker {worker} left before the scatter landed"),
                    },
                ));
                continue;
            }
            let t = match self.find(&key) {
                Some(t) => t,
                None => self.insert_task(key, None, SmallVec::new(), Priority::default()),
            };
            self.add_replica(t, worker, nbytes);
            self.want(t, client);
        }
    }

    // ----- transitions ---------------------------------------------------------------------

    /// Makes a released task and everything it needs head for memory.
    fn compute(&mut self, root: u32) {
        // Iterative post-order walk: dependencies are decided before their dependents.
        let mut stack = std::mem::take(&mut self.stack);
        stack.clear();
        stack.push(root);
        while let Some(&t) = stack.last() {
            if self.tasks[t as usize].state != TaskState::Released {
                stack.pop();
                continue;
            }
            let mut pending = false;
            for i in 0..self.tasks[t as usize].deps.len() {
                let d = self.tasks[t as usize].deps[i];
                if self.tasks[d as usize].state == TaskState::Released {
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
    fn start_waiting(&mut self, t: u32) {
        if self.tasks[t as usize].body.is_none() {
            // Scattered data that was lost cannot come back.
            let key = self.tasks[t as usize].key.clone();
            let failure = TaskFailure {
                key,
                message: "this value was scattered by a client and is lost (its worker left); it cannot be recomputed"
                    .into(),
            };
            self.err(t, failure);
            return;
        }
        let mut waiting_on = 0;
        let mut failed = None;
        for i in 0..self.tasks[t as usize].deps.len() {
            let d = self.tasks[t as usize].deps[i] as usize;
            match self.tasks[d].state {
                TaskState::Memory => {}
                TaskState::Erred => failed = self.tasks[d].failure.as_deref().cloned(),
                _ => waiting_on += 1,
            }
            self.tasks[d].waiters += 1;
        }
        let task = &mut self.tasks[t as usize];
        task.state = TaskState::Waiting;
        task.waiting_on = waiting_on;
        if let Some(failure) = failed {
            self.err(t, failure);
        } else if waiting_on == 0 {
            self.ready(t);
        }
    }

    /// Inputs all in memory: queue (roots), assign, or park without workers.
    fn ready(&mut self, t: u32) {
        let task = &mut self.tasks[t as usize];
        if self.workers.is_empty() {
            task.state = TaskState::NoWorker;
            self.no_worker.insert((task.priority, t));
            return;
        }
        if task.deps.is_empty() {
            task.state = TaskState::Queued;
            self.queued.insert((task.priority, t));
            self.roots_added = true;
            return;
        }
        let w = self.place(t);
        self.assign(t, w);
    }

    fn estimate_us(&self, t: u32) -> f64 {
        let p = &self.prefixes[self.tasks[t as usize].prefix as usize];
        if p.finished > 0 { p.duration_us } else { self.config.default_duration_us }
    }

    /// How many root tasks a worker may hold, given the kind of the next queued root.
    fn root_slots(&self, w: &Worker, next: Option<u32>) -> usize {
        let threads = w.info.nthreads.max(1) as f64;
        let base = (threads * self.config.worker_saturation).ceil().max(1.0) as usize;
        let Some(t) = next else { return base };
        let p = &self.prefixes[self.tasks[t as usize].prefix as usize];
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
    fn fill_after_event(&mut self) {
        if !std::mem::take(&mut self.roots_added) || self.queued.is_empty() {
            return;
        }
        let mut open: Vec<WorkerId> = self.workers.keys().copied().filter(|w| !self.retiring.contains(w)).collect();
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
    fn fill_slots(&mut self, id: WorkerId) {
        if self.retiring.contains(&id) {
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
    fn place(&self, t: u32) -> WorkerId {
        let task = &self.tasks[t as usize];
        let total_bytes: u64 = task.deps.iter().map(|&d| self.tasks[d as usize].nbytes).sum();
        let cost = |w: &Worker| -> f64 {
            let local: u64 = task
                .deps
                .iter()
                .filter(|&&d| self.tasks[d as usize].who_has.contains(&w.info.id))
                .map(|&d| self.tasks[d as usize].nbytes)
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
            for &w in &self.tasks[d as usize].who_has {
                if !seen.contains(&w)
                    && !self.retiring.contains(&w)
                    && let Some(worker) = self.workers.get(&w)
                {
                    seen.push(w);
                    consider(worker);
                    any = true;
                }
            }
        }
        // Idle workers compete too: moving a little data beats waiting in a queue.
        for w in self.idle.iter().filter(|w| !self.retiring.contains(w)).take(8) {
            if !seen.contains(w)
                && let Some(worker) = self.workers.get(w)
            {
                consider(worker);
                any = true;
            }
        }
        if !any {
            // Every holder is retiring: the least busy worker that is staying.
            for w in self.workers.values().filter(|w| !self.retiring.contains(&w.info.id)) {
                consider(w);
            }
        }
        match best {
            Some((_, w)) => w,
            None => *self.workers.keys().next().expect("place is only called with workers"),
        }
    }

    fn assign(&mut self, t: u32, w: WorkerId) {
        let estimate = self.estimate_us(t);
        let task = &mut self.tasks[t as usize];
        task.state = TaskState::Processing;
        task.processing_on = w;
        task.charged_us = estimate as f32;
        let estimate = task.charged_us as f64;
        let worker = self.workers.get_mut(&w).expect("assign to a known worker");
        worker.processing.insert(t);
        self.idle.remove(&w);
        worker.occupancy_us += estimate;
        let task = &self.tasks[t as usize];
        let body = task.body.as_ref().expect("only tasks with a body are computed");
        let mut who_has = Vec::new();
        let inputs = body
            .inputs
            .iter()
            .map(|i| match i {
                BodyInput::Dep(d) => {
                    let dep = &self.tasks[*d as usize];
                    if !dep.who_has.contains(&w) && !who_has.iter().any(|(k, _): &(Key, Vec<WorkerId>)| *k == dep.key) {
                        who_has.push((dep.key.clone(), dep.who_has.to_vec()));
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
    fn unassign(&mut self, t: u32) {
        let task = &mut self.tasks[t as usize];
        let estimate = task.charged_us as f64;
        let w = std::mem::replace(&mut task.processing_on, NONE);
        if let Some(worker) = self.workers.get_mut(&w) {
            worker.processing.remove(&t);
            worker.occupancy_us = (worker.occupancy_us - estimate).max(0.0);
            if worker.processing.is_empty() {
                self.idle.insert(w);
            }
        }
    }

    fn finished(&mut self, worker: WorkerId, key: &Key, nbytes: u64, duration_us: u64) {
        let Some(t) = self.find(key) else {
            self.free_on(worker, key.clone());
            return;
        };
        let task = &self.tasks[t as usize];
        if task.state != TaskState::Processing || task.processing_on != worker {
            if task.state == TaskState::Memory {
                self.add_replica(t, worker, nbytes);
            } else {
                // A result nobody asked this worker for any more.
                self.free_on(worker, key.clone());
            }
            return;
        }
        self.unassign(t);
        {
            let p = &mut self.prefixes[self.tasks[t as usize].prefix as usize];
            p.finished += 1;
            // An exponential moving average learns fast and follows drift.
            let alpha = if p.finished == 1 { 1.0 } else { 0.2 };
            p.duration_us += alpha * (duration_us as f64 - p.duration_us);
            p.nbytes += alpha * (nbytes as f64 - p.nbytes);
        }
        let task = &mut self.tasks[t as usize];
        task.state = TaskState::Memory;
        task.nbytes = nbytes;
        task.who_has.clear();
        task.who_has.push(worker);
        task.suspicious = 0;
        if let Some(w) = self.workers.get_mut(&worker) {
            w.has_what.insert(t);
            w.nbytes += nbytes;
        }
        for i in 0..self.tasks[t as usize].wanted_by.len() {
            let client = self.tasks[t as usize].wanted_by[i];
            if client != DATASETS {
                let task = &self.tasks[t as usize];
                let message =
                    SchedulerToClient::InMemory { key: task.key.clone(), holders: task.who_has.to_vec(), nbytes };
                self.commands.push(Command::Client(client, message));
            }
        }
        self.inputs_arrived(t);
        self.leave_active(t);
        if self.tasks[t as usize].wanted_by.is_empty() && self.tasks[t as usize].waiters == 0 {
            self.release(t);
        }
        self.fill_slots(worker);
    }

    fn add_replica(&mut self, t: u32, worker: WorkerId, nbytes: u64) {
        if self.replicating.get(&t) == Some(&worker) {
            self.replicating.remove(&t);
            // Its bytes were counted when the copy was requested.
            if let Some(w) = self.workers.get_mut(&worker) {
                w.nbytes = w.nbytes.saturating_sub(nbytes);
            }
        }
        let task = &mut self.tasks[t as usize];
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
                self.queued.remove(&(self.tasks[t as usize].priority, t));
                self.no_worker.remove(&(self.tasks[t as usize].priority, t));
                self.leave_active(t);
            }
            self.tasks[t as usize].state = TaskState::Memory;
            self.inputs_arrived(t);
        }
    }

    /// `t` is now in memory: its waiting dependents are one input closer to ready.
    fn inputs_arrived(&mut self, t: u32) {
        for i in 0..self.tasks[t as usize].dependents.len() {
            let d = self.tasks[t as usize].dependents[i];
            let dep = &mut self.tasks[d as usize];
            if dep.state == TaskState::Waiting {
                dep.waiting_on -= 1;
                if dep.waiting_on == 0 {
                    self.ready(d);
                }
            }
        }
    }

    /// A task leaves the active states: its inputs lose a waiter, and may be released.
    fn leave_active(&mut self, t: u32) {
        for i in 0..self.tasks[t as usize].deps.len() {
            let d = self.tasks[t as usize].deps[i];
            let dep = &mut self.tasks[d as usize];
            dep.waiters -= 1;
            if dep.waiters == 0 && dep.wanted_by.is_empty() {
                // Deferred: releasing may release its own inputs, and chains are deep.
                self.pending_release.push(d);
            }
        }
    }

    /// Queues `key` to be freed on `worker`; one `Free` per worker goes out when the event ends.
    fn free_on(&mut self, worker: WorkerId, key: Key) {
        self.pending_free.entry(worker).or_default().push(key);
    }

    /// Ends an event: releases what became unneeded, then hands queued roots to workers.
    fn finish_event(&mut self) {
        while let Some(t) = self.pending_release.pop() {
            if self.tasks[t as usize].live {
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

    /// Retires workers: no new work goes to them, their unique results are copied to workers
    /// that stay, then they are told to leave. A worker is not retired while it is the only
    /// one left to hold data.
    pub fn retire_workers(&mut self, ids: &[WorkerId]) {
        for &id in ids {
            if self.workers.contains_key(&id) {
                self.retiring.insert(id);
                self.idle.remove(&id);
            }
        }
        self.advance_retirements();
    }

    fn advance_retirements(&mut self) {
        let staying: Vec<WorkerId> = self.workers.keys().copied().filter(|w| !self.retiring.contains(w)).collect();
        let retiring: Vec<WorkerId> = self.retiring.iter().copied().filter(|w| !self.closing.contains(w)).collect();
        for id in retiring {
            let w = &self.workers[&id];
            let unique: Vec<u32> = w
                .has_what
                .iter()
                .copied()
                .filter(|&t| {
                    let task = &self.tasks[t as usize];
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
            let mut batches: BTreeMap<WorkerId, Vec<(Key, Vec<WorkerId>)>> = BTreeMap::new();
            for t in unique {
                if self.replicating.contains_key(&t) {
                    continue;
                }
                // The staying worker holding the fewest bytes takes it.
                let target = *staying.iter().min_by_key(|w| self.workers[*w].nbytes).expect("non-empty");
                self.replicating.insert(t, target);
                if let Some(tw) = self.workers.get_mut(&target) {
                    // Counted now so the next pick spreads the load.
                    tw.nbytes += self.tasks[t as usize].nbytes;
                }
                batches.entry(target).or_default().push((self.tasks[t as usize].key.clone(), vec![id]));
            }
            for (target, keys) in batches {
                self.commands.push(Command::Worker(target, SchedulerToWorker::Acquire { keys }));
            }
        }
    }

    /// Nobody wants `t` and no active dependent needs it: stop computing it or free it.
    fn release_if_unneeded(&mut self, t: u32) {
        let task = &self.tasks[t as usize];
        if !task.wanted_by.is_empty() || task.waiters > 0 {
            return;
        }
        match task.state {
            TaskState::Processing => {
                let w = task.processing_on;
                let key = task.key.clone();
                self.unassign(t);
                self.free_on(w, key);
                self.leave_active(t);
                self.tasks[t as usize].state = TaskState::Released;
                self.forget_if_unreferenced(t);
            }
            TaskState::Queued | TaskState::NoWorker | TaskState::Waiting => {
                let priority = task.priority;
                self.queued.remove(&(priority, t));
                self.no_worker.remove(&(priority, t));
                self.leave_active(t);
                self.tasks[t as usize].state = TaskState::Released;
                self.forget_if_unreferenced(t);
            }
            TaskState::Memory => self.release(t),
            TaskState::Released | TaskState::Erred => self.forget_if_unreferenced(t),
        }
    }

    /// Memory → released: the holders free it.
    fn release(&mut self, t: u32) {
        let task = &mut self.tasks[t as usize];
        if task.state == TaskState::Memory {
            let holders = std::mem::take(&mut task.who_has);
            let nbytes = task.nbytes;
            let key = task.key.clone();
            task.state = TaskState::Released;
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

    /// Forgets released or erred tasks that nothing refers to, and then their inputs.
    fn forget_if_unreferenced(&mut self, t: u32) {
        let mut stack = vec![t];
        while let Some(t) = stack.pop() {
            let task = &self.tasks[t as usize];
            if !task.live
                || !matches!(task.state, TaskState::Released | TaskState::Erred)
                || !task.wanted_by.is_empty()
                || !task.dependents.is_empty()
            {
                continue;
            }
            let deps = std::mem::take(&mut self.tasks[t as usize].deps);
            for &d in &deps {
                let dep = &mut self.tasks[d as usize];
                if let Some(pos) = dep.dependents.iter().position(|&x| x == t) {
                    dep.dependents.swap_remove(pos);
                }
                if dep.dependents.is_empty() {
                    stack.push(d);
                }
            }
            let hash = hash_key(&self.tasks[t as usize].key);
            if let Ok(entry) = self.index.find_entry(hash, |&x| x == t) {
                entry.remove();
            }
            let task = &mut self.tasks[t as usize];
            task.live = false;
            let body = task.body.take();
            task.failure = None;
            task.dependents = SmallVec::new();
            let key = std::mem::replace(&mut task.key, Key::new(EMPTY_NAME.with(|n| n.clone())));
            self.free.push(t);
            self.forget_name(key);
            // The set and this body hold the last references: the spec is no longer used.
            if let Some(body) = body
                && Arc::strong_count(&body.kernel) == 2
            {
                self.kernels.remove(&body.kernel);
            }
        }
    }

    /// Marks `t` and its active dependents erred and tells the clients that want them.
    fn err(&mut self, t: u32, failure: TaskFailure) {
        let mut stack = vec![t];
        let mut erred = Vec::new();
        while let Some(t) = stack.pop() {
            let task = &self.tasks[t as usize];
            if task.state == TaskState::Erred || task.state == TaskState::Memory {
                continue;
            }
            let was = task.state;
            if was == TaskState::Processing {
                self.unassign(t);
            }
            let priority = self.tasks[t as usize].priority;
            self.queued.remove(&(priority, t));
            self.no_worker.remove(&(priority, t));
            if was.is_active() {
                self.leave_active(t);
            }
            let task = &mut self.tasks[t as usize];
            task.state = TaskState::Erred;
            task.failure = Some(Box::new(failure.clone()));
            for &client in &task.wanted_by {
                if client != DATASETS {
                    self.commands.push(Command::Client(
                        client,
                        SchedulerToClient::Erred { key: task.key.clone(), failure: failure.clone() },
                    ));
                }
            }
            for i in 0..self.tasks[t as usize].dependents.len() {
                let d = self.tasks[t as usize].dependents[i];
                if self.tasks[d as usize].state.is_active() {
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
    fn reset_to_waiting(&mut self, t: u32) {
        let task = &self.tasks[t as usize];
        if !task.state.is_active() {
            return;
        }
        let priority = task.priority;
        self.queued.remove(&(priority, t));
        self.no_worker.remove(&(priority, t));
        // Leaving and re-entering the active set keeps the waiter counts exact.
        self.leave_active_without_release(t);
        self.tasks[t as usize].state = TaskState::Released;
        if self.tasks[t as usize].wanted_by.is_empty() && self.tasks[t as usize].waiters == 0 {
            self.forget_if_unreferenced(t);
            return;
        }
        self.compute(t);
    }

    fn leave_active_without_release(&mut self, t: u32) {
        for i in 0..self.tasks[t as usize].deps.len() {
            let d = self.tasks[t as usize].deps[i];
            self.tasks[d as usize].waiters -= 1;
        }
    }

    /// A value lost its last replica: recompute it if someone still needs it.
    fn lose(&mut self, t: u32) {
        let task = &mut self.tasks[t as usize];
        task.state = TaskState::Released;
        let needed = !task.wanted_by.is_empty() || task.waiters > 0;
        // Dependents already waiting counted it as done; they wait for it again.
        for i in 0..self.tasks[t as usize].dependents.len() {
            let d = self.tasks[t as usize].dependents[i];
            let dep = &mut self.tasks[d as usize];
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
                        self.free_on(w, key);
                    }
                    self.queued.remove(&(priority, d));
                    self.no_worker.remove(&(priority, d));
                    let dep = &mut self.tasks[d as usize];
                    dep.state = TaskState::Waiting;
                    dep.waiting_on = 1;
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

    fn missing_dependency(&mut self, worker: WorkerId, key: &Key, missing: &Key, tried: &[WorkerId]) {
        if let Some(m) = self.find(missing) {
            let stale: Vec<WorkerId> =
                self.tasks[m as usize].who_has.iter().copied().filter(|w| tried.contains(w)).collect();
            for w in stale {
                self.tasks[m as usize].who_has.retain(|x| *x != w);
                let nbytes = self.tasks[m as usize].nbytes;
                if let Some(holder) = self.workers.get_mut(&w) {
                    holder.has_what.remove(&m);
                    holder.nbytes = holder.nbytes.saturating_sub(nbytes);
                }
            }
            if self.tasks[m as usize].state == TaskState::Memory && self.tasks[m as usize].who_has.is_empty() {
                self.lose(m);
            }
        }
        if let Some(t) = self.find(key)
            && self.tasks[t as usize].state == TaskState::Processing
            && self.tasks[t as usize].processing_on == worker
        {
            // Try again: its inputs are either elsewhere or being recomputed.
            self.unassign(t);
            self.reset_to_waiting(t);
        }
    }

    // ----- invariants ----------------------------------------------------------------------

    /// Checks every internal invariant; tests call it after every event.
    ///
    /// # Errors
    /// A description of the first violated invariant.
    pub fn check_invariants(&self) -> Result<(), String> {
        let live = |t: u32| self.tasks.get(t as usize).is_some_and(|x| x.live);
        for (i, task) in self.tasks.iter().enumerate() {
            let t = i as u32;
            if !task.live {
                continue;
            }
            let k = &task.key;
            if self.find(k) != Some(t) {
                return Err(format!("{k}: index does not map to its slot"));
            }
            for &d in &task.deps {
                if !live(d) {
                    return Err(format!("{k}: dependency slot {d} is forgotten"));
                }
                if !self.tasks[d as usize].dependents.contains(&t) {
                    return Err(format!("{k}: not among its dependency's dependents"));
                }
            }
            for &d in &task.dependents {
                if !live(d) || !self.tasks[d as usize].deps.contains(&t) {
                    return Err(format!("{k}: dependent {d} does not list it"));
                }
            }
            let waiters = task.dependents.iter().filter(|&&d| self.tasks[d as usize].state.is_active()).count() as u32;
            if waiters != task.waiters {
                return Err(format!("{k}: waiters {} but {} active dependents", task.waiters, waiters));
            }
            match task.state {
                TaskState::Waiting => {
                    let not_ready =
                        task.deps.iter().filter(|&&d| self.tasks[d as usize].state != TaskState::Memory).count() as u32;
                    if not_ready != task.waiting_on || not_ready == 0 {
                        return Err(format!(
                            "{k}: waiting on {} but {} inputs not in memory",
                            task.waiting_on, not_ready
                        ));
                    }
                    for &d in &task.deps {
                        let ds = self.tasks[d as usize].state;
                        if !matches!(ds, TaskState::Memory) && !ds.is_active() {
                            return Err(format!("{k}: waits on {} which is {ds:?}", self.tasks[d as usize].key));
                        }
                    }
                }
                TaskState::Queued | TaskState::NoWorker | TaskState::Processing => {
                    if let Some(&d) = task.deps.iter().find(|&&d| self.tasks[d as usize].state != TaskState::Memory) {
                        return Err(format!(
                            "{k}: {:?} but input {} is not in memory",
                            task.state, self.tasks[d as usize].key
                        ));
                    }
                }
                _ => {}
            }
            let in_queue = self.queued.contains(&(task.priority, t));
            if in_queue != (task.state == TaskState::Queued) {
                return Err(format!("{k}: state {:?} but queued={in_queue}", task.state));
            }
            let parked = self.no_worker.contains(&(task.priority, t));
            if parked != (task.state == TaskState::NoWorker) {
                return Err(format!("{k}: state {:?} but no-worker={parked}", task.state));
            }
            if task.state == TaskState::Processing {
                match self.workers.get(&task.processing_on) {
                    Some(w) if w.processing.contains(&t) => {}
                    _ => return Err(format!("{k}: processing on {} which does not list it", task.processing_on)),
                }
            } else if task.processing_on != NONE {
                return Err(format!("{k}: {:?} but processing_on is set", task.state));
            }
            if (task.state == TaskState::Memory) == task.who_has.is_empty() {
                return Err(format!("{k}: state {:?} with {} holders", task.state, task.who_has.len()));
            }
            for w in &task.who_has {
                match self.workers.get(w) {
                    Some(worker) if worker.has_what.contains(&t) => {}
                    _ => return Err(format!("{k}: held by {w} which does not list it")),
                }
            }
            if task.state == TaskState::Erred && task.failure.is_none() {
                return Err(format!("{k}: erred without a failure"));
            }
            for c in &task.wanted_by {
                if *c != DATASETS && !self.clients.get(c).is_some_and(|cl| cl.wants.contains(&t)) {
                    return Err(format!("{k}: wanted by client {c} which does not list it"));
                }
            }
            // Nothing needs a released task: it would never be computed.
            if task.state == TaskState::Released && !task.wanted_by.is_empty() && task.body.is_some() {
                return Err(format!("{k}: released but wanted"));
            }
        }
        for w in self.workers.values() {
            let charged: f64 = w.processing.iter().map(|&t| self.tasks[t as usize].charged_us as f64).sum();
            if (charged - w.occupancy_us).abs() > 1e-6 * charged.max(1.0) * (w.processing.len() + 1) as f64 {
                return Err(format!(
                    "worker {}: occupancy {} µs but its tasks were charged {charged} µs",
                    w.info.id, w.occupancy_us
                ));
            }
            for &t in &w.processing {
                if !live(t) || self.tasks[t as usize].processing_on != w.info.id {
                    return Err(format!("worker {} lists processing slot {t} that is not processing there", w.info.id));
                }
            }
            for &t in &w.has_what {
                if !live(t) || !self.tasks[t as usize].who_has.contains(&w.info.id) {
                    return Err(format!("worker {} lists held slot {t} that does not name it", w.info.id));
                }
            }
        }
        for (c, client) in &self.clients {
            for &t in &client.wants {
                if !live(t) || !self.tasks[t as usize].wanted_by.contains(c) {
                    return Err(format!("client {c} wants slot {t} that does not name it"));
                }
            }
        }
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
        if !self.workers.is_empty() && !self.no_worker.is_empty() {
            return Err("tasks wait for workers while workers exist".into());
        }
        Ok(())
    }
}

thread_local! {
    static EMPTY_NAME: Arc<str> = Arc::from("");
}

fn state_name(state: TaskState) -> &'static str {
    match state {
        TaskState::Released => "released",
        TaskState::Waiting => "waiting",
        TaskState::Queued => "queued",
        TaskState::NoWorker => "no-worker",
        TaskState::Processing => "processing",
        TaskState::Memory => "memory",
        TaskState::Erred => "erred",
    }
}
