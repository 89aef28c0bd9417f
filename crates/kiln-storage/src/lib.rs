//! Where data lives: one small synchronous trait that every kiln reader and writer goes through.
//!
//! Readers (dataframes' CSV and Parquet, arrays' Zarr and `.npy`, bags' text and JSON lines)
//! never open files themselves; they ask [`storage_for`] for the [`Storage`] serving a path or
//! URL. Plain paths and `file://` URLs are local files, built in. Any other scheme (`s3://`,
//! `gs://`, `az://`, `https://`) is served by the storage registered under it with
//! [`register_storage`], in every process that runs tasks, as kernels are registered: the
//! `kiln-object-store` crate registers the cloud stores, and `kiln::register_builtins` (so `kiln
//! worker`) calls it. The trait is synchronous because tasks already run on threads; whatever
//! async machinery a store needs stays inside its implementation, at the edge.
//!
//! ```
//! use kiln_storage::{storage_for, Storage};
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
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::sync::{Arc, OnceLock, RwLock};

/// A storage operation failed; every variant names the path or URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    /// The file or object does not exist (a missing bucket reads as this too).
    #[error("{url}: not found")]
    NotFound {
        /// The path or URL.
        url: String,
    },
    /// The store refused the credentials, or has none to use.
    #[error("{url}: access denied: {message}")]
    PermissionDenied {
        /// The path or URL.
        url: String,
        /// The store's message.
        message: String,
    },
    /// No storage is registered for the URL's scheme in this process.
    #[error(
        "{url}: no storage is registered for {scheme}:// in this process; object stores come with kiln's \
         default `s3`, `gcs`, `azure` and `http` features and kiln::register_builtins() (kiln worker calls it); \
         other stores plug in with kiln_storage::register_storage"
    )]
    NoStorage {
        /// The path or URL.
        url: String,
        /// Its scheme.
        scheme: String,
    },
    /// The URL cannot name anything (no bucket, a bad pattern).
    #[error("{url}: {message}")]
    InvalidUrl {
        /// The path or URL.
        url: String,
        /// What is wrong with it.
        message: String,
    },
    /// Any other failure (the system's or the store's message, after the store's retries).
    #[error("{url}: {message}")]
    Io {
        /// The path or URL.
        url: String,
        /// What happened.
        message: String,
    },
}

impl StorageError {
    /// The path or URL the error is about.
    pub fn url(&self) -> &str {
        match self {
            StorageError::NotFound { url }
            | StorageError::PermissionDenied { url, .. }
            | StorageError::NoStorage { url, .. }
            | StorageError::InvalidUrl { url, .. }
            | StorageError::Io { url, .. } => url,
        }
    }

    /// An error from the operating system's answer about `url`.
    pub fn from_io(url: &str, error: &std::io::Error) -> Self {
        match error.kind() {
            std::io::ErrorKind::NotFound => StorageError::NotFound { url: url.to_string() },
            std::io::ErrorKind::PermissionDenied => {
                StorageError::PermissionDenied { url: url.to_string(), message: error.to_string() }
            }
            _ => StorageError::Io { url: url.to_string(), message: error.to_string() },
        }
    }
}

