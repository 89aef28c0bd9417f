//! `LocalCluster`: a scheduler and workers on this machine, started in one line.
//!
//! Workers run as separate processes by default (the `kiln` binary's `worker` command), which
//! is what a real cluster looks like, or as threads inside the calling process.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln_graph::ComputeError;
use kiln_protocol::messages::WorkerId;
use tokio::runtime::Runtime;

pub mod adaptive;
mod args;
mod nanny;
pub mod scheduler_file;
pub use args::{SecurityArgs, WorkerArgs, WorkerArgsInvalid, parse_memory_limit};
pub use nanny::{EXIT_CANNOT_START, EXIT_FRESH_START, EXIT_NO_SCHEDULER, NannyPolicy, run_nanny};

use crate::client::Client;
use crate::comm::{Security, TlsRole, TlsVersion};
use crate::server::{DashboardConfig, SchedulerServer, ServerConfig};
use crate::worker::{WorkerConfig, WorkerHandle, start_worker};

/// How the workers of a [`LocalCluster`] run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerMode {
    /// Separate `kiln worker` processes (the default).
    Processes,
    /// Threads of the calling process (no binary needed; shares the process's registries).
    Threads,
}

/// Configures and starts a [`LocalCluster`].
#[derive(Debug, Clone)]
pub struct LocalClusterBuilder {
    workers: usize,
    threads_per_worker: usize,
    mode: WorkerMode,
    memory_limit: u64,
    binary: Option<PathBuf>,
    server: ServerConfig,
    start_timeout: Duration,
    nanny: bool,
    local_directory: Option<PathBuf>,
    security: ClusterSecurity,
    worker_metrics: bool,
}

/// A [`LocalCluster`]'s security: none, given, or generated at start.
#[derive(Debug, Clone)]
enum ClusterSecurity {
    Plain,
    Given(Box<Security>),
    Temporary,
}

/// Why a local cluster could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The scheduler or a worker failed to start.
    #[error("{0}")]
    Start(String),
    /// The `kiln` binary for worker processes was not found.
    #[error(
        "cannot find the `kiln` binary to start worker processes (looked at {0}); build it with \
         `cargo build -p kiln-cli`, set KILN_BIN to its path, or use WorkerMode::Threads"
    )]
    NoBinary(String),
    /// Connecting the client failed.
    #[error(transparent)]
    Client(#[from] ComputeError),
}

impl Default for LocalClusterBuilder {
    fn default() -> Self {
        LocalClusterBuilder {
            workers: 2,
            threads_per_worker: 1,
            mode: WorkerMode::Processes,
            memory_limit: 0,
            binary: None,
            // The dashboard on a free loopback port (`LocalCluster::dashboard_link`).
            server: ServerConfig { dashboard: Some(local_dashboard()), ..ServerConfig::default() },
            start_timeout: Duration::from_secs(60),
            nanny: true,
            local_directory: None,
            security: ClusterSecurity::Plain,
            worker_metrics: false,
        }
    }
}

fn local_dashboard() -> DashboardConfig {
    DashboardConfig { address: "127.0.0.1:0".into(), ..DashboardConfig::default() }
}

impl LocalClusterBuilder {
    /// Serve the dashboard (default: on, on a free loopback port) or not.
    pub fn dashboard(mut self, on: bool) -> Self {
        self.server.dashboard = on.then(local_dashboard);
        self
    }

    /// Each worker serves Prometheus `/metrics` on a free loopback port (default: off);
    /// [`LocalCluster::worker_metrics_addresses`] lists those of thread workers.
    pub fn worker_metrics(mut self, on: bool) -> Self {
        self.worker_metrics = on;
        self
    }

