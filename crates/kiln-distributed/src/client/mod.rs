//! The client: connects a program to a cluster, computes graphs on it (it implements
//! [`Scheduler`], so collections' `compute()` can use it), and owns futures.
//!
//! The API is blocking, like Dask's client in ordinary code: a background tokio runtime owns
//! the connections, and callers wait on a condition variable for the scheduler's reports.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use kiln_graph::portable::task_to_spec;
use kiln_graph::{CodecRegistry, ComputeError, Graph, Key, Scheduler, TaskError, TaskId, Value};
use kiln_protocol::Role;
use kiln_protocol::messages::{
    ClientId, ClientToScheduler, FailureKind, MemoryReport, PeerReply, PeerRequest, ScatteredEntry, SchedulerToClient,
    SubmittedTask, TaskFailure, WireValue, WorkerId, WorkerInfo,
};
use tokio::runtime::Runtime;

use crate::comm::{
    self, CommError, Outgoing, PacketReader, PeerPool, ReceivedFrames, Security, Sender, TlsRole, value_from_wire,
    values_to_wire,
};

pub(crate) mod futures;
pub(crate) mod progress;
mod report;

/// How busy a cluster is (see [`Client::cluster_load`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClusterLoad {
    /// Ready tasks waiting in the scheduler: root tasks for a worker slot, and tasks no
    /// worker can run (none there, or every one retiring).
    pub queued: u64,
    /// Tasks assigned to workers and not finished.
    pub processing: u64,
    /// Tasks waiting for inputs.
    pub waiting: u64,
    /// Workers (including retiring ones).
    pub workers: u64,
    /// Threads of the workers that take new work (not paused, not retiring).
    pub threads: u64,
}

/// Where a key stands, as this client knows it.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyStatus {
    /// Not finished yet.
    Pending,
    /// In cluster memory.
    Finished,
    /// Failed; the failure names the task that failed first.
    Erred(TaskFailure),
    /// Cancelled or lost for good.
    Cancelled(String),
}

#[derive(Debug)]
struct KeyEntry {
    status: KeyStatus,
    holders: Vec<WorkerId>,
    refs: usize,
}

#[derive(Default)]
pub(crate) struct State {
    keys: HashMap<Key, KeyEntry>,
    workers: HashMap<WorkerId, WorkerInfo>,
    replies: HashMap<u64, SchedulerToClient>,
    refusals: Vec<String>,
    closed: Option<String>,
    id: Option<ClientId>,
    /// The scheduler's dashboard, as its welcome said.
    dashboard: Option<String>,
    /// Keys asked about with [`REFRESH`] questions, oldest first.
    refreshing: std::collections::VecDeque<Vec<Key>>,
    /// Counts batches of news from the scheduler, so a waiter can tell whether anything
    /// changed since it looked.
    news: u64,
    /// The graph each referenced key was submitted with, as tasks per name (progress bars).
    shapes: HashMap<Key, progress::Shape>,
    /// When to draw a progress bar.
    progress: kiln_local::Progress,
}

/// One `Put` of a scatter: the values' sizes (for the scheduler), descriptions and frames.
#[derive(Default)]
struct PutBatch {
    sizes: Vec<(Key, u64)>,
    wire: Vec<(Key, WireValue)>,
    frames: Vec<bytes::Bytes>,
}

/// Roughly what a value's description adds to a packet's header (its tag and codec header).
fn wire_header_bytes(wire: &[(Key, WireValue)]) -> usize {
    wire.iter().map(|(k, w)| k.to_string().len() + w.tag.len() + w.header.len() + 16).sum()
}

/// Refuses a graph whose literal inputs cannot travel: they go inside the `UpdateGraph`
/// header, which is one frame, so one literal (or all of them together) over the frame limit
/// would make the scheduler drop the connection, and the user would see only a lost connection.
fn check_literals(tasks: &[SubmittedTask]) -> Result<(), ComputeError> {
    let limit = comm::limits().max_frame;
    let mut total = 0usize;
    for task in tasks {
        for (position, input) in task.spec.inputs.iter().enumerate() {
            if let kiln_graph::portable::InputSpec::Literal(encoded) = input {
                let size = encoded.nbytes();
                if size > limit {
                    return Err(ComputeError::OverFrameLimit {
                        what: format!("task {}'s literal input {position}", task.spec.key),
                        size: size as u64,
                        limit: limit as u64,
                        setting: "KILN_MAX_FRAME".into(),
                    });
                }
                total = total.saturating_add(size);
            }
        }
    }
    if total > limit {
        return Err(ComputeError::OverFrameLimit {
            what: "the graph's literal inputs together".into(),
            size: total as u64,
            limit: limit as u64,
            setting: "KILN_MAX_FRAME".into(),
        });
    }
    Ok(())
}

