//! A pending write of every block of an array to storage (Zarr, `.npy` blocks): one task per
//! block, each writing its block from the task that computes it.

use std::sync::Arc;

use kiln_graph::{Collection, ComputeError, Graph, GraphBuilder, GraphError, Key, TaskId, Value};

use crate::array::Array;
use crate::block::DType;
use crate::lower::node::{Layer, Node, Op};

/// A pending write of an array's blocks; computing it writes every block (in parallel) and
/// returns the number of blocks written. Made by `to_zarr` and `to_npy_blocks`.
pub struct BlockWrites {
    /// One `true` marker per written block, laid out like the source's block grid.
    writes: Array<bool>,
}

impl BlockWrites {
    /// The writes of a source with `numblocks` blocks per axis, each emitted by `layer` under
    /// keys named `name`.
    pub(crate) fn new(name: &Key, numblocks: &[usize], layer: Arc<dyn Layer>) -> BlockWrites {
        BlockWrites {
            writes: Array::from_node(Arc::new(Node {
                name: name.shared_name().clone(),
                shape: numblocks.to_vec(),
                chunks: numblocks.iter().map(|&n| vec![1; n.max(1)]).collect(),
                dtype: DType::Bool,
                op: Op::Materialized(layer),
            })),
        }
    }
}

impl Collection for BlockWrites {
    type Output = usize;

    fn add_to(&self, builder: &mut GraphBuilder) -> Result<Vec<TaskId>, GraphError> {
        self.writes.add_to(builder)
    }
    fn output_count(&self) -> usize {
        self.writes.output_count()
    }
    fn assemble(&self, graph: &Graph, outputs: &[TaskId], values: Vec<Value>) -> Result<usize, ComputeError> {
        Ok(self.writes.assemble(graph, outputs, values)?.iter().filter(|&&w| w).count())
    }
}
