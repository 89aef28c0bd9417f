//! Blocks read from and written to an HDF5 dataset: one block is one hyperslab of the dataset,
//! so a block reads exactly its own elements. The graph builders in `lower::hdf5` decide the
//! hyperslabs; the dataset is opened once per process.
//!
//! The HDF5 library is not thread-safe; `hdf5-metno` serializes every call through one
//! process-wide lock, so reads of one process run one at a time inside the library (as h5py's
//! do under Dask's lock), decompression included. Hence [`RawLayout`]: datasets whose chunks
//! kiln can decode itself are read with positioned reads and inflated on kiln's threads. Writes also serialize across processes: each write takes an exclusive
//! lock on the file itself (HDF5's own file locking is turned off for it, since it would refuse
//! the second writer instead of waiting).

use std::mem::MaybeUninit;
use std::ops::Range;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use std::collections::HashMap;

use hdf5::dataset::Layout;
use hdf5::datatype::ByteOrder;
use hdf5::types::{FloatSize, IntSize, TypeDescriptor};
use hdf5::{Dataset, Hyperslab, Selection, SliceOrIndex};
use ndarray::ArrayD;

use crate::block::{Block, DType};
use crate::chunk::ChunkError;
use crate::error::ArrayError;

pub(crate) fn io(path: &Path, dataset: &str, e: impl std::fmt::Display) -> ArrayError {
    ArrayError::Io(format!("hdf5 file {}, dataset {dataset}: {e}", path.display()))
}

fn file_io(path: &Path, e: impl std::fmt::Display) -> ArrayError {
    ArrayError::Io(format!("hdf5 file {}: {e}", path.display()))
}

/// The kiln element type that reads a stored HDF5 type without conversion, or the stored type's
/// description for an error.
pub(crate) fn stored_dtype(dataset: &Dataset) -> Result<DType, String> {
    let descriptor = dataset.dtype().and_then(|t| t.to_descriptor()).map_err(|e| e.to_string())?;
    match descriptor {
        TypeDescriptor::Float(FloatSize::U8) => Ok(DType::F64),
        TypeDescriptor::Float(FloatSize::U4) => Ok(DType::F32),
        TypeDescriptor::Integer(IntSize::U8) => Ok(DType::I64),
        TypeDescriptor::Integer(IntSize::U4) => Ok(DType::I32),
        TypeDescriptor::Boolean => Ok(DType::Bool),
        other => Err(format!("{other} (kiln arrays hold f64, f32, i64, i32 or bool)")),
    }
}

/// Chunked datasets with more chunks than this are read through the library only: the chunk
/// index kept for direct reads costs about 100 bytes a chunk (100 MB at this count).
const MAX_INDEXED_CHUNKS: usize = 1 << 20;

/// Where a dataset's bytes lie in its file when blocks can be read with plain positioned reads
/// and decoded by kiln, outside the library and its process-wide lock (so on all cores at
/// once): a little-endian numeric type, and either no filters or a pipeline of only shuffle,
/// deflate and a trailing fletcher32 checksum (h5py's `compression="gzip"`, `shuffle=True`,
/// `fletcher32=True`). Anything else reads through the library.
pub(crate) enum RawLayout {
    /// One contiguous run of elements, row-major, from `offset`.
    Contiguous { offset: u64, shape: Vec<usize> },
    /// Chunks of `chunk` elements; `chunks` maps a stored chunk's first element to where it
    /// lies (chunks never written are absent and read as `fill`, one element's bytes).
    Chunked { chunk: Vec<usize>, chunks: HashMap<Vec<u64>, StoredChunk>, codecs: Vec<Codec>, fill: Vec<u8> },
}

/// One stored chunk: its file offset, its size on disk and the filters it was stored without.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct StoredChunk {
    pub(crate) addr: u64,
    pub(crate) size: u64,
    /// Bit `i` set: filter `i` of the pipeline was skipped when this chunk was written.
    pub(crate) mask: u32,
}

/// A filter of the dataset's pipeline that kiln undoes itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum Codec {
    /// HDF5's shuffle: byte `j` of every element stored together (a byte transpose).
    Shuffle,
    /// zlib-wrapped deflate (h5py's "gzip").
    Deflate,
    /// A Fletcher-32 checksum appended to the chunk.
    Fletcher32,
}

/// How one block reads its bytes directly (see [`RawLayout`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) enum RawPlan {
    /// Rows of the contiguous dataset of `shape` starting at `offset`.
    Contiguous { offset: u64, shape: Vec<usize> },
    /// The chunks (first element, where it is stored or `None` when never written) the block
    /// overlaps, each `chunk` elements, stored through `codecs`; unwritten ones read as `fill`.
    Chunked { chunk: Vec<usize>, pieces: Vec<(Vec<u64>, Option<StoredChunk>)>, codecs: Vec<Codec>, fill: Vec<u8> },
}

