//! The per-block floor: plain blocks in, plain values out (Dask's `array/chunk.py`).
//!
//! Everything here works on [`Block`](crate::Block)s, `ndarray` arrays and small plain-data
//! results (reduction partials, QR pieces). Nothing here knows about arrays, nodes, keys, tasks
//! or graphs: the lowering floor (`crate::lower`) decides which blocks meet in which task and
//! wraps these functions in kernels. Keeping the math here means it can be tested and
//! benchmarked on blocks alone, and a new operation's block code has one obvious home.
//!
//! - [`expr`]: block expressions (the fused elementwise/slice/transpose work of one task) and
//!   their evaluation; [`lanes`] compiles the common ones into a streaming loop.
//! - [`source`]: blocks generated from nothing (`ones`, `arange`, `random`, ...).
//! - `reduce`: reduction partials, their combination and the final block.
//! - `linalg`: block matrix products, TSQR and SVD pieces, Cholesky steps.
//! - `scan`: cumulative sums and products.
//! - `select`: pieces assembled into a block, boolean selection, counting.
//! - `zarr` (feature `zarr`): blocks read from and written to a Zarr store.
//! - `hdf5` (feature `hdf5`): blocks read from and written to an HDF5 dataset.
//! - `netcdf` (feature `netcdf`): blocks read from a NetCDF variable, CF-decoded.

pub mod expr;
#[cfg(feature = "hdf5")]
pub(crate) mod hdf5;
pub mod lanes;
pub(crate) mod linalg;
#[cfg(feature = "netcdf")]
pub(crate) mod netcdf;
pub(crate) mod npy;
pub(crate) mod reduce;
pub(crate) mod scan;
pub(crate) mod select;
pub mod source;
#[cfg(any(feature = "hdf5", feature = "netcdf"))]
pub(crate) mod writer_lock;
#[cfg(feature = "zarr")]
pub(crate) mod zarr;

/// Why a block computation failed (bad input data, or parameters that do not fit the blocks).
/// Kernels turn it into the task's error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ChunkError(pub String);

impl ChunkError {
    /// A failure with a message.
    pub fn msg(message: impl std::fmt::Display) -> Self {
        ChunkError(message.to_string())
    }
}
