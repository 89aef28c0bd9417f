//! A worker's own HTTP port: Prometheus `/metrics` with Dask's worker metric names
//! (`kiln_worker_tasks{state="memory"}` ≙ `dask_worker_tasks{state="memory"}`) and `/health`.
//!
//! The worker's state lives in its shell's event loop; a scrape asks the shell for a
//! [`WorkerMetrics`] through a [`MetricsSource`] and renders the answer, so nothing is computed
//! while nobody scrapes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::oneshot;

use crate::{DashboardError, MAX_BODY_BYTES, check_namespace};

/// Totals of one kind of disk access by the spill store since the worker started.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SpillTotals {
    /// Bytes moved.
    pub bytes: u64,
    /// Values moved.
    pub count: u64,
    /// Seconds spent.
    pub seconds: f64,
}

/// What a worker's `/metrics` shows, taken by the worker's event loop at one instant.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkerMetrics {
    /// Threads that run tasks.
    pub threads: u32,
    /// Keys by state, under Dask's worker state names (`waiting`, `ready`, `executing`,
    /// `flight`, `memory`; a spilled value is in `memory`, as in Dask, and its bytes are in
    /// [`WorkerMetrics::spilled`]).
    pub tasks: Vec<(&'static str, u64)>,
    /// Bytes of results held in memory.
    pub managed: u64,
    /// The process's resident memory.
    pub process: u64,
    /// Bytes of results spilled to disk.
    pub spilled: u64,
    /// Values fetched from peers since the worker started.
    pub transfer_incoming_count_total: u64,
    /// Bytes fetched from peers since the worker started.
    pub transfer_incoming_bytes_total: u64,
    /// Values served to peers and clients since the worker started.
    pub transfer_outgoing_count_total: u64,
    /// Bytes served to peers and clients since the worker started.
    pub transfer_outgoing_bytes_total: u64,
    /// Fetches from peers sent and not yet answered (the `flight` values being received).
    pub transfer_incoming_in_flight_count: u64,
    /// Bytes those fetches will bring, by the sizes their producers reported.
    pub transfer_incoming_in_flight_bytes: u64,
    /// Values waiting for their turn to be fetched (the transfer budget or a pause holds them).
    pub transfer_incoming_queued_count: u64,
    /// Values written to disk by spilling.
    pub spill_write: SpillTotals,
    /// Values read back from disk.
    pub spill_read: SpillTotals,
    /// Turns of the worker's event loop since it started.
    pub tick_count_total: u64,
    /// The longest turn of the event loop since the last scrape, in seconds.
    pub tick_duration_maximum_seconds: f64,
    /// Bytes the worker's process read from its connections (scheduler, peers, clients).
    pub network_read_bytes_total: u64,
    /// Bytes the worker's process wrote to its connections.
    pub network_write_bytes_total: u64,
}

/// Asks the worker for its metrics: sends the reply end to the worker's event loop; `false`
/// when the worker is gone.
pub type MetricsSource = Arc<dyn Fn(oneshot::Sender<WorkerMetrics>) -> bool + Send + Sync>;

type Labels = Vec<(String, String)>;

fn gauge(registry: &mut Registry, name: &str, help: &str, value: f64) {
    let g = Gauge::<f64, AtomicU64>::default();
    g.set(value);
    registry.register(name, help, g);
}

fn counter(registry: &mut Registry, name: &str, help: &str, value: f64) {
    let c = Counter::<f64, AtomicU64>::default();
    c.inc_by(value);
    registry.register(name, help, c);
}

/// The metrics text for one worker under `namespace` (`kiln` or `dask`).
pub fn render_worker_metrics(m: &WorkerMetrics, namespace: &str) -> String {
    let mut registry = Registry::with_prefix(namespace);
    let r = registry.sub_registry_with_prefix("worker");
    let tasks = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    for (state, n) in &m.tasks {
        tasks.get_or_create(&vec![("state".to_string(), state.to_string())]).set(*n as f64);
    }
    r.register("tasks", "Number of tasks at worker, by state", tasks);
    gauge(r, "threads", "Number of worker threads", m.threads as f64);

    let memory = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    let unmanaged = m.process.saturating_sub(m.managed);
    for (kind, bytes) in [("managed", m.managed), ("unmanaged", unmanaged), ("spilled", m.spilled)] {
        memory.get_or_create(&vec![("type".to_string(), kind.to_string())]).set(bytes as f64);
    }
    r.register("memory_bytes", "Memory breakdown (managed, unmanaged, spilled)", memory);

    // Open fetches are the `flight` tasks: a gauge named like the counter below would clash
    // with it in OpenMetrics, where a counter's family name drops `_total`.
    counter(
        r,
        "transfer_incoming_count",
        "Total number of values fetched from other workers since the worker started",
        m.transfer_incoming_count_total as f64,
    );
    counter(
        r,
        "transfer_incoming_bytes",
        "Total bytes fetched from other workers since the worker started",
        m.transfer_incoming_bytes_total as f64,
    );
    // Dask names these gauges `transfer_incoming_bytes`/`_count`; here those family names
    // belong to the counters above, so the open transfers say so in their names.
    gauge(
        r,
        "transfer_incoming_in_flight_count",
        "Number of open data transfers from other workers",
        m.transfer_incoming_in_flight_count as f64,
    );
    gauge(
        r,
        "transfer_incoming_in_flight_bytes",
        "Total size of open data transfers from other workers",
        m.transfer_incoming_in_flight_bytes as f64,
    );
    gauge(
        r,
        "transfer_incoming_queued_count",
        "Number of values waiting for the transfer budget (or the end of a pause) to be fetched",
        m.transfer_incoming_queued_count as f64,
    );
    counter(
        r,
        "transfer_outgoing_count",
        "Total number of values served to other workers and clients since the worker started",
        m.transfer_outgoing_count_total as f64,
    );
    counter(
        r,
        "transfer_outgoing_bytes",
        "Total bytes served to other workers and clients since the worker started",
        m.transfer_outgoing_bytes_total as f64,
    );

    let spill_bytes = Family::<Labels, Counter<f64, AtomicU64>>::default();
    let spill_count = Family::<Labels, Counter<f64, AtomicU64>>::default();
    let spill_time = Family::<Labels, Counter<f64, AtomicU64>>::default();
    for (activity, t) in [("disk_write", m.spill_write), ("disk_read", m.spill_read)] {
        let l = vec![("activity".to_string(), activity.to_string())];
        spill_bytes.get_or_create(&l).inc_by(t.bytes as f64);
        spill_count.get_or_create(&l).inc_by(t.count as f64);
        spill_time.get_or_create(&l).inc_by(t.seconds);
    }
    r.register("spill_bytes", "Total bytes written to and read back from disk by spilling", spill_bytes);
    r.register("spill_count", "Total number of values written to and read back from disk", spill_count);
    r.register("spill_time_seconds", "Total time spent writing to and reading back from disk", spill_time);

    counter(r, "tick_count", "Total number of turns of the worker's event loop", m.tick_count_total as f64);
    gauge(
        r,
        "tick_duration_maximum_seconds",
        "Longest turn of the worker's event loop since the last scrape",
        m.tick_duration_maximum_seconds,
    );

    let network = Family::<Labels, Counter<f64, AtomicU64>>::default();
    for (direction, bytes) in [("read", m.network_read_bytes_total), ("write", m.network_write_bytes_total)] {
        network.get_or_create(&vec![("direction".to_string(), direction.to_string())]).inc_by(bytes as f64);
    }
    r.register("network_bytes", "Total bytes read from and written to the worker's connections", network);

    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &registry);
    out
}

