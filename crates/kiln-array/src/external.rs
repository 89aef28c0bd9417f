//! Arrays whose blocks another collection computes: a dataframe's partitions as rows, say.

use std::sync::Arc;

use kiln_graph::{GraphBuilder, GraphError, TaskId};

use crate::array::{Array, closure_key};
use crate::block::Element;
use crate::chunks::{ChunkSpec, Chunks, normalize};
use crate::lower::external::ExternalBlocks;
use crate::lower::node::{Node, Op};

/// Tasks another collection adds to a graph, whose values are the blocks of an array
/// ([`from_block_tasks`]).
pub trait BlockTasks: Send + Sync {
    /// Adds the tasks computing every block, with everything they need, and returns them in C
    /// order of blocks. Each task's value must be a [`crate::Block`] of the array's element
    /// type and of that block's shape; a block that is not fails its check task, named.
    ///
    /// # Errors
    /// The other collection's graph errors.
    fn add_to(&self, builder: &mut GraphBuilder) -> Result<Vec<TaskId>, GraphError>;

    /// The name of the array's keys and of its tasks (`"from-frame"`).
    fn label(&self) -> &'static str;
}

/// An array of the given `chunks` (explicit sizes per axis) whose blocks `tasks` computes:
/// how other collections become arrays (Dask builds `Array(graph, name, chunks)` from another
/// collection's keys the same way). The blocks are computed when the array is.
///
/// Chunks that are not valid explicit sizes give an array carrying the error.
pub fn from_block_tasks<T: Element>(tasks: Arc<dyn BlockTasks>, chunks: Chunks) -> Array<T> {
    let shape: Vec<usize> = chunks.iter().map(|c| c.iter().sum()).collect();
    let chunks = match normalize(&ChunkSpec::Explicit(chunks), &shape, T::DTYPE.itemsize()) {
        Ok(c) => c,
        Err(e) => return Array::invalid(e),
    };
    let name = closure_key(tasks.label(), &[]);
    Array::from_node(Arc::new(Node {
        name: name.shared_name().clone(),
        shape,
        chunks,
        dtype: T::DTYPE,
        op: Op::Materialized(Arc::new(ExternalBlocks { tasks })),
    }))
}
