//! Read-only views of the state with typed results, for the server, tests and the bench.
//!
//! Queries never change the state and never produce commands, so they can be called between
//! events at any time.

use std::collections::BTreeMap;
use std::sync::Arc;

use kiln_graph::{Encoded, KernelSpec, Key};
use kiln_protocol::messages::{MemoryReport, WorkerId, WorkerInfo};

use super::arena::{Body, BodyInput, Task, TaskSlot};
use super::{SchedulerState, TaskState, WorkerLoad};

/// What the scheduler learned about one kind of task (a key prefix) from its finished tasks.
#[derive(Debug, Clone, PartialEq)]
pub struct PrefixEstimate {
    /// The key prefix (`"add"` for `("add-3f2a", 1, 2)`).
    pub prefix: Arc<str>,
    /// Mean run time, in microseconds (a moving average).
    pub duration_us: f64,
    /// Mean result size, in bytes (a moving average).
    pub nbytes: f64,
}

/// How far one kind of task (a key prefix) has got ([`SchedulerState::prefix_progress`]).
#[derive(Debug, Clone, PartialEq)]
pub struct PrefixProgress {
    /// The key prefix.
    pub prefix: Arc<str>,
    /// Live tasks per state, indexed like [`TaskState::ALL`].
    pub counts: [u64; 7],
    /// Tasks that went from processing to memory since the prefix last had nothing left to
    /// do (new work for an idle prefix starts a fresh count).
    pub done: u64,
    /// Tasks that erred in the same window.
    pub erred: u64,
    /// Tasks that erred, ever (including dependents of failed tasks).
    pub erred_total: u64,
    /// Tasks that finished, ever.
    pub finished_total: u64,
    /// Compute time of those tasks, in seconds.
    pub compute_seconds: f64,
    /// Bytes of their results.
    pub output_bytes: u64,
}

/// One task of a [`GraphView`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct GraphNode {
    /// The key as users write it.
    pub key: String,
    /// Its prefix (the colour of its kind).
    pub prefix: String,
    /// Its state's name (`waiting`, `processing`, `memory`, ...).
    pub state: &'static str,
}

/// Every task the scheduler knows and its dependencies ([`SchedulerState::graph_view`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct GraphView {
    /// The tasks.
    pub nodes: Vec<GraphNode>,
    /// `(dependency, dependent)` as indices into `nodes`.
    pub edges: Vec<(u32, u32)>,
}

/// One task as an observer sees it ([`SchedulerState::task_info`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TaskInfo {
    /// The key, as text.
    pub key: String,
    /// Its prefix.
    pub prefix: String,
    /// Its state's name (`memory`, `processing`, ...).
    pub state: &'static str,
    /// Workers holding its result.
    pub who_has: Vec<WorkerId>,
    /// The worker running it.
    pub processing_on: Option<WorkerId>,
    /// Its result's size in bytes (when in memory).
    pub nbytes: u64,
    /// Its dependencies' keys (at most [`TASK_INFO_NEIGHBOURS`]).
    pub dependencies: Vec<String>,
    /// How many dependencies it has.
    pub dependency_count: usize,
    /// Its dependents' keys (at most [`TASK_INFO_NEIGHBOURS`]).
    pub dependents: Vec<String>,
    /// How many dependents it has.
    pub dependent_count: usize,
    /// Why it failed, when it erred.
    pub exception: Option<String>,
}

/// Neighbours listed at most by [`SchedulerState::task_info`] (a reduction may have thousands).
pub const TASK_INFO_NEIGHBOURS: usize = 100;

/// How many known tasks are in each state.
pub type StateCounts = BTreeMap<TaskState, usize>;

impl SchedulerState {
    /// Number of tasks the scheduler knows (not forgotten).
    pub fn task_count(&self) -> usize {
        self.tasks.len() - self.free.len()
    }

    /// The state of a task, `None` when unknown or forgotten.
    pub fn task_state(&self, key: &Key) -> Option<TaskState> {
        self.find(key).map(|t| self.tasks[t].state)
    }

    /// Workers holding a key.
    pub fn who_has(&self, key: &Key) -> Vec<WorkerId> {
        self.find(key).map(|t| self.tasks[t].who_has.to_vec()).unwrap_or_default()
    }

    /// The worker a task is processing on.
    pub fn processing_on(&self, key: &Key) -> Option<WorkerId> {
        self.find(key).and_then(|t| self.tasks[t].processing_on)
    }

