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

use std::collections::{HashMap, HashSet};
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

impl Drop for Node {
    /// Dropping the last handle of a long chain of nodes would drop each node inside the
    /// previous one's drop, one stack frame per node. Instead the node's operation (holding
    /// its operands) is queued, and the outermost drop on this thread unlinks the queue in a
    /// loop: a drop inside it only queues, so the stack stays flat however long the chain, for
    /// every kind of operation (layers included).
    fn drop(&mut self) {
        if matches!(self.op, Op::Source(_) | Op::FromArray(_) | Op::Invalid(_)) {
            return;
        }
        let op = std::mem::replace(&mut self.op, Op::Concat(Vec::new(), 0));
        unlink(op);
    }
}

thread_local! {
    /// Operations waiting to be dropped by the outermost node drop of this thread, or `None`
    /// when no node drop is running.
    static UNLINKING: std::cell::RefCell<Option<Vec<Op>>> = const { std::cell::RefCell::new(None) };
}

fn unlink(op: Op) {
    // Inside a running unlink: queue and return.
    let queued = UNLINKING.try_with(|u| match u.borrow_mut().as_mut() {
        Some(queue) => {
            queue.push(op);
            None
        }
        None => Some(op),
    });
    let op = match queued {
        Ok(None) => return,
        Ok(Some(op)) => op,
        // The thread is shutting down its locals: drop the plain way.
        Err(_) => return,
    };
    struct Running;
    impl Drop for Running {
        fn drop(&mut self) {
            // Whatever is left (only after a panic in a drop) is dropped the plain way.
            let left = UNLINKING.try_with(|u| u.borrow_mut().take()).ok().flatten();
            drop(left);
        }
    }
    let _ = UNLINKING.try_with(|u| *u.borrow_mut() = Some(Vec::new()));
    let _running = Running;
    drop(op);
    while let Some(next) = UNLINKING.try_with(|u| u.borrow_mut().as_mut().and_then(Vec::pop)).ok().flatten() {
        drop(next);
    }
}

/// Lowering state: the graph builder, and what is known about the blocks lowered so far.
///
/// Every walk here is bounded, however long the chain of operations behind an array (100,000
/// chained `x + 1` or `rechunk`s): a block's fate (`Decision`: inlined into its readers, or a
/// task of its own) is decided once and remembered, and one *attempt* decides at most
/// [`MAX_NESTING`] nested blocks. A block needed deeper than that is *deferred*: the attempt
/// notes it, goes on with placeholders (adding no task that would contain one), and
/// [`Lowering::output`] decides the deferred blocks first, from an explicit stack, before
/// trying again. Graphs less deep than the limit lower in one attempt, as plain recursion.
pub struct Lowering<'b> {
    builder: &'b mut GraphBuilder,
    /// Inline lazy operations into their consumers (blockwise fusion). Off only to draw the
    /// graph as written, one task per operation and block.
    fuse: bool,
    /// What was decided for each block key (kept across attempts).
    decided: HashMap<Key, Decision>,
    /// Blocks deferred by the current attempt (to decide before retrying it).
    deferred: Vec<(Arc<Node>, Vec<usize>)>,
    /// Keys whose decision depends on a deferred block in the current attempt: not decided
    /// yet, and not explored twice.
    waiting: HashSet<Key>,
    /// Blocks being decided right now, nested.
    depth: usize,
    /// Placeholders handed out in the current attempt (for deferred or waiting blocks).
    misses: usize,
    /// For each block being decided, `misses` when it started: its task may be added, and its
    /// decision kept, only if no placeholder was handed out since.
    marks: Vec<usize>,
}

/// Most blocks one lowering attempt decides inside each other before deferring (each level is
/// a few stack frames; a 2 MiB stack holds far more).
pub const MAX_NESTING: usize = 48;

/// What a block of a node becomes in the graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Decision {
    /// Its expression is inlined into each reader's task.
    Inline,
    /// A task of its own.
    Task(TaskId),
}

/// The id returned for tasks an attempt could not add (it is retried; the id is never used).
const PLACEHOLDER: TaskId = TaskId(u32::MAX);

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

impl<'b> Lowering<'b> {
    /// Lowering into `builder`, fusing lazy operations into their readers when `fuse`.
    pub fn new(builder: &'b mut GraphBuilder, fuse: bool) -> Self {
        Lowering {
            builder,
            fuse,
            decided: HashMap::new(),
            deferred: Vec::new(),
            waiting: HashSet::new(),
            depth: 0,
            misses: 0,
            marks: Vec::new(),
        }
    }

    /// The task holding block `idx` of `node` (a collection's output), added with everything
    /// it needs. Iterative over the depth of the graph: see [`Lowering`].
    ///
    /// # Errors
    /// Invalid graphs.
    pub fn output(&mut self, node: &Arc<Node>, idx: &[usize]) -> Result<TaskId, GraphError> {
        let mut stack: Vec<(Arc<Node>, Vec<usize>)> = Vec::new();
        loop {
            self.deferred.clear();
            self.waiting.clear();
            self.marks.clear();
            self.depth = 0;
            self.misses = 0;
            match stack.last() {
                Some((n, i)) => {
                    let (n, i) = (n.clone(), i.clone());
                    self.decide(&n, &i)?;
                    if self.deferred.is_empty() {
                        stack.pop();
                    }
                }
                None => {
                    let id = self.task(node, idx)?;
                    if self.deferred.is_empty() {
                        return Ok(id);
                    }
                }
            }
            stack.append(&mut self.deferred);
        }
    }

