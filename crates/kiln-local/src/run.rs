//! One run of a graph: shared counters, value slots and the ready queue.
//!
//! Per task, the hot path is: clone the input values out of their slots, call the kernel, store
//! the result, decrement the readers-left counter of each input (dropping the value at zero) and
//! the dependencies-left counter of each reader (the thread keeps the best newly ready reader
//! for itself and queues the others). Counters are atomics; the queue lock is taken only when a
//! thread needs work or has surplus ready tasks.
//!
//! Memory: each thread adds the sizes of the results it stores and subtracts those it releases
//! in a local count, and moves it to the run's shared counter once it reaches [`FLUSH_MAX`]
//! bytes either way (or a 64th of the limit, if smaller): small results cost no shared atomic
//! at all, a large one costs one. The shared count, and the peak taken from it, are exact to
//! within that much per thread. Above the target (three quarters of the
//! limit) threads take no new source task (a task without dependencies: it only adds data)
//! unless every other thread is idle, so running work can finish and free memory; past the
//! limit, the values needed last are spilled to disk until held memory is back at seven eighths
//! of it, and read back by their readers.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use kiln_graph::graph::Input;
use kiln_graph::order::{NOT_NEEDED, order};
use kiln_graph::{ComputeError, Graph, TaskError, TaskId, Value};

use crate::memory::{RunStats, Sizer, SpillDir, SpillFailure, Tally, file_in, read_spill, write_spill};
use crate::{LocalScheduler, progress};

/// How often idle threads look at the cancel token while waiting for work.
const IDLE_POLL: Duration = Duration::from_millis(20);

struct Queue {
    /// Tasks readied during the run, smallest priority first.
    heap: BinaryHeap<Reverse<(u32, u32)>>,
    /// Tasks with no dependencies, sorted by descending priority (pop from the end).
    roots: Vec<u32>,
    finished: bool,
}

/// The most bytes a thread counts locally before adding them to the run's shared count.
const FLUSH_MAX: u64 = 256 << 10;

/// The smallest value worth a spill file (or a 1024th of the limit, if smaller).
const SPILL_MIN: u64 = 64 << 10;

/// Most roots a thread takes in one visit to the queue (they are the next ones in priority
/// order anyway); fewer when few are left, so that threads do not hoard work near the end.
const MAX_ROOT_BATCH: usize = 16;

impl Queue {
    /// Moves up to `max` further roots into `batch` (in run order, last = first to run) if they
    /// come before everything in the heap.
    fn take_roots(&mut self, priority: &[u32], max: usize, batch: &mut Vec<u32>) {
        let heap_best = self.heap.peek().map_or(u32::MAX, |Reverse((p, _))| *p);
        let take = self.roots.iter().rev().take(max).take_while(|&&r| priority[r as usize] < heap_best).count();
        let from = self.roots.len() - take;
        batch.extend_from_slice(&self.roots[from..]);
        self.roots.truncate(from);
    }

    /// Puts a thread's unstarted roots back (over the memory target, they wait with the
    /// others). They are consecutive in priority order, so one splice keeps `roots` sorted.
    fn return_roots(&mut self, priority: &[u32], batch: &mut Vec<u32>) {
        let Some(&first) = batch.first() else { return };
        let p = priority[first as usize];
        let at = self.roots.partition_point(|&r| priority[r as usize] > p);
        self.roots.splice(at..at, batch.drain(..));
    }

    fn pop(&mut self, priority: &[u32]) -> Option<u32> {
        let root = self.roots.last().map(|&r| priority[r as usize]);
        let heaped = self.heap.peek().map(|Reverse((p, _))| *p);
        match (root, heaped) {
            (Some(r), Some(h)) if h < r => self.heap.pop().map(|Reverse((_, t))| t),
            (Some(_), _) => self.roots.pop(),
            (None, Some(_)) => self.heap.pop().map(|Reverse((_, t))| t),
            (None, None) => None,
        }
    }
}

/// What a run knows of a task's result besides the value: its size and three flags, packed in
/// one word kept beside the value slots rather than in them, so the slots stay as small as
/// they were before there was a memory limit (the per-task path touches one more word, not a
/// wider slot for every task). Read and written only under the task's slot lock; atomic only
/// to be shared between threads.
#[derive(Default)]
struct Meta(AtomicU64);

