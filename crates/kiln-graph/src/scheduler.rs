//! The `Scheduler` trait: how collections ask for graphs to be run, without knowing by whom.
//!
//! The local threaded scheduler and the distributed client both implement it and give the
//! same answers. A process-wide default can be installed; collections' `compute()` uses it.

use std::sync::{Arc, RwLock};

use crate::error::ComputeError;
use crate::graph::{Graph, TaskId};
use crate::value::Value;

/// Runs graphs.
pub trait Scheduler: Send + Sync {
    /// Runs what `outputs` need and returns their values, in the order asked.
    ///
    /// # Errors
    /// The first failing task (with its key and message), cancellation, or the engine's own
    /// failure.
    fn compute(&self, graph: &Graph, outputs: &[TaskId]) -> Result<Vec<Value>, ComputeError>;

    /// A short name for logs, e.g. `"threads(2)"`.
    fn name(&self) -> String;

    /// How many bytes of task results this scheduler aims to hold at once, when it has such a
    /// target (a local scheduler's memory budget; a cluster's summed worker limits). Graph
    /// optimizations that trade work for memory, such as reading a stored block again instead
    /// of holding it, aim below it. `None`: no target known.
    fn memory_target(&self) -> Option<u64> {
        None
    }
}

static DEFAULT: RwLock<Option<Arc<dyn Scheduler>>> = RwLock::new(None);

/// Installs the process-wide default scheduler (e.g. a distributed client), returning the one
/// it replaces.
pub fn set_default(scheduler: Arc<dyn Scheduler>) -> Option<Arc<dyn Scheduler>> {
    DEFAULT.write().unwrap_or_else(|p| p.into_inner()).replace(scheduler)
}

/// Removes the process-wide default, returning it.
pub fn clear_default() -> Option<Arc<dyn Scheduler>> {
    DEFAULT.write().unwrap_or_else(|p| p.into_inner()).take()
}

/// The installed default, if any.
pub fn default_scheduler() -> Option<Arc<dyn Scheduler>> {
    DEFAULT.read().unwrap_or_else(|p| p.into_inner()).clone()
}
