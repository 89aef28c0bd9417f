//! Zarr stores (the chunked, cloud-native format the seeds point to), read and written chunk by
//! chunk: every block of a Zarr-backed array is a task that reads only its region, and writing
//! stores each block from the task that computes it. Zarr v2 and v3, in local directories or on
//! object stores (`s3://bucket/x.zarr` and the other URLs [`kiln_storage`] serves).

use std::path::Path;
use std::sync::Arc;

use kiln_graph::Tokenizer;
use zarrs::array::{ArrayBuilder, data_type};

use crate::array::Array;
use crate::block::{DType, Element};
use crate::chunk::zarr::{io, open, store_at};
use crate::chunks::{ChunkSpec, normalize, regular};
use crate::error::ArrayError;
use crate::lower::zarr::{ZarrRead, ZarrStore};

fn zarr_type(dtype: DType) -> zarrs::array::DataType {
    match dtype {
        DType::Bool => data_type::bool(),
        DType::I32 => data_type::int32(),
        DType::I64 => data_type::int64(),
        DType::F32 => data_type::float32(),
        DType::F64 => data_type::float64(),
    }
}

/// Opens the Zarr array at `path` (a directory, or a URL such as `s3://bucket/x.zarr` served by a
/// registered [`kiln_storage::Storage`]) as a kiln array of `T`, chunked like the store
/// unless `chunks` says otherwise. Nothing is read until blocks are computed.
///
/// # Errors
/// [`ArrayError::Io`] naming the path when the store is missing or unreadable, or holds another
/// element type than `T`.
pub fn from_zarr<T: Element>(path: impl AsRef<Path>, chunks: Option<ChunkSpec>) -> Result<Array<T>, ArrayError> {
    let path = path.as_ref().to_path_buf();
    let array = open(&path)?;
    if array.data_type() != &zarr_type(T::DTYPE) {
        return Err(io(&path, format!("holds {}, not {}", array.data_type(), T::DTYPE)));
    }
    let shape: Vec<usize> = array.shape().iter().map(|&d| d as usize).collect();
    let chunks = match chunks {
        Some(spec) => normalize(&spec, &shape, T::DTYPE.itemsize())?,
        None => {
            let first = array.chunk_shape(&vec![0; shape.len()]).map_err(|e| io(&path, e))?;
            shape.iter().zip(first.iter()).map(|(&d, c)| regular(d, c.get() as usize)).collect()
        }
    };
    let layer = ZarrRead { path: path.clone(), array: Arc::new(array) };
    Ok(Array::from_storage("from-zarr", &path, shape, chunks, Arc::new(layer)))
}

/// A pending write of an array to a Zarr store; computing it writes every block (in parallel,
/// each from the task that computes it) and returns the number of blocks written.
pub type ZarrWrite = crate::writes::BlockWrites;

impl<T: Element> Array<T> {
    /// Prepares writing this array to a new Zarr v3 store at `path` (a directory, replaced if it
    /// holds a Zarr array), chunked like this array's first blocks; compute the result to write
    /// (Dask's `to_zarr(..., compute=False)`).
    ///
    /// # Errors
    /// [`ArrayError::Io`] when the store cannot be created; the construction error of `self`.
    pub fn to_zarr(&self, path: impl AsRef<Path>) -> Result<ZarrWrite, ArrayError> {
        self.check()?;
        let path = path.as_ref().to_path_buf();
        // Zarr chunk grids are regular: align the blocks on one.
        let chunk: Vec<usize> = self.chunksize().iter().map(|&c| c.max(1)).collect();
        let grid: Vec<Vec<usize>> = self.shape().iter().zip(&chunk).map(|(&d, &c)| regular(d, c)).collect();
        let source = if &grid != self.chunks() { self.rechunk(ChunkSpec::Explicit(grid)) } else { self.clone() };
        let store = store_at(&path, true)?;
        let fill = zarrs::array::FillValue::from(vec![0u8; T::DTYPE.itemsize()]);
        let array = ArrayBuilder::new(
            self.shape().iter().map(|&d| d as u64).collect::<Vec<_>>(),
            chunk.iter().map(|&c| c as u64).collect::<Vec<_>>(),
            zarr_type(T::DTYPE),
            fill,
        )
        .build(store, "/")
        .map_err(|e| io(&path, e))?;
        array.store_metadata().map_err(|e| io(&path, e))?;
        let name =
            Tokenizer::new().add("to-zarr").add(source.name()).add(path.to_string_lossy().as_ref()).key("to-zarr");
        let layer = ZarrStore { input: source.node.clone(), path, array: Arc::new(array) };
        Ok(ZarrWrite::new(&name, &source.numblocks(), Arc::new(layer)))
    }
}
