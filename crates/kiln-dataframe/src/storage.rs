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
    type T = RangeReader;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        // Parquet asks for a reader at each page to parse the page's header (tens of bytes),
        // then takes the page's data with `get_bytes`: reading to the end of the file here
        // would read the rest of the file once per page.
        Ok(RangeReader {
            storage: self.storage.clone(),
            path: self.path.clone(),
            next: start.min(self.size),
            end: self.size,
            buffer: Vec::new(),
            used: 0,
            piece: FIRST_PIECE,
        })
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<bytes::Bytes> {
        let bytes = self
            .storage
            .read_range(&self.path, start..start + length as u64)
            .map_err(|e| parquet::errors::ParquetError::External(Box::new(e)))?;
        Ok(bytes::Bytes::from(bytes))
    }
}

/// The first read of a [`RangeReader`]: enough for a page header with its statistics.
const FIRST_PIECE: u64 = 16 << 10;
/// The largest read of a [`RangeReader`]; pieces double up to it.
const LARGEST_PIECE: u64 = 8 << 20;

/// A file of a [`Storage`] read forward from an offset, in pieces that start small and grow,
/// so a reader that needs a few bytes reads a few kilobytes and one that goes on pays few
/// requests.
pub(crate) struct RangeReader {
    storage: Arc<dyn Storage>,
    path: String,
    /// The file offset of the next piece.
    next: u64,
    end: u64,
    buffer: Vec<u8>,
    /// How much of `buffer` was handed out.
    used: usize,
    piece: u64,
}

impl std::io::Read for RangeReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.used == self.buffer.len() {
            if self.next >= self.end || out.is_empty() {
                return Ok(0);
            }
            let upto = (self.next + self.piece.max(out.len() as u64)).min(self.end);
            self.buffer = self.storage.read_range(&self.path, self.next..upto).map_err(std::io::Error::other)?;
            self.used = 0;
            self.next = upto;
            self.piece = (self.piece * 2).min(LARGEST_PIECE);
        }
        let n = out.len().min(self.buffer.len() - self.used);
        out[..n].copy_from_slice(&self.buffer[self.used..self.used + n]);
        self.used += n;
        Ok(n)
    }
}
