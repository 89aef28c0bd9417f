//! What a worker's `/metrics` shows: totals the shell keeps as it handles events (plain
//! fields, it owns them), totals the data port keeps as it serves values (atomics, it runs on
//! its own tasks), and the state's counts read at scrape time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kiln_dashboard::worker::{SpillTotals, WorkerMetrics};
use kiln_worker::{KeyState, WorkerState};

/// Values the data port served to peers and clients.
#[derive(Default)]
pub(super) struct Served {
    count: AtomicU64,
    bytes: AtomicU64,
}

impl Served {
    /// Notes `count` values of `bytes` in all sent in one reply.
    pub fn add(&self, count: u64, bytes: u64) {
        self.count.fetch_add(count, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// The shell's running totals.
pub(super) struct Counters {
    threads: u32,
    served: Arc<Served>,
    fetched_count: u64,
    fetched_bytes: u64,
    spill_write: SpillTotals,
    spill_read: SpillTotals,
    ticks: u64,
    /// The longest turn since the last scrape.
    tick_max: Duration,
}

impl Counters {
    pub fn new(threads: u32, served: Arc<Served>) -> Self {
        Counters {
            threads,
            served,
            fetched_count: 0,
            fetched_bytes: 0,
            spill_write: SpillTotals::default(),
            spill_read: SpillTotals::default(),
            ticks: 0,
            tick_max: Duration::ZERO,
        }
    }

    pub fn fetched(&mut self, bytes: u64) {
        self.fetched_count += 1;
        self.fetched_bytes += bytes;
    }

    pub fn spilled(&mut self, bytes: u64, duration_us: u64) {
        add(&mut self.spill_write, bytes, duration_us);
    }

    pub fn unspilled(&mut self, bytes: u64, duration_us: u64) {
        add(&mut self.spill_read, bytes, duration_us);
    }

    /// Notes one turn of the event loop that took `busy`.
    pub fn tick(&mut self, busy: Duration) {
        self.ticks += 1;
        self.tick_max = self.tick_max.max(busy);
    }

    /// The figures for a scrape; the maximum turn starts over.
    pub fn take<P>(&mut self, state: &WorkerState<P>, process_bytes: u64) -> WorkerMetrics {
        let counts = state.key_counts();
        let count = |wanted: &[KeyState]| -> u64 {
            KeyState::ALL.iter().zip(counts).filter(|(s, _)| wanted.contains(s)).map(|(_, n)| n as u64).sum()
        };
        // Dask's worker state names; a spilled value is in `memory` there too.
        let tasks = vec![
            ("waiting", count(&[KeyState::Waiting])),
            ("ready", count(&[KeyState::Ready])),
            ("executing", count(&[KeyState::Executing])),
            ("flight", count(&[KeyState::Fetching])),
            ("memory", count(&[KeyState::Memory, KeyState::Spilled, KeyState::Unspilling])),
        ];
        let (read, written) = crate::comm::tls::network_bytes();
        let (in_flight, in_flight_bytes) = state.incoming();
        let metrics = WorkerMetrics {
            threads: self.threads,
            tasks,
            managed: state.managed_bytes(),
            process: process_bytes,
            spilled: state.spilled_bytes(),
            transfer_incoming_count_total: self.fetched_count,
            transfer_incoming_bytes_total: self.fetched_bytes,
            transfer_outgoing_count_total: self.served.count.load(Ordering::Relaxed),
            transfer_outgoing_bytes_total: self.served.bytes.load(Ordering::Relaxed),
            transfer_incoming_in_flight_count: in_flight as u64,
            transfer_incoming_in_flight_bytes: in_flight_bytes,
            transfer_incoming_queued_count: state.fetches_queued() as u64,
            spill_write: self.spill_write,
            spill_read: self.spill_read,
            tick_count_total: self.ticks,
            tick_duration_maximum_seconds: self.tick_max.as_secs_f64(),
            network_read_bytes_total: read,
            network_write_bytes_total: written,
        };
        self.tick_max = Duration::ZERO;
        metrics
    }
}

fn add(totals: &mut SpillTotals, bytes: u64, duration_us: u64) {
    totals.bytes += bytes;
    totals.count += 1;
    totals.seconds += duration_us as f64 / 1e6;
}