impl Meta {
    /// It has a codec that accepted it (it may be written to disk).
    const SPILLABLE: u64 = 1;
    /// Its spill file exists (the value is immutable, so the file stays valid after a read
    /// back, and spilling it again only drops the memory copy).
    const ON_DISK: u64 = 2;
    /// A requested output: held to the end of the run.
    const OUTPUT: u64 = 4;
    const FLAGS: u32 = 3;

    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
    fn set(&self, m: u64) {
        self.0.store(m, Ordering::Relaxed)
    }
    /// Its size as counted in [`Tally::held`] while in memory.
    fn nbytes(&self) -> u64 {
        self.get() >> Self::FLAGS
    }
    fn has(&self, flag: u64) -> bool {
        self.get() & flag != 0
    }
    fn with(&self, flag: u64, on: bool) {
        let m = self.get();
        self.set(if on { m | flag } else { m & !flag });
    }
    /// A result was stored: its size and whether it can be spilled (an output stays one).
    #[inline]
    fn stored(&self, nbytes: u64, spillable: bool) {
        let output = self.get() & Self::OUTPUT;
        self.set((nbytes.min(u64::MAX >> Self::FLAGS) << Self::FLAGS) | output | spillable as u64);
    }
}

/// The spill side of a run, behind one lock: one thread spills at a time, and the others that
/// find memory over the limit wait for it (backpressure).
struct Spiller {
    dir: SpillDir,
    /// A spill write failed: the run is failing, no more spilling.
    failed: bool,
}

