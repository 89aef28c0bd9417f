//! The memory budget of a run: how large each held result is, what a run held and spilled, and
//! the spill files themselves.
//!
//! A run counts the bytes of the task results it holds in one atomic ([`Tally::held`]). Sizes
//! come from the values' codecs ([`kiln_graph::ValueCodec::nbytes`]: an array block reports its
//! buffer), looked up once per type and thread ([`Sizer`]) so that sizing a result costs a
//! comparison of type ids and one virtual call, not the registry's lock. A value whose type has
//! no codec, or whose codec cannot tell its size, counts as [`UNKNOWN_SIZE`] bytes (as a
//! distributed worker counts it) and can never be spilled.
//!
//! A spill file is the value in kiln's at-rest format ([`kiln_graph::spill`], streamed through
//! LZ4 and checksummed, as distributed workers write it), in a directory of its own under the temporary directory
//! (or [`LocalScheduler::spill_dir`](crate::LocalScheduler::spill_dir)) that the run creates at
//! its first spill and removes when it ends, whether it succeeded, failed or was cancelled.

use std::any::TypeId;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use kiln_graph::codec::ValueCodec;
use kiln_graph::memory::format_bytes;
use kiln_graph::spill::{self, SpillFormatError};
use kiln_graph::{CodecRegistry, Value};

/// The size counted for a value whose size is unknown (no codec, or a codec that cannot tell
/// cheaply): the figure distributed workers use too.
pub const UNKNOWN_SIZE: u64 = 64;

/// What one run held and spilled; see [`LocalScheduler::last_run_stats`](crate::LocalScheduler::last_run_stats)
/// and [`LocalScheduler::run_with_stats`](crate::LocalScheduler::run_with_stats).
///
/// ```
/// use std::sync::Arc;
/// use kiln_graph::{Arg, GraphBuilder, Kernel, Key, kernel::func1};
/// use kiln_local::{LocalScheduler, Progress};
/// let fill: Arc<dyn Kernel> = Arc::new(func1("fill", |n: &u64| vec![1.0f64; *n as usize]));
/// let mut g = GraphBuilder::new();
/// let x = g.add(Key::new("x"), fill, [Arg::literal(1000u64)]).unwrap();
/// let graph = g.build().unwrap();
/// let sched = LocalScheduler::threads(1).with_progress(Progress::Never).memory_limit(1 << 20);
/// let (_, stats) = sched.run_with_stats(&graph, &[x]).unwrap();
/// assert_eq!(stats.peak_held_bytes, 8000);
/// assert_eq!(stats.memory_limit, Some(1 << 20));
/// assert_eq!(stats.spill_count, 0);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunStats {
    /// The memory limit the run worked under (`None`: no limit was set and the machine's memory
    /// could not be read).
    pub memory_limit: Option<u64>,
    /// The most bytes of task results held in memory at once, outputs included (each value as
    /// its codec measures it, [`UNKNOWN_SIZE`] without one).
    pub peak_held_bytes: u64,
    /// Bytes of values moved out of memory to spill files (as measured in memory, before
    /// compression; a value spilled twice counts twice).
    pub spilled_bytes: u64,
    /// How many times a value was moved out of memory to a spill file.
    pub spill_count: u64,
    /// How many times a spilled value was read back for a reader (or as an output).
    pub read_back_count: u64,
    /// How many source tasks started while held memory was over the target, because nothing
    /// else could run.
    pub forced_sources: u64,
}

impl RunStats {
    /// The line the progress bar ends with: `"peak held 31.20 MiB of a 32.00 MiB limit;
    /// spilled 48 values (96.00 MiB), read back 50"`.
    pub fn summary(&self) -> String {
        let mut line = format!("peak held {}", format_bytes(self.peak_held_bytes));
        if let Some(limit) = self.memory_limit {
            line.push_str(&format!(" of a {} limit", format_bytes(limit)));
        }
        if self.spill_count > 0 {
            line.push_str(&format!(
                "; spilled {} values ({}), read back {}",
                self.spill_count,
                format_bytes(self.spilled_bytes),
                self.read_back_count
            ));
        }
        line
    }
}

