//! Frames: the bulk bytes of an encoded value, moved between processes without needless copies.
//!
//! Fresh memory is what a large transfer costs most on a virtual machine: every page of a new
//! gigabyte buffer is faulted in and cleared (0.5-3 s per GiB on this project's 2-core VMs,
//! against 0.07 s to rewrite warm pages). So a value crosses the wire with one new buffer, not
//! three:
//!
//! - the sender's frame *borrows* the value's own memory ([`Frame::of_pod_vec`],
//!   [`Frame::borrowing`]) instead of copying it into a byte vector;
//! - the receiver gathers each large frame into its own 8-byte-aligned buffer ([`AlignedBuf`]),
//!   and a codec for 8-byte numbers *adopts* that buffer as its `Vec` ([`Frame::into_pod_vec`]).
//!
//! ```
//! use kiln_graph::frame::{AlignedBuf, Frame};
//! let mut buf = AlignedBuf::with_capacity(16);
//! buf.extend_from_slice(&1.5f64.to_le_bytes());
//! buf.extend_from_slice(&(-2.0f64).to_le_bytes());
//! let frame = Frame::from(buf);
//! assert_eq!(frame.len(), 16);
//! assert_eq!(frame.into_pod_vec::<f64>().unwrap(), vec![1.5, -2.0]);
//! ```

use std::fmt;
use std::mem::ManuallyDrop;
use std::ops::Deref;
use std::sync::Arc;

use bytes::Bytes;

use crate::codec::Pod;
use crate::value::Value;

/// Frames at least this large are received into their own [`AlignedBuf`] rather than as a
/// slice of the connection's read buffer: large enough that the extra allocation is noise,
/// small enough that every array block and partition of note is adopted without a copy.
pub const OWN_BUFFER_FROM: usize = 64 * 1024;

/// An owned byte buffer whose start is aligned for 8-byte numbers, filled front to back up
/// to a length fixed at creation.
///
/// Its allocation is a `Vec<u64>`, so a codec for `f64`, `i64` or `u64` can take it over as
/// its `Vec` without copying ([`AlignedBuf::into_pod_vec`]).
pub struct AlignedBuf {
    /// Never has a length: bytes are written through its pointer, within its capacity.
    words: Vec<u64>,
    /// Bytes written so far.
    len: usize,
    /// Bytes this buffer may hold.
    limit: usize,
}

impl AlignedBuf {
    /// An empty buffer for up to `bytes` bytes, allocated at once. Only address space is
    /// taken until bytes are written: pages are touched as they fill.
    pub fn with_capacity(bytes: usize) -> Self {
        AlignedBuf { words: Vec::with_capacity(bytes.div_ceil(8)), len: 0, limit: bytes }
    }

    /// An empty buffer for up to `bytes` bytes announced by a peer, allocated as they arrive
    /// (starting at 64 KiB, at least doubling): a length that is promised but never sent costs
    /// no more than twice what was. Large allocations are memory maps, which grow in place.
    pub fn growing(bytes: usize) -> Self {
        AlignedBuf { words: Vec::with_capacity(bytes.min(64 << 10).div_ceil(8)), len: 0, limit: bytes }
    }

    /// [`AlignedBuf::with_capacity`], or `None` when the allocation cannot be had (a length
    /// read from damaged data, say), instead of aborting the process.
    pub fn try_with_capacity(bytes: usize) -> Option<Self> {
        let mut words = Vec::new();
        words.try_reserve_exact(bytes.div_ceil(8)).ok()?;
        Some(AlignedBuf { words, len: 0, limit: bytes })
    }

    /// Bytes allocated (at least [`AlignedBuf::len`], at most the length fixed at creation
    /// rounded up to 8).
    pub fn allocated(&self) -> usize {
        self.words.capacity() * 8
    }

