//! Matrix products lowered to blocked tasks: output block `(i, j)` accumulates
//! `A[i, p] @ B[p, j]` over the shared axis in one buffer, `PRODUCTS_PER_TASK` products per task
//! (then a sum tree). The operands' block expressions are fused into the product task, so
//! `x.dot(&(&x.t() + 1.0))` never materializes `x.T + 1`.

use std::sync::Arc;

use kiln_graph::kernel::Portable;
use kiln_graph::{Arg, GraphError, Kernel, Key, TaskId, Tokenizer};

use crate::block::DType;
use crate::chunks::common_refinement;
use crate::error::ArrayError;
use crate::lower::kernels::{AddBlocks, ExprKernel, Finish, Products};
use crate::lower::node::{Layer, Lowering, Node, Op, TaskInputs};

/// How many block products one task accumulates before a sum tree takes over.
const PRODUCTS_PER_TASK: usize = 8;

/// The node of the matrix product of two 2-d nodes (their shared axis is rechunked to match).
pub(crate) fn matmul_node(a: &Arc<Node>, b: &Arc<Node>) -> Result<Arc<Node>, ArrayError> {
    if a.dtype == DType::Bool {
        return Err(ArrayError::Invalid("dot of bool arrays is not supported; cast with astype first".into()));
    }
    if a.shape[1] != b.shape[0] {
        return Err(ArrayError::Shape(format!(
            "shapes ({}, {}) and ({}, {}) not aligned: {} (dim 1) != {} (dim 0)",
            a.shape[0], a.shape[1], b.shape[0], b.shape[1], a.shape[1], b.shape[0]
        )));
    }
    // The shared axis must be cut the same way in both operands.
    let k = common_refinement(&a.chunks[1], &b.chunks[0]);
    let a = if a.chunks[1] != k {
        crate::lower::rechunk::rechunk(a, vec![a.chunks[0].clone(), k.clone()])
    } else {
        a.clone()
    };
    let b = if b.chunks[0] != k { crate::lower::rechunk::rechunk(b, vec![k, b.chunks[1].clone()]) } else { b.clone() };
    let name = Tokenizer::new().add("matmul").add(&*a.name).add(&*b.name).key("matmul");
    let base = name.shared_name().clone();
    Ok(Arc::new(Node {
        shape: vec![a.shape[0], b.shape[1]],
        chunks: vec![a.chunks[0].clone(), b.chunks[1].clone()],
        dtype: a.dtype,
        op: Op::Materialized(Arc::new(MatMul { partial_name: format!("{base}-partial").into(), a, b })),
        name: base,
    }))
}

pub(crate) struct MatMul {
    pub(crate) a: Arc<Node>,
    pub(crate) b: Arc<Node>,
    pub(crate) partial_name: Arc<str>,
}

impl Layer for MatMul {
    fn lower_block(&self, node: &Node, idx: &[usize], lw: &mut Lowering<'_>) -> Result<TaskId, GraphError> {
        let (i, j) = (idx[0], idx[1]);
        let shape = node.block_shape(idx);
        let kblocks = self.a.chunks[1].len();
        let groups: Vec<Vec<usize>> =
            (0..kblocks).collect::<Vec<_>>().chunks(PRODUCTS_PER_TASK).map(<[usize]>::to_vec).collect();
        let mut partials = Vec::with_capacity(groups.len());
        for (g, group) in groups.iter().enumerate() {
            let mut inputs = TaskInputs::default();
            let mut exprs = Vec::with_capacity(2 * group.len());
            for &p in group {
                exprs.push(lw.expr(&self.a, &[i, p], &mut inputs)?);
            }
            for &p in group {
                exprs.push(lw.expr(&self.b, &[p, j], &mut inputs)?);
            }
            let kernel: Arc<dyn Kernel> = Arc::new(ExprKernel {
                name: "matmul".into(),
                exprs,
                finish: Finish::builtin(Products { shape: shape.clone(), dtype: node.dtype }),
            });
            let key = if groups.len() == 1 {
                node.key(idx)
            } else {
                Key::from_shared(&self.partial_name, &[i as u32, j as u32, g as u32])
            };
            partials.push(lw.add(key, kernel, inputs.into_args())?);
        }
        if partials.len() == 1 {
            return Ok(partials[0]);
        }
        let add: Arc<dyn Kernel> = Arc::new(Portable(AddBlocks));
        lw.add(node.key(idx), add, partials.into_iter().map(Arg::Task))
    }
}
