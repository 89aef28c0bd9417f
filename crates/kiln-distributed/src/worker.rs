//! The worker: runs tasks on a thread pool, holds their results, serves them to peers and
//! clients, and fetches its tasks' inputs directly from the workers that hold them.
//!
//! Networking runs on tokio; kernels run on plain threads so a long task never stalls a
//! connection. One core task owns the worker's bookkeeping; everything else talks to it through
//! a channel.

use std::collections::{BinaryHeap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kiln_graph::portable::{InputSpec, TaskSpec, resolve_task};
use kiln_graph::{CodecRegistry, Kernel, KernelRegistry, KernelSpec, Key, TaskError, Value};
use kiln_protocol::Role;
use kiln_protocol::messages::{
    ComputeTask, PeerReply, PeerRequest, Priority, SchedulerToWorker, TaskFailure, WorkerId, WorkerInfo,
    WorkerToScheduler,
};
use rustc_hash::FxHashMap;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::comm::{self, CommError, Outgoing, PacketReader, PeerPool, Sender, value_from_wire, values_to_wire};
use crate::store::{MemoryPolicy, Store};

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The scheduler's address (`host:port`, `tcp://` allowed).
    pub scheduler: String,
    /// Threads that run tasks.
    pub nthreads: usize,
    /// Memory limit in bytes (0: none); reported to the scheduler.
    pub memory_limit: u64,
    /// A human name (defaults to the data address).
    pub name: Option<String>,
    /// Where to listen for peers (`host:port`, port 0 for any).
    pub listen: String,
    /// How often to send heartbeats.
    pub heartbeat: Duration,
    /// Where to spill values (default: a fresh directory under the system's temp dir).
    pub local_directory: Option<std::path::PathBuf>,
    /// After losing the scheduler, keep trying to rejoin for this long (then stop).
    pub reconnect: Duration,
}

impl WorkerConfig {
    /// A worker of the scheduler at `scheduler` with one thread per core.
    pub fn new(scheduler: &str) -> Self {
        WorkerConfig {
            scheduler: scheduler.to_string(),
            nthreads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            memory_limit: 0,
            name: None,
            listen: "127.0.0.1:0".into(),
            heartbeat: Duration::from_secs(1),
            local_directory: None,
            reconnect: Duration::from_secs(60),
        }
    }
}

/// Strips an optional `tcp://` scheme.
pub fn strip_scheme(address: &str) -> &str {
    address.strip_prefix("tcp://").unwrap_or(address)
}

type SharedStore = Arc<Store>;

struct Job {
    priority: Priority,
    seq: u64,
    key: Key,
    kernel: Arc<dyn Kernel>,
    inputs: Vec<Value>,
}

impl PartialEq for Job {
    fn eq(&self, other: &Self) -> bool {
        (self.priority, self.seq) == (other.priority, other.seq)
    }
}
impl Eq for Job {}
impl PartialOrd for Job {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Job {
    // BinaryHeap pops the largest: invert so the smallest priority runs first.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.priority, other.seq).cmp(&(self.priority, self.seq))
    }
}

#[derive(Default)]
struct Queue {
    jobs: BinaryHeap<Job>,
    cancelled: HashSet<u64>,
    closed: bool,
    /// Threads blocked waiting for a job: waking one costs a system call, so only then.
    sleeping: usize,
}

/// Ready tasks, highest priority first, shared with the compute threads.
#[derive(Default)]
struct JobQueue {
    inner: Mutex<Queue>,
    ready: Condvar,
}