/// How long a scrape waits for the worker's event loop.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
struct WorkerApp {
    source: MetricsSource,
    namespace: Arc<str>,
}

/// A worker's running HTTP server; dropping it stops serving.
pub struct WorkerHttp {
    address: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl WorkerHttp {
    /// Serves `/metrics` and `/health` on `listener` (already bound) on the current tokio
    /// runtime; anything else is 404.
    ///
    /// # Errors
    /// The namespace is invalid, or the listener's address cannot be read.
    pub fn serve(
        listener: tokio::net::TcpListener,
        source: MetricsSource,
        namespace: &str,
    ) -> Result<WorkerHttp, DashboardError> {
        check_namespace(namespace)?;
        let address =
            listener.local_addr().map_err(|source| DashboardError::Bind { address: "the listener".into(), source })?;
        let app = WorkerApp { source, namespace: Arc::from(namespace) };
        let router = Router::new()
            .route("/metrics", get(worker_metrics))
            .route("/health", get(|| async { "ok" }))
            .fallback(|| async { (StatusCode::NOT_FOUND, "404: a kiln worker serves /metrics and /health\n") })
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
            .with_state(app);
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::warn!("the worker's HTTP server stopped: {e}");
            }
        });
        Ok(WorkerHttp { address, task })
    }

    /// Where it serves.
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for WorkerHttp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn worker_metrics(State(app): State<WorkerApp>) -> Response {
    let (tx, rx) = oneshot::channel();
    let gone = || (StatusCode::SERVICE_UNAVAILABLE, "the worker is not answering (stopping?)\n").into_response();
    if !(app.source)(tx) {
        return gone();
    }
    match tokio::time::timeout(ANSWER_TIMEOUT, rx).await {
        Ok(Ok(metrics)) => (
            [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
            render_worker_metrics(&metrics, &app.namespace),
        )
            .into_response(),
        _ => gone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_figure_appears_under_dasks_names() {
        let m = WorkerMetrics {
            threads: 2,
            tasks: vec![("memory", 3), ("executing", 1)],
            managed: 100,
            process: 1000,
            spilled: 7,
            transfer_incoming_count_total: 4,
            transfer_incoming_bytes_total: 400,
            transfer_outgoing_count_total: 5,
            transfer_outgoing_bytes_total: 500,
            transfer_incoming_in_flight_count: 2,
            transfer_incoming_in_flight_bytes: 300,
            transfer_incoming_queued_count: 6,
            spill_write: SpillTotals { bytes: 70, count: 2, seconds: 0.5 },
            spill_read: SpillTotals { bytes: 35, count: 1, seconds: 0.25 },
            tick_count_total: 9,
            tick_duration_maximum_seconds: 0.125,
            network_read_bytes_total: 1234,
            network_write_bytes_total: 4321,
        };
        let text = render_worker_metrics(&m, "dask");
        for line in [
            "dask_worker_tasks{state=\"memory\"} 3",
            "dask_worker_threads 2",
            "dask_worker_memory_bytes{type=\"unmanaged\"} 900",
            "dask_worker_memory_bytes{type=\"spilled\"} 7",
            "dask_worker_transfer_incoming_count_total 4",
            "dask_worker_transfer_outgoing_bytes_total 500",
            "dask_worker_transfer_incoming_in_flight_count 2",
            "dask_worker_transfer_incoming_in_flight_bytes 300",
            "dask_worker_transfer_incoming_queued_count 6",
            "dask_worker_spill_bytes_total{activity=\"disk_write\"} 70",
            "dask_worker_spill_time_seconds_total{activity=\"disk_read\"} 0.25",
            "dask_worker_tick_count_total 9",
            "dask_worker_tick_duration_maximum_seconds 0.125",
            "dask_worker_network_bytes_total{direction=\"write\"} 4321",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l.starts_with(line)), "{line} missing from\n{text}");
        }
    }
}
