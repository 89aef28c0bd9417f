//! Where files live: kiln's shared storage layer ([`kiln_storage`]), re-exported here.
//!
//! Readers and writers never touch `std::fs` directly; they ask [`storage_for`] for the
//! [`Storage`] that serves a path. Paths without a scheme (`data/*.csv`, `/tmp/x.parquet`) and
//! `file://` URLs are local files; a URL `scheme://rest` is served by the storage registered
//! under `scheme` with [`register_storage`] (in every process that runs the tasks, like
//! kernels): `s3://`, `gs://`, `az://` and `https://` come with the `kiln-object-store` crate.
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

use std::sync::Arc;

pub use kiln_storage::{LocalStorage, Storage, StorageError, register_storage, storage_for};

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