impl JobQueue {
    fn push(&self, job: Job) {
        let mut q = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        q.jobs.push(job);
        let wake = q.sleeping > 0;
        drop(q);
        if wake {
            self.ready.notify_one();
        }
    }
    fn cancel(&self, seq: u64) {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).cancelled.insert(seq);
    }
    /// Removes a job that has not started; `false` if it is running or gone.
    fn take(&self, seq: u64) -> bool {
        let mut q = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let before = q.jobs.len();
        q.jobs.retain(|j| j.seq != seq);
        q.jobs.len() < before
    }
    fn forget_cancel(&self, seq: u64) {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).cancelled.remove(&seq);
    }
    /// Drops every queued job but keeps the threads running.
    fn drop_queued(&self) {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).jobs.clear();
    }

    /// Closes the queue and returns the jobs that never started.
    fn close(&self) -> Vec<Key> {
        let mut q = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        q.closed = true;
        let jobs = std::mem::take(&mut q.jobs);
        self.ready.notify_all();
        jobs.into_iter().map(|j| j.key).collect()
    }
    /// The next job to run (`None`: closed). Cancelled jobs come back flagged.
    fn pop(&self) -> Option<(Job, bool)> {
        let mut q = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(job) = q.jobs.pop() {
                let cancelled = q.cancelled.contains(&job.seq);
                return Some((job, cancelled));
            }
            if q.closed {
                return None;
            }
            q.sleeping += 1;
            q = self.ready.wait(q).unwrap_or_else(|p| p.into_inner());
            q.sleeping -= 1;
        }
    }
}

enum CoreEvent {
    Scheduler(Vec<SchedulerToWorker>),
    SchedulerLost(String),
    Reconnected(Sender<WorkerToScheduler>),
    GaveUp(String),
    Done { key: Key, seq: u64, result: Option<Result<Value, TaskError>>, duration: Duration },
    Fetched { holder: WorkerId, values: Vec<(Key, Value)>, missing: Vec<Key> },
    Received(Vec<(Key, u64)>),
    Acquired(Vec<(Key, Value)>),
    Heartbeat,
    MemoryCheck,
    Close(String),
}

/// A task waiting for inputs fetched from peers.
struct Waiting {
    priority: Priority,
    kernel: Arc<dyn Kernel>,
    inputs: Vec<Result<Value, Key>>,
    missing: usize,
}

/// A running worker.
pub struct WorkerHandle {
    address: SocketAddr,
    events: mpsc::UnboundedSender<CoreEvent>,
    done: watch::Receiver<bool>,
}

impl WorkerHandle {
    /// Where peers and clients fetch this worker's data.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Asks the worker to hand back unstarted work and leave.
    pub fn close(&self, reason: &str) {
        let _ = self.events.send(CoreEvent::Close(reason.to_string()));
    }

    /// Waits until the worker has stopped.
    pub async fn stopped(&self) {
        let mut done = self.done.clone();
        let _ = done.wait_for(|d| *d).await;
    }
}

/// Starts a worker on the current tokio runtime: binds its data port, registers with the
/// scheduler and starts its compute threads. Kernels and codecs come from the global
/// registries.
///
/// # Errors
/// The port cannot be bound or the scheduler cannot be reached.
pub async fn start_worker(config: WorkerConfig) -> Result<WorkerHandle, CommError> {
    let listener = TcpListener::bind(&config.listen)
        .await
        .map_err(|source| CommError::Io { context: format!("cannot listen on {}", config.listen), source })?;
    let address = listener.local_addr().map_err(|source| CommError::Io { context: "local address".into(), source })?;
    let name = config.name.clone().unwrap_or_else(|| address.to_string());
    let scheduler_address = strip_scheme(&config.scheduler).to_string();
    let register = WorkerToScheduler::Register {
        address: address.to_string(),
        name: name.clone(),
        nthreads: config.nthreads as u32,
        memory_limit: config.memory_limit,
    };
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let to_scheduler = connect_scheduler(&scheduler_address, &name, register.clone(), events_tx.clone()).await?;

    let dir = config
        .local_directory
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("kiln-worker-{}-{}", std::process::id(), address.port())));
    let dir_for_cleanup = dir.clone();
    let store: SharedStore = Arc::new(Store::new(MemoryPolicy::with_limit(config.memory_limit), dir));
    let queue = Arc::new(JobQueue::default());
    let mut threads = Vec::new();
    for i in 0..config.nthreads.max(1) {
        let queue = queue.clone();
        let events = events_tx.clone();
        let thread = std::thread::Builder::new()
            .name(format!("kiln-worker-{i}"))
            .spawn(move || compute_thread(&queue, &events))
            .map_err(|source| CommError::Io { context: "cannot start a compute thread".into(), source })?;
        threads.push(thread);
    }

    tokio::spawn(serve_peers(listener, store.clone(), events_tx.clone(), name.clone()));
    let beat = events_tx.clone();
    let period = config.heartbeat;
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(period);
        loop {
            ticker.tick().await;
            if beat.send(CoreEvent::Heartbeat).is_err() {
                return;
            }
        }
    });
    if config.memory_limit > 0 {
        // Memory is watched ten times a second, as Dask's worker does.
        let monitor = events_tx.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_millis(100));
            loop {
                ticker.tick().await;
                if monitor.send(CoreEvent::MemoryCheck).is_err() {
                    return;
                }
            }
        });
    }

    let (done_tx, done) = watch::channel(false);
    let core = Core {
        id: None,
        name,
        scheduler_address,
        register,
        reconnect: config.reconnect,
        to_scheduler,
        store,
        queue,
        peers: HashMap::new(),
        pool: PeerPool::new(&address.to_string()),
        events: events_tx.clone(),
        waiting: FxHashMap::default(),
        fetch_waiters: FxHashMap::default(),
        in_queue: FxHashMap::default(),
        next_seq: 0,
        kernels: FxHashMap::default(),
        paused: false,
        held: Vec::new(),
    };
    let spill_dir = dir_for_cleanup;
    tokio::spawn(async move {
        core.run(events_rx).await;
        let _ = std::fs::remove_dir_all(&spill_dir);
        for t in threads {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        let _ = done_tx.send(true);
    });
    Ok(WorkerHandle { address, events: events_tx, done })
}