    /// Reads from `input` until the buffer is full or `input` ends; returns the bytes read.
    ///
    /// # Errors
    /// `input`'s errors.
    pub fn fill_from(&mut self, input: &mut impl std::io::Read) -> std::io::Result<usize> {
        // Through a small scratch buffer: `Read` wants initialized memory, and zeroing the
        // whole buffer first would touch every page twice.
        let mut scratch = vec![0u8; self.remaining().min(256 << 10)];
        let mut total = 0;
        while self.remaining() > 0 {
            let want = self.remaining().min(scratch.len());
            match input.read(&mut scratch[..want]) {
                Ok(0) => break,
                Ok(n) => total += self.extend_from_slice(&scratch[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(total)
    }

    /// Bytes written.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no byte has been written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes that still fit.
    pub fn remaining(&self) -> usize {
        self.limit - self.len
    }

    /// Appends as much of `bytes` as fits; returns how many bytes were taken.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(self.remaining());
        let have = self.words.capacity() * 8;
        if self.len + n > have {
            let want = (self.len + n).max(have.saturating_mul(2)).min(self.limit);
            // The vector's length is 0, so this asks for `want` bytes in all; growing keeps
            // the bytes written so far (the allocator moves or remaps the whole allocation).
            self.words.reserve_exact(want.div_ceil(8));
        }
        // SAFETY: `words` has capacity for at least `len + n` bytes (checked or grown above),
        // so the destination range lies inside the allocation; the source is a live slice that
        // cannot overlap memory this buffer owns exclusively.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), (self.words.as_mut_ptr() as *mut u8).add(self.len), n);
        }
        self.len += n;
        n
    }

    /// The bytes written so far.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the first `len` bytes of the allocation were written by `extend_from_slice`,
        // so they are initialized; the pointer is valid for the buffer's lifetime.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr() as *const u8, self.len) }
    }

    /// The bytes as numbers: the allocation itself when `T` has the layout of `u64` (`f64`,
    /// `i64`, `u64` on a little-endian machine), a copy otherwise.
    ///
    /// # Errors
    /// When the length is not a multiple of `T`'s size.
    pub fn into_pod_vec<T: Pod>(self) -> Result<Vec<T>, String> {
        if !self.len.is_multiple_of(T::SIZE) {
            return Err(format!("{} bytes is not a multiple of {}", self.len, T::SIZE));
        }
        let adoptable = cfg!(target_endian = "little")
            && std::mem::size_of::<T>() == std::mem::size_of::<u64>()
            && std::mem::align_of::<T>() == std::mem::align_of::<u64>();
        if !adoptable {
            return crate::codec::pod_from_bytes(self.as_slice());
        }
        let mut words = ManuallyDrop::new(self.words);
        let (ptr, capacity) = (words.as_mut_ptr(), words.capacity());
        // SAFETY: `T` has the size and alignment of `u64`, so an allocation made for `capacity`
        // `u64`s has exactly the layout `Vec<T>` expects for `capacity` elements; the first
        // `len / 8` elements were fully written and every bit pattern is a valid `T` (`Pod` is
        // sealed to primitive integers and floats); `ManuallyDrop` hands the allocation over
        // so it is freed once, by the new `Vec`.
        Ok(unsafe { Vec::from_raw_parts(ptr as *mut T, self.len / 8, capacity) })
    }
}

impl fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AlignedBuf({} of {} bytes)", self.len, self.limit)
    }
}

impl AsRef<[u8]> for AlignedBuf {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

/// One bulk payload of an encoded value (see [`Encoded`](crate::Encoded)).
///
/// Either bytes shared by reference ([`Bytes`]: a slice of a received packet, a view of a live
/// value, or a plain vector) or a received buffer that a codec may adopt ([`AlignedBuf`]).
/// Cloning is cheap in both cases.
#[derive(Clone)]
pub struct Frame(Repr);

#[derive(Clone)]
enum Repr {
    Shared(Bytes),
    Owned(Arc<AlignedBuf>),
}

impl Frame {
    /// The bytes of a `Vec<T>` value, shared with the value instead of copied; `None` when
    /// `value` is not a `Vec<T>`.
    pub fn of_pod_vec<T: Pod>(value: &Value) -> Option<Frame> {
        let vec = value.downcast_ref::<Vec<T>>().ok()?;
        // SAFETY: the slice is the heap buffer of the `Vec<T>` inside `value`, which no one
        // mutates while the value is shared (and the frame keeps a share).
        Some(unsafe { Frame::borrowing_pod(value, vec) })
    }

    /// A frame over `bytes` without copying them, keeping `owner` alive while the frame lives.
    ///
    /// # Safety
    /// `bytes` must lie in memory owned by the value behind `owner` (for example the buffer
    /// of an array inside it) and stay unmodified while `owner` is shared: values are
    /// immutable once shared, so memory reached through `&` from the value qualifies, a
    /// buffer the value merely points to and someone else may free or write does not.
    pub unsafe fn borrowing(owner: &Value, bytes: &[u8]) -> Frame {
        Frame(Repr::Shared(Bytes::from_owner(ValueBytes {
            _owner: owner.clone(),
            ptr: bytes.as_ptr(),
            len: bytes.len(),
        })))
    }

