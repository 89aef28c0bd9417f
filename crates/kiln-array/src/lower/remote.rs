//! Arrays whose chunks already live on a cluster (the result of a distributed `persist`).

use std::sync::Arc;

use kiln_graph::kernel::RemoteValue;
use kiln_graph::{Arg, GraphError, TaskId, Value};

use crate::lower::node::{Layer, Lowering, Node, Op};

/// Each chunk is a placeholder task under the chunk's own key: a distributed client sends
/// nothing for it, the cluster already holds the value.
pub(crate) struct RemoteChunks {
    pub(crate) keep_alive: Value,
}

impl Layer for RemoteChunks {
    fn lower_block(&self, node: &Node, idx: &[usize], lw: &mut Lowering<'_>) -> Result<TaskId, GraphError> {
        lw.add(node.key(idx), Arc::new(RemoteValue), [Arg::Literal(self.keep_alive.clone())])
    }
}

/// `node` with every block replaced by the value a cluster already holds under its key.
pub(crate) fn remote_node(node: &Node, keep_alive: Value) -> Arc<Node> {
    Arc::new(Node {
        name: node.name.clone(),
        shape: node.shape.clone(),
        chunks: node.chunks.clone(),
        dtype: node.dtype,
        op: Op::Materialized(Arc::new(RemoteChunks { keep_alive })),
    })
}
