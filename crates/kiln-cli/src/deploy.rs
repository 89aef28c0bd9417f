//! The deployment commands: `kiln jobqueue`, `kiln run-in-allocation`, `kiln ssh`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use kiln_deploy::allocation::Role;
use kiln_deploy::jobqueue::{JobQueueCluster, JobSpec, JobSystem, Walltime, WorkerLaunch};
use kiln_deploy::ssh::{SshCluster, SshOptions};
use kiln_distributed::{Client, SecurityArgs, TlsRole};

/// `kiln jobqueue SYSTEM ...`.
#[derive(clap::Args)]
pub struct JobqueueArgs {
    /// The batch system: slurm, pbs, sge or lsf.
    system: JobSystem,
    /// Jobs to submit (ignored with --adapt-max).
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// Cores per job.
    #[arg(long, default_value_t = 1)]
    cores: u32,
    /// Memory per job (32GiB, 4000MB).
    #[arg(long, default_value = "4GiB")]
    memory: String,
    /// Worker processes per job, sharing its cores and memory.
    #[arg(long, default_value_t = 1)]
    processes: u32,
    /// Wall-clock limit per job (HH:MM:SS, D-HH:MM:SS or minutes).
    #[arg(long, default_value = "01:00:00")]
    walltime: Walltime,
    /// Queue (SLURM partition).
    #[arg(long)]
    queue: Option<String>,
    /// Account or project charged.
    #[arg(long)]
    account: Option<String>,
    /// More header directives (repeatable): `--job-extra=--exclusive`.
    #[arg(long, allow_hyphen_values = true)]
    job_extra: Vec<String>,
    /// Shell lines run before the workers (repeatable): `--prologue 'module load kiln'`.
    #[arg(long)]
    prologue: Vec<String>,
    /// The jobs' name in the queue.
    #[arg(long, default_value = "kiln-worker")]
    job_name: String,
    /// Where the batch system writes the jobs' output.
    #[arg(long, value_name = "DIR")]
    log_directory: Option<PathBuf>,
    /// The `kiln` binary as the compute nodes see it (default: this one).
    #[arg(long, value_name = "PATH")]
    remote_kiln: Option<String>,
    /// More flags for every `kiln worker` (repeatable): `--worker-arg=--local-directory=/scratch`.
    #[arg(long, allow_hyphen_values = true)]
    worker_arg: Vec<String>,
    /// Interface the scheduler listens on.
    #[arg(long, default_value = "0.0.0.0")]
    host: String,
    /// The scheduler's port (0: any free port).
    #[arg(long, default_value_t = 8786)]
    port: u16,
    /// Seconds a worker waits for an unreachable scheduler before its job ends.
    #[arg(long, default_value_t = 60)]
    death_timeout: u64,
    /// Directory for job scripts and secrets, shared with the compute nodes (default:
    /// ./kiln-jobqueue-PID, removed at exit).
    #[arg(long, value_name = "DIR")]
    directory: Option<PathBuf>,
    /// Write the scheduler's address here for clients.
    #[arg(long, value_name = "PATH")]
    scheduler_file: Option<PathBuf>,
    /// Scale with the load between --adapt-min and this many workers instead of --jobs.
    #[arg(long)]
    adapt_max: Option<usize>,
    /// Fewest workers when adapting.
    #[arg(long, default_value_t = 0)]
    adapt_min: usize,
    /// File holding a shared secret every connection must present (or KILN_AUTH_TOKEN).
    #[arg(long, value_name = "FILE")]
    auth_token: Option<PathBuf>,
    /// Print the job script and exit, submitting nothing.
    #[arg(long)]
    dry_run: bool,
}

impl JobqueueArgs {
    fn spec(&self) -> Result<JobSpec> {
        let memory = kiln_distributed::parse_memory_limit(&self.memory, None)
            .map_err(|e| anyhow::anyhow!("--memory {}", e.to_string().trim_start_matches("--memory-limit ")))?;
        let spec = JobSpec {
            cores: self.cores,
            memory,
            processes: self.processes,
            walltime: Some(self.walltime),
            queue: self.queue.clone(),
            account: self.account.clone(),
            job_name: self.job_name.clone(),
            job_extra: self.job_extra.clone(),
            prologue: self.prologue.clone(),
            log_directory: self.log_directory.clone(),
        };
        spec.validate()?;
        Ok(spec)
    }
}

