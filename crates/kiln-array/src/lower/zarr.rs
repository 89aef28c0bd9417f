//! Zarr stores lowered: a Zarr-backed array's block is a task reading only its region, and a
//! write is one task per block storing it from the task that computes it.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use kiln_graph::kernel::Portable;
use kiln_graph::{GraphError, Kernel, TaskId};

use crate::chunk::zarr::ZarrArray;
use crate::lower::kernels::{ExprKernel, Finish, ReadRegion, StoreRegion};
use crate::lower::node::{Layer, Lowering, Node, TaskInputs};

/// Blocks read from a store.
pub(crate) struct ZarrRead {
    pub(crate) path: PathBuf,
    pub(crate) array: Arc<ZarrArray>,
}

impl Layer for ZarrRead {
    fn lower_block(&self, node: &Node, idx: &[usize], lw: &mut Lowering<'_>) -> Result<TaskId, GraphError> {
        let ranges =
            node.block_offset(idx).iter().zip(node.block_shape(idx)).map(|(&o, n)| o as u64..(o + n) as u64).collect();
        let kernel: Arc<dyn Kernel> = Arc::new(Portable(ReadRegion {
            path: self.path.clone(),
            array: OnceLock::from(self.array.clone()),
            ranges,
            dtype: node.dtype,
        }));
        lw.add(node.key(idx), kernel, [])
    }
}

/// Blocks written to a store.
pub(crate) struct ZarrStore {
    pub(crate) input: Arc<Node>,
    pub(crate) path: PathBuf,
    pub(crate) array: Arc<ZarrArray>,
}

impl Layer for ZarrStore {
    fn lower_block(&self, node: &Node, idx: &[usize], lw: &mut Lowering<'_>) -> Result<TaskId, GraphError> {
        let mut inputs = TaskInputs::default();
        let expr = lw.expr(&self.input, idx, &mut inputs)?;
        let finish = StoreRegion {
            path: self.path.clone(),
            array: OnceLock::from(self.array.clone()),
            offset: self.input.block_offset(idx).iter().map(|&o| o as u64).collect(),
            ndim: idx.len(),
        };
        let kernel: Arc<dyn Kernel> =
            Arc::new(ExprKernel { name: "to-zarr".into(), exprs: vec![expr], finish: Finish::builtin(finish) });
        lw.add(node.key(idx), kernel, inputs.into_args())
    }
}
