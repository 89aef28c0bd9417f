//! The threaded single-machine scheduler.
//!
//! It runs a [`Graph`] on a pool of threads with microseconds of overhead per task:
//!
//! - ready tasks run in the graph's static priority order ([`kiln_graph::order`]), and a thread
//!   that makes a reader ready runs it next (depth-first), so memory stays low;
//! - a value is dropped the moment its last reader has run; only the requested outputs are kept;
//! - the first failing (or panicking) task stops the run promptly; the error names its key;
//! - a [`CancelToken`] or dropping a [`ComputeHandle`] stops it too; no thread outlives a run;
//! - results held at once stay under a memory limit ([`LocalScheduler::memory_limit`], by default
//!   half the machine's memory): above three quarters of it no new source task starts unless
//!   nothing else can run, and past it the values needed last are spilled to disk (LZ4, as the
//!   distributed workers do) and read back when needed. [`LocalScheduler::last_run_stats`] tells
//!   the peak and what was spilled.
//!
//! ```
//! use std::sync::Arc;
//! use kiln_graph::{GraphBuilder, Key, Arg, Kernel, kernel::func2};
//! use kiln_local::LocalScheduler;
//! let add: Arc<dyn Kernel> = Arc::new(func2("add", |a: &i64, b: &i64| a + b));
//! let mut g = GraphBuilder::new();
//! let x = g.add(Key::new("x"), add.clone(), [Arg::literal(1i64), Arg::literal(2i64)]).unwrap();
//! let y = g.add(Key::new("y"), add, [Arg::Task(x), Arg::Task(x)]).unwrap();
//! let graph = g.build().unwrap();
//! let out = LocalScheduler::threads(2).run(&graph, &[y]).unwrap();
//! assert_eq!(*out[0].downcast_ref::<i64>().unwrap(), 6);
//! ```
#![deny(missing_docs)]

pub mod allocator;
mod memory;
pub mod progress;
mod run;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use kiln_graph::{ComputeError, Graph, Key, Scheduler, TaskError, TaskId, Value};
pub use memory::{RunStats, UNKNOWN_SIZE};

/// Whether to draw a progress bar on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Progress {
    /// When stderr is a terminal and the run lasts longer than half a second.
    #[default]
    Auto,
    /// Always (after half a second), even when stderr is not a terminal: there, as a plain line
    /// a second (for logs).
    Always,
    /// Never.
    Never,
}

/// Hooks called as tasks start and finish, for diagnostics. They run on the worker threads,
/// inside the per-task path: keep them cheap.
pub trait Callbacks: Send + Sync {
    /// A task is about to run.
    fn on_start(&self, _key: &Key) {}
    /// A task finished; `error` is set when it failed.
    fn on_finish(&self, _key: &Key, _error: Option<&TaskError>) {}
    /// A task succeeded and its result measures `nbytes` (as its codec counts it;
    /// [`UNKNOWN_SIZE`] for values without a codec). Called right after
    /// [`Callbacks::on_finish`], on the same thread.
    fn on_result(&self, _key: &Key, _nbytes: u64) {}
}

/// Callbacks every run uses that has none of its own ([`LocalScheduler::with_callbacks`]).
/// Read once per run, so a run without callbacks pays nothing per task.
static GLOBAL_CALLBACKS: RwLock<Option<Arc<dyn Callbacks>>> = RwLock::new(None);

/// Installs (or with `None` removes) callbacks for every local run that has none of its own,
/// including runs of schedulers built elsewhere (the default one `compute()` uses); returns
/// the ones replaced, so a caller can put them back. Runs already going keep what they had.
/// This is how a performance report records work it did not set up.
pub fn set_global_callbacks(callbacks: Option<Arc<dyn Callbacks>>) -> Option<Arc<dyn Callbacks>> {
    let mut slot = GLOBAL_CALLBACKS.write().unwrap_or_else(|p| p.into_inner());
    std::mem::replace(&mut *slot, callbacks)
}

/// The callbacks a run of `scheduler` uses.
fn callbacks_for(scheduler: &LocalScheduler) -> Option<Arc<dyn Callbacks>> {
    scheduler.callbacks.clone().or_else(|| GLOBAL_CALLBACKS.read().unwrap_or_else(|p| p.into_inner()).clone())
}

