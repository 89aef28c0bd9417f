//! The worker: runs tasks on a thread pool, holds their results, serves them to peers and
//! clients, and fetches its tasks' inputs directly from the workers that hold them.
//!
//! The decisions live in the pure [`kiln_worker::WorkerState`]; this module is its I/O edge:
//!
//! - [`shell`]: the async shell. One task owns the state, turns scheduler messages, finished
//!   runs, fetches, spills and timers into events, and carries out the state's instructions.
//! - [`compute`]: the compute threads and the priority queue of runs they take from; a long
//!   task never stalls a connection.
//! - [`peer`]: the data port, answering `Get` and `Put` from peers and clients.
//! - [`store`]: values in memory and in spill files; spill files are written and read on the
//!   blocking pool, never under the store's lock on the runtime.

mod activity;
mod compute;
mod metrics;
mod peer;
mod shell;
pub mod store;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kiln_protocol::messages::WorkerToScheduler;
use kiln_worker::{MemoryLimits, WhenStuck, WorkerState};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::comm::{CommError, PeerPool, Security, TlsRole};
use compute::{JobQueue, compute_thread};
use shell::{Shell, ShellEvent, connect_scheduler};
use store::Store;

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The scheduler's address (`host:port`, `tcp://` allowed).
    pub scheduler: String,
    /// Threads that run tasks.
    pub nthreads: usize,
    /// Memory limit in bytes (0: none); reported to the scheduler.
    pub memory_limit: u64,
    /// A human name (defaults to the data address).
    pub name: Option<String>,
    /// Where to listen for peers (`host:port`, port 0 for any).
    pub listen: String,
    /// How often to send heartbeats.
    pub heartbeat: Duration,
    /// The directory the worker makes its spill directory in (`kiln-worker-<pid>-<port>`,
    /// removed when the worker exits; Dask's `local_directory`). Default: the system's
    /// temporary directory (`TMPDIR`, else `/tmp`).
    pub local_directory: Option<std::path::PathBuf>,
    /// After losing the scheduler, keep trying to rejoin for this long (then stop).
    pub reconnect: Duration,
    /// The worker runs under a nanny that starts a new process when this one exits with
    /// [`EXIT_FRESH_START`](crate::EXIT_FRESH_START). A memory pause that waiting cannot end
    /// (nothing running, nothing held) then ends with the worker leaving for a fresh process;
    /// without a nanny it ends with the worker resuming (see [`kiln_worker::WhenStuck`]).
    pub supervised: bool,
    /// TLS (for the connection to the scheduler, the data port and fetches from peers) and the
    /// token. Default: plain TCP.
    pub security: Security,
    /// Exit when no scheduler has been reachable for this long, at start-up or after losing
    /// it (Dask's `--death-timeout`); `None` waits as [`WorkerConfig::reconnect`] says.
    pub death_timeout: Option<Duration>,
    /// Where the worker serves Prometheus `/metrics` and `/health` over HTTP (`host:port`,
    /// `:0` for any free port on all interfaces; Dask's worker `--dashboard-address`);
    /// `None`: no HTTP port. See [`WorkerHandle::http_address`].
    pub http: Option<String>,
    /// Metric name namespace on that port: `kiln` (default) or `dask`.
    pub metrics_namespace: String,
}

impl WorkerConfig {
    /// A worker of the scheduler at `scheduler` with one thread per core.
    pub fn new(scheduler: &str) -> Self {
        WorkerConfig {
            scheduler: scheduler.to_string(),
            nthreads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            memory_limit: 0,
            name: None,
            listen: "127.0.0.1:0".into(),
            heartbeat: Duration::from_secs(1),
            local_directory: None,
            reconnect: Duration::from_secs(60),
            supervised: false,
            security: Security::default(),
            death_timeout: None,
            http: None,
            metrics_namespace: "kiln".into(),
        }
    }
}

/// Strips an optional `tcp://` or `tls://` scheme.
pub fn strip_scheme(address: &str) -> &str {
    address.strip_prefix("tcp://").or_else(|| address.strip_prefix("tls://")).unwrap_or(address)
}

/// A running worker.
pub struct WorkerHandle {
    address: SocketAddr,
    events: mpsc::UnboundedSender<ShellEvent>,
    done: watch::Receiver<bool>,
    fresh_start: Arc<AtomicBool>,
    no_scheduler: Arc<AtomicBool>,
    http: Option<kiln_dashboard::worker::WorkerHttp>,
}

impl WorkerHandle {
    /// Where the worker serves `/metrics` and `/health`, if it was given an HTTP address
    /// ([`WorkerConfig::http`]).
    pub fn http_address(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(|h| h.address())
    }

