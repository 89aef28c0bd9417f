//! Reading a stored value again instead of holding it.
//!
//! A task that reads a block from storage (a Zarr chunk, a `.npy` file, a Parquet row group) can
//! run again and give an equal value: its kernel says so with [`Kernel::reread_bytes`]. When
//! such a value has readers far apart in the run order, holding it from its first reader to its
//! last keeps it alive across everything in between. On `x + x.T - x.mean(axis=0)` over a store,
//! the order has to read every block for the column means long before the transposed blocks that
//! pair with it are consumed, and holding them all costs a quarter of the array or more.
//!
//! [`split_rereads`] trades reads for memory: it gives a far-away group of readers a copy of the
//! read task of its own (same kernel, a key with one more index), so each copy lives only while
//! its own group runs. It picks the *fewest* extra reads that keep the stored bytes held at once
//! under a cap: a reader starts a new group when the gap to the previous reader (in tasks of the
//! static order) exceeds a window, and the window is the largest whose held peak fits. The
//! estimate replays the order once; every candidate window costs one sweep over the readers.
//!
//! How the engines choose between the ways of not holding a value, cheapest first:
//! regenerating it from its index (array sources such as `ones` or `random`, done by the array
//! collection before tasks exist), reading it again from storage (here), and spilling it to
//! disk (the executors, at run time, for values nothing can recompute).

use std::sync::Arc;

use std::collections::HashMap;

use crate::error::GraphError;
use crate::graph::{Arg, Graph, GraphBuilder, Input, TaskId};
use crate::key::Key;
use crate::order::{NOT_NEEDED, order};

/// A graph whose far-apart readers got their own reads, from [`split_rereads`].
pub struct Split {
    /// The graph with the copies.
    pub graph: Graph,
    /// The outputs in `graph`.
    pub outputs: Vec<TaskId>,
    /// The order the decision assumed: the original order with each copy just before its first
    /// reader (dense priorities, [`NOT_NEEDED`] for unneeded tasks). Run in another order, the
    /// copies may be held longer than planned; attach it with [`Graph::with_planned_order`].
    pub priority: Vec<u32>,
    /// What was decided.
    pub plan: RereadPlan,
}

/// What [`split_rereads`] decided, for `explain` output and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RereadPlan {
    /// Re-readable tasks with more than one reader (the candidates).
    pub sources: usize,
    /// Read tasks added (each reads its block once more).
    pub extra_reads: usize,
    /// Bytes the extra reads read, as the kernels report them.
    pub extra_bytes: u64,
    /// Stored bytes held at once in the static order without re-reading (estimate).
    pub held_before: u64,
    /// The same with the chosen re-reads (estimate).
    pub held_after: u64,
    /// The cap asked for.
    pub cap: u64,
}

impl std::fmt::Display for RereadPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::memory::format_bytes as b;
        if self.extra_reads == 0 {
            write!(
                f,
                "stored blocks are held ({} at once for {} re-readable tasks, within the cap of {})",
                b(self.held_before),
                self.sources,
                b(self.cap)
            )
        } else {
            write!(
                f,
                "{} stored blocks are read again ({} more read) so that {} instead of {} are held \
                 at once (cap {})",
                self.extra_reads,
                b(self.extra_bytes),
                b(self.held_after),
                b(self.held_before),
                b(self.cap)
            )
        }
    }
}

/// One re-readable task: its readers in run order and the gaps between them.
struct Candidate {
    task: TaskId,
    bytes: u64,
    /// Readers sorted by run position, with their positions.
    readers: Vec<(u32, TaskId)>,
}

impl Candidate {
    /// The held intervals `[start, end]` (run positions) when a gap wider than `window` starts
    /// a new group; the first group starts where the task itself runs.
    fn intervals(&self, own_position: u32, window: u32, mut emit: impl FnMut(u32, u32)) {
        let (mut start, mut last) = (own_position.min(self.readers[0].0), self.readers[0].0);
        for &(p, _) in &self.readers[1..] {
            if p - last > window {
                emit(start, last);
                start = p;
            }
            last = p;
        }
        emit(start, last);
    }
}

