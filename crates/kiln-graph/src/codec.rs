//! Codecs: how values cross a process boundary.
//!
//! In process, values are shared by reference. When one must travel (to a worker, to disk), its
//! codec turns it into a small header plus raw frames: numeric buffers go as little-endian bytes
//! in their own frame, never re-encoded inside a message. Each value type registers one codec
//! under a stable tag; decoding looks the tag up.
//!
//! ```
//! use kiln_graph::{CodecRegistry, Value};
//! let codecs = CodecRegistry::with_builtins();
//! let encoded = codecs.encode(&Value::new(vec![1.0f64, 2.5])).unwrap();
//! assert_eq!(encoded.tag, "vec<f64>");
//! assert_eq!(encoded.frames[0].len(), 16);
//! let back = codecs.decode(&encoded).unwrap();
//! assert_eq!(back.downcast_ref::<Vec<f64>>().unwrap(), &vec![1.0, 2.5]);
//! ```

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::frame::Frame;
use crate::value::Value;

/// A value in transportable form: a tag naming its codec, a small header and raw frames.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Encoded {
    /// The codec's tag, e.g. `"i64"` or `"vec<f64>"`.
    pub tag: String,
    /// Small metadata (postcard), e.g. a scalar or a shape.
    pub header: Vec<u8>,
    /// Bulk payloads, e.g. a little-endian buffer of numbers: views of the value's own memory
    /// when encoding, received buffers a codec may adopt when decoding ([`Frame`]).
    pub frames: Vec<Frame>,
}

impl Encoded {
    /// Total payload bytes (header plus frames).
    pub fn nbytes(&self) -> usize {
        self.header.len() + self.frames.iter().map(|f| f.len()).sum::<usize>()
    }
}

/// A value could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// No codec is registered for the value's type.
    #[error("no codec registered for values of type {0}; register one with CodecRegistry::register")]
    NoCodecForType(&'static str),
    /// No codec is registered under the tag.
    #[error("no codec registered under tag {0:?}")]
    UnknownTag(String),
    /// The bytes do not form a valid value.
    #[error("malformed {tag} value: {message}")]
    Malformed {
        /// The codec's tag.
        tag: String,
        /// What is wrong.
        message: String,
    },
}

/// Encodes and decodes values of one type.
pub trait ValueCodec: Send + Sync + 'static {
    /// The stable tag written with every encoded value.
    fn tag(&self) -> &str;
    /// The type this codec handles.
    fn value_type(&self) -> TypeId;
    /// Encodes a value of this codec's type.
    ///
    /// # Errors
    /// When the value cannot be represented.
    fn encode(&self, value: &Value) -> Result<Encoded, CodecError>;
    /// Decodes a value.
    ///
    /// # Errors
    /// [`CodecError::Malformed`] for bytes that do not form a value.
    fn decode(&self, encoded: &Encoded) -> Result<Value, CodecError>;

    /// Decodes a value it may take the frames of: codecs of large buffers override it to adopt
    /// a received frame instead of copying it ([`Frame::into_pod_vec`]).
    ///
    /// # Errors
    /// As [`ValueCodec::decode`].
    fn decode_owned(&self, encoded: Encoded) -> Result<Value, CodecError> {
        self.decode(&encoded)
    }

    /// The value's size in bytes without encoding it (schedulers weigh data movement with it);
    /// `None` when the codec cannot tell cheaply.
    fn nbytes(&self, _value: &Value) -> Option<usize> {
        None
    }
}

/// A codec for any serde type: the whole value goes in the header (for small values).
pub struct SerdeCodec<T> {
    tag: String,
    _t: std::marker::PhantomData<fn() -> T>,
}

impl<T> SerdeCodec<T> {
    /// A serde codec under `tag`.
    pub fn new(tag: &str) -> Self {
        SerdeCodec { tag: tag.to_string(), _t: std::marker::PhantomData }
    }
}

impl<T: Serialize + DeserializeOwned + Any + Send + Sync> ValueCodec for SerdeCodec<T> {
    fn tag(&self) -> &str {
        &self.tag
    }
    fn value_type(&self) -> TypeId {
        TypeId::of::<T>()
    }
    fn encode(&self, value: &Value) -> Result<Encoded, CodecError> {
        let v = value.downcast_ref::<T>().map_err(|_| CodecError::NoCodecForType(value.type_name()))?;
        let header = postcard::to_allocvec(v).map_err(|e| self.malformed(e))?;
        Ok(Encoded { tag: self.tag.clone(), header, frames: Vec::new() })
    }
    fn decode(&self, encoded: &Encoded) -> Result<Value, CodecError> {
        postcard::from_bytes::<T>(&encoded.header).map(Value::new).map_err(|e| self.malformed(e))
    }
    fn nbytes(&self, _value: &Value) -> Option<usize> {
        // Serde codecs carry small values: the inline size is the estimate (a lower bound for
        // values that own heap data), where encoding them all would cost more than it tells.
        Some(std::mem::size_of::<T>())
    }
}

