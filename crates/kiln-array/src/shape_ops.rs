//! Joining arrays (`concatenate`, `stack`), per-block user functions (`map_blocks`) and
//! cumulative reductions (`cumsum`, `cumprod`).

use std::sync::Arc;

use kiln_graph::kernel::{Portable, PortableKernel};
use kiln_graph::{Arg, Collection, GraphError, Kernel, Key, TaskError, TaskId, Tokenizer, Value};
use ndarray::{ArrayD, Axis, Slice};

use crate::array::Array;
use crate::block::{Block, DType, Element};
use crate::chunks::{ChunkSpec, Chunks};
use crate::error::{ArrayError, normalize_axis};
use crate::node::{BlockFinish, ExprKernel, Finish, Layer, Lowering, Node, Op, TaskInputs, input_blocks};

/// Joins arrays along an existing axis (NumPy's `concatenate`). The output keeps every input's
/// blocks, so nothing is copied until the blocks are used.
///
/// ```
/// use kiln_array::{concatenate, ones, zeros};
/// let x = concatenate(&[ones::<f64>(&[2, 3], 2), zeros::<f64>(&[4, 3], 2)], 0);
/// assert_eq!(x.shape(), &[6, 3]);
/// ```
pub fn concatenate<T: Element>(arrays: &[Array<T>], axis: isize) -> Array<T> {
    let Some(first) = arrays.first() else {
        return Array::invalid(ArrayError::Invalid("need at least one array to concatenate".into()));
    };
    if let Some(e) = arrays.iter().find_map(|a| a.error()) {
        return Array::invalid(e.clone());
    }
    let ndim = first.ndim();
    let axis = match normalize_axis(axis, ndim) {
        Ok(a) => a,
        Err(e) => return Array::invalid(e),
    };
    // All other axes must agree in length; their chunks are unified by rechunking.
    let mut nodes = Vec::with_capacity(arrays.len());
    for a in arrays {
        if a.ndim() != ndim {
            return Array::invalid(ArrayError::Shape(format!(
                "all the input arrays must have the same number of dimensions, got {} and {}",
                ndim,
                a.ndim()
            )));
        }
        for d in (0..ndim).filter(|&d| d != axis) {
            if a.shape()[d] != first.shape()[d] {
                return Array::invalid(ArrayError::Shape(format!(
                    "all the input array dimensions except for the concatenation axis must match exactly, \
                     but along dimension {d} the arrays have sizes {} and {}",
                    first.shape()[d],
                    a.shape()[d]
                )));
            }
        }
        let target: Chunks =
            (0..ndim).map(|d| if d == axis { a.chunks()[d].clone() } else { first.chunks()[d].clone() }).collect();
        let node = if &target != a.chunks() { crate::rechunk::rechunk(&a.node, target) } else { a.node.clone() };
        nodes.push(node);
    }
    let mut shape = first.shape().to_vec();
    shape[axis] = nodes.iter().map(|n| n.shape[axis]).sum();
    let mut chunks = first.chunks().clone();
    chunks[axis] = nodes.iter().flat_map(|n| n.chunks[axis].iter().copied()).filter(|&c| c > 0).collect();
    if chunks[axis].is_empty() {
        chunks[axis] = vec![0];
    }
    // Empty inputs contribute no blocks.
    let nodes: Vec<Arc<Node>> = nodes.into_iter().filter(|n| n.shape[axis] > 0).collect();
    if nodes.is_empty() {
        return first.clone();
    }
    let mut tokens = Tokenizer::new();
    tokens.feed("concatenate").feed(&axis);
    for n in &nodes {
        tokens.feed(&*n.name);
    }
    let name = tokens.key("concatenate");
    Array::from_node(Arc::new(Node {
        name: name.shared_name().clone(),
        shape,
        chunks,
        dtype: T::DTYPE,
        op: Op::Concat(nodes, axis),
    }))
}

/// Joins arrays along a new axis (NumPy's `stack`).
pub fn stack<T: Element>(arrays: &[Array<T>], axis: isize) -> Array<T> {
    let Some(first) = arrays.first() else {
        return Array::invalid(ArrayError::Invalid("need at least one array to stack".into()));
    };
    if arrays.iter().any(|a| a.shape() != first.shape()) {
        return Array::invalid(ArrayError::Shape("all input arrays must have the same shape".into()));
    }
    let expanded: Vec<Array<T>> = arrays.iter().map(|a| a.expand_dims(axis)).collect();
    concatenate(&expanded, axis)
}