/// A flag that stops a run: tasks already running finish, no new task starts, and the run
/// returns [`ComputeError::Cancelled`].
#[derive(Clone, Default, Debug)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A token that is not cancelled.
    pub fn new() -> Self {
        Self::default()
    }
    /// Cancels every run watching this token.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
    /// Whether [`CancelToken::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// The threaded scheduler. Cheap to build; each run starts its own scoped threads.
#[derive(Clone)]
pub struct LocalScheduler {
    threads: usize,
    progress: Progress,
    callbacks: Option<Arc<dyn Callbacks>>,
    cancel: Option<CancelToken>,
    memory_limit: Option<u64>,
    spill_dir: Option<PathBuf>,
    /// The statistics of the last run, shared by clones (a spawned run reports here too).
    last_stats: Arc<Mutex<Option<RunStats>>>,
}

impl Default for LocalScheduler {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalScheduler {
    /// One thread per core.
    pub fn new() -> Self {
        Self::threads(std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// `n` threads (at least one). The calling thread is one of them.
    ///
    /// The first scheduler built in a process also tunes glibc's allocator for block-sized
    /// buffers (see [`allocator::HEAP_BLOCK_LIMIT`]): a process-wide setting, made once.
    pub fn threads(n: usize) -> Self {
        allocator::tune_for_blocks();
        kiln_graph::memory::set_available_probe(allocator::available_memory);
        LocalScheduler {
            threads: n.max(1),
            progress: Progress::Auto,
            callbacks: None,
            cancel: None,
            memory_limit: None,
            spill_dir: None,
            last_stats: Arc::default(),
        }
    }

    /// Everything on the calling thread, in a deterministic order: for debugging.
    pub fn synchronous() -> Self {
        Self::threads(1)
    }

    /// Sets when to draw a progress bar.
    pub fn with_progress(mut self, progress: Progress) -> Self {
        self.progress = progress;
        self
    }

    /// Installs task callbacks.
    pub fn with_callbacks(mut self, callbacks: Arc<dyn Callbacks>) -> Self {
        self.callbacks = Some(callbacks);
        self
    }

    /// Sets the memory limit: the bytes of task results a run holds at once (each value as its
    /// codec measures it; see [`RunStats`]).
    ///
    /// - Above three quarters of it (the target), no new source task (one without
    ///   dependencies: it only adds data) starts while other work is running, so running
    ///   work can finish and free memory; tasks with inputs keep running, since they may free
    ///   them. When every other thread is idle a source runs anyway: a run never stalls.
    /// - Past the limit, held values are spilled to disk, the ones needed last first (by the
    ///   static priorities), until held memory is back at seven eighths of it; readers read
    ///   them back. Values without a codec, and values a running task is reading, stay in
    ///   memory. A spill file that cannot be written (a full disk) fails the run with
    ///   [`ComputeError::Spill`].
    /// - A kernel's single allocation (an array block) larger than the limit fails its task
    ///   ("block of 8.00 GiB exceeds the memory limit of 4.00 GiB") instead of aborting the
    ///   process.
    ///
    /// Without a limit: [`allocator::default_memory_limit`] (half the machine's memory) for
    /// held results, and the memory available at the time for single allocations.
    ///
    /// ```
    /// use kiln_graph::Scheduler;
    /// use kiln_local::LocalScheduler;
    /// let sched = LocalScheduler::threads(2).memory_limit(512 << 20);
    /// assert_eq!(sched.memory_target(), Some(512 << 20));
    /// ```
    pub fn memory_limit(mut self, bytes: u64) -> Self {
        self.memory_limit = Some(bytes);
        self
    }

    /// [`LocalScheduler::memory_limit`] when `bytes` is set; `None`: the default.
    pub fn with_memory_limit(mut self, bytes: Option<u64>) -> Self {
        self.memory_limit = bytes;
        self
    }

    /// The memory limit runs work under: the one set, or the default (`None` only when none
    /// was set and the machine's memory cannot be read).
    pub fn effective_memory_limit(&self) -> Option<u64> {
        self.memory_limit.or_else(allocator::default_memory_limit)
    }

    /// Spill files go in a directory of each run's own inside `dir` (created if missing),
    /// removed when the run ends. Default: the system's temporary directory.
    pub fn spill_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.spill_dir = Some(dir.into());
        self
    }

    fn spill_parent(&self) -> PathBuf {
        self.spill_dir.clone().unwrap_or_else(std::env::temp_dir)
    }

    /// What the last run of this scheduler (or of a clone of it) held and spilled, whether it
    /// succeeded or not; `None` before the first run. For one run's figures without sharing,
    /// use [`LocalScheduler::run_with_stats`].
    pub fn last_run_stats(&self) -> Option<RunStats> {
        *self.last_stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The memory budget kernels of this scheduler's runs check their allocations against.
    pub fn budget(&self) -> kiln_graph::memory::Budget {
        match self.memory_limit {
            Some(bytes) => kiln_graph::memory::Budget::Limit { bytes, of: "the memory limit" },
            None => kiln_graph::memory::Budget::Available,
        }
    }

    /// Watches a cancel token.
    pub fn with_cancel(mut self, token: CancelToken) -> Self {
        self.cancel = Some(token);
        self
    }

    /// The number of threads a run uses.
    pub fn num_threads(&self) -> usize {
        self.threads
    }

    /// Runs what `outputs` need and returns their values in order.
    ///
    /// # Errors
    /// [`ComputeError::Task`] for the first failing task (its key and message, or the panic
    /// message), [`ComputeError::Cancelled`], or [`ComputeError::Graph`] for an output id that
    /// is not in the graph.
    pub fn run(&self, graph: &Graph, outputs: &[TaskId]) -> Result<Vec<Value>, ComputeError> {
        self.run_with_stats(graph, outputs).map(|(values, _)| values)
    }

    /// [`LocalScheduler::run`], also returning what the run held and spilled.
    ///
    /// # Errors
    /// As [`LocalScheduler::run`], and [`ComputeError::Spill`] when a value could not be
    /// spilled or read back.
    pub fn run_with_stats(&self, graph: &Graph, outputs: &[TaskId]) -> Result<(Vec<Value>, RunStats), ComputeError> {
        graph.check_outputs(outputs)?;
        let (result, stats) = run::Run::new(graph, outputs, self).execute();
        *self.last_stats.lock().unwrap_or_else(|p| p.into_inner()) = Some(stats);
        result.map(|values| (values, stats))
    }

    /// Starts a run on a background thread. Dropping the handle cancels the run and waits for
    /// its threads to stop.
    pub fn spawn(&self, graph: Arc<Graph>, outputs: Vec<TaskId>) -> ComputeHandle {
        let token = CancelToken::new();
        let scheduler = self.clone().with_cancel(token.clone());
        let parent_cancel = self.cancel.clone();
        let thread = std::thread::Builder::new()
            .name("kiln-compute".into())
            .spawn(move || {
                if parent_cancel.is_some_and(|c| c.is_cancelled()) {
                    return Err(ComputeError::cancelled());
                }
                scheduler.run(&graph, &outputs)
            })
            .expect("spawning a thread");
        ComputeHandle { thread: Some(thread), cancel: token }
    }
}

impl Scheduler for LocalScheduler {
    fn compute(&self, graph: &Graph, outputs: &[TaskId]) -> Result<Vec<Value>, ComputeError> {
        self.run(graph, outputs)
    }

    fn name(&self) -> String {
        format!("threads({})", self.threads)
    }

    /// The memory limit (see [`LocalScheduler::memory_limit`]).
    fn memory_target(&self) -> Option<u64> {
        self.effective_memory_limit()
    }
}

/// A run in the background (see [`LocalScheduler::spawn`]).
pub struct ComputeHandle {
    thread: Option<JoinHandle<Result<Vec<Value>, ComputeError>>>,
    cancel: CancelToken,
}

impl ComputeHandle {
    /// Waits for the results.
    ///
    /// # Errors
    /// As [`LocalScheduler::run`].
    pub fn wait(mut self) -> Result<Vec<Value>, ComputeError> {
        let thread = self.thread.take().expect("the thread is joined only once");
        thread.join().unwrap_or_else(|_| Err(ComputeError::Internal("the compute thread panicked".into())))
    }

    /// Asks the run to stop; [`ComputeHandle::wait`] then returns [`ComputeError::Cancelled`].
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// Whether the run has ended.
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }
}

impl Drop for ComputeHandle {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.cancel.cancel();
            let _ = thread.join();
        }
    }
}
