//! Block expressions: the fused form of elementwise work on one block.
//!
//! A chain like `x + x.T - m` becomes one small expression tree per output block, evaluated in
//! one task: sources are generated in place, inputs are the task's materialized input blocks,
//! and operations reuse their operands' buffers when the shapes allow, so intermediates are
//! neither scheduled nor (mostly) allocated.

use ndarray::{ArrayD, IxDyn, Zip};

use crate::block::{Block, DType, Scalar};
use crate::chunk::source::Source;

/// Elementwise functions of one argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    /// `-x`
    Neg,
    /// `abs(x)`
    Abs,
    /// `sqrt(x)`
    Sqrt,
    /// `exp(x)`
    Exp,
    /// Natural logarithm.
    Log,
    /// Base-10 logarithm.
    Log10,
    /// `sin(x)`
    Sin,
    /// `cos(x)`
    Cos,
    /// `tan(x)`
    Tan,
    /// `tanh(x)`
    Tanh,
    /// `floor(x)`
    Floor,
    /// `ceil(x)`
    Ceil,
    /// Round half to even, as NumPy.
    Round,
    /// `sign(x)`
    Sign,
    /// `isnan(x)` (bool result).
    IsNan,
    /// `isfinite(x)` (bool result).
    IsFinite,
    /// Logical not (bool).
    Not,
}

crate::wire::by_name!(UnaryOp {
    Neg => "neg",
    Abs => "abs",
    Sqrt => "sqrt",
    Exp => "exp",
    Log => "log",
    Log10 => "log10",
    Sin => "sin",
    Cos => "cos",
    Tan => "tan",
    Tanh => "tanh",
    Floor => "floor",
    Ceil => "ceil",
    Round => "round",
    Sign => "sign",
    IsNan => "is_nan",
    IsFinite => "is_finite",
    Not => "not",
});

impl UnaryOp {
    /// Whether the result is `bool`.
    pub fn is_predicate(self) -> bool {
        matches!(self, UnaryOp::IsNan | UnaryOp::IsFinite | UnaryOp::Not)
    }

    /// Whether integer inputs are converted to float first (NumPy's ufunc loops).
    pub fn needs_float(self) -> bool {
        matches!(
            self,
            UnaryOp::Sqrt
                | UnaryOp::Exp
                | UnaryOp::Log
                | UnaryOp::Log10
                | UnaryOp::Sin
                | UnaryOp::Cos
                | UnaryOp::Tan
                | UnaryOp::Tanh
        )
    }
}

/// Elementwise functions of two arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    /// `a + b`
    Add,
    /// `a - b`
    Sub,
    /// `a * b`
    Mul,
    /// `a / b` (operands are float by then: true division)
    Div,
    /// `a ** b`
    Pow,
    /// `maximum(a, b)` (NaN-propagating)
    Max,
    /// `minimum(a, b)` (NaN-propagating)
    Min,
    /// `a == b`
    Eq,
    /// `a != b`
    Ne,
    /// `a < b`
    Lt,
    /// `a <= b`
    Le,
    /// `a > b`
    Gt,
    /// `a >= b`
    Ge,
    /// Logical and (bool).
    And,
    /// Logical or (bool).
    Or,
}

crate::wire::by_name!(BinaryOp {
    Add => "add",
    Sub => "sub",
    Mul => "mul",
    Div => "div",
    Pow => "pow",
    Max => "max",
    Min => "min",
    Eq => "eq",
    Ne => "ne",
    Lt => "lt",
    Le => "le",
    Gt => "gt",
    Ge => "ge",
    And => "and",
    Or => "or",
});

impl BinaryOp {
    /// Whether the result is `bool`.
    pub fn is_comparison(self) -> bool {
        matches!(self, BinaryOp::Eq | BinaryOp::Ne | BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge)
    }
}

/// How one axis of a block is sliced: `start..stop` by `step` (a negative step walks back from
/// `start`, NumPy style, already resolved to in-bounds indices).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AxisSlice {
    /// First index taken.
    pub start: usize,
    /// Number of elements taken.
    pub len: usize,
    /// Step between them (non-zero).
    pub step: isize,
}