impl<T: Element> Array<T> {
    /// The elements at `indices` along `axis`, in that order (NumPy's `take`; negative indices
    /// count from the end, repeats are allowed). The output is chunked like the index list,
    /// in pieces of the input's chunk size.
    pub fn take(&self, indices: &[isize], axis: isize) -> Array<T> {
        if let Some(e) = self.error() {
            return Array::invalid(e.clone());
        }
        let axis = match normalize_axis(axis, self.ndim()) {
            Ok(a) => a,
            Err(e) => return Array::invalid(e),
        };
        let n = self.shape()[axis];
        let mut resolved = Vec::with_capacity(indices.len());
        for &i in indices {
            let r = if i < 0 { i + n as isize } else { i };
            if r < 0 || r >= n as isize {
                return Array::invalid(ArrayError::Index { index: i, axis, size: n });
            }
            resolved.push(r as usize);
        }
        let size = self.chunks()[axis].iter().copied().max().unwrap_or(1).max(1);
        let mut chunks = self.chunks().clone();
        chunks[axis] = crate::chunks::regular(resolved.len(), size);
        let mut shape = self.shape().to_vec();
        shape[axis] = resolved.len();
        let key = Tokenizer::new().add("take").add(&*self.node.name).add(&axis).add(&resolved).key("take");
        let layer = Take { input: self.node.clone(), axis, indices: resolved };
        Array::from_node(Arc::new(Node {
            name: key.shared_name().clone(),
            shape,
            chunks,
            dtype: T::DTYPE,
            op: Op::Materialized(Arc::new(layer)),
        }))
    }

    /// Applies a function to every block (Dask's `map_blocks`). The function must return a
    /// block of the same shape; it runs on the local scheduler (a closure is not portable).
    ///
    /// ```
    /// use kiln_array::ones;
    /// use kiln_graph::Collection;
    /// use kiln_local::LocalScheduler;
    /// let x = ones::<f64>(&[4, 4], 2).map_blocks("double", |b: &ndarray::ArrayD<f64>| b * 2.0);
    /// assert_eq!(x.sum().scalar().compute_on(&LocalScheduler::new()).unwrap(), 32.0);
    /// ```
    pub fn map_blocks<U: Element>(
        &self,
        name: &str,
        f: impl Fn(&ArrayD<T>) -> ArrayD<U> + Send + Sync + 'static,
    ) -> Array<U> {
        if let Some(e) = self.error() {
            return Array::invalid(e.clone());
        }
        let key = crate::array::closure_key(name, &[&self.node.name]);
        let layer = MapBlocks::<T, U> { input: self.node.clone(), f: Arc::new(f), name: name.to_string() };
        self.same_layout(&key, Arc::new(layer))
    }

    /// Cumulative sum along an axis (NumPy's `cumsum`; int64 for integers and bools).
    pub fn cumsum(&self, axis: isize) -> Array<T::Sum> {
        self.cumulative(axis, false)
    }

    /// Cumulative product along an axis.
    pub fn cumprod(&self, axis: isize) -> Array<T::Sum> {
        self.cumulative(axis, true)
    }

    fn cumulative<U: Element>(&self, axis: isize, product: bool) -> Array<U> {
        if let Some(e) = self.error() {
            return Array::invalid(e.clone());
        }
        let axis = match normalize_axis(axis, self.ndim()) {
            Ok(a) => a,
            Err(e) => return Array::invalid(e),
        };
        let op = if product { "cumprod" } else { "cumsum" };
        let key = Tokenizer::new().add(op).add(&*self.node.name).add(&axis).key(op);
        let base = key.shared_name().clone();
        let layer = Cumulative {
            input: self.node.clone(),
            axis,
            product,
            dtype: U::DTYPE,
            local: format!("{base}-local").into(),
            carry: format!("{base}-carry").into(),
        };
        Array::from_node(Arc::new(Node {
            name: base,
            shape: self.shape().to_vec(),
            chunks: self.chunks().clone(),
            dtype: U::DTYPE,
            op: Op::Materialized(Arc::new(layer)),
        }))
    }
}

/// A user function from one block to another.
pub(crate) type BlockFn<T, U> = dyn Fn(&ArrayD<T>) -> ArrayD<U> + Send + Sync;

