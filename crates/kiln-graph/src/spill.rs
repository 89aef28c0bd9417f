//! The format of a value at rest (a spill file), written and read as a stream.
//!
//! Both schedulers spill values under memory pressure, exactly when memory is shortest, so the
//! format never holds more than one encoded copy of a value beside the value: the codec's frames
//! go through an LZ4 frame stream as they are, with no whole-file buffer of the serialized value
//! nor of its compressed form. A checksum over everything written makes a damaged or cut file
//! an error, not a wrong value.
//!
//! Layout: the magic `KSPL1`, then an LZ4 frame stream of: the metadata's length (u32, little
//! endian), the metadata (postcard: tag, header, frame lengths), the frames' bytes in order,
//! and the XXH3-64 of all of those (u64, little endian). The checksum is kiln's own because an
//! LZ4 frame stream cut at a block boundary reads as a clean end.
//!
//! ```
//! use kiln_graph::{Value, spill};
//! let mut file = Vec::new();
//! spill::write_value(&Value::new(vec![1.5f64; 1000]), &mut file).unwrap();
//! let back = spill::read_value(file.as_slice()).unwrap();
//! assert_eq!(back.downcast_ref::<Vec<f64>>().unwrap(), &vec![1.5; 1000]);
//! ```

use std::io::{Read, Write};

use xxhash_rust::xxh3::Xxh3Default;

use crate::codec::{CodecRegistry, Encoded};
use crate::frame::{AlignedBuf, Frame, OWN_BUFFER_FROM};
use crate::value::Value;

const MAGIC: &[u8; 5] = b"KSPL1";
/// Metadata (tag, small header, frame lengths) beyond this is a damaged file, not a value.
const MAX_METADATA: u32 = 64 << 20;

/// A value could not be written to or read from its at-rest form.
#[derive(Debug, thiserror::Error)]
pub enum SpillFormatError {
    /// The value's type has no codec (or its codec refused it): it cannot leave memory.
    #[error("the value cannot be encoded: {0}")]
    Unencodable(String),
    /// Reading or writing the stream failed (a full disk, a vanished file).
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The bytes are not a value written by [`write_value`].
    #[error("corrupt spill data: {0}")]
    Corrupt(String),
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Metadata {
    tag: String,
    header: Vec<u8>,
    frame_lengths: Vec<u64>,
}

/// Writes `value` to `out` in the at-rest format; returns the bytes written to `out`.
///
/// # Errors
/// [`SpillFormatError::Unencodable`] for a value without a codec, [`SpillFormatError::Io`]
/// when `out` fails.
pub fn write_value(value: &Value, mut out: impl Write) -> Result<u64, SpillFormatError> {
    let Encoded { tag, header, frames } =
        CodecRegistry::global().encode(value).map_err(|e| SpillFormatError::Unencodable(e.to_string()))?;
    let frame_lengths = frames.iter().map(|f| f.len() as u64).collect();
    let metadata = postcard::to_allocvec(&Metadata { tag, header, frame_lengths })
        .map_err(|e| SpillFormatError::Unencodable(e.to_string()))?;
    let metadata_len = u32::try_from(metadata.len())
        .ok()
        .filter(|&n| n <= MAX_METADATA)
        .ok_or_else(|| SpillFormatError::Unencodable(format!("{} bytes of metadata", metadata.len())))?;
    out.write_all(MAGIC)?;
    let mut counted = CountingWriter { inner: out, written: MAGIC.len() as u64 };
    let mut lz4 = lz4_flex::frame::FrameEncoder::new(&mut counted);
    let mut hash = Xxh3Default::new();
    for part in [&metadata_len.to_le_bytes()[..], &metadata].into_iter().chain(frames.iter().map(|f| &f[..])) {
        hash.update(part);
        lz4.write_all(part)?;
    }
    lz4.write_all(&hash.digest().to_le_bytes())?;
    lz4.finish().map_err(std::io::Error::from)?;
    counted.inner.flush()?;
    Ok(counted.written)
}

/// Reads a value written by [`write_value`].
///
/// # Errors
/// [`SpillFormatError::Corrupt`] for bytes that are not such a value (a wrong magic, a failed
/// checksum, a truncated stream, an unknown tag), [`SpillFormatError::Io`] when reading fails.
pub fn read_value(mut input: impl Read) -> Result<Value, SpillFormatError> {
    let corrupt = |what: String| SpillFormatError::Corrupt(what);
    let mut magic = [0u8; MAGIC.len()];
    input.read_exact(&mut magic).map_err(|e| truncated_or(e, "no magic"))?;
    if &magic != MAGIC {
        return Err(corrupt("not a kiln spill file (wrong magic)".into()));
    }
    let mut lz4 = lz4_flex::frame::FrameDecoder::new(input);
    let mut hash = Xxh3Default::new();
    let mut len = [0u8; 4];
    lz4.read_exact(&mut len).map_err(|e| truncated_or(e, "no metadata length"))?;
    hash.update(&len);
    let len = u32::from_le_bytes(len);
    if len > MAX_METADATA {
        return Err(corrupt(format!("{len} bytes of metadata")));
    }
    let metadata = read_exactly(&mut lz4, len as u64, "metadata")?;
    hash.update(&metadata);
    let Metadata { tag, header, frame_lengths } =
        postcard::from_bytes(&metadata).map_err(|e| corrupt(format!("metadata: {e}")))?;
    let mut frames = Vec::with_capacity(frame_lengths.len().min(1024));
    for (i, &n) in frame_lengths.iter().enumerate() {
        let frame = read_frame(&mut lz4, n, &format!("frame {i}"))?;
        hash.update(&frame);
        frames.push(frame);
    }
    let mut checksum = [0u8; 8];
    lz4.read_exact(&mut checksum).map_err(|e| truncated_or(e, "no checksum"))?;
    if u64::from_le_bytes(checksum) != hash.digest() {
        return Err(corrupt("checksum mismatch".into()));
    }
    let mut rest = [0u8; 1];
    match lz4.read(&mut rest) {
        Ok(0) => {}
        Ok(_) => return Err(corrupt("bytes after the last frame".into())),
        Err(e) => return Err(truncated_or(e, "end of stream")),
    }
    CodecRegistry::global().decode_owned(Encoded { tag, header, frames }).map_err(|e| corrupt(e.to_string()))
}

/// `n` bytes from `input`; a length no stream could hold is a damaged file, found before the
/// allocation rather than by it.
fn read_exactly(input: &mut impl Read, n: u64, what: &str) -> Result<Vec<u8>, SpillFormatError> {
    let mut buf = Vec::new();
    let size = usize::try_from(n).map_err(|_| SpillFormatError::Corrupt(format!("{what}: {n} bytes")))?;
    buf.try_reserve_exact(size).map_err(|_| SpillFormatError::Corrupt(format!("{what}: {n} bytes")))?;
    let got = input.take(n).read_to_end(&mut buf).map_err(|e| truncated_or(e, what))?;
    if got as u64 != n {
        return Err(SpillFormatError::Corrupt(format!("{what}: {got} of {n} bytes, then the end")));
    }
    Ok(buf)
}

/// One frame of `n` bytes; a large one in its own aligned buffer, which the value's codec can
/// adopt instead of copying (reading a value back then allocates it once).
fn read_frame(input: &mut impl Read, n: u64, what: &str) -> Result<Frame, SpillFormatError> {
    let size = usize::try_from(n).map_err(|_| SpillFormatError::Corrupt(format!("{what}: {n} bytes")))?;
    if size < OWN_BUFFER_FROM {
        return read_exactly(input, n, what).map(Frame::from);
    }
    let mut buf =
        AlignedBuf::try_with_capacity(size).ok_or_else(|| SpillFormatError::Corrupt(format!("{what}: {n} bytes")))?;
    let got = buf.fill_from(input).map_err(|e| truncated_or(e, what))?;
    if got != size {
        return Err(SpillFormatError::Corrupt(format!("{what}: {got} of {n} bytes, then the end")));
    }
    Ok(Frame::from(buf))
}

/// Decoder failures (bad checksums, malformed blocks, early ends) mean damaged data; other I/O
/// errors stay I/O errors.
fn truncated_or(e: std::io::Error, what: &str) -> SpillFormatError {
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::InvalidData => {
            SpillFormatError::Corrupt(format!("{what}: {e}"))
        }
        _ => SpillFormatError::Io(e),
    }
}