    /// The little-endian bytes of numbers inside `owner`'s value: the numbers' own memory on a
    /// little-endian machine (no copy), a converted copy elsewhere.
    ///
    /// # Safety
    /// As [`Frame::borrowing`]: `values` must lie in memory owned by the value behind `owner`.
    pub unsafe fn borrowing_pod<T: Pod>(owner: &Value, values: &[T]) -> Frame {
        if cfg!(target_endian = "little") {
            // SAFETY: the caller guarantees `values` lies in memory `owner` owns.
            unsafe { Frame::borrowing(owner, crate::codec::pod_bytes(values)) }
        } else {
            Frame::from(crate::codec::pod_to_bytes(values))
        }
    }

    /// The frame as [`Bytes`] for a socket write: no copy in either case.
    pub fn into_bytes(self) -> Bytes {
        match self.0 {
            Repr::Shared(bytes) => bytes,
            Repr::Owned(buf) => Bytes::from_owner(SharedBuf(buf)),
        }
    }

    /// The bytes as numbers, adopting a received buffer when this frame is its only holder and
    /// `T` has the layout of `u64`, copying otherwise.
    ///
    /// # Errors
    /// When the length is not a multiple of `T`'s size.
    pub fn into_pod_vec<T: Pod>(self) -> Result<Vec<T>, String> {
        match self.0 {
            Repr::Owned(buf) => match Arc::try_unwrap(buf) {
                Ok(buf) => buf.into_pod_vec(),
                Err(shared) => crate::codec::pod_from_bytes(shared.as_slice()),
            },
            Repr::Shared(bytes) => crate::codec::pod_from_bytes(&bytes),
        }
    }
}

/// An empty frame (what [`std::mem::take`] leaves behind).
impl Default for Frame {
    fn default() -> Frame {
        Frame(Repr::Shared(Bytes::new()))
    }
}

impl Deref for Frame {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.0 {
            Repr::Shared(bytes) => bytes,
            Repr::Owned(buf) => buf.as_slice(),
        }
    }
}

impl AsRef<[u8]> for Frame {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl PartialEq for Frame {
    fn eq(&self, other: &Frame) -> bool {
        **self == **other
    }
}

impl Eq for Frame {}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Repr::Shared(bytes) => write!(f, "Frame({} bytes)", bytes.len()),
            Repr::Owned(buf) => write!(f, "Frame({} bytes, own buffer)", buf.len()),
        }
    }
}

impl From<Vec<u8>> for Frame {
    fn from(bytes: Vec<u8>) -> Frame {
        Frame(Repr::Shared(Bytes::from(bytes)))
    }
}

impl From<Bytes> for Frame {
    fn from(bytes: Bytes) -> Frame {
        Frame(Repr::Shared(bytes))
    }
}

impl From<AlignedBuf> for Frame {
    fn from(buf: AlignedBuf) -> Frame {
        Frame(Repr::Owned(Arc::new(buf)))
    }
}

/// As a byte string: frames of literals travel inside task specs (small values).
impl serde::Serialize for Frame {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self)
    }
}

