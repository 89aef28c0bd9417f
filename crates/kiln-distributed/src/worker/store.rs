//! A worker's values: in memory, or in spill files on local disk.
//!
//! The store only keeps what [`kiln_worker::WorkerState`] decides: which values stay in
//! memory, which are written to disk, which are read back, which are dropped. It is shared with
//! the peer server, which serves values from memory or reads them from their spill file.
//!
//! The mutex guards two maps and is held for map operations only. Encoding, compressing and
//! writing a spill file ([`write_spill`]) and reading one back ([`read_spill`]) are blocking
//! functions the shell runs on tokio's blocking pool, outside the lock, so the worker's small
//! runtime keeps answering the scheduler (and sending heartbeats) while a value spills.
//!
//! A spill file holds the value in kiln's at-rest format ([`kiln_graph::spill`]): streamed
//! through LZ4 and checksummed, with no whole-file buffer beside the value.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use kiln_graph::spill::{self, SpillFormatError};
use kiln_graph::{Key, Value};
use kiln_worker::{SpillError, SpillFile};
use rustc_hash::FxHashMap;

/// Why a spill file could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum UnspillError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not what was written.
    #[error("{path} is corrupt: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Where a value is.
pub enum Lookup {
    /// In memory.
    Memory(Value),
    /// In this spill file.
    Disk(PathBuf),
    /// Not here.
    Absent,
}

#[derive(Default)]
struct Inner {
    memory: FxHashMap<Key, Value>,
    disk: FxHashMap<Key, SpillFile>,
}

/// A worker's values.
pub struct Store {
    inner: Mutex<Inner>,
    dir: PathBuf,
}

impl Store {
    /// A store spilling into `dir` (created on first spill, removed with the store).
    pub fn new(dir: PathBuf) -> Self {
        Store { inner: Mutex::default(), dir }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The spill directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of a spill file.
    pub fn path(&self, file: SpillFile) -> PathBuf {
        self.dir.join(format!("{}.lz4", file.0))
    }

    /// The in-memory value of `key`.
    pub fn get(&self, key: &Key) -> Option<Value> {
        self.lock().memory.get(key).cloned()
    }

    /// Fills every `Err(key)` input with its in-memory value, under one lock; the first key not
    /// in memory is returned as the error.
    ///
    /// # Errors
    /// An input that is not in memory.
    pub fn fill_inputs(&self, inputs: &mut [Result<Value, Key>]) -> Result<(), Key> {
        if inputs.iter().all(Result::is_ok) {
            return Ok(());
        }
        let inner = self.lock();
        for input in inputs.iter_mut() {
            if let Err(key) = input {
                match inner.memory.get(key) {
                    Some(value) => *input = Ok(value.clone()),
                    None => return Err(key.clone()),
                }
            }
        }
        Ok(())
    }

    /// Where `key` is, for a peer asking for it.
    pub fn lookup(&self, key: &Key) -> Lookup {
        let inner = self.lock();
        if let Some(value) = inner.memory.get(key) {
            return Lookup::Memory(value.clone());
        }
        match inner.disk.get(key) {
            Some(file) => Lookup::Disk(self.path(*file)),
            None => Lookup::Absent,
        }
    }

    /// Puts a value in memory; a disk copy of it is forgotten (its file is the state's to
    /// delete).
    pub fn insert(&self, key: Key, value: Value) {
        let mut inner = self.lock();
        inner.disk.remove(&key);
        inner.memory.insert(key, value);
    }

    /// The value's spill file is written: drop the in-memory copy.
    pub fn evict(&self, key: Key, file: SpillFile) {
        let mut inner = self.lock();
        inner.memory.remove(&key);
        inner.disk.insert(key, file);
    }

    /// Forgets a value (the caller deletes its file).
    pub fn remove(&self, key: &Key) {
        let mut inner = self.lock();
        inner.memory.remove(key);
        inner.disk.remove(key);
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Writes a value to a new spill file at `path` in kiln's at-rest format, streaming (blocking:
/// run it off the async runtime). A failed write removes what it left.
///
/// # Errors
/// [`SpillError::Unencodable`] for a value without a working codec, [`SpillError::Io`] when
/// the file cannot be written.
pub fn write_spill(value: &Value, path: &Path) -> Result<(), SpillError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| SpillError::Io(format!("{}: {e}", dir.display())))?;
    }
    let file = std::fs::File::create(path).map_err(|e| SpillError::Io(format!("{}: {e}", path.display())))?;
    let written = spill::write_value(value, file).map(drop);
    written.map_err(|e| {
        // A full disk must not also leave debris behind.
        let _ = std::fs::remove_file(path);
        match e {
            SpillFormatError::Unencodable(message) => SpillError::Unencodable(message),
            e => SpillError::Io(format!("{}: {e}", path.display())),
        }
    })
}

