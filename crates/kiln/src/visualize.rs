//! Drawing task graphs (Dask's `visualize`): DOT text always, SVG/PNG/PDF through Graphviz's
//! `dot` program when it is installed.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use kiln_graph::dot::{DotOptions, to_dot};
use kiln_graph::{Collection, GraphError};

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
}

impl<C: Collection + ?Sized> Visualize for C {}
