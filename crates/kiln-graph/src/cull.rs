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