/// The pipeline of `ds` as codecs kiln undoes, or `None` when it holds any other filter, a
/// checksum anywhere but last (its bytes would sit inside the compressed stream), or filters
/// that leave partial edge chunks unfiltered.
fn codecs_of(ds: &Dataset) -> Option<Vec<Codec>> {
    use hdf5::filters::Filter;
    let filters = ds.filters();
    let mut codecs = Vec::with_capacity(filters.len());
    for (i, filter) in filters.iter().enumerate() {
        codecs.push(match filter {
            Filter::Shuffle => Codec::Shuffle,
            Filter::Deflate(_) => Codec::Deflate,
            Filter::Fletcher32 if i + 1 == filters.len() => Codec::Fletcher32,
            _ => return None,
        });
    }
    if !codecs.is_empty() {
        let mut opts: std::ffi::c_uint = 0;
        let dcpl = ds.dcpl().ok()?;
        // SAFETY: `dcpl` is a live dataset creation property list of a chunked dataset; `opts`
        // is a plain local the call writes. The library's lock is held.
        let status = hdf5::sync::sync(|| unsafe { hdf5_sys::h5p::H5Pget_chunk_opts(dcpl.id(), &mut opts) });
        if status < 0 || opts & hdf5_sys::h5d::H5D_CHUNK_DONT_FILTER_PARTIAL_CHUNKS != 0 {
            return None;
        }
    }
    Some(codecs)
}

/// The bytes of one element of the dataset's fill value as a kiln `dtype`, or `None` when the
/// library would leave unwritten chunks unfilled (no fill value, or fill time "never").
fn fill_bytes(ds: &Dataset, dtype: DType) -> Option<Vec<u8>> {
    let dcpl = ds.dcpl().ok()?;
    if dcpl.fill_time() == hdf5::dataset::FillTime::Never {
        return None;
    }
    match dtype {
        DType::F64 => dcpl.fill_value_as::<f64>().map(|v| v.to_le_bytes().to_vec()),
        DType::F32 => dcpl.fill_value_as::<f32>().map(|v| v.to_le_bytes().to_vec()),
        DType::I64 => dcpl.fill_value_as::<i64>().map(|v| v.to_le_bytes().to_vec()),
        DType::I32 => dcpl.fill_value_as::<i32>().map(|v| v.to_le_bytes().to_vec()),
        DType::Bool => None,
    }
}

/// The raw layout of `dataset` as a kiln `dtype`, if its blocks can be read directly.
pub(crate) fn raw_layout(ds: &Dataset, dtype: DType) -> Option<RawLayout> {
    if matches!(dtype, DType::Bool) || !cfg!(target_endian = "little") {
        return None;
    }
    let little = ds.dtype().ok().is_some_and(|t| t.byte_order() == ByteOrder::LittleEndian);
    if !little {
        return None;
    }
    let shape = ds.shape();
    match ds.layout() {
        Layout::Contiguous if ds.filters().is_empty() => {
            ds.offset().map(|offset| RawLayout::Contiguous { offset, shape })
        }
        Layout::Chunked => {
            let chunk = ds.chunk()?;
            let codecs = codecs_of(ds)?;
            let grid_shape: Vec<u64> = shape.iter().zip(&chunk).map(|(&d, &c)| d.div_ceil(c.max(1)) as u64).collect();
            let grid = grid_shape.iter().product::<u64>() as usize;
            if grid > MAX_INDEXED_CHUNKS || grid == 0 {
                return None;
            }
            let bytes = (chunk.iter().product::<usize>() * dtype.itemsize()) as u64;
            // Looked up by each chunk's coordinates: HDF5 1.10's lookup by position in the index
            // (H5Dget_chunk_info) walks the index from its start, so listing every chunk that
            // way costs time quadratic in their count; by coordinates it is one index lookup.
            let mut chunks = HashMap::with_capacity(grid);
            let mut at = vec![0u64; grid_shape.len()];
            for _ in 0..grid {
                let origin: Vec<u64> = at.iter().zip(&chunk).map(|(&i, &c)| i * c as u64).collect();
                if let Some(stored) = chunk_by_coord(ds, &origin)? {
                    // An unfiltered chunk must hold exactly its elements (a filtered one is
                    // checked when it is decoded).
                    let unfiltered = (0..codecs.len()).all(|i| stored.mask & (1 << i) != 0);
                    if unfiltered && stored.size != bytes {
                        return None;
                    }
                    chunks.insert(origin, stored);
                }
                for axis in (0..at.len()).rev() {
                    at[axis] += 1;
                    if at[axis] < grid_shape[axis] {
                        break;
                    }
                    at[axis] = 0;
                }
            }
            let fill = if chunks.len() == grid { vec![0; dtype.itemsize()] } else { fill_bytes(ds, dtype)? };
            Some(RawLayout::Chunked { chunk, chunks, codecs, fill })
        }
        _ => None,
    }
}

/// The chunk whose first element is at `origin`: `Some(None)` for a chunk never written, `None`
/// when the library cannot say.
fn chunk_by_coord(ds: &Dataset, origin: &[u64]) -> Option<Option<StoredChunk>> {
    let mut filter_mask: std::ffi::c_uint = 0;
    let mut addr: hdf5_sys::h5::haddr_t = 0;
    let mut size: hdf5_sys::h5::hsize_t = 0;
    // SAFETY: `origin` has one coordinate per dimension of the dataset (as the call requires)
    // and outlives the call; the outputs are plain locals. The library's lock is held.
    let status = hdf5::sync::sync(|| unsafe {
        hdf5_sys::h5d::H5Dget_chunk_info_by_coord(ds.id(), origin.as_ptr(), &mut filter_mask, &mut addr, &mut size)
    });
    if status < 0 {
        return None;
    }
    Some((addr != hdf5_sys::h5::HADDR_UNDEF).then_some(StoredChunk { addr, size, mask: filter_mask }))
}

