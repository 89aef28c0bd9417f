//! kiln's live web dashboard and Prometheus metrics.
//!
//! The dashboard never touches the scheduler's state. The scheduler server keeps
//! [`kiln_scheduler::aggregate::ClusterAggregates`] up to date from the state machine's event
//! stream and, through a [`Publisher`], hands this crate immutable [`Snapshot`]s: a new one at
//! most every [`Publisher::interval`] and only while a live page is open
//! ([`Publisher::due`]). One task serializes each snapshot once to JSON, and every open page
//! (server-sent events on `/events`) gets the same bytes, so ten open tabs cost the scheduler
//! what one does. Pages that are not live (`/workers`, `/metrics`, `/json/...`) and the few
//! questions only the state can answer (`/info/task/<key>`, retiring workers) go to the server
//! as [`Request`]s on a bounded channel, which it answers between events.
//!
//! Routes: `/status` (live), `/graph` (live, up to [`GRAPH_CAP`] tasks), `/workers`, `/info/worker/<id>`, `/info/task/<key>`, `/health`,
//! `/metrics`, `/json/counts.json`, `/json/identity.json`, `/json/snapshot.json`, `/json/graph.json`,
//! `/api/v1/get_workers`, `/api/v1/retire_workers` (POST), `/api/v1/adaptive_target`, the
//! vendored scripts under `/static/`; anything else is 404. JavaScript and CSS (uPlot 1.6.32,
//! MIT, `assets/LICENSE-uPlot`) are compiled into the binary, so the pages work offline.

#![deny(missing_docs)]

mod metrics;
mod pages;
pub mod plot;
pub mod report;
mod routes;
pub mod worker;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kiln_graph::Key;
use kiln_protocol::messages::WorkerId;
use kiln_scheduler::TaskInfo;
use kiln_scheduler::aggregate::AggregateSnapshot;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};

pub use metrics::render_metrics;

/// How often a live page is refreshed at most.
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(250);
/// Task-stream rectangles sent with each live refresh (the page keeps its own window).
pub const STREAM_TAIL: usize = 500;
/// Largest graph `/graph` draws (tasks); above it the page says so instead.
pub const GRAPH_CAP: usize = 5_000;
/// Largest request body the API accepts.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Who is serving.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Identity {
    /// A name for this scheduler (`kiln-scheduler-<pid>`).
    pub id: String,
    /// The address workers and clients connect to.
    pub address: String,
    /// The dashboard's address.
    pub dashboard: String,
    /// When the scheduler started, µs since the Unix epoch.
    pub started_us: u64,
    /// kiln's version.
    pub version: String,
}

/// One worker's load as the scheduler's state sees it (O(1) per worker to read).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkerLoadView {
    /// The worker.
    pub id: WorkerId,
    /// Tasks assigned and not finished.
    pub processing: usize,
    /// Results held.
    pub held: usize,
    /// Bytes of results held, as the scheduler counts them.
    pub nbytes: u64,
    /// Estimated seconds of assigned work per thread.
    pub occupancy_s: f64,
}

/// Everything a refresh shows, taken at one instant.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    /// Who is serving.
    pub identity: Identity,
    /// The aggregates (counts per prefix and state, workers, task stream, series, totals).
    pub aggregates: AggregateSnapshot,
    /// Per-worker load from the state, by worker id.
    pub loads: Vec<WorkerLoadView>,
    /// Connected clients.
    pub clients: usize,
    /// Tasks the scheduler knows.
    pub tasks: usize,
}

/// A question for the scheduler server, answered between events.
#[derive(Debug)]
pub enum Request {
    /// A fresh snapshot (for a page or scrape that is not live).
    Snapshot(oneshot::Sender<Arc<Snapshot>>),
    /// One task's details.
    TaskInfo(Key, oneshot::Sender<Option<TaskInfo>>),
    /// Keys a worker is processing and holds (at most `limit` each); `None` for an unknown
    /// worker.
    WorkerTasks {
        /// The worker.
        worker: WorkerId,
        /// Keys listed at most.
        limit: usize,
        /// The answer.
        reply: oneshot::Sender<Option<(Vec<String>, Vec<String>)>>,
    },
    /// Retire these workers; the answer lists the ids that are not workers (nothing was
    /// done for those).
    Retire(Vec<WorkerId>, oneshot::Sender<Vec<WorkerId>>),
    /// How many workers the cluster should have.
    AdaptiveTarget(oneshot::Sender<usize>),
    /// The task graph if it has at most `cap` tasks, else how many it has.
    Graph {
        /// Tasks drawn at most.
        cap: usize,
        /// The answer.
        reply: oneshot::Sender<Result<kiln_scheduler::GraphView, usize>>,
    },
}

