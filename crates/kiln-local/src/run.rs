//! One run of a graph: shared counters, value slots and the ready queue.
//!
//! Per task, the hot path is: clone the input values out of their slots, call the kernel, store
//! the result, decrement the readers-left counter of each input (dropping the value at zero) and
//! the dependencies-left counter of each reader (the thread keeps the best newly ready reader
//! for itself and queues the others). Counters are atomics; the queue lock is taken only when a
//! thread needs work or has surplus ready tasks.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use kiln_graph::graph::Input;
use kiln_graph::order::{NOT_NEEDED, order};
use kiln_graph::{ComputeError, Graph, TaskError, TaskId, Value};

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

pub(crate) struct Run<'a> {
    graph: &'a Graph,
    outputs: &'a [TaskId],
    scheduler: &'a LocalScheduler,
    priority: Vec<u32>,
    deps_left: Vec<AtomicU32>,
    readers_left: Vec<AtomicU32>,
    slots: Vec<Mutex<Option<Value>>>,
    queue: Mutex<Queue>,
    wakeup: Condvar,
    sleeping: AtomicUsize,
    completed: AtomicUsize,
    total: usize,
    abort: AtomicBool,
    error: Mutex<Option<ComputeError>>,
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
        Run {
            graph,
            outputs,
            scheduler,
            deps_left,
            readers_left,
            slots: (0..n).map(|_| Mutex::new(None)).collect(),
            queue: Mutex::new(Queue { heap: BinaryHeap::new(), roots, finished: total == 0 }),
            wakeup: Condvar::new(),
            sleeping: AtomicUsize::new(0),
            completed: AtomicUsize::new(0),
            total,
            abort: AtomicBool::new(false),
            error: Mutex::new(None),
            priority,
        }
    }

    pub(crate) fn execute(self) -> Result<Vec<Value>, ComputeError> {
        if self.total > 0 {
            let show_progress = progress::wanted(self.scheduler.progress);
            let progress_done = AtomicBool::new(false);
            std::thread::scope(|s| {
                let bar =
                    show_progress.then(|| s.spawn(|| progress::draw(self.total, &self.completed, &progress_done)));
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
                lock(&self.slots[o.index()])
                    .clone()
                    .ok_or_else(|| ComputeError::Internal(format!("output {} was not kept", self.graph.key(*o))))
            })
            .collect()
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
            return Some(t);
        }
        let mut q = lock(&self.queue);
        loop {
            if q.finished {
                return None;
            }
            if let Some(t) = q.pop(&self.priority) {
                let extra = (q.roots.len() / (4 * self.scheduler.threads)).min(MAX_ROOT_BATCH);
                if extra > 0 {
                    q.take_roots(&self.priority, extra, batch);
                }
                return Some(t);
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
        let graph = self.graph;
        let callbacks = self.scheduler.callbacks.as_deref();
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
                    Input::Task(d) => match lock(&self.slots[d.index()]).clone() {
                        Some(v) => v,
                        None => {
                            let msg = format!("input {} of {} was released too early", graph.key(*d), graph.key(id));
                            self.fail(ComputeError::Internal(msg));
                            return;
                        }
                    },
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
                Ok(v) => v,
                Err(error) => {
                    self.fail(ComputeError::task(graph.key(id), error));
                    return;
                }
            };
            if self.readers_left[t as usize].load(Ordering::Relaxed) > 0 {
                *lock(&self.slots[t as usize]) = Some(value);
            }
            for d in graph.dependencies(id) {
                if self.readers_left[d.index()].fetch_sub(1, Ordering::AcqRel) == 1 {
                    let released = lock(&self.slots[d.index()]).take();
                    drop(released);
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

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => match payload.downcast::<&'static str>() {
            Ok(s) => (*s).to_string(),
            Err(_) => "a non-string panic payload".to_string(),
        },
    }
}
