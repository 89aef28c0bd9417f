//! Clusters of batch jobs (Dask's `dask-jobqueue`): the scheduler runs in this process (on the
//! login node), and each job the batch system starts runs one or more `kiln worker` processes
//! that join it. [`JobQueueCluster::scale`] submits or removes jobs; removed jobs' workers are
//! retired first (their results move to the others), then the jobs are cancelled.
//! [`JobQueueCluster::adapt`] follows the load with the same policy as `LocalCluster`.
//!
//! ```no_run
//! use kiln_deploy::jobqueue::{JobQueueCluster, JobSpec, JobSystem};
//! let spec = JobSpec { cores: 8, memory: 32 << 30, queue: Some("normal".into()), ..JobSpec::default() };
//! let cluster = JobQueueCluster::builder(JobSystem::Slurm, spec).start()?;
//! cluster.scale(4)?; // four workers: four jobs of one worker each
//! let client = cluster.client()?;
//! # Ok::<(), kiln_deploy::JobQueueError>(())
//! ```

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kiln_distributed::adaptive::AdaptivePolicy;
use kiln_distributed::{Client, SchedulerServer, Security, ServerConfig, TlsRole};
use kiln_protocol::messages::WorkerId;

mod system;
pub use system::{JobSpec, JobState, JobStatus, JobSystem, ScriptInput, Walltime, WorkerLaunch};

use crate::process::CommandRunner;

/// Why a job-queue cluster could not do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JobQueueError {
    /// Settings that cannot make a job.
    #[error("{0}")]
    Invalid(String),
    /// A batch-system command is not on the `PATH`.
    #[error("`{command}` was not found on PATH ({path}): is this machine a login node of that batch system?")]
    CommandMissing {
        /// The command.
        command: String,
        /// The `PATH` searched.
        path: String,
    },
    /// A batch-system command failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    CommandFailed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// What it printed on standard error (or output).
        stderr: String,
    },
    /// The submit command printed no job id.
    #[error("`{command}` printed no job id: {output:?}")]
    NoJobId {
        /// The command line.
        command: String,
        /// What it printed.
        output: String,
    },
    /// A file (job script, certificate, token) could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The scheduler could not start, or talking to it failed.
    #[error("scheduler: {0}")]
    Scheduler(String),
    /// The cluster's own client failed.
    #[error(transparent)]
    Client(#[from] kiln_graph::ComputeError),
}

/// How the cluster's scheduler and workers authenticate.
#[derive(Debug, Clone)]
enum ClusterSecurity {
    Given(Box<Security>),
    Temporary,
}

/// Configures and starts a [`JobQueueCluster`].
#[derive(Debug, Clone)]
pub struct JobQueueClusterBuilder {
    system: JobSystem,
    spec: JobSpec,
    binary: Option<String>,
    host: String,
    port: u16,
    server: ServerConfig,
    security: ClusterSecurity,
    death_timeout: u64,
    worker_args: Vec<String>,
    directory: Option<PathBuf>,
    path: Option<OsString>,
}