/// Connects and registers with the scheduler; its messages feed the core.
async fn connect_scheduler(
    address: &str,
    name: &str,
    register: WorkerToScheduler,
    events: mpsc::UnboundedSender<CoreEvent>,
) -> Result<Sender<WorkerToScheduler>, CommError> {
    let (stream, leftover) = comm::connect(address, Role::Worker, name).await?;
    let (read, write) = stream.into_split();
    let to_scheduler = comm::spawn_writer::<WorkerToScheduler>(write, address.to_string());
    let _ = to_scheduler.send(Outgoing::Message(register));
    let address = address.to_string();
    tokio::spawn(async move {
        let mut reader = PacketReader::with_buffer(read, address, leftover);
        let reason = loop {
            match reader.next_messages::<SchedulerToWorker>().await {
                Ok(Some((messages, _))) => {
                    if events.send(CoreEvent::Scheduler(messages)).is_err() {
                        return;
                    }
                }
                Ok(None) => break "the scheduler closed the connection".to_string(),
                Err(e) => break e.to_string(),
            }
        };
        let _ = events.send(CoreEvent::SchedulerLost(reason));
    });
    Ok(to_scheduler)
}

fn compute_thread(queue: &JobQueue, events: &mpsc::UnboundedSender<CoreEvent>) {
    while let Some((job, cancelled)) = queue.pop() {
        let start = Instant::now();
        let result = if cancelled {
            None
        } else {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.kernel.call(&job.inputs)));
            Some(outcome.unwrap_or_else(|panic| {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                Err(TaskError::Panicked(message))
            }))
        };
        let Job { key, seq, inputs, .. } = job;
        // Inputs are released here, on the compute thread, before the result is reported.
        drop(inputs);
        if events.send(CoreEvent::Done { key, seq, result, duration: start.elapsed() }).is_err() {
            return;
        }
    }
}

/// A task's kernel and its inputs: values at hand, or keys still to fetch.
type ResolvedInputs = (Arc<dyn Kernel>, Vec<Result<Value, Key>>);