/// Runs `kiln jobqueue`.
pub fn jobqueue(args: JobqueueArgs) -> Result<()> {
    let spec = args.spec()?;
    let security = SecurityArgs { auth_token: args.auth_token.clone(), ..SecurityArgs::default() }
        .to_security(TlsRole::Scheduler)?;
    if args.dry_run {
        let host = if args.host == "0.0.0.0" { kiln_deploy::outward_ip().to_string() } else { args.host.clone() };
        let launch = WorkerLaunch {
            binary: args.remote_kiln.clone().unwrap_or_else(this_binary),
            scheduler: format!("tcp://{host}:{}", args.port),
            death_timeout: args.death_timeout,
            tls_files: None,
            token_file: security.token().map(|_| PathBuf::from("<directory>/auth-token")),
            extra_args: args.worker_arg.clone(),
        };
        print!("{}", args.system.render_script(&spec, &launch, &format!("{}-0", spec.job_name)));
        return Ok(());
    }
    let mut builder = JobQueueCluster::builder(args.system, spec)
        .binary(args.remote_kiln.clone().unwrap_or_else(this_binary))
        .host(&args.host)
        .port(args.port)
        .security(security)
        .death_timeout(args.death_timeout)
        .worker_args(args.worker_arg.clone());
    if let Some(dir) = &args.directory {
        builder = builder.directory(dir);
    }
    let cluster = builder.start()?;
    if let Some(path) = &args.scheduler_file {
        kiln_distributed::scheduler_file::write(path, cluster.address())?;
    }
    println!("Scheduler at {}", cluster.address());
    match args.adapt_max {
        Some(max) => {
            cluster.adapt(args.adapt_min, max);
            println!("Adapting between {} and {max} workers", args.adapt_min);
        }
        None => {
            cluster.scale_jobs(args.jobs)?;
            let ids: Vec<String> = cluster.jobs().into_iter().map(|j| j.id).collect();
            println!("Submitted {} jobs: {}", ids.len(), ids.join(" "));
        }
    }
    let signal = super::runtime()?.block_on(super::shutdown_signal());
    tracing::info!("received {signal}; cancelling the jobs");
    if let Some(path) = &args.scheduler_file {
        let _ = std::fs::remove_file(path);
    }
    cluster.close()?;
    Ok(())
}

fn this_binary() -> String {
    std::env::current_exe().map_or_else(|_| "kiln".into(), |p| p.to_string_lossy().into_owned())
}

/// `kiln run-in-allocation ...`.
#[derive(clap::Args)]
pub struct AllocationArgs {
    /// The scheduler file on a path every node shares (use a fresh one per job, e.g.
    /// `kiln-$SLURM_JOB_ID.json`, so no rank reads a previous job's).
    #[arg(long, value_name = "PATH")]
    scheduler_file: PathBuf,
    /// This process's rank (default: SLURM_PROCID, PMI_RANK, OMPI_COMM_WORLD_RANK or PMIX_RANK).
    #[arg(long)]
    rank: Option<u64>,
    /// The scheduler's port (0: any free port).
    #[arg(long, default_value_t = 8786)]
    scheduler_port: u16,
    /// Threads per worker.
    #[arg(long)]
    nthreads: Option<usize>,
    /// Memory limit per worker.
    #[arg(long)]
    memory_limit: Option<String>,
    /// Seconds the workers and the client wait for the scheduler.
    #[arg(long, default_value_t = 60.0)]
    death_timeout: f64,
    /// File holding a shared secret every connection must present (or KILN_AUTH_TOKEN).
    #[arg(long, value_name = "FILE")]
    auth_token: Option<PathBuf>,
    /// The client command (rank 1), run with KILN_SCHEDULER_ADDRESS and KILN_SCHEDULER_FILE set;
    /// when it exits the cluster shuts down.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true, value_name = "COMMAND")]
    command: Vec<OsString>,
}