/// The expression computing one block.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum Expr {
    /// Input `k` of the task: a materialized block.
    Input(usize),
    /// A generated source block.
    Gen {
        /// What to generate.
        source: Source,
        /// Its element type.
        dtype: DType,
        /// Block shape.
        shape: Vec<usize>,
        /// Offset of the block in its array.
        offset: Vec<usize>,
        /// Shape of the whole array (random values depend on global positions).
        array_shape: Vec<usize>,
    },
    /// A scalar operand (broadcasts).
    Scalar(Scalar),
    /// `op(a)`.
    Unary(UnaryOp, #[serde(deserialize_with = "nested")] Box<Expr>),
    /// `op(a, b)` with NumPy broadcasting; operands have one dtype.
    Binary(BinaryOp, #[serde(deserialize_with = "nested")] Box<Expr>, #[serde(deserialize_with = "nested")] Box<Expr>),
    /// `where(cond, a, b)`.
    Where(
        #[serde(deserialize_with = "nested")] Box<Expr>,
        #[serde(deserialize_with = "nested")] Box<Expr>,
        #[serde(deserialize_with = "nested")] Box<Expr>,
    ),
    /// Conversion to a dtype.
    Cast(DType, #[serde(deserialize_with = "nested")] Box<Expr>),
    /// Axis permutation.
    Transpose(Vec<usize>, #[serde(deserialize_with = "nested")] Box<Expr>),
    /// Basic slicing of the evaluated block.
    Slice(Vec<AxisSlice>, #[serde(deserialize_with = "nested")] Box<Expr>),
    /// Reshape (C order).
    Reshape(Vec<usize>, #[serde(deserialize_with = "nested")] Box<Expr>),
    /// The given positions along an axis, in order (NumPy's `take` within one block).
    Take(usize, Vec<usize>, #[serde(deserialize_with = "nested")] Box<Expr>),
}

/// How deeply a decoded block expression may nest. Decoding (and evaluating) an expression
/// recurses once per level, and expressions arrive from other processes: a hostile frame
/// nesting a million operations would overflow the stack. The builder never makes one deeper
/// than its 48 operations (`lower::node`'s fusion cap), so this bound refuses only forgeries.
pub const MAX_DECODED_NESTING: usize = 64;

thread_local! {
    /// Levels of [`Expr`] being decoded on this thread.
    static DECODING_DEPTH: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    /// The last decode on this thread was refused for its nesting (postcard keeps no custom
    /// message, so the refusal is told apart here).
    static NESTING_REFUSED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Decodes an operand, one level deeper than its operation; refuses to go past
/// [`MAX_DECODED_NESTING`] (before recursing, so the stack stays bounded).
fn nested<'de, D: serde::Deserializer<'de>>(decoder: D) -> Result<Box<Expr>, D::Error> {
    let depth = DECODING_DEPTH.with(|d| d.get()) + 1;
    if depth > MAX_DECODED_NESTING {
        NESTING_REFUSED.with(|r| r.set(true));
        return Err(serde::de::Error::custom("a block expression nested too deep"));
    }
    DECODING_DEPTH.with(|d| d.set(depth));
    let operand = <Box<Expr> as serde::Deserialize>::deserialize(decoder);
    DECODING_DEPTH.with(|d| d.set(depth - 1));
    operand
}

/// Why postcard bytes holding block expressions did not decode.
#[derive(Debug, thiserror::Error)]
pub enum ExprDecodeError {
    /// An expression nests deeper than [`MAX_DECODED_NESTING`]: not something kiln wrote.
    #[error(
        "a block expression nests more than {MAX_DECODED_NESTING} operations deep (kiln builds at most 48); refused"
    )]
    TooDeep,
    /// The bytes are malformed otherwise.
    #[error(transparent)]
    Malformed(#[from] postcard::Error),
}

/// Decodes postcard `bytes` of a value holding block expressions (kernel parameters), with
/// their nesting bounded by [`MAX_DECODED_NESTING`].
///
/// # Errors
/// [`ExprDecodeError`]: too deep, or malformed.
pub fn decode_with_exprs<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ExprDecodeError> {
    NESTING_REFUSED.with(|r| r.set(false));
    postcard::from_bytes(bytes).map_err(|e| {
        if NESTING_REFUSED.with(|r| r.replace(false)) {
            ExprDecodeError::TooDeep
        } else {
            ExprDecodeError::Malformed(e)
        }
    })
}

/// `Unary(Neg, ...)` nested `depth` times around `Input(0)`, encoded as postcard would (built
/// from bytes: encoding a deep tree would itself recurse).
#[cfg(test)]
pub(crate) fn nested_bytes(depth: usize) -> Vec<u8> {
    let leaf = postcard::to_allocvec(&Expr::Input(0)).unwrap();
    let one = postcard::to_allocvec(&Expr::Unary(UnaryOp::Neg, Box::new(Expr::Input(0)))).unwrap();
    let prefix = &one[..one.len() - leaf.len()];
    let mut bytes = prefix.repeat(depth);
    bytes.extend_from_slice(&leaf);
    bytes
}

/// Why a block expression could not be evaluated (bad input data, not bad graphs).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EvalError(pub String);

/// A value during evaluation: a block, a scalar not yet broadcast, or an input block (as is, or
/// with its axes permuted) that is read in place and copied only if an operation must own it.
enum Val<'a> {
    Block(Block),
    Scalar(Scalar),
    Input(&'a Block),
    Permuted(&'a Block, Vec<usize>),
}

impl Val<'_> {
    /// The block behind this value without copying it (permutation aside), if it is one.
    fn block_ref(&self) -> Option<&Block> {
        match self {
            Val::Block(b) => Some(b),
            Val::Input(b) | Val::Permuted(b, _) => Some(b),
            Val::Scalar(_) => None,
        }
    }

    fn dtype(&self) -> DType {
        match self {
            Val::Scalar(s) => s.dtype(),
            v => v.block_ref().expect("not a scalar").dtype(),
        }
    }
}

/// One operand of an elementwise operation on typed arrays: a buffer of its own, which the
/// result may reuse, or a view of an input block, which is only read.
enum Operand<'a, T> {
    Owned(ArrayD<T>),
    View(ndarray::ArrayViewD<'a, T>),
}

impl<'a, T: crate::block::Element> Operand<'a, T> {
    /// `None` for a scalar or another element type.
    fn of(v: Val<'a>) -> Option<Self> {
        match v {
            Val::Block(b) => T::from_block(b).map(Operand::Owned),
            Val::Input(b) => T::block_ref(b).map(|a| Operand::View(a.view())),
            Val::Permuted(b, axes) => T::block_ref(b).map(|a| Operand::View(a.view().permuted_axes(IxDyn(&axes)))),
            Val::Scalar(_) => None,
        }
    }
}

impl<T> Operand<'_, T> {
    fn shape(&self) -> &[usize] {
        match self {
            Operand::Owned(a) => a.shape(),
            Operand::View(a) => a.shape(),
        }
    }

    fn view(&self) -> ndarray::ArrayViewD<'_, T> {
        match self {
            Operand::Owned(a) => a.view(),
            Operand::View(a) => a.view(),
        }
    }
}

impl Expr {
    /// Number of operation nodes (to cap how much work one fused task duplicates).
    pub fn size(&self) -> usize {
        let mut count = 0;
        self.walk(|_| count += 1);
        count
    }

    /// The bytes of the largest block this expression generates from a source: evaluating it
    /// allocates at least that much (the executor's memory budget is checked against it).
    pub fn largest_generated(&self) -> u64 {
        let mut largest = 0;
        self.walk(|e| {
            if let Expr::Gen { shape, dtype, .. } = e {
                largest = largest.max(crate::block::block_bytes(shape, *dtype));
            }
        });
        largest
    }

    /// Calls `f` on every node, from an explicit stack (no recursion).
    fn walk<'a>(&'a self, mut f: impl FnMut(&'a Expr)) {
        // Expressions are small: the stack rarely leaves its inline space.
        let mut stack: smallvec::SmallVec<[&Expr; 16]> = smallvec::smallvec![self];
        while let Some(e) = stack.pop() {
            f(e);
            match e {
                Expr::Input(_) | Expr::Gen { .. } | Expr::Scalar(_) => {}
                Expr::Unary(_, a)
                | Expr::Cast(_, a)
                | Expr::Transpose(_, a)
                | Expr::Slice(_, a)
                | Expr::Reshape(_, a)
                | Expr::Take(_, _, a) => stack.push(a),
                Expr::Binary(_, a, b) => stack.extend([a.as_ref(), b.as_ref()]),
                Expr::Where(c, a, b) => stack.extend([c.as_ref(), a.as_ref(), b.as_ref()]),
            }
        }
    }

    /// Evaluates to a block. Inputs are cloned only when an operation needs to own them.
    ///
    /// # Errors
    /// [`EvalError`] for data that the operation rejects (e.g. a negative integer power).
    pub fn eval(&self, inputs: &[&Block]) -> Result<Block, EvalError> {
        // An expression that is just an input (or its transpose) copies it here, once.
        Ok(to_block(self.eval_val(inputs)?))
    }

    fn eval_val<'a>(&'a self, inputs: &[&'a Block]) -> Result<Val<'a>, EvalError> {
        Ok(match self {
            Expr::Input(k) => {
                Val::Input(inputs.get(*k).copied().ok_or_else(|| EvalError(format!("missing input block {k}")))?)
            }
            Expr::Gen { source, dtype, shape, offset, array_shape } => {
                Val::Block(source.generate(*dtype, shape, offset, array_shape))
            }
            Expr::Scalar(s) => Val::Scalar(*s),
            Expr::Unary(op, a) => unary(*op, a.eval_val(inputs)?)?,
            Expr::Binary(op, a, b) => binary(*op, a.eval_val(inputs)?, b.eval_val(inputs)?)?,
            Expr::Where(c, a, b) => {
                let (c, a, b) = (c.eval_val(inputs)?, a.eval_val(inputs)?, b.eval_val(inputs)?);
                Val::Block(where_(to_block(c), to_block(a), to_block(b))?)
            }
            Expr::Cast(dtype, a) => match a.eval_val(inputs)? {
                Val::Scalar(s) => Val::Scalar(s.cast(*dtype)),
                v => Val::Block(to_block(v).cast(*dtype)),
            },
            Expr::Transpose(axes, a) => {
                if let Expr::Gen { source, dtype, shape, offset, array_shape } = a.as_ref() {
                    // Generate the transposed block directly in C order.
                    return Ok(Val::Block(source.generate_permuted(*dtype, shape, offset, array_shape, axes)));
                }
                match a.eval_val(inputs)? {
                    // A transposed input stays a view: `x + x.T` reads both in place.
                    Val::Input(b) => Val::Permuted(b, axes.clone()),
                    Val::Permuted(b, inner) => Val::Permuted(b, axes.iter().map(|&ax| inner[ax]).collect()),
                    v => Val::Block(crate::with_block!(to_block(v), x => {
                        let t = x.permuted_axes(IxDyn(axes));
                        crate::block::Element::into_block(t)
                    })),
                }
            }
            Expr::Slice(axes, a) => match a.as_ref() {
                // Slice borrowed inputs directly: copying the whole input first would be waste.
                Expr::Input(k) => Val::Block(slice_block(
                    inputs.get(*k).ok_or_else(|| EvalError(format!("missing input block {k}")))?,
                    axes,
                )),
                a => Val::Block(slice_block(&to_block(a.eval_val(inputs)?), axes)),
            },
            Expr::Take(axis, positions, a) => {
                let b = to_block(a.eval_val(inputs)?);
                Val::Block(crate::with_block!(b, x => {
                    crate::block::Element::into_block(x.select(ndarray::Axis(*axis), positions))
                }))
            }
            Expr::Reshape(shape, a) => {
                let b = to_block(a.eval_val(inputs)?);
                Val::Block(crate::with_block!(b, x => {
                    let x = if x.is_standard_layout() { x } else { x.as_standard_layout().into_owned() };
                    let r = x.into_shape_with_order(IxDyn(shape)).map_err(|e| EvalError(format!("reshape: {e}")))?;
                    crate::block::Element::into_block(r)
                }))
            }
        })
    }
}

fn broadcast_output(shape: &[usize], dtype: DType) -> Result<(), EvalError> {
    crate::block::check_block(shape, dtype).map_err(|e| EvalError(e.to_string()))
}

/// Checks a new block of `shape` with elements of `T` (a broadcast result larger than its
/// operands).
fn broadcast_bytes<T>(shape: &[usize]) -> Result<(), EvalError> {
    let bytes = if shape.contains(&0) {
        0
    } else {
        shape.iter().try_fold(std::mem::size_of::<T>() as u64, |n, &d| n.checked_mul(d as u64)).unwrap_or(u64::MAX)
    };
    crate::block::check_block_bytes(bytes).map_err(|e| EvalError(e.to_string()))
}

fn to_block(v: Val) -> Block {
    match v {
        Val::Block(b) => b,
        Val::Scalar(s) => Block::full(&[], s),
        Val::Input(b) => b.clone(),
        Val::Permuted(b, axes) => crate::with_block!(b, x => {
            crate::block::Element::into_block(x.view().permuted_axes(IxDyn(&axes)).to_owned())
        }),
    }
}

/// A view of the sliced part of an array.
pub fn slice_view<'a, A>(x: ndarray::ArrayViewD<'a, A>, axes: &[AxisSlice]) -> ndarray::ArrayViewD<'a, A> {
    x.slice_each_axis_inplace_view(axes)
}

trait SliceView<'a, A> {
    fn slice_each_axis_inplace_view(self, axes: &[AxisSlice]) -> ndarray::ArrayViewD<'a, A>;
}

impl<'a, A> SliceView<'a, A> for ndarray::ArrayViewD<'a, A> {
    fn slice_each_axis_inplace_view(mut self, axes: &[AxisSlice]) -> ndarray::ArrayViewD<'a, A> {
        for (axis, s) in axes.iter().enumerate() {
            self.slice_axis_inplace(ndarray::Axis(axis), ndarray_slice(*s));
        }
        self
    }
}