struct Core {
    id: Option<WorkerId>,
    name: String,
    scheduler_address: String,
    register: WorkerToScheduler,
    reconnect: Duration,
    to_scheduler: Sender<WorkerToScheduler>,
    store: SharedStore,
    queue: Arc<JobQueue>,
    peers: HashMap<WorkerId, String>,
    pool: PeerPool,
    events: mpsc::UnboundedSender<CoreEvent>,
    waiting: FxHashMap<Key, Waiting>,
    /// Inputs being fetched → tasks waiting for them.
    fetch_waiters: FxHashMap<Key, Vec<Key>>,
    /// Tasks handed to the threads and not reported yet, with their job sequence number.
    in_queue: FxHashMap<Key, u64>,
    next_seq: u64,
    /// Resolved kernels by spec: most graphs use few distinct kernels.
    kernels: FxHashMap<KernelSpec, Arc<dyn Kernel>>,
    /// Memory is above the pause fraction: ready tasks wait in `held`.
    paused: bool,
    held: Vec<Job>,
}

const KERNEL_CACHE: usize = 4096;

impl Core {
    fn send(&self, message: WorkerToScheduler) {
        let _ = self.to_scheduler.send(Outgoing::Message(message));
    }

    async fn run(mut self, mut events: mpsc::UnboundedReceiver<CoreEvent>) {
        let mut batch = Vec::new();
        loop {
            if events.recv_many(&mut batch, 1024).await == 0 {
                return;
            }
            for event in batch.drain(..) {
                match event {
                    CoreEvent::Scheduler(messages) => {
                        for m in messages {
                            if let Some(reason) = self.scheduler_message(m) {
                                self.leave(&reason, &mut events).await;
                                return;
                            }
                        }
                    }
                    CoreEvent::SchedulerLost(reason) => {
                        if self.reconnect.is_zero() {
                            tracing::warn!("worker {}: lost the scheduler: {reason}; stopping", self.name);
                            self.queue.close();
                            return;
                        }
                        tracing::warn!("worker {}: lost the scheduler: {reason}; trying to rejoin", self.name);
                        self.reset();
                        self.spawn_reconnect();
                    }
                    CoreEvent::Reconnected(sender) => {
                        tracing::info!("worker {}: rejoined the scheduler", self.name);
                        self.to_scheduler = sender;
                    }
                    CoreEvent::GaveUp(reason) => {
                        tracing::error!("worker {}: could not rejoin the scheduler: {reason}; stopping", self.name);
                        self.queue.close();
                        return;
                    }
                    CoreEvent::Done { key, seq, result, duration } => self.done(key, seq, result, duration),
                    CoreEvent::Fetched { holder, values, missing } => self.fetched(holder, values, missing),
                    CoreEvent::Received(entries) => self.send(WorkerToScheduler::Received { entries }),
                    CoreEvent::Acquired(values) => {
                        let mut entries = Vec::with_capacity(values.len());
                        for (key, value) in values {
                            let nbytes = CodecRegistry::global().nbytes(&value).unwrap_or(64) as u64;
                            self.store.insert(key.clone(), value, nbytes);
                            entries.push((key, nbytes));
                        }
                        self.send(WorkerToScheduler::Received { entries });
                    }
                    CoreEvent::Heartbeat => {
                        let stats = self.store.stats();
                        self.send(WorkerToScheduler::Heartbeat {
                            managed_bytes: stats.managed,
                            spilled_bytes: stats.spilled,
                            process_bytes: process_rss(),
                        })
                    }
                    CoreEvent::MemoryCheck => self.check_memory(),
                    CoreEvent::Close(reason) => {
                        self.leave(&reason, &mut events).await;
                        return;
                    }
                }
            }
        }
    }

    /// Forgets everything: the scheduler that took this worker for dead has rescheduled its
    /// work, and the worker rejoins as a new one.
    fn reset(&mut self) {
        self.id = None;
        // Queued jobs go; results of jobs still running are dropped when they report.
        self.queue.drop_queued();
        self.in_queue.clear();
        self.waiting.clear();
        self.fetch_waiters.clear();
        self.held.clear();
        self.store.clear();
        self.peers.clear();
    }

