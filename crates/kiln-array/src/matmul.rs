//! Matrix products as blocked algorithms: output block `(i, j)` accumulates
//! `A[i, p] @ B[p, j]` over the shared axis in one buffer, `split_every` products per task
//! (then a sum tree), on faer's GEMM for floats. The operands' block expressions are fused into
//! the product task, so `x.dot(&(&x.t() + 1.0))` never materializes `x.T + 1`.

use std::sync::Arc;

use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};
use kiln_graph::kernel::{Portable, PortableKernel};
use kiln_graph::{Arg, GraphError, Kernel, Key, TaskError, TaskId, Tokenizer, Value};
use ndarray::{Array2, ArrayD, Ix2, IxDyn};

use crate::array::Array;
use crate::block::{Block, DType, Element};
use crate::chunks::common_refinement;
use crate::error::ArrayError;
use crate::node::{BlockFinish, ExprKernel, Finish, Layer, Lowering, Node, Op, TaskInputs, input_blocks};

/// How many block products one task accumulates before a sum tree takes over.
const PRODUCTS_PER_TASK: usize = 8;

impl<T: Element> Array<T> {
    /// Matrix product with NumPy's `dot` rules for 1-d and 2-d operands: a 1-d left operand is
    /// a row, a 1-d right operand a column, and those axes are dropped from the result.
    pub fn dot(&self, other: &Array<T>) -> Array<T> {
        if let Some(e) = self.error().or(other.error()) {
            return Array::invalid(e.clone());
        }
        let (a, b) = (self.ndim(), other.ndim());
        if !(1..=2).contains(&a) || !(1..=2).contains(&b) {
            return Array::invalid(ArrayError::Shape(format!(
                "dot supports 1-d and 2-d operands, got {a}-d and {b}-d (use tensordot for more)"
            )));
        }
        let lhs = if a == 1 { self.expand_dims(0) } else { self.clone() };
        let rhs = if b == 1 { other.expand_dims(1) } else { other.clone() };
        let product = match matmul_node(&lhs.node, &rhs.node) {
            Ok(n) => Array::<T>::from_node(n),
            Err(e) => return Array::invalid(e),
        };
        match (a, b) {
            (1, 1) => product.squeeze(&[0, 1]),
            (1, _) => product.squeeze(&[0]),
            (_, 1) => product.squeeze(&[1]),
            _ => product,
        }
    }

    /// Matrix product of 2-d arrays (NumPy's `@`).
    pub fn matmul(&self, other: &Array<T>) -> Array<T> {
        if self.ndim() != 2 || other.ndim() != 2 {
            return Array::invalid(ArrayError::Shape(format!(
                "matmul of {}-d and {}-d arrays: kiln supports 2-d operands",
                self.ndim(),
                other.ndim()
            )));
        }
        self.dot(other)
    }
}

fn matmul_node(a: &Arc<Node>, b: &Arc<Node>) -> Result<Arc<Node>, ArrayError> {
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
    let a = if a.chunks[1] != k { crate::rechunk::rechunk(a, vec![a.chunks[0].clone(), k.clone()]) } else { a.clone() };
    let b = if b.chunks[0] != k { crate::rechunk::rechunk(b, vec![k, b.chunks[1].clone()]) } else { b.clone() };
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

struct MatMul {
    a: Arc<Node>,
    b: Arc<Node>,
    partial_name: Arc<str>,
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
            partials.push(lw.builder.add(key, kernel, inputs.into_args())?);
        }
        if partials.len() == 1 {
            return Ok(partials[0]);
        }
        let add: Arc<dyn Kernel> = Arc::new(Portable(AddBlocks));
        lw.builder.add(node.key(idx), add, partials.into_iter().map(Arg::Task))
    }

    fn inputs(&self) -> Vec<Arc<Node>> {
        vec![self.a.clone(), self.b.clone()]
    }
}

/// Accumulates `sum_p A_p @ B_p` for the first and second halves of the evaluated blocks.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct Products {
    shape: Vec<usize>,
    dtype: DType,
}

fn as2<T: Clone>(a: ArrayD<T>) -> Result<Array2<T>, TaskError> {
    let a = if a.is_standard_layout() { a } else { a.as_standard_layout().into_owned() };
    a.into_dimensionality::<Ix2>().map_err(|e| TaskError::msg(format!("matmul operand: {e}")))
}

macro_rules! faer_products {
    ($ty:ty, $variant:ident, $pairs:expr, $m:expr, $n:expr) => {{
        let mut out = vec![0 as $ty; $m * $n];
        for (p, (a, b)) in $pairs.into_iter().enumerate() {
            let (Block::$variant(a), Block::$variant(b)) = (a, b) else {
                return Err(TaskError::msg("matmul operands differ in dtype"));
            };
            let (a, b) = (as2(a)?, as2(b)?);
            let (k, kb) = (a.ncols(), b.nrows());
            if a.nrows() != $m || b.ncols() != $n || k != kb {
                return Err(TaskError::msg(format!("matmul blocks {:?} and {:?} do not fit", a.shape(), b.shape())));
            }
            let lhs = MatRef::from_row_major_slice(a.as_slice().expect("standard layout"), $m, k);
            let rhs = MatRef::from_row_major_slice(b.as_slice().expect("standard layout"), k, $n);
            let dst = MatMut::from_row_major_slice_mut(&mut out, $m, $n);
            let accum = if p == 0 { Accum::Replace } else { Accum::Add };
            matmul(dst, accum, lhs, rhs, 1.0 as $ty, Par::Seq);
        }
        Block::$variant(ArrayD::from_shape_vec(IxDyn(&[$m, $n]), out).expect("m * n elements"))
    }};
}