    /// Whether an attempt's placeholders reached the task being built (it must not be added).
    fn deferring(&self) -> bool {
        self.misses != self.marks.last().copied().unwrap_or(0)
    }

    /// Adds a task (layers add theirs here). Inside an attempt that deferred part of what the
    /// task needs, nothing is added and a placeholder id is returned: the attempt is retried.
    ///
    /// # Errors
    /// Invalid graphs.
    pub fn add(
        &mut self,
        key: Key,
        kernel: Arc<dyn Kernel>,
        args: impl IntoIterator<Item = Arg>,
    ) -> Result<TaskId, GraphError> {
        if self.deferring() {
            return Ok(PLACEHOLDER);
        }
        self.builder.add(key, kernel, args)
    }

    /// The graph being built, for layers whose tasks depend on no other array block (they may
    /// be added whatever the current attempt deferred).
    pub(crate) fn builder(&mut self) -> &mut GraphBuilder {
        self.builder
    }

    /// The task already added under `key`.
    pub fn id_of(&self, key: &Key) -> Option<TaskId> {
        self.builder.id_of(key)
    }

    /// The task holding block `idx` of `node`, added if needed (outputs, materialized
    /// operations, and lazy ones too large to inline).
    fn task(&mut self, node: &Arc<Node>, idx: &[usize]) -> Result<TaskId, GraphError> {
        let key = node.key(idx);
        if let Some(id) = self.builder.id_of(&key) {
            return Ok(id);
        }
        match &node.op {
            Op::Materialized(layer) => layer.lower_block(node, idx, self),
            _ => {
                let mut inputs = TaskInputs::default();
                let expr = self.expr_inner(node, idx, &mut inputs)?;
                self.add_expr_task(node, key, expr, inputs)
            }
        }
    }

    fn add_expr_task(&mut self, node: &Node, key: Key, expr: Expr, inputs: TaskInputs) -> Result<TaskId, GraphError> {
        let kernel: Arc<dyn Kernel> =
            Arc::new(ExprKernel { name: kernel_name(node), exprs: vec![expr], finish: Finish::none() });
        self.add(key, kernel, inputs.into_args())
    }

    /// Decides block `idx` of `node` as a reader's operand: `None` when it had to be deferred
    /// (or depends on a deferred block) in this attempt.
    fn decide(&mut self, node: &Arc<Node>, idx: &[usize]) -> Result<Option<Decision>, GraphError> {
        let key = node.key(idx);
        if let Some(&d) = self.decided.get(&key) {
            return Ok(Some(d));
        }
        let own_task = !self.fuse || matches!(node.op, Op::Materialized(_));
        if own_task && let Some(id) = self.builder.id_of(&key) {
            self.decided.insert(key, Decision::Task(id));
            return Ok(Some(Decision::Task(id)));
        }
        if self.waiting.contains(&key) {
            self.misses += 1;
            return Ok(None);
        }
        if self.depth >= MAX_NESTING {
            self.deferred.push((node.clone(), idx.to_vec()));
            self.waiting.insert(key);
            self.misses += 1;
            return Ok(None);
        }
        let mark = self.misses;
        self.depth += 1;
        self.marks.push(mark);
        let decision = self.decide_new(node, idx, own_task);
        self.marks.pop();
        self.depth -= 1;
        let decision = decision?;
        if self.misses == mark {
            self.decided.insert(key, decision);
            Ok(Some(decision))
        } else {
            self.waiting.insert(key);
            self.misses += 1;
            Ok(None)
        }
    }

    fn decide_new(&mut self, node: &Arc<Node>, idx: &[usize], own_task: bool) -> Result<Decision, GraphError> {
        if own_task {
            return Ok(Decision::Task(self.task(node, idx)?));
        }
        let mut scratch = TaskInputs::default();
        let expr = self.expr_inner(node, idx, &mut scratch)?;
        if expr.size() > MAX_FUSED_OPS {
            // Too much to duplicate into every reader: a task of its own, from the same
            // expression.
            return Ok(Decision::Task(self.add_expr_task(node, node.key(idx), expr, scratch)?));
        }
        Ok(Decision::Inline)
    }

    /// The expression of block `idx` of `node`, inlining lazy operations and referring to
    /// tasks for materialized ones (layers call this for the blocks their tasks read).
    ///
    /// # Errors
    /// Invalid graphs.
    pub fn expr(&mut self, node: &Arc<Node>, idx: &[usize], inputs: &mut TaskInputs) -> Result<Expr, GraphError> {
        self.expr_inner(node, idx, inputs)
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
            Op::Materialized(_) => self.child(node, idx, inputs)?,
            Op::Invalid(e) => return Err(GraphError::invalid("array", e.clone())),
        })
    }

    /// An operand's expression: inlined when small, else a reference to its task. Its
    /// decision is made once; an inlined operand is rebuilt from its (decided) operands, a
    /// walk no deeper than [`MAX_FUSED_OPS`].
    fn child(&mut self, node: &Arc<Node>, idx: &[usize], inputs: &mut TaskInputs) -> Result<Expr, GraphError> {
        match self.decide(node, idx)? {
            Some(Decision::Task(id)) => Ok(Expr::Input(inputs.task(id))),
            Some(Decision::Inline) => self.expr_inner(node, idx, inputs),
            // Deferred: this attempt adds no task holding it, so any expression will do.
            None => Ok(Expr::Input(usize::MAX)),
        }
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