/// Results of storage operations.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// A place files are read from and written to. Implementations are shared between task
/// threads; every method is synchronous and names the path or URL in its errors.
pub trait Storage: Send + Sync + 'static {
    /// The files matching `pattern` (a path or URL with `*`, `?`, `[...]` and `**` wildcards, or
    /// a directory or prefix ending in `/`, which means every file directly inside it), sorted by
    /// name, each spelled as `pattern` spells its scheme.
    ///
    /// # Errors
    /// When listing fails. An empty match is not an error here.
    fn list(&self, pattern: &str) -> Result<Vec<String>>;

    /// The size of the file in bytes.
    ///
    /// # Errors
    /// [`StorageError::NotFound`] for a missing file, others when the store fails.
    fn size(&self, path: &str) -> Result<u64>;

    /// The bytes of `range` of the file (all of them: a file ending early is an error).
    ///
    /// # Errors
    /// A missing file, a range past its end, a failing store.
    fn read_range(&self, path: &str, range: Range<u64>) -> Result<Vec<u8>>;

    /// Several ranges of the file, each exactly as asked, in the order asked. Readers that know
    /// what they will need (a Parquet row group's column chunks) merge nearby ranges themselves
    /// and ask once, so a remote store can send one request per range, all at once, and never
    /// widens them.
    ///
    /// # Errors
    /// As [`Storage::read_range`], for the first range that fails.
    fn read_ranges(&self, path: &str, ranges: &[Range<u64>]) -> Result<Vec<Vec<u8>>> {
        ranges.iter().map(|range| self.read_range(path, range.clone())).collect()
    }

    /// How many unneeded bytes between two wanted ranges are worth reading to save a request:
    /// readers merge ranges closer than this before [`Storage::read_ranges`]. Nothing for local
    /// files (a seek costs nothing); a remote store says what a request costs in bytes.
    fn coalesce_gap(&self) -> u64 {
        0
    }

    /// A hint that `ranges` of the file will be read soon (by [`Storage::read_ranges`] or
    /// [`Storage::read_range`]): a remote store may start fetching them in the background,
    /// within a memory budget, so that the read finds them ready while the caller was busy
    /// decoding what it read before. Never an error (a failed prefetch is fetched again by the
    /// read, which reports the failure); the default does nothing, which suits local files.
    fn prefetch(&self, path: &str, ranges: &[Range<u64>]) {
        let _ = (path, ranges);
    }

    /// The whole file.
    ///
    /// # Errors
    /// A missing file or a failing store.
    fn read(&self, path: &str) -> Result<Vec<u8>> {
        let size = self.size(path)?;
        self.read_range(path, 0..size)
    }

    /// The file as a stream, for readers that go through it once (text lines, compressed
    /// files): a store may fetch it piece by piece instead of whole.
    ///
    /// # Errors
    /// A missing file or a failing store (errors met later come from the reader).
    fn open(&self, path: &str) -> Result<Box<dyn Read + Send>> {
        Ok(Box::new(std::io::Cursor::new(self.read(path)?)))
    }

    /// Writes the file, replacing it (creating local parent directories).
    ///
    /// # Errors
    /// When the store refuses or fails.
    fn write(&self, path: &str, bytes: &[u8]) -> Result<()>;

    /// Writes the file from what `fill` writes into the sink it is given, replacing it. The
    /// default collects the bytes and calls [`Storage::write`]; the local store streams them
    /// into the file, so a writer (a Parquet partition) never holds the whole file in memory
    /// beside its data. An error from `fill` is returned as the store's error for `path`.
    ///
    /// # Errors
    /// When `fill` fails, or the store refuses or fails.
    fn write_from(
        &self,
        path: &str,
        fill: &mut dyn FnMut(&mut (dyn Write + Send)) -> std::io::Result<()>,
    ) -> Result<()> {
        let mut bytes = Vec::new();
        fill(&mut bytes).map_err(|e| StorageError::from_io(path, &e))?;
        self.write(path, &bytes)
    }

    /// Removes the file; a missing one is not an error.
    ///
    /// # Errors
    /// When the store refuses or fails.
    fn delete(&self, path: &str) -> Result<()>;
}

/// The local file system: plain paths and `file://` URLs.
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalStorage;

/// The local path a plain path or `file://` URL names.
pub fn local_path(path: &str) -> &str {
    path.strip_prefix("file://").unwrap_or(path)
}