macro_rules! ndarray_products {
    ($ty:ty, $variant:ident, $pairs:expr, $m:expr, $n:expr) => {{
        let mut out = Array2::<$ty>::zeros(($m, $n));
        for (a, b) in $pairs {
            let (Block::$variant(a), Block::$variant(b)) = (a, b) else {
                return Err(TaskError::msg("matmul operands differ in dtype"));
            };
            let (a, b) = (as2(a)?, as2(b)?);
            if a.ncols() != b.nrows() {
                return Err(TaskError::msg(format!("matmul blocks {:?} and {:?} do not fit", a.shape(), b.shape())));
            }
            out = out + a.dot(&b);
        }
        Block::$variant(out.into_dyn())
    }};
}

impl BlockFinish for Products {
    fn finish(&self, blocks: Vec<Block>) -> Result<Value, TaskError> {
        let half = blocks.len() / 2;
        let mut blocks = blocks;
        let rhs = blocks.split_off(half);
        let pairs: Vec<(Block, Block)> = blocks.into_iter().zip(rhs).collect();
        let &[m, n] = self.shape.as_slice() else {
            return Err(TaskError::msg(format!("matmul output shape {:?} is not 2-d", self.shape)));
        };
        let block = match self.dtype {
            DType::F64 => faer_products!(f64, F64, pairs, m, n),
            DType::F32 => faer_products!(f32, F32, pairs, m, n),
            DType::I64 => ndarray_products!(i64, I64, pairs, m, n),
            DType::I32 => ndarray_products!(i32, I32, pairs, m, n),
            DType::Bool => return Err(TaskError::msg("dot of bool blocks")),
        };
        Ok(Value::new(block))
    }
}

/// Sums blocks of one shape and dtype.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct AddBlocks;

impl PortableKernel for AddBlocks {
    const ID: &'static str = "kiln.array.add-blocks";
    fn name(&self) -> &str {
        "sum-blocks"
    }

    fn call(&self, inputs: &[Value]) -> Result<Value, TaskError> {
        let blocks = input_blocks(inputs)?;
        let mut acc = (*blocks.first().ok_or_else(|| TaskError::msg("nothing to add"))?).clone();
        for b in &blocks[1..] {
            acc = match (acc, *b) {
                (Block::F64(mut x), Block::F64(y)) => {
                    x += y;
                    Block::F64(x)
                }
                (Block::F32(mut x), Block::F32(y)) => {
                    x += y;
                    Block::F32(x)
                }
                (Block::I64(mut x), Block::I64(y)) => {
                    x += y;
                    Block::I64(x)
                }
                (Block::I32(mut x), Block::I32(y)) => {
                    x += y;
                    Block::I32(x)
                }
                _ => return Err(TaskError::msg("cannot add these blocks")),
            };
        }
        Ok(Value::new(acc))
    }
}

/// Sums products over pairs of axes (NumPy's `tensordot(a, b, axes=(a_axes, b_axes))`): the
/// contracted axes move to the end of `a` and the front of `b`, both reshape to matrices, and
/// the blocked matrix product does the work.
pub fn tensordot<T: Element>(a: &Array<T>, b: &Array<T>, a_axes: &[isize], b_axes: &[isize]) -> Array<T> {
    if let Some(e) = a.error().or(b.error()) {
        return Array::invalid(e.clone());
    }
    let resolve = |axes: &[isize], ndim: usize| -> Result<Vec<usize>, ArrayError> {
        axes.iter().map(|&x| crate::error::normalize_axis(x, ndim)).collect()
    };
    let (ca, cb) = match (resolve(a_axes, a.ndim()), resolve(b_axes, b.ndim())) {
        (Ok(x), Ok(y)) => (x, y),
        (Err(e), _) | (_, Err(e)) => return Array::invalid(e),
    };
    if ca.len() != cb.len() || ca.iter().zip(&cb).any(|(&i, &j)| a.shape()[i] != b.shape()[j]) {
        return Array::invalid(ArrayError::Shape(format!(
            "shape-mismatch for sum: axes {ca:?} of {:?} and {cb:?} of {:?}",
            a.shape(),
            b.shape()
        )));
    }
    let free_a: Vec<usize> = (0..a.ndim()).filter(|x| !ca.contains(x)).collect();
    let free_b: Vec<usize> = (0..b.ndim()).filter(|x| !cb.contains(x)).collect();
    let perm_a: Vec<isize> = free_a.iter().chain(&ca).map(|&x| x as isize).collect();
    let perm_b: Vec<isize> = cb.iter().chain(&free_b).map(|&x| x as isize).collect();
    let m: usize = free_a.iter().map(|&x| a.shape()[x]).product();
    let k: usize = ca.iter().map(|&x| a.shape()[x]).product();
    let n: usize = free_b.iter().map(|&x| b.shape()[x]).product();
    let lhs = a.transpose(&perm_a).reshape(&[m as isize, k as isize]);
    let rhs = b.transpose(&perm_b).reshape(&[k as isize, n as isize]);
    let out_shape: Vec<isize> =
        free_a.iter().map(|&x| a.shape()[x] as isize).chain(free_b.iter().map(|&x| b.shape()[x] as isize)).collect();
    lhs.dot(&rhs).reshape(&out_shape)
}