struct MapBlocks<T, U> {
    input: Arc<Node>,
    f: Arc<BlockFn<T, U>>,
    name: String,
}

struct ApplyFn<T, U> {
    f: Arc<BlockFn<T, U>>,
    shape: Vec<usize>,
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
        lw.builder.add(node.key(idx), kernel, inputs.into_args())
    }

    fn inputs(&self) -> Vec<Arc<Node>> {
        vec![self.input.clone()]
    }
}

/// `cumsum` as a chain: each block's local cumulative sum, then the running total of the
/// blocks before it (its "carry") added in.
struct Cumulative {
    input: Arc<Node>,
    axis: usize,
    product: bool,
    dtype: DType,
    local: Arc<str>,
    carry: Arc<str>,
}

impl Layer for Cumulative {
    fn lower_block(&self, node: &Node, idx: &[usize], lw: &mut Lowering<'_>) -> Result<TaskId, GraphError> {
        let local = self.local_task(idx, lw)?;
        if idx[self.axis] == 0 {
            let id: Arc<dyn Kernel> = Arc::new(kiln_graph::kernel::Identity);
            return lw.builder.add(node.key(idx), id, [Arg::Task(local)]);
        }
        let carry = self.carry_task(idx, lw)?;
        let apply: Arc<dyn Kernel> = Arc::new(Portable(ApplyCarry { axis: self.axis, product: self.product }));
        lw.builder.add(node.key(idx), apply, [Arg::Task(local), Arg::Task(carry)])
    }

    fn inputs(&self) -> Vec<Arc<Node>> {
        vec![self.input.clone()]
    }
}

impl Cumulative {
    fn idx_key(name: &Arc<str>, idx: &[usize]) -> Key {
        Key::from_shared(name, &idx.iter().map(|&i| i as u32).collect::<Vec<_>>())
    }

    fn local_task(&self, idx: &[usize], lw: &mut Lowering<'_>) -> Result<TaskId, GraphError> {
        let key = Self::idx_key(&self.local, idx);
        if let Some(id) = lw.builder.id_of(&key) {
            return Ok(id);
        }
        let mut inputs = TaskInputs::default();
        let expr = lw.expr(&self.input, idx, &mut inputs)?;
        let kernel: Arc<dyn Kernel> = Arc::new(ExprKernel {
            name: if self.product { "cumprod-local".into() } else { "cumsum-local".into() },
            exprs: vec![expr],
            finish: Finish::builtin(LocalScan { axis: self.axis, product: self.product, dtype: self.dtype }),
        });
        lw.builder.add(key, kernel, inputs.into_args())
    }

    /// The combined total of all blocks before `idx` along the axis (a slab of length 1).
    fn carry_task(&self, idx: &[usize], lw: &mut Lowering<'_>) -> Result<TaskId, GraphError> {
        let key = Self::idx_key(&self.carry, idx);
        if let Some(id) = lw.builder.id_of(&key) {
            return Ok(id);
        }
        let mut prev = idx.to_vec();
        prev[self.axis] -= 1;
        let prev_local = self.local_task(&prev, lw)?;
        let kernel: Arc<dyn Kernel> = Arc::new(Portable(Carry { axis: self.axis, product: self.product }));
        if prev[self.axis] == 0 {
            lw.builder.add(key, kernel, [Arg::Task(prev_local)])
        } else {
            let prev_carry = self.carry_task(&prev, lw)?;
            lw.builder.add(key, kernel, [Arg::Task(prev_local), Arg::Task(prev_carry)])
        }
    }
}

macro_rules! numeric {
    ($block:expr, $a:ident => $body:expr) => {
        match $block {
            Block::F64($a) => Block::F64($body),
            Block::F32($a) => Block::F32($body),
            Block::I64($a) => Block::I64($body),
            Block::I32($a) => Block::I32($body),
            Block::Bool(_) => return Err(TaskError::msg("cumulative operations accumulate bools as int64")),
        }
    };
}

#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct LocalScan {
    axis: usize,
    product: bool,
    dtype: DType,
}

impl BlockFinish for LocalScan {
    fn finish(&self, blocks: Vec<Block>) -> Result<Value, TaskError> {
        let block = blocks.into_iter().next().ok_or_else(|| TaskError::msg("no block"))?.cast(self.dtype);
        let (axis, product) = (Axis(self.axis), self.product);
        Ok(Value::new(numeric!(block, a => {
            let mut a = a;
            if product {
                a.accumulate_axis_inplace(axis, |&prev, cur| *cur *= prev);
            } else {
                a.accumulate_axis_inplace(axis, |&prev, cur| *cur += prev);
            }
            a
        })))
    }
}