fn ndarray_slice(s: AxisSlice) -> ndarray::Slice {
    if s.len == 0 {
        return ndarray::Slice::new(0, Some(0), 1);
    }
    if s.step > 0 {
        let end = s.start + (s.len - 1) * s.step as usize + 1;
        ndarray::Slice::new(s.start as isize, Some(end as isize), s.step)
    } else {
        // ndarray takes a range and walks it backwards for a negative step.
        let last = s.start as isize + (s.len as isize - 1) * s.step;
        ndarray::Slice::new(last, Some(s.start as isize + 1), s.step)
    }
}

/// Copies the sliced part of a block (only the selected elements: a slice never keeps its
/// parent's buffer alive).
pub fn slice_block(block: &Block, axes: &[AxisSlice]) -> Block {
    crate::with_block!(block, x => {
        let view = x.slice_each_axis(|ax| ndarray_slice(axes[ax.axis.index()]));
        crate::block::Element::into_block(view.to_owned())
    })
}

pub(crate) fn float_unary<T: num_like::Float>(op: UnaryOp, x: T) -> T {
    match op {
        UnaryOp::Neg => -x,
        UnaryOp::Abs => x.abs(),
        UnaryOp::Sqrt => x.sqrt(),
        UnaryOp::Exp => x.exp(),
        UnaryOp::Log => x.ln(),
        UnaryOp::Log10 => x.log10(),
        UnaryOp::Sin => x.sin(),
        UnaryOp::Cos => x.cos(),
        UnaryOp::Tan => x.tan(),
        UnaryOp::Tanh => x.tanh(),
        UnaryOp::Floor => x.floor(),
        UnaryOp::Ceil => x.ceil(),
        UnaryOp::Round => x.round_ties_even(),
        UnaryOp::Sign => x.sign(),
        UnaryOp::IsNan | UnaryOp::IsFinite | UnaryOp::Not => x,
    }
}

fn int_unary<T: num_like::Int>(op: UnaryOp, x: T) -> T {
    match op {
        UnaryOp::Neg => x.wrapping_neg(),
        UnaryOp::Abs => x.wrapping_abs(),
        UnaryOp::Sign => x.signum(),
        // floor/ceil/round of integers are the integers themselves.
        _ => x,
    }
}