struct CountingWriter<W> {
    inner: W,
    written: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn written(value: Value) -> Vec<u8> {
        let mut out = Vec::new();
        let n = write_value(&value, &mut out).unwrap();
        assert_eq!(n, out.len() as u64);
        out
    }

    proptest! {
        #[test]
        fn any_number_vector_comes_back_unchanged(v in proptest::collection::vec(any::<f64>(), 0..5000)) {
            let back = read_value(written(Value::new(v.clone())).as_slice()).unwrap();
            let back = back.downcast_ref::<Vec<f64>>().unwrap();
            prop_assert_eq!(back.len(), v.len());
            prop_assert!(back.iter().zip(&v).all(|(a, b)| a.to_bits() == b.to_bits()));
        }

        #[test]
        fn any_truncation_or_flipped_byte_is_an_error_not_a_wrong_value(
            v in proptest::collection::vec(any::<i64>(), 1..2000),
            at in any::<prop::sample::Index>(),
            flip in 1u8..=255,
        ) {
            let bytes = written(Value::new(v.clone()));
            let cut = at.index(bytes.len());
            // The LZ4 end mark (the last 4 bytes) carries no content: a cut inside it loses nothing.
            if cut < bytes.len() - 4 {
                prop_assert!(read_value(&bytes[..cut]).is_err());
            }
            let mut damaged = bytes.clone();
            damaged[cut] ^= flip;
            match read_value(damaged.as_slice()) {
                Err(SpillFormatError::Corrupt(_)) => {}
                Err(e) => prop_assert!(false, "{e:?}"),
                // A flip inside the LZ4 frame header's reserved or unused bits can leave the
                // content intact; then the value must be the original.
                Ok(back) => prop_assert_eq!(back.downcast_ref::<Vec<i64>>().unwrap(), &v),
            }
        }
    }

    #[test]
    fn compressible_values_are_compressed() {
        let bytes = written(Value::new(vec![0i64; 1 << 20]));
        assert!(bytes.len() < 100_000, "{} bytes for 8 MB of zeros", bytes.len());
    }

    #[test]
    fn a_value_without_a_codec_is_unencodable() {
        struct Opaque;
        let error = write_value(&Value::new(Opaque), Vec::new()).unwrap_err();
        assert!(matches!(error, SpillFormatError::Unencodable(_)), "{error:?}");
    }

    #[test]
    fn a_full_disk_is_an_io_error() {
        let mut full = [0u8; 100];
        // Incompressible, so it cannot fit.
        let noise: Vec<u64> = (0..10_000u64).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17)).collect();
        let error = write_value(&Value::new(noise), &mut full[..]).unwrap_err();
        assert!(matches!(error, SpillFormatError::Io(_)), "{error:?}");
    }

    #[test]
    fn other_files_are_rejected_by_their_magic() {
        let error = read_value(&b"KSPL0 something else"[..]).unwrap_err();
        assert!(error.to_string().contains("wrong magic"), "{error}");
        assert!(matches!(read_value(&b""[..]), Err(SpillFormatError::Corrupt(_))));
    }
}
