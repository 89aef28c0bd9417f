//! Blocks read from and written to a Zarr store: one block is one region of the store. The
//! graph builders in `lower::zarr` decide the regions; the store is opened once per process.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use ndarray::ArrayD;
use zarrs::array::ArraySubset;
use zarrs::filesystem::FilesystemStore;

use crate::block::{Block, DType};
use crate::chunk::ChunkError;
use crate::error::ArrayError;

/// A Zarr array in a local filesystem store.
pub(crate) type ZarrArray = zarrs::array::Array<FilesystemStore>;

pub(crate) fn io(path: &Path, e: impl std::fmt::Display) -> ArrayError {
    ArrayError::Io(format!("zarr store {}: {e}", path.display()))
}

/// Opens the Zarr array at `path`.
pub(crate) fn open(path: &Path) -> Result<ZarrArray, ArrayError> {
    if !path.exists() {
        return Err(io(path, "does not exist"));
    }
    let store = Arc::new(FilesystemStore::new(path).map_err(|e| io(path, e))?);
    ZarrArray::open(store, "/").map_err(|e| io(path, e))
}

/// The store at `path`, opened on first use. Kernels travel by path (a worker sharing the
/// filesystem opens the same store); in the building process the cell is pre-filled with the
/// array already opened, so local runs never reopen it.
pub(crate) fn opened<'a>(cell: &'a OnceLock<Arc<ZarrArray>>, path: &Path) -> Result<&'a Arc<ZarrArray>, ChunkError> {
    if let Some(array) = cell.get() {
        return Ok(array);
    }
    let array = open(path).map_err(|e| ChunkError::msg(e.to_string()))?;
    Ok(cell.get_or_init(|| Arc::new(array)))
}

/// The region `ranges` of `array` as a block of `dtype`.
pub(crate) fn read_region(
    array: &ZarrArray,
    path: &Path,
    ranges: &[std::ops::Range<u64>],
    dtype: DType,
) -> Result<Block, ChunkError> {
    let subset = ArraySubset::new_with_ranges(ranges);
    let fail = |e: zarrs::array::ArrayError| ChunkError::msg(format!("reading zarr store {}: {e}", path.display()));
    Ok(match dtype {
        DType::Bool => Block::Bool(array.retrieve_array_subset::<ArrayD<bool>>(&subset).map_err(fail)?),
        DType::I32 => Block::I32(array.retrieve_array_subset::<ArrayD<i32>>(&subset).map_err(fail)?),
        DType::I64 => Block::I64(array.retrieve_array_subset::<ArrayD<i64>>(&subset).map_err(fail)?),
        DType::F32 => Block::F32(array.retrieve_array_subset::<ArrayD<f32>>(&subset).map_err(fail)?),
        DType::F64 => Block::F64(array.retrieve_array_subset::<ArrayD<f64>>(&subset).map_err(fail)?),
    })
}

/// Writes `block` into `array` at `offset`; returns the written marker (a `true` block of `ndim`
/// length-1 axes) that the write's task produces.
pub(crate) fn write_region(
    array: &ZarrArray,
    path: &Path,
    offset: &[u64],
    ndim: usize,
    block: Block,
) -> Result<Block, ChunkError> {
    let ranges: Vec<std::ops::Range<u64>> = offset.iter().zip(block.shape()).map(|(&o, &n)| o..o + n as u64).collect();
    let fail = |e: zarrs::array::ArrayError| ChunkError::msg(format!("writing zarr store {}: {e}", path.display()));
    crate::with_block!(block, a => {
        let a = if a.is_standard_layout() { a } else { a.as_standard_layout().into_owned() };
        array.store_array_subset(&ranges, a).map_err(fail)?
    });
    Ok(Block::Bool(ArrayD::from_elem(ndarray::IxDyn(&vec![1; ndim]), true)))
}