impl JobQueueClusterBuilder {
    /// The worker binary as the compute nodes see it (default: this program when it is
    /// `kiln`, else `kiln` on the nodes' `PATH`).
    pub fn binary(mut self, path: impl Into<String>) -> Self {
        self.binary = Some(path.into());
        self
    }
    /// The interface the scheduler listens on (default `0.0.0.0`: compute nodes must reach
    /// it; workers are told this machine's outward address).
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = host.into();
        self
    }
    /// The scheduler's port (default 0: any free port).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }
    /// Scheduler settings (dashboard, timeouts); its security is replaced by
    /// [`JobQueueClusterBuilder::security`]'s.
    pub fn server(mut self, config: ServerConfig) -> Self {
        self.server = config;
        self
    }
    /// TLS and token settings. Worker processes get the CA, the worker certificate and the
    /// token as files (mode 0600) in the cluster's directory, which must be on a file system
    /// the compute nodes share.
    pub fn security(mut self, security: Security) -> Self {
        self.security = ClusterSecurity::Given(Box::new(security));
        self
    }
    /// `true`: TLS with mutual authentication and certificates generated at start
    /// ([`Security::temporary`]).
    pub fn secure(mut self, secure: bool) -> Self {
        self.security = if secure { ClusterSecurity::Temporary } else { ClusterSecurity::Given(Box::default()) };
        self
    }
    /// Seconds a worker waits for an unreachable scheduler before it exits, ending its job
    /// (default 60), so jobs do not outlive a cluster that died.
    pub fn death_timeout(mut self, secs: u64) -> Self {
        self.death_timeout = secs.max(1);
        self
    }
    /// More flags for every `kiln worker` (e.g. `--local-directory /scratch`).
    pub fn worker_args(mut self, args: Vec<String>) -> Self {
        self.worker_args = args;
        self
    }
    /// The directory for job scripts, certificates and the token, on a file system the
    /// compute nodes share (default: `kiln-jobqueue-<pid>` in the current directory, removed
    /// when the cluster closes).
    pub fn directory(mut self, dir: impl Into<PathBuf>) -> Self {
        self.directory = Some(dir.into());
        self
    }
    /// The `PATH` on which the batch system's commands are found (default: this process's).
    pub fn command_path(mut self, path: impl Into<OsString>) -> Self {
        self.path = Some(path.into());
        self
    }

    /// Starts the scheduler; no job is submitted until [`JobQueueCluster::scale`] or
    /// [`JobQueueCluster::adapt`].
    ///
    /// # Errors
    /// Invalid job settings, a missing submit command, a scheduler that cannot listen, files
    /// that cannot be written.
    pub fn start(self) -> Result<JobQueueCluster, JobQueueError> {
        self.spec.validate()?;
        let runner = self.path.clone().map_or_else(CommandRunner::from_env, CommandRunner::with_path);
        // Checked now: a login node without the batch system fails here, not at the first scale.
        runner.resolve(self.system.submit_command().0)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("kiln-jobqueue")
            .enable_all()
            .build()
            .map_err(|e| JobQueueError::Scheduler(format!("cannot start a runtime: {e}")))?;
        let security = match &self.security {
            ClusterSecurity::Given(s) => Security::clone(s),
            ClusterSecurity::Temporary => {
                Security::temporary().map_err(|e| JobQueueError::Scheduler(format!("cannot make certificates: {e}")))?
            }
        };
        let (directory, own_directory) = match &self.directory {
            Some(dir) => (dir.clone(), false),
            None => (
                std::env::current_dir()
                    .map_err(|source| JobQueueError::Io { path: ".".into(), source })?
                    .join(format!("kiln-jobqueue-{}", std::process::id())),
                true,
            ),
        };
        let directory = std::path::absolute(&directory).unwrap_or(directory);
        std::fs::create_dir_all(&directory).map_err(|source| JobQueueError::Io { path: directory.clone(), source })?;
        let tls_files = if security.has_certificate(TlsRole::Worker) {
            Some(
                security
                    .write_pem_files(&directory.join("tls"), TlsRole::Worker)
                    .map_err(|e| JobQueueError::Scheduler(e.to_string()))?,
            )
        } else {
            None
        };
        let token_file = match security.token() {
            Some(token) => {
                let path = directory.join("auth-token");
                write_private(&path, token.as_bytes())?;
                Some(path)
            }
            None => None,
        };
        let mut config = self.server.clone();
        config.security = security.clone();
        let listen = format!("{}:{}", self.host, self.port);
        let server = runtime
            .block_on(SchedulerServer::start(&listen, config))
            .map_err(|e| JobQueueError::Scheduler(format!("cannot listen on {listen}: {e}")))?;
        let bound = server.address();
        let shown = if bound.ip().is_unspecified() {
            std::net::SocketAddr::new(crate::outward_ip(), bound.port())
        } else {
            bound
        };
        let scheme = server.url().split("://").next().unwrap_or("tcp").to_string();
        let address = format!("{scheme}://{shown}");
        let control = Client::connect_with(&server.url(), &security)?;
        let launch = WorkerLaunch {
            binary: self.binary.clone().unwrap_or_else(default_binary),
            scheduler: address.clone(),
            death_timeout: self.death_timeout,
            tls_files,
            token_file,
            extra_args: self.worker_args.clone(),
        };
        let shared = Arc::new(Shared {
            system: self.system,
            spec: self.spec,
            launch,
            runner,
            directory,
            own_directory,
            address,
            security,
            jobs: Mutex::new(Jobs { active: Vec::new(), next: 0 }),
            control,
            closed: AtomicBool::new(false),
            server,
            runtime,
        });
        Ok(JobQueueCluster { shared, adaptive: Mutex::new(None) })
    }
}