/// The last slab of the previous local scan, combined with the carry before it.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct Carry {
    axis: usize,
    product: bool,
}

fn last_slab<A: Clone>(a: &ArrayD<A>, axis: usize) -> ArrayD<A> {
    let n = a.shape()[axis];
    a.slice_axis(Axis(axis), Slice::from(n.saturating_sub(1)..n)).to_owned()
}

fn combine_blocks(x: &Block, y: &Block, product: bool) -> Result<Block, TaskError> {
    Ok(match (x, y) {
        (Block::F64(a), Block::F64(b)) => Block::F64(if product { a * b } else { a + b }),
        (Block::F32(a), Block::F32(b)) => Block::F32(if product { a * b } else { a + b }),
        (Block::I64(a), Block::I64(b)) => Block::I64(if product { a * b } else { a + b }),
        (Block::I32(a), Block::I32(b)) => Block::I32(if product { a * b } else { a + b }),
        _ => return Err(TaskError::msg("cumulative blocks differ in dtype")),
    })
}

impl PortableKernel for Carry {
    const ID: &'static str = "kiln.array.cumulative-carry";
    fn name(&self) -> &str {
        "cumulative-carry"
    }
    fn call(&self, inputs: &[Value]) -> Result<Value, TaskError> {
        let blocks = input_blocks(inputs)?;
        let axis = self.axis;
        // The axis may come from another process: check it rather than index blindly.
        if blocks.is_empty() || axis >= blocks[0].shape().len() {
            return Err(TaskError::msg("cumulative carry: missing block or axis out of range"));
        }
        let slab = crate::with_block!(blocks[0], a => Element::into_block(last_slab(a, axis)));
        let total = match blocks.get(1) {
            Some(prev) => combine_blocks(&slab, prev, self.product)?,
            None => slab,
        };
        Ok(Value::new(total))
    }
}

/// Adds (or multiplies) the carry slab into every position of the local scan.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct ApplyCarry {
    axis: usize,
    product: bool,
}

impl PortableKernel for ApplyCarry {
    const ID: &'static str = "kiln.array.cumulative-apply";
    fn name(&self) -> &str {
        "cumulative-apply"
    }
    fn call(&self, inputs: &[Value]) -> Result<Value, TaskError> {
        let blocks = input_blocks(inputs)?;
        if blocks.len() != 2 || self.axis >= blocks[0].shape().len() {
            return Err(TaskError::msg("cumulative apply: needs a block and a carry, and an axis in range"));
        }
        if blocks[0].shape()[self.axis] == 0 {
            return Ok(Value::new(blocks[0].clone()));
        }
        // The carry has length 1 along the axis and broadcasts.
        Ok(Value::new(combine_blocks(blocks[0], blocks[1], self.product)?))
    }
}

struct Take {
    input: Arc<Node>,
    axis: usize,
    indices: Vec<usize>,
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
            exprs.push(crate::expr::Expr::Take(axis, positions, Box::new(e)));
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
            exprs.push(crate::expr::Expr::Take(axis, Vec::new(), Box::new(e)));
            places.push(vec![0; idx.len()]);
        }
        let kernel: Arc<dyn Kernel> = Arc::new(ExprKernel {
            name: "take".into(),
            exprs,
            finish: Finish::builtin(crate::rechunk::Assemble { shape, places }),
        });
        lw.builder.add(node.key(idx), kernel, inputs.into_args())
    }

    fn inputs(&self) -> Vec<Arc<Node>> {
        vec![self.input.clone()]
    }
}

