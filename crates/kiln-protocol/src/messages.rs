//! The messages that travel in packet headers.
//!
//! Every packet's header is a postcard-encoded `Vec` of one of the message enums below (one enum
//! per direction), so small messages are batched: a sender drains what is queued and writes it
//! as one packet. Values (task results, scattered data) never go inside a header: a
//! [`WireValue`] names its codec and carries a small header, and points at the packet's payload
//! frames, which hold the raw buffers.
//!
//! Directions:
//! - client → scheduler: [`ClientToScheduler`]; scheduler → client: [`SchedulerToClient`]
//! - worker → scheduler: [`WorkerToScheduler`]; scheduler → worker: [`SchedulerToWorker`]
//! - peer → worker (data plane): [`PeerRequest`]; worker → peer: [`PeerReply`]

use kiln_graph::portable::{InputSpec, TaskSpec};
use kiln_graph::{KernelSpec, Key};
use serde::{Deserialize, Serialize};

pub use crate::ids::{ClientId, WorkerId};

/// A task's scheduling priority: smaller runs first. The first part orders submissions (earlier
/// graphs first), the second is the task's place in the graph's static order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Priority {
    /// Submission generation (assigned by the scheduler).
    pub generation: u32,
    /// Static order within the submitted graph (assigned by the client).
    pub order: u32,
}

/// A worker as others see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// The scheduler-assigned id.
    pub id: WorkerId,
    /// Where peers and clients fetch its data (`host:port`).
    pub address: String,
    /// A human name (`--name`, or the address).
    pub name: String,
    /// Threads that run tasks.
    pub nthreads: u32,
    /// Memory limit in bytes (0: none).
    pub memory_limit: u64,
    /// What a peer must present ([`PeerRequest::Authenticate`]) before the worker takes
    /// values from it: the scheduler hands it only to the clients and workers it knows.
    pub write_token: WriteToken,
}

/// A worker's secret for writes to its data port (a client's scatter): 128 random bits the
/// worker draws at start and registers with the scheduler, which passes it on in
/// [`WorkerInfo`]. A peer that was not told it cannot place or overwrite values there.
///
/// `Debug` does not print it, so logging a `WorkerInfo` does not leak it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WriteToken(pub u128);

impl std::fmt::Debug for WriteToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WriteToken(…)")
    }
}

/// Why a task failed, as data that travels to the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskFailure {
    /// The task that failed (for a dependent that erred because of it, the original task).
    pub key: Key,
    /// The error message.
    pub message: String,
    /// What kind of failure it is, so the client can tell a task's own error from a task the
    /// scheduler gave up on because workers kept dying under it.
    pub kind: FailureKind,
}

impl TaskFailure {
    /// A task's own error (its kernel failed, or it could not be run), with its message.
    pub fn raised(key: Key, message: impl Into<String>) -> Self {
        TaskFailure { key, message: message.into(), kind: FailureKind::Raised }
    }
}

/// The kind of a [`TaskFailure`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum FailureKind {
    /// The task itself failed; the message says why.
    #[default]
    Raised,
    /// The task was running on `failures` workers that died (the scheduler's
    /// `allowed_failures`), the last one `last_worker`; it is suspected of killing them and is
    /// not tried again.
    KilledWorker {
        /// The last worker that died while running it.
        last_worker: WorkerId,
        /// That worker's address, for the user (the worker is gone when the failure arrives).
        last_address: String,
        /// How many workers died while running it.
        failures: u32,
    },
    /// No worker could run the task for the scheduler's no-workers timeout (there was no
    /// worker, or every worker was retiring); the message says which.
    NoWorkers {
        /// How long the task waited for a worker, in milliseconds.
        waited_ms: u64,
    },
}

/// An encoded value: the codec's tag and header inline, its payload in packet frames
/// `first_frame .. first_frame + frame_count`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireValue {
    /// The codec tag.
    pub tag: String,
    /// The codec's small header.
    pub header: Vec<u8>,
    /// Index of the value's first payload frame in the packet.
    pub first_frame: u32,
    /// How many payload frames belong to the value.
    pub frame_count: u32,
}

/// One task submitted by a client: its spec plus its place in the graph's static order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubmittedTask {
    /// What to run.
    pub spec: TaskSpec,
    /// Static order (smaller first).
    pub order: u32,
}