/// Writes a file only its owner can read.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), JobQueueError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| JobQueueError::Io { path: path.to_path_buf(), source };
    let mut file =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path).map_err(io)?;
    file.write_all(bytes).map_err(io)
}

/// This program when it is `kiln` (the nodes share its file system), else `kiln` on the nodes'
/// `PATH`.
fn default_binary() -> String {
    std::env::current_exe()
        .ok()
        .filter(|exe| exe.file_stem().is_some_and(|s| s == "kiln"))
        .map_or_else(|| "kiln".to_string(), |exe| exe.to_string_lossy().into_owned())
}

/// A submitted job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// The batch system's id.
    pub id: String,
    /// Its name here, which its workers' names start with.
    pub name: String,
    /// Its workers' names.
    pub workers: Vec<String>,
    /// Its script.
    pub script: PathBuf,
}

struct Jobs {
    active: Vec<Job>,
    next: usize,
}

struct Shared {
    system: JobSystem,
    spec: JobSpec,
    launch: WorkerLaunch,
    runner: CommandRunner,
    directory: PathBuf,
    own_directory: bool,
    address: String,
    security: Security,
    jobs: Mutex<Jobs>,
    control: Client,
    closed: AtomicBool,
    server: SchedulerServer,
    runtime: tokio::runtime::Runtime,
}

struct Adaptive {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

/// A scheduler in this process and workers in batch jobs (Dask's `SLURMCluster`,
/// `PBSCluster`, `SGECluster`, `LSFCluster`).
pub struct JobQueueCluster {
    shared: Arc<Shared>,
    adaptive: Mutex<Option<Adaptive>>,
}

impl JobQueueCluster {
    /// A builder for jobs of `spec` on `system`.
    pub fn builder(system: JobSystem, spec: JobSpec) -> JobQueueClusterBuilder {
        JobQueueClusterBuilder {
            system,
            spec,
            binary: None,
            host: "0.0.0.0".into(),
            port: 0,
            server: ServerConfig::default(),
            security: ClusterSecurity::Given(Box::default()),
            death_timeout: 60,
            worker_args: Vec::new(),
            directory: None,
            path: None,
        }
    }

    /// The scheduler's address as workers are told it (`tcp://host:port` or `tls://...`).
    pub fn address(&self) -> &str {
        &self.shared.address
    }

    /// The cluster's security settings (for [`Client::connect_with`]).
    pub fn security(&self) -> &Security {
        &self.shared.security
    }

    /// The dashboard's address, when the server configuration has one.
    pub fn dashboard_link(&self) -> Option<String> {
        self.shared.server.dashboard_link()
    }

    /// A new client of this cluster.
    ///
    /// # Errors
    /// The scheduler cannot be reached.
    pub fn client(&self) -> Result<Client, JobQueueError> {
        Ok(Client::connect_with(&self.shared.server.url(), &self.shared.security)?)
    }

    /// The script the next job would be submitted with (`--dry-run`).
    pub fn job_script(&self) -> String {
        let next = self.shared.lock().next;
        self.shared.script(&self.shared.job_name(next))
    }

    /// The jobs submitted and not removed.
    pub fn jobs(&self) -> Vec<Job> {
        self.shared.lock().active.clone()
    }

    /// The workers asked for: jobs times processes per job (started or still queued).
    pub fn requested_workers(&self) -> usize {
        self.shared.lock().active.len() * self.shared.spec.processes as usize
    }

    /// The batch system's view of this cluster's jobs (a job it no longer lists is
    /// [`JobState::Ended`]).
    ///
    /// # Errors
    /// The status command is missing or fails.
    pub fn job_status(&self) -> Result<Vec<JobStatus>, JobQueueError> {
        let ids: Vec<String> = self.shared.lock().active.iter().map(|j| j.id.clone()).collect();
        self.shared.status(&ids)
    }