    fn spawn_reconnect(&self) {
        let address = self.scheduler_address.clone();
        let name = self.name.clone();
        let register = self.register.clone();
        let events = self.events.clone();
        let patience = self.reconnect;
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + patience;
            let mut delay = Duration::from_millis(100);
            loop {
                tokio::time::sleep(delay).await;
                match connect_scheduler(&address, &name, register.clone(), events.clone()).await {
                    Ok(sender) => {
                        let _ = events.send(CoreEvent::Reconnected(sender));
                        return;
                    }
                    Err(e) if tokio::time::Instant::now() >= deadline => {
                        let _ = events.send(CoreEvent::GaveUp(e.to_string()));
                        return;
                    }
                    Err(e) => tracing::debug!("rejoining {address}: {e}"),
                }
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        });
    }

    /// Hands back unstarted work, lets running tasks finish and report, then stops.
    async fn leave(&mut self, reason: &str, events: &mut mpsc::UnboundedReceiver<CoreEvent>) {
        tracing::info!("worker {} leaving: {reason}", self.name);
        let mut returned = self.queue.close();
        returned.extend(self.waiting.drain().map(|(k, _)| k));
        for key in &returned {
            self.in_queue.remove(key);
        }
        // Tasks already running finish and report; their threads end after them.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !self.in_queue.is_empty() {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Some(CoreEvent::Done { key, seq, result, duration })) => self.done(key, seq, result, duration),
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        self.send(WorkerToScheduler::Leaving { returned });
        // Give the writer a moment to flush.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    /// Handles one scheduler message; `Some(reason)` when the worker must leave.
    fn scheduler_message(&mut self, message: SchedulerToWorker) -> Option<String> {
        match message {
            SchedulerToWorker::Registered { id, workers } => {
                self.id = Some(id);
                tracing::info!("worker {} registered as worker {id}", self.name);
                for w in workers {
                    self.peers.insert(w.id, w.address);
                }
            }
            SchedulerToWorker::WorkerAdded(WorkerInfo { id, address, .. }) => {
                self.peers.insert(id, address);
            }
            SchedulerToWorker::WorkerRemoved(id) => {
                self.peers.remove(&id);
            }
            SchedulerToWorker::Compute(task) => self.compute(task),
            SchedulerToWorker::Free { keys } => {
                for key in keys {
                    self.store.remove(&key);
                    self.waiting.remove(&key);
                    self.held.retain(|j| j.key != key);
                    if let Some(seq) = self.in_queue.remove(&key) {
                        self.queue.cancel(seq);
                    }
                }
            }
            SchedulerToWorker::Acquire { keys } => self.acquire(keys),
            SchedulerToWorker::Steal { key } => {
                let stolen = self.give_up(&key);
                self.send(WorkerToScheduler::StealResponse { key, stolen });
            }
            SchedulerToWorker::Close { reason } => return Some(reason),
        }
        None
    }

    fn resolve(&mut self, task: &ComputeTask) -> Result<ResolvedInputs, String> {
        let kernel = match self.kernels.get(&task.kernel) {
            Some(k) => k.clone(),
            None => {
                let spec = TaskSpec { key: task.key.clone(), kernel: task.kernel.clone(), inputs: Vec::new() };
                let resolved = resolve_task(&spec, KernelRegistry::global(), CodecRegistry::global())
                    .map_err(|e| e.to_string())?;
                if self.kernels.len() >= KERNEL_CACHE {
                    self.kernels.clear();
                }
                self.kernels.insert(task.kernel.clone(), resolved.kernel.clone());
                resolved.kernel
            }
        };
        let codecs = CodecRegistry::global();
        let inputs = task
            .inputs
            .iter()
            .enumerate()
            .map(|(i, input)| match input {
                InputSpec::Task(k) => Ok(Err(k.clone())),
                InputSpec::Literal(e) => {
                    codecs.decode(e).map(Ok).map_err(|e| format!("{}: literal input {i}: {e}", task.key))
                }
            })
            .collect::<Result<_, String>>()?;
        Ok((kernel, inputs))
    }

    fn compute(&mut self, task: ComputeTask) {
        let (kernel, mut inputs) = match self.resolve(&task) {
            Ok(r) => r,
            Err(message) => {
                let failure = TaskFailure::raised(task.key.clone(), message);
                self.send(WorkerToScheduler::Failed { key: task.key, failure });
                return;
            }
        };
        let mut missing: Vec<Key> = Vec::new();
        for input in inputs.iter_mut() {
            if let Err(dep) = input {
                match self.store.get(dep) {
                    Ok(Some(value)) => *input = Ok(value),
                    Ok(None) => {
                        if !missing.contains(dep) {
                            missing.push(dep.clone());
                        }
                    }
                    Err(message) => {
                        // The local copy is lost; the scheduler recomputes or finds another.
                        tracing::error!("worker {}: {message}", self.name);
                        let tried = self.id.into_iter().collect();
                        let missing = dep.clone();
                        self.send(WorkerToScheduler::MissingDependency { key: task.key, missing, tried });
                        return;
                    }
                }
            }
        }
        if missing.is_empty() {
            self.dispatch(task.key, task.priority, kernel, inputs);
            return;
        }
        // Fetch what is not here, grouped by holder, one request per holder.
        let mut by_holder: HashMap<WorkerId, Vec<Key>> = HashMap::new();
        for dep in &missing {
            let waiters = self.fetch_waiters.entry(dep.clone()).or_default();
            let first = waiters.is_empty();
            waiters.push(task.key.clone());
            if !first {
                continue;
            }
            let holders = task.who_has.iter().find(|(k, _)| k == dep).map(|(_, h)| h.as_slice()).unwrap_or(&[]);
            let holder = holders.iter().copied().find(|h| Some(*h) != self.id && self.peers.contains_key(h));
            match holder {
                Some(h) => by_holder.entry(h).or_default().push(dep.clone()),
                None => {
                    // Nobody to fetch from: the scheduler must find it another way.
                    let _ = self.events.send(CoreEvent::Fetched {
                        holder: holders.first().copied().unwrap_or(WorkerId::new(u32::MAX)),
                        values: Vec::new(),
                        missing: vec![dep.clone()],
                    });
                }
            }
        }
        self.waiting
            .insert(task.key.clone(), Waiting { priority: task.priority, kernel, inputs, missing: missing.len() });
        for (holder, keys) in by_holder {
            let address = self.peers[&holder].clone();
            let pool = self.pool.clone();
            let events = self.events.clone();
            tokio::spawn(async move {
                let request = PeerRequest::Get { request: pool.request_id(), keys: keys.clone() };
                let (values, missing) = match pool.request(&address, request, Vec::new()).await {
                    Ok((PeerReply::Data { values, missing, .. }, frames)) => decode_values(values, missing, &frames),
                    Ok((other, _)) => {
                        tracing::warn!("unexpected reply from {address}: {other:?}");
                        (Vec::new(), keys)
                    }
                    Err(e) => {
                        tracing::warn!("fetching from {address} failed: {e}");
                        (Vec::new(), keys)
                    }
                };
                let _ = events.send(CoreEvent::Fetched { holder, values, missing });
            });
        }
    }

    fn fetched(&mut self, holder: WorkerId, values: Vec<(Key, Value)>, missing: Vec<Key>) {
        for (dep, value) in values {
            for task in self.fetch_waiters.remove(&dep).unwrap_or_default() {
                let Some(w) = self.waiting.get_mut(&task) else { continue };
                for input in w.inputs.iter_mut() {
                    if matches!(input, Err(k) if *k == dep) {
                        *input = Ok(value.clone());
                    }
                }
                w.missing -= 1;
                if w.missing == 0 {
                    let w = self.waiting.remove(&task).expect("present");
                    self.dispatch(task, w.priority, w.kernel, w.inputs);
                }
            }
        }
        for dep in missing {
            for task in self.fetch_waiters.remove(&dep).unwrap_or_default() {
                if self.waiting.remove(&task).is_some() {
                    self.send(WorkerToScheduler::MissingDependency {
                        key: task,
                        missing: dep.clone(),
                        tried: vec![holder],
                    });
                }
            }
        }
    }

    /// Copies values from other workers (a retiring worker's results) and keeps them.
    fn acquire(&mut self, keys: Vec<(Key, Vec<WorkerId>)>) {
        let mut by_holder: HashMap<WorkerId, Vec<Key>> = HashMap::new();
        for (key, holders) in keys {
            if let Some(h) = holders.into_iter().find(|h| self.peers.contains_key(h)) {
                by_holder.entry(h).or_default().push(key);
            }
        }
        for (holder, keys) in by_holder {
            let address = self.peers[&holder].clone();
            let pool = self.pool.clone();
            let events = self.events.clone();
            tokio::spawn(async move {
                let request = PeerRequest::Get { request: pool.request_id(), keys };
                match pool.request(&address, request, Vec::new()).await {
                    Ok((PeerReply::Data { values, missing, .. }, frames)) => {
                        let (values, _) = decode_values(values, missing, &frames);
                        let _ = events.send(CoreEvent::Acquired(values));
                    }
                    Ok((other, _)) => tracing::warn!("unexpected reply from {address}: {other:?}"),
                    // The scheduler asks again if the copy is still needed.
                    Err(e) => tracing::warn!("copying from {address} failed: {e}"),
                }
            });
        }
    }

    /// Drops a task that has not started (it is being stolen); `false` if it already runs.
    fn give_up(&mut self, key: &Key) -> bool {
        if self.waiting.remove(key).is_some() {
            return true;
        }
        if let Some(pos) = self.held.iter().position(|j| j.key == *key) {
            let job = self.held.swap_remove(pos);
            self.in_queue.remove(&job.key);
            return true;
        }
        match self.in_queue.get(key) {
            Some(&seq) if self.queue.take(seq) => {
                self.in_queue.remove(key);
                true
            }
            _ => false,
        }
    }

    fn dispatch(&mut self, key: Key, priority: Priority, kernel: Arc<dyn Kernel>, inputs: Vec<Result<Value, Key>>) {
        let inputs = inputs.into_iter().map(|i| i.expect("all inputs present")).collect();
        let seq = self.next_seq;
        self.next_seq += 1;
        self.in_queue.insert(key.clone(), seq);
        let job = Job { priority, seq, key, kernel, inputs };
        if self.paused {
            self.held.push(job);
        } else {
            self.queue.push(job);
        }
    }

    /// Spills while the process is above the spill fraction; pauses above the pause fraction.
    fn check_memory(&mut self) {
        let policy = self.store.policy();
        if policy.limit == 0 {
            return;
        }
        let limit = policy.limit as f64;
        let mut rss = process_rss();
        while rss as f64 > policy.spill * limit && self.store.spill_one() {
            rss = process_rss();
        }
        let pause = rss as f64 > policy.pause * limit;
        if pause != self.paused {
            self.paused = pause;
            if pause {
                tracing::warn!(
                    "worker {}: process memory {} MB is above {:.0}% of the {} MB limit; pausing new tasks",
                    self.name,
                    rss >> 20,
                    policy.pause * 100.0,
                    policy.limit >> 20
                );
            } else {
                tracing::info!("worker {}: memory back to {} MB; resuming", self.name, rss >> 20);
                for job in std::mem::take(&mut self.held) {
                    self.queue.push(job);
                }
            }
        }
    }

    fn done(&mut self, key: Key, seq: u64, result: Option<Result<Value, TaskError>>, duration: Duration) {
        if self.in_queue.get(&key) != Some(&seq) {
            // Freed while queued or running: the scheduler no longer wants this result.
            self.queue.forget_cancel(seq);
            return;
        }
        self.in_queue.remove(&key);
        match result {
            None => self.queue.forget_cancel(seq),
            Some(Ok(value)) => {
                let nbytes = CodecRegistry::global().nbytes(&value).unwrap_or(64) as u64;
                self.store.insert(key.clone(), value, nbytes);
                self.send(WorkerToScheduler::Finished { key, nbytes, duration_us: duration.as_micros() as u64 });
            }
            Some(Err(error)) => {
                let failure = match error {
                    TaskError::At { key: inner, error } => TaskFailure::raised(inner, error.to_string()),
                    other => TaskFailure::raised(key.clone(), other.to_string()),
                };
                self.send(WorkerToScheduler::Failed { key, failure });
            }
        }
    }
}

