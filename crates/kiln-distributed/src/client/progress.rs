//! Progress of cluster work in the terminal (Dask's `distributed.progress`): the same bar as
//! the local scheduler's, fed by the scheduler.
//!
//! Each submitted graph is remembered as its task count per name (a key without its index:
//! one array operation, one delayed call), shared by the keys it was submitted for. A bar
//! asks the scheduler a few times a second how many tasks of those names have finished
//! ([`ClientToScheduler::Progress`]); the scheduler counts them in place when tasks finish, so
//! watching costs one small message per refresh, nothing per task. A name the scheduler no
//! longer knows has all its tasks done and forgotten.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use kiln_graph::{ComputeError, Key};
use kiln_local::Progress;
use kiln_protocol::messages::{ClientToScheduler, SchedulerToClient, SubmittedTask};

use crate::client::Client;
use crate::client::futures::Future;

/// Tasks per name of one submitted graph.
pub(crate) type Shape = Arc<Vec<(String, u64)>>;

/// The task count per name of the tasks being submitted.
pub(crate) fn shape(tasks: &[SubmittedTask]) -> Shape {
    let mut names: BTreeMap<&str, u64> = BTreeMap::new();
    for task in tasks {
        *names.entry(task.spec.key.name()).or_default() += 1;
    }
    Arc::new(names.into_iter().map(|(n, c)| (n.to_string(), c)).collect())
}

/// How far some computations have got, in tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TaskProgress {
    /// Tasks finished.
    pub done: u64,
    /// Tasks in the graphs submitted for the keys asked about.
    pub total: u64,
}

impl TaskProgress {
    /// Whether every task finished.
    pub fn complete(&self) -> bool {
        self.done >= self.total
    }
}

/// How often a bar asks the scheduler.
const POLL: Duration = Duration::from_millis(200);

impl Client {
    /// How far the graphs submitted for `keys` (by this client, for keys it still references)
    /// have got: tasks finished out of the tasks submitted, as the scheduler counts them.
    /// Keys this client did not submit count for nothing.
    ///
    /// # Errors
    /// A lost connection.
    pub fn progress_of(&self, keys: &[Key]) -> Result<TaskProgress, ComputeError> {
        let totals = self.totals_of(keys);
        if totals.is_empty() {
            return Ok(TaskProgress::default());
        }
        let names: Vec<String> = totals.keys().cloned().collect();
        let done = match self.ask(|request| ClientToScheduler::Progress { request, names })? {
            SchedulerToClient::Progress { done, .. } => done,
            other => return Err(ComputeError::Internal(format!("unexpected answer {other:?}"))),
        };
        let mut progress = TaskProgress::default();
        for ((_, &total), done) in totals.iter().zip(done) {
            progress.total += total;
            // A name the scheduler forgot is finished; one counted again after a lost worker
            // (recomputed tasks) is capped at its size.
            progress.done += done.map_or(total, |d| d.min(total));
        }
        Ok(progress)
    }

    /// Sets when [`kiln_graph::Scheduler::compute`] on this client (and its clones) and
    /// [`progress`] draw a progress bar on stderr: [`Progress::Auto`] (the default) when stderr
    /// is a terminal.
    pub fn set_progress(&self, mode: Progress) {
        self.inner.lock().progress = mode;
    }

    /// Tasks per name over the distinct graphs submitted for `keys`.
    fn totals_of(&self, keys: &[Key]) -> BTreeMap<String, u64> {
        let state = self.inner.lock();
        let mut seen: Vec<*const Vec<(String, u64)>> = Vec::new();
        let mut totals = BTreeMap::new();
        for key in keys {
            let Some(shape) = state.shapes.get(key) else { continue };
            if seen.contains(&Arc::as_ptr(shape)) {
                continue;
            }
            seen.push(Arc::as_ptr(shape));
            for (name, count) in shape.iter() {
                *totals.entry(name.clone()).or_default() += count;
            }
        }
        totals
    }

    /// Runs `work` (which waits for `keys`) with a progress bar on stderr when this client's
    /// mode wants one.
    pub(crate) fn with_progress_bar<R>(&self, keys: &[Key], work: impl FnOnce() -> R) -> R {
        let mode = self.inner.lock().progress;
        if !kiln_local::progress::wanted(mode) {
            return work();
        }
        let total = self.totals_of(keys).values().sum::<u64>() as usize;
        let completed = AtomicUsize::new(0);
        let done = AtomicBool::new(false);
        let workers = self.workers().len();
        std::thread::scope(|s| {
            let poller = s.spawn(|| {
                while !done.load(Ordering::Acquire) {
                    match self.progress_of(keys) {
                        Ok(p) => completed.store(p.done as usize, Ordering::Relaxed),
                        Err(_) => return,
                    }
                    std::thread::park_timeout(POLL);
                }
            });
            let bar =
                s.spawn(|| kiln_local::progress::draw(total, &completed, &done, || format!("on {workers} workers")));
            let result = work();
            // The last figures, so a finished bar shows its total.
            if let Ok(p) = self.progress_of(keys) {
                completed.store(p.done as usize, Ordering::Relaxed);
            }
            done.store(true, Ordering::Release);
            poller.thread().unpark();
            bar.thread().unpark();
            result
        })
    }
}

/// Waits until every future is done, drawing a progress bar of their graphs' tasks on stderr
/// when it is a terminal (or the client's [`Client::set_progress`] mode says so), as Dask's
/// `distributed.progress` does. Futures of several clients are waited for client by client.
///
/// # Errors
/// The first failure or cancellation, or a lost connection.
pub fn progress<T>(futures: &[Future<T>]) -> Result<(), ComputeError> {
    let mut by_client: Vec<(&Client, Vec<Key>)> = Vec::new();
    for future in futures {
        let client = future.client();
        match by_client.iter_mut().find(|(c, _)| Arc::ptr_eq(&c.inner, &client.inner)) {
            Some((_, keys)) => keys.push(future.key().clone()),
            None => by_client.push((client, vec![future.key().clone()])),
        }
    }
    for (client, keys) in by_client {
        client.with_progress_bar(&keys, || client.wait_keys(&keys))?;
    }
    Ok(())
}