    /// Number of workers (default 2).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }
    /// Threads per worker (default 1).
    pub fn threads_per_worker(mut self, n: usize) -> Self {
        self.threads_per_worker = n.max(1);
        self
    }
    /// Processes (default) or threads.
    pub fn mode(mut self, mode: WorkerMode) -> Self {
        self.mode = mode;
        self
    }
    /// Memory limit per worker in bytes (0: none).
    pub fn memory_limit(mut self, bytes: u64) -> Self {
        self.memory_limit = bytes;
        self
    }
    /// The `kiln` binary to run workers with (default: `KILN_BIN`, then next to this program,
    /// then `PATH`).
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }
    /// Scheduler settings.
    pub fn server(mut self, config: ServerConfig) -> Self {
        self.server = config;
        self
    }
    /// How long tasks that no worker can run wait before they err with
    /// [`ComputeError::NoWorkers`] (`None`: forever); see
    /// [`kiln_scheduler::Config::no_workers_timeout_ms`].
    pub fn no_workers_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.server.policy.no_workers_timeout_ms = timeout.map(|t| t.as_millis().min(u64::MAX as u128) as u64);
        self
    }
    /// Whether each worker process runs under a nanny that restarts it when it dies
    /// abnormally (default: yes, as `kiln worker` does). Thread workers have none.
    pub fn nanny(mut self, nanny: bool) -> Self {
        self.nanny = nanny;
        self
    }
    /// The directory workers make their spill directories in (`kiln worker
    /// --local-directory`; default: the system's temporary directory).
    pub fn local_directory(mut self, dir: impl Into<PathBuf>) -> Self {
        self.local_directory = Some(dir.into());
        self
    }

    /// TLS and token settings for every connection of the cluster: the scheduler's listener,
    /// the workers' connections and data ports, and the clients of [`LocalCluster::client`]
    /// (which use the client certificate). Worker processes get the CA and the worker
    /// certificate as files in a private temporary directory, removed when the cluster closes.
    pub fn security(mut self, security: Security) -> Self {
        self.security = ClusterSecurity::Given(Box::new(security));
        self
    }

    /// `true`: TLS with mutual authentication, with a CA and certificates generated in memory
    /// at start ([`Security::temporary`], as Dask's `LocalCluster(security=True)`); `false`:
    /// plain TCP (the default).
    pub fn secure(mut self, secure: bool) -> Self {
        self.security = if secure { ClusterSecurity::Temporary } else { ClusterSecurity::Plain };
        self
    }

    /// Starts the scheduler and the workers and waits until every worker has registered.
    ///
    /// # Errors
    /// [`ClusterError`] when something does not start in time.
    pub fn start(self) -> Result<LocalCluster, ClusterError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(if self.mode == WorkerMode::Threads { 2 } else { 1 })
            .thread_name("kiln-cluster")
            .enable_all()
            .build()
            .map_err(|e| ClusterError::Start(format!("cannot start a runtime: {e}")))?;
        let security = match &self.security {
            ClusterSecurity::Plain => Security::default(),
            ClusterSecurity::Given(security) => Security::clone(security),
            ClusterSecurity::Temporary => {
                Security::temporary().map_err(|e| ClusterError::Start(format!("cannot make certificates: {e}")))?
            }
        };
        let mut server_config = self.server.clone();
        server_config.security = security.clone();
        let server = runtime
            .block_on(SchedulerServer::start("127.0.0.1:0", server_config))
            .map_err(|e| ClusterError::Start(e.to_string()))?;
        let address = server.url();
        // Worker processes read their certificate from files; threads share `security`.
        let tls_dir = if security.has_certificate(TlsRole::Worker) && self.mode == WorkerMode::Processes {
            static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("kiln-cluster-tls-{}-{n}", std::process::id()));
            let files =
                security.write_pem_files(&dir, TlsRole::Worker).map_err(|e| ClusterError::Start(e.to_string()))?;
            Some((dir, files))
        } else {
            None
        };
        let control = Client::connect_with(&address, &security)?;
        let shared = Arc::new(Shared {
            runtime,
            server,
            address,
            security,
            tls_dir,
            builder: self.clone(),
            pool: Mutex::new(Pool { workers: Vec::new(), next_name: 0 }),
            control,
        });
        shared.scale(self.workers)?;
        Ok(LocalCluster { shared, adaptive: Mutex::new(None) })
    }
}

enum LocalWorker {
    Process(Child),
    Thread(WorkerHandle),
}

struct Pool {
    workers: Vec<(String, LocalWorker)>,
    next_name: usize,
}

struct Shared {
    runtime: Runtime,
    server: SchedulerServer,
    /// The scheduler's address with its scheme.
    address: String,
    security: Security,
    /// The directory holding the PEM files worker processes read, and the CA, certificate and
    /// key paths in it.
    tls_dir: Option<(PathBuf, [PathBuf; 3])>,
    builder: LocalClusterBuilder,
    pool: Mutex<Pool>,
    /// The cluster's own connection: waits for workers, retires them, watches the load.
    control: Client,
}

