//! Blocks read from and written to an HDF5 dataset: one block is one hyperslab of the dataset,
//! so a block reads exactly its own elements. The graph builders in `lower::hdf5` decide the
//! hyperslabs; the dataset is opened once per process.
//!
//! The HDF5 library is not thread-safe; `hdf5-metno` serializes every call through one
//! process-wide lock, so reads of one process run one at a time inside the library (as h5py's
//! do under Dask's lock). Writes also serialize across processes: each write takes an exclusive
//! lock on the file itself (HDF5's own file locking is turned off for it, since it would refuse
//! the second writer instead of waiting).

use std::ops::Range;
use std::path::Path;
use std::sync::{Arc, OnceLock};

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

/// How long a writer waits for another writer of the same file before giving up.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(300);

/// An exclusive lock on the file at `path`, held by one writer (thread or process) at a time.
/// Waits for other writers, but not forever: a lock that is never released (a stuck process)
/// becomes an error naming the file instead of a hang.
fn lock_file(path: &Path) -> Result<std::fs::File, String> {
    let file = std::fs::OpenOptions::new().read(true).write(true).open(path).map_err(|e| e.to_string())?;
    let start = std::time::Instant::now();
    let mut pause = std::time::Duration::from_millis(1);
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if start.elapsed() < LOCK_WAIT => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(std::time::Duration::from_millis(50));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(format!("another writer held the file for {} s", LOCK_WAIT.as_secs()));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e.to_string()),
        }
    }
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
