//! HDF5 datasets ("large arrays for climate and atmospheric science"), read and written block
//! by block through the HDF5 C library (Debian's `libhdf5-dev`; this module exists with the
//! cargo feature `hdf5`). Every block of an HDF5-backed array is a task that reads only its
//! hyperslab; like Zarr and `.npy` reads, such reads can be repeated instead of held
//! ([`kiln_graph::reread`]). Many files holding pieces of one array (one per day, say) become
//! one array with [`from_hdf5_files`].
//!
//! ```
//! use kiln_array::{arange, hdf5::from_hdf5};
//! # use kiln_graph::Collection;
//! let path = std::env::temp_dir().join(format!("kiln-doc-hdf5-{}.h5", std::process::id()));
//! let sched = kiln_local::LocalScheduler::threads(2);
//! let x = arange::<f64>(0.0, 12.0, 1.0, 5).reshape(&[3, 4]);
//! x.to_hdf5(&path, "group/x").unwrap().compute_on(&sched).unwrap();
//! let y = from_hdf5::<f64>(&path, "group/x", None).unwrap();
//! assert_eq!(y.shape(), &[3, 4]);
//! assert_eq!(y.sum().scalar().compute_on(&sched).unwrap(), 66.0);
//! # std::fs::remove_file(&path).unwrap();
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kiln_graph::Tokenizer;

use crate::array::Array;
use crate::block::Element;
use crate::chunk::hdf5::{create_dataset, io, open, stored_dtype};
use crate::chunks::{ChunkSpec, normalize, regular};
use crate::error::ArrayError;
use crate::lower::hdf5::{Hdf5Read, Hdf5Store};

/// Opens `dataset` (a path inside the file such as `"temperature"` or `"run1/t"`) of the HDF5
/// file at `path` as a kiln array of `T`. Without `chunks`, blocks follow the dataset's storage
/// chunks (grown to whole multiples of them when those are small), or Dask's `"auto"` for a
/// contiguous dataset. Nothing but metadata is read until blocks are computed.
///
/// # Errors
/// [`ArrayError::Io`] naming the file and dataset: a missing file, a file that is not HDF5, a
/// dataset not in the file, or one holding another element type than `T` (no silent
/// conversion).
pub fn from_hdf5<T: Element>(
    path: impl AsRef<Path>,
    dataset: &str,
    chunks: Option<ChunkSpec>,
) -> Result<Array<T>, ArrayError> {
    from_hdf5_with(path, dataset, chunks, &Hdf5ReadOptions::default())
}

/// How [`from_hdf5_with`] reads blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hdf5ReadOptions {
    /// Read chunks with positioned reads and decode them on kiln's threads (the default), where
    /// the dataset allows: a little-endian numeric type stored contiguously or in chunks that
    /// are uncompressed or filtered only by shuffle, deflate (gzip) and a fletcher32 checksum
    /// (verified). The HDF5 library reads everything else, and everything when this is off:
    /// one block at a time, since its process-wide lock also covers decompression.
    pub direct: bool,
}

impl Default for Hdf5ReadOptions {
    fn default() -> Self {
        Hdf5ReadOptions { direct: true }
    }
}

/// [`from_hdf5`] with read options (whether chunks may be read and decoded outside the
/// library).
///
/// # Errors
/// As [`from_hdf5`].
pub fn from_hdf5_with<T: Element>(
    path: impl AsRef<Path>,
    dataset: &str,
    chunks: Option<ChunkSpec>,
    options: &Hdf5ReadOptions,
) -> Result<Array<T>, ArrayError> {
    let path = path.as_ref().to_path_buf();
    let ds = open(&path, dataset)?;
    let stored = stored_dtype(&ds).map_err(|e| io(&path, dataset, format!("holds {e}")))?;
    if stored != T::DTYPE {
        return Err(io(&path, dataset, format!("holds {stored}, not {}", T::DTYPE)));
    }
    let shape: Vec<usize> = ds.shape();
    let itemsize = T::DTYPE.itemsize();
    let chunks = match (chunks, ds.chunk()) {
        (Some(spec), _) => normalize(&spec, &shape, itemsize)?,
        (None, Some(chunk)) if chunk.len() == shape.len() => {
            let block = crate::chunks::blocks_from_storage(&shape, &chunk, itemsize);
            shape.iter().zip(&block).map(|(&d, &c)| regular(d, c)).collect()
        }
        (None, _) => normalize(&ChunkSpec::auto(), &shape, itemsize)?,
    };
    let raw = if options.direct { crate::chunk::hdf5::raw_layout(&ds, T::DTYPE).map(Arc::new) } else { None };
    let layer = Hdf5Read { path: path.clone(), dataset: dataset.to_string(), handle: Arc::new(ds), raw };
    let location = PathBuf::from(format!("{}:{dataset}", path.display()));
    Ok(Array::from_storage("from-hdf5", &location, shape, chunks, Arc::new(layer)))
}