struct Adaptive {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

/// A scheduler and workers on this machine (Dask's `LocalCluster`).
///
/// ```
/// use kiln_distributed::{LocalCluster, WorkerMode};
/// // `WorkerMode::Threads` so the example needs no `kiln` binary; the default is processes.
/// let cluster = LocalCluster::builder().workers(2).mode(WorkerMode::Threads).start().unwrap();
/// let client = cluster.client().unwrap();
/// assert_eq!(client.workers().len(), 2);
/// ```
pub struct LocalCluster {
    shared: Arc<Shared>,
    adaptive: Mutex<Option<Adaptive>>,
}

impl LocalCluster {
    /// A builder with defaults: 2 single-threaded worker processes.
    pub fn builder() -> LocalClusterBuilder {
        LocalClusterBuilder::default()
    }

    /// The scheduler's address, `tcp://127.0.0.1:port` (`tls://` for a secure cluster).
    pub fn address(&self) -> String {
        self.shared.address.clone()
    }

    /// The cluster's security settings (for clients connecting with [`Client::connect_with`]).
    pub fn security(&self) -> &Security {
        &self.shared.security
    }

    /// The dashboard's live page (`http://127.0.0.1:port/status`), unless turned off.
    pub fn dashboard_link(&self) -> Option<String> {
        self.shared.server.dashboard_link()
    }

    /// A new client connected to this cluster (with its client certificate and token).
    ///
    /// # Errors
    /// The scheduler cannot be reached.
    pub fn client(&self) -> Result<Client, ComputeError> {
        Client::connect_with(&self.shared.address, &self.shared.security)
    }

    /// Number of workers started by this cluster and still running.
    pub fn worker_count(&self) -> usize {
        self.shared.lock().workers.len()
    }

    /// Grows or shrinks the cluster to `n` workers. New workers are waited for; leaving ones
    /// are retired first (their unique results move to the others), so nothing is lost.
    ///
    /// # Errors
    /// Workers that do not start.
    pub fn scale(&self, n: usize) -> Result<(), ClusterError> {
        self.shared.scale(n)
    }

    /// Lets the cluster size follow the load between `min` and `max` workers (Dask's
    /// `adapt`): it grows as soon as queued and running work exceeds two tasks per thread,
    /// and shrinks (retiring workers, losing nothing) only after the load has stayed low for
    /// two seconds, so it does not flap. Replaces an earlier `adapt`.
    pub fn adapt(&self, min: usize, max: usize) {
        self.stop_adapting();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let shared = self.shared.clone();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || adapt_loop(&shared, min, max.max(min), &flag));
        *self.adaptive.lock().unwrap_or_else(|p| p.into_inner()) = Some(Adaptive { stop, thread });
    }

    /// Stops adaptive scaling (the cluster keeps its current size).
    pub fn stop_adapting(&self) {
        if let Some(a) = self.adaptive.lock().unwrap_or_else(|p| p.into_inner()).take() {
            a.stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let _ = a.thread.join();
        }
    }

    /// The OS process ids of worker processes (empty for thread workers): the processes
    /// that run tasks, so under a nanny its child (a worker being restarted at this moment is
    /// missing from the list).
    pub fn worker_pids(&self) -> Vec<u32> {
        let nannies = self.nanny_pids();
        if nannies.is_empty() {
            return self.process_pids();
        }
        nannies.into_iter().flat_map(children_of).collect()
    }

    /// The OS process ids of the nannies of the worker processes (empty without nannies).
    pub fn nanny_pids(&self) -> Vec<u32> {
        if self.shared.builder.nanny { self.process_pids() } else { Vec::new() }
    }

    /// Where the thread workers serve `/metrics` (with [`LocalClusterBuilder::worker_metrics`];
    /// process workers log theirs).
    pub fn worker_metrics_addresses(&self) -> Vec<std::net::SocketAddr> {
        self.shared
            .lock()
            .workers
            .iter()
            .filter_map(|(_, w)| match w {
                LocalWorker::Thread(h) => h.http_address(),
                LocalWorker::Process(_) => None,
            })
            .collect()
    }

