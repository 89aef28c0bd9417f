//! Memory budgets: how large a value a kernel may allocate, and how large a result may be
//! assembled, so an oversized block or result is an error instead of an aborted process.
//!
//! An executor sets the budget of the threads that run kernels ([`set_budget`], [`with_budget`]):
//! a distributed worker its memory limit, the local scheduler the memory available. Kernels that
//! know the size of what they are about to allocate (array blocks always do) call
//! [`check_alloc`] once per allocation, never per element. Without a budget every allocation
//! passes. [`check_result`] does the same for the result a collection assembles in the caller's
//! process.
//!
//! Nothing here looks outside the process (the graph core does no I/O): how much memory is
//! available is asked of a probe the executor installs ([`set_available_probe`]; kiln-local
//! reads `/proc/meminfo` and the cgroup limit), only when a budget or a result check needs it.
//!
//! ```
//! use kiln_graph::memory::{Budget, check_alloc, format_bytes, with_budget};
//! let limit = Budget::Limit { bytes: 4 << 30, of: "the worker memory limit" };
//! let err = with_budget(Some(limit), || check_alloc("block", 320_000_000_000)).unwrap_err();
//! assert_eq!(err.to_string(), "block of 298.02 GiB exceeds the worker memory limit of 4.00 GiB");
//! assert!(with_budget(Some(limit), || check_alloc("block", 1 << 20)).is_ok());
//! assert_eq!(format_bytes(1536), "1.50 KiB");
//! ```

use std::cell::Cell;
use std::fmt;

/// How much memory kernels on a thread may allocate for one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// A fixed number of bytes; `of` says whose limit it is in messages ("the worker memory
    /// limit").
    Limit {
        /// The limit in bytes.
        bytes: u64,
        /// Whose limit, for messages: "the worker memory limit", "the memory limit".
        of: &'static str,
    },
    /// Whatever the machine has available at the moment of the allocation
    /// ([`available`], read only for allocations of at least [`PROBE_ABOVE`] bytes).
    Available,
}

/// Allocations smaller than this never read the machine's available memory: the probe costs a
/// file read, the allocation is small, and no machine that runs kiln lacks this much.
pub const PROBE_ABOVE: u64 = 64 << 20;

/// An allocation or a result larger than the memory it must fit in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.message())]
pub struct TooLarge {
    /// What was to be allocated: "block", "result", ...
    pub what: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// The memory it had to fit in, in bytes.
    pub room: u64,
    /// What that memory is: a limit (`Budget::Limit::of`) or the available memory.
    pub room_is: Room,
    /// What to do about it, appended to the message (may be empty).
    pub advice: String,
}

/// What the room of a [`TooLarge`] was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Room {
    /// A configured limit, with whose it is ("the worker memory limit").
    Limit(&'static str),
    /// The machine's available memory.
    Available,
}

impl TooLarge {
    fn message(&self) -> String {
        let mut m = match self.room_is {
            Room::Limit(of) => {
                format!("{} of {} exceeds {of} of {}", self.what, format_bytes(self.bytes), format_bytes(self.room))
            }
            Room::Available => format!(
                "{} of {} does not fit in the {} of available memory",
                self.what,
                format_bytes(self.bytes),
                format_bytes(self.room)
            ),
        };
        if !self.advice.is_empty() {
            m.push_str("; ");
            m.push_str(&self.advice);
        }
        m
    }

    /// The same error with `advice` appended to its message.
    pub fn with_advice(mut self, advice: impl Into<String>) -> Self {
        self.advice = advice.into();
        self
    }
}

thread_local! {
    static BUDGET: Cell<Option<Budget>> = const { Cell::new(None) };
}

/// Sets the budget of kernels run on this thread from now on and returns the previous one.
/// Executors with dedicated threads (a worker's compute threads) set it once per thread.
pub fn set_budget(budget: Option<Budget>) -> Option<Budget> {
    BUDGET.try_with(|b| b.replace(budget)).unwrap_or(None)
}

/// The budget of kernels run on this thread.
pub fn budget() -> Option<Budget> {
    BUDGET.try_with(Cell::get).unwrap_or(None)
}

/// Runs `f` with `budget` as this thread's budget, then restores the previous one (also when
/// `f` panics).
pub fn with_budget<R>(budget: Option<Budget>, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Budget>);
    impl Drop for Restore {
        fn drop(&mut self) {
            set_budget(self.0);
        }
    }
    let _restore = Restore(set_budget(budget));
    f()
}

/// Checks that `bytes` for `what` ("block") fit in this thread's budget. One call per
/// allocation: without a budget or below [`PROBE_ABOVE`] bytes of an `Available` budget it
/// costs a thread-local read.
///
/// # Errors
/// [`TooLarge`] naming both sizes.
pub fn check_alloc(what: &str, bytes: u64) -> Result<(), TooLarge> {
    match budget() {
        None => Ok(()),
        Some(Budget::Limit { bytes: limit, of }) if bytes > limit => Err(TooLarge {
            what: what.to_string(),
            bytes,
            room: limit,
            room_is: Room::Limit(of),
            advice: String::new(),
        }),
        Some(Budget::Limit { .. }) => Ok(()),
        Some(Budget::Available) if bytes < PROBE_ABOVE => Ok(()),
        Some(Budget::Available) => fits_available(what, bytes),
    }
}

