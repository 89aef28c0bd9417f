//! A sequential dry run of a graph in a given order, counting live values.
//!
//! This is how orderings are judged without running kernels: a value is alive from the moment
//! its task finishes until its last reader finishes (outputs stay alive to the end). The peak of
//! that count is what bounds a scheduler's memory.

use crate::graph::{Graph, TaskId};
use crate::order::NOT_NEEDED;

/// What a dry run saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimReport {
    /// Tasks run.
    pub tasks: usize,
    /// The largest number of values alive at once.
    pub peak: usize,
}

/// An order that cannot be run as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{task} runs before its dependency {dependency}")]
pub struct NotTopological {
    /// The task run too early.
    pub task: crate::key::Key,
    /// The input it would not have yet.
    pub dependency: crate::key::Key,
}

/// Runs the needed tasks (priority != [`NOT_NEEDED`]) in priority order and reports the peak
/// number of live values.
///
/// # Errors
/// [`NotTopological`] when the priorities run a task before one of its dependencies.
pub fn peak_live(graph: &Graph, outputs: &[TaskId], priority: &[u32]) -> Result<SimReport, NotTopological> {
    peak_live_weighted(graph, outputs, priority, |_| 1)
}

/// Like [`peak_live`], but each value counts `weight(task)` (its bytes, or 1 for a block and 0
/// for a small partial result), so orders are judged by what they hold, not by how many values.
///
/// ```
/// use kiln_graph::simulate::{peak_live_weighted, shapes};
/// let (g, outs) = shapes::tree_reduction(8, 2);
/// let p = kiln_graph::order::order(&g, &outs);
/// // Counting only the leaves: at most one pending leaf per level plus the one being read.
/// let leaves = |t: kiln_graph::TaskId| u64::from(g.dependencies(t).is_empty());
/// assert!(peak_live_weighted(&g, &outs, &p, leaves).unwrap().peak <= 2);
/// ```
///
/// # Errors
/// [`NotTopological`] when the priorities run a task before one of its dependencies.
pub fn peak_live_weighted(
    graph: &Graph,
    outputs: &[TaskId],
    priority: &[u32],
    weight: impl Fn(TaskId) -> u64,
) -> Result<SimReport, NotTopological> {
    let mut run: Vec<TaskId> = graph.ids().filter(|t| priority[t.index()] != NOT_NEEDED).collect();
    run.sort_unstable_by_key(|t| priority[t.index()]);
    let mut readers_left: Vec<u32> = graph
        .ids()
        .map(|t| graph.dependents(t).iter().filter(|d| priority[d.index()] != NOT_NEEDED).count() as u32)
        .collect();
    let mut done = vec![false; graph.len()];
    let mut is_output = vec![false; graph.len()];
    for o in outputs {
        is_output[o.index()] = true;
    }
    let (mut live, mut peak) = (0u64, 0u64);
    for &t in &run {
        if let Some(d) = graph.dependencies(t).iter().find(|d| !done[d.index()]) {
            return Err(NotTopological { task: graph.key(t).clone(), dependency: graph.key(*d).clone() });
        }
        done[t.index()] = true;
        live += weight(t);
        peak = peak.max(live);
        for &d in graph.dependencies(t) {
            readers_left[d.index()] -= 1;
            if readers_left[d.index()] == 0 && !is_output[d.index()] {
                live -= weight(d);
            }
        }
        if readers_left[t.index()] == 0 && !is_output[t.index()] {
            live -= weight(t);
        }
    }
    Ok(SimReport { tasks: run.len(), peak: peak as usize })
}

/// Standard graph shapes for judging orderings and schedulers. Kernels are trivial sums of
/// `i64` inputs, so the shapes can also be run for real.
pub mod shapes {
    use std::sync::Arc;

    use crate::graph::{Arg, Graph, GraphBuilder, TaskId};
    use crate::kernel::{Kernel, input, slice_kernel};
    use crate::key::Key;
    use crate::value::Value;

    /// A kernel that sums its `i64` inputs plus one (so results are easy to predict).
    pub fn sum_plus_one() -> Arc<dyn Kernel> {
        Arc::new(slice_kernel("sum", |xs: &[Value]| {
            let mut total = 1i64;
            for i in 0..xs.len() {
                total += input::<i64>(xs, i)?;
            }
            Ok(Value::new(total))
        }))
    }

    /// Reduces `level` pairwise/`fan_in`-wise under keys named `name` until one task is left.
    pub fn tree_over(g: &mut GraphBuilder, mut level: Vec<TaskId>, fan_in: usize, name: &str) -> TaskId {
        let k = sum_plus_one();
        let name: Arc<str> = name.into();
        let mut depth = 0u32;
        while level.len() > 1 {
            level = level
                .chunks(fan_in)
                .enumerate()
                .map(|(i, group)| {
                    let key = Key::from_shared(&name, &[depth, i as u32]);
                    g.add(key, k.clone(), group.iter().map(|&t| Arg::Task(t))).expect("valid ids")
                })
                .collect();
            depth += 1;
        }
        level[0]
    }

