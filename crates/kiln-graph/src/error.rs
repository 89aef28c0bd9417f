//! Error types of the graph core and of computations.

use crate::key::Key;

/// A graph that cannot be run as built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    /// A task names an input key that no task produces.
    #[error("task {task} depends on {missing}, which is not in the graph")]
    MissingDependency {
        /// The task with the dangling input.
        task: Key,
        /// The key nobody produces.
        missing: Key,
    },
    /// The graph has a cycle; `cycle` lists keys along it.
    #[error("the graph has a cycle: {}", format_cycle(.cycle))]
    Cycle {
        /// Keys on the cycle, in dependency order, first repeated at the end.
        cycle: Vec<Key>,
    },
    /// An output or task id that does not belong to this graph.
    #[error("unknown task id {0} (the graph has {1} tasks)")]
    UnknownTask(u32, usize),
    /// A key asked for as an output is not in the graph.
    #[error("output key {0} is not in the graph")]
    UnknownKey(Key),
    /// More tasks than the dense 32-bit ids can name.
    #[error("graph too large: more than {} tasks", u32::MAX)]
    TooLarge,
    /// An order attached to a graph does not fit it (wrong length, or a task before its input).
    #[error("invalid planned order: {0}")]
    InvalidOrder(String),
    /// A shuffle's shape is impossible (no partitions, `max_branch < 2`, too many partitions).
    #[error("invalid shuffle: {0}")]
    InvalidShuffle(String),
    /// A collection cannot author its tasks because it was built from invalid operations (a
    /// shape mismatch, an axis out of range, ...). Computing it reports
    /// [`ComputeError::InvalidCollection`] with the same cause.
    #[error("invalid {collection}: {cause}")]
    InvalidCollection {
        /// What kind of collection ("array", "dataframe", ...).
        collection: &'static str,
        /// Why it is invalid: the collection's own error.
        #[source]
        cause: SharedError,
    },
}

impl GraphError {
    /// The collection named `collection` is invalid because of `cause`.
    pub fn invalid(collection: &'static str, cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        GraphError::InvalidCollection { collection, cause: SharedError::new(cause) }
    }
}

fn format_cycle(cycle: &[Key]) -> String {
    cycle.iter().map(|k| k.to_string()).collect::<Vec<_>>().join(" -> ")
}

/// Why one task failed. The scheduler attaches the task's key (see [`ComputeError::Task`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskError {
    /// The kernel returned an error.
    #[error("{0}")]
    Failed(String),
    /// The kernel panicked; the panic message is kept.
    #[error("panicked: {0}")]
    Panicked(String),
    /// An input had another type than the kernel expects.
    #[error("input {position}: expected {expected}, found {found}")]
    TypeMismatch {
        /// Which input (0-based).
        position: usize,
        /// The type the kernel expects.
        expected: &'static str,
        /// The type it got.
        found: &'static str,
    },
    /// A step inside a fused task failed; `key` names the original task.
    #[error("{error}")]
    At {
        /// The key of the task that was fused away.
        key: Key,
        /// What went wrong there.
        error: Box<TaskError>,
    },
    /// The kernel was called with the wrong number of inputs.
    #[error("expected {expected} inputs, got {found}")]
    Arity {
        /// How many the kernel takes.
        expected: usize,
        /// How many it got.
        found: usize,
    },
    /// The kernel would allocate more than its executor's memory budget (see
    /// [`crate::memory`]): the task fails instead of the process aborting.
    #[error(transparent)]
    TooLarge(#[from] crate::memory::TooLarge),
}

impl TaskError {
    /// A failure with a message.
    pub fn msg(message: impl std::fmt::Display) -> Self {
        TaskError::Failed(message.to_string())
    }
}