fn decode_values(
    values: Vec<(Key, kiln_protocol::messages::WireValue)>,
    mut missing: Vec<Key>,
    frames: &[Bytes],
) -> (Vec<(Key, Value)>, Vec<Key>) {
    let mut out = Vec::with_capacity(values.len());
    for (key, wire) in values {
        match value_from_wire(&wire, frames, CodecRegistry::global()) {
            Ok(v) => out.push((key, v)),
            Err(e) => {
                tracing::warn!("cannot decode {key}: {e}");
                missing.push(key);
            }
        }
    }
    (out, missing)
}

/// Serves `Get` and `Put` requests from peers and clients.
async fn serve_peers(
    listener: TcpListener,
    store: SharedStore,
    events: mpsc::UnboundedSender<CoreEvent>,
    name: String,
) {
    loop {
        let (mut stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("worker {name}: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if events.is_closed() {
            return;
        }
        let store = store.clone();
        let events = events.clone();
        let name = name.clone();
        tokio::spawn(async move {
            let listener_name = format!("kiln worker {name}");
            let leftover = match comm::accept(&mut stream, &[Role::Peer], &listener_name).await {
                Ok((_, leftover)) => leftover,
                Err(e) => {
                    tracing::warn!("worker {name}: dropped connection from {peer}: {e}");
                    return;
                }
            };
            let (read, write) = stream.into_split();
            let replies = comm::spawn_writer::<PeerReply>(write, peer.to_string());
            let mut reader = PacketReader::with_buffer(read, peer.to_string(), leftover);
            loop {
                let (requests, frames) = match reader.next_messages::<PeerRequest>().await {
                    Ok(Some(r)) => r,
                    Ok(None) => return,
                    Err(e) => {
                        tracing::warn!("worker {name}: {e}; dropping the connection");
                        return;
                    }
                };
                for request in requests {
                    let reply = answer(request, &frames, &store, &events);
                    if replies.send(reply).is_err() {
                        return;
                    }
                }
            }
        });
    }
}

fn answer(
    request: PeerRequest,
    frames: &[Bytes],
    store: &SharedStore,
    events: &mpsc::UnboundedSender<CoreEvent>,
) -> Outgoing<PeerReply> {
    match request {
        PeerRequest::Get { request, keys } => {
            let mut found = Vec::with_capacity(keys.len());
            let mut missing = Vec::new();
            for key in keys {
                match store.get(&key) {
                    Ok(Some(value)) => found.push((key, value)),
                    Ok(None) => missing.push(key),
                    Err(message) => {
                        tracing::error!("{message}");
                        missing.push(key);
                    }
                }
            }
            match values_to_wire(found, CodecRegistry::global()) {
                Ok((values, frames)) => Outgoing::WithFrames(PeerReply::Data { request, values, missing }, frames),
                Err(e) => Outgoing::Message(PeerReply::Error { request, message: e.to_string() }),
            }
        }
        PeerRequest::Put { request, values } => {
            let mut decoded = Vec::with_capacity(values.len());
            for (key, wire) in values {
                match value_from_wire(&wire, frames, CodecRegistry::global()) {
                    Ok(v) => decoded.push((key, v)),
                    Err(e) => return Outgoing::Message(PeerReply::Error { request, message: format!("{key}: {e}") }),
                }
            }
            let mut entries = Vec::with_capacity(decoded.len());
            for (key, value) in decoded {
                let nbytes = CodecRegistry::global().nbytes(&value).unwrap_or(64) as u64;
                entries.push((key.clone(), nbytes));
                store.insert(key, value, nbytes);
            }
            let _ = events.send(CoreEvent::Received(entries));
            Outgoing::Message(PeerReply::Stored { request })
        }
    }
}

/// Makes freed large buffers go back to the operating system at once, so a worker's resident
/// memory follows what it holds (glibc otherwise raises its mmap threshold after the first
/// large free and keeps array chunks in its heap). Worker processes call it at start-up.
pub fn tune_allocator_for_workers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before worker threads
    // allocate large buffers.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}

/// The process's resident set size in bytes (Linux; 0 elsewhere).
pub fn process_rss() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}