fn unary(op: UnaryOp, v: Val<'_>) -> Result<Val<'_>, EvalError> {
    if let Val::Scalar(s) = v {
        return match unary(op, Val::Block(Block::full(&[], s)))? {
            Val::Block(b) => Ok(Val::Scalar(scalar_of(&b))),
            other => Ok(other),
        };
    }
    let b = to_block(v);
    let b = if op.needs_float() && !b.dtype().is_float() { b.cast(DType::F64) } else { b };
    Ok(Val::Block(match (op, b) {
        (UnaryOp::IsNan, Block::F64(a)) => Block::Bool(a.mapv(f64::is_nan)),
        (UnaryOp::IsNan, Block::F32(a)) => Block::Bool(a.mapv(f32::is_nan)),
        (UnaryOp::IsFinite, Block::F64(a)) => Block::Bool(a.mapv(f64::is_finite)),
        (UnaryOp::IsFinite, Block::F32(a)) => Block::Bool(a.mapv(f32::is_finite)),
        (UnaryOp::IsNan, other) => Block::Bool(ArrayD::from_elem(other.shape(), false)),
        (UnaryOp::IsFinite, other) => Block::Bool(ArrayD::from_elem(other.shape(), true)),
        (UnaryOp::Not, Block::Bool(mut a)) => {
            a.mapv_inplace(|x| !x);
            Block::Bool(a)
        }
        (UnaryOp::Not, other) => return Err(EvalError(format!("logical not needs bool, got {}", other.dtype()))),
        (UnaryOp::Neg, Block::F64(mut a)) => {
            a.mapv_inplace(|x| -x);
            Block::F64(a)
        }
        (UnaryOp::Abs, Block::F64(mut a)) => {
            a.mapv_inplace(f64::abs);
            Block::F64(a)
        }
        (op, Block::F64(mut a)) => {
            a.mapv_inplace(|x| float_unary(op, x));
            Block::F64(a)
        }
        (op, Block::F32(mut a)) => {
            a.mapv_inplace(|x| float_unary(op, x));
            Block::F32(a)
        }
        (op, Block::I64(mut a)) => {
            a.mapv_inplace(|x| int_unary(op, x));
            Block::I64(a)
        }
        (op, Block::I32(mut a)) => {
            a.mapv_inplace(|x| int_unary(op, x));
            Block::I32(a)
        }
        (op, Block::Bool(a)) => match op {
            UnaryOp::Abs | UnaryOp::Floor | UnaryOp::Ceil | UnaryOp::Round => Block::Bool(a),
            _ => return Err(EvalError(format!("{op:?} is not defined for bool"))),
        },
    }))
}

fn scalar_of(b: &Block) -> Scalar {
    crate::with_block!(b, a => crate::block::Element::scalar(*a.iter().next().expect("0-d block has one element")))
}

fn broadcast_shape(a: &[usize], b: &[usize]) -> Result<Vec<usize>, EvalError> {
    let n = a.len().max(b.len());
    let get = |s: &[usize], i: usize| if i + s.len() >= n { s[i + s.len() - n] } else { 1 };
    (0..n)
        .map(|i| match (get(a, i), get(b, i)) {
            (x, y) if x == y => Ok(x),
            (1, y) => Ok(y),
            (x, 1) => Ok(x),
            (x, y) => Err(EvalError(format!("cannot broadcast blocks of shapes {a:?} and {b:?} ({x} vs {y})"))),
        })
        .collect()
}

/// `a[i, j] = f(a[i, j], b[i, j])` for a C-order `a` and an F-order (transposed) `b`, in
/// square tiles so both stay in cache (`x + x.T` would otherwise read `b` with a stride of a
/// whole row per element).
fn tiled_transposed<T: Copy>(a: &mut ArrayD<T>, b: &ndarray::ArrayViewD<'_, T>, f: &impl Fn(T, T) -> T) -> bool {
    const TILE: usize = 64;
    if a.ndim() != 2 || a.shape() != b.shape() || !a.is_standard_layout() {
        return false;
    }
    let bt = b.t();
    if !bt.is_standard_layout() {
        return false;
    }
    let (rows, cols) = (a.shape()[0], a.shape()[1]);
    let (Some(bs), Some(av)) = (bt.as_slice(), a.as_slice_mut()) else { return false };
    // b[i, j] = bt[j, i] = bs[j * rows + i]
    for i0 in (0..rows).step_by(TILE) {
        for j0 in (0..cols).step_by(TILE) {
            for i in i0..(i0 + TILE).min(rows) {
                let row = &mut av[i * cols..(i + 1) * cols];
                for j in j0..(j0 + TILE).min(cols) {
                    row[j] = f(row[j], bs[j * rows + i]);
                }
            }
        }
    }
    true
}

/// Applies `f` elementwise with broadcasting, reusing `a`'s or `b`'s buffer when it already
/// has the result's shape.
fn zip_same<T: Copy>(a: ArrayD<T>, b: ArrayD<T>, f: impl Fn(T, T) -> T) -> Result<ArrayD<T>, EvalError> {
    let shape = broadcast_shape(a.shape(), b.shape())?;
    if a.shape() == b.shape() && !b.is_standard_layout() {
        let mut a = a;
        if tiled_transposed(&mut a, &b.view(), &f) {
            return Ok(a);
        }
        return zip_same_general(a, b, f, &shape);
    }
    zip_same_general(a, b, f, &shape)
}

fn zip_same_general<T: Copy>(
    a: ArrayD<T>,
    b: ArrayD<T>,
    f: impl Fn(T, T) -> T,
    shape: &[usize],
) -> Result<ArrayD<T>, EvalError> {
    let shape = shape.to_vec();
    if a.shape() == shape.as_slice() {
        let mut a = a;
        let bv = b.broadcast(IxDyn(&shape)).expect("shape checked");
        Zip::from(&mut a).and(&bv).for_each(|x, &y| *x = f(*x, y));
        Ok(a)
    } else if b.shape() == shape.as_slice() {
        let mut b = b;
        let av = a.broadcast(IxDyn(&shape)).expect("shape checked");
        Zip::from(&mut b).and(&av).for_each(|y, &x| *y = f(x, *y));
        Ok(b)
    } else {
        broadcast_bytes::<T>(&shape)?;
        let (av, bv) = (a.broadcast(IxDyn(&shape)).expect("checked"), b.broadcast(IxDyn(&shape)).expect("checked"));
        Ok(Zip::from(&av).and(&bv).map_collect(|&x, &y| f(x, y)))
    }
}

fn zip_pred<T: Copy>(a: &ArrayD<T>, b: &ArrayD<T>, f: impl Fn(T, T) -> bool) -> Result<ArrayD<bool>, EvalError> {
    let shape = broadcast_shape(a.shape(), b.shape())?;
    broadcast_output(&shape, DType::Bool)?;
    let (av, bv) = (a.broadcast(IxDyn(&shape)).expect("checked"), b.broadcast(IxDyn(&shape)).expect("checked"));
    Ok(Zip::from(&av).and(&bv).map_collect(|&x, &y| f(x, y)))
}

fn map_scalar<T: Copy>(mut a: ArrayD<T>, s: T, scalar_left: bool, f: impl Fn(T, T) -> T) -> ArrayD<T> {
    if scalar_left {
        a.mapv_inplace(|x| f(s, x));
    } else {
        a.mapv_inplace(|x| f(x, s));
    }
    a
}

fn compare<T: PartialOrd + PartialEq>(op: BinaryOp) -> impl Fn(T, T) -> bool {
    move |x, y| match op {
        BinaryOp::Eq => x == y,
        BinaryOp::Ne => x != y,
        BinaryOp::Lt => x < y,
        BinaryOp::Le => x <= y,
        BinaryOp::Gt => x > y,
        _ => x >= y,
    }
}

/// Calls `$call` with a closure specialized for `op` on floats: the operation is chosen once
/// per block, so the inner loops have no branch on it and vectorize.
macro_rules! float_op {
    ($op:expr, $t:ty, $call:expr) => {
        match $op {
            BinaryOp::Add => $call(|x: $t, y: $t| x + y),
            BinaryOp::Sub => $call(|x: $t, y: $t| x - y),
            BinaryOp::Mul => $call(|x: $t, y: $t| x * y),
            BinaryOp::Div => $call(|x: $t, y: $t| x / y),
            BinaryOp::Pow => $call(|x: $t, y: $t| x.powf(y)),
            BinaryOp::Max => $call(|x: $t, y: $t| {
                if x.is_nan() || y.is_nan() {
                    <$t>::NAN
                } else if x >= y {
                    x
                } else {
                    y
                }
            }),
            _ => $call(|x: $t, y: $t| {
                if x.is_nan() || y.is_nan() {
                    <$t>::NAN
                } else if x <= y {
                    x
                } else {
                    y
                }
            }),
        }
    };
}

/// As [`float_op!`] for integers (wrapping arithmetic, floor division, as NumPy).
macro_rules! int_op {
    ($op:expr, $t:ty, $call:expr) => {{
        use num_like::Int as _;
        match $op {
            BinaryOp::Add => $call(|x: $t, y: $t| x.wrapping_add(y)),
            BinaryOp::Sub => $call(|x: $t, y: $t| x.wrapping_sub(y)),
            BinaryOp::Mul => $call(|x: $t, y: $t| x.wrapping_mul(y)),
            BinaryOp::Div => $call(|x: $t, y: $t| x.floor_div(y)),
            BinaryOp::Pow => $call(|x: $t, y: $t| x.wrapping_pow_i(y)),
            BinaryOp::Max => $call(|x: $t, y: $t| if x >= y { x } else { y }),
            _ => $call(|x: $t, y: $t| if x <= y { x } else { y }),
        }
    }};
}

fn binary<'a>(op: BinaryOp, a: Val<'a>, b: Val<'a>) -> Result<Val<'a>, EvalError> {
    if let (Val::Scalar(x), Val::Scalar(y)) = (&a, &b) {
        let r = binary(op, Val::Block(Block::full(&[], *x)), Val::Block(Block::full(&[], *y)))?;
        return Ok(Val::Scalar(scalar_of(&to_block(r))));
    }
    if op == BinaryOp::Pow {
        check_int_pow(&a, &b)?;
    }
    // Scalar on one side: a single in-place pass for arithmetic.
    if !op.is_comparison() && !matches!(op, BinaryOp::And | BinaryOp::Or) {
        match (a, b) {
            (Val::Scalar(s), blk) => return Ok(Val::Block(arith_scalar(op, to_block(blk), s, true)?)),
            (blk, Val::Scalar(s)) => return Ok(Val::Block(arith_scalar(op, to_block(blk), s, false)?)),
            (a, b) => return Ok(Val::Block(arith_vals(op, a, b)?)),
        }
    }
    let (a, b) = (to_block(a), to_block(b));
    Ok(Val::Block(match (a, b) {
        (Block::Bool(x), Block::Bool(y)) => match op {
            BinaryOp::And => Block::Bool(zip_pred(&x, &y, |p, q| p & q)?),
            BinaryOp::Or => Block::Bool(zip_pred(&x, &y, |p, q| p | q)?),
            _ => Block::Bool(zip_pred(&x, &y, compare(op))?),
        },
        (Block::I32(x), Block::I32(y)) => Block::Bool(zip_pred(&x, &y, compare(op))?),
        (Block::I64(x), Block::I64(y)) => Block::Bool(zip_pred(&x, &y, compare(op))?),
        (Block::F32(x), Block::F32(y)) => Block::Bool(zip_pred(&x, &y, compare(op))?),
        (Block::F64(x), Block::F64(y)) => Block::Bool(zip_pred(&x, &y, compare(op))?),
        (x, y) => return Err(EvalError(format!("{op:?} of {} and {} blocks", x.dtype(), y.dtype()))),
    }))
}

fn check_int_pow(a: &Val, b: &Val) -> Result<(), EvalError> {
    let negative = match (b, b.block_ref()) {
        (Val::Scalar(Scalar::I64(e)), _) => *e < 0,
        (Val::Scalar(Scalar::I32(e)), _) => *e < 0,
        (_, Some(Block::I64(e))) => e.iter().any(|&v| v < 0),
        (_, Some(Block::I32(e))) => e.iter().any(|&v| v < 0),
        _ => false,
    };
    let int_base = matches!(a.dtype(), DType::I32 | DType::I64);
    if negative && int_base {
        return Err(EvalError("integers to negative integer powers are not allowed".into()));
    }
    Ok(())
}

fn arith(op: BinaryOp, a: Block, b: Block) -> Result<Block, EvalError> {
    Ok(match (a, b) {
        (Block::F64(x), Block::F64(y)) => Block::F64(float_op!(op, f64, |f| zip_same(x, y, f))?),
        (Block::F32(x), Block::F32(y)) => Block::F32(float_op!(op, f32, |f| zip_same(x, y, f))?),
        (Block::I64(x), Block::I64(y)) => Block::I64(int_op!(op, i64, |f| zip_same(x, y, f))?),
        (Block::I32(x), Block::I32(y)) => Block::I32(int_op!(op, i32, |f| zip_same(x, y, f))?),
        (Block::Bool(x), Block::Bool(y)) => match op {
            BinaryOp::Add | BinaryOp::Max => Block::Bool(zip_same(x, y, |p, q| p | q)?),
            BinaryOp::Mul | BinaryOp::Min => Block::Bool(zip_same(x, y, |p, q| p & q)?),
            _ => return Err(EvalError(format!("{op:?} is not defined for bool blocks"))),
        },
        (x, y) => return Err(EvalError(format!("{op:?} of {} and {} blocks", x.dtype(), y.dtype()))),
    })
}

/// [`arith`] on values that may be views of input blocks: an operand with a buffer of its own
/// takes the result, views are only read, and two views make one new buffer, so no input is
/// copied before it is used.
fn arith_vals(op: BinaryOp, a: Val, b: Val) -> Result<Block, EvalError> {
    let owned = matches!((&a, &b), (Val::Block(_), Val::Block(_)));
    if owned || a.dtype() != b.dtype() || a.dtype() == DType::Bool {
        return arith(op, to_block(a), to_block(b));
    }
    fn operands<'a, T: crate::block::Element>(a: Val<'a>, b: Val<'a>) -> (Operand<'a, T>, Operand<'a, T>) {
        let dtypes_checked = "both operands have this element type";
        (Operand::of(a).expect(dtypes_checked), Operand::of(b).expect(dtypes_checked))
    }
    Ok(match a.dtype() {
        DType::F64 => Block::F64(float_op!(op, f64, |f| {
            let (x, y) = operands(a, b);
            zip_operands(x, y, f)
        })?),
        DType::F32 => Block::F32(float_op!(op, f32, |f| {
            let (x, y) = operands(a, b);
            zip_operands(x, y, f)
        })?),
        DType::I64 => Block::I64(int_op!(op, i64, |f| {
            let (x, y) = operands(a, b);
            zip_operands(x, y, f)
        })?),
        DType::I32 => Block::I32(int_op!(op, i32, |f| {
            let (x, y) = operands(a, b);
            zip_operands(x, y, f)
        })?),
        DType::Bool => unreachable!("bool operands are handled by arith"),
    })
}