    /// Scales to `workers` workers: `ceil(workers / processes)` jobs.
    ///
    /// # Errors
    /// As [`JobQueueCluster::scale_jobs`].
    pub fn scale(&self, workers: usize) -> Result<(), JobQueueError> {
        self.scale_jobs(workers.div_ceil(self.shared.spec.processes as usize))
    }

    /// Submits or removes jobs until `jobs` are active. New jobs are not waited for (they may
    /// queue for hours; see [`JobQueueCluster::wait_for_workers`]). Removed jobs are those not
    /// yet running first, then the newest; their workers are retired (nothing lost) before
    /// the jobs are cancelled.
    ///
    /// # Errors
    /// A submit or cancel command that is missing or fails (named with its output).
    pub fn scale_jobs(&self, jobs: usize) -> Result<(), JobQueueError> {
        self.shared.scale_jobs(jobs)
    }

    /// Waits until `n` workers have joined the scheduler.
    ///
    /// # Errors
    /// A timeout or a lost connection.
    pub fn wait_for_workers(&self, n: usize, timeout: Duration) -> Result<(), JobQueueError> {
        Ok(self.shared.control.wait_for_workers(n, timeout)?)
    }

    /// Lets the number of workers follow the load between `min` and `max` (jobs are
    /// submitted and removed whole, so the workers asked for are a multiple of the processes
    /// per job). Replaces an earlier `adapt`.
    pub fn adapt(&self, min: usize, max: usize) {
        self.stop_adapting();
        let stop = Arc::new(AtomicBool::new(false));
        let shared = self.shared.clone();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let processes = shared.spec.processes as usize;
            let mut policy = AdaptivePolicy::new(min, max, shared.spec.threads_per_worker() as usize);
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                let Ok(load) = shared.control.cluster_load() else { return };
                let current = shared.lock().active.len() * processes;
                let Some(desired) = policy.decide(&load, current, Instant::now()) else { continue };
                let jobs = desired.div_ceil(processes);
                if jobs * processes == current {
                    continue;
                }
                tracing::info!("adaptive: scaling from {current} to {desired} workers ({jobs} jobs)");
                if let Err(e) = shared.scale_jobs(jobs) {
                    tracing::warn!("adaptive: scaling to {jobs} jobs failed: {e}");
                }
            }
        });
        *self.adaptive.lock().unwrap_or_else(|p| p.into_inner()) = Some(Adaptive { stop, thread });
    }

    /// Stops adaptive scaling (the jobs stay).
    pub fn stop_adapting(&self) {
        if let Some(a) = self.adaptive.lock().unwrap_or_else(|p| p.into_inner()).take() {
            a.stop.store(true, Ordering::Relaxed);
            let _ = a.thread.join();
        }
    }

    /// Stops the scheduler (its workers leave, ending their jobs) and cancels the jobs left.
    ///
    /// # Errors
    /// The cancel command fails for a job that is still queued or running.
    pub fn close(self) -> Result<(), JobQueueError> {
        self.stop_adapting();
        self.shared.shutdown()
    }
}

impl Drop for JobQueueCluster {
    fn drop(&mut self) {
        self.stop_adapting();
        if let Err(e) = self.shared.shutdown() {
            tracing::warn!("closing the job-queue cluster: {e}");
        }
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Jobs> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn job_name(&self, n: usize) -> String {
        format!("{}-{n}", self.spec.job_name)
    }

    fn script(&self, job: &str) -> String {
        self.system.render_script(&self.spec, &self.launch, job)
    }

    fn status(&self, ids: &[String]) -> Result<Vec<JobStatus>, JobQueueError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let (program, args) = self.system.status_command(ids);
        let listed = self.system.parse_status(&self.runner.run(program, &args, None)?);
        Ok(ids
            .iter()
            .map(|id| {
                listed.iter().find(|s| &s.id == id).cloned().unwrap_or_else(|| JobStatus {
                    id: id.clone(),
                    state: JobState::Ended,
                    raw: "not listed".into(),
                })
            })
            .collect())
    }

