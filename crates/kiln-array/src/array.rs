//! `Array<T>`: the user-facing chunked array.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use kiln_graph::{Collection, ComputeError, Graph, GraphBuilder, GraphError, TaskId, Tokenizer, Value};
use ndarray::{ArrayD, IxDyn, SliceInfoElem};

use crate::block::{Block, DType, Element, Scalar};
use crate::chunk::expr::{BinaryOp, UnaryOp};
use crate::chunk::source::Source;
use crate::chunks::{ChunkSpec, Chunks, block_indices, common_refinement, normalize};
use crate::error::{ArrayError, normalize_axis};
use crate::lower::node::{Lowering, MapFn, Node, Op, Operand};

/// A chunked n-dimensional array of `T`: a grid of `ndarray` blocks computed lazily from a task
/// graph (Dask's `dask.array.Array`).
///
/// Operations build the graph and never fail on the spot: an invalid operation (mismatched
/// shapes, an axis out of range) gives an array that carries the error, reported by
/// [`Array::check`] or when computed.
pub struct Array<T> {
    pub(crate) node: Arc<Node>,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for Array<T> {
    fn clone(&self) -> Self {
        Array { node: Arc::clone(&self.node), _t: PhantomData }
    }
}

impl<T: Element> Array<T> {
    pub(crate) fn from_node(node: Arc<Node>) -> Self {
        Array { node, _t: PhantomData }
    }

    /// An array read from storage at `location` by `layer` (one read task per block), named
    /// `prefix-<token>` with a token of its own: the stored data may change between opens, so
    /// two opens never share keys.
    pub(crate) fn from_storage(
        prefix: &str,
        location: &std::path::Path,
        shape: Vec<usize>,
        chunks: Vec<Vec<usize>>,
        layer: Arc<dyn crate::lower::node::Layer>,
    ) -> Self {
        let name = Tokenizer::new().add(prefix).add(location.to_string_lossy().as_ref()).add(&unique()).key(prefix);
        Self::from_node(Arc::new(Node {
            name: name.shared_name().clone(),
            shape,
            chunks,
            dtype: T::DTYPE,
            op: Op::Materialized(layer),
        }))
    }

    pub(crate) fn invalid(error: ArrayError) -> Self {
        Self::from_node(Node::invalid(error))
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.node.shape
    }

    /// Number of dimensions.
    pub fn ndim(&self) -> usize {
        self.node.shape.len()
    }

    /// Number of elements.
    pub fn size(&self) -> usize {
        // Saturating: a shape too large to count (see `normalize`'s check) never reads as small.
        if self.node.shape.contains(&0) {
            return 0;
        }
        self.node.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).unwrap_or(usize::MAX)
    }

    /// Chunk sizes along every axis.
    pub fn chunks(&self) -> &Chunks {
        &self.node.chunks
    }

    /// The largest chunk along each axis (Dask's `chunksize`).
    pub fn chunksize(&self) -> Vec<usize> {
        self.node.chunks.iter().map(|c| c.iter().copied().max().unwrap_or(0)).collect()
    }

    /// Number of blocks along each axis.
    pub fn numblocks(&self) -> Vec<usize> {
        self.node.numblocks()
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        T::DTYPE
    }

    /// The array's name (block keys are `(name, i, j, ...)`).
    pub fn name(&self) -> &str {
        &self.node.name
    }

    /// Bytes of the whole array.
    pub fn nbytes(&self) -> usize {
        self.size().saturating_mul(T::DTYPE.itemsize())
    }

    /// The construction error, if an operation that built this array was invalid.
    pub fn error(&self) -> Option<&ArrayError> {
        self.node.error()
    }

    /// `Ok(self)` unless construction failed.
    ///
    /// # Errors
    /// The construction error.
    pub fn check(&self) -> Result<&Self, ArrayError> {
        match self.error() {
            Some(e) => Err(e.clone()),
            None => Ok(self),
        }
    }

    /// The task graph computing every block, and the output tasks in C order of blocks.
    ///
    /// # Errors
    /// The construction error, as a graph error.
    pub fn graph(&self) -> Result<(Graph, Vec<TaskId>), GraphError> {
        kiln_graph::collection::graph_of(self)
    }

    /// A collection yielding the single element of a 0-d (or one-element) array as a `T`.
    pub fn scalar(&self) -> ScalarOf<T> {
        ScalarOf(self.clone())
    }

    // ---- elementwise ----

    pub(crate) fn map_unary<U: Element>(&self, op: UnaryOp) -> Array<U> {
        let input =
            if op.needs_float() && !T::DTYPE.is_float() { self.cast_dtype(DType::F64) } else { self.node.clone() };
        elementwise(MapFn::Unary(op), U::DTYPE, vec![Operand::Array(input)], op_name(&format!("{op:?}")))
    }