impl<T> SerdeCodec<T> {
    fn malformed(&self, e: impl std::fmt::Display) -> CodecError {
        CodecError::Malformed { tag: self.tag.clone(), message: e.to_string() }
    }
}

/// Keeps [`Pod`] closed: only the primitive numbers below implement it.
mod sealed {
    /// Implemented exactly for the types the `pod!` macro lists.
    pub trait Sealed {}
}

/// Plain numbers that travel as raw little-endian bytes.
///
/// Sealed: [`pod_to_bytes`] reads a value's memory as bytes, which is sound only for types
/// with no padding and no invalid bit patterns. A safe trait that anyone could implement
/// would let safe code read a padded struct's uninitialized bytes, so the impls are fixed to
/// the primitive integers and floats here.
pub trait Pod: sealed::Sealed + Copy + Any + Send + Sync {
    /// Size in bytes.
    const SIZE: usize;
    /// Appends the little-endian encoding.
    fn put(self, out: &mut Vec<u8>);
    /// Reads from exactly `SIZE` bytes.
    fn get(bytes: &[u8]) -> Self;
}

macro_rules! pod {
    ($($ty:ty),*) => {$(
        impl sealed::Sealed for $ty {}
        impl Pod for $ty {
            const SIZE: usize = std::mem::size_of::<$ty>();
            fn put(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn get(bytes: &[u8]) -> Self {
                let mut a = [0u8; std::mem::size_of::<$ty>()];
                a.copy_from_slice(bytes);
                <$ty>::from_le_bytes(a)
            }
        }
    )*};
}
pod!(u8, u16, u32, u64, i8, i16, i32, i64, f32, f64);

/// The memory of a slice of numbers as bytes: the wire encoding on a little-endian machine.
pub(crate) fn pod_bytes<T: Pod>(values: &[T]) -> &[u8] {
    // SAFETY: `Pod` is sealed and implemented only for primitive integers and floats, which
    // have no padding bytes, so every byte of `values` is initialized; the pointer and length
    // come from a live slice and `u8` has alignment 1.
    unsafe { std::slice::from_raw_parts(values.as_ptr() as *const u8, std::mem::size_of_val(values)) }
}

/// Encodes a slice of numbers as one little-endian frame.
pub fn pod_to_bytes<T: Pod>(values: &[T]) -> Vec<u8> {
    if cfg!(target_endian = "little") {
        // On a little-endian target the in-memory bytes are the wire bytes.
        pod_bytes(values).to_vec()
    } else {
        let mut out = Vec::with_capacity(values.len() * T::SIZE);
        values.iter().for_each(|v| v.put(&mut out));
        out
    }
}

/// Decodes a little-endian frame of numbers.
///
/// # Errors
/// When the length is not a multiple of the element size.
pub fn pod_from_bytes<T: Pod>(bytes: &[u8]) -> Result<Vec<T>, String> {
    if !bytes.len().is_multiple_of(T::SIZE) {
        return Err(format!("{} bytes is not a multiple of {}", bytes.len(), T::SIZE));
    }
    let n = bytes.len() / T::SIZE;
    if cfg!(target_endian = "little") {
        let mut out = Vec::<T>::with_capacity(n);
        // SAFETY: `out` has room for `n` elements, `n * SIZE` bytes, which is `bytes.len()`;
        // the regions cannot overlap (`out` is fresh); every bit pattern is a valid `T` (`Pod`
        // is sealed to primitive integers and floats) and on a little-endian target the wire
        // bytes are the in-memory bytes, so after the copy all `n` elements are initialized.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), out.as_mut_ptr() as *mut u8, bytes.len());
            out.set_len(n);
        }
        return Ok(out);
    }
    Ok(bytes.chunks_exact(T::SIZE).map(T::get).collect())
}

/// A codec for `Vec<T>` of plain numbers: no header, one raw frame.
pub struct PodVecCodec<T> {
    tag: String,
    _t: std::marker::PhantomData<fn() -> T>,
}

impl<T> PodVecCodec<T> {
    /// A raw-buffer codec under `tag`.
    pub fn new(tag: &str) -> Self {
        PodVecCodec { tag: tag.to_string(), _t: std::marker::PhantomData }
    }
}

