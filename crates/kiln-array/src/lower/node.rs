//! The array-level graph and its lowering to tasks.
//!
//! Every `Array` is a [`Node`]: shape, chunks, dtype and the operation that defines it. Cheap
//! operations (sources, elementwise maps, transposes, basic slices) are *lazy*: they never become
//! tasks of their own, but a block expression ([`Expr`]) that consumers evaluate inline. Other
//! operations (reductions, rechunks, products) are *materialized*: they emit tasks. Lowering a
//! block of a lazy node as an output makes one task that evaluates its whole expression.
//!
//! This module knows the graph shapes that every operation shares (lazy expressions, fusion
//! limits, block keys); each materialized operation brings its own [`Layer`] from a sibling
//! module, and the kernels tasks run live in [`crate::lower::kernels`]. It imports no
//! operation module, so adding one never touches this file.

use std::sync::Arc;

use kiln_graph::{Arg, GraphBuilder, GraphError, Kernel, Key, TaskId, Value};

use crate::block::{DType, Scalar};
use crate::chunk::expr::{AxisSlice, BinaryOp, Expr, UnaryOp};
use crate::chunk::source::Source;
use crate::chunks::Chunks;
use crate::error::ArrayError;
use crate::lower::kernels::{ExprKernel, Finish};

/// Above this many operations, a lazy expression is materialized instead of inlined, so one
/// block's work is never duplicated without bound.
const MAX_FUSED_OPS: usize = 48;

/// One array in the array-level graph.
pub struct Node {
    /// Deterministic name (`ones-<token>`); block keys are `(name, i, j, ...)`.
    pub name: Arc<str>,
    /// The array's shape.
    pub shape: Vec<usize>,
    /// Chunk sizes per axis.
    pub chunks: Chunks,
    /// Element type.
    pub dtype: DType,
    /// How it is computed.
    pub op: Op,
}

/// How a node is computed.
pub enum Op {
    /// Generated blocks (lazy).
    Source(Source),
    /// Blocks sliced from an in-memory array held as a literal (lazy).
    FromArray(Value),
    /// An elementwise function of aligned operands (lazy).
    Map(MapFn, Vec<Operand>),
    /// An axis permutation (lazy).
    Transpose(Arc<Node>, Vec<usize>),
    /// Basic slicing and integer indexing (lazy): per output axis, the input block and the
    /// slice within it for each output block; integer-indexed axes are dropped.
    Slice(Arc<Node>, Arc<SlicePlan>),
    /// Block-local reshape that only inserts or removes length-1 axes (lazy).
    Reshape(Arc<Node>),
    /// Arrays joined along an axis (lazy): each output block is a block of one input.
    Concat(Vec<Arc<Node>>, usize),
    /// A C-order reshape where output block `i` (along axis 0) is input block `i` reshaped;
    /// both are chunked along axis 0 only (lazy).
    RowReshape(Arc<Node>),
    /// An operation that emits tasks.
    Materialized(Arc<dyn Layer>),
    /// An array whose construction failed; every use reports this error.
    Invalid(ArrayError),
}

/// The function of a [`Op::Map`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MapFn {
    /// One operand.
    Unary(UnaryOp),
    /// Two operands.
    Binary(BinaryOp),
    /// `where(cond, a, b)`.
    Where,
    /// Conversion to a dtype.
    Cast(DType),
}

/// An operand of an elementwise map: an array broadcast against the result, or a scalar.
#[derive(Clone)]
pub enum Operand {
    /// An array whose axes align with the trailing axes of the result; length-1 axes broadcast.
    Array(Arc<Node>),
    /// A scalar.
    Scalar(Scalar),
}

/// For each output axis of a slice: which input block and which part of it each output block
/// reads; `None` for an input axis indexed by an integer (dropped from the output).
pub struct SlicePlan {
    /// Per input axis: `Some(blocks)` (one entry per output block: input block index and
    /// slice), or `Integer(block, offset)` for a dropped axis.
    pub axes: Vec<AxisPlan>,
}

/// How one input axis is sliced.
pub enum AxisPlan {
    /// Kept: one entry per output block.
    Kept(Vec<(usize, AxisSlice)>),
    /// Indexed by an integer: the block and the offset inside it.
    Integer(usize, usize),
}

/// A task-emitting operation.
pub trait Layer: Send + Sync {
    /// Adds the task computing output block `idx` of `node` and returns its id.
    ///
    /// # Errors
    /// Invalid graphs (not expected for layers built through the API).
    fn lower_block(&self, node: &Node, idx: &[usize], lw: &mut Lowering<'_>) -> Result<TaskId, GraphError>;
}

impl Node {
    /// A node that reports `error` whenever it is used.
    pub fn invalid(error: ArrayError) -> Arc<Node> {
        Arc::new(Node {
            name: "invalid".into(),
            shape: vec![],
            chunks: vec![],
            dtype: DType::F64,
            op: Op::Invalid(error),
        })
    }

    /// The construction error of this node or any node it depends on.
    pub fn error(&self) -> Option<&ArrayError> {
        match &self.op {
            Op::Invalid(e) => Some(e),
            _ => None,
        }
    }

