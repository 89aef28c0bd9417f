//! HDF5 datasets lowered: an HDF5-backed array's block is a task reading only its hyperslab,
//! and a write is one task per block storing it from the task that computes it.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use kiln_graph::kernel::Portable;
use kiln_graph::{GraphError, Kernel, TaskId};

use crate::lower::kernels::{ExprKernel, Finish, ReadHdf5Region, StoreHdf5Region};
use crate::lower::node::{Layer, Lowering, Node, TaskInputs};

/// Blocks read from a dataset.
pub(crate) struct Hdf5Read {
    pub(crate) path: PathBuf,
    pub(crate) dataset: String,
    pub(crate) handle: Arc<hdf5::Dataset>,
    /// Where blocks can be read directly, when they can.
    pub(crate) raw: Option<Arc<crate::chunk::hdf5::RawLayout>>,
}

impl Layer for Hdf5Read {
    fn lower_block(&self, node: &Node, idx: &[usize], lw: &mut Lowering<'_>) -> Result<TaskId, GraphError> {
        let ranges: Vec<std::ops::Range<u64>> =
            node.block_offset(idx).iter().zip(node.block_shape(idx)).map(|(&o, n)| o as u64..(o + n) as u64).collect();
        let raw = self.raw.as_ref().and_then(|layout| layout.plan(&ranges));
        let kernel: Arc<dyn Kernel> = Arc::new(Portable(ReadHdf5Region {
            path: self.path.clone(),
            dataset: self.dataset.clone(),
            handle: OnceLock::from(self.handle.clone()),
            ranges,
            dtype: node.dtype,
            raw,
            raw_file: OnceLock::new(),
        }));
        lw.add(node.key(idx), kernel, [])
    }
}

/// Blocks written to a dataset.
pub(crate) struct Hdf5Store {
    pub(crate) input: Arc<Node>,
    pub(crate) path: PathBuf,
    pub(crate) dataset: String,
}

impl Layer for Hdf5Store {
    fn lower_block(&self, node: &Node, idx: &[usize], lw: &mut Lowering<'_>) -> Result<TaskId, GraphError> {
        let mut inputs = TaskInputs::default();
        let expr = lw.expr(&self.input, idx, &mut inputs)?;
        let finish = StoreHdf5Region {
            path: self.path.clone(),
            dataset: self.dataset.clone(),
            offset: self.input.block_offset(idx).iter().map(|&o| o as u64).collect(),
            ndim: idx.len(),
        };
        let kernel: Arc<dyn Kernel> =
            Arc::new(ExprKernel { name: "to-hdf5".into(), exprs: vec![expr], finish: Finish::builtin(finish) });
        lw.add(node.key(idx), kernel, inputs.into_args())
    }
}
