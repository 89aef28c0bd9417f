//! Read-ahead for ranged reads that walk forward through an object.
//!
//! Readers that go through an object piece by piece (Parquet's page reader: a page header of a
//! few kilobytes, then the page's data, then the next header) would pay one request per piece,
//! and each request costs a round trip (tens of milliseconds on a real cloud store) however
//! small it is. A read that continues an earlier read of the same object (it starts inside it or
//! at most [`SEQUENTIAL_GAP`] after its end) is therefore widened to a window of the object's
//! next [`READ_AHEAD`] bytes, kept here; later reads inside a window are answered from memory,
//! and a read that runs past a window's end fetches only the part that is missing. A read that
//! continues nothing (a footer, an index, a random access) is fetched exactly as asked, so
//! scattered small reads are never inflated. Windows are dropped least recently used first
//! beyond a byte budget, and forgotten when this process writes or deletes their object.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Mutex;

use bytes::Bytes;

/// Bytes fetched at once for a read that continues an earlier one (the size cloud providers
/// recommend for ranged GETs: big enough that the round trip is a small part of the request).
pub const READ_AHEAD: u64 = 16 << 20;

/// How far past the end of an earlier read a read may start and still count as continuing it
/// (a reader skipping a small column or a page it does not need).
pub const SEQUENTIAL_GAP: u64 = 1 << 20;

/// The read-ahead windows kept per thread the machine can run (the budget is this times
/// `available_parallelism`): a thread reading a Parquet row group has about three windows in
/// use at once, so each task thread keeps its windows until it has used them.
pub const READ_AHEAD_BUDGET_PER_THREAD: usize = 64 << 20;

/// Recent reads remembered to recognise a read that continues one of them.
const RECENT_READS: usize = 256;

/// Counters of an [`crate::ObjectStorage`]'s ranged reads.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReadStats {
    /// Ranged requests sent to the store.
    pub requests: u64,
    /// Bytes those requests returned.
    pub bytes_fetched: u64,
    /// Bytes handed to readers.
    pub bytes_read: u64,
    /// Reads answered wholly from read-ahead windows, without a request.
    pub hits: u64,
}

struct Window {
    url: String,
    start: u64,
    bytes: Bytes,
    last_used: u64,
}

impl Window {
    fn end(&self) -> u64 {
        self.start + self.bytes.len() as u64
    }
}

#[derive(Default)]
struct State {
    windows: Vec<Window>,
    recent: VecDeque<(String, Range<u64>)>,
    held: usize,
    clock: u64,
    stats: ReadStats,
}

/// What a read needs fetched after looking at the windows.
pub(crate) enum Plan {
    /// The whole read, from a window.
    Hit(Vec<u8>),
    /// Fetch `fetch`; the read's first bytes (up to `fetch.start`) are `prefix`. `keep`: the
    /// fetched bytes become a window.
    Fetch { prefix: Vec<u8>, fetch: Range<u64>, keep: bool },
}

/// The read-ahead windows of one [`crate::ObjectStorage`].
pub(crate) struct ReadAhead {
    state: Mutex<State>,
    window: u64,
    gap: u64,
    budget: usize,
}

impl Default for ReadAhead {
    fn default() -> Self {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        ReadAhead::new(READ_AHEAD, SEQUENTIAL_GAP, READ_AHEAD_BUDGET_PER_THREAD.saturating_mul(threads))
    }
}

