//! Element types and the dynamically typed block that kernels work on.
//!
//! Users hold typed `Array<T>`s; inside the graph a block is a [`Block`], an `ndarray` array of
//! one of the supported element types. Kernels dispatch on it once per block, never per element.

use std::fmt;

use ndarray::ArrayD;

/// The element types of kiln arrays, named as NumPy names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    /// `bool`
    Bool,
    /// `int32`
    I32,
    /// `int64`
    I64,
    /// `float32`
    F32,
    /// `float64`
    F64,
}

// Travels by name (see `crate::wire`).
crate::wire::by_name!(DType { Bool => "bool", I32 => "int32", I64 => "int64", F32 => "float32", F64 => "float64" });

impl DType {
    /// NumPy's name, e.g. `"float64"`.
    pub fn name(self) -> &'static str {
        match self {
            DType::Bool => "bool",
            DType::I32 => "int32",
            DType::I64 => "int64",
            DType::F32 => "float32",
            DType::F64 => "float64",
        }
    }

    /// Bytes per element.
    pub fn itemsize(self) -> usize {
        match self {
            DType::Bool => 1,
            DType::I32 | DType::F32 => 4,
            DType::I64 | DType::F64 => 8,
        }
    }

    /// Whether this is a floating-point type.
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F64)
    }

    /// NumPy's result type of `sum`/`prod`: small integers and bools widen to int64.
    pub fn sum_dtype(self) -> DType {
        match self {
            DType::Bool | DType::I32 | DType::I64 => DType::I64,
            other => other,
        }
    }

    /// NumPy's result type of `mean`/`var`/`std` and true division: float64 unless float32.
    pub fn float_dtype(self) -> DType {
        match self {
            DType::F32 => DType::F32,
            _ => DType::F64,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A scalar of any element type.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Scalar {
    /// A `bool`.
    Bool(bool),
    /// An `i32`.
    I32(i32),
    /// An `i64`.
    I64(i64),
    /// An `f32`.
    F32(f32),
    /// An `f64`.
    F64(f64),
}

impl Scalar {
    /// The scalar's type.
    pub fn dtype(self) -> DType {
        match self {
            Scalar::Bool(_) => DType::Bool,
            Scalar::I32(_) => DType::I32,
            Scalar::I64(_) => DType::I64,
            Scalar::F32(_) => DType::F32,
            Scalar::F64(_) => DType::F64,
        }
    }

    /// The value as `f64` (bools as 0/1).
    pub fn as_f64(self) -> f64 {
        match self {
            Scalar::Bool(b) => b as u8 as f64,
            Scalar::I32(v) => v as f64,
            Scalar::I64(v) => v as f64,
            Scalar::F32(v) => v as f64,
            Scalar::F64(v) => v,
        }
    }

    /// The value converted to `dtype` with NumPy's casting (`as` semantics).
    pub fn cast(self, dtype: DType) -> Scalar {
        let f = self.as_f64();
        let i = match self {
            Scalar::I64(v) => v,
            Scalar::I32(v) => v as i64,
            Scalar::Bool(b) => b as i64,
            Scalar::F32(v) => v as i64,
            Scalar::F64(v) => v as i64,
        };
        match dtype {
            DType::Bool => Scalar::Bool(f != 0.0),
            DType::I32 => Scalar::I32(i as i32),
            DType::I64 => Scalar::I64(i),
            DType::F32 => Scalar::F32(f as f32),
            DType::F64 => Scalar::F64(f),
        }
    }
}

/// One block of an array, of any element type.
#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    /// `bool` elements.
    Bool(ArrayD<bool>),
    /// `i32` elements.
    I32(ArrayD<i32>),
    /// `i64` elements.
    I64(ArrayD<i64>),
    /// `f32` elements.
    F32(ArrayD<f32>),
    /// `f64` elements.
    F64(ArrayD<f64>),
}

/// Runs `$body` with `$a` bound to the typed array inside a [`Block`].
#[macro_export]
#[doc(hidden)]
macro_rules! with_block {
    ($block:expr, $a:ident => $body:expr) => {
        match $block {
            $crate::Block::Bool($a) => $body,
            $crate::Block::I32($a) => $body,
            $crate::Block::I64($a) => $body,
            $crate::Block::F32($a) => $body,
            $crate::Block::F64($a) => $body,
        }
    };
}

impl Block {
    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            Block::Bool(_) => DType::Bool,
            Block::I32(_) => DType::I32,
            Block::I64(_) => DType::I64,
            Block::F32(_) => DType::F32,
            Block::F64(_) => DType::F64,
        }
    }

    /// The block's shape.
    pub fn shape(&self) -> &[usize] {
        with_block!(self, a => a.shape())
    }

    /// Bytes of element data.
    pub fn nbytes(&self) -> usize {
        self.shape().iter().product::<usize>() * self.dtype().itemsize()
    }

    /// A block of `shape` filled with `value`.
    pub fn full(shape: &[usize], value: Scalar) -> Block {
        match value {
            Scalar::Bool(v) => Block::Bool(ArrayD::from_elem(shape, v)),
            Scalar::I32(v) => Block::I32(ArrayD::from_elem(shape, v)),
            Scalar::I64(v) => Block::I64(ArrayD::from_elem(shape, v)),
            Scalar::F32(v) => Block::F32(ArrayD::from_elem(shape, v)),
            Scalar::F64(v) => Block::F64(ArrayD::from_elem(shape, v)),
        }
    }

    /// Converts to another element type (NumPy `astype`, C-style casts).
    pub fn cast(self, dtype: DType) -> Block {
        if self.dtype() == dtype {
            return self;
        }
        macro_rules! to {
            ($a:expr, $conv:expr) => {
                match dtype {
                    DType::Bool => Block::Bool($a.mapv(|v| $conv(v) != 0.0)),
                    DType::I32 => Block::I32($a.mapv(|v| $conv(v) as i32)),
                    DType::I64 => Block::I64($a.mapv(|v| $conv(v) as i64)),
                    DType::F32 => Block::F32($a.mapv(|v| $conv(v) as f32)),
                    DType::F64 => Block::F64($a.mapv(|v| $conv(v))),
                }
            };
        }
        match self {
            Block::Bool(a) => to!(a, |v: bool| v as u8 as f64),
            // Integer to integer casts go through i64 to keep all bits.
            Block::I32(a) => match dtype {
                DType::I64 => Block::I64(a.mapv(|v| v as i64)),
                _ => to!(a, |v: i32| v as f64),
            },
            Block::I64(a) => match dtype {
                DType::I32 => Block::I32(a.mapv(|v| v as i32)),
                _ => to!(a, |v: i64| v as f64),
            },
            Block::F32(a) => to!(a, |v: f32| v as f64),
            Block::F64(a) => to!(a, |v: f64| v),
        }
    }
}