impl<T: Element> Array<T> {
    /// The elements where `mask` is true, in C order, as a 1-d array (NumPy's `x[mask]`). Blocks
    /// are regrouped into whole rows first, so that block order is C order.
    ///
    /// The result's chunk sizes depend on the data, so this first computes how many elements
    /// each block selects (on `scheduler`), as Dask's `compute_chunk_sizes` does; the selection
    /// itself stays lazy.
    ///
    /// # Errors
    /// A construction error (e.g. shapes differ) or a failure while counting.
    pub fn select_where(
        &self,
        mask: &Array<bool>,
        scheduler: &dyn kiln_graph::Scheduler,
    ) -> Result<Array<T>, kiln_graph::ComputeError> {
        let fail = |e: ArrayError| kiln_graph::ComputeError::invalid("array", e);
        self.check().map_err(fail)?;
        mask.check().map_err(fail)?;
        if mask.shape() != self.shape() {
            return Err(fail(ArrayError::Shape(format!(
                "boolean index of shape {:?} does not match the array's shape {:?}",
                mask.shape(),
                self.shape()
            ))));
        }
        // Blocks of whole rows: then block order is C order, as NumPy's result requires.
        let mut rows: Chunks = self.shape().iter().map(|&d| vec![d]).collect();
        if let Some(first) = rows.first_mut() {
            *first = self.chunks()[0].clone();
        }
        let this = self.rechunk(ChunkSpec::Explicit(rows.clone()));
        let mask = mask.rechunk(ChunkSpec::Explicit(rows));
        let blocks = crate::chunks::block_indices(&this.numblocks());
        let counts_node = Arc::new(Node {
            name: Tokenizer::new().add("mask-counts").add(mask.name()).key("mask-counts").shared_name().clone(),
            shape: this.numblocks(),
            chunks: this.numblocks().iter().map(|&n| vec![1; n]).collect(),
            dtype: DType::I64,
            op: Op::Materialized(Arc::new(CountTrue { mask: mask.node.clone() })),
        });
        let counts = Array::<i64>::from_node(counts_node).compute_on(scheduler)?;
        let mut pieces: Vec<(Vec<usize>, usize)> = Vec::new();
        for (idx, &c) in blocks.iter().zip(counts.iter()) {
            if c > 0 {
                pieces.push((idx.clone(), c as usize));
            }
        }
        let total: usize = pieces.iter().map(|(_, c)| c).sum();
        if total == 0 {
            return Ok(crate::array::zeros::<T>(&[0], ChunkSpec::Uniform(1)));
        }
        let name = Tokenizer::new().add("getitem-mask").add(this.name()).add(mask.name()).key("getitem-mask");
        Ok(Array::from_node(Arc::new(Node {
            name: name.shared_name().clone(),
            shape: vec![total],
            chunks: vec![pieces.iter().map(|(_, c)| *c).collect()],
            dtype: T::DTYPE,
            op: Op::Materialized(Arc::new(MaskSelect { input: this.node.clone(), mask: mask.node.clone(), pieces })),
        })))
    }
}

struct CountTrue {
    mask: Arc<Node>,
}

#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct Count {
    ndim: usize,
}

impl BlockFinish for Count {
    fn finish(&self, blocks: Vec<Block>) -> Result<Value, TaskError> {
        let Some(Block::Bool(m)) = blocks.into_iter().next() else {
            return Err(TaskError::msg("mask block is not bool"));
        };
        let n = m.iter().filter(|&&b| b).count() as i64;
        Ok(Value::new(Block::I64(ArrayD::from_elem(ndarray::IxDyn(&vec![1; self.ndim]), n))))
    }
}

impl Layer for CountTrue {
    fn lower_block(&self, node: &Node, idx: &[usize], lw: &mut Lowering<'_>) -> Result<TaskId, GraphError> {
        let mut inputs = TaskInputs::default();
        let expr = lw.expr(&self.mask, idx, &mut inputs)?;
        let kernel: Arc<dyn Kernel> = Arc::new(ExprKernel {
            name: "mask-count".into(),
            exprs: vec![expr],
            finish: Finish::builtin(Count { ndim: idx.len() }),
        });
        lw.builder.add(node.key(idx), kernel, inputs.into_args())
    }
    fn inputs(&self) -> Vec<Arc<Node>> {
        vec![self.mask.clone()]
    }
}

struct MaskSelect {
    input: Arc<Node>,
    mask: Arc<Node>,
    /// The input blocks that select something, with how many elements each selects.
    pieces: Vec<(Vec<usize>, usize)>,
}

#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct Pick;

