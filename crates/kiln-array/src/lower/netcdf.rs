//! NetCDF variables lowered: a variable's block is a task reading only its hyperslab.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use kiln_graph::kernel::Portable;
use kiln_graph::{GraphError, Kernel, TaskId};

use crate::chunk::netcdf::CfDecode;
use crate::lower::kernels::{ExprKernel, Finish, ReadNetcdfRegion, StoreNetcdfRegion};
use crate::lower::node::{Layer, Lowering, Node, TaskInputs};

/// Blocks read from a variable.
pub(crate) struct NetcdfRead {
    pub(crate) path: PathBuf,
    pub(crate) variable: String,
    pub(crate) file: Arc<netcdf::File>,
    pub(crate) decode: CfDecode,
}

impl Layer for NetcdfRead {
    fn lower_block(&self, node: &Node, idx: &[usize], lw: &mut Lowering<'_>) -> Result<TaskId, GraphError> {
        let ranges =
            node.block_offset(idx).iter().zip(node.block_shape(idx)).map(|(&o, n)| o as u64..(o + n) as u64).collect();
        let kernel: Arc<dyn Kernel> = Arc::new(Portable(ReadNetcdfRegion {
            path: self.path.clone(),
            variable: self.variable.clone(),
            file: OnceLock::from(self.file.clone()),
            ranges,
            decode: self.decode.clone(),
        }));
        lw.add(node.key(idx), kernel, [])
    }
}

/// Blocks written to a variable.
pub(crate) struct NetcdfStore {
    pub(crate) input: Arc<Node>,
    pub(crate) path: PathBuf,
    pub(crate) variable: String,
}

impl Layer for NetcdfStore {
    fn lower_block(&self, node: &Node, idx: &[usize], lw: &mut Lowering<'_>) -> Result<TaskId, GraphError> {
        let mut inputs = TaskInputs::default();
        let expr = lw.expr(&self.input, idx, &mut inputs)?;
        let finish = StoreNetcdfRegion {
            path: self.path.clone(),
            variable: self.variable.clone(),
            offset: self.input.block_offset(idx).iter().map(|&o| o as u64).collect(),
            ndim: idx.len(),
        };
        let kernel: Arc<dyn Kernel> =
            Arc::new(ExprKernel { name: "to-netcdf".into(), exprs: vec![expr], finish: Finish::builtin(finish) });
        lw.add(node.key(idx), kernel, inputs.into_args())
    }
}
