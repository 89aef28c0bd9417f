//! Arrays on other processes: the kernel ids and value codecs of `kiln-array`.
//!
//! Every kernel kiln-array emits is portable except those wrapping a user closure
//! (`map_blocks`, `map_overlap`, `blockwise`): its parameters are plain data (block expressions,
//! shapes, reduction options, store paths) encoded with postcard. Every value that flows between
//! array tasks has a codec: a small postcard header (dtypes and shapes) plus one raw
//! little-endian, C-order frame per numeric buffer, so bulk data is never re-encoded.
//!
//! Kernel ids are stable strings, declared once in `lower::kernels` (see
//! [`BUILTIN_KERNEL_IDS`](crate::BUILTIN_KERNEL_IDS)); [`register_portable`] is the one place
//! that registers them and the codecs. Codec tags: `kiln.array.block`, `kiln.array.block-arc`,
//! `kiln.array.reduce-partial`, `kiln.array.tsqr-local`, `kiln.array.tsqr-stacked`,
//! `kiln.array.svd-core`.
//!
//! ```
//! use kiln_array::{Block, register_portable};
//! use kiln_graph::{CodecRegistry, KernelRegistry, Value};
//! let (kernels, codecs) = (KernelRegistry::new(), CodecRegistry::with_builtins());
//! register_portable(&kernels, &codecs);
//! let block = Block::F64(ndarray::ArrayD::from_elem(ndarray::IxDyn(&[2, 3]), 1.5));
//! let encoded = codecs.encode(&Value::new(block.clone())).unwrap();
//! assert_eq!((encoded.tag.as_str(), encoded.frames[0].len()), ("kiln.array.block", 48));
//! assert_eq!(codecs.decode(&encoded).unwrap().downcast_ref::<Block>().unwrap(), &block);
//! ```

use std::any::{Any, TypeId};
use std::marker::PhantomData;
use std::sync::{Arc, Once};

use kiln_graph::codec::{CodecError, Pod, ValueCodec};
use kiln_graph::kernel::Identity;
use kiln_graph::{CodecRegistry, Encoded, Frame, KernelRegistry, Value};
use ndarray::{ArrayD, ArrayViewD, Dimension, IxDyn};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::block::{Block, DType, Element};
use crate::chunk::linalg::{CoreSvd, LocalQr, StackedQr};
use crate::chunk::reduce::Partial;
use crate::lower::kernels::register_builtin_kernels;

/// Registers every kiln-array kernel factory and value codec in these registries. Registering
/// twice replaces entries with equal ones, so calling it again is harmless.
pub fn register_portable(kernels: &KernelRegistry, codecs: &CodecRegistry) {
    kernels.register_instance(Arc::new(Identity));
    register_builtin_kernels(kernels);

    codecs.register(FramedCodec::<Block>::new());
    codecs.register(FramedCodec::<Arc<Block>>::new());
    codecs.register(FramedCodec::<Partial>::new());
    codecs.register(FramedCodec::<LocalQr>::new());
    codecs.register(FramedCodec::<StackedQr>::new());
    codecs.register(FramedCodec::<CoreSvd>::new());
}

/// Registers kiln-array's kernels and codecs in the process-wide registries, once. Lowering an
/// array calls it, because converting a graph to portable form encodes fused literals (e.g. an
/// in-memory array's data) with the global codecs; worker programs call it at start-up.
pub fn ensure_registered() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| register_portable(KernelRegistry::global(), CodecRegistry::global()));
}