    /// The key of block `idx`.
    pub fn key(&self, idx: &[usize]) -> Key {
        Key::from_shared(&self.name, &idx.iter().map(|&i| i as u32).collect::<Vec<_>>())
    }

    /// Number of blocks per axis.
    pub fn numblocks(&self) -> Vec<usize> {
        crate::chunks::numblocks(&self.chunks)
    }

    /// Shape of block `idx`.
    pub fn block_shape(&self, idx: &[usize]) -> Vec<usize> {
        crate::chunks::block_shape(&self.chunks, idx)
    }

    /// Offset of block `idx` in the array.
    pub fn block_offset(&self, idx: &[usize]) -> Vec<usize> {
        self.chunks.iter().zip(idx).map(|(c, &i)| c[..i].iter().sum()).collect()
    }
}

/// Lowering state: the graph builder plus the inputs collected for the task being built.
pub struct Lowering<'b> {
    /// The graph being built.
    pub builder: &'b mut GraphBuilder,
    /// Inline lazy operations into their consumers (blockwise fusion). Off only to draw the
    /// graph as written, one task per operation and block.
    pub fuse: bool,
}

/// Inputs collected while building one task's expressions.
#[derive(Default)]
pub struct TaskInputs {
    args: Vec<Arg>,
}

impl TaskInputs {
    pub(crate) fn task(&mut self, id: TaskId) -> usize {
        if let Some(k) = self.args.iter().position(|a| matches!(a, Arg::Task(t) if *t == id)) {
            return k;
        }
        self.args.push(Arg::Task(id));
        self.args.len() - 1
    }

    fn literal(&mut self, value: &Value) -> usize {
        if let Some(k) = self.args.iter().position(|a| matches!(a, Arg::Literal(v) if v.ptr_eq(value))) {
            return k;
        }
        self.args.push(Arg::Literal(value.clone()));
        self.args.len() - 1
    }

    /// The collected arguments.
    pub fn into_args(self) -> Vec<Arg> {
        self.args
    }
}