    /// The registered workers.
    pub fn workers(&self) -> Vec<WorkerInfo> {
        self.workers.values().map(|w| w.info.clone()).collect()
    }

    /// One worker's load.
    pub fn worker_load(&self, id: WorkerId) -> Option<WorkerLoad> {
        self.workers.get(&id).map(|w| WorkerLoad {
            processing: w.processing.len(),
            held: w.has_what.len(),
            nbytes: w.nbytes,
            occupancy_s: w.occupancy_us / 1e6 / w.info.nthreads.max(1) as f64,
            reported: w.reported,
            last_seen: w.last_seen,
            paused: w.paused,
            retiring: self.retiring.contains(&id),
            tasks_finished: w.finished,
            tasks_failed: w.failed,
        })
    }

    /// For each task name (a key without its index: one array operation, one delayed call),
    /// how many of its tasks finished while the name was known; `None` for a name the
    /// scheduler does not know, which for a name it was sent means every task of that name is
    /// done and forgotten (or was released). A client's progress bar asks this.
    pub fn name_progress<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Vec<Option<u64>> {
        names.into_iter().map(|n| self.names.get(n).map(|c| c.done)).collect()
    }

    /// Progress of every kind of task ever seen, in order of first appearance: O(prefixes),
    /// whatever the number of tasks (the dashboard's progress bars and `/metrics`).
    pub fn prefix_progress(&self) -> impl ExactSizeIterator<Item = PrefixProgress> + '_ {
        self.prefixes.iter().map(|p| PrefixProgress {
            prefix: p.name.clone(),
            counts: p.counts,
            done: p.done,
            erred: p.erred,
            erred_total: p.erred_total,
            finished_total: p.finished,
            compute_seconds: p.compute_us / 1e6,
            output_bytes: p.output_bytes,
        })
    }

    /// What an observer shows of one task (`/info/task/<key>`), `None` when unknown.
    pub fn task_info(&self, key: &Key) -> Option<TaskInfo> {
        let t = self.find(key)?;
        let task = &self.tasks[t];
        let list = |slots: &[TaskSlot]| -> Vec<String> {
            slots.iter().take(TASK_INFO_NEIGHBOURS).map(|&d| self.tasks[d].key.to_string()).collect()
        };
        Some(TaskInfo {
            key: task.key.to_string(),
            prefix: self.prefixes[task.prefix as usize].name.to_string(),
            state: task.state.name(),
            who_has: task.who_has.to_vec(),
            processing_on: task.processing_on,
            nbytes: task.nbytes,
            dependencies: list(&task.deps),
            dependency_count: task.deps.len(),
            dependents: list(&task.dependents),
            dependent_count: task.dependents.len(),
            exception: task.failure.as_ref().map(|f| {
                if f.key == task.key { f.message.clone() } else { format!("{} failed: {}", f.key, f.message) }
            }),
        })
    }

    /// The whole graph the scheduler knows, for drawing (`/graph`), or `Err(tasks)` when it
    /// has more than `cap` tasks: only then does it walk them, so asking about a huge graph
    /// costs nothing.
    pub fn graph_view(&self, cap: usize) -> Result<GraphView, usize> {
        let count = self.task_count();
        if count > cap {
            return Err(count);
        }
        let mut index = vec![u32::MAX; self.tasks.len()];
        let mut nodes = Vec::with_capacity(count);
        for (slot, task) in self.tasks.iter().enumerate() {
            if task.live {
                index[slot] = nodes.len() as u32;
                nodes.push(GraphNode {
                    key: task.key.to_string(),
                    prefix: self.prefixes[task.prefix as usize].name.to_string(),
                    state: task.state.name(),
                });
            }
        }
        let mut edges = Vec::new();
        for (slot, task) in self.tasks.iter().enumerate() {
            if task.live {
                for dep in &task.deps {
                    let from = index[dep.index()];
                    if from != u32::MAX {
                        edges.push((from, index[slot]));
                    }
                }
            }
        }
        Ok(GraphView { nodes, edges })
    }

    /// Up to `limit` keys a worker is processing and up to `limit` it holds (`/info/worker`).
    pub fn worker_tasks(&self, id: WorkerId, limit: usize) -> Option<(Vec<String>, Vec<String>)> {
        let w = self.workers.get(&id)?;
        let keys = |set: &rustc_hash::FxHashSet<TaskSlot>| -> Vec<String> {
            set.iter().take(limit).map(|&t| self.tasks[t].key.to_string()).collect()
        };
        Some((keys(&w.processing), keys(&w.has_what)))
    }

    /// How many workers the cluster should have (Dask's `adaptive_target`): enough to finish
    /// the estimated work assigned and queued within `target_duration_s`, at least one while
    /// anything waits for a worker, and one more per worker whose memory is above 60 % of its
    /// limit. Below the current count only when workers sit idle.
    pub fn adaptive_target(&self, target_duration_s: f64) -> usize {
        let assigned_us: f64 = self.workers.values().map(|w| w.occupancy_us).sum();
        let queued_us: f64 = self
            .queued
            .iter()
            .map(|&(_, t)| {
                let p = &self.prefixes[self.tasks[t].prefix as usize];
                if p.finished > 0 { p.duration_us } else { 500.0 }
            })
            .sum();
        let total_s = (assigned_us + queued_us) / 1e6;
        let mut cpu = (total_s / target_duration_s.max(1e-3)).ceil() as usize;
        if !self.no_worker.is_empty() || !self.queued.is_empty() {
            cpu = cpu.max(1);
        }
        let pressed = self
            .workers
            .values()
            .filter(|w| w.info.memory_limit > 0 && w.reported.managed as f64 > 0.6 * w.info.memory_limit as f64)
            .count();
        let memory = if pressed > 0 { self.workers.len() + pressed } else { 0 };
        let target = cpu.max(memory);
        if target >= self.workers.len() {
            return target;
        }
        // Scale down only past workers with nothing to do and nothing held.
        let busy = self.workers.values().filter(|w| !w.processing.is_empty() || !w.has_what.is_empty()).count();
        target.max(busy)
    }

    /// Root tasks waiting for a worker slot.
    pub fn queued_count(&self) -> usize {
        self.queued.len()
    }

    /// The learned mean duration of a kind of task (by key prefix), in microseconds.
    pub fn duration_estimate_us(&self, prefix: &str) -> Option<f64> {
        self.prefix_index
            .get(prefix)
            .map(|&p| &self.prefixes[p as usize])
            .filter(|p| p.finished > 0)
            .map(|p| p.duration_us)
    }

    /// What was learned about every kind of task seen finishing, by key prefix.
    pub fn estimates(&self) -> Vec<PrefixEstimate> {
        self.prefixes
            .iter()
            .filter(|p| p.finished > 0)
            .map(|p| PrefixEstimate { prefix: p.name.clone(), duration_us: p.duration_us, nbytes: p.nbytes })
            .collect()
    }

    /// Counts of known tasks per state (states without tasks are left out).
    pub fn state_counts(&self) -> StateCounts {
        let mut counts = StateCounts::new();
        for t in self.tasks.live() {
            *counts.entry(t.state).or_insert(0) += 1;
        }
        counts
    }

    /// Every worker's last reported memory, in worker order.
    pub fn memory_reports(&self) -> Vec<MemoryReport> {
        self.workers.values().map(|w| w.reported).collect()
    }

    /// Approximate heap bytes held per task (for the memory budget benchmark).
    pub fn approx_bytes(&self) -> usize {
        let mut total = self.tasks.capacity() * std::mem::size_of::<Task>();
        total += self.index.capacity() * (std::mem::size_of::<u32>() + 1);
        for t in self.tasks.iter().filter(|t| t.live) {
            if let Some(body) = &t.body {
                total += std::mem::size_of::<Body>();
                if body.inputs.spilled() {
                    total += body.inputs.capacity() * std::mem::size_of::<BodyInput>();
                }
                for input in &body.inputs {
                    if let BodyInput::Literal(e) = input {
                        total += std::mem::size_of::<Encoded>() + e.nbytes() + e.tag.capacity();
                    }
                }
            }
            if t.deps.spilled() {
                total += t.deps.capacity() * 4;
            }
            if t.dependents.spilled() {
                total += t.dependents.capacity() * 4;
            }
            if t.key.index().len() > 4 {
                total += t.key.index().len() * 4;
            }
        }
        total += self
            .kernels
            .iter()
            .map(|k| std::mem::size_of::<KernelSpec>() + 16 + k.id.len() + k.params.len())
            .sum::<usize>();
        total + self.names.keys().map(|n| n.len() + 20).sum::<usize>()
    }

    /// Tasks moved between workers by stealing so far.
    pub fn stolen_count(&self) -> u64 {
        self.stolen
    }

    /// Workers not heard from since `deadline` (for the server's heartbeat check).
    pub fn silent_workers(&self, deadline: u64) -> Vec<WorkerId> {
        self.workers.values().filter(|w| w.last_seen < deadline).map(|w| w.info.id).collect()
    }
}
