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
//!
//! Fetching a window only when a read needs it would leave the reader idle for a whole request
//! per window, and the network idle while it decodes. So a window fetched for a forward walk,
//! when the object goes on past it, has the next window fetched in the background
//! ([`ReadAhead::start_prefetch`], driven by the crate's runtime), and readers that know what
//! they will need (Parquet's next row group) ask for it the same way through
//! `Storage::prefetch`. A fetch in flight is a *pending* window: a read it covers waits for it
//! instead of asking again. Fetches in flight are bounded by the budget too, so prefetching at
//! most doubles what read-ahead holds (and a prefetched range taken whole by its reader leaves
//! at once).

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::{Arc, Condvar, Mutex};

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

/// A fetch in flight in the background: reads it covers wait for it ([`Done::wait`]).
struct Pending {
    url: String,
    range: Range<u64>,
    done: Arc<Done>,
}

/// Signalled when a background fetch has ended (with its window kept, or failed, or
/// forgotten): a reader waiting on it looks at the windows again.
#[derive(Debug, Default)]
pub(crate) struct Done {
    finished: Mutex<bool>,
    signal: Condvar,
}

impl Done {
    /// Blocks until the fetch has ended. Fetches end: the store's requests time out and their
    /// retries are bounded.
    pub(crate) fn wait(&self) {
        let mut finished = self.finished.lock().unwrap_or_else(|p| p.into_inner());
        while !*finished {
            finished = self.signal.wait(finished).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn finish(&self) {
        *self.finished.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.signal.notify_all();
    }
}

#[derive(Default)]
struct State {
    windows: Vec<Window>,
    pending: Vec<Pending>,
    /// Bytes asked for by the fetches in `pending`.
    in_flight: u64,
    recent: VecDeque<(String, Range<u64>)>,
    held: usize,
    clock: u64,
    stats: ReadStats,
}

/// What a read needs fetched after looking at the windows.
pub(crate) enum Plan {
    /// The whole read, from a window.
    Hit(Vec<u8>),
    /// A background fetch covers the read's start: wait for it, then plan again.
    Wait(Arc<Done>),
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
        let mut guard = self.lock();
        let state = &mut *guard;
        let in_flight = |state: &State, at: u64| {
            state
                .pending
                .iter()
                .find(|p| p.url == url && p.range.start <= at && at < p.range.end)
                .map(|p| p.done.clone())
        };
        // The window holding byte `at` that reaches furthest.
        let holding = |state: &State, at: u64| {
            (0..state.windows.len())
                .filter(|&i| {
                    let w = &state.windows[i];
                    w.url == url && w.start <= at && at < w.end()
                })
                .max_by_key(|&i| state.windows[i].end())
        };
        // How far windows that follow each other hold the read, and which they are.
        let mut at = range.start;
        let mut used = Vec::new();
        while at < range.end {
            let Some(i) = holding(state, at) else { break };
            used.push((i, at));
            at = state.windows[i].end().min(range.end);
        }
        // What they do not hold is on its way (a prefetch): wait for it rather than ask again.
        if at < range.end
            && let Some(done) = in_flight(state, at)
        {
            return Plan::Wait(done);
        }
        state.clock += 1;
        let clock = state.clock;
        state.stats.bytes_read += range.end - range.start;
        if !used.is_empty() {
            let mut prefix = Vec::with_capacity((at - range.start) as usize);
            for (i, from) in used {
                let window = &mut state.windows[i];
                window.last_used = clock;
                let to = window.end().min(range.end);
                prefix.extend_from_slice(&window.bytes[(from - window.start) as usize..(to - window.start) as usize]);
            }
            if at == range.end {
                state.stats.hits += 1;
                return Plan::Hit(prefix);
            }
            let fetch = at..range.end.max(at + self.window);
            remember(state, url, range);
            return Plan::Fetch { prefix, fetch, keep: true };
        }
        // A read continues an earlier read, or a window (whose last reads were hits, which are
        // not remembered one by one).
        let follows = |start: u64, end: u64| start <= range.start && range.start <= end.saturating_add(self.gap);
        let continues = state.recent.iter().any(|(u, r)| u == url && follows(r.start, r.end))
            || state.windows.iter().any(|w| w.url == url && follows(w.start, w.end()));
        remember(state, url, range.clone());
        if continues {
            Plan::Fetch { prefix: Vec::new(), fetch: range.start..range.end.max(range.start + self.window), keep: true }
        } else {
            Plan::Fetch { prefix: Vec::new(), fetch: range, keep: false }
        }
    }

    /// How to serve `range` (non-empty) of `url` for a reader that asked for exactly this range
    /// (`Storage::read_ranges`): from a window or a background fetch holding all of it, else
    /// `None` (fetch it as asked, keep nothing). A read that takes a whole window, as a
    /// prefetched row group is taken, removes it: its bytes are handed over, not copied.
    pub(crate) fn plan_exact(&self, url: &str, range: &Range<u64>) -> Result<Option<Vec<u8>>, Arc<Done>> {
        let mut state = self.lock();
        let covers = |start: u64, end: u64| start <= range.start && range.end <= end;
        if let Some(pending) = state.pending.iter().find(|p| p.url == url && covers(p.range.start, p.range.end)) {
            return Err(pending.done.clone());
        }
        state.clock += 1;
        let clock = state.clock;
        let found = state.windows.iter().position(|w| w.url == url && covers(w.start, w.end()));
        let Some(index) = found else { return Ok(None) };
        state.stats.bytes_read += range.end - range.start;
        state.stats.hits += 1;
        let whole = state.windows[index].start == range.start && state.windows[index].end() == range.end;
        if whole {
            let window = state.windows.swap_remove(index);
            state.held -= window.bytes.len();
            return Ok(Some(window.bytes.into()));
        }
        let window = &mut state.windows[index];
        window.last_used = clock;
        let from = (range.start - window.start) as usize;
        Ok(Some(window.bytes[from..from + (range.end - range.start) as usize].to_vec()))
    }

    /// Counts bytes handed to a reader that were fetched outside the windows.
    pub(crate) fn read_directly(&self, len: u64) {
        self.lock().stats.bytes_read += len;
    }

    /// Registers a background fetch of `range` of `url` and returns what to signal when it
    /// ends, or `None` when it is not worth starting: windows or fetches in flight already hold
    /// its start, or the fetches in flight would pass the budget.
    pub(crate) fn start_prefetch(&self, url: &str, range: Range<u64>) -> Option<Arc<Done>> {
        if range.is_empty() {
            return None;
        }
        let mut state = self.lock();
        let len = range.end - range.start;
        let held = |start: u64, end: u64| start <= range.start && range.start < end;
        if state.in_flight + len > self.budget as u64
            || state.pending.iter().any(|p| p.url == url && held(p.range.start, p.range.end))
            || state.windows.iter().any(|w| w.url == url && held(w.start, w.end()))
        {
            return None;
        }
        let done = Arc::new(Done::default());
        state.in_flight += len;
        state.pending.push(Pending { url: url.to_string(), range, done: done.clone() });
        Some(done)
    }

    /// Ends the background fetch `done`: its bytes (`None` when it failed) become a window,
    /// unless its object was forgotten in the meantime; waiting readers are woken.
    pub(crate) fn prefetched(&self, done: &Arc<Done>, bytes: Option<&Bytes>) {
        let mut state = self.lock();
        let position = state.pending.iter().position(|p| Arc::ptr_eq(&p.done, done));
        if let Some(position) = position {
            let pending = state.pending.swap_remove(position);
            state.in_flight -= pending.range.end - pending.range.start;
            if let Some(bytes) = bytes {
                Self::keep(&mut state, self.budget, &pending.url, pending.range.start, bytes);
            }
        } else if let Some(bytes) = bytes {
            // Forgotten while in flight: the object changed, these bytes may be stale.
            state.stats.requests += 1;
            state.stats.bytes_fetched += bytes.len() as u64;
        }
        drop(state);
        done.finish();
    }

    /// Records a request's answer, keeping it as a window when the plan said so.
    pub(crate) fn fetched(&self, url: &str, start: u64, bytes: &Bytes, keep: bool) {
        let mut state = self.lock();
        if keep {
            Self::keep(&mut state, self.budget, url, start, bytes);
        } else {
            state.stats.requests += 1;
            state.stats.bytes_fetched += bytes.len() as u64;
        }
    }

    fn keep(state: &mut State, budget: usize, url: &str, start: u64, bytes: &Bytes) {
        state.stats.requests += 1;
        state.stats.bytes_fetched += bytes.len() as u64;
        if bytes.is_empty() || bytes.len() > budget {
            return;
        }
        state.clock += 1;
        let last_used = state.clock;
        state.held += bytes.len();
        state.windows.push(Window { url: url.to_string(), start, bytes: bytes.clone(), last_used });
        while state.held > budget {
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
        let mut forgotten = Vec::new();
        state.pending.retain(|p| {
            let keep = p.url != url;
            if !keep {
                forgotten.push((p.range.end - p.range.start, p.done.clone()));
            }
            keep
        });
        for (len, _) in &forgotten {
            state.in_flight -= len;
        }
        drop(state);
        // Readers waiting on them fetch the object anew.
        for (_, done) in forgotten {
            done.finish();
        }
    }

    /// Bytes a widened read fetches.
    pub(crate) fn window(&self) -> u64 {
        self.window
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
            Plan::Wait(_) => unreachable!("these tests start no background fetch"),
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

    #[test]
    fn a_prefetched_range_is_waited_for_then_handed_over_whole() {
        let data = Bytes::from(object(10_000));
        let ahead = std::sync::Arc::new(ReadAhead::new(1000, 100, 10_000));
        let done = ahead.start_prefetch("s3://b/k", 2000..6000).expect("within budget");
        // Neither the same range nor one starting inside it is fetched a second time.
        assert!(ahead.start_prefetch("s3://b/k", 3000..4000).is_none());
        assert!(ahead.plan_exact("s3://b/k", &(2000..6000)).is_err());
        assert!(matches!(ahead.plan("s3://b/k", 2500..2600), Plan::Wait(_)));
        // A reader blocks until the fetch ends, on another thread here as on the runtime.
        let reader = {
            let ahead = ahead.clone();
            std::thread::spawn(move || {
                loop {
                    match ahead.plan_exact("s3://b/k", &(2000..6000)) {
                        Err(done) => done.wait(),
                        Ok(found) => return found,
                    }
                }
            })
        };
        ahead.prefetched(&done, Some(&data.slice(2000..6000)));
        assert_eq!(reader.join().unwrap().as_deref(), Some(&data[2000..6000]));
        // Taken whole: nothing is held any more, and one request was counted.
        assert_eq!(ahead.held(), 0);
        let stats = ahead.stats();
        assert_eq!((stats.requests, stats.bytes_fetched, stats.bytes_read, stats.hits), (1, 4000, 4000, 1));
    }

    #[test]
    fn prefetches_stay_within_the_budget_and_a_failed_one_leaves_nothing() {
        let ahead = ReadAhead::new(1000, 100, 10_000);
        let first = ahead.start_prefetch("s3://b/k", 0..8000).unwrap();
        assert!(ahead.start_prefetch("s3://b/other", 0..4000).is_none(), "12000 in flight passes 10000");
        assert!(ahead.start_prefetch("s3://b/other", 0..2000).is_some());
        ahead.prefetched(&first, None);
        first.wait();
        assert_eq!(ahead.held(), 0);
        assert!(
            matches!(ahead.plan_exact("s3://b/k", &(0..8000)), Ok(None)),
            "a failed prefetch is fetched by the read"
        );
        assert!(ahead.start_prefetch("s3://b/k", 0..8000).is_some(), "its budget is free again");
    }

    #[test]
    fn a_prefetch_of_an_object_rewritten_meanwhile_is_dropped() {
        let data = Bytes::from(object(5000));
        let ahead = ReadAhead::new(1000, 100, 10_000);
        let done = ahead.start_prefetch("s3://b/k", 0..3000).unwrap();
        ahead.forget("s3://b/k");
        done.wait();
        ahead.prefetched(&done, Some(&data.slice(0..3000)));
        assert_eq!(ahead.held(), 0);
        assert!(matches!(ahead.plan_exact("s3://b/k", &(0..3000)), Ok(None)));
    }

    #[test]
    fn an_exact_read_inside_a_window_copies_and_keeps_it() {
        let data = object(5000);
        let ahead = ReadAhead::new(1000, 100, 10_000);
        read(&ahead, &data, 0..10);
        read(&ahead, &data, 10..20); // window [10, 1010)
        assert_eq!(ahead.plan_exact("s3://b/k", &(100..200)).unwrap().unwrap(), &data[100..200]);
        assert_eq!(ahead.held(), 1000);
        assert!(matches!(ahead.plan_exact("s3://b/k", &(900..1100)), Ok(None)), "not wholly inside: fetched as asked");
    }

    #[test]
    fn a_read_running_into_a_prefetched_window_waits_for_it_and_spans_both() {
        let data = object(5000);
        let ahead = ReadAhead::new(1000, 100, 10_000);
        read(&ahead, &data, 0..10);
        read(&ahead, &data, 10..20); // window [10, 1010)
        let done = ahead.start_prefetch("s3://b/k", 1010..2010).unwrap();
        assert!(matches!(ahead.plan("s3://b/k", 900..1100), Plan::Wait(_)), "the rest is in flight");
        ahead.prefetched(&done, Some(&Bytes::copy_from_slice(&data[1010..2010])));
        let before = ahead.stats().requests;
        assert_eq!(read(&ahead, &data, 900..1100), &data[900..1100]);
        assert_eq!(read(&ahead, &data, 1500..2500), &data[1500..2500]);
        // The first read came from the two windows; the second fetched only [2010, 3010).
        let stats = ahead.stats();
        assert_eq!((stats.requests - before, stats.bytes_fetched), (1, 10 + 1000 + 1000 + 1000), "{stats:?}");
    }
}
