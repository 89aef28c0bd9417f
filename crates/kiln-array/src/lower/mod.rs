//! The lowering floor: the array-level graph ([`node`]) and how each operation turns into
//! tasks, plus the kernels those tasks run ([`kernels`]) and their wire forms ([`portable`]).
//!
//! Imports run downward: this floor uses `crate::chunk` (block math) and the data model
//! (`block`, `chunks`, `error`), never the user API. Each operation's module holds its graph
//! builder (`Layer`) only; the `Array` methods that create it live in the API modules at the
//! crate root, and the block math in `crate::chunk`.

pub(crate) mod cumulative;
pub(crate) mod decomp;
pub(crate) mod external;
#[cfg(feature = "hdf5")]
pub(crate) mod hdf5;
pub mod kernels;
pub(crate) mod map_blocks;
pub(crate) mod matmul;
#[cfg(feature = "netcdf")]
pub(crate) mod netcdf;
pub mod node;
pub(crate) mod overlap;
pub mod portable;
pub(crate) mod rechunk;
pub(crate) mod reduce;
pub(crate) mod remote;
pub(crate) mod select;
#[cfg(feature = "zarr")]
pub(crate) mod zarr;
