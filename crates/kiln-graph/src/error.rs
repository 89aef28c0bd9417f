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
}

impl TaskError {
    /// A failure with a message.
    pub fn msg(message: impl std::fmt::Display) -> Self {
        TaskError::Failed(message.to_string())
    }
}

/// Why a computation did not produce its results.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ComputeError {
    /// A task failed; the computation stopped.
    #[error("task {key} failed: {error}")]
    Task {
        /// The failing task.
        key: Key,
        /// What went wrong.
        error: TaskError,
    },
    /// The graph is invalid.
    #[error(transparent)]
    Graph(#[from] GraphError),
    /// The caller cancelled the computation.
    #[error("computation cancelled")]
    Cancelled,
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
    /// The scheduler itself failed (e.g. lost its connection).
    #[error("scheduler error: {0}")]
    Scheduler(String),
}

impl ComputeError {
    /// The error for task `key` failing with `error`, naming the innermost task when the
    /// failure happened inside a fused task.
    pub fn task(key: &Key, error: TaskError) -> Self {
        match error {
            TaskError::At { key, error } => ComputeError::task(&key, *error),
            error => ComputeError::Task { key: key.clone(), error },
        }
    }

    /// The key of the failing task, when a task failed.
    pub fn key(&self) -> Option<&Key> {
        match self {
            ComputeError::Task { key, .. } | ComputeError::ResultType { key, .. } => Some(key),
            _ => None,
        }
    }
}