impl RawLayout {
    /// The plan for the block at `ranges`, or `None` for blocks the library reads.
    pub(crate) fn plan(&self, ranges: &[Range<u64>]) -> Option<RawPlan> {
        // 0-d and empty blocks go through the library (nothing to gain, edge cases to lose).
        if ranges.is_empty() || ranges.iter().any(|r| r.is_empty()) {
            return None;
        }
        match self {
            RawLayout::Contiguous { offset, shape } => {
                Some(RawPlan::Contiguous { offset: *offset, shape: shape.clone() })
            }
            RawLayout::Chunked { chunk, chunks, codecs, fill } => {
                // Every chunk origin the block overlaps, in row-major order.
                let firsts: Vec<u64> = ranges.iter().zip(chunk).map(|(r, &c)| r.start / c as u64).collect();
                let lasts: Vec<u64> = ranges.iter().zip(chunk).map(|(r, &c)| (r.end - 1) / c as u64).collect();
                let mut pieces = Vec::new();
                let mut at = firsts.clone();
                loop {
                    let origin: Vec<u64> = at.iter().zip(chunk).map(|(&i, &c)| i * c as u64).collect();
                    let stored = chunks.get(&origin).copied();
                    pieces.push((origin, stored));
                    let mut axis = at.len();
                    loop {
                        if axis == 0 {
                            return Some(RawPlan::Chunked {
                                chunk: chunk.clone(),
                                pieces,
                                codecs: codecs.clone(),
                                fill: fill.clone(),
                            });
                        }
                        axis -= 1;
                        if at[axis] < lasts[axis] {
                            at[axis] += 1;
                            break;
                        }
                        at[axis] = firsts[axis];
                    }
                }
            }
        }
    }
}

/// HDF5's Fletcher-32 over `data`: 16-bit big-endian words (an odd last byte padded with a
/// zero), both sums folded to 16 bits every 360 words so they cannot overflow.
fn fletcher32(data: &[u8]) -> u32 {
    let (mut sum1, mut sum2) = (0u32, 0u32);
    for block in data.chunks(720) {
        for word in block.chunks(2) {
            let hi = u32::from(word[0]) << 8;
            sum1 += hi | word.get(1).map_or(0, |&lo| u32::from(lo));
            sum2 += sum1;
        }
        sum1 = (sum1 & 0xffff) + (sum1 >> 16);
        sum2 = (sum2 & 0xffff) + (sum2 >> 16);
    }
    sum1 = (sum1 & 0xffff) + (sum1 >> 16);
    sum2 = (sum2 & 0xffff) + (sum2 >> 16);
    (sum2 << 16) | sum1
}

/// Undoes HDF5's shuffle of elements of `itemsize` bytes: `src` holds byte 0 of every element,
/// then byte 1 of every element, and so on; bytes past the last whole element stay in place.
fn unshuffle(src: &[u8], out: &mut [u8], itemsize: usize) {
    let n = src.len() / itemsize;
    if itemsize <= 1 || n <= 1 {
        out.copy_from_slice(src);
        return;
    }
    for (j, plane) in src[..n * itemsize].chunks_exact(n).enumerate() {
        for (i, &b) in plane.iter().enumerate() {
            out[i * itemsize + j] = b;
        }
    }
    out[n * itemsize..].copy_from_slice(&src[n * itemsize..]);
}

/// Inflates the zlib stream `src` into exactly `out`.
fn inflate(src: &[u8], out: &mut [u8]) -> Result<(), String> {
    use flate2::{Decompress, FlushDecompress, Status};
    let mut z = Decompress::new(true);
    match z.decompress(src, out, FlushDecompress::Finish) {
        Ok(Status::StreamEnd) if z.total_out() as usize == out.len() => Ok(()),
        Ok(Status::StreamEnd) => {
            Err(format!("its deflate stream holds {} bytes, not the chunk's {}", z.total_out(), out.len()))
        }
        Ok(_) if z.total_out() as usize == out.len() => {
            Err(format!("its deflate stream holds more than the chunk's {} bytes", out.len()))
        }
        Ok(_) => Err(format!("its deflate stream ends after {} of {} bytes", z.total_out(), out.len())),
        Err(e) => Err(format!("its deflate stream is corrupt ({e})")),
    }
}