impl Storage for LocalStorage {
    fn list(&self, pattern: &str) -> Result<Vec<String>> {
        let url_prefix = if pattern.starts_with("file://") { "file://" } else { "" };
        let local = local_path(pattern);
        let glob_pattern = if std::path::Path::new(local).is_dir() {
            format!("{}/*", local.trim_end_matches('/'))
        } else {
            local.to_string()
        };
        let invalid =
            |e: &dyn std::fmt::Display| StorageError::InvalidUrl { url: pattern.into(), message: e.to_string() };
        let entries = glob::glob(&glob_pattern).map_err(|e| invalid(&e))?;
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| StorageError::from_io(pattern, e.error()))?;
            if entry.is_file() {
                files.push(format!("{url_prefix}{}", entry.to_string_lossy()));
            }
        }
        files.sort();
        Ok(files)
    }

    fn size(&self, path: &str) -> Result<u64> {
        std::fs::metadata(local_path(path)).map(|m| m.len()).map_err(|e| StorageError::from_io(path, &e))
    }

    fn read_range(&self, path: &str, range: Range<u64>) -> Result<Vec<u8>> {
        let error = |e: std::io::Error| StorageError::from_io(path, &e);
        let mut file = std::fs::File::open(local_path(path)).map_err(error)?;
        file.seek(SeekFrom::Start(range.start)).map_err(error)?;
        let len = range.end.saturating_sub(range.start);
        let mut out = Vec::with_capacity(usize::try_from(len).unwrap_or(0).min(1 << 30));
        file.take(len).read_to_end(&mut out).map_err(error)?;
        if (out.len() as u64) < len {
            return Err(StorageError::Io {
                url: path.to_string(),
                message: format!("file ends before byte {} (read {} of {len})", range.end, out.len()),
            });
        }
        Ok(out)
    }

    fn read(&self, path: &str) -> Result<Vec<u8>> {
        std::fs::read(local_path(path)).map_err(|e| StorageError::from_io(path, &e))
    }

    fn open(&self, path: &str) -> Result<Box<dyn Read + Send>> {
        let file = std::fs::File::open(local_path(path)).map_err(|e| StorageError::from_io(path, &e))?;
        Ok(Box::new(file))
    }

    fn write(&self, path: &str, bytes: &[u8]) -> Result<()> {
        let local = local_path(path);
        if let Some(parent) = std::path::Path::new(local).parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| StorageError::from_io(path, &e))?;
        }
        std::fs::write(local, bytes).map_err(|e| StorageError::from_io(path, &e))
    }

    fn write_from(
        &self,
        path: &str,
        fill: &mut dyn FnMut(&mut (dyn Write + Send)) -> std::io::Result<()>,
    ) -> Result<()> {
        let local = local_path(path);
        let error = |e: std::io::Error| StorageError::from_io(path, &e);
        if let Some(parent) = std::path::Path::new(local).parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(error)?;
        }
        let mut out = std::io::BufWriter::new(std::fs::File::create(local).map_err(error)?);
        let written = fill(&mut out).and_then(|()| out.flush());
        drop(out);
        if let Err(e) = written {
            // A file cut short would read as a corrupt partition: none is better.
            let _ = std::fs::remove_file(local);
            return Err(error(e));
        }
        Ok(())
    }

    fn delete(&self, path: &str) -> Result<()> {
        match std::fs::remove_file(local_path(path)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StorageError::from_io(path, &e)),
            _ => Ok(()),
        }
    }
}

fn registry() -> &'static RwLock<HashMap<String, Arc<dyn Storage>>> {
    static REGISTRY: OnceLock<RwLock<HashMap<String, Arc<dyn Storage>>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// Serves URLs `scheme://...` with `storage` in this process (replacing an earlier one).
pub fn register_storage(scheme: &str, storage: Arc<dyn Storage>) {
    registry().write().unwrap_or_else(|p| p.into_inner()).insert(scheme.to_ascii_lowercase(), storage);
}

/// The scheme of a URL (`"s3"` for `s3://bucket/key`), `None` for a plain path.
pub fn scheme_of(path: &str) -> Option<&str> {
    let (scheme, _) = path.split_once("://")?;
    let valid = !scheme.is_empty()
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then_some(scheme)
}

/// The storage serving `path`: local files for a plain path or `file://`, else the one
/// registered for its scheme.
///
/// # Errors
/// [`StorageError::NoStorage`] for a scheme nobody registered in this process.
pub fn storage_for(path: &str) -> Result<Arc<dyn Storage>> {
    match scheme_of(path) {
        None | Some("file") => Ok(Arc::new(LocalStorage)),
        Some(scheme) => registry()
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&scheme.to_ascii_lowercase())
            .cloned()
            .ok_or_else(|| StorageError::NoStorage { url: path.to_string(), scheme: scheme.to_string() }),
    }
}