/// The scheduler server's end: publishes snapshots and answers requests.
pub struct Publisher {
    snapshots: watch::Sender<Option<Arc<Snapshot>>>,
    watchers: Arc<AtomicUsize>,
    last: Option<Instant>,
    interval: Duration,
    /// Requests from the HTTP handlers; the server polls this in its event loop.
    pub requests: mpsc::Receiver<Request>,
}

impl Publisher {
    /// Whether a live page is open and the last publication is at least an interval old:
    /// only then is a snapshot worth building.
    pub fn due(&self) -> bool {
        self.watchers.load(Ordering::Relaxed) > 0 && self.last.is_none_or(|t| t.elapsed() >= self.interval)
    }

    /// Hands a snapshot to the live pages.
    pub fn publish(&mut self, snapshot: Arc<Snapshot>) {
        self.last = Some(Instant::now());
        self.snapshots.send_replace(Some(snapshot));
    }

    /// Live pages open now.
    pub fn watchers(&self) -> usize {
        self.watchers.load(Ordering::Relaxed)
    }

    /// The refresh interval.
    pub fn interval(&self) -> Duration {
        self.interval
    }
}

/// The dashboard's end of the channel.
#[derive(Clone)]
pub struct Feed {
    snapshots: watch::Receiver<Option<Arc<Snapshot>>>,
    watchers: Arc<AtomicUsize>,
    requests: mpsc::Sender<Request>,
}

/// A connected [`Publisher`] and [`Feed`]; live pages refresh at most every `interval`.
pub fn channel(interval: Duration) -> (Publisher, Feed) {
    let (snapshots, receiver) = watch::channel(None);
    let (requests_tx, requests) = mpsc::channel(64);
    let watchers = Arc::new(AtomicUsize::new(0));
    let publisher = Publisher { snapshots, watchers: watchers.clone(), last: None, interval, requests };
    (publisher, Feed { snapshots: receiver, watchers, requests: requests_tx })
}

/// How the dashboard presents itself.
#[derive(Debug, Clone)]
pub struct DashboardOptions {
    /// The metrics namespace: `kiln` (default) or `dask`, so Grafana dashboards written for
    /// Dask's metric names work with a namespace switch.
    pub namespace: String,
}

impl Default for DashboardOptions {
    fn default() -> Self {
        DashboardOptions { namespace: "kiln".into() }
    }
}

/// Why the dashboard could not start.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    /// The address could not be bound.
    #[error("cannot serve the dashboard on {address}: {source}")]
    Bind {
        /// The address.
        address: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The namespace is not a valid metric name prefix.
    #[error("invalid metrics namespace {0:?}: use letters, digits and underscores, not starting with a digit")]
    Namespace(String),
}

/// Refuses a namespace that cannot prefix metric names.
pub(crate) fn check_namespace(ns: &str) -> Result<(), DashboardError> {
    let valid = !ns.is_empty()
        && ns.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !ns.as_bytes()[0].is_ascii_digit();
    if valid { Ok(()) } else { Err(DashboardError::Namespace(ns.to_string())) }
}

