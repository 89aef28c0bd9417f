//! Blocks read from and written to a Zarr store: one block is one region of the store. The
//! graph builders in `lower::zarr` decide the regions; the store is opened once per process.
//!
//! A store is a local directory (zarrs' filesystem store) or a URL (`s3://bucket/x.zarr`,
//! `gs://`, `https://`…) served by the [`kiln_storage`] registered for its scheme, through
//! [`UrlStore`]: every chunk is one object, read with ranged requests.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use kiln_storage::StorageError as KilnStorageError;
use ndarray::ArrayD;
use zarrs::array::ArraySubset;
use zarrs::filesystem::FilesystemStore;
use zarrs::storage::byte_range::{ByteRange, ByteRangeIterator};
use zarrs::storage::{
    Bytes, MaybeBytes, MaybeBytesIterator, OffsetBytesIterator, ReadableStorageTraits, ReadableWritableStorageTraits,
    StorageError, StoreKey, StorePrefix, WritableStorageTraits, store_set_partial_many,
};

use crate::block::{Block, DType};
use crate::chunk::ChunkError;
use crate::error::ArrayError;

/// A Zarr array in a local directory or an object store.
pub(crate) type ZarrArray = zarrs::array::Array<dyn ReadableWritableStorageTraits>;

pub(crate) fn io(path: &Path, e: impl std::fmt::Display) -> ArrayError {
    ArrayError::Io(format!("zarr store {}: {e}", path.display()))
}

/// The store at `path`: its directory, or the object store serving its URL. `create` makes a
/// missing local directory (object stores have no directories to make).
pub(crate) fn store_at(path: &Path, create: bool) -> Result<Arc<dyn ReadableWritableStorageTraits>, ArrayError> {
    let text = path.to_string_lossy();
    match kiln_storage::scheme_of(&text) {
        None | Some("file") => {
            let local = Path::new(kiln_storage::local_path(&text));
            if create {
                std::fs::create_dir_all(local).map_err(|e| io(path, e))?;
            } else if !local.exists() {
                return Err(io(path, "does not exist"));
            }
            Ok(Arc::new(FilesystemStore::new(local).map_err(|e| io(path, e))?))
        }
        Some(_) => {
            let storage = kiln_storage::storage_for(&text).map_err(|e| ArrayError::Io(e.to_string()))?;
            Ok(Arc::new(UrlStore { storage, root: text.trim_end_matches('/').to_string() }))
        }
    }
}

/// Opens the Zarr array at `path`.
pub(crate) fn open(path: &Path) -> Result<ZarrArray, ArrayError> {
    ZarrArray::open(store_at(path, false)?, "/").map_err(|e| io(path, e))
}

/// A Zarr store under a URL: key `c/0/1` of `s3://b/x.zarr` is the object `s3://b/x.zarr/c/0/1`.
pub(crate) struct UrlStore {
    storage: Arc<dyn kiln_storage::Storage>,
    root: String,
}

impl UrlStore {
    fn url(&self, key: &StoreKey) -> String {
        format!("{}/{}", self.root, key.as_str())
    }
}

fn storage_error(e: KilnStorageError) -> StorageError {
    StorageError::Other(e.to_string())
}

impl ReadableStorageTraits for UrlStore {
    fn get(&self, key: &StoreKey) -> Result<MaybeBytes, StorageError> {
        match self.storage.read(&self.url(key)) {
            Ok(bytes) => Ok(Some(Bytes::from(bytes))),
            // A chunk never written reads as the fill value: absent is an answer, not an error.
            Err(KilnStorageError::NotFound { .. }) => Ok(None),
            Err(e) => Err(storage_error(e)),
        }
    }

    fn get_partial_many<'a>(
        &'a self,
        key: &StoreKey,
        byte_ranges: ByteRangeIterator<'a>,
    ) -> Result<MaybeBytesIterator<'a>, StorageError> {
        let url = self.url(key);
        let ranges: Vec<ByteRange> = byte_ranges.collect();
        let open_ended = ranges.iter().any(|r| matches!(r, ByteRange::Suffix(_) | ByteRange::FromStart(_, None)));
        let size = if open_ended {
            match self.size_key(key)? {
                Some(size) => size,
                None => return Ok(None),
            }
        } else {
            0
        };
        let mut out = Vec::with_capacity(ranges.len());
        for range in ranges {
            match self.storage.read_range(&url, range.start(size)..range.end(size)) {
                Ok(bytes) => out.push(Ok(Bytes::from(bytes))),
                Err(KilnStorageError::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(storage_error(e)),
            }
        }
        Ok(Some(Box::new(out.into_iter())))
    }

    fn size_key(&self, key: &StoreKey) -> Result<Option<u64>, StorageError> {
        match self.storage.size(&self.url(key)) {
            Ok(size) => Ok(Some(size)),
            Err(KilnStorageError::NotFound { .. }) => Ok(None),
            Err(e) => Err(storage_error(e)),
        }
    }

    fn supports_get_partial(&self) -> bool {
        true
    }
}

impl WritableStorageTraits for UrlStore {
    fn set(&self, key: &StoreKey, value: Bytes) -> Result<(), StorageError> {
        self.storage.write(&self.url(key), &value).map_err(storage_error)
    }

    fn set_partial_many(&self, key: &StoreKey, offset_values: OffsetBytesIterator) -> Result<(), StorageError> {
        // Objects are written whole: read, patch, write back.
        store_set_partial_many(self, key, offset_values)
    }

    fn supports_set_partial(&self) -> bool {
        false
    }

    fn erase(&self, key: &StoreKey) -> Result<(), StorageError> {
        self.storage.delete(&self.url(key)).map_err(storage_error)
    }

    fn erase_prefix(&self, prefix: &StorePrefix) -> Result<(), StorageError> {
        let pattern = format!("{}/{}**", self.root, prefix.as_str());
        for url in self.storage.list(&pattern).map_err(storage_error)? {
            self.storage.delete(&url).map_err(storage_error)?;
        }
        Ok(())
    }
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