/// The request id of the client's own where-is-it-now questions after a worker left.
const REFRESH: u64 = u64::MAX;

/// How long a fetch keeps trying holders that fail before it reports an error.
const FETCH_GIVE_UP: Duration = Duration::from_secs(30);

/// How long a failed fetch waits for news from the scheduler before asking the holders again.
const NEWS_WAIT: Duration = Duration::from_millis(500);

pub(crate) struct Inner {
    /// Always `Some` until dropped (taken in `Drop` to shut down without blocking).
    runtime: Option<Runtime>,
    to_scheduler: Sender<ClientToScheduler>,
    state: Mutex<State>,
    changed: Condvar,
    pool: PeerPool,
    address: String,
    next_request: std::sync::atomic::AtomicU64,
}

/// A connection to a kiln cluster (Dask's `Client`).
///
/// ```
/// use kiln_distributed::{Client, LocalCluster, WorkerMode};
/// # let cluster = LocalCluster::builder().workers(1).mode(WorkerMode::Threads).start().unwrap();
/// # let address = cluster.address();
/// // `address` is a running scheduler's, e.g. "tcp://127.0.0.1:8786" as `kiln scheduler` prints it.
/// let client = Client::connect(&address).unwrap();
/// client.wait_for_workers(1, std::time::Duration::from_secs(30)).unwrap();
/// println!("{} workers", client.workers().len());
/// ```
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

/// How long a blocking call waits for the scheduler's welcome.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

impl Client {
    /// Connects to the scheduler at `address` (`tcp://host:port` or `host:port`).
    ///
    /// # Errors
    /// The scheduler cannot be reached or refuses the connection.
    pub fn connect(address: &str) -> Result<Client, ComputeError> {
        Client::connect_with(address, &Security::default())
    }

    /// Connects to the scheduler at `address` (`tls://host:port` needs TLS settings) with
    /// `security`'s client certificate and token (Dask's `Client(address, security=...)`).
    ///
    /// # Errors
    /// The scheduler cannot be reached, refuses the connection (a wrong token, a certificate
    /// it does not trust), or the security settings do not work.
    pub fn connect_with(address: &str, security: &Security) -> Result<Client, ComputeError> {
        let transport = security.transport(TlsRole::Client).map_err(|e| ComputeError::Connection {
            peer: format!("the scheduler at {address}"),
            message: e.to_string(),
        })?;
        // Results are assembled in this process: their size is checked against its memory.
        kiln_graph::memory::set_available_probe(kiln_local::allocator::available_memory);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("kiln-client")
            .enable_all()
            .build()
            .map_err(|e| ComputeError::Internal(format!("cannot start the client runtime: {e}")))?;
        let address = address.to_string();
        let name = format!("client-{}", std::process::id());
        let (stream, leftover) =
            runtime.block_on(comm::connect(&address, Role::Client, &name, &transport)).map_err(|e| {
                ComputeError::Connection { peer: format!("the scheduler at {address}"), message: e.to_string() }
            })?;
        let (read, write) = stream.into_split();
        let to_scheduler = {
            let _guard = runtime.enter();
            comm::spawn_writer::<ClientToScheduler>(write, address.clone())
        };
        // The scheduler treats the connection as a stranger's until this arrives.
        let _ = to_scheduler.send(Outgoing::Message(ClientToScheduler::Register { name: name.clone() }));
        let inner = Arc::new(Inner {
            runtime: Some(runtime),
            to_scheduler,
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            pool: PeerPool::new(&name, transport.clone()),
            address: address.clone(),
            next_request: std::sync::atomic::AtomicU64::new(1),
        });
        let weak = Arc::downgrade(&inner);
        inner.rt().spawn(async move {
            let mut reader = PacketReader::with_buffer(read, address, leftover);
            let reason = loop {
                match reader.next_messages::<SchedulerToClient>().await {
                    Ok(Some((messages, _))) => {
                        let Some(inner) = weak.upgrade() else { return };
                        inner.receive(messages);
                    }
                    Ok(None) => break "the scheduler closed the connection".to_string(),
                    Err(e) => break e.to_string(),
                }
            };
            if let Some(inner) = weak.upgrade() {
                inner.lock().closed = Some(reason);
                inner.changed.notify_all();
            }
        });
        let client = Client { inner };
        // Wait for the welcome so the worker list is known.
        client.wait_until(Some(CONNECT_TIMEOUT), |s| s.id.is_some())?;
        Ok(client)
    }