    /// Where peers and clients fetch this worker's data.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Asks the worker to hand back unstarted work and leave.
    pub fn close(&self, reason: &str) {
        let _ = self.events.send(ShellEvent::Close(reason.to_string()));
    }

    /// Waits until the worker has stopped.
    pub async fn stopped(&self) {
        let mut done = self.done.clone();
        let _ = done.wait_for(|d| *d).await;
    }

    /// Whether the worker stopped to be started afresh: it was paused for memory that waiting
    /// could not free, holding nothing, and runs under a nanny ([`WorkerConfig::supervised`]).
    /// Its process should then exit with [`EXIT_FRESH_START`](crate::EXIT_FRESH_START).
    pub fn wants_fresh_start(&self) -> bool {
        self.fresh_start.load(Ordering::Relaxed)
    }

    /// Whether the worker stopped because no scheduler was reachable for its death timeout
    /// (or [`WorkerConfig::reconnect`]); its process should exit with
    /// [`EXIT_NO_SCHEDULER`](crate::EXIT_NO_SCHEDULER), which a nanny does not restart.
    pub fn lost_scheduler(&self) -> bool {
        self.no_scheduler.load(Ordering::Relaxed)
    }
}

/// Starts a worker on the current tokio runtime: binds its data port, registers with the
/// scheduler and starts its compute threads. Kernels and codecs come from the global
/// registries.
///
/// # Errors
/// The port cannot be bound, the scheduler cannot be reached, or the configuration is invalid.
pub async fn start_worker(config: WorkerConfig) -> Result<WorkerHandle, CommError> {
    let mut state_config = kiln_worker::Config::new(config.nthreads.max(1));
    state_config.memory = MemoryLimits::with_limit(config.memory_limit);
    state_config.when_stuck = if config.supervised { WhenStuck::Restart } else { WhenStuck::Resume };
    let state = WorkerState::new(state_config).map_err(|e| CommError::Io {
        context: "invalid worker configuration".into(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
    })?;
    if let Some(parent) = &config.local_directory {
        // Refused now rather than at the first spill, when the worker is under memory pressure.
        std::fs::create_dir_all(parent).map_err(|source| CommError::Io {
            context: format!("cannot use local directory {}", parent.display()),
            source,
        })?;
    }
    let transport = config.security.transport(TlsRole::Worker)?;
    let http_listener = match &config.http {
        Some(address) => {
            let address = if address.starts_with(':') { format!("0.0.0.0{address}") } else { address.clone() };
            let listener = TcpListener::bind(&address).await.map_err(|source| CommError::Io {
                context: format!("cannot serve the worker's metrics on {address}"),
                source,
            })?;
            Some(listener)
        }
        None => None,
    };
    let listener = TcpListener::bind(&config.listen)
        .await
        .map_err(|source| CommError::Io { context: format!("cannot listen on {}", config.listen), source })?;
    let address = listener.local_addr().map_err(|source| CommError::Io { context: "local address".into(), source })?;
    let name = config.name.clone().unwrap_or_else(|| address.to_string());
    crate::comm::parse_address(&config.scheduler).map_err(CommError::Setup)?;
    let scheduler_address = config.scheduler.clone();
    let write_token = crate::comm::new_write_token()?;
    // A TLS data port is advertised with its scheme, so peers know to speak TLS to it.
    let data_address = match transport.listens_tls() {
        true => format!("tls://{address}"),
        false => address.to_string(),
    };
    let register = WorkerToScheduler::Register {
        address: data_address.clone(),
        name: name.clone(),
        nthreads: config.nthreads as u32,
        memory_limit: config.memory_limit,
        write_token,
    };
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    // Served before the worker joins: a scrape waits in the channel until the shell runs.
    let http = match http_listener {
        Some(listener) => {
            let events = events_tx.clone();
            let source: kiln_dashboard::worker::MetricsSource =
                Arc::new(move |reply| events.send(ShellEvent::Metrics(reply)).is_ok());
            let http = kiln_dashboard::worker::WorkerHttp::serve(listener, source, &config.metrics_namespace)
                .map_err(|e| CommError::Setup(e.to_string()))?;
            tracing::info!("worker {name}: metrics at http://{}/metrics", http.address());
            Some(http)
        }
        None => None,
    };
    // With a death timeout the scheduler may come up later (a batch job's workers often start
    // first): keep trying until the timeout, then fail.
    let give_up = config.death_timeout.map(|t| tokio::time::Instant::now() + t);
    let mut delay = Duration::from_millis(100);
    let (to_scheduler, flushed) = loop {
        match connect_scheduler(&scheduler_address, &name, register.clone(), events_tx.clone(), &transport).await {
            Ok(connected) => break connected,
            Err(e @ (CommError::Io { .. } | CommError::Closed(_) | CommError::Timeout(_))) => match give_up {
                Some(deadline) if tokio::time::Instant::now() + delay < deadline => {
                    tracing::info!("worker {name}: scheduler {scheduler_address} not reachable yet: {e}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Some(_) => {
                    return Err(CommError::NoScheduler(format!(
                        "no scheduler reachable at {scheduler_address} within the death timeout of {:?}: {e}",
                        config.death_timeout.unwrap_or_default()
                    )));
                }
                None => return Err(e),
            },
            Err(e) => return Err(e),
        }
    };

    let parent = config.local_directory.clone().unwrap_or_else(std::env::temp_dir);
    let dir = parent.join(format!("kiln-worker-{}-{}", std::process::id(), address.port()));
    let store = Arc::new(Store::new(dir));
    let queue = Arc::new(JobQueue::default());
    let mut threads = Vec::new();
    // Kernels check each block they allocate against the memory limit (or, without one, the
    // memory available): an oversized block fails its task instead of aborting the worker.
    kiln_graph::memory::set_available_probe(kiln_local::allocator::available_memory);
    let budget = match config.memory_limit {
        0 => kiln_graph::memory::Budget::Available,
        bytes => kiln_graph::memory::Budget::Limit { bytes, of: "the worker memory limit" },
    };
    for i in 0..config.nthreads.max(1) {
        let queue = queue.clone();
        let events = events_tx.clone();
        let thread = std::thread::Builder::new()
            .name(format!("kiln-worker-{i}"))
            .spawn(move || {
                kiln_graph::memory::set_budget(Some(budget));
                compute_thread(&queue, i as u32, |outcome| events.send(ShellEvent::Done(outcome)).is_ok())
            })
            .map_err(|source| CommError::Io { context: "cannot start a compute thread".into(), source })?;
        threads.push(thread);
    }

    let served = Arc::new(metrics::Served::default());
    tokio::spawn(peer::serve_peers(
        listener,
        store.clone(),
        served.clone(),
        events_tx.clone(),
        name.clone(),
        write_token,
        transport.clone(),
    ));
    spawn_ticker(events_tx.clone(), config.heartbeat, || ShellEvent::Heartbeat);
    if config.memory_limit > 0 {
        // Memory is watched 40 times a second (Dask: 10). Two threads can produce tens of MB
        // per 100 ms, enough to overshoot a small limit between checks; reading the process's
        // memory costs microseconds.
        spawn_ticker(events_tx.clone(), Duration::from_millis(25), || ShellEvent::MemoryCheck);
    }

    let (done_tx, done) = watch::channel(false);
    let fresh_start = Arc::new(AtomicBool::new(false));
    let no_scheduler = Arc::new(AtomicBool::new(false));
    let shell = Shell {
        name,
        address: data_address,
        scheduler_address,
        register,
        reconnect: config.death_timeout.unwrap_or(config.reconnect),
        no_scheduler: no_scheduler.clone(),
        to_scheduler,
        flushed,
        state,
        store: store.clone(),
        queue,
        pool: PeerPool::new(&address.to_string(), transport.clone()),
        transport,
        events: events_tx.clone(),
        kernels: shell::KernelCache::default(),
        out: Vec::new(),
        arriving: Vec::new(),
        follow_ups: VecDeque::new(),
        started: Instant::now(),
        activity: Default::default(),
        counters: metrics::Counters::new(config.nthreads.max(1) as u32, served),
    };

    let fresh = fresh_start.clone();
    tokio::spawn(async move {
        if shell.run(events_rx).await {
            fresh.store(true, Ordering::Relaxed);
        }
        for t in threads {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        // The peer server may still hold the store; the spill directory goes now.
        let dir = store.dir().to_path_buf();
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
        let _ = done_tx.send(true);
    });
    Ok(WorkerHandle { address, events: events_tx, done, fresh_start, no_scheduler, http })
}

/// Sends `event()` every `period` until the shell is gone.
fn spawn_ticker(events: mpsc::UnboundedSender<ShellEvent>, period: Duration, event: fn() -> ShellEvent) {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(period);
        loop {
            ticker.tick().await;
            if events.send(event()).is_err() {
                return;
            }
        }
    });
}

/// Makes freed large buffers go back to the operating system at once, so a worker's resident
/// memory follows what it holds (glibc otherwise raises its mmap threshold after the first
/// large free and keeps array chunks in its heap). Worker processes call it at start-up.
pub fn tune_allocator_for_workers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before worker threads
    // allocate large buffers.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}

/// The process's resident set size in bytes (Linux; 0 elsewhere).
pub fn process_rss() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}