/// A run's memory counters. `held` and `peak` are touched when a thread flushes its local count
/// (see `run.rs`); the others only on the slow paths (spilling, reading back, forcing a source).
#[derive(Default)]
pub(crate) struct Tally {
    /// Signed: a thread may flush the release of a value another thread stored but has not
    /// flushed yet, so the sum can dip below zero for a moment.
    pub(crate) held: AtomicI64,
    pub(crate) peak: AtomicU64,
    pub(crate) spilled_bytes: AtomicU64,
    pub(crate) spill_count: AtomicU64,
    pub(crate) read_back_count: AtomicU64,
    pub(crate) forced_sources: AtomicU64,
}

impl Tally {
    /// Counts `bytes` more held and returns the new total.
    #[inline]
    pub(crate) fn add(&self, bytes: u64) -> u64 {
        let bytes = bytes.min(i64::MAX as u64) as i64;
        let held = self.held.fetch_add(bytes, Ordering::Relaxed).saturating_add(bytes).max(0) as u64;
        // A load first: the peak rarely moves, and a plain load is cheaper than a
        // read-modify-write.
        if held > self.peak.load(Ordering::Relaxed) {
            self.peak.fetch_max(held, Ordering::Relaxed);
        }
        held
    }

    /// Counts `bytes` fewer held and returns the total before.
    #[inline]
    pub(crate) fn sub(&self, bytes: u64) -> u64 {
        let bytes = bytes.min(i64::MAX as u64) as i64;
        self.held.fetch_sub(bytes, Ordering::Relaxed).max(0) as u64
    }

    pub(crate) fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed).max(0) as u64
    }

    pub(crate) fn stats(&self, memory_limit: Option<u64>) -> RunStats {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RunStats {
            memory_limit,
            peak_held_bytes: get(&self.peak),
            spilled_bytes: get(&self.spilled_bytes),
            spill_count: get(&self.spill_count),
            read_back_count: get(&self.read_back_count),
            forced_sources: get(&self.forced_sources),
        }
    }
}

/// Most value types a thread remembers the codec of; a graph with more types sizes the rest
/// through the registry (correct, only slower).
const SIZER_TYPES: usize = 16;

/// Sizes task results on one thread, remembering each type's codec.
pub(crate) struct Sizer {
    /// The type of the previous value and its codec: consecutive results are mostly of one
    /// type, so this is the whole lookup on the per-task path.
    last_type: TypeId,
    last: Option<Arc<dyn ValueCodec>>,
    codecs: Vec<(TypeId, Option<Arc<dyn ValueCodec>>)>,
}

impl Default for Sizer {
    fn default() -> Self {
        // No value is a `Sizer`, so the first lookup misses.
        Sizer { last_type: TypeId::of::<Sizer>(), last: None, codecs: Vec::new() }
    }
}

impl Sizer {
    /// The value's size in bytes and whether it has a codec (so it can be spilled).
    #[inline]
    pub(crate) fn measure(&mut self, value: &Value) -> (u64, bool) {
        let ty = value.type_id();
        if ty == self.last_type {
            return size_with(self.last.as_ref(), value);
        }
        self.measure_other(ty, value)
    }

    #[cold]
    fn measure_other(&mut self, ty: TypeId, value: &Value) -> (u64, bool) {
        let known = match self.codecs.iter().position(|(t, _)| *t == ty) {
            Some(i) => &self.codecs[i].1,
            None => {
                let codec = CodecRegistry::global().codec_for(ty);
                if self.codecs.len() >= SIZER_TYPES {
                    return size_with(codec.as_ref(), value);
                }
                self.codecs.push((ty, codec));
                &self.codecs[self.codecs.len() - 1].1
            }
        };
        self.last_type = ty;
        self.last = known.clone();
        size_with(self.last.as_ref(), value)
    }
}

#[inline]
fn size_with(codec: Option<&Arc<dyn ValueCodec>>, value: &Value) -> (u64, bool) {
    match codec {
        Some(c) => (c.nbytes(value).map_or(UNKNOWN_SIZE, |n| n as u64), true),
        None => (UNKNOWN_SIZE, false),
    }
}

