//! Selections lowered: `take` gathers runs of indices from each input block and assembles
//! them; a boolean selection counts each mask block's true elements, then picks them.

use std::sync::Arc;

use kiln_graph::{GraphError, Kernel, TaskId};

use crate::lower::kernels::{Assemble, CountTrue, ExprKernel, Finish, Pick};
use crate::lower::node::{Layer, Lowering, Node, TaskInputs};

/// `take` along one axis.
pub(crate) struct Take {
    pub(crate) input: Arc<Node>,
    pub(crate) axis: usize,
    pub(crate) indices: Vec<usize>,
}

impl Layer for Take {
    fn lower_block(&self, node: &Node, idx: &[usize], lw: &mut Lowering<'_>) -> Result<TaskId, GraphError> {
        let axis = self.axis;
        let start = node.block_offset(idx)[axis];
        let wanted = &self.indices[start..start + node.block_shape(idx)[axis]];
        let offs = crate::chunks::offsets(&self.input.chunks[axis]);
        // Consecutive runs of indices from one input block become one piece.
        let mut inputs = TaskInputs::default();
        let (mut exprs, mut places) = (Vec::new(), Vec::new());
        let mut k = 0;
        while k < wanted.len() {
            let b = offs.partition_point(|&o| o <= wanted[k]) - 1;
            let run = wanted[k..].iter().take_while(|&&i| i >= offs[b] && i < offs[b + 1]).count();
            let positions: Vec<usize> = wanted[k..k + run].iter().map(|&i| i - offs[b]).collect();
            let mut in_idx = idx.to_vec();
            in_idx[axis] = b;
            let e = lw.expr(&self.input, &in_idx, &mut inputs)?;
            exprs.push(crate::chunk::expr::Expr::Take(axis, positions, Box::new(e)));
            let mut place = vec![0; idx.len()];
            place[axis] = k;
            places.push(place);
            k += run;
        }
        let shape = node.block_shape(idx);
        if exprs.is_empty() {
            // An empty selection: one empty piece from block 0.
            let mut in_idx = idx.to_vec();
            in_idx[axis] = 0;
            let e = lw.expr(&self.input, &in_idx, &mut inputs)?;
            exprs.push(crate::chunk::expr::Expr::Take(axis, Vec::new(), Box::new(e)));
            places.push(vec![0; idx.len()]);
        }
        let kernel: Arc<dyn Kernel> =
            Arc::new(ExprKernel { name: "take".into(), exprs, finish: Finish::builtin(Assemble { shape, places }) });
        lw.add(node.key(idx), kernel, inputs.into_args())
    }
}

/// How many elements each block of a mask selects (one int64 per block).
pub(crate) struct CountTrueLayer {
    pub(crate) mask: Arc<Node>,
}

impl Layer for CountTrueLayer {
    fn lower_block(&self, node: &Node, idx: &[usize], lw: &mut Lowering<'_>) -> Result<TaskId, GraphError> {
        let mut inputs = TaskInputs::default();
        let expr = lw.expr(&self.mask, idx, &mut inputs)?;
        let kernel: Arc<dyn Kernel> = Arc::new(ExprKernel {
            name: "mask-count".into(),
            exprs: vec![expr],
            finish: Finish::builtin(CountTrue { ndim: idx.len() }),
        });
        lw.add(node.key(idx), kernel, inputs.into_args())
    }
}

pub(crate) struct MaskSelect {
    pub(crate) input: Arc<Node>,
    pub(crate) mask: Arc<Node>,
    /// The input blocks that select something, with how many elements each selects.
    pub(crate) pieces: Vec<(Vec<usize>, usize)>,
}

impl Layer for MaskSelect {
    fn lower_block(&self, node: &Node, idx: &[usize], lw: &mut Lowering<'_>) -> Result<TaskId, GraphError> {
        let (in_idx, _) = &self.pieces[idx[0]];
        let mut inputs = TaskInputs::default();
        let exprs = vec![lw.expr(&self.input, in_idx, &mut inputs)?, lw.expr(&self.mask, in_idx, &mut inputs)?];
        let kernel: Arc<dyn Kernel> =
            Arc::new(ExprKernel { name: "getitem-mask".into(), exprs, finish: Finish::builtin(Pick) });
        lw.add(node.key(idx), kernel, inputs.into_args())
    }
}