/// A running dashboard; dropping it stops serving.
pub struct Dashboard {
    address: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Dashboard {
    /// Serves the dashboard on `listener` (already bound) on the current tokio runtime.
    ///
    /// # Errors
    /// The namespace is invalid, or the listener's address cannot be read.
    pub fn serve(
        listener: tokio::net::TcpListener,
        feed: Feed,
        options: DashboardOptions,
    ) -> Result<Dashboard, DashboardError> {
        check_namespace(&options.namespace)?;
        let address =
            listener.local_addr().map_err(|source| DashboardError::Bind { address: "the listener".into(), source })?;
        let app = routes::router(feed, options);
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!("the dashboard stopped: {e}");
            }
        });
        Ok(Dashboard { address, task })
    }

    /// Where it serves.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The live page's URL.
    pub fn link(&self) -> String {
        link(self.address)
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The `/status` URL for a dashboard at `address`. A dashboard bound to all interfaces is
/// linked at this host's address on its outward interface ([`outward_ip`]), which a browser on
/// another machine can reach too, falling back to loopback when the host has no route out.
pub fn link(address: SocketAddr) -> String {
    let host = match address.ip() {
        ip if ip.is_unspecified() => match outward_ip(ip.is_ipv4()) {
            Some(std::net::IpAddr::V6(ip)) => format!("[{ip}]"),
            Some(ip) => ip.to_string(),
            None if ip.is_ipv4() => "127.0.0.1".to_string(),
            None => "[::1]".to_string(),
        },
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    format!("http://{host}:{}/status", address.port())
}

/// This host's address on the interface its default route leaves by (what Dask's `get_ip`
/// finds): a UDP socket "connected" to a public address picks the source address without
/// sending anything. `None` without such a route (an isolated host or container).
pub fn outward_ip(ipv4: bool) -> Option<std::net::IpAddr> {
    let (bind, target) = if ipv4 { ("0.0.0.0:0", "192.0.2.1:9") } else { ("[::]:0", "[2001:db8::1]:9") };
    let socket = std::net::UdpSocket::bind(bind).ok()?;
    socket.connect(target).ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

/// Binds `address`; if its port is taken, binds a free port on the same interface instead and
/// says so in the second value (Dask does the same for 8787).
///
/// # Errors
/// The address is malformed or cannot be bound even on a free port.
pub async fn bind_or_free_port(address: &str) -> Result<(tokio::net::TcpListener, Option<String>), DashboardError> {
    let address = if address.starts_with(':') { format!("0.0.0.0{address}") } else { address.to_string() };
    match tokio::net::TcpListener::bind(&address).await {
        Ok(l) => Ok((l, None)),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            let host = address.rsplit_once(':').map(|(h, _)| h).unwrap_or("0.0.0.0");
            let fallback = format!("{host}:0");
            let l = tokio::net::TcpListener::bind(&fallback)
                .await
                .map_err(|source| DashboardError::Bind { address: fallback.clone(), source })?;
            let port = l.local_addr().map(|a| a.port()).unwrap_or(0);
            Ok((l, Some(format!("port of {address} is already in use; the dashboard serves on port {port} instead"))))
        }
        Err(source) => Err(DashboardError::Bind { address, source }),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    /// A dashboard bound to all interfaces is linked at an address that reaches it (a real
    /// listener, a real connection), never at `0.0.0.0`.
    #[test]
    fn a_dashboard_on_all_interfaces_links_a_reachable_address() {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let (_publisher, feed) = channel(DEFAULT_INTERVAL);
        let dashboard = runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
            Dashboard::serve(listener, feed, DashboardOptions::default()).unwrap()
        });
        let link = dashboard.link();
        let host = link.trim_start_matches("http://").trim_end_matches("/status").to_string();
        assert!(!host.starts_with("0.0.0.0"), "{link}");
        let ip: SocketAddr = host.parse().unwrap_or_else(|e| panic!("{link}: {e}"));
        assert_eq!(ip.port(), dashboard.address().port());
        let mut stream = std::net::TcpStream::connect(ip).unwrap_or_else(|e| panic!("{link} is not reachable: {e}"));
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        write!(stream, "GET /health HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        assert!(response.starts_with("HTTP/1.1 200") && response.ends_with("ok"), "{response}");
        // A specific address is linked as it is.
        assert_eq!(link_of("127.0.0.1:8787"), "http://127.0.0.1:8787/status");
        assert_eq!(link_of("[::1]:8787"), "http://[::1]:8787/status");
    }

    fn link_of(address: &str) -> String {
        link(address.parse().unwrap())
    }
}