    pub(crate) fn cast_dtype(&self, dtype: DType) -> Arc<Node> {
        if self.node.dtype == dtype {
            return self.node.clone();
        }
        elementwise::<f64>(MapFn::Cast(dtype), dtype, vec![Operand::Array(self.node.clone())], "astype".into()).node
    }

    /// Converts to another element type (NumPy's `astype`, C casts).
    pub fn astype<U: Element>(&self) -> Array<U> {
        Array::from_node(self.cast_dtype(U::DTYPE))
    }

    /// `self op other` elementwise with broadcasting; `other` is an array or a scalar.
    pub(crate) fn binary<U: Element>(
        &self,
        op: BinaryOp,
        other: impl Into<ArrayOrScalar<T>>,
        reversed: bool,
    ) -> Array<U> {
        let a = Operand::Array(self.node.clone());
        let b = match other.into() {
            ArrayOrScalar(OperandKind::Array(n)) => Operand::Array(n),
            ArrayOrScalar(OperandKind::Scalar(s)) => Operand::Scalar(s.scalar()),
        };
        let operands = if reversed { vec![b, a] } else { vec![a, b] };
        let name = op_name(&format!("{op:?}"));
        elementwise(MapFn::Binary(op), U::DTYPE, operands, name)
    }

    /// Elementwise comparison `self > other`.
    pub fn gt(&self, other: impl Into<ArrayOrScalar<T>>) -> Array<bool> {
        self.binary(BinaryOp::Gt, other, false)
    }
    /// Elementwise comparison `self >= other`.
    pub fn ge(&self, other: impl Into<ArrayOrScalar<T>>) -> Array<bool> {
        self.binary(BinaryOp::Ge, other, false)
    }
    /// Elementwise comparison `self < other`.
    pub fn lt(&self, other: impl Into<ArrayOrScalar<T>>) -> Array<bool> {
        self.binary(BinaryOp::Lt, other, false)
    }
    /// Elementwise comparison `self <= other`.
    pub fn le(&self, other: impl Into<ArrayOrScalar<T>>) -> Array<bool> {
        self.binary(BinaryOp::Le, other, false)
    }
    /// Elementwise comparison `self == other`.
    pub fn equal(&self, other: impl Into<ArrayOrScalar<T>>) -> Array<bool> {
        self.binary(BinaryOp::Eq, other, false)
    }
    /// Elementwise comparison `self != other`.
    pub fn not_equal(&self, other: impl Into<ArrayOrScalar<T>>) -> Array<bool> {
        self.binary(BinaryOp::Ne, other, false)
    }
    /// Elementwise maximum (NaN-propagating, NumPy's `maximum`).
    pub fn maximum(&self, other: impl Into<ArrayOrScalar<T>>) -> Array<T> {
        self.binary(BinaryOp::Max, other, false)
    }
    /// Elementwise minimum (NaN-propagating, NumPy's `minimum`).
    pub fn minimum(&self, other: impl Into<ArrayOrScalar<T>>) -> Array<T> {
        self.binary(BinaryOp::Min, other, false)
    }
    /// Elementwise power `self ** other`.
    pub fn pow(&self, other: impl Into<ArrayOrScalar<T>>) -> Array<T> {
        self.binary(BinaryOp::Pow, other, false)
    }
    /// Floor division (NumPy's `floor_divide`, `//`): integer division rounding down for
    /// integers (division by zero gives 0), `floor(a / b)` for floats.
    pub fn floor_divide(&self, other: impl Into<ArrayOrScalar<T>>) -> Array<T> {
        if T::DTYPE.is_float() {
            self.binary::<T>(BinaryOp::Div, other, false).floor()
        } else {
            self.binary(BinaryOp::Div, other, false)
        }
    }
    /// Limits values to `[low, high]` (NumPy's `clip`).
    pub fn clip(&self, low: T, high: T) -> Array<T> {
        self.maximum(ArrayOrScalar(OperandKind::Scalar(low))).minimum(ArrayOrScalar(OperandKind::Scalar(high)))
    }
    /// Elementwise absolute value.
    pub fn abs(&self) -> Array<T> {
        self.map_unary(UnaryOp::Abs)
    }
    /// Elementwise sign (-1, 0, 1).
    pub fn sign(&self) -> Array<T> {
        self.map_unary(UnaryOp::Sign)
    }
    /// Elementwise floor.
    pub fn floor(&self) -> Array<T> {
        self.map_unary(UnaryOp::Floor)
    }
    /// Elementwise ceiling.
    pub fn ceil(&self) -> Array<T> {
        self.map_unary(UnaryOp::Ceil)
    }
    /// Elementwise rounding, half to even.
    pub fn round(&self) -> Array<T> {
        self.map_unary(UnaryOp::Round)
    }
    /// Elementwise square root.
    pub fn sqrt(&self) -> Array<T::Float> {
        self.map_unary(UnaryOp::Sqrt)
    }
    /// Elementwise exponential.
    pub fn exp(&self) -> Array<T::Float> {
        self.map_unary(UnaryOp::Exp)
    }
    /// Elementwise natural logarithm.
    pub fn log(&self) -> Array<T::Float> {
        self.map_unary(UnaryOp::Log)
    }
    /// Elementwise base-10 logarithm.
    pub fn log10(&self) -> Array<T::Float> {
        self.map_unary(UnaryOp::Log10)
    }
    /// Elementwise sine.
    pub fn sin(&self) -> Array<T::Float> {
        self.map_unary(UnaryOp::Sin)
    }
    /// Elementwise cosine.
    pub fn cos(&self) -> Array<T::Float> {
        self.map_unary(UnaryOp::Cos)
    }
    /// Elementwise tangent.
    pub fn tan(&self) -> Array<T::Float> {
        self.map_unary(UnaryOp::Tan)
    }
    /// Elementwise hyperbolic tangent.
    pub fn tanh(&self) -> Array<T::Float> {
        self.map_unary(UnaryOp::Tanh)
    }
    /// Elementwise NaN test.
    pub fn isnan(&self) -> Array<bool> {
        self.map_unary(UnaryOp::IsNan)
    }
    /// Elementwise finiteness test.
    pub fn isfinite(&self) -> Array<bool> {
        self.map_unary(UnaryOp::IsFinite)
    }