/// The bytes of a block of `shape` and `dtype` (saturating: a size too large to count never
/// reads as small).
pub fn block_bytes(shape: &[usize], dtype: DType) -> u64 {
    if shape.contains(&0) {
        return 0;
    }
    shape.iter().try_fold(dtype.itemsize() as u64, |n, &d| n.checked_mul(d as u64)).unwrap_or(u64::MAX)
}

/// Checks a block about to be allocated against the executor's memory budget
/// ([`kiln_graph::memory`]): one check per block, never per element.
///
/// # Errors
/// The budget's [`TooLarge`](kiln_graph::memory::TooLarge), advising smaller chunks.
pub fn check_block(shape: &[usize], dtype: DType) -> Result<(), kiln_graph::memory::TooLarge> {
    check_block_bytes(block_bytes(shape, dtype))
}

/// [`check_block`] from a size in bytes.
///
/// # Errors
/// As [`check_block`].
pub fn check_block_bytes(bytes: u64) -> Result<(), kiln_graph::memory::TooLarge> {
    kiln_graph::memory::check_alloc("block", bytes).map_err(|e| e.with_advice("use smaller chunks"))
}

/// Element types kiln arrays can hold.
pub trait Element: Copy + Send + Sync + PartialOrd + fmt::Debug + Default + 'static {
    /// The matching [`DType`].
    const DTYPE: DType;
    /// NumPy's result type of `sum`/`prod` (int64 for bools and integers).
    type Sum: Element;
    /// NumPy's result type of `mean`/`std`/true division (float64 unless float32).
    type Float: Element;
    /// Wraps a typed array as a block.
    fn into_block(array: ArrayD<Self>) -> Block;
    /// Unwraps a block of this type.
    fn from_block(block: Block) -> Option<ArrayD<Self>>;
    /// Borrows a block of this type.
    fn block_ref(block: &Block) -> Option<&ArrayD<Self>>;
    /// As a [`Scalar`].
    fn scalar(self) -> Scalar;
}

macro_rules! element {
    ($($ty:ty => $variant:ident, $sum:ty, $float:ty);*) => {$(
        impl Element for $ty {
            const DTYPE: DType = DType::$variant;
            type Sum = $sum;
            type Float = $float;
            fn into_block(array: ArrayD<Self>) -> Block {
                Block::$variant(array)
            }
            fn from_block(block: Block) -> Option<ArrayD<Self>> {
                match block {
                    Block::$variant(a) => Some(a),
                    _ => None,
                }
            }
            fn block_ref(block: &Block) -> Option<&ArrayD<Self>> {
                match block {
                    Block::$variant(a) => Some(a),
                    _ => None,
                }
            }
            fn scalar(self) -> Scalar {
                Scalar::$variant(self)
            }
        }
    )*};
}
element!(bool => Bool, i64, f64; i32 => I32, i64, f64; i64 => I64, i64, f64; f32 => F32, f32, f32; f64 => F64, f64, f64);

/// Numeric element types (everything but `bool`).
pub trait Number: Element {}
impl Number for i32 {}
impl Number for i64 {}
impl Number for f32 {}
impl Number for f64 {}

/// Floating-point element types.
pub trait Float: Number {}
impl Float for f32 {}
impl Float for f64 {}