    /// The scheduler's address.
    pub fn scheduler_address(&self) -> &str {
        &self.inner.address
    }

    /// The scheduler's dashboard (`http://host:port/status`), or `None` when it serves none
    /// (Dask's `Client.dashboard_link`).
    pub fn dashboard_link(&self) -> Option<String> {
        self.inner.lock().dashboard.clone()
    }

    /// The workers the scheduler knows now.
    pub fn workers(&self) -> Vec<WorkerInfo> {
        let mut workers: Vec<WorkerInfo> = self.inner.lock().workers.values().cloned().collect();
        workers.sort_by_key(|w| w.id);
        workers
    }

    /// Waits until at least `n` workers are connected.
    ///
    /// # Errors
    /// A timeout or a lost connection.
    pub fn wait_for_workers(&self, n: usize, timeout: Duration) -> Result<(), ComputeError> {
        self.wait_until(Some(timeout), |s| s.workers.len() >= n).map_err(|e| match e {
            ComputeError::Timeout { after, .. } => ComputeError::Timeout {
                operation: format!("waiting for {n} workers ({} arrived)", self.workers().len()),
                after,
            },
            e => e,
        })
    }

    /// Which workers hold each key now (empty: not in memory), as the scheduler knows it.
    ///
    /// # Errors
    /// A lost connection.
    pub fn who_has(&self, keys: &[Key]) -> Result<Vec<Vec<WorkerId>>, ComputeError> {
        match self.ask(|request| ClientToScheduler::WhoHas { request, keys: keys.to_vec() })? {
            SchedulerToClient::WhoHas { holders, .. } => Ok(holders),
            other => Err(ComputeError::Internal(format!("unexpected answer {other:?}"))),
        }
    }

    /// Every worker's memory as it last reported it (heartbeats, about once a second):
    /// managed, spilled and process bytes.
    ///
    /// # Errors
    /// A lost connection.
    pub fn worker_memory(&self) -> Result<Vec<MemoryReport>, ComputeError> {
        match self.ask(|request| ClientToScheduler::WorkerMemory { request })? {
            SchedulerToClient::WorkerMemory { workers, .. } => Ok(workers),
            other => Err(ComputeError::Internal(format!("unexpected answer {other:?}"))),
        }
    }

    /// Retires workers without losing data: they get no new work, their unique results are
    /// copied to other workers, then they leave (Dask's `retire_workers`).
    pub fn retire_workers(&self, workers: &[WorkerId]) {
        self.send(ClientToScheduler::RetireWorkers { workers: workers.to_vec() });
    }

    /// How busy the cluster is now.
    ///
    /// # Errors
    /// A lost connection.
    pub fn cluster_load(&self) -> Result<ClusterLoad, ComputeError> {
        match self.ask(|request| ClientToScheduler::ClusterLoad { request })? {
            SchedulerToClient::ClusterLoad { queued, processing, waiting, workers, threads, .. } => {
                Ok(ClusterLoad { queued, processing, waiting, workers, threads })
            }
            other => Err(ComputeError::Internal(format!("unexpected answer {other:?}"))),
        }
    }

    /// Makes this client the process-wide default scheduler, so `compute()` on collections
    /// runs on the cluster. Returns the scheduler it replaces.
    pub fn set_as_default(&self) -> Option<Arc<dyn Scheduler>> {
        kiln_graph::scheduler::set_default(Arc::new(self.clone()))
    }

    /// Stops the whole cluster: workers and scheduler.
    pub fn shutdown_cluster(&self) {
        self.inner.send(ClientToScheduler::ShutdownCluster);
    }

    /// Waits until none of `ids` is a worker of the cluster any more (woken by the scheduler's
    /// news that a worker was removed).
    ///
    /// # Errors
    /// [`ComputeError::Timeout`] when some are still there after `timeout`; a lost connection.
    pub fn wait_workers_gone(&self, ids: &[WorkerId], timeout: Duration) -> Result<(), ComputeError> {
        self.wait_until(Some(timeout), |s| !ids.iter().any(|id| s.workers.contains_key(id)))
    }