    fn process_pids(&self) -> Vec<u32> {
        self.shared
            .lock()
            .workers
            .iter()
            .filter_map(|(_, w)| match w {
                LocalWorker::Process(c) => Some(c.id()),
                LocalWorker::Thread(_) => None,
            })
            .collect()
    }

    /// Stops workers and scheduler.
    pub fn close(self) {}
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.stop_adapting();
        self.shared.shutdown();
    }
}

/// Checks the load five times a second and resizes the cluster.
fn adapt_loop(shared: &Shared, min: usize, max: usize, stop: &std::sync::atomic::AtomicBool) {
    let mut policy = adaptive::AdaptivePolicy::new(min, max, shared.builder.threads_per_worker);
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
        let Ok(load) = shared.control.cluster_load() else { return };
        let current = shared.lock().workers.len();
        let Some(desired) = policy.decide(&load, current, std::time::Instant::now()) else { continue };
        tracing::info!("adaptive: scaling from {current} to {desired} workers");
        if let Err(e) = shared.scale(desired) {
            tracing::warn!("adaptive: scaling to {desired} failed: {e}");
        }
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn scale(&self, n: usize) -> Result<(), ClusterError> {
        let mut pool = self.lock();
        if pool.workers.len() > n {
            let leaving: Vec<(String, LocalWorker)> = pool.workers.drain(n..).collect();
            let names: Vec<&str> = leaving.iter().map(|(name, _)| name.as_str()).collect();
            let ids: Vec<WorkerId> =
                self.control.workers().into_iter().filter(|w| names.contains(&w.name.as_str())).map(|w| w.id).collect();
            self.control.retire_workers(&ids);
            for (_, worker) in leaving {
                match worker {
                    LocalWorker::Process(mut child) => {
                        // Retirement ends with the scheduler telling it to leave.
                        if !wait_child(&mut child, Duration::from_secs(60)) {
                            terminate(&mut child);
                        }
                    }
                    LocalWorker::Thread(handle) => {
                        let stopped = self.runtime.block_on(async {
                            tokio::time::timeout(Duration::from_secs(60), handle.stopped()).await.is_ok()
                        });
                        if !stopped {
                            handle.close("retirement timed out");
                        }
                    }
                }
            }
            // Return once the scheduler has let them go (its news wakes the wait); a scheduler
            // slower than that is not an error of scaling, which has already happened.
            let _ = self.control.wait_workers_gone(&ids, Duration::from_secs(10));
            return Ok(());
        }
        if pool.workers.len() == n {
            return Ok(());
        }
        let binary = match self.builder.mode {
            WorkerMode::Processes => Some(find_binary(self.builder.binary.as_deref())?),
            WorkerMode::Threads => None,
        };
        while pool.workers.len() < n {
            let name = format!("local-{}", pool.next_name);
            pool.next_name += 1;
            let worker = match &binary {
                Some(binary) => {
                    let mut command = Command::new(binary);
                    command
                        .arg("worker")
                        .arg(&self.address)
                        .arg("--nthreads")
                        .arg(self.builder.threads_per_worker.to_string())
                        .arg("--memory-limit")
                        .arg(self.builder.memory_limit.to_string())
                        .arg("--name")
                        .arg(&name);
                    if let Some(dir) = &self.builder.local_directory {
                        command.arg("--local-directory").arg(dir);
                    }
                    if self.builder.worker_metrics {
                        command.arg("--dashboard-address").arg("127.0.0.1:0");
                    }
                    if !self.builder.nanny {
                        command.arg("--no-nanny");
                    }
                    if let Some((_, [ca, cert, key])) = &self.tls_dir {
                        command.arg("--tls-ca-file").arg(ca).arg("--tls-cert").arg(cert).arg("--tls-key").arg(key);
                        command.arg("--tls-min-version").arg(match self.security.min_version() {
                            TlsVersion::V1_2 => "1.2",
                            TlsVersion::V1_3 => "1.3",
                        });
                    }
                    if self.security.require_encryption() {
                        command.arg("--require-encryption");
                    }
                    if let Some(token) = self.security.token() {
                        // In the child's environment, never on its command line (visible in ps).
                        use std::os::unix::ffi::OsStrExt;
                        command.env("KILN_AUTH_TOKEN", std::ffi::OsStr::from_bytes(token.as_bytes()));
                    }
                    let child = command
                        // Worker logs stay quiet beside the user's program unless asked for.
                        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
                        .stdin(Stdio::null())
                        .spawn()
                        .map_err(|e| ClusterError::Start(format!("cannot start {}: {e}", binary.display())))?;
                    LocalWorker::Process(child)
                }
                None => {
                    let mut config = WorkerConfig::new(&self.address);
                    config.nthreads = self.builder.threads_per_worker;
                    config.memory_limit = self.builder.memory_limit;
                    config.local_directory = self.builder.local_directory.clone();
                    config.name = Some(name.clone());
                    config.security = self.security.clone();
                    config.http = self.builder.worker_metrics.then(|| "127.0.0.1:0".to_string());
                    let handle =
                        self.runtime.block_on(start_worker(config)).map_err(|e| ClusterError::Start(e.to_string()))?;
                    LocalWorker::Thread(handle)
                }
            };
            pool.workers.push((name, worker));
        }
        let names: Vec<String> = pool.workers.iter().map(|(n, _)| n.clone()).collect();
        drop(pool);
        // Wait until the scheduler lists every worker of ours: each round sleeps until the
        // client hears of one more worker than it listed (a notification, not a 5 ms poll).
        let deadline = std::time::Instant::now() + self.builder.start_timeout;
        loop {
            let listed = self.control.workers();
            if names.iter().all(|n| listed.iter().any(|w| &w.name == n)) {
                return Ok(());
            }
            let remaining = deadline.saturating_duration_since(std::time::Instant::now());
            let timed_out = || {
                ClusterError::Start(format!(
                    "workers did not register within {:?} (listed: {})",
                    self.builder.start_timeout,
                    listed.len()
                ))
            };
            if remaining.is_zero() {
                return Err(timed_out());
            }
            // Re-checked at least every 200 ms: a foreign worker leaving while ours joins
            // leaves the count unchanged.
            match self.control.wait_for_workers(listed.len() + 1, remaining.min(Duration::from_millis(200))) {
                Ok(()) | Err(ComputeError::Timeout { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn shutdown(&self) {
        self.server.stop("the local cluster is closing");
        let workers: Vec<(String, LocalWorker)> = self.lock().workers.drain(..).collect();
        for (_, worker) in workers {
            match worker {
                LocalWorker::Process(mut child) => {
                    // The scheduler's Close makes it exit; do not wait forever for it.
                    if !wait_child(&mut child, Duration::from_secs(5)) {
                        let _ = child.kill();
                        let _ = child.wait();
                    }
                }
                LocalWorker::Thread(handle) => {
                    handle.close("the local cluster is closing");
                    let _ = self
                        .runtime
                        .block_on(async { tokio::time::timeout(Duration::from_secs(5), handle.stopped()).await });
                }
            }
        }
        let server = &self.server;
        let _ = self.runtime.block_on(async { tokio::time::timeout(Duration::from_secs(5), server.stopped()).await });
        if let Some((dir, _)) = &self.tls_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The children of process `pid` (a nanny forks from its only thread, whose list this is).
fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .map(|s| s.split_whitespace().filter_map(|p| p.parse().ok()).collect())
        .unwrap_or_default()
}

/// Waits for a child to exit; `false` on timeout.
fn wait_child(child: &mut Child, within: Duration) -> bool {
    let deadline = std::time::Instant::now() + within;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return true,
            Ok(None) if std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => return false,
        }
    }
}

fn terminate(child: &mut Child) {
    // SIGTERM lets the worker hand back its tasks; SIGKILL if it does not leave.
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Finds the `kiln` binary: explicit path, `KILN_BIN`, next to this executable (or one
/// directory up, for tests and examples under `target/*/deps`), then `PATH`.
fn find_binary(explicit: Option<&Path>) -> Result<PathBuf, ClusterError> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    if let Ok(p) = std::env::var("KILN_BIN") {
        return Ok(PathBuf::from(p));
    }
    let mut looked = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        if exe.file_stem().is_some_and(|s| s == "kiln") {
            return Ok(exe);
        }
        let mut dir = exe.parent().map(Path::to_path_buf);
        for _ in 0..2 {
            let Some(d) = dir else { break };
            let candidate = d.join("kiln");
            if candidate.is_file() {
                return Ok(candidate);
            }
            looked.push(candidate.display().to_string());
            dir = d.parent().map(Path::to_path_buf);
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("kiln");
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    looked.push("PATH".into());
    Err(ClusterError::NoBinary(looked.join(", ")))
}

/// Lets a program be its own worker binary, so workers know the program's registered kernels:
/// call it first thing in `main` (after registering kernels) and start the cluster with
/// `LocalCluster::builder().binary(std::env::current_exe()?)`. When the process was started as
/// `<program> worker ADDR [--nthreads N] [--memory-limit BYTES] [--name NAME] [--no-nanny]`,
/// this runs a worker until the scheduler or a signal stops it, then exits the process;
/// otherwise it returns at once. As with `kiln worker`, the worker runs as a child of a nanny
/// that restarts it when it dies abnormally (the program re-run with `--no-nanny`).
pub fn run_worker_if_requested() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) != Some("worker") {
        return;
    }
    let code = match worker_from_args(&args[1..]) {
        Ok(code) => code,
        Err(WorkerArgsError::Start(e @ crate::comm::CommError::NoScheduler(_))) => {
            eprintln!("kiln worker: {e}");
            EXIT_NO_SCHEDULER
        }
        Err(message) => {
            eprintln!("kiln worker: {message}");
            EXIT_CANNOT_START
        }
    };
    std::process::exit(code);
}

/// Why `<program> worker ...` could not run a worker.
#[derive(Debug, thiserror::Error)]
pub enum WorkerArgsError {
    /// The command line does not parse (clap's message, with usage).
    #[error("{0}")]
    Usage(String),
    /// The flags parse but cannot work (zero threads, a bad memory limit).
    #[error(transparent)]
    Invalid(#[from] WorkerArgsInvalid),
    /// The worker's runtime or signal handler could not start.
    #[error("{context}: {source}")]
    Io {
        /// What was being started.
        context: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// The worker could not start (port, scheduler).
    #[error(transparent)]
    Start(#[from] crate::comm::CommError),
}

fn worker_from_args(args: &[String]) -> Result<i32, WorkerArgsError> {
    /// `<program> worker ...`: the same flags as `kiln worker`.
    #[derive(clap::Parser)]
    #[command(name = "worker", about = "Runs this program as a kiln worker", args_override_self = true)]
    struct Command {
        #[command(flatten)]
        args: WorkerArgs,
    }
    // kiln.toml and KILN_* variables first, the command line last (it wins).
    let file = crate::config::ConfigFile::find().map_err(|e| WorkerArgsError::Usage(e.to_string()))?;
    let user: Vec<std::ffi::OsString> = args.iter().map(Into::into).collect();
    let layered = crate::config::layer(
        crate::config::Section::Worker,
        &<Command as clap::CommandFactory>::command(),
        &user,
        &file,
    )
    .map_err(|e| WorkerArgsError::Usage(e.to_string()))?;
    let command =
        <Command as clap::Parser>::try_parse_from(layered.args).map_err(|e| WorkerArgsError::Usage(e.to_string()))?;
    let config = command.args.to_config()?;
    if !command.args.no_nanny {
        return run_nanny(std::env::args_os().skip(1).collect(), NannyPolicy::default(), config.local_directory)
            .map_err(|source| WorkerArgsError::Io { context: "cannot run the worker under a nanny", source });
    }
    crate::worker::tune_allocator_for_workers();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|source| WorkerArgsError::Io { context: "cannot start a runtime", source })?;
    runtime.block_on(async {
        let worker = start_worker(config).await?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|source| WorkerArgsError::Io { context: "cannot watch SIGTERM", source })?;
        tokio::select! {
            _ = term.recv() => {
                worker.close("received SIGTERM");
                worker.stopped().await;
            }
            _ = tokio::signal::ctrl_c() => {
                worker.close("received Ctrl-C");
                worker.stopped().await;
            }
            _ = worker.stopped() => {}
        }
        Ok(if worker.wants_fresh_start() {
            EXIT_FRESH_START
        } else if worker.lost_scheduler() {
            EXIT_NO_SCHEDULER
        } else {
            0
        })
    })
}