/// Client → scheduler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ClientToScheduler {
    /// First message on a client's connection: until it arrives the scheduler treats the
    /// connection as a stranger's (small frames only, a deadline, counted against the bound on
    /// unregistered connections). The server consumes it; the state never sees it.
    Register {
        /// A human name.
        name: String,
    },
    /// New tasks, and the keys this client wants (it holds a reference on each until it sends
    /// [`ClientToScheduler::Release`]). Tasks whose keys the scheduler already knows are not
    /// replaced: equal keys mean equal computations.
    UpdateGraph {
        /// The tasks, dependencies before dependents.
        tasks: Vec<SubmittedTask>,
        /// Keys the client wants results (or references) for.
        wanted: Vec<Key>,
    },
    /// Takes references on keys the scheduler already has (e.g. a published dataset).
    Want {
        /// The keys.
        keys: Vec<Key>,
    },
    /// Drops this client's references; unreferenced results are freed.
    Release {
        /// The keys.
        keys: Vec<Key>,
    },
    /// Stops computing keys (and what only they need); their futures end as cancelled.
    Cancel {
        /// The keys.
        keys: Vec<Key>,
    },
    /// Data the client placed on workers directly ([`PeerRequest::Put`]); the client wants it.
    Scattered {
        /// Key, holder, size in bytes, type name.
        entries: Vec<ScatteredEntry>,
    },
    /// Names keys so other clients can find them; the scheduler holds a reference on them.
    Publish {
        /// The dataset's name.
        name: String,
        /// Its keys.
        keys: Vec<Key>,
        /// Replace an existing dataset of that name instead of refusing.
        overwrite: bool,
    },
    /// Removes a published name (and the scheduler's references).
    Unpublish {
        /// The dataset's name.
        name: String,
    },
    /// Asks for a published dataset's keys; answered by [`SchedulerToClient::Dataset`].
    GetDataset {
        /// Matches the answer to the question.
        request: u64,
        /// The dataset's name.
        name: String,
    },
    /// Asks for the names of published datasets; answered by [`SchedulerToClient::Datasets`].
    ListDatasets {
        /// Matches the answer to the question.
        request: u64,
    },
    /// Asks where keys are held now; answered by [`SchedulerToClient::WhoHas`].
    WhoHas {
        /// Matches the answer to the question.
        request: u64,
        /// The keys.
        keys: Vec<Key>,
    },
    /// Asks for every worker's last reported memory; answered by
    /// [`SchedulerToClient::WorkerMemory`].
    WorkerMemory {
        /// Matches the answer to the question.
        request: u64,
    },
    /// Retires workers gracefully: they get no new work, their unique results are copied to
    /// other workers, then they are told to leave. Nothing is lost.
    RetireWorkers {
        /// The workers.
        workers: Vec<WorkerId>,
    },
    /// Asks how busy the cluster is; answered by [`SchedulerToClient::ClusterLoad`].
    ClusterLoad {
        /// Matches the answer to the question.
        request: u64,
    },
    /// Stops the whole cluster (workers and scheduler).
    ShutdownCluster,
    /// Asks how many tasks of each name (a key without its index) have finished; answered by
    /// [`SchedulerToClient::Progress`] (a progress bar polls this).
    Progress {
        /// Matches the answer to the question.
        request: u64,
        /// The task names.
        names: Vec<String>,
    },
}

/// A worker's memory as it last reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryReport {
    /// The worker.
    pub worker: WorkerId,
    /// Bytes of results held in memory.
    pub managed: u64,
    /// Bytes of results spilled to disk.
    pub spilled: u64,
    /// The worker process's resident set size.
    pub process: u64,
}

/// One scattered value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScatteredEntry {
    /// The key the client chose.
    pub key: Key,
    /// The worker that holds it.
    pub worker: WorkerId,
    /// Its size in bytes.
    pub nbytes: u64,
}