/// Reads the chunk `stored` from `file` and undoes `codecs` (those its mask did not skip),
/// leaving exactly the chunk's elements in `out`; `scratch` is reused between chunks.
fn decode_chunk(
    file: &std::fs::File,
    stored: &StoredChunk,
    codecs: &[Codec],
    itemsize: usize,
    out: &mut [u8],
    scratch: &mut Vec<u8>,
) -> Result<(), String> {
    use std::os::unix::fs::FileExt;
    let active: Vec<Codec> =
        codecs.iter().enumerate().filter(|&(i, _)| stored.mask & (1 << i) == 0).map(|(_, &c)| c).collect();
    if active.is_empty() {
        if stored.size as usize != out.len() {
            return Err(format!("it is stored unfiltered in {} bytes, not {}", stored.size, out.len()));
        }
        return file.read_exact_at(out, stored.addr).map_err(|e| e.to_string());
    }
    let size = usize::try_from(stored.size).map_err(|_| format!("its size {} is too large", stored.size))?;
    let mut data = vec![0u8; size];
    file.read_exact_at(&mut data, stored.addr).map_err(|e| e.to_string())?;
    let mut len = data.len();
    // Undone last filter first; the final step writes into `out`.
    let steps = active.len();
    let mut in_out = false;
    for (k, codec) in active.iter().rev().enumerate() {
        let last = k + 1 == steps;
        match codec {
            Codec::Fletcher32 => {
                if len < 4 {
                    return Err(format!("it holds {len} bytes, too few for its checksum"));
                }
                let body = &data[..len - 4];
                let want = u32::from_le_bytes(data[len - 4..len].try_into().expect("four bytes"));
                let sum = fletcher32(body);
                // Files from HDF5 1.6.0-1.6.2 stored the checksum with the bytes of each half
                // swapped; the library accepts both, so does kiln.
                let swapped = ((sum & 0x00ff_00ff) << 8) | ((sum >> 8) & 0x00ff_00ff);
                if want != sum && want != swapped {
                    return Err(format!("its fletcher32 checksum {want:#010x} does not match its bytes ({sum:#010x})"));
                }
                len -= 4;
                if last {
                    if len != out.len() {
                        return Err(format!("it holds {len} bytes, not the chunk's {}", out.len()));
                    }
                    out.copy_from_slice(&data[..len]);
                    in_out = true;
                }
            }
            Codec::Deflate => {
                if last {
                    inflate(&data[..len], out)?;
                    in_out = true;
                } else {
                    scratch.resize(out.len(), 0);
                    inflate(&data[..len], scratch)?;
                    std::mem::swap(&mut data, scratch);
                    len = data.len();
                }
            }
            Codec::Shuffle => {
                if len != out.len() {
                    return Err(format!("it holds {len} bytes, not the chunk's {}", out.len()));
                }
                if last {
                    unshuffle(&data[..len], out, itemsize);
                    in_out = true;
                } else {
                    scratch.resize(len, 0);
                    unshuffle(&data[..len], scratch, itemsize);
                    std::mem::swap(&mut data, scratch);
                }
            }
        }
    }
    debug_assert!(in_out, "the last step writes the chunk");
    Ok(())
}

/// Calls `row(out_start, src_start, len)` for every run along the last axis when copying the
/// box `lo..hi` (element coordinates) from an array of shape `src_shape` whose first element is
/// at `src_origin` into an array of shape `out_shape` whose first element is at `out_origin`;
/// offsets are in elements.
fn for_each_row(
    lo: &[u64],
    hi: &[u64],
    src_origin: &[u64],
    src_shape: &[usize],
    out_origin: &[u64],
    out_shape: &[usize],
    mut row: impl FnMut(usize, u64, usize) -> Result<(), String>,
) -> Result<(), String> {
    let n = lo.len();
    let linear = |at: &[u64], origin: &[u64], shape: &[usize]| -> u64 {
        at.iter().zip(origin).zip(shape).fold(0u64, |acc, ((&a, &o), &s)| acc * s as u64 + (a - o))
    };
    let len = (hi[n - 1] - lo[n - 1]) as usize;
    let mut at = lo.to_vec();
    loop {
        row(linear(&at, out_origin, out_shape) as usize, linear(&at, src_origin, src_shape), len)?;
        let mut axis = n - 1;
        loop {
            if axis == 0 {
                return Ok(());
            }
            axis -= 1;
            at[axis] += 1;
            if at[axis] < hi[axis] {
                break;
            }
            at[axis] = lo[axis];
        }
    }
}