/// Runs `kiln run-in-allocation`: this rank's part of the cluster.
pub fn run_in_allocation(args: AllocationArgs) -> Result<()> {
    let (rank, role) = match args.rank {
        Some(rank) => (rank, Role::of_rank(rank)),
        None => Role::from_env(|name| std::env::var(name).ok())?,
    };
    let token: Vec<OsString> =
        args.auth_token.iter().flat_map(|t| [OsString::from("--auth-token"), OsString::from(t)]).collect();
    let exe = std::env::current_exe().context("finding this program to run the scheduler or a worker")?;
    match role {
        Role::Scheduler => {
            let mut command = std::process::Command::new(&exe);
            command.arg("scheduler").arg("--port").arg(args.scheduler_port.to_string());
            command.arg("--scheduler-file").arg(&args.scheduler_file).args(&token);
            Err(exec(command, rank))
        }
        Role::Worker => {
            let mut command = std::process::Command::new(&exe);
            command.arg("worker").arg("--scheduler-file").arg(&args.scheduler_file);
            command.arg("--death-timeout").arg(args.death_timeout.to_string()).args(&token);
            if let Some(n) = args.nthreads {
                command.arg("--nthreads").arg(n.to_string());
            }
            if let Some(m) = &args.memory_limit {
                command.arg("--memory-limit").arg(m);
            }
            Err(exec(command, rank))
        }
        Role::Client => {
            // The client's certificate and token from kiln.toml and KILN_* unless a token is given.
            let security = match &args.auth_token {
                Some(_) => SecurityArgs { auth_token: args.auth_token.clone(), ..SecurityArgs::default() }
                    .to_security(TlsRole::Client)?,
                None => kiln_distributed::config::client_security(&kiln_distributed::config::ConfigFile::find()?)?,
            };
            let timeout = Duration::from_secs_f64(args.death_timeout.max(0.1));
            let address = connect_when_ready(&args.scheduler_file, &security, timeout)?.0;
            let (program, rest) = args.command.split_first().context("no client command given")?;
            let status = std::process::Command::new(program)
                .args(rest)
                .env("KILN_SCHEDULER_ADDRESS", &address)
                .env("KILN_SCHEDULER_FILE", &args.scheduler_file)
                .status()
                .with_context(|| format!("running the client command {program:?}"))?;
            // The command is done: the whole allocation's cluster ends with it.
            match Client::connect_with(&address, &security) {
                Ok(client) => {
                    client.shutdown_cluster();
                    // The message is sent before the connection closes.
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => eprintln!("kiln run-in-allocation: could not stop the cluster at {address}: {e}"),
            }
            std::process::exit(status.code().unwrap_or(1));
        }
    }
}

/// Reads the scheduler file and connects, again until `timeout` if the file is missing or
/// names a scheduler that does not answer (a previous job's file).
fn connect_when_ready(
    path: &std::path::Path,
    security: &kiln_distributed::Security,
    timeout: Duration,
) -> Result<(String, Client)> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let remaining = deadline.saturating_duration_since(std::time::Instant::now());
        let address = kiln_distributed::scheduler_file::wait_for(path, remaining)?;
        match Client::connect_with(&address, security) {
            Ok(client) => return Ok((address, client)),
            Err(e) if std::time::Instant::now() >= deadline => {
                bail!("no scheduler answered at {address} (from {}) within {timeout:?}: {e}", path.display())
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// Replaces this process with `command` (signals from the launcher then reach it directly).
fn exec(mut command: std::process::Command, rank: u64) -> anyhow::Error {
    use std::os::unix::process::CommandExt;
    let error = command.exec();
    anyhow::anyhow!("rank {rank}: cannot run {:?}: {error}", command.get_program())
}

/// `kiln ssh HOST...`.
#[derive(clap::Args)]
pub struct SshArgs {
    /// Hosts (`[user@]host`): the first runs the scheduler, each other one a worker.
    #[arg(required = true)]
    hosts: Vec<String>,
    /// The `kiln` binary on the remote hosts.
    #[arg(long, default_value = "kiln", value_name = "PATH")]
    remote_kiln: String,
    /// Threads per worker.
    #[arg(long)]
    nthreads: Option<usize>,
    /// Memory limit per worker (4GiB, 0.5, ...).
    #[arg(long)]
    memory_limit: Option<String>,
    /// An `ssh -o` option (repeatable): `--ssh-option Port=2222`.
    #[arg(long, value_name = "OPTION")]
    ssh_option: Vec<String>,
    /// The scheduler's port on the first host.
    #[arg(long, default_value_t = 8786)]
    scheduler_port: u16,
    /// More flags for the remote `kiln worker` (repeatable).
    #[arg(long, allow_hyphen_values = true)]
    worker_arg: Vec<String>,
    /// More flags for the remote `kiln scheduler` (repeatable).
    #[arg(long, allow_hyphen_values = true)]
    scheduler_arg: Vec<String>,
}

/// Runs `kiln ssh` until Ctrl-C, SIGTERM or the scheduler's end.
pub fn ssh(args: SshArgs) -> Result<()> {
    let mut worker_args = args.worker_arg.clone();
    if let Some(n) = args.nthreads {
        worker_args.extend(["--nthreads".into(), n.to_string()]);
    }
    if let Some(m) = &args.memory_limit {
        worker_args.extend(["--memory-limit".into(), m.clone()]);
    }
    let options = SshOptions {
        remote_kiln: args.remote_kiln.clone(),
        ssh_options: args.ssh_option.clone(),
        scheduler_port: args.scheduler_port,
        scheduler_args: args.scheduler_arg.clone(),
        worker_args,
        ..SshOptions::default()
    };
    let mut cluster = SshCluster::start(&args.hosts, &options, &kiln_deploy::CommandRunner::from_env())?;
    println!("Scheduler at {}", cluster.address());
    println!("Started {} workers over ssh; Ctrl-C stops them all", args.hosts.len() - 1);
    let runtime = super::runtime()?;
    let mut reported = std::collections::HashSet::new();
    let outcome = runtime.block_on(async {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let signal = super::shutdown_signal();
        tokio::pin!(signal);
        loop {
            tokio::select! {
                name = &mut signal => return Ok(name),
                _ = tick.tick() => {
                    if !cluster.scheduler_running() {
                        return Err(anyhow::anyhow!("the scheduler's ssh session to {} ended", args.hosts[0]));
                    }
                    if let Some((host, status)) = cluster.ended()
                        && reported.insert(host.clone())
                    {
                        tracing::warn!("the ssh session to {host} ended ({status}); its worker is gone");
                    }
                }
            }
        }
    });
    drop(cluster);
    let signal = outcome?;
    tracing::info!("received {signal}; stopped the remote processes");
    Ok(())
}