pub(crate) struct Run<'a> {
    graph: &'a Graph,
    outputs: &'a [TaskId],
    scheduler: &'a LocalScheduler,
    /// The scheduler's callbacks or the global ones, looked up once per run.
    callbacks: Option<Arc<dyn crate::Callbacks>>,
    priority: Vec<u32>,
    deps_left: Vec<AtomicU32>,
    readers_left: Vec<AtomicU32>,
    /// The values, in memory (also while a clean copy is on disk).
    slots: Vec<Mutex<Option<Value>>>,
    meta: Vec<Meta>,
    queue: Mutex<Queue>,
    wakeup: Condvar,
    sleeping: AtomicUsize,
    completed: AtomicUsize,
    total: usize,
    /// Threads working on this run.
    workers: usize,
    abort: AtomicBool,
    error: Mutex<Option<ComputeError>>,
    tally: Tally,
    /// The memory limit (`u64::MAX`: none), the target above which sources wait, and the level
    /// a spill brings held memory back to.
    limit: u64,
    target: u64,
    spill_goal: u64,
    /// Values smaller than this are not worth a file: a reduction's 24-byte partials are
    /// needed last, yet spilling them frees nothing.
    spill_min: u64,
    /// How many bytes a thread counts locally before flushing them (see the module doc).
    flush_every: i64,
    spiller: Mutex<Spiller>,
    /// The spill directory once created, readable without the spiller's lock (readers that
    /// read a value back hold its slot's lock, and the spiller takes slot locks).
    spill_path: OnceLock<PathBuf>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means another thread panicked while holding it; kernels never run
    // under these locks, so the data is consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<'a> Run<'a> {
    pub(crate) fn new(graph: &'a Graph, outputs: &'a [TaskId], scheduler: &'a LocalScheduler) -> Self {
        let priority = order(graph, outputs);
        let n = graph.len();
        let needed = |t: &TaskId| priority[t.index()] != NOT_NEEDED;
        let mut readers_left: Vec<AtomicU32> = graph
            .ids()
            .map(|t| AtomicU32::new(graph.dependents(t).iter().filter(|r| needed(r)).count() as u32))
            .collect();
        for o in outputs {
            // Outputs are held until the end: one extra reader that never finishes.
            *readers_left[o.index()].get_mut() += 1;
        }
        let deps_left = graph.ids().map(|t| AtomicU32::new(graph.dependencies(t).len() as u32)).collect();
        let mut roots: Vec<u32> =
            graph.ids().filter(|t| needed(t) && graph.dependencies(*t).is_empty()).map(|t| t.0).collect();
        roots.sort_unstable_by_key(|&t| Reverse(priority[t as usize]));
        let total = priority.iter().filter(|&&p| p != NOT_NEEDED).count();
        let meta: Vec<Meta> = (0..n).map(|_| Meta::default()).collect();
        for o in outputs {
            meta[o.index()].set(Meta::OUTPUT);
        }
        let limit = scheduler.effective_memory_limit().unwrap_or(u64::MAX);
        Run {
            graph,
            outputs,
            scheduler,
            callbacks: crate::callbacks_for(scheduler),
            deps_left,
            readers_left,
            slots: (0..n).map(|_| Mutex::new(None)).collect(),
            meta,
            queue: Mutex::new(Queue { heap: BinaryHeap::new(), roots, finished: total == 0 }),
            wakeup: Condvar::new(),
            sleeping: AtomicUsize::new(0),
            completed: AtomicUsize::new(0),
            total,
            workers: scheduler.threads.min(total).max(1),
            abort: AtomicBool::new(false),
            error: Mutex::new(None),
            priority,
            tally: Tally::default(),
            limit,
            target: limit - limit / 4,
            spill_goal: limit - limit / 8,
            spill_min: SPILL_MIN.min(limit / 1024),
            flush_every: FLUSH_MAX.min(limit / 64).max(1) as i64,
            spiller: Mutex::new(Spiller { dir: SpillDir::new(scheduler.spill_parent()), failed: false }),
            spill_path: OnceLock::new(),
        }
    }

    /// What the run held and spilled so far.
    fn stats(&self) -> RunStats {
        self.tally.stats((self.limit != u64::MAX).then_some(self.limit))
    }

    /// Runs the graph; returns the outputs and what the run held and spilled (also when it
    /// failed: the statistics up to the failure).
    pub(crate) fn execute(self) -> (Result<Vec<Value>, ComputeError>, RunStats) {
        let result = self.execute_inner();
        (result, self.stats())
        // `self` drops here, and with it the spill directory, whatever the result.
    }

    fn execute_inner(&self) -> Result<Vec<Value>, ComputeError> {
        if self.total > 0 {
            let show_progress = progress::wanted(self.scheduler.progress);
            let progress_done = AtomicBool::new(false);
            std::thread::scope(|s| {
                let bar = show_progress.then(|| {
                    s.spawn(|| progress::draw(self.total, &self.completed, &progress_done, || self.stats().summary()))
                });
                let helpers: Vec<_> =
                    (1..self.scheduler.threads.min(self.total)).map(|_| s.spawn(|| self.work_in_budget())).collect();
                self.work_in_budget();
                for h in helpers {
                    // `work` catches kernel panics itself; a panic here would be a kiln bug.
                    if h.join().is_err() {
                        self.fail(ComputeError::Internal("a scheduler thread panicked".into()));
                    }
                }
                progress_done.store(true, Ordering::Release);
                if let Some(bar) = bar {
                    bar.thread().unpark();
                }
            });
        }
        if let Some(err) = lock(&self.error).take() {
            return Err(err);
        }
        if self.completed.load(Ordering::Acquire) != self.total {
            return Err(ComputeError::cancelled());
        }
        self.outputs
            .iter()
            .map(|o| {
                let slot = lock(&self.slots[o.index()]);
                match &*slot {
                    Some(v) => Ok(v.clone()),
                    // Read back without counting: the run is over and these are the caller's.
                    None if self.meta[o.index()].has(Meta::ON_DISK) => self.read_file(*o),
                    None => Err(ComputeError::Internal(format!("output {} was not kept", self.graph.key(*o)))),
                }
            })
            .collect()
    }

    /// Whether held memory is over the target, so sources wait.
    #[inline]
    fn over_target(&self) -> bool {
        self.tally.held() > self.target
    }

    fn cancelled(&self) -> bool {
        self.scheduler.cancel.as_ref().is_some_and(|c| c.is_cancelled())
    }

    fn fail(&self, error: ComputeError) {
        lock(&self.error).get_or_insert(error);
        self.abort.store(true, Ordering::Release);
        lock(&self.queue).finished = true;
        self.wakeup.notify_all();
    }

    /// Takes the best queued task, sleeping while none is ready; `None` when the run is over.
    /// May also move a few following roots into the thread's `batch`.
    fn next_task(&self, batch: &mut Vec<u32>) -> Option<u32> {
        if let Some(t) = batch.pop() {
            if !self.over_target() {
                return Some(t);
            }
            batch.push(t);
            lock(&self.queue).return_roots(&self.priority, batch);
        }
        let mut q = lock(&self.queue);
        loop {
            if q.finished {
                return None;
            }
            if !self.over_target() {
                if let Some(t) = q.pop(&self.priority) {
                    let extra = (q.roots.len() / (4 * self.scheduler.threads)).min(MAX_ROOT_BATCH);
                    if extra > 0 {
                        q.take_roots(&self.priority, extra, batch);
                    }
                    return Some(t);
                }
            } else if let Some(Reverse((_, t))) = q.heap.pop() {
                // Over the target: tasks with inputs run (they may free them); sources wait.
                return Some(t);
            } else if !q.roots.is_empty() && self.sleeping.load(Ordering::SeqCst) + 1 >= self.workers {
                // Every other thread is idle, so nothing running will free memory: a source
                // runs rather than the run stalling (the spiller makes room for its result).
                self.tally.forced_sources.fetch_add(1, Ordering::Relaxed);
                return q.roots.pop();
            }
            if self.cancelled() {
                drop(q);
                self.fail(ComputeError::cancelled());
                return None;
            }
            self.sleeping.fetch_add(1, Ordering::SeqCst);
            q = self.wakeup.wait_timeout(q, IDLE_POLL).unwrap_or_else(|p| p.into_inner()).0;
            self.sleeping.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// [`Run::work`] with this run's memory budget for the kernels (restored afterwards: the
    /// calling thread is the user's).
    fn work_in_budget(&self) {
        kiln_graph::memory::with_budget(Some(self.scheduler.budget()), || self.work());
    }

    fn work(&self) {
        // Bytes stored minus bytes released by this thread, not yet in the shared count.
        let mut pending: i64 = 0;
        self.work_loop(&mut pending);
        self.flush(&mut pending);
    }

    /// Moves a thread's local count of held bytes to the shared one; spills past the limit,
    /// wakes threads holding sources back when it falls under the target.
    fn flush(&self, pending: &mut i64) {
        let delta = std::mem::take(pending);
        if delta >= 0 {
            if self.tally.add(delta as u64) > self.limit {
                self.make_room();
            }
        } else {
            let freed = delta.unsigned_abs();
            let before = self.tally.sub(freed);
            if before > self.target
                && before.saturating_sub(freed) <= self.target
                && self.sleeping.load(Ordering::Relaxed) > 0
            {
                self.wakeup.notify_all();
            }
        }
    }

    fn work_loop(&self, pending: &mut i64) {
        let graph = self.graph;
        let callbacks = self.callbacks.as_deref();
        let mut sizer = Sizer::default();
        let mut inputs: Vec<Value> = Vec::new();
        let mut ready: Vec<u32> = Vec::new();
        let mut next: Option<u32> = None;
        let mut batch: Vec<u32> = Vec::with_capacity(MAX_ROOT_BATCH);
        loop {
            let Some(t) = next.take().or_else(|| self.next_task(&mut batch)) else { return };
            if self.abort.load(Ordering::Acquire) {
                return;
            }
            if self.cancelled() {
                self.fail(ComputeError::cancelled());
                return;
            }
            let id = TaskId(t);
            for input in graph.inputs(id) {
                inputs.push(match input {
                    Input::Task(d) => {
                        let slot = lock(&self.slots[d.index()]);
                        match &*slot {
                            Some(v) => v.clone(),
                            None => match self.input_not_in_memory(*d, id, slot) {
                                Ok(v) => v,
                                Err(e) => {
                                    self.fail(e);
                                    return;
                                }
                            },
                        }
                    }
                    Input::Literal(v) => v.clone(),
                });
            }
            if let Some(cb) = callbacks {
                cb.on_start(graph.key(id));
            }
            let result = catch_unwind(AssertUnwindSafe(|| graph.kernel(id).call(&inputs)))
                .unwrap_or_else(|payload| Err(TaskError::Panicked(panic_message(payload))));
            inputs.clear();
            if let Some(cb) = callbacks {
                cb.on_finish(graph.key(id), result.as_ref().err());
            }
            let value = match result {
                Ok(v) => {
                    if let Some(cb) = callbacks {
                        cb.on_result(graph.key(id), sizer.measure(&v).0);
                    }
                    v
                }
                Err(error) => {
                    self.fail(ComputeError::task(graph.key(id), error));
                    return;
                }
            };
            if self.readers_left[t as usize].load(Ordering::Relaxed) > 0 {
                let (nbytes, spillable) = sizer.measure(&value);
                {
                    let mut slot = lock(&self.slots[t as usize]);
                    *slot = Some(value);
                    self.meta[t as usize].stored(nbytes, spillable);
                }
                *pending += nbytes as i64;
                if *pending >= self.flush_every {
                    self.flush(pending);
                }
            }
            for d in graph.dependencies(id) {
                if self.readers_left[d.index()].fetch_sub(1, Ordering::AcqRel) == 1 {
                    *pending -= self.release(d.index()) as i64;
                    if *pending <= -self.flush_every {
                        self.flush(pending);
                    }
                }
            }
            for r in graph.dependents(id) {
                if self.priority[r.index()] != NOT_NEEDED
                    && self.deps_left[r.index()].fetch_sub(1, Ordering::AcqRel) == 1
                {
                    ready.push(r.0);
                }
            }
            if self.completed.fetch_add(1, Ordering::AcqRel) + 1 == self.total {
                lock(&self.queue).finished = true;
                self.wakeup.notify_all();
                return;
            }
            match ready.len() {
                0 => {}
                1 => next = ready.pop(),
                _ => {
                    let best = (0..ready.len()).min_by_key(|&i| self.priority[ready[i] as usize]).unwrap_or(0);
                    next = Some(ready.swap_remove(best));
                    let mut q = lock(&self.queue);
                    for r in ready.drain(..) {
                        q.heap.push(Reverse((self.priority[r as usize], r)));
                    }
                    drop(q);
                    if self.sleeping.load(Ordering::SeqCst) > 0 {
                        self.wakeup.notify_all();
                    }
                }
            }
        }
    }
}

impl Run<'_> {
    /// The value of `d` for its reader `reader` when it is not in memory: read back from its
    /// spill file.
    #[cold]
    fn input_not_in_memory(
        &self,
        d: TaskId,
        reader: TaskId,
        slot: MutexGuard<'_, Option<Value>>,
    ) -> Result<Value, ComputeError> {
        if self.meta[d.index()].has(Meta::ON_DISK) {
            return self.read_back(d, slot);
        }
        let msg = format!("input {} of {} was released too early", self.graph.key(d), self.graph.key(reader));
        Err(ComputeError::Internal(msg))
    }

    /// Reads a spilled value back into its slot (under the slot's lock, so two readers read it
    /// once) and counts it as held again.
    #[cold]
    fn read_back(&self, d: TaskId, mut slot: MutexGuard<'_, Option<Value>>) -> Result<Value, ComputeError> {
        let value = self.read_file(d)?;
        *slot = Some(value.clone());
        let nbytes = self.meta[d.index()].nbytes();
        drop(slot);
        self.tally.read_back_count.fetch_add(1, Ordering::Relaxed);
        // The clone the reader holds pins the value: the spiller will not pick it.
        if self.tally.add(nbytes) > self.limit {
            self.make_room();
        }
        Ok(value)
    }

    fn read_file(&self, d: TaskId) -> Result<Value, ComputeError> {
        let Some(dir) = self.spill_path.get() else {
            return Err(ComputeError::Internal(format!("{} is marked spilled but nothing was", self.graph.key(d))));
        };
        let path = file_in(dir, d.0);
        read_spill(&path).map_err(|message| ComputeError::Spill {
            key: self.graph.key(d).clone(),
            action: "cannot read back",
            path,
            message,
        })
    }

    /// The last reader of `d` finished: drop its value and its spill file. Returns the bytes
    /// freed in memory, for the caller's count.
    #[inline]
    fn release(&self, d: usize) -> u64 {
        let mut slot = lock(&self.slots[d]);
        let released = slot.take();
        let meta = &self.meta[d];
        let on_disk = meta.has(Meta::ON_DISK);
        if on_disk {
            meta.with(Meta::ON_DISK, false);
        }
        let nbytes = meta.nbytes();
        drop(slot);
        let freed = if released.is_some() { nbytes } else { 0 };
        drop(released);
        if on_disk {
            self.remove_file(d);
        }
        freed
    }

    #[cold]
    fn remove_file(&self, d: usize) {
        if let Some(dir) = self.spill_path.get() {
            let _ = std::fs::remove_file(file_in(dir, d as u32));
        }
    }

    /// When a task reads `d` next: the smallest priority among its readers that are not ready
    /// yet (`u32::MAX` for an output with none), or `None` when every reader is ready or
    /// running (it is needed now).
    fn next_need(&self, d: usize, output: bool) -> Option<u32> {
        let pending = self
            .graph
            .dependents(TaskId(d as u32))
            .iter()
            .filter(|r| self.priority[r.index()] != NOT_NEEDED && self.deps_left[r.index()].load(Ordering::Relaxed) > 0)
            .map(|r| self.priority[r.index()])
            .min();
        pending.or(output.then_some(u32::MAX))
    }

    /// Held memory is past the limit: spill the values needed last (the static priorities say
    /// when each is read next) until it is back at the spill goal. Values pinned by a running
    /// reader, and values without a codec, stay. One thread spills at a time; others that find
    /// memory over the limit wait here, which slows the producers down.
    #[cold]
    fn make_room(&self) {
        let mut spiller = lock(&self.spiller);
        if spiller.failed || self.tally.held() <= self.limit {
            return;
        }
        // A scan of every slot: spilling is the slow path, and the goal below the limit spaces
        // the scans out by several values.
        let mut candidates: Vec<(u32, usize)> = Vec::new();
        for d in 0..self.slots.len() {
            if self.readers_left[d].load(Ordering::Relaxed) == 0 {
                continue;
            }
            let slot = lock(&self.slots[d]);
            let Some(value) = &*slot else { continue };
            let meta = &self.meta[d];
            if !meta.has(Meta::SPILLABLE) || value.ref_count() > 1 || meta.nbytes() < self.spill_min {
                continue;
            }
            let output = meta.has(Meta::OUTPUT);
            drop(slot);
            if let Some(need) = self.next_need(d, output) {
                candidates.push((need, d));
            }
        }
        candidates.sort_unstable_by_key(|&(need, d)| Reverse((need, d)));
        for (_, d) in candidates {
            if self.tally.held() <= self.spill_goal {
                break;
            }
            let mut slot = lock(&self.slots[d]);
            let Some(value) = &*slot else { continue };
            if value.ref_count() > 1 {
                continue;
            }
            let meta = &self.meta[d];
            if !meta.has(Meta::ON_DISK) {
                let dir = match spiller.dir.dir() {
                    Ok(dir) => dir,
                    Err((path, message)) => {
                        spiller.failed = true;
                        let key = self.graph.key(TaskId(d as u32)).clone();
                        drop(slot);
                        self.fail(ComputeError::Spill { key, action: "cannot spill", path, message });
                        return;
                    }
                };
                let _ = self.spill_path.set(dir.to_path_buf());
                let path = file_in(dir, d as u32);
                match write_spill(value, &path) {
                    Ok(_) => meta.with(Meta::ON_DISK, true),
                    Err(SpillFailure::Unencodable) => {
                        meta.with(Meta::SPILLABLE, false);
                        continue;
                    }
                    Err(SpillFailure::Io(message)) => {
                        spiller.failed = true;
                        let key = self.graph.key(TaskId(d as u32)).clone();
                        drop(slot);
                        self.fail(ComputeError::Spill { key, action: "cannot spill", path, message });
                        return;
                    }
                }
            }
            let spilled = slot.take();
            let nbytes = meta.nbytes();
            drop(slot);
            drop(spilled);
            self.tally.sub(nbytes);
            self.tally.spill_count.fetch_add(1, Ordering::Relaxed);
            self.tally.spilled_bytes.fetch_add(nbytes, Ordering::Relaxed);
        }
        if self.tally.held() <= self.target && self.sleeping.load(Ordering::Relaxed) > 0 {
            self.wakeup.notify_all();
        }
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => match payload.downcast::<&'static str>() {
            Ok(s) => (*s).to_string(),
            Err(_) => "a non-string panic payload".to_string(),
        },
    }
}
