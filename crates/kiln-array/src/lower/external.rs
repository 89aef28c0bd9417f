//! Blocks computed by another collection's tasks ([`crate::from_block_tasks`]).

use std::sync::Arc;

use kiln_graph::kernel::Portable;
use kiln_graph::{Arg, GraphError, TaskId};

use crate::chunks::block_indices;
use crate::error::ArrayError;
use crate::external::BlockTasks;
use crate::lower::kernels::CheckBlock;
use crate::lower::node::{Layer, Lowering, Node, kernel_name};

/// Adds the other collection's tasks once, the first time any block is wanted, then one check
/// task per block under the block's own key.
pub(crate) struct ExternalBlocks {
    pub(crate) tasks: Arc<dyn BlockTasks>,
}

impl Layer for ExternalBlocks {
    fn lower_block(&self, node: &Node, idx: &[usize], lw: &mut Lowering<'_>) -> Result<TaskId, GraphError> {
        let key = node.key(idx);
        if let Some(id) = lw.id_of(&key) {
            return Ok(id);
        }
        let blocks = block_indices(&node.numblocks());
        // The other collection's tasks read no array block, so nothing an attempt deferred can
        // be among their inputs: they go straight into the graph.
        let ids = self.tasks.add_to(lw.builder())?;
        if ids.len() != blocks.len() {
            return Err(GraphError::invalid(
                "array",
                ArrayError::Invalid(format!(
                    "{}: the source added {} tasks for an array of {} blocks",
                    kernel_name(node),
                    ids.len(),
                    blocks.len()
                )),
            ));
        }
        let label = kernel_name(node);
        for (index, id) in blocks.into_iter().zip(ids) {
            let check = CheckBlock { label: label.clone(), shape: node.block_shape(&index), index, dtype: node.dtype };
            let key = node.key(&check.index);
            lw.builder().add(key, Arc::new(Portable(check)), [Arg::Task(id)])?;
        }
        lw.id_of(&key).ok_or_else(|| GraphError::invalid("array", ArrayError::Invalid(format!("no task for {key}"))))
    }
}