/// Reads the block at `ranges` of `dataset` by `plan` from `file` (positioned reads and kiln's
/// own decoding; no HDF5 call, so blocks read and inflate on all threads at once).
pub(crate) fn read_raw(
    file: &std::fs::File,
    path: &Path,
    dataset: &str,
    plan: &RawPlan,
    ranges: &[Range<u64>],
    dtype: DType,
) -> Result<Block, ChunkError> {
    use std::os::unix::fs::FileExt;
    let shape: Vec<usize> = ranges.iter().map(|r| (r.end - r.start) as usize).collect();
    let itemsize = dtype.itemsize();
    let count: usize = shape.iter().product();
    let lo: Vec<u64> = ranges.iter().map(|r| r.start).collect();
    let hi: Vec<u64> = ranges.iter().map(|r| r.end).collect();
    let fail = |e: String| ChunkError::msg(format!("reading hdf5 file {}, dataset {dataset}: {e}", path.display()));
    if shape.is_empty() || count == 0 {
        return Err(fail("no raw plan for an empty or 0-d block".into()));
    }
    // Reads straight into the block's own buffer (typed, so aligned): no copy for a block that
    // is one chunk or a run of rows of a contiguous dataset.
    let fill = |bytes: &mut [u8]| -> Result<(), ChunkError> {
        match plan {
            RawPlan::Contiguous { offset, shape: ds_shape } => {
                let zeros = vec![0u64; ds_shape.len()];
                for_each_row(&lo, &hi, &zeros, ds_shape, &lo, &shape, |out, src, len| {
                    let at = offset + src * itemsize as u64;
                    file.read_exact_at(&mut bytes[out * itemsize..(out + len) * itemsize], at)
                        .map_err(|e| e.to_string())
                })
                .map_err(fail)
            }
            RawPlan::Chunked { chunk, pieces, codecs, .. } => {
                let chunk_bytes = chunk.iter().product::<usize>() * itemsize;
                let mut buffer = Vec::new();
                let mut scratch = Vec::new();
                // Chunks never written are left as the fill value the block starts from.
                for (origin, stored) in pieces.iter().filter_map(|(o, s)| s.as_ref().map(|s| (o, s))) {
                    let chunk_fail = |e: String| {
                        fail(format!(
                            "chunk at {origin:?} (file offset {}, {} bytes stored): {e}",
                            stored.addr, stored.size
                        ))
                    };
                    let end: Vec<u64> = origin.iter().zip(chunk).map(|(&o, &c)| o + c as u64).collect();
                    if origin == &lo && end == hi {
                        // The block is exactly this chunk: decode it in place.
                        decode_chunk(file, stored, codecs, itemsize, bytes, &mut scratch).map_err(chunk_fail)?;
                        continue;
                    }
                    buffer.resize(chunk_bytes, 0);
                    decode_chunk(file, stored, codecs, itemsize, &mut buffer, &mut scratch).map_err(chunk_fail)?;
                    let box_lo: Vec<u64> = lo.iter().zip(origin).map(|(&a, &b)| a.max(b)).collect();
                    let box_hi: Vec<u64> = hi.iter().zip(&end).map(|(&a, &b)| a.min(b)).collect();
                    for_each_row(&box_lo, &box_hi, origin, chunk, &lo, &shape, |out, src, len| {
                        let src = src as usize;
                        bytes[out * itemsize..(out + len) * itemsize]
                            .copy_from_slice(&buffer[src * itemsize..(src + len) * itemsize]);
                        Ok(())
                    })
                    .map_err(fail)?;
                }
                Ok(())
            }
        }
    };
    // A block that is exactly one stored, unfiltered chunk is read into memory that is never
    // initialized first (clearing 8 MB only to overwrite it cost ~6 % of the seed expression
    // over HDF5). Other plans start from the fill value (chunks never written read as it).
    let (whole_chunk, fill_value) = match plan {
        RawPlan::Chunked { chunk, pieces, codecs, fill } => {
            let whole = match pieces.as_slice() {
                [(origin, Some(stored))]
                    if origin == &lo
                        && origin.iter().zip(chunk).zip(&hi).all(|((&o, &c), &h)| o + c as u64 == h)
                        && (0..codecs.len()).all(|i| stored.mask & (1 << i) != 0) =>
                {
                    Some(stored.addr)
                }
                _ => None,
            };
            (whole, fill.as_slice())
        }
        RawPlan::Contiguous { .. } => (None, &[][..]),
    };
    fn typed<T: bytemuck::Pod>(
        count: usize,
        whole_chunk: Option<(&std::fs::File, u64)>,
        fill_value: &[u8],
        fill: impl FnOnce(&mut [u8]) -> Result<(), ChunkError>,
        fail: impl Fn(String) -> ChunkError,
    ) -> Result<Vec<T>, ChunkError> {
        if let Some((file, at)) = whole_chunk {
            let mut values: Vec<T> = Vec::with_capacity(count);
            let spare = values.spare_capacity_mut();
            let bytes = std::mem::size_of_val(spare);
            // SAFETY: the spare capacity is `count` writable (uninitialized) `T`s; viewed as
            // bytes it is `bytes` writable bytes, and `MaybeUninit<u8>` has no validity invariant.
            let raw = unsafe { std::slice::from_raw_parts_mut(spare.as_mut_ptr().cast::<MaybeUninit<u8>>(), bytes) };
            read_exact_at_uninit(file, raw, at).map_err(|e| fail(e.to_string()))?;
            // SAFETY: every byte of the first `count` elements was written by the read above,
            // and any bit pattern is a valid `T` (`Pod`).
            unsafe { values.set_len(count) };
            return Ok(values);
        }
        let start: T = if fill_value.len() == std::mem::size_of::<T>() {
            bytemuck::pod_read_unaligned(fill_value)
        } else {
            T::zeroed()
        };
        let mut values = vec![start; count];
        fill(bytemuck::cast_slice_mut(&mut values))?;
        Ok(values)
    }
    let dim = ndarray::IxDyn(&shape);
    let shaped = |e: ndarray::ShapeError| fail(e.to_string());
    let whole = whole_chunk.map(|at| (file, at));
    Ok(match dtype {
        DType::F64 => Block::F64(
            ArrayD::from_shape_vec(dim, typed::<f64>(count, whole, fill_value, fill, fail)?).map_err(shaped)?,
        ),
        DType::F32 => Block::F32(
            ArrayD::from_shape_vec(dim, typed::<f32>(count, whole, fill_value, fill, fail)?).map_err(shaped)?,
        ),
        DType::I64 => Block::I64(
            ArrayD::from_shape_vec(dim, typed::<i64>(count, whole, fill_value, fill, fail)?).map_err(shaped)?,
        ),
        DType::I32 => Block::I32(
            ArrayD::from_shape_vec(dim, typed::<i32>(count, whole, fill_value, fill, fail)?).map_err(shaped)?,
        ),
        DType::Bool => return Err(fail("bool blocks are read through the library".into())),
    })
}

