//! The compute threads and the queue of runs they take from.
//!
//! The shell pushes each [`kiln_worker::Instruction::Run`] here as a [`Job`] with its inputs
//! already taken from the store; `nthreads` plain threads pop the smallest priority first, run
//! the kernel (panics caught), drop the inputs on the thread and report the outcome to the
//! shell's channel. A job costs one lock to push and one to pop, and a wake-up only when a
//! thread sleeps.
//!
//! The queue answers the state's questions about runs that may or may not have started:
//! [`JobQueue::take`] (a steal), [`JobQueue::cancel`] (a free: the job is skipped if it has not
//! started) and [`JobQueue::drain`] (leaving or losing the scheduler).

use std::collections::{BinaryHeap, HashSet};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use kiln_graph::{Kernel, Key, TaskError, Value};
use kiln_protocol::messages::Priority;
use kiln_worker::RunId;

/// A run handed to the threads.
pub(super) struct Job {
    pub priority: Priority,
    pub run: RunId,
    pub key: Key,
    pub kernel: Arc<dyn Kernel>,
    pub inputs: Vec<Value>,
}

impl PartialEq for Job {
    fn eq(&self, other: &Self) -> bool {
        (self.priority, self.run) == (other.priority, other.run)
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
        (other.priority, other.run).cmp(&(self.priority, self.run))
    }
}

/// What a thread reports for a job: `None` as the result when it was cancelled and skipped.
pub(super) struct Outcome {
    pub key: Key,
    pub run: RunId,
    pub result: Option<Result<Value, TaskError>>,
    pub duration: Duration,
    /// When the kernel started, µs since the Unix epoch (for the dashboard's task stream).
    pub started_us: u64,
    /// Which compute thread ran it.
    pub thread: u32,
}

#[derive(Default)]
struct Queue {
    jobs: BinaryHeap<Job>,
    cancelled: HashSet<RunId>,
    closed: bool,
    /// Threads blocked waiting for a job: waking one costs a system call, so only then.
    sleeping: usize,
}

/// Runs not started yet, highest priority first, shared with the compute threads.
#[derive(Default)]
pub(super) struct JobQueue {
    inner: Mutex<Queue>,
    ready: Condvar,
}

impl JobQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn push(&self, job: Job) {
        let mut q = self.lock();
        q.jobs.push(job);
        let wake = q.sleeping > 0;
        drop(q);
        if wake {
            self.ready.notify_one();
        }
    }

    /// The run's result is not wanted: skip it if it has not started.
    pub fn cancel(&self, run: RunId) {
        self.lock().cancelled.insert(run);
    }

    /// Removes a run that has not started; `false` if it is running or done.
    pub fn take(&self, run: RunId) -> bool {
        let mut q = self.lock();
        let before = q.jobs.len();
        q.jobs.retain(|j| j.run != run);
        q.cancelled.remove(&run);
        q.jobs.len() < before
    }

    /// Removes every run that has not started (and with `close`, lets the threads end once the
    /// queue is empty); returns them.
    pub fn drain(&self, close: bool) -> Vec<(RunId, Key)> {
        let mut q = self.lock();
        q.closed |= close;
        let jobs = std::mem::take(&mut q.jobs);
        for job in &jobs {
            q.cancelled.remove(&job.run);
        }
        drop(q);
        if close {
            self.ready.notify_all();
        }
        jobs.into_iter().map(|j| (j.run, j.key)).collect()
    }

    /// The next job to run (`None`: closed). Cancelled jobs come back flagged.
    fn pop(&self) -> Option<(Job, bool)> {
        let mut q = self.lock();
        loop {
            if let Some(job) = q.jobs.pop() {
                let cancelled = q.cancelled.remove(&job.run);
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

/// A compute thread's loop: runs jobs until the queue closes or `report` refuses.
pub(super) fn compute_thread(queue: &JobQueue, thread: u32, report: impl Fn(Outcome) -> bool) {
    while let Some((job, cancelled)) = queue.pop() {
        let started_us = super::activity::unix_us();
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
        let Job { key, run, inputs, .. } = job;
        // Inputs are released here, on the compute thread, before the result is reported.
        drop(inputs);
        if !report(Outcome { key, run, result, duration: start.elapsed(), started_us, thread }) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    fn job(run: u64, order: u32) -> Job {
        struct Echo;
        impl Kernel for Echo {
            fn name(&self) -> &str {
                "echo"
            }
            fn call(&self, inputs: &[Value]) -> Result<Value, TaskError> {
                Ok(inputs.first().cloned().unwrap_or_else(|| Value::new(0i64)))
            }
        }
        Job {
            priority: Priority { generation: 0, order },
            run: RunId(run),
            key: Key::with_index("j", [run as u32]),
            kernel: Arc::new(Echo),
            inputs: vec![],
        }
    }

    #[test]
    fn a_queued_run_can_be_taken_back_but_a_popped_one_cannot() {
        let queue = JobQueue::default();
        queue.push(job(1, 0));
        queue.push(job(2, 1));
        let (first, cancelled) = queue.pop().unwrap();
        assert_eq!((first.run, cancelled), (RunId(1), false), "smallest priority first");
        assert!(!queue.take(RunId(1)), "already started");
        assert!(queue.take(RunId(2)));
        assert!(queue.drain(false).is_empty());
    }

    #[test]
    fn cancelled_runs_are_reported_skipped_and_draining_returns_the_unstarted() {
        let queue = Arc::new(JobQueue::default());
        queue.push(job(1, 0));
        queue.cancel(RunId(1));
        queue.push(job(2, 1));
        let (tx, rx) = mpsc::channel();
        let (first, cancelled) = queue.pop().unwrap();
        assert!(cancelled && first.run == RunId(1));
        let unstarted = queue.drain(true);
        assert_eq!(unstarted, vec![(RunId(2), Key::with_index("j", [2]))]);
        // A closed, empty queue ends the threads.
        compute_thread(&queue, 0, |o| tx.send(o.run).is_ok());
        assert!(rx.try_recv().is_err());
    }
}
