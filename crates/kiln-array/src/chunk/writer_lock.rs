//! One writer at a time for the file formats whose libraries cannot take concurrent writers
//! (HDF5, NetCDF): an exclusive `flock` with a bounded wait.

/// How long a writer waits for another writer before giving up.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(300);

/// Takes an exclusive lock on `file` (held until the returned handle is dropped; threads and
/// processes exclude each other alike). Waits for other writers, but not forever: a lock that
/// is never released (a stuck process) becomes an error instead of a hang.
pub(crate) fn lock_exclusive(file: std::fs::File) -> Result<std::fs::File, String> {
    let start = std::time::Instant::now();
    let mut pause = std::time::Duration::from_millis(1);
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if start.elapsed() < LOCK_WAIT => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(std::time::Duration::from_millis(50));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(format!("another writer held the lock for {} s", LOCK_WAIT.as_secs()));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e.to_string()),
        }
    }
}
