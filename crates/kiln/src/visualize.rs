//! Drawing task graphs (Dask's `visualize`): DOT text always, SVG/PNG/PDF through Graphviz's
//! `dot` program when it is installed.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use kiln_graph::dot::{DotOptions, to_dot};
use kiln_graph::{Collection, GraphError, Scheduler};

/// Why a graph could not be drawn.
#[derive(Debug, thiserror::Error)]
pub enum VisualizeError {
    /// Graphviz is not installed.
    #[error(
        "Graphviz's `dot` program was not found, so {0} cannot be rendered; install Graphviz \
         (Debian/Ubuntu: `apt-get install graphviz`) or write a `.dot` file instead"
    )]
    GraphvizMissing(String),
    /// The file name has no known format.
    #[error("unknown output format {0:?}: use .dot, .svg, .png or .pdf")]
    UnknownFormat(String),
    /// `dot` failed.
    #[error("graphviz failed: {0}")]
    Graphviz(String),
    /// The graph is too large to draw.
    #[error(transparent)]
    TooLarge(#[from] kiln_graph::dot::TooLargeToDraw),
    /// The collection's graph is invalid.
    #[error(transparent)]
    Graph(#[from] GraphError),
    /// Writing the file failed.
    #[error("writing {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// Writes DOT text to `path`, rendering it with Graphviz when the extension is `.svg`, `.png`
/// or `.pdf`.
///
/// # Errors
/// [`VisualizeError::GraphvizMissing`] when rendering is asked for and `dot` is not installed.
pub fn render(dot: &str, path: impl AsRef<Path>) -> Result<(), VisualizeError> {
    let path = path.as_ref();
    let io = |source| VisualizeError::Io { path: path.display().to_string(), source };
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "dot" | "gv" => return std::fs::write(path, dot).map_err(io),
        "svg" | "png" | "pdf" => {}
        other => return Err(VisualizeError::UnknownFormat(other.to_string())),
    }
    let mut child = match Command::new("dot")
        .arg(format!("-T{ext}"))
        .arg("-o")
        .arg(path)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(VisualizeError::GraphvizMissing(path.display().to_string()));
        }
        Err(e) => return Err(io(e)),
    };
    child.stdin.take().expect("stdin is piped").write_all(dot.as_bytes()).map_err(io)?;
    let out = child.wait_with_output().map_err(io)?;
    if !out.status.success() {
        return Err(VisualizeError::Graphviz(String::from_utf8_lossy(&out.stderr).trim().to_string()));
    }
    Ok(())
}

/// `.visualize(path)` for every collection.
pub trait Visualize: Collection {
    /// Draws this collection's task graph to `path` (`.dot`, `.svg`, `.png` or `.pdf`).
    ///
    /// # Errors
    /// See [`render`].
    fn visualize(&self, path: impl AsRef<Path>) -> Result<(), VisualizeError> {
        render(&self.dot()?, path)
    }

    /// This collection's task graph as DOT text, as written (one task per operation and block,
    /// before fusion, like Dask's `visualize`).
    ///
    /// # Errors
    /// When the graph is invalid or too large to draw.
    fn dot(&self) -> Result<String, VisualizeError> {
        let mut builder = kiln_graph::GraphBuilder::new();
        self.add_to_unfused(&mut builder)?;
        Ok(to_dot(&builder.build()?, &DotOptions::default())?)
    }

    /// The graph that actually runs (after fusion) as DOT text.
    ///
    /// # Errors
    /// When the graph is invalid or too large to draw.
    fn dot_optimized(&self) -> Result<String, VisualizeError> {
        let (graph, outputs) = kiln_graph::collection::graph_of(self)?;
        let (graph, _) = kiln_graph::collection::optimize(graph, outputs)?;
        Ok(to_dot(&graph, &DotOptions::default())?)
    }

    /// The graph that runs on `scheduler` as DOT text: optimized for its memory target, so
    /// blocks read again instead of held appear as extra reads (`from-zarr-reread` tasks, drawn
    /// as cylinders like every read from storage).
    ///
    /// # Errors
    /// When the graph is invalid or too large to draw.
    fn dot_on(&self, scheduler: &dyn Scheduler) -> Result<String, VisualizeError> {
        let (graph, outputs) = kiln_graph::collection::graph_of(self)?;
        let optimized = kiln_graph::collection::optimize_for(graph, outputs, scheduler.memory_target())?;
        Ok(to_dot(&optimized.graph, &DotOptions::default())?)
    }

    /// What running on `scheduler` will do, without running it: tasks as written, needed and
    /// after fusion; how stored blocks are kept (held until their last reader, or read again
    /// to stay under the scheduler's memory target, with the extra bytes read); and the values
    /// and re-readable bytes the planned order holds at once.
    ///
    /// ```
    /// use kiln::prelude::*;
    /// let x = kiln::array::ones::<f64>(&[100, 100], [10, 10]);
    /// let text = x.sum().explain_on(&kiln::LocalScheduler::threads(1)).unwrap();
    /// assert!(text.contains("tasks: "), "{text}");
    /// ```
    ///
    /// # Errors
    /// When the graph is invalid.
    fn explain_on(&self, scheduler: &dyn Scheduler) -> Result<String, VisualizeError> {
        use std::fmt::Write as _;
        let (graph, outputs) = kiln_graph::collection::graph_of(self)?;
        let o = kiln_graph::collection::optimize_for(graph, outputs, scheduler.memory_target())?;
        let priority = kiln_graph::order::order(&o.graph, &o.outputs);
        let reads: Vec<u64> = o.graph.ids().map(|t| o.graph.kernel(t).reread_bytes().unwrap_or(0)).collect();
        let values = kiln_graph::simulate::peak_live(&o.graph, &o.outputs, &priority)
            .map_err(|e| VisualizeError::Graph(GraphError::InvalidOrder(e.to_string())))?;
        let stored = kiln_graph::simulate::peak_live_weighted(&o.graph, &o.outputs, &priority, |t| reads[t.index()])
            .map_err(|e| VisualizeError::Graph(GraphError::InvalidOrder(e.to_string())))?;
        let mut text = String::new();
        let _ = writeln!(text, "scheduler: {}", scheduler.name());
        let _ = writeln!(
            text,
            "tasks: {} written, {} needed, {} after fusion",
            o.tasks_written,
            o.tasks_needed,
            o.graph.len()
        );
        let read_tasks = reads.iter().filter(|&&b| b > 0).count();
        match (&o.reread, scheduler.memory_target()) {
            (Some(plan), _) => {
                let _ = writeln!(text, "stored blocks: {plan}");
            }
            (None, Some(target)) if read_tasks > 0 => {
                let _ = writeln!(
                    text,
                    "stored blocks: held until their last reader ({read_tasks} reads; within the cap of {} \
                     for a memory target of {})",
                    kiln_graph::memory::format_bytes(kiln_graph::collection::reread_cap(target)),
                    kiln_graph::memory::format_bytes(target)
                );
            }
            (None, None) if read_tasks > 0 => {
                let _ = writeln!(
                    text,
                    "stored blocks: held until their last reader ({read_tasks} reads; the scheduler has no \
                     memory target, so none is read twice)"
                );
            }
            _ => {}
        }
        let _ = writeln!(
            text,
            "planned order, one task at a time: at most {} values alive, {} of them re-readable reads",
            values.peak,
            kiln_graph::memory::format_bytes(stored.peak as u64)
        );
        Ok(text)
    }
}

impl<C: Collection + ?Sized> Visualize for C {}