/// `f` elementwise with broadcasting over two operands, writing into whichever one owns a
/// result-shaped buffer, or into one new buffer when neither does.
fn zip_operands<T: Copy>(a: Operand<'_, T>, b: Operand<'_, T>, f: impl Fn(T, T) -> T) -> Result<ArrayD<T>, EvalError> {
    let shape = broadcast_shape(a.shape(), b.shape())?;
    match (a, b) {
        (Operand::Owned(a), Operand::Owned(b)) => zip_same(a, b, f),
        (Operand::Owned(mut a), b) if a.shape() == shape.as_slice() => {
            let bv = b.view();
            if !tiled_transposed(&mut a, &bv, &f) {
                let bv = bv.broadcast(IxDyn(&shape)).expect("shape checked");
                Zip::from(&mut a).and(&bv).for_each(|x, &y| *x = f(*x, y));
            }
            Ok(a)
        }
        (a, Operand::Owned(mut b)) if b.shape() == shape.as_slice() => {
            let g = |y: T, x: T| f(x, y);
            let av = a.view();
            if !tiled_transposed(&mut b, &av, &g) {
                let av = av.broadcast(IxDyn(&shape)).expect("shape checked");
                Zip::from(&mut b).and(&av).for_each(|y, &x| *y = f(x, *y));
            }
            Ok(b)
        }
        (a, b) => {
            broadcast_bytes::<T>(&shape)?;
            let (av, bv) = (a.view(), b.view());
            if let Some(out) = tiled_transposed_new(&av, &bv, &f) {
                return Ok(out);
            }
            if let Some(out) = tiled_transposed_new(&bv, &av, &|y: T, x: T| f(x, y)) {
                return Ok(out);
            }
            let (av, bv) =
                (av.broadcast(IxDyn(&shape)).expect("checked"), bv.broadcast(IxDyn(&shape)).expect("checked"));
            Ok(Zip::from(&av).and(&bv).map_collect(|&x, &y| f(x, y)))
        }
    }
}