    // ---- shape ----

    /// Reverses the axes (NumPy's `.T`).
    pub fn t(&self) -> Array<T> {
        let axes: Vec<isize> = (0..self.ndim() as isize).rev().collect();
        self.transpose(&axes)
    }

    /// Permutes the axes.
    pub fn transpose(&self, axes: &[isize]) -> Array<T> {
        if let Some(e) = self.error() {
            return Self::invalid(e.clone());
        }
        let ndim = self.ndim();
        let resolved: Result<Vec<usize>, _> = axes.iter().map(|&a| normalize_axis(a, ndim)).collect();
        let axes = match resolved {
            Ok(a) => a,
            Err(e) => return Self::invalid(e),
        };
        let mut sorted = axes.clone();
        sorted.sort_unstable();
        if sorted != (0..ndim).collect::<Vec<_>>() {
            return Self::invalid(ArrayError::Invalid(format!("axes {axes:?} are not a permutation of 0..{ndim}")));
        }
        if axes.iter().enumerate().all(|(i, &a)| i == a) {
            return self.clone();
        }
        let name = Tokenizer::new().add("transpose").add(&*self.node.name).add(&axes).key("transpose");
        Array::from_node(Arc::new(Node {
            name: name.shared_name().clone(),
            shape: axes.iter().map(|&a| self.node.shape[a]).collect(),
            chunks: axes.iter().map(|&a| self.node.chunks[a].clone()).collect(),
            dtype: T::DTYPE,
            op: Op::Transpose(self.node.clone(), axes),
        }))
    }

    /// Inserts a length-1 axis at `axis` (NumPy's `expand_dims`).
    pub fn expand_dims(&self, axis: isize) -> Array<T> {
        if let Some(e) = self.error() {
            return Self::invalid(e.clone());
        }
        let axis = match normalize_axis(axis, self.ndim() + 1) {
            Ok(a) => a,
            Err(e) => return Self::invalid(e),
        };
        let mut shape = self.shape().to_vec();
        let mut chunks = self.chunks().clone();
        shape.insert(axis, 1);
        chunks.insert(axis, vec![1]);
        self.unit_reshape("expand_dims", shape, chunks)
    }

    /// Removes length-1 axes (NumPy's `squeeze`; all of them when `axes` is empty).
    pub fn squeeze(&self, axes: &[isize]) -> Array<T> {
        if let Some(e) = self.error() {
            return Self::invalid(e.clone());
        }
        let ndim = self.ndim();
        let drop: Vec<usize> = if axes.is_empty() {
            (0..ndim).filter(|&a| self.shape()[a] == 1).collect()
        } else {
            match axes.iter().map(|&a| normalize_axis(a, ndim)).collect::<Result<Vec<_>, _>>() {
                Ok(v) => v,
                Err(e) => return Self::invalid(e),
            }
        };
        if let Some(&a) = drop.iter().find(|&&a| self.shape()[a] != 1) {
            return Self::invalid(ArrayError::Invalid(format!(
                "cannot select an axis to squeeze out which has size not equal to one (axis {a} has {})",
                self.shape()[a]
            )));
        }
        let keep = |a: &usize| !drop.contains(a);
        let shape = (0..ndim).filter(keep).map(|a| self.shape()[a]).collect();
        let chunks = (0..ndim).filter(keep).map(|a| self.chunks()[a].clone()).collect();
        self.unit_reshape("squeeze", shape, chunks)
    }