impl ReadAhead {
    pub(crate) fn new(window: u64, gap: u64, budget: usize) -> Self {
        ReadAhead { state: Mutex::new(State::default()), window, gap, budget }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How to serve `range` (non-empty) of `url`.
    pub(crate) fn plan(&self, url: &str, range: Range<u64>) -> Plan {
        let mut state = self.lock();
        state.clock += 1;
        let clock = state.clock;
        state.stats.bytes_read += range.end - range.start;
        // The window holding the read's first byte that reaches furthest.
        let best = state
            .windows
            .iter_mut()
            .filter(|w| w.url == url && w.start <= range.start && range.start < w.end())
            .max_by_key(|w| w.end());
        if let Some(window) = best {
            window.last_used = clock;
            let from = (range.start - window.start) as usize;
            if range.end <= window.end() {
                let to = (range.end - window.start) as usize;
                let bytes = window.bytes[from..to].to_vec();
                state.stats.hits += 1;
                return Plan::Hit(bytes);
            }
            let prefix = window.bytes[from..].to_vec();
            let fetch_start = window.end();
            let fetch = fetch_start..range.end.max(fetch_start + self.window);
            remember(&mut state, url, range);
            return Plan::Fetch { prefix, fetch, keep: true };
        }
        // A read continues an earlier read, or a window (whose last reads were hits, which are
        // not remembered one by one).
        let follows = |start: u64, end: u64| start <= range.start && range.start <= end.saturating_add(self.gap);
        let continues = state.recent.iter().any(|(u, r)| u == url && follows(r.start, r.end))
            || state.windows.iter().any(|w| w.url == url && follows(w.start, w.end()));
        remember(&mut state, url, range.clone());
        if continues {
            Plan::Fetch { prefix: Vec::new(), fetch: range.start..range.end.max(range.start + self.window), keep: true }
        } else {
            Plan::Fetch { prefix: Vec::new(), fetch: range, keep: false }
        }
    }

    /// Records a request's answer, keeping it as a window when the plan said so.
    pub(crate) fn fetched(&self, url: &str, start: u64, bytes: &Bytes, keep: bool) {
        let mut state = self.lock();
        state.stats.requests += 1;
        state.stats.bytes_fetched += bytes.len() as u64;
        if !keep || bytes.is_empty() || bytes.len() > self.budget {
            return;
        }
        state.clock += 1;
        let last_used = state.clock;
        state.held += bytes.len();
        state.windows.push(Window { url: url.to_string(), start, bytes: bytes.clone(), last_used });
        while state.held > self.budget {
            let Some(oldest) = (0..state.windows.len()).min_by_key(|&i| state.windows[i].last_used) else { break };
            let dropped = state.windows.swap_remove(oldest);
            state.held -= dropped.bytes.len();
        }
    }

    /// Drops everything kept of `url` (this process changed the object).
    pub(crate) fn forget(&self, url: &str) {
        let mut state = self.lock();
        let mut freed = 0;
        state.windows.retain(|w| {
            let keep = w.url != url;
            if !keep {
                freed += w.bytes.len();
            }
            keep
        });
        state.held -= freed;
        state.recent.retain(|(u, _)| u != url);
    }

    pub(crate) fn stats(&self) -> ReadStats {
        self.lock().stats
    }

    #[cfg(test)]
    fn held(&self) -> usize {
        self.lock().held
    }
}

fn remember(state: &mut State, url: &str, range: Range<u64>) {
    if state.recent.len() == RECENT_READS {
        state.recent.pop_front();
    }
    state.recent.push_back((url.to_string(), range));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serves `range` of `object` through `ahead` as ObjectStorage does, counting requests.
    fn read(ahead: &ReadAhead, object: &[u8], range: Range<u64>) -> Vec<u8> {
        match ahead.plan("s3://b/k", range.clone()) {
            Plan::Hit(bytes) => bytes,
            Plan::Fetch { mut prefix, fetch, keep } => {
                let end = fetch.end.min(object.len() as u64);
                let bytes = Bytes::copy_from_slice(&object[fetch.start as usize..end as usize]);
                ahead.fetched("s3://b/k", fetch.start, &bytes, keep);
                prefix.extend_from_slice(&bytes[..(range.end - fetch.start) as usize]);
                prefix
            }
        }
    }

    fn object(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn a_forward_walk_is_served_from_windows_with_the_same_bytes() {
        let data = object(10_000);
        let ahead = ReadAhead::new(1000, 100, 10_000);
        // Page header, page data, next header...: the first read is exact, the second
        // continues it and opens a window, the rest of the window is served from memory.
        let mut offset = 0u64;
        while offset < 3000 {
            let header = offset..offset + 16;
            assert_eq!(read(&ahead, &data, header.clone()), &data[header.start as usize..header.end as usize]);
            let page = offset + 16..offset + 116;
            assert_eq!(read(&ahead, &data, page.clone()), &data[page.start as usize..page.end as usize]);
            offset += 116;
        }
        let stats = ahead.stats();
        assert_eq!(stats.bytes_read, 26 * 116);
        // One exact header read, then windows of 1000: [16, 1016), [1016, 2016), [2016, 3016).
        assert_eq!(stats.requests, 4, "{stats:?}");
        assert_eq!(stats.bytes_fetched, 16 + 3000);
    }

    #[test]
    fn scattered_reads_are_fetched_exactly() {
        let data = object(100_000);
        let ahead = ReadAhead::new(1000, 100, 10_000);
        for start in [90_000u64, 10_000, 50_000, 99_990] {
            assert_eq!(read(&ahead, &data, start..start + 10), &data[start as usize..start as usize + 10]);
        }
        let stats = ahead.stats();
        assert_eq!((stats.requests, stats.bytes_fetched, stats.hits), (4, 40, 0));
        assert_eq!(ahead.held(), 0);
    }

    #[test]
    fn a_read_past_a_window_fetches_only_what_is_missing() {
        let data = object(5000);
        let ahead = ReadAhead::new(1000, 100, 10_000);
        read(&ahead, &data, 0..10);
        read(&ahead, &data, 10..20); // window [10, 1010)
        assert_eq!(read(&ahead, &data, 900..2500), &data[900..2500]); // fetches [1010, 2500)
        let stats = ahead.stats();
        assert_eq!(stats.bytes_fetched, 10 + 1000 + 1490, "{stats:?}");
        // The window ends at the object's end: what is left is served whole.
        assert_eq!(read(&ahead, &data, 4990..5000), &data[4990..5000]);
    }

    #[test]
    fn windows_stay_within_the_budget_and_go_when_the_object_changes() {
        let data = object(50_000);
        let ahead = ReadAhead::new(1000, 100, 2500);
        for start in (0..20_000u64).step_by(150) {
            assert_eq!(read(&ahead, &data, start..start + 100), &data[start as usize..start as usize + 100]);
            assert!(ahead.held() <= 2500, "{} held", ahead.held());
        }
        assert!(ahead.held() > 0);
        ahead.forget("s3://b/k");
        assert_eq!(ahead.held(), 0);
        let before = ahead.stats().requests;
        read(&ahead, &data, 19_600..19_700);
        assert_eq!(ahead.stats().requests, before + 1, "a forgotten object is fetched again");
    }
}
