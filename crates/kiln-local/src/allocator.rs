//! The process's memory: glibc allocator settings for block-sized buffers, and how much memory
//! the machine can still give.
//!
//! Array blocks are a few MiB each and a computation allocates and frees thousands of them.
//! glibc serves such sizes with a fresh `mmap` until its dynamic threshold adapts, and trims its
//! heaps as soon as 128 KiB are free at the top, so the same memory is unmapped and faulted in
//! (zeroed page by page) again and again: reading a 3.2 GB Zarr store with `x.sum()` spent more
//! time in the kernel's page-fault path than reading and summing (6.4 s, 8 s of system time;
//! 2.7 s and 0.7 s with the settings below, on 2 cores). Keeping up to 32 MiB blocks in the
//! heap and trimming only past 32 MiB free bounds what the process keeps beyond its live data.

use std::sync::Once;

/// Largest allocation served from the heap rather than its own `mmap`, and the free space at a
/// heap's top that triggers a trim.
pub const HEAP_BLOCK_LIMIT: usize = 32 << 20;

/// Applies the settings once per process (glibc on Linux; elsewhere nothing).
pub(crate) fn tune_for_blocks() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: mallopt only changes allocator parameters, under glibc's own lock.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, HEAP_BLOCK_LIMIT as libc::c_int);
            libc::mallopt(libc::M_TRIM_THRESHOLD, HEAP_BLOCK_LIMIT as libc::c_int);
        }
    });
}

/// The memory the machine can give this process now: `MemAvailable` of `/proc/meminfo`, capped
/// by what the cgroup v2 memory limit leaves, when one is set; `None` where neither can be read.
/// The local scheduler installs it as [`kiln_graph::memory::set_available_probe`].
pub fn available_memory() -> Option<u64> {
    let meminfo =
        std::fs::read_to_string("/proc/meminfo").ok().and_then(|text| kiln_graph::memory::parse_meminfo(&text));
    let read = |name: &str| std::fs::read_to_string(format!("/sys/fs/cgroup/{name}")).ok();
    // "max" (no limit) does not parse.
    let cgroup = read("memory.max").and_then(|s| s.trim().parse::<u64>().ok()).map(|max| {
        let current: u64 = read("memory.current").and_then(|s| s.trim().parse().ok()).unwrap_or(0);
        max.saturating_sub(current)
    });
    match (meminfo, cgroup) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The memory the machine has for this process in all: `MemTotal` of `/proc/meminfo`, capped by
/// the cgroup v2 memory limit when one is set; `None` where neither can be read.
pub fn total_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok().and_then(|text| parse_mem_total(&text));
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max").ok().and_then(|s| s.trim().parse::<u64>().ok());
    match (meminfo, cgroup) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// `MemTotal` in bytes from the text of `/proc/meminfo`.
fn parse_mem_total(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut words = line["MemTotal:".len()..].split_whitespace();
    let value: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") | Some("KB") => value.checked_mul(1024),
        None => Some(value),
        Some(_) => None,
    }
}

/// The share of [`total_memory`] a local scheduler's results may hold when no memory limit is
/// given: half. The other half is for what the held results do not count: each running
/// kernel's inputs, output and temporaries (two to three blocks per thread), the page cache
/// that serves re-read Zarr and `.npy` blocks, the allocator's slack (up to
/// [`HEAP_BLOCK_LIMIT`] kept per heap) and the other processes of the machine.
pub const DEFAULT_MEMORY_SHARE: f64 = 0.5;

/// The default memory limit of a local scheduler: [`DEFAULT_MEMORY_SHARE`] of
/// [`total_memory`], read once per process; `None` when the machine's memory cannot be read.
pub fn default_memory_limit() -> Option<u64> {
    static LIMIT: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *LIMIT.get_or_init(|| total_memory().map(|total| (total as f64 * DEFAULT_MEMORY_SHARE) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn total_memory_reads_mem_total() {
        let text = "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   22000000 kB\n";
        assert_eq!(parse_mem_total(text), Some(24_000_000 * 1024));
        assert_eq!(parse_mem_total("MemAvailable: 10 kB\n"), None);
        assert_eq!(parse_mem_total("MemTotal: 10 MB\n"), None);
    }

    #[test]
    fn the_default_limit_is_half_the_machine() {
        // On the machines kiln runs on, /proc/meminfo exists.
        let total = total_memory().expect("/proc/meminfo is readable");
        assert_eq!(default_memory_limit(), Some(total / 2));
    }
}