impl<T: Pod> ValueCodec for PodVecCodec<T> {
    fn tag(&self) -> &str {
        &self.tag
    }
    fn value_type(&self) -> TypeId {
        TypeId::of::<Vec<T>>()
    }
    fn encode(&self, value: &Value) -> Result<Encoded, CodecError> {
        // The frame shares the vector's memory: a transfer or spill reads it in place.
        let frame = Frame::of_pod_vec::<T>(value).ok_or(CodecError::NoCodecForType(value.type_name()))?;
        Ok(Encoded { tag: self.tag.clone(), header: Vec::new(), frames: vec![frame] })
    }
    fn decode(&self, encoded: &Encoded) -> Result<Value, CodecError> {
        self.decode_owned(Encoded { tag: String::new(), header: Vec::new(), frames: encoded.frames.clone() })
    }
    fn decode_owned(&self, encoded: Encoded) -> Result<Value, CodecError> {
        let malformed = |message: String| CodecError::Malformed { tag: self.tag.clone(), message };
        let count = encoded.frames.len();
        let Ok::<[Frame; 1], _>([frame]) = encoded.frames.try_into() else {
            return Err(malformed(format!("expected 1 frame, got {count}")));
        };
        frame.into_pod_vec::<T>().map(Value::new).map_err(malformed)
    }
    fn nbytes(&self, value: &Value) -> Option<usize> {
        value.downcast_ref::<Vec<T>>().ok().map(|v| std::mem::size_of_val(v.as_slice()))
    }
}

/// Codecs by type and by tag.
#[derive(Default)]
pub struct CodecRegistry {
    inner: RwLock<Codecs>,
}

#[derive(Default)]
struct Codecs {
    by_type: HashMap<TypeId, Arc<dyn ValueCodec>>,
    by_tag: HashMap<String, Arc<dyn ValueCodec>>,
}

impl CodecRegistry {
    /// A registry with no codecs.
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry with codecs for the built-in value types: `()`, `bool`, the integer and float
    /// scalars, `String`, `Vec<String>` and `Vec` of every number type.
    pub fn with_builtins() -> Self {
        let r = Self::new();
        r.register(SerdeCodec::<()>::new("unit"));
        r.register(SerdeCodec::<bool>::new("bool"));
        r.register(SerdeCodec::<String>::new("string"));
        r.register(SerdeCodec::<Vec<String>>::new("vec<string>"));
        r.register(SerdeCodec::<Vec<bool>>::new("vec<bool>"));
        macro_rules! numbers {
            ($($ty:ty => $name:literal),*) => {$(
                r.register(SerdeCodec::<$ty>::new($name));
                r.register(PodVecCodec::<$ty>::new(concat!("vec<", $name, ">")));
            )*};
        }
        numbers!(u8 => "u8", u16 => "u16", u32 => "u32", u64 => "u64", i8 => "i8", i16 => "i16",
                 i32 => "i32", i64 => "i64", f32 => "f32", f64 => "f64");
        r
    }