/// A new C-order `out[i, j] = f(a[i, j], b[i, j])` for a C-order `a` and an F-order (transposed)
/// `b` of the same 2-d shape, in square tiles as [`tiled_transposed`]; `None` for other layouts.
fn tiled_transposed_new<T: Copy>(
    a: &ndarray::ArrayViewD<'_, T>,
    b: &ndarray::ArrayViewD<'_, T>,
    f: &impl Fn(T, T) -> T,
) -> Option<ArrayD<T>> {
    const TILE: usize = 64;
    if a.ndim() != 2 || a.shape() != b.shape() {
        return None;
    }
    let (rows, cols) = (a.shape()[0], a.shape()[1]);
    let a_slice = a.as_slice()?;
    let bt = b.t();
    let b_slice = bt.as_slice()?;
    let mut out: Vec<T> = Vec::with_capacity(rows * cols);
    let dst = &mut out.spare_capacity_mut()[..rows * cols];
    for i0 in (0..rows).step_by(TILE) {
        for j0 in (0..cols).step_by(TILE) {
            for i in i0..(i0 + TILE).min(rows) {
                for j in j0..(j0 + TILE).min(cols) {
                    dst[i * cols + j].write(f(a_slice[i * cols + j], b_slice[j * rows + i]));
                }
            }
        }
    }
    // SAFETY: the tiles cover every (i, j) of the rows × cols grid, so each of the first
    // rows * cols elements was written above.
    unsafe { out.set_len(rows * cols) };
    ArrayD::from_shape_vec(IxDyn(&[rows, cols]), out).ok()
}

fn arith_scalar(op: BinaryOp, a: Block, s: Scalar, scalar_left: bool) -> Result<Block, EvalError> {
    let s = s.cast(a.dtype());
    Ok(match (a, s) {
        (Block::F64(x), Scalar::F64(v)) => Block::F64(float_op!(op, f64, |f| map_scalar(x, v, scalar_left, f))),
        (Block::F32(x), Scalar::F32(v)) => Block::F32(float_op!(op, f32, |f| map_scalar(x, v, scalar_left, f))),
        (Block::I64(x), Scalar::I64(v)) => Block::I64(int_op!(op, i64, |f| map_scalar(x, v, scalar_left, f))),
        (Block::I32(x), Scalar::I32(v)) => Block::I32(int_op!(op, i32, |f| map_scalar(x, v, scalar_left, f))),
        (blk, s) => {
            let full = Block::full(&[], s);
            if scalar_left { arith(op, full, blk)? } else { arith(op, blk, full)? }
        }
    })
}