    pub(crate) fn wait_until(
        &self,
        timeout: Option<Duration>,
        mut done: impl FnMut(&State) -> bool,
    ) -> Result<(), ComputeError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut state = self.inner.lock();
        loop {
            if done(&state) {
                return Ok(());
            }
            if let Some(reason) = &state.closed {
                return Err(ComputeError::Connection {
                    peer: format!("the scheduler at {}", self.inner.address),
                    message: format!("lost: {reason}"),
                });
            }
            state = match deadline {
                None => self.inner.changed.wait(state).unwrap_or_else(|p| p.into_inner()),
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(ComputeError::Timeout {
                            operation: "waiting for the scheduler".into(),
                            after: timeout.unwrap_or_default(),
                        });
                    }
                    self.inner.changed.wait_timeout(state, deadline - now).unwrap_or_else(|p| p.into_inner()).0
                }
            };
        }
    }

    /// Takes references on keys (this client wants them kept or computed).
    pub(crate) fn retain(&self, keys: &[Key]) {
        let mut state = self.inner.lock();
        for key in keys {
            state
                .keys
                .entry(key.clone())
                .or_insert(KeyEntry { status: KeyStatus::Pending, holders: vec![], refs: 0 })
                .refs += 1;
        }
    }

    /// Drops references; keys nobody here references any more are released on the cluster.
    pub(crate) fn release(&self, keys: &[Key]) {
        let mut released = Vec::new();
        {
            let mut state = self.inner.lock();
            for key in keys {
                if let Some(entry) = state.keys.get_mut(key) {
                    entry.refs -= 1;
                    if entry.refs == 0 {
                        state.keys.remove(key);
                        state.shapes.remove(key);
                        released.push(key.clone());
                    }
                }
            }
        }
        if !released.is_empty() {
            self.inner.send(ClientToScheduler::Release { keys: released });
        }
    }

    /// Sends the part of `graph` the cluster needs for `outputs`, wanting `outputs`.
    ///
    /// # Errors
    /// A task that cannot be sent (an unregistered closure), with the task and how to fix it.
    pub(crate) fn submit_graph(&self, graph: &Graph, outputs: &[TaskId]) -> Result<Vec<Key>, ComputeError> {
        graph.check_outputs(outputs)?;
        let order = kiln_graph::order::order(graph, outputs);
        let codecs = CodecRegistry::global();
        let mut tasks = Vec::with_capacity(graph.len());
        for &id in graph.topological_order() {
            if graph.kernel(id).is_remote() {
                continue;
            }
            let spec = task_to_spec(graph, id, codecs)?;
            tasks.push(SubmittedTask { spec, order: order[id.index()] });
        }
        check_literals(&tasks)?;
        let wanted: Vec<Key> = outputs.iter().map(|&o| graph.key(o).clone()).collect();
        self.retain(&wanted);
        let shape = progress::shape(&tasks);
        {
            // Submitting a cancelled key again computes it again.
            let mut state = self.inner.lock();
            for key in &wanted {
                state.shapes.insert(key.clone(), shape.clone());
            }
            for key in &wanted {
                if let Some(entry) = state.keys.get_mut(key)
                    && matches!(entry.status, KeyStatus::Cancelled(_))
                {
                    entry.status = KeyStatus::Pending;
                }
            }
        }
        self.inner.send(ClientToScheduler::UpdateGraph { tasks, wanted: wanted.clone() });
        Ok(wanted)
    }

    /// Waits until every key is finished; the first failure or cancellation is returned.
    pub(crate) fn wait_keys(&self, keys: &[Key]) -> Result<(), ComputeError> {
        let mut failure: Option<ComputeError> = None;
        self.wait_until(None, |s| {
            let mut all = true;
            for key in keys {
                match s.keys.get(key).map(|e| &e.status) {
                    Some(KeyStatus::Finished) => {}
                    Some(KeyStatus::Erred(f)) => {
                        failure = Some(failure_to_error(f));
                        return true;
                    }
                    Some(KeyStatus::Cancelled(reason)) => {
                        failure =
                            Some(ComputeError::Cancelled { key: Some(key.clone()), reason: Some(reason.clone()) });
                        return true;
                    }
                    Some(KeyStatus::Pending) | None => all = false,
                }
            }
            all
        })?;
        failure.map_or(Ok(()), Err)
    }

    /// Fetches finished keys' values from the workers that hold them.
    pub(crate) fn fetch(&self, keys: &[Key]) -> Result<Vec<Value>, ComputeError> {
        let mut values: HashMap<Key, Value> = HashMap::new();
        let mut give_up: Option<Instant> = None;
        while values.len() < keys.len() {
            self.wait_keys(keys)?;
            // Taken before asking the holders, so news that arrives while we ask is not missed.
            let news_before = self.inner.lock().news;
            // Group by holder.
            let mut by_address: HashMap<String, Vec<Key>> = HashMap::new();
            {
                let state = self.inner.lock();
                for key in keys {
                    if values.contains_key(key) {
                        continue;
                    }
                    let entry = &state.keys[key];
                    let holder = entry.holders.iter().find_map(|h| state.workers.get(h));
                    // No live holder: the scheduler is recomputing it; the next round finds it.
                    if let Some(w) = holder {
                        by_address.entry(w.address.clone()).or_default().push(key.clone());
                    }
                }
            }
            let (tx, rx) = std::sync::mpsc::channel();
            let count = by_address.len();
            for (address, keys) in by_address {
                let pool = self.inner.pool.clone();
                let tx = tx.clone();
                self.inner.rt().spawn(async move {
                    let request = PeerRequest::Get { request: pool.request_id(), keys: keys.clone() };
                    let result = pool.request(&address, request, Vec::new()).await;
                    let _ = tx.send((address, keys, result));
                });
            }
            let mut failed = false;
            for _ in 0..count {
                let (address, asked, result) =
                    rx.recv().map_err(|_| ComputeError::Internal("the client runtime stopped".into()))?;
                match result {
                    Ok((PeerReply::Data { values: wire, missing, .. }, frames)) => {
                        let mut frames = ReceivedFrames::from(frames);
                        for (key, w) in wire {
                            let v = value_from_wire(&w, &mut frames, CodecRegistry::global())
                                .map_err(|e| ComputeError::Codec { key: key.clone(), message: e.to_string() })?;
                            values.insert(key, v);
                        }
                        if !missing.is_empty() {
                            failed = true;
                        }
                    }
                    Ok((PeerReply::Error { message, .. }, _)) => {
                        return Err(ComputeError::Worker { worker: address, message });
                    }
                    Ok(_) | Err(_) => {
                        tracing::debug!("fetching {} keys from {address} failed; retrying", asked.len());
                        failed = true;
                    }
                }
            }
            if failed || count == 0 {
                let deadline = *give_up.get_or_insert_with(|| Instant::now() + FETCH_GIVE_UP);
                if Instant::now() >= deadline {
                    return Err(ComputeError::Worker {
                        worker: "every holder".into(),
                        message: format!(
                            "could not fetch {} results within {FETCH_GIVE_UP:?}",
                            keys.len() - values.len()
                        ),
                    });
                }
                // A holder died or no longer has the value: the scheduler's next news (a worker
                // removed, the value in memory elsewhere) tells where to ask. The bounded wait only
                // covers news that never comes (a holder that answers "missing" but stays).
                match self.wait_until(Some(NEWS_WAIT), |s| s.news != news_before) {
                    Ok(()) | Err(ComputeError::Timeout { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(keys.iter().map(|k| values[k].clone()).collect())
    }

    /// Places values directly on workers (Dask's `scatter`), round robin; returns their keys.
    ///
    /// Values go in `Put`s of at most [`comm::Limits::max_packet`] bytes each; a value with a
    /// frame over [`comm::Limits::max_frame`] (or larger than a packet) is refused before
    /// anything is sent.
    pub(crate) fn scatter_values(&self, values: Vec<Value>, prefix: &str) -> Result<Vec<Key>, ComputeError> {
        let workers = self.workers();
        if workers.is_empty() {
            return Err(ComputeError::NoWorkers("cannot scatter: the cluster has no workers".into()));
        }
        // Unique across clients in other processes and containers (not pid-based).
        let token = kiln_graph::Tokenizer::new().add(&kiln_graph::unique_token()).finish();
        let keys: Vec<Key> =
            (0..values.len()).map(|i| Key::with_index(format!("{prefix}-{token}"), [i as u32])).collect();
        let mut per_worker: Vec<Vec<(Key, Value)>> = vec![Vec::new(); workers.len()];
        for (i, (key, value)) in keys.iter().cloned().zip(values).enumerate() {
            per_worker[i % workers.len()].push((key, value));
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let limits = comm::limits();
        // Every value is encoded and checked before anything is sent.
        let mut all_puts = Vec::new();
        for (worker, items) in workers.iter().zip(per_worker) {
            let mut puts: Vec<PutBatch> = Vec::new();
            let mut packet_bytes = 0usize;
            for (key, value) in items {
                let nbytes = CodecRegistry::global().nbytes(&value).unwrap_or(64) as u64;
                let (wire, frames) = values_to_wire([(key.clone(), value)], CodecRegistry::global())
                    .map_err(|e| ComputeError::Internal(format!("cannot encode a scattered value: {e}")))?;
                let largest = frames.iter().map(|f| f.len()).max().unwrap_or(0);
                let total: usize = frames.iter().map(|f| f.len()).sum::<usize>() + wire_header_bytes(&wire);
                if largest > limits.max_frame || total > limits.max_packet {
                    let (size, limit) = if largest > limits.max_frame {
                        (largest, limits.max_frame)
                    } else {
                        (total, limits.max_packet)
                    };
                    return Err(ComputeError::OverFrameLimit {
                        what: format!("scattered value {key}"),
                        size: size as u64,
                        limit: limit as u64,
                        setting: if largest > limits.max_frame { "KILN_MAX_FRAME" } else { "KILN_MAX_PACKET" }.into(),
                    });
                }
                // Several values share a `Put` while it stays within the packet limit.
                if puts.is_empty() || packet_bytes + total > limits.max_packet {
                    puts.push(PutBatch::default());
                    packet_bytes = 0;
                }
                packet_bytes += total;
                let put = puts.last_mut().expect("just pushed");
                put.sizes.push((key, nbytes));
                for (key, mut w) in wire {
                    w.first_frame += put.frames.len() as u32;
                    put.wire.push((key, w));
                }
                put.frames.extend(frames);
            }
            all_puts.push((worker, puts));
        }
        // Each batch goes to its worker; one whose connection fails (the worker died or was cut
        // off meanwhile) goes to the next worker instead, since the values are still here.
        let batches: Vec<(usize, PutBatch)> = all_puts
            .into_iter()
            .enumerate()
            .flat_map(|(w, (_, puts))| puts.into_iter().map(move |put| (w, put)))
            .collect();
        let send = |batch: usize, w: usize| {
            let (_, put) = &batches[batch];
            let pool = self.inner.pool.clone();
            let address = workers[w].address.clone();
            let (wire, frames) = (put.wire.clone(), put.frames.clone());
            let tx = tx.clone();
            self.inner.rt().spawn(async move {
                let request = PeerRequest::Put { request: pool.request_id(), values: wire };
                let result = pool.request(&address, request, frames).await;
                let _ = tx.send((batch, w, result));
            });
        };
        for (batch, (w, _)) in batches.iter().enumerate() {
            send(batch, *w);
        }
        let mut tried: Vec<Vec<usize>> = batches.iter().map(|(w, _)| vec![*w]).collect();
        let mut entries = Vec::new();
        let mut pending = batches.len();
        while pending > 0 {
            let (batch, w, result) =
                rx.recv().map_err(|_| ComputeError::Internal("the client runtime stopped".into()))?;
            let worker = workers[w].id;
            match result {
                Ok((PeerReply::Stored { .. }, _)) => {
                    pending -= 1;
                    let sizes = batches[batch].1.sizes.iter().cloned();
                    entries.extend(sizes.map(|(key, nbytes)| ScatteredEntry { key, worker, nbytes }))
                }
                Ok((PeerReply::Error { message, .. }, _)) => {
                    return Err(ComputeError::Worker {
                        worker: worker.to_string(),
                        message: format!("scatter failed: {message}"),
                    });
                }
                Ok(_) => return Err(ComputeError::Internal(format!("scatter to worker {worker}: unexpected reply"))),
                Err(e) => match (0..workers.len()).find(|other| !tried[batch].contains(other)) {
                    Some(next) => {
                        tracing::debug!(
                            "scatter to worker {worker} failed ({e}); sending to worker {}",
                            workers[next].id
                        );
                        tried[batch].push(next);
                        send(batch, next);
                    }
                    None => {
                        return Err(ComputeError::Worker {
                            worker: worker.to_string(),
                            message: format!("scatter failed on every worker, last: {e}"),
                        });
                    }
                },
            }
        }
        self.retain(&keys);
        self.inner.send(ClientToScheduler::Scattered { entries });
        Ok(keys)
    }

    /// Sends a request and waits for the reply with the same id.
    pub(crate) fn ask(&self, make: impl FnOnce(u64) -> ClientToScheduler) -> Result<SchedulerToClient, ComputeError> {
        let request = self.inner.next_request.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.send(make(request));
        let mut reply = None;
        self.wait_until(Some(Duration::from_secs(60)), |s| {
            if s.replies.contains_key(&request) {
                reply = Some(request);
                true
            } else {
                false
            }
        })?;
        Ok(self.inner.lock().replies.remove(&request).expect("reply present"))
    }

    /// The status of a key this client references.
    pub(crate) fn status(&self, key: &Key) -> KeyStatus {
        self.inner.lock().keys.get(key).map(|e| e.status.clone()).unwrap_or(KeyStatus::Cancelled("released".into()))
    }

    /// Refusals the scheduler sent since the last call (e.g. publishing a taken name).
    pub(crate) fn take_refusals(&self) -> Vec<String> {
        std::mem::take(&mut self.inner.lock().refusals)
    }

    pub(crate) fn send(&self, message: ClientToScheduler) {
        self.inner.send(message);
    }

    /// Keys whose status changed to not-pending among `keys` (for `as_completed`).
    pub(crate) fn wait_any(&self, keys: &HashSet<Key>) -> Result<Vec<Key>, ComputeError> {
        let mut done = Vec::new();
        self.wait_until(None, |s| {
            done = keys
                .iter()
                .filter(|k| !matches!(s.keys.get(*k).map(|e| &e.status), Some(KeyStatus::Pending)))
                .cloned()
                .collect();
            !done.is_empty() || keys.is_empty()
        })?;
        Ok(done)
    }
}

impl Inner {
    fn rt(&self) -> &Runtime {
        self.runtime.as_ref().expect("the runtime lives as long as the client")
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn send(&self, message: ClientToScheduler) {
        let _ = self.to_scheduler.send(Outgoing::Message(message));
    }

    fn receive(&self, messages: Vec<SchedulerToClient>) {
        let mut refresh: Vec<Key> = Vec::new();
        let mut state = self.lock();
        for message in messages {
            match message {
                SchedulerToClient::Welcome { client, workers, dashboard } => {
                    state.id = Some(client);
                    state.dashboard = dashboard;
                    for w in &workers {
                        self.pool.know(&w.address, w.write_token);
                    }
                    state.workers = workers.into_iter().map(|w| (w.id, w)).collect();
                }
                SchedulerToClient::WorkerAdded(info) => {
                    self.pool.know(&info.address, info.write_token);
                    state.workers.insert(info.id, info);
                }
                SchedulerToClient::WorkerRemoved(id) => {
                    state.workers.remove(&id);
                    let mut orphaned = Vec::new();
                    for (key, entry) in state.keys.iter_mut() {
                        entry.holders.retain(|h| *h != id);
                        if entry.status == KeyStatus::Finished && entry.holders.is_empty() {
                            // Either copied elsewhere (retirement) or lost and recomputed (the
                            // scheduler then reports it again): ask where it is now.
                            entry.status = KeyStatus::Pending;
                            orphaned.push(key.clone());
                        }
                    }
                    if !orphaned.is_empty() {
                        refresh.extend(orphaned);
                    }
                }
                SchedulerToClient::InMemory { key, holders, .. } => {
                    if let Some(entry) = state.keys.get_mut(&key) {
                        entry.status = KeyStatus::Finished;
                        entry.holders = holders;
                    }
                }
                SchedulerToClient::Erred { key, failure } => {
                    if let Some(entry) = state.keys.get_mut(&key) {
                        entry.status = KeyStatus::Erred(failure);
                    }
                }
                SchedulerToClient::Cancelled { key, reason } => {
                    if let Some(entry) = state.keys.get_mut(&key) {
                        entry.status = KeyStatus::Cancelled(reason);
                    }
                }
                SchedulerToClient::WhoHas { request, holders } if request == REFRESH => {
                    let keys = state.refreshing.pop_front().unwrap_or_default();
                    for (key, holders) in keys.into_iter().zip(holders) {
                        if let Some(entry) = state.keys.get_mut(&key)
                            && entry.status == KeyStatus::Pending
                            && !holders.is_empty()
                        {
                            entry.status = KeyStatus::Finished;
                            entry.holders = holders;
                        }
                    }
                }
                SchedulerToClient::Dataset { request, .. }
                | SchedulerToClient::Progress { request, .. }
                | SchedulerToClient::ClusterLoad { request, .. }
                | SchedulerToClient::WorkerMemory { request, .. }
                | SchedulerToClient::Datasets { request, .. }
                | SchedulerToClient::WhoHas { request, .. } => {
                    state.replies.insert(request, message);
                }
                SchedulerToClient::Refused { request, message } => match request {
                    Some(request) => {
                        state.replies.insert(request, SchedulerToClient::Refused { request: Some(request), message });
                    }
                    None => state.refusals.push(message),
                },
                SchedulerToClient::Shutdown { reason } => {
                    state.closed = Some(format!("the cluster shut down: {reason}"));
                }
            }
        }
        if !refresh.is_empty() {
            // Answers come back in order, so a queue matches them to their questions.
            state.refreshing.push_back(refresh.clone());
            self.send(ClientToScheduler::WhoHas { request: REFRESH, keys: refresh });
        }
        state.news += 1;
        drop(state);
        self.changed.notify_all();
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the connection makes the scheduler drop every reference this client held.
        let keys: Vec<Key> = self.lock().keys.drain().map(|(k, _)| k).collect();
        if !keys.is_empty() {
            self.send(ClientToScheduler::Release { keys });
        }
        // The last reference may be dropped on the runtime's own thread (the reader task);
        // a blocking shutdown is not allowed there.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Scheduler for Client {
    fn compute(&self, graph: &Graph, outputs: &[TaskId]) -> Result<Vec<Value>, ComputeError> {
        let keys = self.submit_graph(graph, outputs)?;
        let result = self.with_progress_bar(&keys, || self.fetch(&keys));
        self.release(&keys);
        result
    }

    fn name(&self) -> String {
        format!("distributed({})", self.inner.address)
    }

    /// The sum of the workers' memory limits, when every worker has one: what the cluster can
    /// hold. `None` with no workers yet or any worker without a limit.
    fn memory_target(&self) -> Option<u64> {
        let state = self.inner.lock();
        if state.workers.is_empty() || state.workers.values().any(|w| w.memory_limit == 0) {
            return None;
        }
        state.workers.values().try_fold(0u64, |sum, w| sum.checked_add(w.memory_limit))
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.inner.lock();
        write!(
            f,
            "Client(scheduler={}, workers={}, keys={})",
            self.inner.address,
            state.workers.len(),
            state.keys.len()
        )
    }
}

impl From<CommError> for ComputeError {
    fn from(e: CommError) -> Self {
        ComputeError::Connection { peer: "the scheduler".into(), message: e.to_string() }
    }
}

/// The user-facing error for a task failure the scheduler reported: the task's own error, or
/// [`ComputeError::KilledWorker`] when the scheduler gave up on it because workers kept dying
/// while running it.
fn failure_to_error(failure: &TaskFailure) -> ComputeError {
    match &failure.kind {
        FailureKind::Raised => ComputeError::task(&failure.key, TaskError::Failed(failure.message.clone())),
        FailureKind::KilledWorker { last_worker, last_address, failures } => ComputeError::KilledWorker {
            key: failure.key.clone(),
            last_worker: format!("worker {last_worker} at {last_address}"),
            failures: *failures,
        },
        FailureKind::NoWorkers { .. } => ComputeError::NoWorkers(format!("task {}: {}", failure.key, failure.message)),
    }
}

#[cfg(test)]
mod failure_tests {
    use kiln_protocol::messages::WorkerId;

    use super::*;

    #[test]
    fn a_task_given_up_after_worker_deaths_surfaces_as_killed_worker() {
        let failure = TaskFailure {
            key: Key::new("x"),
            message: "3 workers died".into(),
            kind: FailureKind::KilledWorker {
                last_worker: WorkerId::new(4),
                last_address: "10.0.0.4:9000".into(),
                failures: 3,
            },
        };
        match failure_to_error(&failure) {
            ComputeError::KilledWorker { key, last_worker, failures } => {
                assert_eq!(key, Key::new("x"));
                assert_eq!(last_worker, "worker 4 at 10.0.0.4:9000");
                assert_eq!(failures, 3);
            }
            other => panic!("expected KilledWorker, got {other:?}"),
        }
    }

    #[test]
    fn a_task_own_error_surfaces_as_a_task_error_with_its_message() {
        let error = failure_to_error(&TaskFailure::raised(Key::new("y"), "boom"));
        assert!(matches!(error, ComputeError::Task { .. }), "{error:?}");
        assert!(error.to_string().contains("boom"), "{error}");
    }
}