/// Gives far-apart readers of a re-readable task their own copy of it, using the fewest extra
/// reads that keep the stored bytes held at once (estimated over the static order) at or below
/// `cap`. Returns `None` when nothing needs to change (no re-readable task with several readers,
/// or holding them all fits). When even one read per reader exceeds the cap, every reader gets
/// its own read: the least that can be held.
///
/// ```
/// use std::sync::Arc;
/// use kiln_graph::{Arg, GraphBuilder, Key, Kernel, TaskError, Value, kernel::func2};
/// use kiln_graph::reread::split_rereads;
///
/// /// Stands for a block read from storage: 8 bytes, readable again.
/// struct Stored;
/// impl Kernel for Stored {
///     fn name(&self) -> &str { "stored" }
///     fn call(&self, _: &[Value]) -> Result<Value, TaskError> { Ok(Value::new(1i64)) }
///     fn reread_bytes(&self) -> Option<u64> { Some(8) }
/// }
/// let add: Arc<dyn Kernel> = Arc::new(func2("add", |a: &i64, b: &i64| a + b));
/// let mut g = GraphBuilder::new();
/// let blocks: Vec<_> = (0..4).map(|i| g.add(Key::with_index("x", [i]), Arc::new(Stored), []).unwrap()).collect();
/// // A chain that reads every block twice: once going forward, once coming back.
/// let mut acc = g.add(Key::new("start"), add.clone(), [Arg::Task(blocks[0]), Arg::Task(blocks[0])]).unwrap();
/// for (step, i) in (1..4).chain((0..4).rev()).enumerate() {
///     acc = g.add(Key::with_index("acc", [step as u32]), add.clone(), [Arg::Task(acc), Arg::Task(blocks[i])]).unwrap();
/// }
/// let g = g.build().unwrap();
/// let split = split_rereads(&g, &[acc], 16).unwrap().expect("holding all four exceeds 16 bytes");
/// let plan = split.plan;
/// assert!(plan.extra_reads > 0 && plan.held_after <= 16 && plan.held_before > 16);
/// assert_eq!(split.graph.len(), g.len() + plan.extra_reads);
/// ```
///
/// # Errors
/// [`GraphError::UnknownTask`] for an output outside the graph.
pub fn split_rereads(graph: &Graph, outputs: &[TaskId], cap: u64) -> Result<Option<Split>, GraphError> {
    graph.check_outputs(outputs)?;
    let mut is_output = vec![false; graph.len()];
    for o in outputs {
        is_output[o.index()] = true;
    }
    let is_candidate =
        |t: TaskId| graph.dependencies(t).is_empty() && !is_output[t.index()] && graph.dependents(t).len() > 1;
    if !graph.ids().any(|t| is_candidate(t) && graph.kernel(t).reread_bytes().is_some()) {
        return Ok(None);
    }

    let priority = order(graph, outputs);
    let mut run: Vec<TaskId> = graph.ids().filter(|t| priority[t.index()] != NOT_NEEDED).collect();
    run.sort_unstable_by_key(|t| priority[t.index()]);
    let mut position = vec![u32::MAX; graph.len()];
    for (p, t) in run.iter().enumerate() {
        position[t.index()] = p as u32;
    }
    let mut candidates: Vec<Candidate> = Vec::new();
    for &t in &run {
        if !is_candidate(t) {
            continue;
        }
        let Some(bytes) = graph.kernel(t).reread_bytes() else { continue };
        let mut readers: Vec<(u32, TaskId)> = graph
            .dependents(t)
            .iter()
            .filter(|r| position[r.index()] != u32::MAX)
            .map(|&r| (position[r.index()], r))
            .collect();
        if readers.len() < 2 {
            continue;
        }
        readers.sort_unstable();
        candidates.push(Candidate { task: t, bytes, readers });
    }
    if candidates.is_empty() {
        return Ok(None);
    }

    let held_peak = |window: u32| -> u64 {
        // Difference array over run positions: +bytes at an interval's start, -bytes after its end.
        let mut delta = vec![0i128; run.len() + 1];
        for c in &candidates {
            c.intervals(position[c.task.index()], window, |s, e| {
                delta[s as usize] += i128::from(c.bytes);
                delta[e as usize + 1] -= i128::from(c.bytes);
            });
        }
        let (mut live, mut peak) = (0i128, 0i128);
        for d in delta {
            live += d;
            peak = peak.max(live);
        }
        peak as u64
    };
    let held_before = held_peak(u32::MAX);
    let sources = candidates.len();
    if held_before <= cap {
        return Ok(None);
    }
    // The peak only grows with the window: search the largest window among the gaps that occur.
    let mut windows: Vec<u32> =
        candidates.iter().flat_map(|c| c.readers.windows(2).map(|w| w[1].0 - w[0].0)).chain([0]).collect();
    windows.sort_unstable();
    windows.dedup();
    let (mut lo, mut hi) = (0usize, windows.len() - 1);
    // The largest window index whose peak fits, or 0 (one read per reader) when none does.
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if held_peak(windows[mid]) <= cap { lo = mid } else { hi = mid - 1 }
    }
    let window = windows[lo];
    let held_after = held_peak(window);

    // Group every reader of every candidate: group 0 keeps the original task.
    let mut group_of: HashMap<(TaskId, TaskId), u32> = HashMap::new();
    let mut groups = vec![1u32; graph.len()];
    for c in &candidates {
        let (mut group, mut last) = (0u32, c.readers[0].0);
        for &(p, r) in &c.readers {
            if p - last > window {
                group += 1;
            }
            last = p;
            group_of.insert((c.task, r), group);
        }
        groups[c.task.index()] = group + 1;
    }
    let extra_reads: usize = candidates.iter().map(|c| groups[c.task.index()] as usize - 1).sum();
    if extra_reads == 0 {
        return Ok(None);
    }
    let extra_bytes = candidates.iter().map(|c| u64::from(groups[c.task.index()] - 1) * c.bytes).sum();

    let mut builder = GraphBuilder::for_rebuild(graph.len() + extra_reads);
    // Per original task: the new id of copy 0; copies 1.. follow it consecutively.
    let mut first_copy = vec![TaskId(u32::MAX); graph.len()];
    // Sort keys of the planned order: an original task keeps its place (2p + 1); a copy goes
    // just before its group's first reader (2p).
    let mut place: Vec<u64> = Vec::with_capacity(graph.len() + extra_reads);
    let mut copy_place: HashMap<(TaskId, u32), u32> = HashMap::new();
    for c in &candidates {
        for &(p, r) in &c.readers {
            copy_place.entry((c.task, group_of[&(c.task, r)])).or_insert(p);
        }
    }
    for &t in graph.topological_order() {
        let args: Vec<Arg> = graph
            .inputs(t)
            .iter()
            .map(|input| match input {
                Input::Task(d) => {
                    let group = if groups[d.index()] > 1 { group_of[&(*d, t)] } else { 0 };
                    Arg::Task(TaskId(first_copy[d.index()].0 + group))
                }
                Input::Literal(v) => Arg::Literal(v.clone()),
            })
            .collect();
        let key = graph.key(t);
        first_copy[t.index()] = builder.add(key.clone(), graph.kernel(t).clone(), args)?;
        let own = position[t.index()];
        place.push(if own == u32::MAX { u64::MAX } else { 2 * u64::from(own) + 1 });
        if groups[t.index()] > 1 {
            let name = copy_name(key.shared_name());
            for copy in 1..groups[t.index()] {
                let index: Vec<u32> = key.index().iter().copied().chain([copy]).collect();
                builder.add(Key::from_shared(&name, &index), graph.kernel(t).clone(), [])?;
                place.push(2 * u64::from(copy_place[&(t, copy)]));
            }
        }
    }
    let split = builder.build()?;
    let outputs = outputs.iter().map(|o| first_copy[o.index()]).collect();
    let priority = dense_priorities(&place);
    Ok(Some(Split {
        graph: split,
        outputs,
        priority,
        plan: RereadPlan { sources, extra_reads, extra_bytes, held_before, held_after, cap },
    }))
}