/// Glob patterns over object keys, for stores that list by prefix (the local store uses the
/// file system's own globbing).
pub mod pattern {
    /// The literal part of `pattern` before its first wildcard, cut back to the last `/`: the
    /// prefix to list. A pattern without wildcards is returned whole.
    pub fn literal_prefix(pattern: &str) -> &str {
        match pattern.find(['*', '?', '[']) {
            None => pattern,
            Some(first) => match pattern[..first].rfind('/') {
                Some(slash) => &pattern[..=slash],
                None => "",
            },
        }
    }

    /// Whether `pattern` has wildcards.
    pub fn has_wildcards(pattern: &str) -> bool {
        pattern.contains(['*', '?', '['])
    }

    /// A compiled pattern: `*` and `?` stay within one path segment, `**` crosses them.
    #[derive(Debug, Clone)]
    pub struct KeyPattern(glob::Pattern);

    impl KeyPattern {
        /// Compiles `pattern`.
        ///
        /// # Errors
        /// The glob syntax error (an unclosed `[`).
        pub fn new(pattern: &str) -> Result<Self, String> {
            glob::Pattern::new(pattern).map(KeyPattern).map_err(|e| e.to_string())
        }

        /// Whether `key` matches.
        pub fn matches(&self, key: &str) -> bool {
            let options = glob::MatchOptions {
                case_sensitive: true,
                require_literal_separator: true,
                require_literal_leading_dot: false,
            };
            self.0.matches_with(key, options)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("kiln-storage-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn file_urls_and_plain_paths_are_the_same_files() {
        let dir = temp_dir("file-url");
        let plain = dir.join("x.bin").to_string_lossy().into_owned();
        let url = format!("file://{plain}");
        storage_for(&url).unwrap().write(&url, b"0123456789").unwrap();
        assert_eq!(storage_for(&plain).unwrap().read_range(&plain, 2..5).unwrap(), b"234");
        assert_eq!(LocalStorage.list(&format!("file://{}/*.bin", dir.display())).unwrap(), vec![url.clone()]);
        let mut text = String::new();
        LocalStorage.open(&url).unwrap().read_to_string(&mut text).unwrap();
        assert_eq!(text, "0123456789");
        LocalStorage.delete(&url).unwrap();
        LocalStorage.delete(&url).unwrap();
        assert!(matches!(LocalStorage.size(&plain), Err(StorageError::NotFound { .. })));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_short_file_and_a_missing_one_are_errors_naming_them() {
        let dir = temp_dir("short");
        let path = dir.join("short.bin").to_string_lossy().into_owned();
        LocalStorage.write(&path, b"abc").unwrap();
        let error = LocalStorage.read_range(&path, 1..10).unwrap_err();
        assert!(error.to_string().contains("short.bin") && error.to_string().contains("ends before"), "{error}");
        let missing = dir.join("missing.bin").to_string_lossy().into_owned();
        let error = LocalStorage.read(&missing).unwrap_err();
        assert_eq!(error, StorageError::NotFound { url: missing.clone() });
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn an_unregistered_scheme_says_how_to_get_it() {
        let error = storage_for("nosuch://bucket/x.csv").err().unwrap();
        assert!(matches!(error, StorageError::NoStorage { ref scheme, .. } if scheme == "nosuch"), "{error}");
        assert!(error.to_string().contains("register_builtins"), "{error}");
        // Windows-like or odd paths with "://" later in them are still local paths.
        assert_eq!(scheme_of("data/a://b"), None);
        assert_eq!(scheme_of("S3://b/k"), Some("S3"));
    }

    #[test]
    fn key_patterns_list_by_prefix_and_match_within_segments() {
        use pattern::*;
        assert_eq!(literal_prefix("data/2015-*-*.csv"), "data/");
        assert_eq!(literal_prefix("data/x.csv"), "data/x.csv");
        assert_eq!(literal_prefix("*.csv"), "");
        assert_eq!(literal_prefix("a/b[0-9]/c"), "a/");
        let p = KeyPattern::new("data/2015-*.csv").unwrap();
        assert!(p.matches("data/2015-01.csv"));
        assert!(!p.matches("data/2015-01/x.csv"), "* crosses a /");
        assert!(KeyPattern::new("data/**/*.csv").unwrap().matches("data/a/b/c.csv"));
        assert!(KeyPattern::new("data/[").is_err());
    }
}
