//! Test data helpers shared by the file tests: scratch directories and files written plain or
//! compressed by extension.
#![allow(dead_code)] // Each test binary uses its own subset.

use std::io::Write;
use std::path::{Path, PathBuf};

use kiln_local::{LocalScheduler, Progress};

/// The scheduler the file tests run on: two threads, quiet.
pub fn sched() -> LocalScheduler {
    LocalScheduler::threads(2).with_progress(Progress::Never)
}

/// A fresh directory for one test (or one property-test case), removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A new empty directory whose name starts with `name` and is unique in this process.
    pub fn new(name: &str) -> TempDir {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("kiln-bag-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// `glob` inside the directory, as a pattern string.
    pub fn pattern(&self, glob: &str) -> String {
        self.0.join(glob).to_str().unwrap().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes `text` to `path`, gzip-compressed when the name ends in `.gz`.
pub fn write(path: &Path, text: &str) {
    let file = std::fs::File::create(path).unwrap();
    if path.extension().is_some_and(|e| e == "gz") {
        let mut encoder = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
        encoder.write_all(text.as_bytes()).unwrap();
        encoder.finish().unwrap();
    } else {
        let mut file = file;
        file.write_all(text.as_bytes()).unwrap();
    }
}

/// Writes `text` gzip-compressed to `path`, whatever its name.
pub fn write_gzip(path: &Path, text: &str) {
    let mut encoder = flate2::write::GzEncoder::new(std::fs::File::create(path).unwrap(), flate2::Compression::fast());
    encoder.write_all(text.as_bytes()).unwrap();
    encoder.finish().unwrap();
}