/// Ranks of sort keys as priorities (`u64::MAX` stays unneeded).
fn dense_priorities(place: &[u64]) -> Vec<u32> {
    let mut by_place: Vec<u32> = (0..place.len() as u32).filter(|&i| place[i as usize] != u64::MAX).collect();
    by_place.sort_unstable_by_key(|&i| place[i as usize]);
    let mut priority = vec![NOT_NEEDED; place.len()];
    for (rank, i) in by_place.into_iter().enumerate() {
        priority[i as usize] = rank as u32;
    }
    priority
}

/// The name of the copies of a read: the original name with `reread` before its token
/// (`from-zarr-reread-8f3a…`), so progress bars and graphs show the extra reads as their own kind.
fn copy_name(name: &Arc<str>) -> Arc<str> {
    let prefix_end = name.rfind('-').filter(|&p| p > 0 && name[p + 1..].chars().all(|c| c.is_ascii_hexdigit()));
    match prefix_end {
        Some(p) => format!("{}-reread{}", &name[..p], &name[p..]).into(),
        None => format!("{name}-reread").into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::{Kernel, func2};
    use crate::{TaskError, Value};

    struct Stored(Option<u64>);
    impl Kernel for Stored {
        fn name(&self) -> &str {
            "stored"
        }
        fn call(&self, _: &[Value]) -> Result<Value, TaskError> {
            Ok(Value::new(1i64))
        }
        fn reread_bytes(&self) -> Option<u64> {
            self.0
        }
    }

    /// `blocks` stored blocks read by a chain going forward, then by one coming back: block `i`
    /// has readers far apart (except the last).
    fn there_and_back(blocks: u32, rereadable: bool) -> (Graph, TaskId) {
        let add: Arc<dyn Kernel> = Arc::new(func2("add", |a: &i64, b: &i64| a + b));
        let mut g = GraphBuilder::new();
        let x: Vec<_> = (0..blocks)
            .map(|i| g.add(Key::with_index("x", [i]), Arc::new(Stored(rereadable.then_some(8))), []).unwrap())
            .collect();
        let mut acc = g.add(Key::new("start"), add.clone(), [Arg::Task(x[0]), Arg::Task(x[0])]).unwrap();
        for (step, i) in (1..blocks as usize).chain((0..blocks as usize).rev()).enumerate() {
            acc = g.add(Key::with_index("acc", [step as u32]), add.clone(), [Arg::Task(acc), Arg::Task(x[i])]).unwrap();
        }
        (g.build().unwrap(), acc)
    }

    fn run_all(g: &Graph, outputs: &[TaskId]) -> i64 {
        let p = g.planned_order(outputs).map(<[u32]>::to_vec).unwrap_or_else(|| order(g, outputs));
        let mut ids: Vec<TaskId> = g.ids().filter(|t| p[t.index()] != NOT_NEEDED).collect();
        ids.sort_unstable_by_key(|t| p[t.index()]);
        let mut values: Vec<Option<Value>> = vec![None; g.len()];
        for t in ids {
            let inputs: Vec<Value> = g
                .inputs(t)
                .iter()
                .map(|i| match i {
                    Input::Task(d) => values[d.index()].clone().expect("planned order is topological"),
                    Input::Literal(v) => v.clone(),
                })
                .collect();
            values[t.index()] = Some(g.kernel(t).call(&inputs).unwrap());
        }
        *values[outputs[0].index()].as_ref().unwrap().downcast_ref::<i64>().unwrap()
    }

    #[test]
    fn nothing_to_do_without_rereadable_tasks_or_when_holding_fits() {
        let (g, out) = there_and_back(6, false);
        assert!(split_rereads(&g, &[out], 0).unwrap().is_none());
        let (g, out) = there_and_back(6, true);
        assert!(split_rereads(&g, &[out], 6 * 8).unwrap().is_none());
    }

    #[test]
    fn far_readers_get_their_own_read_and_the_answer_is_unchanged() {
        let (g, out) = there_and_back(10, true);
        let want = run_all(&g, &[out]);
        for cap in [0, 8, 16, 40] {
            let split = split_rereads(&g, &[out], cap).unwrap().expect("holding ten blocks exceeds the cap");
            let outputs = split.outputs.clone();
            let plan = split.plan;
            assert!(plan.held_after <= cap.max(16), "cap {cap}: {plan:?}");
            assert_eq!(split.graph.len(), g.len() + plan.extra_reads);
            assert_eq!(plan.extra_bytes, 8 * plan.extra_reads as u64);
            let planned = split.graph.with_planned_order(&outputs, split.priority).unwrap();
            assert_eq!(run_all(&planned, &outputs), want);
            let held = |t: TaskId| u64::from(planned.key(t).name().starts_with('x')) * 8;
            let peak =
                crate::simulate::peak_live_weighted(&planned, &outputs, &order(&planned, &outputs), held).unwrap();
            assert!(
                peak.peak as u64 <= plan.held_after,
                "cap {cap}: simulated {} > planned {}",
                peak.peak,
                plan.held_after
            );
        }
    }

    #[test]
    fn outputs_and_single_reader_tasks_are_not_copied() {
        let (g, out) = there_and_back(4, true);
        let x0 = g.id_of(&Key::with_index("x", [0])).unwrap();
        let split = split_rereads(&g, &[out, x0], 0).unwrap().unwrap();
        assert!(split.graph.ids().all(|t| split.graph.key(t).index() != [0, 1]), "an output was copied");
        // Cap 0: every other reader reads on its own; x[1..4] have two readers each.
        assert_eq!(split.plan.extra_reads, 3);
        assert_eq!(split.plan.sources, 3);
    }

    #[test]
    fn a_planned_order_must_fit_its_graph() {
        let (g, out) = there_and_back(3, true);
        assert!(matches!(g.with_planned_order(&[out], vec![0; 2]), Err(GraphError::InvalidOrder(_))));
        let (g, out) = there_and_back(3, true);
        let mut backwards = order(&g, &[out]);
        backwards.reverse();
        assert!(matches!(g.with_planned_order(&[out], backwards), Err(GraphError::InvalidOrder(_))));
    }
}
