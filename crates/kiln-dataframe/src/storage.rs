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

use std::ops::Range;
use std::sync::Arc;

use bytes::{Buf, Bytes};

pub use kiln_storage::{LocalStorage, Storage, StorageError, register_storage, storage_for};

/// A file of a [`Storage`] as Parquet's random-access reader: the footer and each column chunk
/// are read as ranges, so a projection reads only its columns' bytes.
#[derive(Clone)]
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

/// The byte ranges holding `ranges` (column chunks, in any order), with ranges that overlap or
/// lie within `gap` bytes of each other merged ([`Storage::coalesce_gap`]), in file order.
pub(crate) fn coalesce(mut ranges: Vec<Range<u64>>, gap: u64) -> Vec<Range<u64>> {
    ranges.retain(|r| !r.is_empty());
    ranges.sort_by_key(|r| r.start);
    let mut merged: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
    for range in ranges {
        match merged.last_mut() {
            Some(last) if range.start <= last.end.saturating_add(gap) => last.end = last.end.max(range.end),
            _ => merged.push(range),
        }
    }
    merged
}

/// One row group's column chunks, fetched up front, as Parquet's random-access reader: page
/// headers and pages inside them are served from memory (slices, not copies); anything else
/// (which the reader does not ask for when it reads only these chunks) is read from the file.
pub(crate) struct FetchedRanges {
    /// Fetched ranges by start offset, in file order, not overlapping.
    pub(crate) pieces: Vec<(u64, Bytes)>,
    pub(crate) file: StorageFile,
}

impl FetchedRanges {
    /// The fetched bytes from `start` to their piece's end, if a piece holds `start`.
    fn from(&self, start: u64) -> Option<Bytes> {
        let after = self.pieces.partition_point(|(s, _)| *s <= start);
        let (piece_start, bytes) = self.pieces.get(after.checked_sub(1)?)?;
        let offset = usize::try_from(start - piece_start).ok()?;
        (offset < bytes.len()).then(|| bytes.slice(offset..))
    }
}

impl parquet::file::reader::Length for FetchedRanges {
    fn len(&self) -> u64 {
        self.file.size
    }
}

/// A reader over fetched bytes or, outside them, over the file.
pub(crate) enum PieceReader {
    /// Inside a fetched range.
    Memory(bytes::buf::Reader<Bytes>),
    /// Elsewhere in the file.
    File(RangeReader),
}

impl std::io::Read for PieceReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        match self {
            PieceReader::Memory(reader) => reader.read(out),
            PieceReader::File(reader) => reader.read(out),
        }
    }
}

impl parquet::file::reader::ChunkReader for FetchedRanges {
    type T = PieceReader;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        match self.from(start) {
            Some(bytes) => Ok(PieceReader::Memory(bytes.reader())),
            None => self.file.get_read(start).map(PieceReader::File),
        }
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        match self.from(start) {
            Some(bytes) if bytes.len() >= length => Ok(bytes.slice(..length)),
            _ => self.file.get_bytes(start, length),
        }
    }
}