/// Scheduler → client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SchedulerToClient {
    /// First message: the client's id and the current workers.
    Welcome {
        /// The client's id.
        client: ClientId,
        /// The workers now.
        workers: Vec<WorkerInfo>,
        /// The scheduler's dashboard (`http://host:port/status`), when it serves one. The state
        /// machine leaves it `None`; the server fills it in as it sends the message.
        dashboard: Option<String>,
    },
    /// A worker joined.
    WorkerAdded(WorkerInfo),
    /// A worker left.
    WorkerRemoved(WorkerId),
    /// A wanted key is in memory on these workers.
    InMemory {
        /// The key.
        key: Key,
        /// Its holders.
        holders: Vec<WorkerId>,
        /// Its size in bytes.
        nbytes: u64,
    },
    /// A wanted key failed (or depends on a task that failed).
    Erred {
        /// The key.
        key: Key,
        /// The original failure.
        failure: TaskFailure,
    },
    /// A wanted key was cancelled or lost and will not be computed.
    Cancelled {
        /// The key.
        key: Key,
        /// Why.
        reason: String,
    },
    /// The answer to [`ClientToScheduler::GetDataset`]: `None` when nothing has that name.
    Dataset {
        /// The question's id.
        request: u64,
        /// The dataset's keys.
        keys: Option<Vec<Key>>,
    },
    /// The answer to [`ClientToScheduler::ListDatasets`].
    Datasets {
        /// The question's id.
        request: u64,
        /// The published names.
        names: Vec<String>,
    },
    /// The answer to [`ClientToScheduler::WhoHas`]: holders per key (empty: not in memory).
    WhoHas {
        /// The question's id.
        request: u64,
        /// Holders, in the order asked.
        holders: Vec<Vec<WorkerId>>,
    },
    /// The answer to [`ClientToScheduler::Progress`]: per name asked, tasks finished while
    /// the scheduler knew the name, or `None` for a name it does not know (all of its tasks
    /// are done and forgotten, or were released).
    Progress {
        /// The question's id.
        request: u64,
        /// Per name, in the order asked.
        done: Vec<Option<u64>>,
    },
    /// The answer to [`ClientToScheduler::ClusterLoad`].
    ClusterLoad {
        /// The question's id.
        request: u64,
        /// Ready tasks waiting in the scheduler: root tasks for a worker slot, and tasks no
        /// worker can run (none there, or every one retiring).
        queued: u64,
        /// Tasks assigned to workers and not finished.
        processing: u64,
        /// Tasks waiting for inputs.
        waiting: u64,
        /// Workers (including retiring ones).
        workers: u64,
        /// Threads of the workers that take new work.
        threads: u64,
    },
    /// The answer to [`ClientToScheduler::WorkerMemory`].
    WorkerMemory {
        /// The question's id.
        request: u64,
        /// One report per worker.
        workers: Vec<MemoryReport>,
    },
    /// A request the scheduler refused (e.g. publishing an existing name).
    Refused {
        /// The question's id, when the request had one.
        request: Option<u64>,
        /// Why.
        message: String,
    },
    /// The scheduler is shutting down.
    Shutdown {
        /// Why.
        reason: String,
    },
}

/// Worker → scheduler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WorkerToScheduler {
    /// First message: the worker's data address and resources.
    Register {
        /// Where peers fetch data (`host:port`).
        address: String,
        /// A human name.
        name: String,
        /// Threads that run tasks.
        nthreads: u32,
        /// Memory limit in bytes (0: none).
        memory_limit: u64,
        /// The secret peers present before writing to this worker (see [`WriteToken`]).
        write_token: WriteToken,
    },
    /// A task finished; its result is held here.
    Finished {
        /// The task.
        key: Key,
        /// Result size in bytes.
        nbytes: u64,
        /// Run time in microseconds (without fetching inputs).
        duration_us: u64,
        /// When the kernel started, in microseconds since the Unix epoch on the worker's
        /// clock (for the dashboard's task stream).
        started_us: u64,
        /// Which of the worker's compute threads ran it (0-based).
        thread: u32,
    },
    /// A task failed.
    Failed {
        /// The task.
        key: Key,
        /// The failure (its key may be a fused-away task inside this one).
        failure: TaskFailure,
    },
    /// A dependency could not be fetched from any of the holders named.
    MissingDependency {
        /// The task that needed it.
        key: Key,
        /// The dependency.
        missing: Key,
        /// Holders that did not have it.
        tried: Vec<WorkerId>,
    },
    /// The worker received data directly (a client's scatter).
    Received {
        /// Key and size in bytes.
        entries: Vec<(Key, u64)>,
    },
    /// Liveness and memory figures.
    Heartbeat {
        /// Bytes held by results in memory.
        managed_bytes: u64,
        /// Bytes of results spilled to disk.
        spilled_bytes: u64,
        /// The process's resident set size.
        process_bytes: u64,
        /// The process's CPU use since the last heartbeat, in percent of one core.
        cpu_percent: f32,
        /// Transfers and spills since the last heartbeat, for observers (bounded by the
        /// worker: at most [`MAX_ACTIVITY_PER_HEARTBEAT`] records, the rest counted in
        /// `activity_dropped`).
        activity: Vec<ActivityRecord>,
        /// Activity records the worker did not send because the bound was reached.
        activity_dropped: u32,
        /// Bytes the worker's process read from its kiln connections since it started (all of
        /// them: scheduler, peers, clients); a total, so a lost heartbeat loses no bytes.
        network_read_bytes: u64,
        /// Bytes the worker's process wrote to its kiln connections since it started.
        network_written_bytes: u64,
    },
    /// The answer to [`SchedulerToWorker::Steal`]: `stolen` when the task had not started and
    /// is dropped here (it will run elsewhere), else it runs here as planned.
    StealResponse {
        /// The task.
        key: Key,
        /// Whether this worker gave it up.
        stolen: bool,
    },
    /// The worker stopped (`paused`) or resumed starting tasks: its memory is over the pause
    /// threshold, or a spill write failed while memory is over the target. A paused worker
    /// still serves its data but gets no new tasks.
    Paused {
        /// Whether the worker is paused now.
        paused: bool,
        /// Why, for the scheduler's log (e.g. "process memory 190 MB > 80 % of 200 MB limit").
        reason: String,
    },
    /// The worker is leaving cleanly; tasks it had not started go back to the scheduler.
    Leaving {
        /// Tasks handed back.
        returned: Vec<Key>,
    },
}

