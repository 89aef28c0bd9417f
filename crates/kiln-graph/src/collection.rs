//! Collections: anything that authors part of a graph and turns computed values back into a
//! typed result. `compute` of several collections at once builds one graph, so the tasks they
//! share (same keys) run once, like Dask's `compute(a, b)`.

use crate::error::{ComputeError, GraphError};
use crate::fuse::fuse_linear;
use crate::graph::{Graph, GraphBuilder, TaskId};
use crate::scheduler::Scheduler;
use crate::value::Value;

/// A lazily computed result: adds its tasks to a graph and assembles its output values.
pub trait Collection {
    /// What computing it gives.
    type Output;

    /// Adds this collection's tasks (deduplicated by key) and returns the tasks whose values
    /// make up the result.
    ///
    /// # Errors
    /// [`GraphError::InvalidCollection`] (with the collection's own error as its cause) when
    /// the collection was built from invalid operations; computing it then reports
    /// [`ComputeError::InvalidCollection`]. Other [`GraphError`]s when its graph is invalid.
    fn add_to(&self, builder: &mut GraphBuilder) -> Result<Vec<TaskId>, GraphError>;

    /// Adds the tasks as written, one per operation, without the collection's own fusion: what
    /// `visualize` draws (Dask draws unoptimized graphs too). The same as `add_to` by default.
    ///
    /// # Errors
    /// As [`Collection::add_to`].
    fn add_to_unfused(&self, builder: &mut GraphBuilder) -> Result<Vec<TaskId>, GraphError> {
        self.add_to(builder)
    }

    /// How many tasks [`Collection::add_to`] returns (to split a combined computation).
    fn output_count(&self) -> usize;

    /// The bytes the assembled result will take, when known before computing (an array's
    /// `nbytes`); `None` when unknown. `compute_on` refuses a result that does not fit in the
    /// memory available ([`crate::memory::check_result`]) before building anything.
    fn result_nbytes(&self) -> Option<u64> {
        None
    }

    /// Builds the result from the values of the tasks `add_to` returned, in the same order.
    ///
    /// # Errors
    /// [`ComputeError::ResultType`] when a value has an unexpected type.
    fn assemble(&self, graph: &Graph, outputs: &[TaskId], values: Vec<Value>) -> Result<Self::Output, ComputeError>;

    /// Computes this collection on `scheduler` (a local scheduler, a distributed client, ...):
    /// build the graph, cull and fuse it, run it, assemble the result. The one way to pick a
    /// scheduler for one computation (Dask's `x.compute(scheduler=...)`); the facade's
    /// `compute()` uses the default scheduler.
    ///
    /// With the facade: `x.sum().scalar().compute_on(&LocalScheduler::new())`.
    ///
    /// # Errors
    /// [`ComputeError::InvalidCollection`] for a collection built from invalid operations, the
    /// first failing task ([`ComputeError::Task`]), or a result of an unexpected type.
    fn compute_on(&self, scheduler: &dyn Scheduler) -> Result<Self::Output, ComputeError> {
        run_on(self, scheduler)
    }
}

/// A collection that can stand for results already held by a cluster (Dask's `persist`): a
/// distributed client computes the collection's outputs, keeps them in cluster memory, and
/// hands back the same collection whose output tasks are those remote values (same keys), so
/// later computations start from them.
pub trait Persist: Collection + Sized {
    /// This collection with its outputs replaced by remote values; `keep_alive` (the client's
    /// references) lives as long as the returned collection and its graphs.
    fn with_remote_outputs(&self, keep_alive: Value) -> Self;
}

/// The graph of a collection and its output tasks, without running anything.
///
/// # Errors
/// When the graph is invalid.
pub fn graph_of<C: Collection + ?Sized>(collection: &C) -> Result<(Graph, Vec<TaskId>), GraphError> {
    let mut builder = GraphBuilder::new();
    let outputs = collection.add_to(&mut builder)?;
    Ok((builder.build()?, outputs))
}

/// Culls and fuses a graph for running: what an engine should receive.
///
/// # Errors
/// When an output id is not in the graph.
pub fn optimize(graph: Graph, outputs: Vec<TaskId>) -> Result<(Graph, Vec<TaskId>), GraphError> {
    optimize_for(graph, outputs, None).map(|o| (o.graph, o.outputs))
}

/// How many parts of a scheduler's memory target stored blocks kept for a later reader may
/// take: past [`reread_cap`], far-apart readers read the block again ([`crate::reread`]). The
/// rest of the target is for everything else a run holds (intermediates, partial results, the
/// blocks being computed).
pub const REREAD_SHARE: u64 = 8;

/// The most stored bytes kept for later readers, whatever the target: reading a block again
/// from the page cache costs little (the seed expression over a 3.2 GB Zarr store: 2.06 s
/// holding at most 512 MB of stored blocks, 1.97 s holding 960 MB), so a large memory target is
/// not spent on it.
pub const REREAD_CAP_MAX: u64 = 512 << 20;

/// The stored bytes a run may keep for later readers under a scheduler's memory target:
/// `target / REREAD_SHARE`, at most [`REREAD_CAP_MAX`].
pub fn reread_cap(memory_target: u64) -> u64 {
    (memory_target / REREAD_SHARE).min(REREAD_CAP_MAX)
}

/// A graph ready to run, and what the optimizations decided.
pub struct Optimized {
    /// The graph to run.
    pub graph: Graph,
    /// The output tasks in `graph`.
    pub outputs: Vec<TaskId>,
    /// Tasks before culling.
    pub tasks_written: usize,
    /// Tasks after culling (before fusion).
    pub tasks_needed: usize,
    /// What re-reading decided, when a memory target was given and re-readable tasks exist.
    pub reread: Option<crate::reread::RereadPlan>,
}