    /// The same elements in another shape, C order (NumPy's `reshape`; one entry may be -1).
    ///
    /// Shapes that only add or drop length-1 axes keep the blocks. Otherwise the array is
    /// rechunked into blocks of whole rows (all axes but the first in one chunk) so that each
    /// block reshapes on its own; very wide rows make large blocks.
    pub fn reshape(&self, shape: &[isize]) -> Array<T> {
        if let Some(e) = self.error() {
            return Self::invalid(e.clone());
        }
        let size = self.size();
        let known: usize = shape.iter().filter(|&&d| d >= 0).map(|&d| d as usize).product();
        let unknown = shape.iter().filter(|&&d| d < 0).count();
        let bad = || ArrayError::Shape(format!("cannot reshape array of size {size} into shape {shape:?}"));
        if unknown > 1 || shape.iter().any(|&d| d < -1) || (unknown == 1 && (known == 0 || !size.is_multiple_of(known)))
        {
            return Self::invalid(bad());
        }
        let new: Vec<usize> = shape.iter().map(|&d| if d < 0 { size / known.max(1) } else { d as usize }).collect();
        if new.iter().product::<usize>() != size {
            return Self::invalid(bad());
        }
        if new == self.shape() {
            return self.clone();
        }
        let squeeze = |s: &[usize]| s.iter().copied().filter(|&d| d != 1).collect::<Vec<_>>();
        if squeeze(&new) == squeeze(self.shape()) {
            // Only unit axes change: keep the non-unit axes' chunks.
            let mut kept = self.chunks().iter().zip(self.shape()).filter(|(_, d)| **d != 1).map(|(c, _)| c.clone());
            let chunks: Chunks =
                new.iter().map(|&d| if d == 1 { vec![1] } else { kept.next().unwrap_or_else(|| vec![d]) }).collect();
            return self.unit_reshape("reshape", new, chunks);
        }
        if size == 0 {
            return crate::array::zeros::<T>(&new, ChunkSpec::Uniform(1));
        }
        let in_row: usize = self.shape()[1..].iter().product::<usize>().max(1);
        let out_row: usize = new[1..].iter().product::<usize>().max(1);
        let lcm = in_row / gcd(in_row, out_row) * out_row;
        let step = lcm / in_row;
        let block_elems: usize = self.chunksize().iter().product::<usize>().max(lcm);
        let rows_in = ((block_elems / in_row) / step).max(1) * step;
        let mut in_chunks: Chunks = self.shape().iter().map(|&d| vec![d]).collect();
        in_chunks[0] = crate::chunks::regular(self.shape()[0], rows_in);
        let source = self.rechunk(ChunkSpec::Explicit(in_chunks.clone()));
        let mut out_chunks: Chunks = new.iter().map(|&d| vec![d]).collect();
        out_chunks[0] = in_chunks[0].iter().map(|&r| r * in_row / out_row).collect();
        let name = Tokenizer::new().add("reshape").add(source.name()).add(&new).key("reshape");
        Array::from_node(Arc::new(Node {
            name: name.shared_name().clone(),
            shape: new,
            chunks: out_chunks,
            dtype: T::DTYPE,
            op: Op::RowReshape(source.node.clone()),
        }))
    }

    /// An array of `U` with this array's shape and chunks, computed by `layer`.
    pub(crate) fn same_layout<U: Element>(
        &self,
        name: &kiln_graph::Key,
        layer: Arc<dyn crate::lower::node::Layer>,
    ) -> Array<U> {
        Array::from_node(Arc::new(Node {
            name: name.shared_name().clone(),
            shape: self.shape().to_vec(),
            chunks: self.chunks().clone(),
            dtype: U::DTYPE,
            op: Op::Materialized(layer),
        }))
    }

    fn unit_reshape(&self, prefix: &str, shape: Vec<usize>, chunks: Chunks) -> Array<T> {
        let name = Tokenizer::new().add(prefix).add(&*self.node.name).add(&shape).key(prefix);
        Array::from_node(Arc::new(Node {
            name: name.shared_name().clone(),
            shape,
            chunks,
            dtype: T::DTYPE,
            op: Op::Reshape(self.node.clone()),
        }))
    }

    /// Swaps two axes.
    pub fn swapaxes(&self, a: isize, b: isize) -> Array<T> {
        let ndim = self.ndim();
        match (normalize_axis(a, ndim), normalize_axis(b, ndim)) {
            (Ok(a), Ok(b)) => {
                let mut axes: Vec<isize> = (0..ndim as isize).collect();
                axes.swap(a, b);
                self.transpose(&axes)
            }
            (Err(e), _) | (_, Err(e)) => Self::invalid(e),
        }
    }