/// Fills `buf` from `file` at `offset` with positioned reads, without initializing it first.
fn read_exact_at_uninit(file: &std::fs::File, buf: &mut [MaybeUninit<u8>], mut offset: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        let at = libc::off_t::try_from(offset).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("offset {offset} is too large"))
        })?;
        // SAFETY: the pointer and length describe memory owned by `rest`, which `pread` writes
        // at most `rest.len()` bytes into; uninitialized bytes may be overwritten.
        let n = unsafe { libc::pread(file.as_raw_fd(), rest.as_mut_ptr().cast(), rest.len(), at) };
        match n {
            0 => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("the file ends {} bytes into a {}-byte chunk at offset {offset}", done, buf.len()),
                ));
            }
            n if n < 0 => {
                let error = std::io::Error::last_os_error();
                if error.kind() != std::io::ErrorKind::Interrupted {
                    return Err(error);
                }
            }
            n => {
                done += n as usize;
                offset += n as u64;
            }
        }
    }
    Ok(())
}

/// Opens `dataset` in the HDF5 file at `path` for reading.
pub(crate) fn open(path: &Path, dataset: &str) -> Result<Dataset, ArrayError> {
    if !path.exists() {
        return Err(file_io(path, "does not exist"));
    }
    // HDF5's own file locking is off for readers too: its shared lock would block kiln's writers
    // (which lock the file themselves) for as long as an array reading the file exists.
    let mut builder = hdf5::File::with_options();
    builder.with_fapl(|fapl| fapl.file_locking(false));
    let file = builder.open(path).map_err(|e| file_io(path, format!("cannot be opened as HDF5 ({e})")))?;
    file.dataset(dataset).map_err(|e| io(path, dataset, format!("cannot be opened ({e})")))
}

/// The dataset, opened on first use. Kernels travel by path and dataset name (a worker sharing
/// the filesystem opens the same file); in the building process the cell is pre-filled with the
/// dataset already opened, so local runs never reopen it.
pub(crate) fn opened<'a>(
    cell: &'a OnceLock<Arc<Dataset>>,
    path: &Path,
    dataset: &str,
) -> Result<&'a Arc<Dataset>, ChunkError> {
    if let Some(ds) = cell.get() {
        return Ok(ds);
    }
    let ds = open(path, dataset).map_err(|e| ChunkError::msg(e.to_string()))?;
    Ok(cell.get_or_init(|| Arc::new(ds)))
}

fn hyperslab(ranges: &[Range<u64>]) -> Selection {
    let slices: Vec<SliceOrIndex> =
        ranges.iter().map(|r| SliceOrIndex::from(r.start as usize..r.end as usize)).collect();
    Selection::from(Hyperslab::from(slices))
}

/// The hyperslab `ranges` of `dataset` as a block of `dtype`.
pub(crate) fn read_region(
    dataset: &Dataset,
    path: &Path,
    name: &str,
    ranges: &[Range<u64>],
    dtype: DType,
) -> Result<Block, ChunkError> {
    let fail = |e: hdf5::Error| ChunkError::msg(format!("reading hdf5 file {}, dataset {name}: {e}", path.display()));
    if ranges.is_empty() {
        // A 0-d dataset: hyperslabs need at least one axis.
        return Ok(match dtype {
            DType::Bool => Block::Bool(dataset.read_dyn::<bool>().map_err(fail)?),
            DType::I32 => Block::I32(dataset.read_dyn::<i32>().map_err(fail)?),
            DType::I64 => Block::I64(dataset.read_dyn::<i64>().map_err(fail)?),
            DType::F32 => Block::F32(dataset.read_dyn::<f32>().map_err(fail)?),
            DType::F64 => Block::F64(dataset.read_dyn::<f64>().map_err(fail)?),
        });
    }
    let shape: Vec<usize> = ranges.iter().map(|r| (r.end - r.start) as usize).collect();
    if shape.contains(&0) {
        let shape = ndarray::IxDyn(&shape);
        return Ok(match dtype {
            DType::Bool => Block::Bool(ArrayD::default(shape)),
            DType::I32 => Block::I32(ArrayD::default(shape)),
            DType::I64 => Block::I64(ArrayD::default(shape)),
            DType::F32 => Block::F32(ArrayD::default(shape)),
            DType::F64 => Block::F64(ArrayD::default(shape)),
        });
    }
    let selection = hyperslab(ranges);
    Ok(match dtype {
        DType::Bool => Block::Bool(dataset.read_slice::<bool, _, ndarray::IxDyn>(selection).map_err(fail)?),
        DType::I32 => Block::I32(dataset.read_slice::<i32, _, ndarray::IxDyn>(selection).map_err(fail)?),
        DType::I64 => Block::I64(dataset.read_slice::<i64, _, ndarray::IxDyn>(selection).map_err(fail)?),
        DType::F32 => Block::F32(dataset.read_slice::<f32, _, ndarray::IxDyn>(selection).map_err(fail)?),
        DType::F64 => Block::F64(dataset.read_slice::<f64, _, ndarray::IxDyn>(selection).map_err(fail)?),
    })
}

