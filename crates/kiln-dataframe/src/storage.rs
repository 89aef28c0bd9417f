//! Where files live: one small synchronous trait, so object stores can plug in later.
//!
//! Readers and writers never touch `std::fs` directly; they ask [`storage_for`] for the
//! [`Storage`] that serves a path. Paths without a scheme (`data/*.csv`, `/tmp/x.parquet`) are
//! local files; a path `scheme://rest` is served by the storage registered under `scheme` with
//! [`register_storage`] (in every process that runs the tasks, like kernels).
//!
//! ```
//! use kiln_dataframe::storage::{storage_for, Storage};
//! let dir = std::env::temp_dir().join(format!("kiln-storage-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let path = dir.join("a.txt").to_string_lossy().into_owned();
//! let store = storage_for(&path).unwrap();
//! store.write(&path, b"hello").unwrap();
//! assert_eq!(store.read_range(&path, 1..3).unwrap(), b"el");
//! assert_eq!(store.list(&format!("{}/*.txt", dir.display())).unwrap(), vec![path]);
//! std::fs::remove_dir_all(&dir).unwrap();
//! ```

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;
use std::sync::{Arc, OnceLock, RwLock};

use crate::error::{DataFrameError, Result};

/// A place files are read from and written to. Implementations must be cheap to share between
/// threads; every method is synchronous (the executors already run tasks on threads).
pub trait Storage: Send + Sync + 'static {
    /// The files matching `pattern` (a path with `*`, `?` and `[...]` wildcards, or a directory,
    /// which means every file directly inside it), sorted by name.
    ///
    /// # Errors
    /// [`DataFrameError::Io`] when listing fails. An empty match is not an error here.
    fn list(&self, pattern: &str) -> Result<Vec<String>>;

    /// The size of the file in bytes.
    ///
    /// # Errors
    /// [`DataFrameError::Io`] naming the file.
    fn size(&self, path: &str) -> Result<u64>;

    /// The bytes of `range` of the file.
    ///
    /// # Errors
    /// [`DataFrameError::Io`] naming the file.
    fn read_range(&self, path: &str, range: Range<u64>) -> Result<Vec<u8>>;

    /// The whole file.
    ///
    /// # Errors
    /// [`DataFrameError::Io`] naming the file.
    fn read(&self, path: &str) -> Result<Vec<u8>> {
        let size = self.size(path)?;
        self.read_range(path, 0..size)
    }

    /// Writes the file, replacing it, creating its parent directories.
    ///
    /// # Errors
    /// [`DataFrameError::Io`] naming the file.
    fn write(&self, path: &str, bytes: &[u8]) -> Result<()>;
}

/// The local file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalStorage;

fn io_error(path: &str, error: impl std::fmt::Display) -> DataFrameError {
    DataFrameError::Io { path: path.to_string(), message: error.to_string() }
}

impl Storage for LocalStorage {
    fn list(&self, pattern: &str) -> Result<Vec<String>> {
        let path = std::path::Path::new(pattern);
        let pattern = if path.is_dir() { format!("{}/*", pattern.trim_end_matches('/')) } else { pattern.to_string() };
        let entries = glob::glob(&pattern).map_err(|e| io_error(&pattern, e))?;
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_error(&pattern, e))?;
            if entry.is_file() {
                files.push(entry.to_string_lossy().into_owned());
            }
        }
        files.sort();
        Ok(files)
    }

    fn size(&self, path: &str) -> Result<u64> {
        std::fs::metadata(path).map(|m| m.len()).map_err(|e| io_error(path, e))
    }

    fn read_range(&self, path: &str, range: Range<u64>) -> Result<Vec<u8>> {
        let mut file = std::fs::File::open(path).map_err(|e| io_error(path, e))?;
        file.seek(SeekFrom::Start(range.start)).map_err(|e| io_error(path, e))?;
        let len = range.end.saturating_sub(range.start);
        let mut out = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        file.take(len).read_to_end(&mut out).map_err(|e| io_error(path, e))?;
        if (out.len() as u64) < len {
            return Err(io_error(path, format!("file ends before byte {} (read {} of {len})", range.end, out.len())));
        }
        Ok(out)
    }

    fn read(&self, path: &str) -> Result<Vec<u8>> {
        std::fs::read(path).map_err(|e| io_error(path, e))
    }

    fn write(&self, path: &str, bytes: &[u8]) -> Result<()> {
        if let Some(parent) = std::path::Path::new(path).parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| io_error(path, e))?;
        }
        std::fs::write(path, bytes).map_err(|e| io_error(path, e))
    }
}

fn registry() -> &'static RwLock<HashMap<String, Arc<dyn Storage>>> {
    static REGISTRY: OnceLock<RwLock<HashMap<String, Arc<dyn Storage>>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// Serves paths `scheme://...` with `storage` in this process (replacing an earlier one).
pub fn register_storage(scheme: &str, storage: Arc<dyn Storage>) {
    registry().write().unwrap_or_else(|p| p.into_inner()).insert(scheme.to_string(), storage);
}

/// The storage serving `path`: the registered one for its scheme, or the local file system for
/// a path without one.
///
/// # Errors
/// [`DataFrameError::Io`] for a scheme nobody registered.
pub fn storage_for(path: &str) -> Result<Arc<dyn Storage>> {
    match path.split_once("://") {
        None => Ok(Arc::new(LocalStorage)),
        Some((scheme, _)) => {
            registry().read().unwrap_or_else(|p| p.into_inner()).get(scheme).cloned().ok_or_else(|| {
                io_error(path, format!("no storage is registered for {scheme}://; register one with register_storage"))
            })
        }
    }
}

/// A file of a [`Storage`] as Parquet's random-access reader: the footer and each column chunk
/// are read as ranges, so a projection reads only its columns' bytes.
pub(crate) struct StorageFile {
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) path: String,
    pub(crate) size: u64,
}

impl parquet::file::reader::Length for StorageFile {
    fn len(&self) -> u64 {
        self.size
    }
}

impl parquet::file::reader::ChunkReader for StorageFile {
    type T = std::io::Cursor<Vec<u8>>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        let bytes = self
            .storage
            .read_range(&self.path, start..self.size)
            .map_err(|e| parquet::errors::ParquetError::External(Box::new(e)))?;
        Ok(std::io::Cursor::new(bytes))
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<bytes::Bytes> {
        let bytes = self
            .storage
            .read_range(&self.path, start..start + length as u64)
            .map_err(|e| parquet::errors::ParquetError::External(Box::new(e)))?;
        Ok(bytes::Bytes::from(bytes))
    }
}