    fn submit(&self, job: &str) -> Result<Job, JobQueueError> {
        let script = self.script(job);
        let path = self.directory.join(format!("{job}.sh"));
        std::fs::write(&path, &script).map_err(|source| JobQueueError::Io { path: path.clone(), source })?;
        let (program, input) = self.system.submit_command();
        let shown_path = path.to_string_lossy().into_owned();
        let output = match input {
            ScriptInput::Argument => self.runner.run(program, std::slice::from_ref(&shown_path), None)?,
            ScriptInput::Stdin => self.runner.run(program, &[], Some(script.as_bytes()))?,
        };
        let id = self.system.parse_job_id(&output).ok_or_else(|| JobQueueError::NoJobId {
            command: format!("{program} {shown_path}"),
            output: output.trim().to_string(),
        })?;
        tracing::info!("submitted job {id} ({job}) with {program}");
        Ok(Job { id, name: job.to_string(), workers: self.spec.worker_names(job), script: path })
    }

    fn scale_jobs(&self, n: usize) -> Result<(), JobQueueError> {
        let mut jobs = self.lock();
        while jobs.active.len() < n {
            let name = self.job_name(jobs.next);
            jobs.next += 1;
            let job = self.submit(&name)?;
            jobs.active.push(job);
        }
        if jobs.active.len() <= n {
            return Ok(());
        }
        // Jobs whose workers have not joined go first (nothing to retire), then the newest.
        let joined: HashSet<String> = self.control.workers().into_iter().map(|w| w.name).collect();
        let mut order: Vec<usize> = (0..jobs.active.len()).collect();
        order.sort_by_key(|&i| (jobs.active[i].workers.iter().any(|w| joined.contains(w)), std::cmp::Reverse(i)));
        let mut leaving_at: Vec<usize> = order[..jobs.active.len() - n].to_vec();
        // Removed from the back, so the indices left stay valid.
        leaving_at.sort_unstable();
        leaving_at.reverse();
        let leaving: Vec<Job> = leaving_at.into_iter().map(|i| jobs.active.remove(i)).collect();
        let names: HashSet<&str> = leaving.iter().flat_map(|j| j.workers.iter().map(String::as_str)).collect();
        let ids: Vec<WorkerId> =
            self.control.workers().into_iter().filter(|w| names.contains(w.name.as_str())).map(|w| w.id).collect();
        if !ids.is_empty() {
            self.control.retire_workers(&ids);
            // A worker that does not leave in time is cancelled with its job; it costs
            // recomputation, not correctness.
            if let Err(e) = self.control.wait_workers_gone(&ids, Duration::from_secs(60)) {
                tracing::warn!("retiring workers of jobs being removed: {e}");
            }
        }
        self.cancel(&leaving)
    }

    /// Cancels jobs; a cancel command that fails is an error only if a job is still listed.
    fn cancel(&self, jobs: &[Job]) -> Result<(), JobQueueError> {
        if jobs.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = jobs.iter().map(|j| j.id.clone()).collect();
        match self.runner.run(self.system.cancel_command(), &ids, None) {
            Ok(_) => Ok(()),
            // Retired workers end their jobs, and cancelling an ended job fails on PBS and SGE.
            Err(e) => match self.status(&ids) {
                Ok(states) if states.iter().all(|s| s.state == JobState::Ended) => Ok(()),
                _ => Err(e),
            },
        }
    }

    fn shutdown(&self) -> Result<(), JobQueueError> {
        if self.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        self.server.stop("the job-queue cluster is closing");
        let server = &self.server;
        let _ = self.runtime.block_on(async { tokio::time::timeout(Duration::from_secs(5), server.stopped()).await });
        let jobs: Vec<Job> = self.lock().active.drain(..).collect();
        let result = self.cancel(&jobs);
        if self.own_directory {
            let _ = std::fs::remove_dir_all(&self.directory);
        } else {
            let _ = std::fs::remove_dir_all(self.directory.join("tls"));
            let _ = std::fs::remove_file(self.directory.join("auth-token"));
        }
        result
    }
}
