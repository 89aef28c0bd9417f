//! The scheduler's side of the dashboard: folds the state's events into
//! [`ClusterAggregates`], publishes snapshots while a live page is open, and answers the
//! dashboard's requests between events. The dashboard itself (`kiln-dashboard`) only ever
//! sees snapshots and answers, never the state.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_dashboard::{Identity, Publisher, Request, Snapshot, WorkerLoadView};
use kiln_scheduler::aggregate::{ClusterAggregates, DEFAULT_STREAM_CAPACITY};
use kiln_scheduler::{ObserveLevel, SchedulerEvent, SchedulerState};

/// Where and how the scheduler serves its dashboard.
#[derive(Debug, Clone)]
pub struct DashboardConfig {
    /// `host:port` (`:8787` means all interfaces). If the port is taken, a free one is used
    /// and the server says so ([`super::SchedulerServer::dashboard_notice`]).
    pub address: String,
    /// Metric name namespace: `kiln` (default) or `dask`.
    pub namespace: String,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        DashboardConfig { address: "0.0.0.0:8787".into(), namespace: "kiln".into() }
    }
}

/// The memory/CPU series gets a sample this often.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

pub(super) struct DashboardSide {
    publisher: Publisher,
    aggregates: ClusterAggregates,
    identity: Identity,
    last_sample: Option<Instant>,
    /// Stream entries numbered from here on go in the next live snapshot: those of the last
    /// two publications, so a page that missed one update (a slow reader sees only the latest)
    /// loses nothing. Pages merge entries by number; a fresh page starts from the full tail of
    /// `/json/snapshot.json`.
    live_since: [u64; 2],
}

pub(super) fn unix_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

impl DashboardSide {
    pub fn new(publisher: Publisher, identity: Identity) -> Self {
        DashboardSide {
            publisher,
            aggregates: ClusterAggregates::new(DEFAULT_STREAM_CAPACITY),
            identity,
            last_sample: None,
            live_since: [0, 0],
        }
    }

    /// The live page's URL, for clients' welcome.
    pub fn link(&self) -> String {
        self.identity.dashboard.clone()
    }

    pub fn apply(&mut self, events: &[SchedulerEvent]) {
        if events.is_empty() {
            return;
        }
        let now = unix_us();
        for event in events {
            self.aggregates.apply(event, now);
        }
    }

    /// What the state must record for the dashboard: each task run only while a live page is
    /// open (its task stream); otherwise only worker events, since per-prefix progress is
    /// counted by the state in place ([`ClusterAggregates::sync`]).
    pub fn level(&self) -> ObserveLevel {
        if self.publisher.watchers() > 0 { ObserveLevel::TaskStream } else { ObserveLevel::Workers }
    }

    /// After a turn of the loop that took `busy`: samples the series once a second and
    /// publishes a snapshot when a live page wants one.
    pub fn after_turn(&mut self, state: &SchedulerState, clients: usize, busy: Duration) {
        self.aggregates.record_tick(busy.as_secs_f64());
        if self.last_sample.is_none_or(|t| t.elapsed() >= SAMPLE_EVERY) {
            self.last_sample = Some(Instant::now());
            self.aggregates.sample(unix_us());
        }
        if self.publisher.due() {
            let snapshot = self.snapshot(state, clients, self.live_since[0]);
            let next = snapshot.aggregates.stream.last().map_or(self.live_since[1], |e| e.seq + 1);
            self.live_since = [self.live_since[1], next];
            self.publisher.publish(snapshot);
        }
    }

    fn snapshot(&mut self, state: &SchedulerState, clients: usize, since: u64) -> Arc<Snapshot> {
        self.aggregates.sync(state);
        let aggregates = self.aggregates.snapshot_since(unix_us(), since, kiln_dashboard::STREAM_TAIL);
        let loads = aggregates
            .workers
            .iter()
            .filter_map(|w| {
                state.worker_load(w.id).map(|l| WorkerLoadView {
                    id: w.id,
                    processing: l.processing,
                    held: l.held,
                    nbytes: l.nbytes,
                    occupancy_s: l.occupancy_s,
                })
            })
            .collect();
        Arc::new(Snapshot { identity: self.identity.clone(), aggregates, loads, clients, tasks: state.task_count() })
    }

    /// The next request, or never when there is none (for the server's `select!`).
    pub async fn next_request(side: &mut Option<DashboardSide>) -> Option<Request> {
        match side {
            Some(side) => side.publisher.requests.recv().await,
            None => std::future::pending().await,
        }
    }

    /// Answers a request; commands it causes (retiring) are left in the state for the caller.
    pub fn answer(&mut self, request: Request, state: &mut SchedulerState, clients: usize) {
        match request {
            Request::Snapshot(reply) => {
                let _ = reply.send(self.snapshot(state, clients, 0));
            }
            Request::TaskInfo(key, reply) => {
                let _ = reply.send(state.task_info(&key));
            }
            Request::WorkerTasks { worker, limit, reply } => {
                let _ = reply.send(state.worker_tasks(worker, limit));
            }
            Request::Retire(workers, reply) => {
                let unknown = state.retire(&workers);
                let _ = reply.send(unknown);
            }
            Request::AdaptiveTarget(reply) => {
                let _ = reply.send(state.adaptive_target(5.0));
            }
            Request::Graph { cap, reply } => {
                let _ = reply.send(state.graph_view(cap));
            }
        }
    }
}
