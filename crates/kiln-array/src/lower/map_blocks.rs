//! User block functions lowered: each output block is one task evaluating the input blocks'
//! expressions, then calling the user's closure (a custom finish step, so the task is local).

use std::sync::Arc;

use kiln_graph::{GraphError, Kernel, TaskError, TaskId, Value};
use ndarray::ArrayD;

use crate::block::{Block, Element};
use crate::lower::kernels::{BlockFinish, ExprKernel, Finish};
use crate::lower::node::{Layer, Lowering, Node, TaskInputs};

/// A user function from one block to another.
pub(crate) type BlockFn<T, U> = dyn Fn(&ArrayD<T>) -> ArrayD<U> + Send + Sync;

pub(crate) struct MapBlocks<T, U> {
    pub(crate) input: Arc<Node>,
    pub(crate) f: Arc<BlockFn<T, U>>,
    pub(crate) name: String,
}

pub(crate) struct ApplyFn<T, U> {
    pub(crate) f: Arc<BlockFn<T, U>>,
    pub(crate) shape: Vec<usize>,
}

impl<T: Element, U: Element> BlockFinish for ApplyFn<T, U> {
    fn finish(&self, blocks: Vec<Block>) -> Result<Value, TaskError> {
        let block = blocks.into_iter().next().ok_or_else(|| TaskError::msg("no block"))?;
        let found = block.dtype();
        let typed =
            T::from_block(block).ok_or_else(|| TaskError::msg(format!("block of {found}, expected {}", T::DTYPE)))?;
        let out = (self.f)(&typed);
        if out.shape() != self.shape.as_slice() {
            return Err(TaskError::msg(format!(
                "map_blocks function returned a block of shape {:?}, expected {:?}",
                out.shape(),
                self.shape
            )));
        }
        Ok(Value::new(U::into_block(out)))
    }
}

impl<T: Element, U: Element> Layer for MapBlocks<T, U> {
    fn lower_block(&self, node: &Node, idx: &[usize], lw: &mut Lowering<'_>) -> Result<TaskId, GraphError> {
        let mut inputs = TaskInputs::default();
        let expr = lw.expr(&self.input, idx, &mut inputs)?;
        let kernel: Arc<dyn Kernel> = Arc::new(ExprKernel {
            name: self.name.clone(),
            exprs: vec![expr],
            finish: Finish::custom(Arc::new(ApplyFn { f: self.f.clone(), shape: node.block_shape(idx) })),
        });
        lw.add(node.key(idx), kernel, inputs.into_args())
    }
}

/// A user function of two blocks.
pub(crate) type PairFn<A, B, U> = dyn Fn(&ArrayD<A>, &ArrayD<B>) -> ArrayD<U> + Send + Sync;

pub(crate) struct Blockwise2<A, B, U> {
    pub(crate) a: Arc<Node>,
    pub(crate) b: Arc<Node>,
    pub(crate) f: Arc<PairFn<A, B, U>>,
    pub(crate) name: String,
}

pub(crate) struct ApplyPair<A, B, U> {
    pub(crate) f: Arc<PairFn<A, B, U>>,
    pub(crate) shape: Vec<usize>,
}

impl<A: Element, B: Element, U: Element> BlockFinish for ApplyPair<A, B, U> {
    fn finish(&self, blocks: Vec<Block>) -> Result<Value, TaskError> {
        let mut it = blocks.into_iter();
        let (Some(x), Some(y)) = (it.next(), it.next()) else {
            return Err(TaskError::msg("blockwise needs two blocks"));
        };
        let (dx, dy) = (x.dtype(), y.dtype());
        let x = A::from_block(x).ok_or_else(|| TaskError::msg(format!("block of {dx}, expected {}", A::DTYPE)))?;
        let y = B::from_block(y).ok_or_else(|| TaskError::msg(format!("block of {dy}, expected {}", B::DTYPE)))?;
        let out = (self.f)(&x, &y);
        if out.shape() != self.shape.as_slice() {
            return Err(TaskError::msg(format!(
                "blockwise function returned a block of shape {:?}, expected {:?}",
                out.shape(),
                self.shape
            )));
        }
        Ok(Value::new(U::into_block(out)))
    }
}

impl<A: Element, B: Element, U: Element> Layer for Blockwise2<A, B, U> {
    fn lower_block(&self, node: &Node, idx: &[usize], lw: &mut Lowering<'_>) -> Result<TaskId, GraphError> {
        let mut inputs = TaskInputs::default();
        let exprs = vec![lw.expr(&self.a, idx, &mut inputs)?, lw.expr(&self.b, idx, &mut inputs)?];
        let kernel: Arc<dyn Kernel> = Arc::new(ExprKernel {
            name: self.name.clone(),
            exprs,
            finish: Finish::custom(Arc::new(ApplyPair { f: self.f.clone(), shape: node.block_shape(idx) })),
        });
        lw.add(node.key(idx), kernel, inputs.into_args())
    }
}