/// Culls, re-reads (given a scheduler's memory target: see [`reread_cap`]) and fuses a graph.
///
/// # Errors
/// When an output id is not in the graph.
pub fn optimize_for(graph: Graph, outputs: Vec<TaskId>, memory_target: Option<u64>) -> Result<Optimized, GraphError> {
    let tasks_written = graph.len();
    let (graph, outputs) = match crate::cull::cull(&graph, &outputs)? {
        Some(culled) => culled,
        None => (graph, outputs),
    };
    let tasks_needed = graph.len();
    let split = match memory_target {
        Some(target) => crate::reread::split_rereads(&graph, &outputs, reread_cap(target))?,
        None => None,
    };
    let Some(split) = split else {
        let (graph, outputs) = match fuse_linear(&graph, &outputs)? {
            Some(fused) => fused,
            None => (graph, outputs),
        };
        return Ok(Optimized { graph, outputs, tasks_written, tasks_needed, reread: None });
    };
    let reread = Some(split.plan);
    let (graph, outputs) = match fuse_linear(&split.graph, &split.outputs)? {
        Some((fused, outputs)) => {
            // A fused task runs where the last task of its chain (whose key it keeps) was planned.
            let priority = fused
                .ids()
                .map(|t| {
                    split.graph.id_of(fused.key(t)).map_or(crate::order::NOT_NEEDED, |s| split.priority[s.index()])
                })
                .collect();
            (fused.with_planned_order(&outputs, priority)?, outputs)
        }
        None => (split.graph.with_planned_order(&split.outputs, split.priority)?, split.outputs),
    };
    Ok(Optimized { graph, outputs, tasks_written, tasks_needed, reread })
}

/// Build, optimize, run, assemble: the body of [`Collection::compute_on`], kept out of the
/// trait so the tuple and `Vec` impls share it.
fn run_on<C: Collection + ?Sized>(collection: &C, scheduler: &dyn Scheduler) -> Result<C::Output, ComputeError> {
    check_result_fits(collection)?;
    let (graph, outputs) = graph_of(collection)?;
    let Optimized { graph, outputs, .. } = optimize_for(graph, outputs, scheduler.memory_target())?;
    let values = scheduler.compute(&graph, &outputs)?;
    collection.assemble(&graph, &outputs, values)
}

/// Refuses to compute a result that cannot be held: assembling it would abort the process.
///
/// # Errors
/// [`ComputeError::TooLarge`] naming the result's size and the memory available.
pub fn check_result_fits<C: Collection + ?Sized>(collection: &C) -> Result<(), ComputeError> {
    match collection.result_nbytes() {
        Some(bytes) => crate::memory::check_result("result", bytes).map_err(|e| {
            ComputeError::TooLarge(
                e.with_advice("compute a smaller piece or a reduction of it, or write it to storage (to_zarr) instead"),
            )
        }),
        None => Ok(()),
    }
}

/// The sum of the known result sizes of several collections (`None` if none is known).
fn sum_nbytes(sizes: impl IntoIterator<Item = Option<u64>>) -> Option<u64> {
    sizes.into_iter().flatten().fold(None, |acc, n| Some(acc.unwrap_or(0u64).saturating_add(n)))
}

macro_rules! tuple_collections {
    ($(($($c:ident : $i:tt),+)),* $(,)?) => {$(
        impl<$($c: Collection),+> Collection for ($($c,)+) {
            type Output = ($($c::Output,)+);

            fn add_to(&self, builder: &mut GraphBuilder) -> Result<Vec<TaskId>, GraphError> {
                let mut all = Vec::new();
                $(all.extend(self.$i.add_to(builder)?);)+
                Ok(all)
            }

            fn output_count(&self) -> usize {
                0 $(+ self.$i.output_count())+
            }

            fn result_nbytes(&self) -> Option<u64> {
                sum_nbytes([$(self.$i.result_nbytes()),+])
            }

            #[allow(unused_assignments)]
            fn assemble(&self, graph: &Graph, outputs: &[TaskId], values: Vec<Value>) -> Result<Self::Output, ComputeError> {
                let mut values = values.into_iter();
                let mut outputs = outputs;
                Ok(($(
                    {
                        let n = self.$i.output_count();
                        let part: Vec<Value> = values.by_ref().take(n).collect();
                        let (mine, rest) = outputs.split_at(n);
                        outputs = rest;
                        self.$i.assemble(graph, mine, part)?
                    },
                )+))
            }
        }
    )*};
}

tuple_collections!((A: 0, B: 1), (A: 0, B: 1, C: 2), (A: 0, B: 1, C: 2, D: 3));

impl<C: Collection> Collection for Vec<C> {
    type Output = Vec<C::Output>;

    fn add_to(&self, builder: &mut GraphBuilder) -> Result<Vec<TaskId>, GraphError> {
        let mut all = Vec::new();
        for c in self {
            all.extend(c.add_to(builder)?);
        }
        Ok(all)
    }

    fn output_count(&self) -> usize {
        self.iter().map(C::output_count).sum()
    }

    fn result_nbytes(&self) -> Option<u64> {
        sum_nbytes(self.iter().map(C::result_nbytes))
    }

    fn assemble(&self, graph: &Graph, outputs: &[TaskId], values: Vec<Value>) -> Result<Self::Output, ComputeError> {
        let mut values = values.into_iter();
        let mut outputs = outputs;
        self.iter()
            .map(|c| {
                let n = c.output_count();
                let (mine, rest) = outputs.split_at(n);
                outputs = rest;
                c.assemble(graph, mine, values.by_ref().take(n).collect())
            })
            .collect()
    }
}