/// Why the frames of a value could not be read back (inside a [`CodecError::Malformed`]).
#[derive(Debug, thiserror::Error)]
enum FrameError {
    #[error("fewer frames than the value needs")]
    TooFew,
    #[error("more frames than the value has")]
    TooMany,
    #[error("frame holds {found}, expected {expected}")]
    DType { found: DType, expected: DType },
    #[error("{0}")]
    Length(String),
    #[error("byte {0} is not a bool")]
    NotBool(u8),
    #[error("axis length {0} does not fit in memory")]
    AxisTooLong(u64),
    #[error("shape {0:?} is too large")]
    TooLarge(Vec<usize>),
    #[error("frame has {found} bytes, a {dtype} block of shape {shape:?} needs {needed}")]
    Size { found: usize, dtype: DType, shape: Vec<usize>, needed: usize },
    #[error("{0}")]
    Shape(ndarray::ShapeError),
    #[error("expected {expected}: {error}")]
    Rank { expected: &'static str, error: ndarray::ShapeError },
    #[error("part shapes differ: {0:?}")]
    PartShapes(Vec<Vec<usize>>),
    #[error("offset {0} is out of range")]
    Offset(u64),
}

/// Element types as raw little-endian bytes (bools as one byte, 0 or 1).
trait Raw: Element {
    /// The frame of `values`, which lie inside `owner`'s value: a view of their memory when it
    /// is contiguous in C order, a copy otherwise.
    fn put_all(values: ArrayViewD<'_, Self>, owner: &Value) -> Frame;
    /// The elements of a frame, adopting a received buffer where the layout allows.
    fn get_all(frame: Frame) -> Result<Vec<Self>, FrameError>;
}

macro_rules! raw_numbers {
    ($($ty:ty),*) => {$(
        impl Raw for $ty {
            fn put_all(values: ArrayViewD<'_, Self>, owner: &Value) -> Frame {
                match values.as_slice() {
                    // SAFETY: `values` views an array inside `owner`'s value (the writer only
                    // walks the value being encoded), memory the value owns and never mutates
                    // while shared.
                    Some(contiguous) => unsafe { Frame::borrowing_pod(owner, contiguous) },
                    // Transposed or sliced blocks are written in C order, element by element.
                    None => {
                        let mut out = Vec::with_capacity(values.len() * std::mem::size_of::<$ty>());
                        values.iter().for_each(|v| Pod::put(*v, &mut out));
                        Frame::from(out)
                    }
                }
            }
            fn get_all(frame: Frame) -> Result<Vec<Self>, FrameError> {
                frame.into_pod_vec().map_err(FrameError::Length)
            }
        }
    )*};
}
raw_numbers!(i32, i64, f32, f64);

impl Raw for bool {
    fn put_all(values: ArrayViewD<'_, Self>, _owner: &Value) -> Frame {
        Frame::from(values.iter().map(|&b| b as u8).collect::<Vec<u8>>())
    }
    fn get_all(frame: Frame) -> Result<Vec<Self>, FrameError> {
        frame
            .iter()
            .map(|&b| match b {
                0 => Ok(false),
                1 => Ok(true),
                other => Err(FrameError::NotBool(other)),
            })
            .collect()
    }
}

/// Type and shape of one frame.
#[derive(serde::Serialize, serde::Deserialize)]
struct FrameHeader {
    dtype: DType,
    shape: Vec<u64>,
}

/// Collects the frames of one value.
struct Writer {
    /// The value being encoded: frames view its memory and keep a share of it.
    owner: Value,
    headers: Vec<FrameHeader>,
    frames: Vec<Frame>,
}

impl Writer {
    fn array<T: Raw, D: Dimension>(&mut self, a: ndarray::ArrayView<'_, T, D>) {
        self.headers.push(FrameHeader { dtype: T::DTYPE, shape: a.shape().iter().map(|&d| d as u64).collect() });
        self.frames.push(T::put_all(a.into_dyn(), &self.owner));
    }

    fn block(&mut self, b: &Block) {
        crate::with_block!(b, a => self.array(a.view()))
    }
}

/// Reads the frames of one value in the order they were written, validating each; owns them,
/// so received buffers become the arrays' memory.
struct Reader {
    headers: std::vec::IntoIter<FrameHeader>,
    frames: std::vec::IntoIter<Frame>,
}

impl Reader {
    fn next(&mut self) -> Result<(FrameHeader, Frame), FrameError> {
        match (self.headers.next(), self.frames.next()) {
            (Some(h), Some(f)) => Ok((h, f)),
            _ => Err(FrameError::TooFew),
        }
    }

    fn array<T: Raw>(&mut self) -> Result<ArrayD<T>, FrameError> {
        let (header, frame) = self.next()?;
        if header.dtype != T::DTYPE {
            return Err(FrameError::DType { found: header.dtype, expected: T::DTYPE });
        }
        typed_array(&header, frame)
    }

    fn block(&mut self) -> Result<Block, FrameError> {
        let (header, frame) = self.next()?;
        Ok(match header.dtype {
            DType::Bool => Block::Bool(typed_array(&header, frame)?),
            DType::I32 => Block::I32(typed_array(&header, frame)?),
            DType::I64 => Block::I64(typed_array(&header, frame)?),
            DType::F32 => Block::F32(typed_array(&header, frame)?),
            DType::F64 => Block::F64(typed_array(&header, frame)?),
        })
    }