/// Opens the HDF5 file at `path` for writing, with HDF5's own file locking off (the caller
/// holds an exclusive lock on the file instead).
fn open_for_write(path: &Path, create: bool) -> hdf5::Result<hdf5::File> {
    let mut builder = hdf5::File::with_options();
    builder.with_fapl(|fapl| fapl.file_locking(false));
    if create { builder.append(path) } else { builder.open_rw(path) }
}

/// An exclusive lock on the file at `path`, held by one writer (thread or process) at a time.
fn lock_file(path: &Path) -> Result<std::fs::File, String> {
    let file = std::fs::OpenOptions::new().read(true).write(true).open(path).map_err(|e| e.to_string())?;
    crate::chunk::writer_lock::lock_exclusive(file)
}

/// Creates (or replaces) `dataset` in the HDF5 file at `path` (created if missing; other
/// datasets in it are kept): `shape`, stored in chunks of `chunk`, elements of `dtype`,
/// compressed with deflate at `deflate` when given.
pub(crate) fn create_dataset(
    path: &Path,
    dataset: &str,
    shape: &[usize],
    chunk: &[usize],
    dtype: DType,
    deflate: Option<u8>,
) -> Result<(), ArrayError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| file_io(path, e))?;
    }
    // Create the file first (empty) so it can be locked like any later writer locks it.
    if !path.exists() {
        open_for_write(path, true).map_err(|e| file_io(path, format!("cannot be created ({e})")))?;
    }
    let _lock = lock_file(path).map_err(|e| file_io(path, format!("cannot be locked for writing ({e})")))?;
    let file = open_for_write(path, false).map_err(|e| file_io(path, format!("cannot be opened for writing ({e})")))?;
    if file.link_exists(dataset) {
        file.unlink(dataset).map_err(|e| io(path, dataset, format!("cannot be replaced ({e})")))?;
    }
    // Intermediate groups of a path like "a/b/x" are created as HDF5 does with h5py.
    let mut builder = match dtype {
        DType::Bool => file.new_dataset::<bool>(),
        DType::I32 => file.new_dataset::<i32>(),
        DType::I64 => file.new_dataset::<i64>(),
        DType::F32 => file.new_dataset::<f32>(),
        DType::F64 => file.new_dataset::<f64>(),
    }
    .shape(shape.to_vec());
    if !shape.is_empty() && !shape.contains(&0) {
        builder = builder.chunk(chunk.iter().map(|&c| c.max(1)).collect::<Vec<_>>());
        if let Some(level) = deflate {
            builder = builder.deflate(level);
        }
    }
    builder.create(dataset).map_err(|e| io(path, dataset, format!("cannot be created ({e})")))?;
    file.close().map_err(|e| file_io(path, e))?;
    Ok(())
}