/// Why a computation did not produce its results.
///
/// Each variant is a kind of failure a caller may want to react to differently (retry on a
/// connection loss, report a task's own error, fix a collection built wrong). Only
/// [`ComputeError::Internal`] carries a bare message: it means the engine itself broke.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ComputeError {
    /// A task failed; the computation stopped.
    #[error("task {key} failed: {error}")]
    Task {
        /// The failing task.
        key: Key,
        /// What went wrong.
        error: TaskError,
    },
    /// The graph is invalid. (An invalid collection is reported as
    /// [`ComputeError::InvalidCollection`] instead, never as this variant.)
    #[error(transparent)]
    Graph(GraphError),
    /// The collection asked for was built from invalid operations (a shape mismatch, an axis
    /// out of range, ...); nothing was computed.
    #[error("invalid {collection}: {cause}")]
    InvalidCollection {
        /// What kind of collection ("array", "dataframe", ...).
        collection: &'static str,
        /// Why it is invalid: the collection's own error.
        #[source]
        cause: SharedError,
    },
    /// The computation was cancelled: by the caller, or (with `key`) because the cluster
    /// cancelled one of its tasks.
    #[error("{}", cancelled_message(.key, .reason))]
    Cancelled {
        /// The cancelled task, when a cluster reported it.
        key: Option<Key>,
        /// Why, when known.
        reason: Option<String>,
    },
    /// A result had another type than the caller asked for.
    #[error("result {key}: expected {expected}, found {found}")]
    ResultType {
        /// The output key.
        key: Key,
        /// The type asked for.
        expected: &'static str,
        /// The type produced.
        found: &'static str,
    },
    /// A task cannot be sent to a cluster: its function or a literal has no portable form.
    #[error("{0}")]
    NotPortable(#[from] crate::portable::PortableError),
    /// A connection to a scheduler or worker failed or was lost.
    #[error("connection to {peer}: {message}")]
    Connection {
        /// Who was on the other end ("the scheduler", a worker's address).
        peer: String,
        /// What happened.
        message: String,
    },
    /// An operation did not finish within its deadline.
    #[error("{operation} timed out after {after:?}")]
    Timeout {
        /// What was waited for.
        operation: String,
        /// How long was waited.
        after: std::time::Duration,
    },
    /// A task's worker died while running it too many times; the task is considered the cause.
    #[error(
        "task {key} was running on {failures} workers that died, the last {last_worker}; it is marked as the cause and not retried"
    )]
    KilledWorker {
        /// The task.
        key: Key,
        /// The last worker that died running it.
        last_worker: String,
        /// How many workers died running it.
        failures: u32,
    },
    /// No worker is available to run the work (none connected, or all retired).
    #[error("no workers: {0}")]
    NoWorkers(String),
    /// A worker refused or failed a request (a fetch, a scatter) other than running a task.
    #[error("worker {worker}: {message}")]
    Worker {
        /// The worker's address.
        worker: String,
        /// What it said.
        message: String,
    },
    /// A result or value could not be encoded or decoded.
    #[error("cannot decode {key}: {message}")]
    Codec {
        /// The value's key.
        key: Key,
        /// The codec's error.
        message: String,
    },
    /// The result would not fit in the memory of the process that assembles it (checked
    /// before anything is computed).
    #[error(transparent)]
    TooLarge(crate::memory::TooLarge),
    /// A name looked up on a cluster (a published dataset) does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The scheduler refused a request (a dataset name already taken, ...).
    #[error("the scheduler refused: {0}")]
    Refused(String),
    /// A value or graph is larger than one frame of the connection may carry; nothing was sent.
    #[error(
        "{what} is {} ({size} bytes), more than the frame limit of {} ({limit} bytes), so it \
         cannot be sent: scatter it in smaller pieces, or write it to storage (e.g. Zarr) and read \
         it on the workers, or raise the limit with {setting} on the client, the scheduler and \
         the workers",
        human_bytes(*.size),
        human_bytes(*.limit)
    )]
    OverFrameLimit {
        /// What was too large ("task x's literal input 0", "scattered value y").
        what: String,
        /// Its size in bytes.
        size: u64,
        /// The limit in bytes.
        limit: u64,
        /// The setting that raises the limit.
        setting: String,
    },
    /// A task result could not be spilled to disk (a full disk, an unwritable spill directory)
    /// or read back from its spill file. Nothing of the failed file is left behind.
    #[error("{action} the result of {key} ({}): {message}", .path.display())]
    Spill {
        /// The task whose result was being spilled or read back.
        key: Key,
        /// What failed: "cannot spill" or "cannot read back".
        action: &'static str,
        /// The spill file or directory.
        path: std::path::PathBuf,
        /// The operating system's or the codec's error, and what to do about it.
        message: String,
    },
    /// The engine itself broke (a scheduler thread panicked, a protocol invariant failed): a bug
    /// in kiln, never a property of the user's computation.
    #[error("internal error: {0}")]
    Internal(String),
}