impl BlockFinish for Pick {
    fn finish(&self, blocks: Vec<Block>) -> Result<Value, TaskError> {
        let mut it = blocks.into_iter();
        let (Some(values), Some(Block::Bool(mask))) = (it.next(), it.next()) else {
            return Err(TaskError::msg("boolean selection needs a value block and a bool mask block"));
        };
        let picked = crate::with_block!(values, a => {
            let v: Vec<_> = a.iter().zip(mask.iter()).filter(|(_, m)| **m).map(|(x, _)| *x).collect();
            Element::into_block(ArrayD::from_shape_vec(ndarray::IxDyn(&[v.len()]), v).expect("1-d"))
        });
        Ok(Value::new(picked))
    }
}

impl Layer for MaskSelect {
    fn lower_block(&self, node: &Node, idx: &[usize], lw: &mut Lowering<'_>) -> Result<TaskId, GraphError> {
        let (in_idx, _) = &self.pieces[idx[0]];
        let mut inputs = TaskInputs::default();
        let exprs = vec![lw.expr(&self.input, in_idx, &mut inputs)?, lw.expr(&self.mask, in_idx, &mut inputs)?];
        let kernel: Arc<dyn Kernel> =
            Arc::new(ExprKernel { name: "getitem-mask".into(), exprs, finish: Finish::builtin(Pick) });
        lw.builder.add(node.key(idx), kernel, inputs.into_args())
    }
    fn inputs(&self) -> Vec<Arc<Node>> {
        vec![self.input.clone(), self.mask.clone()]
    }
}

/// Applies `f` to the corresponding blocks of two arrays of one shape (Dask's `blockwise` with
/// matching indices); their chunks are unified first. `f` returns the block of the result,
/// which has the inputs' shape and chunks. Runs on the local scheduler (closures are not
/// portable).
pub fn blockwise<A: Element, B: Element, U: Element>(
    a: &Array<A>,
    b: &Array<B>,
    name: &str,
    f: impl Fn(&ArrayD<A>, &ArrayD<B>) -> ArrayD<U> + Send + Sync + 'static,
) -> Array<U> {
    if let Some(e) = a.error().or(b.error()) {
        return Array::invalid(e.clone());
    }
    if a.shape() != b.shape() {
        return Array::invalid(ArrayError::Shape(format!(
            "blockwise operands have shapes {:?} and {:?}",
            a.shape(),
            b.shape()
        )));
    }
    let chunks: Chunks =
        a.chunks().iter().zip(b.chunks()).map(|(x, y)| crate::chunks::common_refinement(x, y)).collect();
    let (a, b) = (a.rechunk(ChunkSpec::Explicit(chunks.clone())), b.rechunk(ChunkSpec::Explicit(chunks.clone())));
    let key = crate::array::closure_key(name, &[a.name(), b.name()]);
    let layer = Blockwise2::<A, B, U> { a: a.node.clone(), b: b.node.clone(), f: Arc::new(f), name: name.to_string() };
    Array::from_node(Arc::new(Node {
        name: key.shared_name().clone(),
        shape: a.shape().to_vec(),
        chunks,
        dtype: U::DTYPE,
        op: Op::Materialized(Arc::new(layer)),
    }))
}

type PairFn<A, B, U> = dyn Fn(&ArrayD<A>, &ArrayD<B>) -> ArrayD<U> + Send + Sync;

struct Blockwise2<A, B, U> {
    a: Arc<Node>,
    b: Arc<Node>,
    f: Arc<PairFn<A, B, U>>,
    name: String,
}

struct ApplyPair<A, B, U> {
    f: Arc<PairFn<A, B, U>>,
    shape: Vec<usize>,
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
        lw.builder.add(node.key(idx), kernel, inputs.into_args())
    }
    fn inputs(&self) -> Vec<Arc<Node>> {
        vec![self.a.clone(), self.b.clone()]
    }
}

impl<T: Element> Array<T> {
    /// Computes into an existing in-memory array of the same shape (Dask's `store` with an
    /// ndarray target).
    ///
    /// # Errors
    /// A shape mismatch, the construction error, or the first failing task.
    pub fn store_into(
        &self,
        target: &mut ArrayD<T>,
        scheduler: &dyn kiln_graph::Scheduler,
    ) -> Result<(), kiln_graph::ComputeError> {
        if target.shape() != self.shape() {
            return Err(kiln_graph::ComputeError::invalid(
                "array",
                ArrayError::Shape(format!(
                    "store target has shape {:?}, the array has {:?}",
                    target.shape(),
                    self.shape()
                )),
            ));
        }
        let computed = self.compute_on(scheduler)?;
        target.assign(&computed);
        Ok(())
    }
}