/// The most [`ActivityRecord`]s one heartbeat carries: a burst of tiny transfers must not make
/// heartbeats large.
pub const MAX_ACTIVITY_PER_HEARTBEAT: usize = 512;

/// Something a worker did on its own, reported with its next heartbeat for observers (the
/// dashboard's task stream marks transfers and spills). Changes no scheduling decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivityRecord {
    /// What it was.
    pub kind: ActivityKind,
    /// The value concerned.
    pub key: Key,
    /// Its size in bytes.
    pub nbytes: u64,
    /// When it started, in microseconds since the Unix epoch on the worker's clock.
    pub started_us: u64,
    /// How long it took, in microseconds.
    pub duration_us: u64,
}

/// The kind of an [`ActivityRecord`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActivityKind {
    /// The value was fetched from the peer `from`.
    Transfer {
        /// The peer that sent it.
        from: WorkerId,
    },
    /// The value was written to disk.
    Spill,
    /// The value was read back from disk.
    Unspill,
}

/// Scheduler → worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SchedulerToWorker {
    /// First message: the worker's id and its peers.
    Registered {
        /// The worker's id.
        id: WorkerId,
        /// All workers (including this one).
        workers: Vec<WorkerInfo>,
    },
    /// A peer joined.
    WorkerAdded(WorkerInfo),
    /// A peer left.
    WorkerRemoved(WorkerId),
    /// Run a task once its inputs are here.
    Compute(ComputeTask),
    /// Give up this task if it has not started (work stealing); answered by
    /// [`WorkerToScheduler::StealResponse`].
    Steal {
        /// The task.
        key: Key,
    },
    /// Fetch these values from the workers named and keep them (a retiring worker's unique
    /// results moving here); each arrival is reported with [`WorkerToScheduler::Received`].
    Acquire {
        /// The keys, who holds them and their sizes.
        keys: Vec<WhoHas>,
    },
    /// Forget these results (or tasks not started yet).
    Free {
        /// The keys.
        keys: Vec<Key>,
    },
    /// Finish or hand back work and exit.
    Close {
        /// Why.
        reason: String,
    },
}

/// A value a worker may have to fetch: the workers that hold it and its size, which the
/// worker weighs against the bytes it lets arrive at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhoHas {
    /// The value's key.
    pub key: Key,
    /// The workers holding it, in the order to ask them.
    pub holders: Vec<WorkerId>,
    /// Its size in bytes as its producer reported it.
    pub nbytes: u64,
}

/// A task a worker is to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComputeTask {
    /// The task's key.
    pub key: Key,
    /// What it runs.
    pub kernel: KernelSpec,
    /// Its inputs (dependencies by key, literals encoded).
    pub inputs: Vec<InputSpec>,
    /// Where each dependency that this worker does not hold can be fetched, and its size.
    pub who_has: Vec<WhoHas>,
    /// Run order among the worker's ready tasks.
    pub priority: Priority,
}

/// Peer (worker or client) → worker: the data plane.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PeerRequest {
    /// Proves that the scheduler told this peer about the worker: until a peer presents the
    /// worker's [`WriteToken`], the worker refuses its `Put`s and reads only small frames from
    /// it. Not answered; a wrong token closes the connection.
    Authenticate {
        /// The worker's token, as the scheduler gave it in [`WorkerInfo`].
        token: WriteToken,
    },
    /// Send these values.
    Get {
        /// Matches the answer.
        request: u64,
        /// The keys.
        keys: Vec<Key>,
    },
    /// Store these values (a client's scatter); their payloads follow in the packet's frames.
    /// Only from a peer that has authenticated ([`PeerRequest::Authenticate`]).
    Put {
        /// Matches the answer.
        request: u64,
        /// The values.
        values: Vec<(Key, WireValue)>,
    },
}

/// Worker → peer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PeerReply {
    /// The values asked for that this worker holds (payloads in the packet's frames), and the
    /// keys it does not hold.
    Data {
        /// The question's id.
        request: u64,
        /// Found values.
        values: Vec<(Key, WireValue)>,
        /// Keys not held here.
        missing: Vec<Key>,
    },
    /// The values of a [`PeerRequest::Put`] are stored.
    Stored {
        /// The question's id.
        request: u64,
    },
    /// A request that could not be served (e.g. a value that does not decode).
    Error {
        /// The question's id.
        request: u64,
        /// Why.
        message: String,
    },
}