/// Opens `dataset` in each of `paths` and concatenates them along `axis`, in the order given
/// (xarray's `open_mfdataset` for one variable: a file per day or per run). Each file's blocks
/// are chosen as [`from_hdf5`] chooses them.
///
/// # Errors
/// No paths; any file's error from [`from_hdf5`]; shapes that differ off `axis` (naming the
/// file).
pub fn from_hdf5_files<T: Element, P: AsRef<Path>>(
    paths: impl IntoIterator<Item = P>,
    dataset: &str,
    axis: isize,
    chunks: Option<ChunkSpec>,
) -> Result<Array<T>, ArrayError> {
    let mut parts: Vec<Array<T>> = Vec::new();
    let mut first: Option<(PathBuf, Vec<usize>)> = None;
    for path in paths {
        let path = path.as_ref();
        let part = from_hdf5::<T>(path, dataset, chunks.clone())?;
        match &first {
            None => first = Some((path.to_path_buf(), part.shape().to_vec())),
            Some((first_path, first_shape)) => {
                let ndim = first_shape.len();
                let ax = crate::error::normalize_axis(axis, ndim)?;
                let off_axis = |s: &[usize]| -> Vec<usize> {
                    s.iter().enumerate().filter(|&(a, _)| a != ax).map(|(_, &d)| d).collect()
                };
                if part.ndim() != ndim || off_axis(part.shape()) != off_axis(first_shape) {
                    return Err(io(
                        path,
                        dataset,
                        format!(
                            "has shape {:?}, which cannot be concatenated along axis {axis} with {:?} from {}",
                            part.shape(),
                            first_shape,
                            first_path.display()
                        ),
                    ));
                }
            }
        }
        parts.push(part);
    }
    if parts.is_empty() {
        return Err(ArrayError::Invalid(format!("from_hdf5_files: no files given for dataset {dataset}")));
    }
    if parts.len() == 1 {
        return Ok(parts.pop().expect("one part"));
    }
    let joined = crate::join::concatenate(&parts, axis);
    joined.check()?;
    Ok(joined)
}

/// A pending write of an array to an HDF5 dataset; computing it writes every block (each from
/// the task that computes it, one writer at a time per file) and returns the number of blocks
/// written.
pub type Hdf5Write = crate::writes::BlockWrites;

/// How [`Array::to_hdf5_with`] stores the dataset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hdf5Options {
    /// Deflate (gzip) level 0–9 for every storage chunk; `None` stores them uncompressed.
    pub deflate: Option<u8>,
}

impl<T: Element> Array<T> {
    /// Prepares writing this array to `dataset` of the HDF5 file at `path` (created if missing;
    /// other datasets in the file are kept, a dataset of the same name is replaced), stored in
    /// chunks the size of this array's first blocks, uncompressed; compute the result to write
    /// (Dask's `to_hdf5`).
    ///
    /// # Errors
    /// [`ArrayError::Io`] when the file or dataset cannot be created; the construction error of
    /// `self`.
    pub fn to_hdf5(&self, path: impl AsRef<Path>, dataset: &str) -> Result<Hdf5Write, ArrayError> {
        self.to_hdf5_with(path, dataset, &Hdf5Options::default())
    }

    /// [`to_hdf5`](Array::to_hdf5) with storage options (compression).
    ///
    /// # Errors
    /// As [`to_hdf5`](Array::to_hdf5); a deflate level above 9.
    pub fn to_hdf5_with(
        &self,
        path: impl AsRef<Path>,
        dataset: &str,
        options: &Hdf5Options,
    ) -> Result<Hdf5Write, ArrayError> {
        self.check()?;
        if let Some(level) = options.deflate.filter(|&l| l > 9) {
            return Err(ArrayError::Invalid(format!("deflate level {level} is out of range 0..=9")));
        }
        let path = path.as_ref().to_path_buf();
        let chunk: Vec<usize> = self.chunksize().iter().map(|&c| c.max(1)).collect();
        create_dataset(&path, dataset, self.shape(), &chunk, T::DTYPE, options.deflate)?;
        let name = Tokenizer::new()
            .add("to-hdf5")
            .add(self.name())
            .add(path.to_string_lossy().as_ref())
            .add(dataset)
            .key("to-hdf5");
        let layer = Hdf5Store { input: self.node.clone(), path, dataset: dataset.to_string() };
        Ok(Hdf5Write::new(&name, &self.numblocks(), Arc::new(layer)))
    }
}