    /// The process-wide registry, with the built-ins; collections add theirs on first use.
    pub fn global() -> &'static CodecRegistry {
        static GLOBAL: OnceLock<CodecRegistry> = OnceLock::new();
        GLOBAL.get_or_init(CodecRegistry::with_builtins)
    }

    /// Adds (or replaces) a codec.
    pub fn register(&self, codec: impl ValueCodec) {
        let codec: Arc<dyn ValueCodec> = Arc::new(codec);
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        inner.by_type.insert(codec.value_type(), Arc::clone(&codec));
        inner.by_tag.insert(codec.tag().to_string(), codec);
    }

    /// Encodes a value with the codec of its type.
    ///
    /// # Errors
    /// [`CodecError::NoCodecForType`] when its type has no codec.
    pub fn encode(&self, value: &Value) -> Result<Encoded, CodecError> {
        let codec = self
            .inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .by_type
            .get(&value.type_id())
            .cloned()
            .ok_or(CodecError::NoCodecForType(value.type_name()))?;
        codec.encode(value)
    }

    /// The size of a value in bytes as its codec reports it without encoding it; `None` when
    /// the codec cannot tell cheaply or there is no codec. (Never encodes: engines ask for every
    /// task result.)
    pub fn nbytes(&self, value: &Value) -> Option<usize> {
        let codec = self.inner.read().unwrap_or_else(|p| p.into_inner()).by_type.get(&value.type_id()).cloned()?;
        codec.nbytes(value)
    }

    /// The codec registered for values of type `type_id`, if any. Engines that size every task
    /// result look a type's codec up once and keep it, instead of taking the registry's lock
    /// per value.
    ///
    /// ```
    /// use std::any::TypeId;
    /// use kiln_graph::{CodecRegistry, Value};
    /// let codecs = CodecRegistry::with_builtins();
    /// let codec = codecs.codec_for(TypeId::of::<Vec<f64>>()).unwrap();
    /// assert_eq!(codec.nbytes(&Value::new(vec![0.0f64; 4])), Some(32));
    /// assert!(codecs.codec_for(TypeId::of::<std::time::Instant>()).is_none());
    /// ```
    pub fn codec_for(&self, type_id: TypeId) -> Option<Arc<dyn ValueCodec>> {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).by_type.get(&type_id).cloned()
    }

    /// Decodes a value with the codec its tag names.
    ///
    /// # Errors
    /// [`CodecError::UnknownTag`] or [`CodecError::Malformed`].
    pub fn decode(&self, encoded: &Encoded) -> Result<Value, CodecError> {
        self.codec_for_tag(&encoded.tag)?.decode(encoded)
    }

    /// Decodes a value whose frames the codec may take over: a received buffer becomes the
    /// value's own memory instead of being copied into it.
    ///
    /// # Errors
    /// [`CodecError::UnknownTag`] or [`CodecError::Malformed`].
    pub fn decode_owned(&self, encoded: Encoded) -> Result<Value, CodecError> {
        self.codec_for_tag(&encoded.tag)?.decode_owned(encoded)
    }

    fn codec_for_tag(&self, tag: &str) -> Result<Arc<dyn ValueCodec>, CodecError> {
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .by_tag
            .get(tag)
            .cloned()
            .ok_or_else(|| CodecError::UnknownTag(tag.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn roundtrip<T: Any + Send + Sync + PartialEq + std::fmt::Debug + Clone>(v: T) {
        let r = CodecRegistry::with_builtins();
        let e = r.encode(&Value::new(v.clone())).unwrap();
        let back = r.decode(&e).unwrap();
        assert_eq!(back.downcast_ref::<T>().unwrap(), &v);
    }

    #[test]
    fn builtins_roundtrip() {
        roundtrip(());
        roundtrip(true);
        roundtrip(-5i64);
        roundtrip(3.25f64);
        roundtrip(f64::NAN.to_bits());
        roundtrip(String::from("héllo"));
        roundtrip(vec![String::from("a"), String::new()]);
        roundtrip(vec![1i32, -2, 3]);
        roundtrip(vec![0.5f32; 7]);
        roundtrip(Vec::<u8>::new());
    }

    #[test]
    fn nan_payload_survives() {
        let r = CodecRegistry::with_builtins();
        let e = r.encode(&Value::new(vec![f64::NAN, -0.0])).unwrap();
        let back = r.decode(&e).unwrap();
        let v = back.downcast_ref::<Vec<f64>>().unwrap();
        assert!(v[0].is_nan());
        assert!(v[1] == 0.0 && v[1].is_sign_negative());
    }

    #[test]
    fn errors_are_clear() {
        let r = CodecRegistry::with_builtins();
        struct Opaque;
        assert!(matches!(r.encode(&Value::new(Opaque)), Err(CodecError::NoCodecForType(_))));
        let bad = Encoded { tag: "vec<f64>".into(), header: vec![], frames: vec![vec![0; 7].into()] };
        assert!(r.decode(&bad).unwrap_err().to_string().contains("not a multiple of 8"));
        let unknown = Encoded { tag: "nope".into(), ..Default::default() };
        assert_eq!(r.decode(&unknown).unwrap_err(), CodecError::UnknownTag("nope".into()));
        let truncated = Encoded { tag: "string".into(), header: vec![200], frames: vec![] };
        assert!(matches!(r.decode(&truncated), Err(CodecError::Malformed { .. })));
    }

    proptest! {
        #[test]
        fn decoding_garbage_never_panics(tag in prop::sample::select(vec!["i64", "string", "vec<f64>", "vec<string>", "bool"]),
                                         header in prop::collection::vec(any::<u8>(), 0..32),
                                         frames in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..32), 0..3)) {
            let r = CodecRegistry::with_builtins();
            let _ = r.decode(&Encoded { tag: tag.to_string(), header, frames: frames.into_iter().map(Frame::from).collect() });
        }

        #[test]
        fn f64_vectors_roundtrip(v in prop::collection::vec(any::<f64>(), 0..100)) {
            let r = CodecRegistry::with_builtins();
            let back = r.decode(&r.encode(&Value::new(v.clone())).unwrap()).unwrap();
            let got = back.downcast_ref::<Vec<f64>>().unwrap();
            prop_assert_eq!(got.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), v.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
        }
    }
}