fn where_(c: Block, a: Block, b: Block) -> Result<Block, EvalError> {
    let Block::Bool(c) = c else { return Err(EvalError(format!("where needs a bool condition, got {}", c.dtype()))) };
    fn pick<T: Copy>(c: &ArrayD<bool>, a: &ArrayD<T>, b: &ArrayD<T>) -> Result<ArrayD<T>, EvalError> {
        let shape = broadcast_shape(&broadcast_shape(c.shape(), a.shape())?, b.shape())?;
        broadcast_bytes::<T>(&shape)?;
        let (cv, av, bv) = (
            c.broadcast(IxDyn(&shape)).expect("checked"),
            a.broadcast(IxDyn(&shape)).expect("checked"),
            b.broadcast(IxDyn(&shape)).expect("checked"),
        );
        Ok(Zip::from(&cv).and(&av).and(&bv).map_collect(|&k, &x, &y| if k { x } else { y }))
    }
    Ok(match (a, b) {
        (Block::F64(x), Block::F64(y)) => Block::F64(pick(&c, &x, &y)?),
        (Block::F32(x), Block::F32(y)) => Block::F32(pick(&c, &x, &y)?),
        (Block::I64(x), Block::I64(y)) => Block::I64(pick(&c, &x, &y)?),
        (Block::I32(x), Block::I32(y)) => Block::I32(pick(&c, &x, &y)?),
        (Block::Bool(x), Block::Bool(y)) => Block::Bool(pick(&c, &x, &y)?),
        (x, y) => return Err(EvalError(format!("where of {} and {} blocks", x.dtype(), y.dtype()))),
    })
}

/// Just enough numeric traits for the kernels (no extra dependency).
pub(crate) mod num_like {
    /// Float operations used by kernels.
    pub trait Float:
        Copy
        + PartialOrd
        + std::ops::Add<Output = Self>
        + std::ops::Sub<Output = Self>
        + std::ops::Mul<Output = Self>
        + std::ops::Div<Output = Self>
        + std::ops::Neg<Output = Self>
    {
        fn abs(self) -> Self;
        fn sqrt(self) -> Self;
        fn exp(self) -> Self;
        fn ln(self) -> Self;
        fn log10(self) -> Self;
        fn sin(self) -> Self;
        fn cos(self) -> Self;
        fn tan(self) -> Self;
        fn tanh(self) -> Self;
        fn floor(self) -> Self;
        fn ceil(self) -> Self;
        fn round_ties_even(self) -> Self;
        fn sign(self) -> Self;
    }
    macro_rules! float {
        ($($t:ty),*) => {$(
            impl Float for $t {
                fn abs(self) -> Self { <$t>::abs(self) }
                fn sqrt(self) -> Self { <$t>::sqrt(self) }
                fn exp(self) -> Self { <$t>::exp(self) }
                fn ln(self) -> Self { <$t>::ln(self) }
                fn log10(self) -> Self { <$t>::log10(self) }
                fn sin(self) -> Self { <$t>::sin(self) }
                fn cos(self) -> Self { <$t>::cos(self) }
                fn tan(self) -> Self { <$t>::tan(self) }
                fn tanh(self) -> Self { <$t>::tanh(self) }
                fn floor(self) -> Self { <$t>::floor(self) }
                fn ceil(self) -> Self { <$t>::ceil(self) }
                fn round_ties_even(self) -> Self { <$t>::round_ties_even(self) }
                fn sign(self) -> Self { if self.is_nan() { self } else if self > 0.0 { 1.0 } else if self < 0.0 { -1.0 } else { 0.0 } }
            }
        )*};
    }
    float!(f32, f64);