    /// The array with new chunks (Dask's `rechunk`).
    pub fn rechunk(&self, chunks: impl Into<ChunkSpec>) -> Array<T> {
        if let Some(e) = self.error() {
            return Self::invalid(e.clone());
        }
        match normalize(&chunks.into(), self.shape(), T::DTYPE.itemsize()) {
            Ok(c) => Array::from_node(crate::lower::rechunk::rechunk(&self.node, c)),
            Err(e) => Self::invalid(e),
        }
    }

    /// Basic NumPy indexing: slices with steps (negative steps and indices count from the end)
    /// and integers (which drop the axis), e.g. `x.slice(&idx![..;4, 2, 1..-1])` for
    /// `x[::4, 2, 1:-1]`.
    pub fn slice(&self, info: &[crate::slicing::Idx]) -> Array<T> {
        if let Some(e) = self.error() {
            return Self::invalid(e.clone());
        }
        match crate::slicing::slice(&self.node, info) {
            Ok(n) => Array::from_node(n),
            Err(e) => Self::invalid(e),
        }
    }
}

/// The right-hand side of an elementwise method such as [`Array::maximum`] or [`Array::gt`]:
/// an array of the same element type (`&x` or `x`), broadcast against `self`, or a scalar
/// (`2.0`). You never name it: the methods take `impl Into<ArrayOrScalar<T>>`.
///
/// ```
/// let x = kiln_array::arange::<f64>(0.0, 4.0, 1.0, 2);
/// let (a, b) = (x.maximum(1.5), x.maximum(&x.t()));
/// # let _ = (a, b);
/// ```
pub struct ArrayOrScalar<T>(OperandKind<T>);

/// What an [`ArrayOrScalar`] holds (private: arrays are held as their graph node).
enum OperandKind<T> {
    Array(Arc<Node>),
    Scalar(T),
}

impl<T: Element> From<&Array<T>> for ArrayOrScalar<T> {
    fn from(a: &Array<T>) -> Self {
        ArrayOrScalar(OperandKind::Array(a.node.clone()))
    }
}
impl<T: Element> From<Array<T>> for ArrayOrScalar<T> {
    fn from(a: Array<T>) -> Self {
        ArrayOrScalar(OperandKind::Array(a.node))
    }
}
macro_rules! scalar_operand {
    ($($t:ty),*) => {$(
        impl From<$t> for ArrayOrScalar<$t> {
            fn from(v: $t) -> Self {
                ArrayOrScalar(OperandKind::Scalar(v))
            }
        }
    )*};
}
scalar_operand!(bool, i32, i64, f32, f64);

fn op_name(op: &str) -> String {
    op.to_ascii_lowercase()
}

/// Builds an elementwise node: broadcasts shapes, unifies chunks (rechunking operands whose
/// chunks differ), casts operands to `dtype` where the function requires one input type.
pub(crate) fn elementwise<U: Element>(f: MapFn, dtype: DType, operands: Vec<Operand>, prefix: String) -> Array<U> {
    for o in &operands {
        if let Operand::Array(n) = o
            && let Some(e) = n.error()
        {
            return Array::invalid(e.clone());
        }
    }
    let arrays: Vec<&Arc<Node>> =
        operands.iter().filter_map(|o| if let Operand::Array(n) = o { Some(n) } else { None }).collect();
    let ndim = arrays.iter().map(|n| n.shape.len()).max().unwrap_or(0);
    let mut shape = vec![1usize; ndim];
    for n in &arrays {
        let lead = ndim - n.shape.len();
        for (k, &d) in n.shape.iter().enumerate() {
            let s = &mut shape[lead + k];
            if *s == 1 {
                *s = d;
            } else if d != 1 && d != *s {
                let shapes: Vec<&Vec<usize>> = arrays.iter().map(|n| &n.shape).collect();
                return Array::invalid(ArrayError::Shape(format!(
                    "operands could not be broadcast together with shapes {}",
                    shapes.iter().map(|s| fmt_shape(s)).collect::<Vec<_>>().join(" ")
                )));
            }
        }
    }
    // The common chunking: per axis, the refinement of every operand's chunks of full length.
    let mut chunks: Chunks = shape.iter().map(|&d| vec![d]).collect();
    let mut have = vec![false; ndim];
    for n in &arrays {
        let lead = ndim - n.shape.len();
        for (k, c) in n.chunks.iter().enumerate() {
            let axis = lead + k;
            if n.shape[k] == shape[axis] && (shape[axis] != 1 || !have[axis]) {
                chunks[axis] = if have[axis] { common_refinement(&chunks[axis], c) } else { c.clone() };
                have[axis] = true;
            }
        }
    }
    let needs_cast = !matches!(f, MapFn::Cast(_));
    let operands: Vec<Operand> = operands
        .into_iter()
        .map(|o| match o {
            Operand::Array(n) => {
                let lead = ndim - n.shape.len();
                let target: Chunks = n
                    .chunks
                    .iter()
                    .enumerate()
                    .map(|(k, c)| if n.shape[k] == shape[lead + k] { chunks[lead + k].clone() } else { c.clone() })
                    .collect();
                let n = if target != n.chunks { crate::lower::rechunk::rechunk(&n, target) } else { n };
                Operand::Array(n)
            }
            s => s,
        })
        .collect();
    // One input type per function: comparisons and arithmetic cast to the widest operand type.
    let in_dtype = match f {
        MapFn::Binary(op) if op.is_comparison() => widest(&operands),
        MapFn::Binary(BinaryOp::And | BinaryOp::Or) => DType::Bool,
        MapFn::Binary(_) => dtype,
        MapFn::Where => dtype,
        MapFn::Unary(op) if op.is_predicate() => widest(&operands),
        MapFn::Unary(_) => widest(&operands),
        MapFn::Cast(_) => widest(&operands),
    };
    let operands: Vec<Operand> = operands
        .into_iter()
        .enumerate()
        .map(|(i, o)| match o {
            // where's condition stays bool
            Operand::Array(n) if needs_cast && !(f == MapFn::Where && i == 0) && n.dtype != in_dtype => {
                Operand::Array(Array::<f64>::from_node(n).cast_dtype(in_dtype))
            }
            Operand::Scalar(s) if needs_cast && !(f == MapFn::Where && i == 0) => Operand::Scalar(s.cast(in_dtype)),
            o => o,
        })
        .collect();
    let mut tokens = Tokenizer::new();
    tokens.feed(format!("{f:?}").as_str()).feed(dtype.name());
    for o in &operands {
        match o {
            Operand::Array(n) => tokens.feed(&*n.name),
            Operand::Scalar(s) => tokens.feed(format!("{s:?}").as_str()),
        };
    }
    let name = tokens.key(&prefix);
    Array::from_node(Arc::new(Node {
        name: name.shared_name().clone(),
        shape,
        chunks,
        dtype,
        op: Op::Map(f, operands),
    }))
}

