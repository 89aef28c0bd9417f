//! Graphviz DOT text for a graph, drawn the way Dask's `visualize` draws: a circle per task
//! (labelled with its kernel) and a box per value (labelled with its key), data flowing upward.
//! Rendering to SVG/PNG needs the `dot` program and lives outside this crate (no I/O here).

use std::fmt::Write;

use crate::graph::{Graph, TaskId};

/// Options for [`to_dot`].
#[derive(Debug, Clone)]
pub struct DotOptions {
    /// Graphviz rank direction; `"BT"` (bottom to top) like Dask.
    pub rankdir: &'static str,
    /// Draw a box per value besides the circle per task.
    pub show_values: bool,
    /// Refuse graphs larger than this (Graphviz chokes long before a million nodes).
    pub max_tasks: usize,
}

impl Default for DotOptions {
    fn default() -> Self {
        DotOptions { rankdir: "BT", show_values: true, max_tasks: 10_000 }
    }
}

/// The graph has more tasks than [`DotOptions::max_tasks`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "graph has {tasks} tasks, more than the {limit} that can be drawn; raise DotOptions::max_tasks or draw a smaller piece"
)]
pub struct TooLargeToDraw {
    /// Tasks in the graph.
    pub tasks: usize,
    /// The limit in force.
    pub limit: usize,
}

/// DOT text for `graph`.
///
/// ```
/// use std::sync::Arc;
/// use kiln_graph::{GraphBuilder, Key, Arg, Kernel, dot::{to_dot, DotOptions}, kernel::func1};
/// let inc: Arc<dyn Kernel> = Arc::new(func1("inc", |x: &i64| x + 1));
/// let mut g = GraphBuilder::new();
/// let a = g.add(Key::with_index("inc-1", [0]), inc.clone(), [Arg::literal(1i64)]).unwrap();
/// g.add(Key::new("out"), inc, [Arg::Task(a)]).unwrap();
/// let text = to_dot(&g.build().unwrap(), &DotOptions::default()).unwrap();
/// assert!(text.starts_with("digraph"));
/// assert!(text.contains("label=\"inc\""));
/// assert!(text.contains("('inc-1', 0)"));
/// ```
///
/// # Errors
/// [`TooLargeToDraw`] above the size limit.
pub fn to_dot(graph: &Graph, options: &DotOptions) -> Result<String, TooLargeToDraw> {
    if graph.len() > options.max_tasks {
        return Err(TooLargeToDraw { tasks: graph.len(), limit: options.max_tasks });
    }
    let mut out = String::with_capacity(graph.len() * 96);
    let _ = writeln!(out, "digraph kiln {{\n  graph [rankdir={}];", options.rankdir);
    let node = |t: TaskId| t.0;
    for t in graph.ids() {
        let label = escape(graph.kernel(t).name());
        match graph.kernel(t).reread_bytes() {
            // A read from storage: drawn as storage, with what reading it again costs.
            Some(bytes) => {
                let _ = writeln!(
                    out,
                    "  f{} [label=\"{label}\", shape=cylinder, tooltip=\"re-readable: {}\"];",
                    node(t),
                    crate::memory::format_bytes(bytes)
                );
            }
            None => {
                let _ = writeln!(out, "  f{} [label=\"{label}\", shape=circle];", node(t));
            }
        }
        if options.show_values {
            let key = escape(&graph.key(t).to_string());
            let _ = writeln!(out, "  v{} [label=\"{key}\", shape=box];", node(t));
            let _ = writeln!(out, "  f{0} -> v{0};", node(t));
        }
        for &d in graph.dependencies(t) {
            if options.show_values {
                let _ = writeln!(out, "  v{} -> f{};", node(d), node(t));
            } else {
                let _ = writeln!(out, "  f{} -> f{};", node(d), node(t));
            }
        }
    }
    out.push_str("}\n");
    Ok(out)
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulate::shapes;

    #[test]
    fn edges_follow_dependencies() {
        let (g, _) = shapes::tree_reduction(4, 2);
        let text = to_dot(&g, &DotOptions { show_values: false, ..Default::default() }).unwrap();
        assert_eq!(text.matches(" -> ").count(), 6);
        let too_small = DotOptions { max_tasks: 3, ..Default::default() };
        assert_eq!(to_dot(&g, &too_small).unwrap_err().tasks, 7);
    }

    #[test]
    fn quotes_are_escaped() {
        assert_eq!(escape("a\"b"), "a\\\"b");
    }
}