/// Checks that a result of `bytes` fits in the memory available to this process now (always
/// passes where that cannot be read).
///
/// # Errors
/// [`TooLarge`] naming both sizes.
pub fn check_result(what: &str, bytes: u64) -> Result<(), TooLarge> {
    if bytes < PROBE_ABOVE {
        return Ok(());
    }
    fits_available(what, bytes)
}

fn fits_available(what: &str, bytes: u64) -> Result<(), TooLarge> {
    match available() {
        Some(room) if bytes > room => {
            Err(TooLarge { what: what.to_string(), bytes, room, room_is: Room::Available, advice: String::new() })
        }
        _ => Ok(()),
    }
}

static AVAILABLE_PROBE: std::sync::OnceLock<fn() -> Option<u64>> = std::sync::OnceLock::new();

/// Installs how [`available`] learns the memory the machine can give this process now. The
/// first installed probe stays (every executor installs the same one); without a probe the
/// amount is unknown and checks against it pass.
pub fn set_available_probe(probe: fn() -> Option<u64>) {
    let _ = AVAILABLE_PROBE.set(probe);
}

/// The memory the machine can give this process now, as the installed probe tells it; `None`
/// when no probe is installed or it cannot tell.
pub fn available() -> Option<u64> {
    AVAILABLE_PROBE.get().and_then(|probe| probe())
}

/// `MemAvailable` in bytes from the text of `/proc/meminfo`.
///
/// ```
/// let text = "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   22000000 kB\n";
/// assert_eq!(kiln_graph::memory::parse_meminfo(text), Some(22_000_000 * 1024));
/// ```
pub fn parse_meminfo(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let mut words = line["MemAvailable:".len()..].split_whitespace();
    let value: u64 = words.next()?.parse().ok()?;
    let scale = match words.next() {
        Some("kB") | Some("KB") => 1024,
        None => 1,
        Some(_) => return None,
    };
    value.checked_mul(scale)
}

/// Bytes for people, in binary units as Dask prints them: `"512 B"`, `"1.50 KiB"`,
/// `"298.02 GiB"`.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.2} {}", UNITS[unit])
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Budget::Limit { bytes, of } => write!(f, "{of} of {}", format_bytes(*bytes)),
            Budget::Available => f.write_str("the available memory"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(format_bytes(0), "0 B");
        assert_eq!(format_bytes(1023), "1023 B");
        assert_eq!(format_bytes(4 << 30), "4.00 GiB");
        assert_eq!(format_bytes(8_000_000_000_000), "7.28 TiB");
        assert_eq!(format_bytes(u64::MAX), "16.00 EiB");
    }

    #[test]
    fn budgets_are_per_thread_and_restored() {
        let limit = Budget::Limit { bytes: 1000, of: "the memory limit" };
        assert_eq!(budget(), None);
        with_budget(Some(limit), || {
            assert!(check_alloc("block", 1000).is_ok());
            let err = check_alloc("block", 1001).unwrap_err();
            assert_eq!(err.to_string(), "block of 1001 B exceeds the memory limit of 1000 B");
            std::thread::spawn(|| assert_eq!(budget(), None)).join().unwrap();
        });
        assert_eq!(budget(), None);
        let _ = std::panic::catch_unwind(|| with_budget(Some(limit), || panic!("boom")));
        assert_eq!(budget(), None);
    }

    #[test]
    fn the_available_budget_refuses_what_the_machine_cannot_hold() {
        // What an executor installs; a fixed amount here, so the test means the same anywhere.
        set_available_probe(|| Some(16 << 30));
        assert_eq!(available(), Some(16 << 30));
        with_budget(Some(Budget::Available), || {
            assert!(check_alloc("block", 1 << 20).is_ok());
            let err = check_alloc("block", u64::MAX / 2).unwrap_err();
            assert!(err.to_string().contains("does not fit in the"), "{err}");
            assert_eq!(err.room_is, Room::Available);
        });
        let err = check_result("result", 8_000_000_000_000_000).unwrap_err().with_advice("reduce it");
        assert!(err.to_string().starts_with("result of 7.11 PiB does not fit in the 16.00 GiB"), "{err}");
        assert!(err.to_string().ends_with("of available memory; reduce it"), "{err}");
    }

    #[test]
    fn meminfo_without_available_memory_reads_as_unknown() {
        assert_eq!(parse_meminfo("MemTotal: 10 kB\n"), None);
        assert_eq!(parse_meminfo("MemAvailable: x kB\n"), None);
    }
}