    /// `leaves` source tasks summed by a `fan_in`-ary tree.
    pub fn tree_reduction(leaves: usize, fan_in: usize) -> (Graph, Vec<TaskId>) {
        let k = sum_plus_one();
        let mut g = GraphBuilder::with_capacity(leaves * 2);
        let name: Arc<str> = "leaf".into();
        let level: Vec<TaskId> =
            (0..leaves).map(|i| g.add(Key::from_shared(&name, &[i as u32]), k.clone(), []).unwrap()).collect();
        let root = tree_over(&mut g, level, fan_in, "tree");
        (g.build().unwrap(), vec![root])
    }

    /// `chains` independent chains of `length` tasks, their ends reduced by a tree.
    pub fn chains_then_tree(chains: usize, length: usize, fan_in: usize) -> (Graph, Vec<TaskId>) {
        let k = sum_plus_one();
        let mut g = GraphBuilder::new();
        let name: Arc<str> = "chain".into();
        let ends: Vec<TaskId> = (0..chains)
            .map(|c| {
                let mut t = g.add(Key::from_shared(&name, &[c as u32, 0]), k.clone(), []).unwrap();
                for s in 1..length {
                    t = g.add(Key::from_shared(&name, &[c as u32, s as u32]), k.clone(), [Arg::Task(t)]).unwrap();
                }
                t
            })
            .collect();
        let root = tree_over(&mut g, ends, fan_in, "tree");
        (g.build().unwrap(), vec![root])
    }

    /// A `rows` x `width` lattice of diamonds: node (r, j) reads (r-1, j) and (r-1, j+1); the
    /// last row (which shrinks by one per row) is the output.
    pub fn diamond_lattice(rows: usize, width: usize) -> (Graph, Vec<TaskId>) {
        let k = sum_plus_one();
        let mut g = GraphBuilder::new();
        let name: Arc<str> = "lattice".into();
        let mut row: Vec<TaskId> =
            (0..width + rows).map(|j| g.add(Key::from_shared(&name, &[0, j as u32]), k.clone(), []).unwrap()).collect();
        for r in 1..rows {
            row = (0..row.len() - 1)
                .map(|j| {
                    let key = Key::from_shared(&name, &[r as u32, j as u32]);
                    g.add(key, k.clone(), [Arg::Task(row[j]), Arg::Task(row[j + 1])]).unwrap()
                })
                .collect();
        }
        (g.build().unwrap(), row)
    }

    /// Blocks `x[i,j]` of an `n` x `n` grid, `z[i,j] = x[i,j] + x[j,i]`, then a tree sum: the
    /// shape of `(x + x.T).sum()`.
    pub fn transpose_sum(n: usize, fan_in: usize) -> (Graph, Vec<TaskId>) {
        let k = sum_plus_one();
        let mut g = GraphBuilder::new();
        let (xn, zn): (Arc<str>, Arc<str>) = ("x".into(), "z".into());
        let x: Vec<TaskId> = (0..n * n)
            .map(|b| g.add(Key::from_shared(&xn, &[(b / n) as u32, (b % n) as u32]), k.clone(), []).unwrap())
            .collect();
        let z: Vec<TaskId> = (0..n * n)
            .map(|b| {
                let (i, j) = (b / n, b % n);
                let key = Key::from_shared(&zn, &[i as u32, j as u32]);
                g.add(key, k.clone(), [Arg::Task(x[i * n + j]), Arg::Task(x[j * n + i])]).unwrap()
            })
            .collect();
        let root = tree_over(&mut g, z, fan_in, "tree");
        (g.build().unwrap(), vec![root])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::Key;

    #[test]
    fn detects_non_topological_orders() {
        let (g, outs) = shapes::tree_reduction(4, 2);
        let backwards: Vec<u32> = (0..g.len() as u32).rev().collect();
        let err = peak_live(&g, &outs, &backwards).unwrap_err();
        // The task named runs first, and the one it names is really its input.
        let id = |k: &Key| g.ids().find(|&t| g.key(t) == k).unwrap();
        let (task, dependency) = (id(&err.task), id(&err.dependency));
        assert!(backwards[task.index()] < backwards[dependency.index()], "{err}");
        assert!(g.dependencies(task).contains(&dependency), "{err}");
    }

    #[test]
    fn breadth_first_is_worse_than_kiln_order_on_trees() {
        let (g, outs) = shapes::tree_reduction(4096, 8);
        let by_id: Vec<u32> = (0..g.len() as u32).collect();
        let naive = peak_live(&g, &outs, &by_id).unwrap().peak;
        let ours = peak_live(&g, &outs, &crate::order::order(&g, &outs)).unwrap().peak;
        assert_eq!(naive, 4097);
        assert!(ours * 100 < naive, "kiln order peak {ours} vs breadth-first {naive}");
    }
}