/// Writes `block` into `dataset` at `offset`; returns the written marker (a `true` block of
/// `ndim` length-1 axes) that the write's task produces.
pub(crate) fn write_region(
    path: &Path,
    dataset: &str,
    offset: &[u64],
    ndim: usize,
    block: Block,
) -> Result<Block, ChunkError> {
    let fail = |e: &dyn std::fmt::Display| {
        ChunkError::msg(format!("writing hdf5 file {}, dataset {dataset}: {e}", path.display()))
    };
    let _lock = lock_file(path).map_err(|e| fail(&e))?;
    let file = open_for_write(path, false).map_err(|e| fail(&e))?;
    let ds = file.dataset(dataset).map_err(|e| fail(&e))?;
    let ranges: Vec<Range<u64>> = offset.iter().zip(block.shape()).map(|(&o, &n)| o..o + n as u64).collect();
    if !block.shape().contains(&0) {
        crate::with_block!(block, a => {
            let a: ArrayD<_> = if a.is_standard_layout() { a } else { a.as_standard_layout().into_owned() };
            if ranges.is_empty() {
                ds.write(&a).map_err(|e| fail(&e))?
            } else {
                ds.write_slice(&a, hyperslab(&ranges)).map_err(|e| fail(&e))?
            }
        });
    }
    // Closing flushes: the block is in the file before the lock is released.
    drop(ds);
    file.close().map_err(|e| fail(&e))?;
    Ok(Block::Bool(ArrayD::from_elem(ndarray::IxDyn(&vec![1; ndim]), true)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn little_endian_data_gets_a_raw_layout_compressed_or_not() {
        let path = std::env::temp_dir().join(format!("kiln-hdf5-raw-{}.h5", std::process::id()));
        let data = ndarray::Array2::from_shape_fn((10, 7), |(i, j)| (i * 7 + j) as f64);
        {
            let file = hdf5::File::create(&path).unwrap();
            file.new_dataset_builder().chunk((4, 3)).with_data(&data).create("chunked").unwrap();
            file.new_dataset_builder().with_data(&data).create("contiguous").unwrap();
            file.new_dataset_builder().chunk((4, 3)).deflate(3).with_data(&data).create("gzip").unwrap();
        }
        let file = hdf5::File::open(&path).unwrap();
        let chunked = raw_layout(&file.dataset("chunked").unwrap(), DType::F64).expect("a raw layout");
        // A block over rows 3..9 and columns 2..4 touches chunk rows 0..=2 and columns 0..=1.
        match chunked.plan(&[3..9, 2..4]) {
            Some(RawPlan::Chunked { chunk, pieces, .. }) => {
                assert_eq!(chunk, vec![4, 3]);
                let origins: Vec<Vec<u64>> = pieces.iter().map(|(o, _)| o.clone()).collect();
                assert_eq!(origins, vec![vec![0, 0], vec![0, 3], vec![4, 0], vec![4, 3], vec![8, 0], vec![8, 3]]);
            }
            other => panic!("{other:?}"),
        }
        let plan = chunked.plan(&[3..9, 2..4]).unwrap();
        let raw_file = std::fs::File::open(&path).unwrap();
        let Block::F64(got) = read_raw(&raw_file, &path, "t", &plan, &[3..9, 2..4], DType::F64).unwrap() else {
            panic!()
        };
        assert_eq!(got, data.slice(ndarray::s![3..9, 2..4]).into_dyn());
        let contiguous = raw_layout(&file.dataset("contiguous").unwrap(), DType::F64).expect("a raw layout");
        let plan = contiguous.plan(&[1..4, 5..7]).unwrap();
        let Block::F64(got) = read_raw(&raw_file, &path, "t", &plan, &[1..4, 5..7], DType::F64).unwrap() else {
            panic!()
        };
        assert_eq!(got, data.slice(ndarray::s![1..4, 5..7]).into_dyn());
        // Deflate is decoded by kiln, so compressed chunks read directly too.
        let gzip = raw_layout(&file.dataset("gzip").unwrap(), DType::F64).expect("a raw layout");
        let plan = gzip.plan(&[3..9, 2..4]).unwrap();
        let Block::F64(got) = read_raw(&raw_file, &path, "gzip", &plan, &[3..9, 2..4], DType::F64).unwrap() else {
            panic!()
        };
        assert_eq!(got, data.slice(ndarray::s![3..9, 2..4]).into_dyn());
        drop(file);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn h5py_filter_pipelines_kiln_decodes_get_a_raw_layout_and_others_do_not() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hdf5/filters.h5");
        let file = hdf5::File::open(&path).unwrap();
        let layout = |name: &str, dtype: DType| raw_layout(&file.dataset(name).unwrap(), dtype);
        for (name, dtype, codecs) in [
            ("gzip9", DType::F64, vec![Codec::Deflate]),
            ("shuffle_gzip_f32", DType::F32, vec![Codec::Shuffle, Codec::Deflate]),
            ("fletcher_gzip", DType::F64, vec![Codec::Shuffle, Codec::Deflate, Codec::Fletcher32]),
            ("fletcher_only_i32", DType::I32, vec![Codec::Fletcher32]),
        ] {
            match layout(name, dtype) {
                Some(RawLayout::Chunked { codecs: got, .. }) => assert_eq!(got, codecs, "{name}"),
                _ => panic!("{name}: no chunked raw layout"),
            }
        }
        // Unwritten chunks are left out of the index and read as the fill value.
        let Some(RawLayout::Chunked { chunks, fill, .. }) = layout("unwritten_fill", DType::F64) else { panic!() };
        assert_eq!((chunks.len(), fill), (4, (-7.5f64).to_le_bytes().to_vec()));
        // The masks of chunks stored with filters skipped are kept per chunk.
        let Some(RawLayout::Chunked { chunks, .. }) = layout("masked", DType::F64) else { panic!() };
        let mut masks: Vec<u32> = chunks.values().map(|c| c.mask).collect();
        masks.sort_unstable();
        assert_eq!(masks, vec![0, 1, 2, 3]);
        assert!(layout("scaleoffset_i32", DType::I32).is_none(), "scale-offset is left to the library");
    }

    #[test]
    fn unshuffle_undoes_the_byte_transpose_and_keeps_trailing_bytes() {
        // Three 4-byte elements and two bytes past them, shuffled as HDF5 shuffles.
        let elements: Vec<u8> = (0u8..12).collect();
        let mut shuffled = Vec::new();
        for j in 0..4 {
            shuffled.extend((0..3).map(|i| elements[i * 4 + j]));
        }
        shuffled.extend([200, 201]);
        let mut out = vec![0u8; 14];
        unshuffle(&shuffled, &mut out, 4);
        let mut want = elements.clone();
        want.extend([200, 201]);
        assert_eq!(out, want);
    }
}
