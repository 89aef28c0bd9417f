//! Culling: keep only the tasks the requested outputs need.
//!
//! Collections build graphs generously (every chunk of every intermediate); asking for one
//! chunk of the result should run only that chunk's ancestors.

use crate::error::GraphError;
use crate::graph::{Arg, Graph, GraphBuilder, Input, TaskId};

/// Marks the tasks that `outputs` transitively depend on (outputs included).
pub fn needed(graph: &Graph, outputs: &[TaskId]) -> Vec<bool> {
    let mut mark = vec![false; graph.len()];
    let mut stack: Vec<TaskId> = Vec::with_capacity(outputs.len());
    for &o in outputs {
        if !mark[o.index()] {
            mark[o.index()] = true;
            stack.push(o);
        }
    }
    while let Some(t) = stack.pop() {
        for &d in graph.dependencies(t) {
            if !mark[d.index()] {
                mark[d.index()] = true;
                stack.push(d);
            }
        }
    }
    mark
}

/// The graph restricted to what `outputs` need, with the outputs' new ids; `None` when every
/// task is needed (nothing to copy).
///
/// ```
/// use std::sync::Arc;
/// use kiln_graph::{GraphBuilder, Key, Arg, Kernel, cull::cull, kernel::func1};
/// let inc: Arc<dyn Kernel> = Arc::new(func1("inc", |x: &i64| x + 1));
/// let mut g = GraphBuilder::new();
/// let a = g.add(Key::new("a"), inc.clone(), [Arg::literal(1i64)]).unwrap();
/// let _unused = g.add(Key::new("b"), inc.clone(), [Arg::literal(2i64)]).unwrap();
/// let c = g.add(Key::new("c"), inc, [Arg::Task(a)]).unwrap();
/// let g = g.build().unwrap();
/// let (culled, outputs) = cull(&g, &[c]).unwrap().unwrap();
/// assert_eq!(culled.len(), 2);
/// assert_eq!(culled.key(outputs[0]), &Key::new("c"));
/// ```
///
/// # Errors
/// [`GraphError::UnknownTask`] for an output id outside the graph.
pub fn cull(graph: &Graph, outputs: &[TaskId]) -> Result<Option<(Graph, Vec<TaskId>)>, GraphError> {
    graph.check_outputs(outputs)?;
    let keep = needed(graph, outputs);
    if keep.iter().all(|&k| k) {
        return Ok(None);
    }
    let (sub, remap) = subgraph(graph, &keep)?;
    Ok(Some((sub, outputs.iter().map(|o| remap[o.index()]).collect())))
}

/// Copies the kept tasks into a new graph (in topological order) and returns it with the map
/// from old ids to new ids (`TaskId(u32::MAX)` for dropped tasks).
///
/// # Errors
/// Only if the kept set is not closed under dependencies ([`GraphError::UnknownTask`]).
pub fn subgraph(graph: &Graph, keep: &[bool]) -> Result<(Graph, Vec<TaskId>), GraphError> {
    let count = keep.iter().filter(|&&k| k).count();
    let mut builder = GraphBuilder::for_rebuild(count);
    let mut remap = vec![TaskId(u32::MAX); graph.len()];
    for &t in graph.topological_order() {
        if !keep[t.index()] {
            continue;
        }
        let args = graph.inputs(t).iter().map(|input| match input {
            Input::Task(d) => Arg::Task(remap[d.index()]),
            Input::Literal(v) => Arg::Literal(v.clone()),
        });
        remap[t.index()] = builder.add(graph.key(t).clone(), graph.kernel(t).clone(), args)?;
    }
    Ok((builder.build()?, remap))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;
    use crate::key::Key;
    use crate::simulate::shapes::sum_plus_one;

    /// A random DAG: task `i` depends on up to three earlier tasks chosen by `picks`.
    fn random_dag(picks: &[(u8, u16, u16, u16)]) -> Graph {
        let k = sum_plus_one();
        let mut g = GraphBuilder::new();
        let mut ids: Vec<TaskId> = Vec::new();
        for (i, &(n, a, b, c)) in picks.iter().enumerate() {
            let deps: BTreeSet<usize> = if i == 0 {
                BTreeSet::new()
            } else {
                [a, b, c].iter().take(n as usize % 4).map(|&d| d as usize % i).collect()
            };
            let args: Vec<Arg> = deps.into_iter().map(|d| Arg::Task(ids[d])).collect();
            ids.push(g.add(Key::with_index("t", [i as u32]), k.clone(), args).unwrap());
        }
        g.build().unwrap()
    }

    /// Ancestors by a fixed point over keys, independent of `needed`'s walk.
    fn ancestors_by_fixed_point(graph: &Graph, outputs: &[TaskId]) -> BTreeSet<Key> {
        let mut set: BTreeSet<usize> = outputs.iter().map(|o| o.index()).collect();
        loop {
            let before = set.len();
            for t in 0..graph.len() {
                if set.contains(&t) {
                    let deps: Vec<usize> = graph.dependencies(TaskId(t as u32)).iter().map(|d| d.index()).collect();
                    set.extend(deps);
                }
            }
            if set.len() == before {
                return set.into_iter().map(|t| graph.key(TaskId(t as u32)).clone()).collect();
            }
        }
    }

    proptest! {
        #[test]
        fn culling_keeps_exactly_the_ancestors_of_the_outputs(
            picks in prop::collection::vec(any::<(u8, u16, u16, u16)>(), 1..60),
            outs in prop::collection::vec(any::<u16>(), 1..4),
        ) {
            let graph = random_dag(&picks);
            let outputs: Vec<TaskId> = outs.iter().map(|&o| TaskId(o as u32 % graph.len() as u32)).collect();
            let want = ancestors_by_fixed_point(&graph, &outputs);
            match cull(&graph, &outputs).unwrap() {
                None => prop_assert_eq!(want.len(), graph.len()),
                Some((culled, new_outputs)) => {
                    let kept: BTreeSet<Key> = culled.keys().iter().cloned().collect();
                    prop_assert_eq!(&kept, &want);
                    for (old, new) in outputs.iter().zip(&new_outputs) {
                        prop_assert_eq!(graph.key(*old), culled.key(*new));
                    }
                    // Dependencies survive by key.
                    for t in 0..culled.len() {
                        let id = TaskId(t as u32);
                        let old = graph.keys().iter().position(|k| k == culled.key(id)).unwrap();
                        let deps_old: BTreeSet<&Key> =
                            graph.dependencies(TaskId(old as u32)).iter().map(|d| graph.key(*d)).collect();
                        let deps_new: BTreeSet<&Key> = culled.dependencies(id).iter().map(|d| culled.key(*d)).collect();
                        prop_assert_eq!(deps_old, deps_new);
                    }
                }
            }
        }
    }

    #[test]
    fn an_output_outside_the_graph_is_an_error() {
        let graph = random_dag(&[(0, 0, 0, 0), (1, 0, 0, 0)]);
        assert!(matches!(cull(&graph, &[TaskId(7)]), Err(GraphError::UnknownTask(7, 2))));
    }
}