fn widest(operands: &[Operand]) -> DType {
    operands
        .iter()
        .filter_map(|o| match o {
            Operand::Array(n) => Some(n.dtype),
            Operand::Scalar(_) => None,
        })
        .max()
        .unwrap_or(DType::F64)
}

pub(crate) fn fmt_shape(shape: &[usize]) -> String {
    match shape {
        [one] => format!("({one},)"),
        _ => format!("({})", shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
    }
}

impl<T: Element> fmt::Display for Array<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(e) = self.error() {
            return write!(f, "kiln.Array<invalid: {e}>");
        }
        let prefix = crate::lower::node::kernel_name(&self.node);
        write!(
            f,
            "kiln.Array<{prefix}, shape={}, dtype={}, chunksize={}>",
            fmt_shape(self.shape()),
            T::DTYPE,
            fmt_shape(&self.chunksize())
        )
    }
}

impl<T: Element> fmt::Debug for Array<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl<T: Element> Collection for Array<T> {
    type Output = ArrayD<T>;

    fn add_to(&self, builder: &mut GraphBuilder) -> Result<Vec<TaskId>, GraphError> {
        if let Some(e) = self.error() {
            return Err(GraphError::invalid("array", e.clone()));
        }
        crate::lower::portable::ensure_registered();
        let mut lw = Lowering::new(builder, true);
        block_indices(&self.numblocks()).iter().map(|idx| lw.output(&self.node, idx)).collect()
    }

    fn add_to_unfused(&self, builder: &mut GraphBuilder) -> Result<Vec<TaskId>, GraphError> {
        if let Some(e) = self.error() {
            return Err(GraphError::invalid("array", e.clone()));
        }
        crate::lower::portable::ensure_registered();
        let mut lw = Lowering::new(builder, false);
        block_indices(&self.numblocks()).iter().map(|idx| lw.output(&self.node, idx)).collect()
    }

    fn output_count(&self) -> usize {
        self.numblocks().iter().product()
    }

    fn result_nbytes(&self) -> Option<u64> {
        Some(u64::try_from(self.nbytes()).unwrap_or(u64::MAX))
    }