    /// Integer operations used by kernels (wrapping, as NumPy).
    pub trait Int: Copy + PartialOrd {
        fn wrapping_neg(self) -> Self;
        fn wrapping_abs(self) -> Self;
        fn signum(self) -> Self;
        fn floor_div(self, o: Self) -> Self;
        fn wrapping_pow_i(self, e: Self) -> Self;
    }
    macro_rules! int {
        ($($t:ty),*) => {$(
            impl Int for $t {
                fn wrapping_neg(self) -> Self { <$t>::wrapping_neg(self) }
                fn wrapping_abs(self) -> Self { <$t>::wrapping_abs(self) }
                fn signum(self) -> Self { <$t>::signum(self) }
                // NumPy: integer floor division by zero gives 0 (with a warning).
                fn floor_div(self, o: Self) -> Self { if o == 0 { 0 } else { <$t>::wrapping_div_euclid(self, o) - if (self.wrapping_rem_euclid(o) != 0) && (o < 0) { 1 } else { 0 } } }
                // Square and multiply over the whole exponent: `e as u32` would cut 2**32 to 0.
                fn wrapping_pow_i(self, e: Self) -> Self {
                    let (mut base, mut e, mut acc): ($t, u64, $t) = (self, e.max(0) as u64, 1);
                    while e > 0 {
                        if e & 1 == 1 {
                            acc = acc.wrapping_mul(base);
                        }
                        base = base.wrapping_mul(base);
                        e >>= 1;
                    }
                    acc
                }
            }
        )*};
    }
    int!(i32, i64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_refuses_an_expression_nested_past_the_bound_without_overflowing_the_stack() {
        // The deepest the bound allows decodes to the same tree.
        let ok: Expr = decode_with_exprs(&nested_bytes(MAX_DECODED_NESTING)).unwrap();
        assert_eq!(ok.size(), MAX_DECODED_NESTING + 1);
        // A hostile frame, on a small stack as a worker's thread might have.
        let refused = std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(|| [MAX_DECODED_NESTING + 1, 1_000_000].map(|depth| decode_with_exprs::<Expr>(&nested_bytes(depth))))
            .unwrap()
            .join()
            .expect("decoding overflowed the stack");
        for result in refused {
            assert!(matches!(result, Err(ExprDecodeError::TooDeep)), "{result:?}");
        }
        // The depth count is per decode: a refused frame does not poison the next one, and
        // other malformed bytes are told apart.
        assert!(decode_with_exprs::<Expr>(&nested_bytes(3)).is_ok());
        let truncated = &nested_bytes(3)[..2];
        assert!(matches!(decode_with_exprs::<Expr>(truncated), Err(ExprDecodeError::Malformed(_))));
    }

    fn f64s(shape: &[usize], v: Vec<f64>) -> Block {
        Block::F64(ArrayD::from_shape_vec(IxDyn(shape), v).unwrap())
    }

    #[test]
    fn broadcasting_and_scalars() {
        let e = Expr::Binary(
            BinaryOp::Sub,
            Box::new(Expr::Binary(BinaryOp::Add, Box::new(Expr::Input(0)), Box::new(Expr::Scalar(Scalar::F64(1.0))))),
            Box::new(Expr::Input(1)),
        );
        let a = f64s(&[2, 2], vec![1.0, 2.0, 3.0, 4.0]);
        let row = f64s(&[1, 2], vec![10.0, 20.0]);
        assert_eq!(e.eval(&[&a, &row]).unwrap(), f64s(&[2, 2], vec![-8.0, -17.0, -6.0, -15.0]));
    }

    #[test]
    fn transpose_then_add_in_place() {
        let e = Expr::Binary(
            BinaryOp::Add,
            Box::new(Expr::Input(0)),
            Box::new(Expr::Transpose(vec![1, 0], Box::new(Expr::Input(0)))),
        );
        let a = f64s(&[2, 2], vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(e.eval(&[&a]).unwrap(), f64s(&[2, 2], vec![2.0, 5.0, 5.0, 8.0]));
    }

    fn input(k: usize) -> Box<Expr> {
        Box::new(Expr::Input(k))
    }
    fn t(axes: &[usize], e: Box<Expr>) -> Box<Expr> {
        Box::new(Expr::Transpose(axes.to_vec(), e))
    }
    fn op(o: BinaryOp, a: Box<Expr>, b: Box<Expr>) -> Box<Expr> {
        Box::new(Expr::Binary(o, a, b))
    }

    proptest::proptest! {
        /// Inputs are read in place (as views, transposed or not) and copied only when an
        /// operation must own them: every mix of owned buffers, views, transposed views and
        /// broadcasting gives what ndarray gives on copies, for non-commutative operations too.
        #[test]
        fn operations_on_input_views_match_operations_on_copies(
            rows in 1usize..70, cols in 1usize..70, seed in 0u64..1000, integers in proptest::bool::ANY,
        ) {
            let value = |i: usize| ((i as u64 * 2654435761 + seed) % 1009) as f64 - 500.0;
            let x = ArrayD::from_shape_fn(IxDyn(&[rows, cols]), |d| value(d[0] * cols + d[1]));
            let y = ArrayD::from_shape_fn(IxDyn(&[cols, rows]), |d| value(7 + d[0] * rows + d[1]));
            let m = ArrayD::from_shape_fn(IxDyn(&[cols]), |d| value(13 + d[0]));
            let block = |a: &ArrayD<f64>| if integers { Block::I64(a.mapv(|v| v as i64)) } else { Block::F64(a.clone()) };
            let (bx, by, bm) = (block(&x), block(&y), block(&m));
            let yt = y.t().to_owned();
            let cases: Vec<(Box<Expr>, ArrayD<f64>)> = vec![
                (op(BinaryOp::Sub, input(0), t(&[1, 0], input(1))), &x - &yt),
                (op(BinaryOp::Sub, t(&[1, 0], input(1)), input(0)), &yt - &x),
                (op(BinaryOp::Sub, op(BinaryOp::Add, input(0), t(&[1, 0], input(1))), input(2)), &(&x + &yt) - &m),
                (op(BinaryOp::Sub, input(2), op(BinaryOp::Mul, input(0), input(0))), &m - &(&x * &x)),
                (op(BinaryOp::Sub, input(2), input(0)), &m - &x),
                (op(BinaryOp::Sub, input(0), input(2)), &x - &m),
                (op(BinaryOp::Sub, t(&[1, 0], t(&[1, 0], input(0))), input(0)), &x - &x),
                (op(BinaryOp::Sub, t(&[1, 0], input(1)), t(&[1, 0], input(1))), &yt - &yt),
                (op(BinaryOp::Sub, input(0), op(BinaryOp::Add, t(&[1, 0], input(1)), input(0))), &x - &(&yt + &x)),
            ];
            for (i, (e, want)) in cases.into_iter().enumerate() {
                let got = e.eval(&[&bx, &by, &bm]).unwrap();
                let want = if integers { Block::I64(want.mapv(|v| v as i64)) } else { Block::F64(want) };
                proptest::prop_assert_eq!(got, want, "case {}", i);
            }
        }
    }

    #[test]
    fn transposes_of_transposed_inputs_compose() {
        let z = ArrayD::from_shape_fn(IxDyn(&[2, 3, 4]), |d| (d[0] * 100 + d[1] * 10 + d[2]) as f64);
        let e = op(BinaryOp::Add, t(&[2, 0, 1], t(&[1, 2, 0], input(0))), Box::new(Expr::Scalar(Scalar::F64(0.5))));
        let want = z.clone().permuted_axes(IxDyn(&[1, 2, 0])).permuted_axes(IxDyn(&[2, 0, 1])).mapv(|v| v + 0.5);
        assert_eq!(e.eval(&[&Block::F64(z.clone())]).unwrap(), Block::F64(want.clone()));
        // Alone, a transposed input is copied once into a block of its own.
        let alone = t(&[2, 0, 1], t(&[1, 2, 0], input(0)));
        assert_eq!(alone.eval(&[&Block::F64(z)]).unwrap(), Block::F64(want.mapv(|v| v - 0.5)));
    }

    #[test]
    fn negative_step_slices() {
        let a = f64s(&[5], vec![0.0, 1.0, 2.0, 3.0, 4.0]);
        let rev = slice_block(&a, &[AxisSlice { start: 4, len: 3, step: -2 }]);
        assert_eq!(rev, f64s(&[3], vec![4.0, 2.0, 0.0]));
        let fwd = slice_block(&a, &[AxisSlice { start: 1, len: 2, step: 2 }]);
        assert_eq!(fwd, f64s(&[2], vec![1.0, 3.0]));
    }

    #[test]
    fn nan_propagates_through_maximum_and_int_floor_division_matches_numpy() {
        let e = Expr::Binary(BinaryOp::Max, Box::new(Expr::Input(0)), Box::new(Expr::Scalar(Scalar::F64(0.0))));
        let Block::F64(r) = e.eval(&[&f64s(&[2], vec![f64::NAN, -1.0])]).unwrap() else { panic!() };
        assert!(r[0].is_nan() && r[1] == 0.0);
        use num_like::Int;
        assert_eq!((-7i64).floor_div(2), -4);
        assert_eq!(7i64.floor_div(-2), -4);
        assert_eq!((-7i64).floor_div(-2), 3);
        assert_eq!(7i64.floor_div(0), 0);
    }

    #[test]
    fn integer_powers_wrap_over_the_whole_exponent_as_numpy_does() {
        // np.int64(2) ** 2**32 == 0, np.int64(3) ** (2**32 + 1), np.int64(-3) ** (2**33 + 3),
        // np.int32(3) ** (2**31 - 1): values printed by NumPy 2.4.6.
        use num_like::Int;
        assert_eq!(2i64.wrapping_pow_i(1 << 32), 0);
        assert_eq!(3i64.wrapping_pow_i((1 << 32) + 1), 7473929035676909571);
        assert_eq!((-3i64).wrapping_pow_i((1 << 33) + 3), -5403514126217510939);
        assert_eq!(3i32.wrapping_pow_i(i32::MAX), -1431655765);
        assert_eq!(7i64.wrapping_pow_i(0), 1);
    }

    #[test]
    fn negative_integer_powers_are_rejected() {
        let e = Expr::Binary(BinaryOp::Pow, Box::new(Expr::Input(0)), Box::new(Expr::Scalar(Scalar::I64(-1))));
        let a = Block::I64(ArrayD::from_elem(IxDyn(&[2]), 2));
        assert!(e.eval(&[&a]).unwrap_err().0.contains("negative integer powers"));
    }
}