    fn array2(&mut self) -> Result<ndarray::Array2<f64>, FrameError> {
        self.array::<f64>()?.into_dimensionality().map_err(|e| FrameError::Rank { expected: "a matrix", error: e })
    }

    fn done(mut self) -> Result<(), FrameError> {
        match (self.headers.next(), self.frames.next()) {
            (None, None) => Ok(()),
            _ => Err(FrameError::TooMany),
        }
    }
}

fn typed_array<T: Raw>(header: &FrameHeader, frame: Frame) -> Result<ArrayD<T>, FrameError> {
    let shape: Vec<usize> = header
        .shape
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| FrameError::AxisTooLong(d)))
        .collect::<Result<_, _>>()?;
    let bytes = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .and_then(|n| n.checked_mul(T::DTYPE.itemsize()))
        .ok_or_else(|| FrameError::TooLarge(shape.clone()))?;
    if frame.len() != bytes {
        return Err(FrameError::Size { found: frame.len(), dtype: T::DTYPE, shape, needed: bytes });
    }
    ArrayD::from_shape_vec(IxDyn(&shape), T::get_all(frame)?).map_err(FrameError::Shape)
}

/// A value that travels as a postcard header (`Meta` plus frame types and shapes) and frames.
trait Framed: Any + Send + Sync + Sized {
    const TAG: &'static str;
    type Meta: Serialize + DeserializeOwned;
    fn write(&self, w: &mut Writer) -> Self::Meta;
    fn read(meta: Self::Meta, r: &mut Reader) -> Result<Self, FrameError>;
    /// The payload size without encoding, when cheap to tell.
    fn nbytes(&self) -> Option<usize> {
        None
    }
}

struct FramedCodec<T>(PhantomData<fn() -> T>);

impl<T> FramedCodec<T> {
    fn new() -> Self {
        FramedCodec(PhantomData)
    }
}

impl<T: Framed> ValueCodec for FramedCodec<T> {
    fn tag(&self) -> &str {
        T::TAG
    }

    fn value_type(&self) -> TypeId {
        TypeId::of::<T>()
    }

    fn encode(&self, value: &Value) -> Result<Encoded, CodecError> {
        let v = value.downcast_ref::<T>().map_err(|_| CodecError::NoCodecForType(value.type_name()))?;
        let mut w = Writer { owner: value.clone(), headers: Vec::new(), frames: Vec::new() };
        let meta = v.write(&mut w);
        let header = postcard::to_allocvec(&(meta, &w.headers))
            .map_err(|e| CodecError::Malformed { tag: T::TAG.into(), message: e.to_string() })?;
        Ok(Encoded { tag: T::TAG.into(), header, frames: w.frames })
    }

    fn decode(&self, encoded: &Encoded) -> Result<Value, CodecError> {
        self.decode_owned(encoded.clone())
    }

    fn decode_owned(&self, encoded: Encoded) -> Result<Value, CodecError> {
        let malformed = |message: String| CodecError::Malformed { tag: T::TAG.into(), message };
        let bad_frames = |e: FrameError| malformed(e.to_string());
        let (meta, headers): (T::Meta, Vec<FrameHeader>) =
            postcard::from_bytes(&encoded.header).map_err(|e| malformed(e.to_string()))?;
        if headers.len() != encoded.frames.len() {
            return Err(malformed(format!("{} frame headers for {} frames", headers.len(), encoded.frames.len())));
        }
        let mut reader = Reader { headers: headers.into_iter(), frames: encoded.frames.into_iter() };
        let value = T::read(meta, &mut reader).map_err(bad_frames)?;
        reader.done().map_err(bad_frames)?;
        Ok(Value::new(value))
    }

    fn nbytes(&self, value: &Value) -> Option<usize> {
        value.downcast_ref::<T>().ok().and_then(Framed::nbytes)
    }
}

impl Framed for Block {
    const TAG: &'static str = "kiln.array.block";
    type Meta = ();
    fn write(&self, w: &mut Writer) {
        w.block(self);
    }
    fn nbytes(&self) -> Option<usize> {
        Some(Block::nbytes(self))
    }
    fn read((): (), r: &mut Reader) -> Result<Self, FrameError> {
        r.block()
    }
}

impl Framed for Arc<Block> {
    const TAG: &'static str = "kiln.array.block-arc";
    type Meta = ();
    fn write(&self, w: &mut Writer) {
        w.block(self);
    }
    fn nbytes(&self) -> Option<usize> {
        Some(Block::nbytes(self))
    }
    fn read((): (), r: &mut Reader) -> Result<Self, FrameError> {
        r.block().map(Arc::new)
    }
}

