//! Blocks read from and written to an HDF5 dataset: one block is one hyperslab of the dataset,
//! so a block reads exactly its own elements. The graph builders in `lower::hdf5` decide the
//! hyperslabs; the dataset is opened once per process.
//!
//! The HDF5 library is not thread-safe; `hdf5-metno` serializes every call through one
//! process-wide lock, so reads of one process run one at a time inside the library (as h5py's
//! do under Dask's lock). Writes also serialize across processes: each write takes an exclusive
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

/// Where a dataset's bytes lie in its file when blocks can be read with plain positioned reads,
/// outside the library and its process-wide lock (so on all cores at once): no filters
/// (compression), a little-endian numeric type, and every chunk allocated. Anything else reads
/// through the library.
pub(crate) enum RawLayout {
    /// One contiguous run of elements, row-major, from `offset`.
    Contiguous { offset: u64, shape: Vec<usize> },
    /// Chunks of `chunk` elements; `addresses` maps a chunk's first element to its file offset.
    Chunked { chunk: Vec<usize>, addresses: HashMap<Vec<u64>, u64> },
}

/// How one block reads its bytes directly (see [`RawLayout`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) enum RawPlan {
    /// Rows of the contiguous dataset of `shape` starting at `offset`.
    Contiguous { offset: u64, shape: Vec<usize> },
    /// The chunks (first element, file offset) the block overlaps, each `chunk` elements.
    Chunked { chunk: Vec<usize>, pieces: Vec<(Vec<u64>, u64)> },
}

/// The raw layout of `dataset` as a kiln `dtype`, if its blocks can be read directly.
pub(crate) fn raw_layout(ds: &Dataset, dtype: DType) -> Option<RawLayout> {
    if matches!(dtype, DType::Bool) || !cfg!(target_endian = "little") || !ds.filters().is_empty() {
        return None;
    }
    let little = ds.dtype().ok().is_some_and(|t| t.byte_order() == ByteOrder::LittleEndian);
    if !little {
        return None;
    }
    let shape = ds.shape();
    match ds.layout() {
        Layout::Contiguous => ds.offset().map(|offset| RawLayout::Contiguous { offset, shape }),
        Layout::Chunked => {
            let chunk = ds.chunk()?;
            let grid: usize = shape.iter().zip(&chunk).map(|(&d, &c)| d.div_ceil(c.max(1))).product();
            let count = ds.num_chunks()?;
            if count != grid || count > MAX_INDEXED_CHUNKS {
                return None; // some chunks never written (they read as the fill value), or too many
            }
            let bytes = chunk.iter().product::<usize>() * dtype.itemsize();
            // Looked up by each chunk's coordinates: HDF5 1.10's lookup by position in the index
            // (H5Dget_chunk_info) walks the index from its start, so listing every chunk that
            // way costs time quadratic in their count; by coordinates it is one index lookup.
            let grid_shape: Vec<u64> = shape.iter().zip(&chunk).map(|(&d, &c)| d.div_ceil(c.max(1)) as u64).collect();
            let mut addresses = HashMap::with_capacity(count);
            let mut at = vec![0u64; grid_shape.len()];
            for _ in 0..count {
                let origin: Vec<u64> = at.iter().zip(&chunk).map(|(&i, &c)| i * c as u64).collect();
                let (addr, size, filter_mask) = chunk_by_coord(ds, &origin)?;
                if size as usize != bytes || filter_mask != 0 {
                    return None;
                }
                addresses.insert(origin, addr);
                for axis in (0..at.len()).rev() {
                    at[axis] += 1;
                    if at[axis] < grid_shape[axis] {
                        break;
                    }
                    at[axis] = 0;
                }
            }
            Some(RawLayout::Chunked { chunk, addresses })
        }
        _ => None,
    }
}

/// The file address, stored size and filter mask of the chunk whose first element is at
/// `origin`; `None` for a chunk never written or when the library cannot say.
fn chunk_by_coord(ds: &Dataset, origin: &[u64]) -> Option<(u64, u64, u32)> {
    let mut filter_mask: std::ffi::c_uint = 0;
    let mut addr: hdf5_sys::h5::haddr_t = 0;
    let mut size: hdf5_sys::h5::hsize_t = 0;
    // SAFETY: `origin` has one coordinate per dimension of the dataset (as the call requires)
    // and outlives the call; the outputs are plain locals. The library's lock is held.
    let status = hdf5::sync::sync(|| unsafe {
        hdf5_sys::h5d::H5Dget_chunk_info_by_coord(ds.id(), origin.as_ptr(), &mut filter_mask, &mut addr, &mut size)
    });
    (status >= 0 && addr != hdf5_sys::h5::HADDR_UNDEF).then_some((addr, size, filter_mask))
}