    fn assemble(&self, graph: &Graph, outputs: &[TaskId], values: Vec<Value>) -> Result<ArrayD<T>, ComputeError> {
        // Checked before computing too (`compute_on`); here for every other way to assemble.
        kiln_graph::collection::check_result_fits(self)?;
        let mut out = ArrayD::<T>::default(IxDyn(self.shape()));
        for ((idx, value), task) in block_indices(&self.numblocks()).iter().zip(values).zip(outputs) {
            let block = value.downcast_ref::<Block>().map_err(|m| ComputeError::ResultType {
                key: graph.key(*task).clone(),
                expected: m.expected,
                found: m.found,
            })?;
            let typed = T::block_ref(block).ok_or_else(|| ComputeError::ResultType {
                key: graph.key(*task).clone(),
                expected: T::DTYPE.name(),
                found: block.dtype().name(),
            })?;
            let offset = self.node.block_offset(idx);
            let info: Vec<SliceInfoElem> = offset
                .iter()
                .zip(typed.shape())
                .map(|(&o, &n)| SliceInfoElem::Slice { start: o as isize, end: Some((o + n) as isize), step: 1 })
                .collect();
            if typed.shape() != self.node.block_shape(idx).as_slice() {
                return Err(ComputeError::Internal(format!(
                    "block {} has shape {:?}, expected {:?}",
                    graph.key(*task),
                    typed.shape(),
                    self.node.block_shape(idx)
                )));
            }
            out.slice_mut(info.as_slice()).assign(typed);
        }
        Ok(out)
    }
}

/// A 0-d array computed to its single element (see [`Array::scalar`]).
pub struct ScalarOf<T>(Array<T>);

impl<T: Element> Collection for ScalarOf<T> {
    type Output = T;

    fn add_to(&self, builder: &mut GraphBuilder) -> Result<Vec<TaskId>, GraphError> {
        self.0.add_to(builder)
    }
    fn add_to_unfused(&self, builder: &mut GraphBuilder) -> Result<Vec<TaskId>, GraphError> {
        self.0.add_to_unfused(builder)
    }
    fn output_count(&self) -> usize {
        self.0.output_count()
    }
    fn result_nbytes(&self) -> Option<u64> {
        self.0.result_nbytes()
    }
    fn assemble(&self, graph: &Graph, outputs: &[TaskId], values: Vec<Value>) -> Result<T, ComputeError> {
        let all = self.0.assemble(graph, outputs, values)?;
        if all.len() != 1 {
            return Err(ComputeError::invalid(
                "array",
                ArrayError::Shape(format!("scalar() of an array with {} elements", all.len())),
            ));
        }
        Ok(*all.iter().next().expect("one element"))
    }
}

// ---- creation ----

fn source<T: Element>(prefix: &str, shape: &[usize], chunks: ChunkSpec, src: Source) -> Array<T> {
    let chunks = match normalize(&chunks, shape, T::DTYPE.itemsize()) {
        Ok(c) => c,
        Err(e) => return Array::invalid(e),
    };
    let name = Tokenizer::new()
        .add(prefix)
        .add(format!("{src:?}").as_str())
        .add(T::DTYPE.name())
        .add(&shape.to_vec())
        .add(&chunks.iter().flatten().copied().collect::<Vec<usize>>())
        .key(prefix);
    Array::from_node(Arc::new(Node {
        name: name.shared_name().clone(),
        shape: shape.to_vec(),
        chunks,
        dtype: T::DTYPE,
        op: Op::Source(src),
    }))
}

/// An array of ones (Dask's `da.ones`).
///
/// ```
/// let x = kiln_array::ones::<f64>(&[15], 5);
/// assert_eq!(x.to_string(), "kiln.Array<ones, shape=(15,), dtype=float64, chunksize=(5,)>");
/// ```
pub fn ones<T: Element>(shape: &[usize], chunks: impl Into<ChunkSpec>) -> Array<T> {
    source("ones", shape, chunks.into(), Source::Full(Scalar::I64(1)))
}

/// An array of zeros.
pub fn zeros<T: Element>(shape: &[usize], chunks: impl Into<ChunkSpec>) -> Array<T> {
    source("zeros", shape, chunks.into(), Source::Full(Scalar::I64(0)))
}

/// An array filled with `value`.
pub fn full<T: Element>(shape: &[usize], value: T, chunks: impl Into<ChunkSpec>) -> Array<T> {
    source("full", shape, chunks.into(), Source::Full(value.scalar()))
}

/// `start, start + step, ...` below `stop` (NumPy's `arange`).
pub fn arange<T: Element>(start: f64, stop: f64, step: f64, chunks: impl Into<ChunkSpec>) -> Array<T> {
    if step == 0.0 || !step.is_finite() {
        return Array::invalid(ArrayError::Invalid(format!("arange step must be non-zero and finite, got {step}")));
    }
    let n = ((stop - start) / step).ceil().max(0.0) as usize;
    source("arange", &[n], chunks.into(), Source::Ramp { start, step })
}

/// `num` evenly spaced values from `start` to `stop` inclusive (NumPy's `linspace`).
pub fn linspace(start: f64, stop: f64, num: usize, chunks: impl Into<ChunkSpec>) -> Array<f64> {
    let step = if num > 1 { (stop - start) / (num - 1) as f64 } else { 0.0 };
    source("linspace", &[num], chunks.into(), Source::Ramp { start, step })
}