/// Which kind of reduction partial follows.
#[derive(serde::Serialize, serde::Deserialize)]
enum PartialKind {
    Acc,
    Moments,
    Arg,
}

impl Framed for Partial {
    const TAG: &'static str = "kiln.array.reduce-partial";
    type Meta = PartialKind;
    fn write(&self, w: &mut Writer) -> PartialKind {
        match self {
            Partial::Acc(b) => {
                w.block(b);
                PartialKind::Acc
            }
            Partial::Moments { n, mean, m2 } => {
                w.array(n.view());
                w.array(mean.view());
                w.array(m2.view());
                PartialKind::Moments
            }
            Partial::Arg { val, idx } => {
                w.array(val.view());
                w.array(idx.view());
                PartialKind::Arg
            }
        }
    }
    fn read(kind: PartialKind, r: &mut Reader) -> Result<Self, FrameError> {
        // Combining zips the parts of a partial: equal shapes are checked here, not trusted.
        let same = |shapes: &[&[usize]]| {
            if shapes.windows(2).all(|w| w[0] == w[1]) {
                Ok(())
            } else {
                Err(FrameError::PartShapes(shapes.iter().map(|s| s.to_vec()).collect()))
            }
        };
        Ok(match kind {
            PartialKind::Acc => Partial::Acc(r.block()?),
            PartialKind::Moments => {
                let (n, mean, m2) = (r.array()?, r.array()?, r.array()?);
                same(&[n.shape(), mean.shape(), m2.shape()])?;
                Partial::Moments { n, mean, m2 }
            }
            PartialKind::Arg => {
                let (val, idx) = (r.array()?, r.array()?);
                same(&[val.shape(), idx.shape()])?;
                Partial::Arg { val, idx }
            }
        })
    }
    fn nbytes(&self) -> Option<usize> {
        Some(match self {
            Partial::Acc(b) => b.nbytes(),
            Partial::Moments { n, mean, m2 } => 8 * (n.len() + mean.len() + m2.len()),
            Partial::Arg { val, idx } => 8 * (val.len() + idx.len()),
        })
    }
}

impl Framed for LocalQr {
    const TAG: &'static str = "kiln.array.tsqr-local";
    type Meta = ();
    fn write(&self, w: &mut Writer) {
        w.array(self.q.view());
        w.array(self.r.view());
    }
    fn read((): (), r: &mut Reader) -> Result<Self, FrameError> {
        Ok(LocalQr { q: r.array2()?, r: r.array2()? })
    }
    fn nbytes(&self) -> Option<usize> {
        Some(8 * (self.q.len() + self.r.len()))
    }
}

impl Framed for StackedQr {
    const TAG: &'static str = "kiln.array.tsqr-stacked";
    /// Where each row block's rows start in the stacked factor.
    type Meta = Vec<u64>;
    fn write(&self, w: &mut Writer) -> Vec<u64> {
        w.array(self.q2.view());
        w.array(self.r.view());
        self.offsets.iter().map(|&o| o as u64).collect()
    }
    fn read(offsets: Vec<u64>, r: &mut Reader) -> Result<Self, FrameError> {
        let offsets = offsets
            .into_iter()
            .map(|o| usize::try_from(o).map_err(|_| FrameError::Offset(o)))
            .collect::<Result<_, _>>()?;
        Ok(StackedQr { q2: r.array2()?, r: r.array2()?, offsets })
    }
    fn nbytes(&self) -> Option<usize> {
        Some(8 * (self.q2.len() + self.r.len()))
    }
}

impl Framed for CoreSvd {
    const TAG: &'static str = "kiln.array.svd-core";
    type Meta = ();
    fn write(&self, w: &mut Writer) {
        w.array(self.u.view());
        w.array(self.s.view());
        w.array(self.vt.view());
    }
    fn read((): (), r: &mut Reader) -> Result<Self, FrameError> {
        let u = r.array2()?;
        let s =
            r.array::<f64>()?.into_dimensionality().map_err(|e| FrameError::Rank { expected: "a vector", error: e })?;
        Ok(CoreSvd { u, s, vt: r.array2()? })
    }
    fn nbytes(&self) -> Option<usize> {
        Some(8 * (self.u.len() + self.s.len() + self.vt.len()))
    }
}