impl RawLayout {
    /// The plan for the block at `ranges`, or `None` when a chunk it needs is not listed.
    pub(crate) fn plan(&self, ranges: &[Range<u64>]) -> Option<RawPlan> {
        // 0-d and empty blocks go through the library (nothing to gain, edge cases to lose).
        if ranges.is_empty() || ranges.iter().any(|r| r.is_empty()) {
            return None;
        }
        match self {
            RawLayout::Contiguous { offset, shape } => {
                Some(RawPlan::Contiguous { offset: *offset, shape: shape.clone() })
            }
            RawLayout::Chunked { chunk, addresses } => {
                // Every chunk origin the block overlaps, in row-major order.
                let firsts: Vec<u64> = ranges.iter().zip(chunk).map(|(r, &c)| r.start / c as u64).collect();
                let lasts: Vec<u64> = ranges.iter().zip(chunk).map(|(r, &c)| (r.end - 1) / c as u64).collect();
                let mut pieces = Vec::new();
                let mut at = firsts.clone();
                loop {
                    let origin: Vec<u64> = at.iter().zip(chunk).map(|(&i, &c)| i * c as u64).collect();
                    let addr = *addresses.get(&origin)?;
                    pieces.push((origin, addr));
                    let mut axis = at.len();
                    loop {
                        if axis == 0 {
                            return Some(RawPlan::Chunked { chunk: chunk.clone(), pieces });
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

/// Reads the block at `ranges` by `plan` from `file` (positioned reads; no HDF5 call).
pub(crate) fn read_raw(
    file: &std::fs::File,
    path: &Path,
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
    let fail = |e: String| ChunkError::msg(format!("reading hdf5 file {}: {e}", path.display()));
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
            RawPlan::Chunked { chunk, pieces } => {
                let chunk_bytes = chunk.iter().product::<usize>() * itemsize;
                let mut buffer = Vec::new();
                for (origin, addr) in pieces {
                    let end: Vec<u64> = origin.iter().zip(chunk).map(|(&o, &c)| o + c as u64).collect();
                    if origin == &lo && end == hi {
                        // The block is exactly this chunk: read it in place.
                        file.read_exact_at(bytes, *addr).map_err(|e| fail(e.to_string()))?;
                        continue;
                    }
                    buffer.resize(chunk_bytes, 0);
                    file.read_exact_at(&mut buffer, *addr).map_err(|e| fail(e.to_string()))?;
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
    // A block that is exactly one stored chunk is read into memory that is never zeroed first
    // (clearing 8 MB only to overwrite it cost ~6 % of the seed expression over HDF5). Other
    // plans may leave parts unwritten (chunks never allocated read as zeros), so they start
    // from zeros.
    let whole_chunk = match plan {
        RawPlan::Chunked { chunk, pieces } => match pieces.as_slice() {
            [(origin, addr)]
                if origin == &lo && origin.iter().zip(chunk).zip(&hi).all(|((&o, &c), &h)| o + c as u64 == h) =>
            {
                Some(*addr)
            }
            _ => None,
        },
        RawPlan::Contiguous { .. } => None,
    };
    fn typed<T: bytemuck::Pod>(
        count: usize,
        whole_chunk: Option<(&std::fs::File, u64)>,
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
        let mut values = vec![T::zeroed(); count];
        fill(bytemuck::cast_slice_mut(&mut values))?;
        Ok(values)
    }
    let dim = ndarray::IxDyn(&shape);
    let shaped = |e: ndarray::ShapeError| fail(e.to_string());
    Ok(match dtype {
        DType::F64 => Block::F64(
            ArrayD::from_shape_vec(dim, typed::<f64>(count, whole_chunk.map(|at| (file, at)), fill, fail)?)
                .map_err(shaped)?,
        ),
        DType::F32 => Block::F32(
            ArrayD::from_shape_vec(dim, typed::<f32>(count, whole_chunk.map(|at| (file, at)), fill, fail)?)
                .map_err(shaped)?,
        ),
        DType::I64 => Block::I64(
            ArrayD::from_shape_vec(dim, typed::<i64>(count, whole_chunk.map(|at| (file, at)), fill, fail)?)
                .map_err(shaped)?,
        ),
        DType::I32 => Block::I32(
            ArrayD::from_shape_vec(dim, typed::<i32>(count, whole_chunk.map(|at| (file, at)), fill, fail)?)
                .map_err(shaped)?,
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
    fn uncompressed_little_endian_data_gets_a_raw_layout_and_others_do_not() {
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
            Some(RawPlan::Chunked { chunk, pieces }) => {
                assert_eq!(chunk, vec![4, 3]);
                let origins: Vec<Vec<u64>> = pieces.iter().map(|(o, _)| o.clone()).collect();
                assert_eq!(origins, vec![vec![0, 0], vec![0, 3], vec![4, 0], vec![4, 3], vec![8, 0], vec![8, 3]]);
            }
            other => panic!("{other:?}"),
        }
        let plan = chunked.plan(&[3..9, 2..4]).unwrap();
        let raw_file = std::fs::File::open(&path).unwrap();
        let Block::F64(got) = read_raw(&raw_file, &path, &plan, &[3..9, 2..4], DType::F64).unwrap() else { panic!() };
        assert_eq!(got, data.slice(ndarray::s![3..9, 2..4]).into_dyn());
        let contiguous = raw_layout(&file.dataset("contiguous").unwrap(), DType::F64).expect("a raw layout");
        let plan = contiguous.plan(&[1..4, 5..7]).unwrap();
        let Block::F64(got) = read_raw(&raw_file, &path, &plan, &[1..4, 5..7], DType::F64).unwrap() else { panic!() };
        assert_eq!(got, data.slice(ndarray::s![1..4, 5..7]).into_dyn());
        assert!(
            raw_layout(&file.dataset("gzip").unwrap(), DType::F64).is_none(),
            "compressed data goes through the library"
        );
        drop(file);
        std::fs::remove_file(&path).unwrap();
    }
}