/// Reads a value back from its spill file (blocking: run it off the async runtime).
///
/// # Errors
/// An unreadable or corrupt file.
pub fn read_spill(path: &Path) -> Result<Value, UnspillError> {
    let file = std::fs::File::open(path).map_err(|source| UnspillError::Io { path: path.into(), source })?;
    spill::read_value(std::io::BufReader::with_capacity(1 << 18, file)).map_err(|e| match e {
        SpillFormatError::Io(source) => UnspillError::Io { path: path.into(), source },
        e => UnspillError::Corrupt { path: path.into(), message: e.to_string() },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(name: &str) -> Store {
        Store::new(std::env::temp_dir().join(format!("kiln-store-test-{}-{name}", std::process::id())))
    }

    #[test]
    fn a_spilled_value_comes_back_intact_and_is_served_from_its_file() {
        let s = store("roundtrip");
        let key = Key::with_index("v", [1]);
        s.insert(key.clone(), Value::new(vec![1.5f64; 125]));
        let file = SpillFile(7);
        let value = s.get(&key).unwrap();
        write_spill(&value, &s.path(file)).unwrap();
        s.evict(key.clone(), file);
        assert!(s.get(&key).is_none());
        let Lookup::Disk(path) = s.lookup(&key) else { panic!("not on disk") };
        let back = read_spill(&path).unwrap();
        assert_eq!(back.downcast_ref::<Vec<f64>>().unwrap(), &vec![1.5; 125]);
        s.insert(key.clone(), back);
        assert!(matches!(s.lookup(&key), Lookup::Memory(_)));
    }

    #[test]
    fn a_value_without_a_codec_is_unencodable_not_an_io_error() {
        struct Opaque;
        let s = store("opaque");
        let error = write_spill(&Value::new(Opaque), &s.path(SpillFile(1))).unwrap_err();
        assert!(matches!(error, SpillError::Unencodable(_)), "{error:?}");
    }

    #[test]
    fn an_unwritable_directory_is_an_io_error_and_a_missing_file_an_unspill_error() {
        let error = write_spill(&Value::new(vec![1.0f64]), Path::new("/proc/kiln-cannot-write/1.lz4")).unwrap_err();
        assert!(matches!(error, SpillError::Io(_)), "{error:?}");
        assert!(matches!(read_spill(Path::new("/nonexistent/kiln.lz4")), Err(UnspillError::Io { .. })));
    }

    #[test]
    fn inputs_are_filled_from_memory_or_name_the_first_missing_key() {
        let s = store("fill");
        s.insert(Key::new("a"), Value::new(1i64));
        let mut inputs = vec![Err(Key::new("a")), Ok(Value::new(2i64))];
        s.fill_inputs(&mut inputs).unwrap();
        assert!(inputs.iter().all(Result::is_ok));
        let mut inputs = vec![Err(Key::new("b"))];
        assert_eq!(s.fill_inputs(&mut inputs), Err(Key::new("b")));
    }
}