/// The `n` x `n` identity (NumPy's `eye`).
pub fn eye<T: Element>(n: usize, chunks: impl Into<ChunkSpec>) -> Array<T> {
    source("eye", &[n, n], chunks.into(), Source::Eye { k: 0 })
}

/// A chunked view of an in-memory array (Dask's `from_array`). The data is shared, not copied;
/// each block is sliced from it when needed.
pub fn from_array<T: Element>(data: ArrayD<T>, chunks: impl Into<ChunkSpec>) -> Array<T> {
    let shape = data.shape().to_vec();
    let chunks = match normalize(&chunks.into(), &shape, T::DTYPE.itemsize()) {
        Ok(c) => c,
        Err(e) => return Array::invalid(e),
    };
    // Content hashing a large array costs a pass over it; a unique token is what Dask does for
    // in-memory arrays it cannot cheaply hash.
    let name = Tokenizer::new().add("array").add(&unique()).key("array");
    let value = Value::new(T::into_block(data));
    Array::from_node(Arc::new(Node {
        name: name.shared_name().clone(),
        shape,
        chunks,
        dtype: T::DTYPE,
        op: Op::FromArray(value),
    }))
}

/// A key for a layer built around a user closure: closures cannot be hashed, so every call
/// gets its own name (as Dask does for functions it cannot tokenize).
pub(crate) fn closure_key(name: &str, parts: &[&str]) -> kiln_graph::Key {
    let mut tokens = Tokenizer::new();
    tokens.feed(name);
    for p in parts {
        tokens.feed(*p);
    }
    tokens.feed(&unique());
    tokens.key(name)
}

/// A value no other array name uses, in any process (see [`kiln_graph::unique_token`]).
pub(crate) fn unique() -> u128 {
    kiln_graph::unique_token()
}

/// Random arrays, reproducible from a seed, with an independent stream per block.
pub mod random {
    use super::*;
    use crate::chunk::source::Dist;

    /// A seeded generator of random arrays (Dask's `da.random.default_rng(seed)`).
    #[derive(Debug, Clone, Copy)]
    pub struct RandomState {
        seed: u64,
    }

    impl RandomState {
        /// A generator with a fixed seed.
        pub fn new(seed: u64) -> Self {
            RandomState { seed }
        }

        /// A generator seeded from operating-system randomness (different every call and run).
        pub fn from_entropy() -> Self {
            let u = unique();
            RandomState { seed: (u as u64) ^ ((u >> 64) as u64) }
        }

        /// Uniform floats on `[0, 1)`.
        pub fn random(&self, shape: &[usize], chunks: impl Into<ChunkSpec>) -> Array<f64> {
            self.uniform(0.0, 1.0, shape, chunks)
        }

        /// Uniform floats on `[low, high)`.
        pub fn uniform(&self, low: f64, high: f64, shape: &[usize], chunks: impl Into<ChunkSpec>) -> Array<f64> {
            if !(low.is_finite() && high.is_finite() && low <= high) {
                return Array::invalid(ArrayError::Invalid(format!(
                    "uniform needs finite low <= high, got {low}, {high}"
                )));
            }
            let dist = Dist::Uniform { low, high };
            source("random", shape, chunks.into(), Source::Random { seed: self.seed, dist })
        }

        /// Normally distributed floats.
        pub fn normal(&self, mean: f64, std: f64, shape: &[usize], chunks: impl Into<ChunkSpec>) -> Array<f64> {
            if !(std >= 0.0 && std.is_finite() && mean.is_finite()) {
                return Array::invalid(ArrayError::Invalid(format!(
                    "normal needs a finite mean and std >= 0, got {mean}, {std}"
                )));
            }
            let dist = Dist::Normal { mean, std };
            source("normal", shape, chunks.into(), Source::Random { seed: self.seed, dist })
        }

        /// Uniform integers on `[low, high)`.
        pub fn integers(&self, low: i64, high: i64, shape: &[usize], chunks: impl Into<ChunkSpec>) -> Array<i64> {
            if low >= high {
                return Array::invalid(ArrayError::Invalid(format!("integers needs low < high, got {low}, {high}")));
            }
            let dist = Dist::Integers { low, high };
            source("integers", shape, chunks.into(), Source::Random { seed: self.seed, dist })
        }
    }

    /// Uniform floats on `[0, 1)` from a fresh seed (Dask's `da.random.random`).
    pub fn random(shape: &[usize], chunks: impl Into<ChunkSpec>) -> Array<f64> {
        RandomState::from_entropy().random(shape, chunks)
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
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

impl<T: Element> kiln_graph::Persist for Array<T> {
    fn with_remote_outputs(&self, keep_alive: Value) -> Self {
        Array::from_node(crate::lower::remote::remote_node(&self.node, keep_alive))
    }
}