impl Lowering<'_> {
    /// The task holding block `idx` of `node`, added if needed.
    ///
    /// # Errors
    /// Invalid graphs.
    pub fn task(&mut self, node: &Arc<Node>, idx: &[usize]) -> Result<TaskId, GraphError> {
        let key = node.key(idx);
        if let Some(id) = self.builder.id_of(&key) {
            return Ok(id);
        }
        match &node.op {
            Op::Materialized(layer) => layer.lower_block(node, idx, self),
            _ => {
                let mut inputs = TaskInputs::default();
                let expr = self.expr(node, idx, &mut inputs)?;
                let kernel: Arc<dyn Kernel> =
                    Arc::new(ExprKernel { name: kernel_name(node), exprs: vec![expr], finish: Finish::none() });
                self.builder.add(key, kernel, inputs.into_args())
            }
        }
    }

    /// The expression of block `idx` of `node`, inlining lazy operations and referring to
    /// tasks for materialized ones.
    ///
    /// # Errors
    /// Invalid graphs.
    pub fn expr(&mut self, node: &Arc<Node>, idx: &[usize], inputs: &mut TaskInputs) -> Result<Expr, GraphError> {
        let expr = self.expr_inner(node, idx, inputs)?;
        Ok(expr)
    }

    fn expr_inner(&mut self, node: &Arc<Node>, idx: &[usize], inputs: &mut TaskInputs) -> Result<Expr, GraphError> {
        Ok(match &node.op {
            Op::Source(source) => Expr::Gen {
                source: source.clone(),
                dtype: node.dtype,
                shape: node.block_shape(idx),
                offset: node.block_offset(idx),
                array_shape: node.shape.clone(),
            },
            Op::FromArray(value) => {
                let k = inputs.literal(value);
                let offs = node.block_offset(idx);
                let shape = node.block_shape(idx);
                let axes = offs.iter().zip(&shape).map(|(&o, &n)| AxisSlice { start: o, len: n, step: 1 }).collect();
                Expr::Slice(axes, Box::new(Expr::Input(k)))
            }
            Op::Map(f, operands) => {
                let ndim = node.shape.len();
                let mut args = Vec::with_capacity(operands.len());
                for operand in operands {
                    args.push(match operand {
                        Operand::Scalar(s) => Expr::Scalar(*s),
                        Operand::Array(a) => {
                            let lead = ndim - a.shape.len();
                            let sub: Vec<usize> = a
                                .shape
                                .iter()
                                .enumerate()
                                .map(|(k, &d)| if d == 1 { 0 } else { idx[lead + k] })
                                .collect();
                            self.child(a, &sub, inputs)?
                        }
                    });
                }
                let mut args = args.into_iter();
                let mut next = || Box::new(args.next().expect("operand count matches the function"));
                match f {
                    MapFn::Unary(op) => Expr::Unary(*op, next()),
                    MapFn::Binary(op) => Expr::Binary(*op, next(), next()),
                    MapFn::Where => Expr::Where(next(), next(), next()),
                    MapFn::Cast(d) => Expr::Cast(*d, next()),
                }
            }
            Op::Transpose(input, axes) => {
                let mut sub = vec![0; idx.len()];
                for (out_axis, &in_axis) in axes.iter().enumerate() {
                    sub[in_axis] = idx[out_axis];
                }
                Expr::Transpose(axes.clone(), Box::new(self.child(input, &sub, inputs)?))
            }
            Op::Slice(input, plan) => {
                let mut sub = Vec::with_capacity(plan.axes.len());
                let mut slices = Vec::with_capacity(plan.axes.len());
                let mut out_axis = 0;
                let mut dropped = false;
                for axis in &plan.axes {
                    match axis {
                        AxisPlan::Kept(blocks) => {
                            let (b, s) = blocks[idx[out_axis]];
                            sub.push(b);
                            slices.push(s);
                            out_axis += 1;
                        }
                        AxisPlan::Integer(b, offset) => {
                            sub.push(*b);
                            slices.push(AxisSlice { start: *offset, len: 1, step: 1 });
                            dropped = true;
                        }
                    }
                }
                let sliced = Expr::Slice(slices, Box::new(self.child(input, &sub, inputs)?));
                if dropped { Expr::Reshape(node.block_shape(idx), Box::new(sliced)) } else { sliced }
            }
            Op::Reshape(input) => {
                // Only length-1 axes differ: the input block index is the output index with
                // those axes removed/inserted, matched by walking non-unit axes.
                let sub = reshape_unit_index(&node.shape, &input.shape, idx);
                Expr::Reshape(node.block_shape(idx), Box::new(self.child(input, &sub, inputs)?))
            }
            Op::RowReshape(input) => {
                let mut sub = vec![0; input.shape.len()];
                if let Some(first) = sub.first_mut() {
                    *first = idx.first().copied().unwrap_or(0);
                }
                Expr::Reshape(node.block_shape(idx), Box::new(self.child(input, &sub, inputs)?))
            }
            Op::Concat(parts, axis) => {
                let mut block = idx[*axis];
                let mut part = &parts[0];
                for p in parts {
                    let n = p.chunks[*axis].len();
                    if block < n {
                        part = p;
                        break;
                    }
                    block -= n;
                }
                let mut sub = idx.to_vec();
                sub[*axis] = block;
                self.child(part, &sub, inputs)?
            }
            Op::Materialized(_) => Expr::Input(inputs.task(self.task(node, idx)?)),
            Op::Invalid(e) => return Err(GraphError::invalid("array", e.clone())),
        })
    }

    /// An operand's expression: inlined when small, else a task of its own.
    fn child(&mut self, node: &Arc<Node>, idx: &[usize], inputs: &mut TaskInputs) -> Result<Expr, GraphError> {
        if !self.fuse {
            return Ok(Expr::Input(inputs.task(self.task(node, idx)?)));
        }
        let mut scratch = TaskInputs::default();
        let expr = self.expr_inner(node, idx, &mut scratch)?;
        if expr.size() > MAX_FUSED_OPS {
            return Ok(Expr::Input(inputs.task(self.task(node, idx)?)));
        }
        // Re-map the scratch inputs into the caller's input list.
        let mapping: Vec<usize> = scratch
            .args
            .iter()
            .map(|a| match a {
                Arg::Task(t) => inputs.task(*t),
                Arg::Literal(v) => inputs.literal(v),
                Arg::Key(_) => unreachable!("lowering adds no key arguments"),
            })
            .collect();
        Ok(remap_inputs(expr, &mapping))
    }
}

fn remap_inputs(expr: Expr, mapping: &[usize]) -> Expr {
    let r = |e: Box<Expr>| Box::new(remap_inputs(*e, mapping));
    match expr {
        Expr::Input(k) => Expr::Input(mapping[k]),
        Expr::Unary(op, a) => Expr::Unary(op, r(a)),
        Expr::Binary(op, a, b) => Expr::Binary(op, r(a), r(b)),
        Expr::Where(c, a, b) => Expr::Where(r(c), r(a), r(b)),
        Expr::Cast(d, a) => Expr::Cast(d, r(a)),
        Expr::Transpose(p, a) => Expr::Transpose(p, r(a)),
        Expr::Slice(s, a) => Expr::Slice(s, r(a)),
        Expr::Reshape(s, a) => Expr::Reshape(s, r(a)),
        Expr::Take(axis, p, a) => Expr::Take(axis, p, r(a)),
        other @ (Expr::Gen { .. } | Expr::Scalar(_)) => other,
    }
}

/// Maps a block index across a reshape that only adds/removes length-1 axes.
fn reshape_unit_index(out_shape: &[usize], in_shape: &[usize], idx: &[usize]) -> Vec<usize> {
    let kept: Vec<usize> = out_shape.iter().zip(idx).filter(|(d, _)| **d != 1).map(|(_, &i)| i).collect();
    let mut kept = kept.into_iter();
    in_shape.iter().map(|&d| if d == 1 { 0 } else { kept.next().unwrap_or(0) }).collect()
}

/// The display name of a node's kernels: its name without the token.
pub fn kernel_name(node: &Node) -> String {
    Key::new(Arc::clone(&node.name)).prefix().to_string()
}
