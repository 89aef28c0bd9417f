//! The scheduler file (Dask's `--scheduler-file`): the scheduler writes its address there as
//! JSON, and workers and clients started on a shared file system read it, so a batch job does
//! not need to know in advance which node the scheduler lands on.

use std::path::Path;
use std::time::{Duration, Instant};

/// What the file holds (Dask's layout: `type` and `address`, with kiln's `pid`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SchedulerFile {
    /// Always `"Scheduler"`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `tcp://host:port` or `tls://host:port`.
    pub address: String,
    /// The scheduler's process id.
    #[serde(default)]
    pub pid: u32,
}

/// Why a scheduler file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerFileError {
    /// The file could not be written or read.
    #[error("scheduler file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not a scheduler file.
    #[error("scheduler file {path} is not valid: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The file did not appear in time.
    #[error("scheduler file {path} did not appear within {waited:?} (is the scheduler started with --scheduler-file?)")]
    Missing {
        /// The file.
        path: String,
        /// How long it was waited for.
        waited: Duration,
    },
}

/// Writes `address` to `path`, atomically (a reader never sees half a file).
///
/// # Errors
/// The file cannot be written.
pub fn write(path: &Path, address: &str) -> Result<(), SchedulerFileError> {
    let io = |source| SchedulerFileError::Io { path: path.display().to_string(), source };
    let contents = SchedulerFile { kind: "Scheduler".into(), address: address.to_string(), pid: std::process::id() };
    let text = serde_json::to_string_pretty(&contents).map_err(|e| io(std::io::Error::other(e)))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let partial = path.with_extension(format!("partial-{}", std::process::id()));
    std::fs::write(&partial, text + "\n").map_err(io)?;
    std::fs::rename(&partial, path).map_err(io)
}

/// The address in the file at `path`.
///
/// # Errors
/// The file cannot be read or is not a scheduler file.
pub fn read(path: &Path) -> Result<String, SchedulerFileError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| SchedulerFileError::Io { path: name.clone(), source })?;
    let file: SchedulerFile = serde_json::from_str(&text)
        .map_err(|e| SchedulerFileError::Invalid { path: name.clone(), message: e.to_string() })?;
    crate::comm::parse_address(&file.address).map_err(|message| SchedulerFileError::Invalid { path: name, message })?;
    Ok(file.address)
}

/// [`read`], waiting up to `patience` for the file to appear.
///
/// # Errors
/// As [`read`], or [`SchedulerFileError::Missing`] after `patience`.
pub fn wait_for(path: &Path, patience: Duration) -> Result<String, SchedulerFileError> {
    let start = Instant::now();
    loop {
        match read(path) {
            Err(SchedulerFileError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound && start.elapsed() < patience =>
            {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(SchedulerFileError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Err(SchedulerFileError::Missing { path: path.display().to_string(), waited: patience });
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_files_are_read_back_and_bad_ones_are_named() {
        let dir = std::env::temp_dir().join(format!("kiln-scheduler-file-{}", std::process::id()));
        let path = dir.join("sub/scheduler.json");
        write(&path, "tls://10.0.0.1:8786").unwrap();
        assert_eq!(read(&path).unwrap(), "tls://10.0.0.1:8786");
        std::fs::write(&path, "{\"type\": \"Scheduler\"}").unwrap();
        assert!(read(&path).unwrap_err().to_string().contains("missing field `address`"));
        let missing = dir.join("none.json");
        let err = wait_for(&missing, Duration::ZERO).unwrap_err();
        assert!(matches!(err, SchedulerFileError::Missing { .. }), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
