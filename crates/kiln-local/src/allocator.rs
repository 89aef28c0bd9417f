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