impl<'de> serde::Deserialize<'de> for Frame {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Frame, D::Error> {
        struct BytesVisitor;
        impl<'de> serde::de::Visitor<'de> for BytesVisitor {
            type Value = Frame;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Frame, E> {
                Ok(Frame::from(bytes.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, bytes: Vec<u8>) -> Result<Frame, E> {
                Ok(Frame::from(bytes))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Frame, A::Error> {
                let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(b) = seq.next_element::<u8>()? {
                    bytes.push(b);
                }
                Ok(Frame::from(bytes))
            }
        }
        deserializer.deserialize_byte_buf(BytesVisitor)
    }
}

/// Bytes inside a value, kept alive by a share of it.
struct ValueBytes {
    _owner: Value,
    ptr: *const u8,
    len: usize,
}

// SAFETY: the pointer refers to memory owned by `_owner`, a `Send + Sync` value that is never
// mutated while shared (see `Frame::borrowing`), so reading it from any thread is sound.
unsafe impl Send for ValueBytes {}
// SAFETY: as above; `ValueBytes` only ever hands out shared references to the bytes.
unsafe impl Sync for ValueBytes {}

impl AsRef<[u8]> for ValueBytes {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `ptr` and `len` came from a live slice inside `_owner`, which this struct
        // keeps alive and which is not mutated while shared (`Frame::borrowing`'s contract).
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// A received buffer shared with a socket write.
struct SharedBuf(Arc<AlignedBuf>);

impl AsRef<[u8]> for SharedBuf {
    fn as_ref(&self) -> &[u8] {
        self.0.as_slice()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn an_adopted_buffer_is_the_same_allocation() {
        let mut buf = AlignedBuf::with_capacity(24);
        for x in [1.0f64, 2.0, 3.0] {
            buf.extend_from_slice(&x.to_le_bytes());
        }
        let before = buf.as_slice().as_ptr();
        let v = Frame::from(buf).into_pod_vec::<f64>().unwrap();
        assert_eq!(v, vec![1.0, 2.0, 3.0]);
        if cfg!(target_endian = "little") {
            assert_eq!(v.as_ptr() as *const u8, before, "the buffer was copied instead of adopted");
        }
    }

    #[test]
    fn a_shared_received_buffer_is_copied_not_taken() {
        let mut buf = AlignedBuf::with_capacity(8);
        buf.extend_from_slice(&7i64.to_le_bytes());
        let frame = Frame::from(buf);
        let on_the_socket = frame.clone().into_bytes();
        assert_eq!(frame.into_pod_vec::<i64>().unwrap(), vec![7]);
        assert_eq!(&on_the_socket[..], &7i64.to_le_bytes());
    }

    #[test]
    fn a_view_of_a_vector_shares_its_memory_and_keeps_it_alive() {
        let value = Value::new(vec![0.5f64, -1.25]);
        let frame = Frame::of_pod_vec::<f64>(&value).unwrap();
        if cfg!(target_endian = "little") {
            let inside = value.downcast_ref::<Vec<f64>>().unwrap().as_ptr() as *const u8;
            assert_eq!(frame.as_ptr(), inside);
        }
        drop(value);
        let bytes = frame.into_bytes();
        assert_eq!(&bytes[..8], &0.5f64.to_le_bytes());
        assert!(Frame::of_pod_vec::<f32>(&Value::new(vec![1.0f64])).is_none());
    }

    #[test]
    fn a_growing_buffer_allocates_with_what_arrives_and_keeps_it() {
        let limit = 1 << 20;
        let mut buf = AlignedBuf::growing(limit);
        assert!(buf.allocated() <= 64 << 10);
        let data: Vec<u8> = (0..limit).map(|i| (i % 253) as u8).collect();
        let mut fed = 0;
        for piece in data.chunks(10_000) {
            fed += buf.extend_from_slice(piece);
            assert!(buf.allocated() <= (2 * fed).max(64 << 10) + 8, "{} allocated for {fed}", buf.allocated());
        }
        assert_eq!(buf.as_slice(), &data[..]);
        assert_eq!(buf.allocated(), limit);
    }

    #[test]
    fn a_buffer_takes_no_more_than_its_capacity() {
        let mut buf = AlignedBuf::with_capacity(5);
        assert_eq!(buf.extend_from_slice(b"abc"), 3);
        assert_eq!(buf.extend_from_slice(b"defg"), 2);
        assert_eq!(buf.remaining(), 0);
        assert_eq!(buf.as_slice(), b"abcde");
        assert!(Frame::from(buf).into_pod_vec::<u32>().unwrap_err().contains("not a multiple of 4"));
    }

    proptest! {
        #[test]
        fn every_number_type_survives_adoption_or_copy(words in prop::collection::vec(any::<u64>(), 0..64), cut in 0usize..9) {
            let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
            let bytes = &bytes[..bytes.len().saturating_sub(cut)];
            let mut buf = AlignedBuf::with_capacity(bytes.len());
            buf.extend_from_slice(bytes);
            let expected = crate::codec::pod_from_bytes::<f64>(bytes);
            prop_assert_eq!(Frame::from(buf).into_pod_vec::<f64>().map(|v| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>()),
                            expected.map(|v| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>()));
            let mut buf = AlignedBuf::with_capacity(bytes.len());
            buf.extend_from_slice(bytes);
            prop_assert_eq!(Frame::from(buf).into_pod_vec::<u16>(), crate::codec::pod_from_bytes::<u16>(bytes));
        }
    }
}