/// Why a value could not be written to its spill file.
pub(crate) enum SpillFailure {
    /// The value's codec refused it: keep it in memory, as a value without a codec.
    Unencodable,
    /// The file could not be written (a full disk, an unwritable directory); nothing is left
    /// of it.
    Io(String),
}

/// Writes `value` to `path` (a new file) in kiln's at-rest format, streaming. On failure the
/// partial file is removed. Returns the bytes written.
pub(crate) fn write_spill(value: &Value, path: &Path) -> Result<u64, SpillFailure> {
    let written =
        std::fs::File::create_new(path).map_err(SpillFormatError::Io).and_then(|file| spill::write_value(value, file));
    written.map_err(|e| {
        // The file may exist, truncated: a full disk must not also leave debris behind.
        let _ = std::fs::remove_file(path);
        match e {
            SpillFormatError::Unencodable(_) => SpillFailure::Unencodable,
            SpillFormatError::Io(e) => SpillFailure::Io(advice(&e)),
            SpillFormatError::Corrupt(message) => SpillFailure::Io(message),
        }
    })
}

fn advice(e: &std::io::Error) -> String {
    format!("{e}; free space there or give the scheduler a spill directory with room (LocalScheduler::spill_dir)")
}

/// Reads a value back from its spill file.
pub(crate) fn read_spill(path: &Path) -> Result<Value, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    spill::read_value(std::io::BufReader::with_capacity(1 << 18, file)).map_err(|e| e.to_string())
}

/// A run's spill directory: created on first use, removed (with everything in it) on drop.
pub(crate) struct SpillDir {
    parent: PathBuf,
    dir: Option<PathBuf>,
}

impl SpillDir {
    pub(crate) fn new(parent: PathBuf) -> Self {
        SpillDir { parent, dir: None }
    }

    /// The run's directory, creating it if needed; on failure, the path that could not be
    /// created and why.
    pub(crate) fn dir(&mut self) -> Result<&Path, (PathBuf, String)> {
        if self.dir.is_none() {
            self.dir = Some(create_unique(&self.parent)?);
        }
        Ok(self.dir.as_deref().expect("set above"))
    }

    /// Where the run's directory is, once created.
    #[cfg(test)]
    pub(crate) fn created(&self) -> Option<&Path> {
        self.dir.as_deref()
    }
}

/// The spill file of task `task` in `dir`.
pub(crate) fn file_in(dir: &Path, task: u32) -> PathBuf {
    dir.join(format!("{task}.lz4"))
}

fn create_unique(parent: &Path) -> Result<PathBuf, (PathBuf, String)> {
    static RUNS: AtomicU64 = AtomicU64::new(0);
    std::fs::create_dir_all(parent).map_err(|e| (parent.to_path_buf(), advice(&e)))?;
    loop {
        let n = RUNS.fetch_add(1, Ordering::Relaxed);
        let dir = parent.join(format!("kiln-spill-{}-{n}", std::process::id()));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            // Left by an earlier process with the same pid: take the next name.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err((dir, advice(&e))),
        }
    }
}

impl Drop for SpillDir {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spilled_value_reads_back_bit_for_bit() {
        let mut dir = SpillDir::new(std::env::temp_dir());
        let path = file_in(dir.dir().unwrap(), 3);
        let v: Vec<f64> = (0..1000).map(|i| (i as f64).sin()).chain([f64::NAN, -0.0]).collect();
        let written = write_spill(&Value::new(v.clone()), &path).ok().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), written);
        let back = read_spill(&path).unwrap();
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(back.downcast_ref::<Vec<f64>>().unwrap()), bits(&v));
        let root = dir.created().unwrap().to_path_buf();
        drop(dir);
        assert!(!root.exists(), "the spill directory outlived its run");
    }

    #[test]
    fn sizes_come_from_codecs_and_unknown_types_count_a_fixed_size() {
        struct Opaque;
        let mut sizer = Sizer::default();
        assert_eq!(sizer.measure(&Value::new(vec![0f64; 100])), (800, true));
        assert_eq!(sizer.measure(&Value::new(vec![0f64; 3])), (24, true));
        assert_eq!(sizer.measure(&Value::new(Opaque)), (UNKNOWN_SIZE, false));
        assert_eq!(sizer.measure(&Value::new(7i64)), (8, true));
    }
}