/// `1.2 GB`: decimal units, as a user reads a value's size.
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} bytes") } else { format!("{value:.1} {}", UNITS[unit]) }
}

impl From<GraphError> for ComputeError {
    /// Lifts a graph error; an invalid collection becomes [`ComputeError::InvalidCollection`]
    /// with its cause, so callers match one variant whichever layer noticed it.
    fn from(error: GraphError) -> Self {
        match error {
            GraphError::InvalidCollection { collection, cause } => {
                ComputeError::InvalidCollection { collection, cause }
            }
            other => ComputeError::Graph(other),
        }
    }
}

fn cancelled_message(key: &Option<Key>, reason: &Option<String>) -> String {
    match (key, reason) {
        (None, None) => "computation cancelled".to_string(),
        (None, Some(r)) => format!("computation cancelled: {r}"),
        (Some(k), None) => format!("{k} was cancelled"),
        (Some(k), Some(r)) => format!("{k} was cancelled: {r}"),
    }
}

/// An error shared between clones of a [`ComputeError`]: the cause of an invalid collection,
/// kept typed so callers can downcast it (`err.source()`), compared by message.
#[derive(Clone)]
pub struct SharedError(pub std::sync::Arc<dyn std::error::Error + Send + Sync>);

impl SharedError {
    /// Wraps an error.
    pub fn new(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        SharedError(std::sync::Arc::new(error))
    }

    /// The wrapped error as `E`, when it is one.
    pub fn downcast_ref<E: std::error::Error + 'static>(&self) -> Option<&E> {
        self.0.downcast_ref::<E>()
    }
}

impl std::fmt::Debug for SharedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&*self.0, f)
    }
}

impl std::fmt::Display for SharedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&*self.0, f)
    }
}

impl std::error::Error for SharedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl PartialEq for SharedError {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0) || self.0.to_string() == other.0.to_string()
    }
}

// Equality by message is reflexive, symmetric and transitive.
impl Eq for SharedError {}

impl ComputeError {
    /// The error for task `key` failing with `error`, naming the innermost task when the
    /// failure happened inside a fused task.
    pub fn task(key: &Key, error: TaskError) -> Self {
        match error {
            TaskError::At { key, error } => ComputeError::task(&key, *error),
            error => ComputeError::Task { key: key.clone(), error },
        }
    }

    /// The computation was cancelled by its caller.
    pub fn cancelled() -> Self {
        ComputeError::Cancelled { key: None, reason: None }
    }

    /// The collection named `collection` is invalid because of `cause`.
    pub fn invalid(collection: &'static str, cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        ComputeError::InvalidCollection { collection, cause: SharedError::new(cause) }
    }

    /// The key of the task this error is about, when there is one.
    pub fn key(&self) -> Option<&Key> {
        match self {
            ComputeError::Task { key, .. }
            | ComputeError::ResultType { key, .. }
            | ComputeError::KilledWorker { key, .. }
            | ComputeError::Codec { key, .. } => Some(key),
            ComputeError::Cancelled { key, .. } => key.as_ref(),
            _ => None,
        }
    }

    /// Whether this is a cancellation.
    pub fn is_cancelled(&self) -> bool {
        matches!(self, ComputeError::Cancelled { .. })
    }
}
