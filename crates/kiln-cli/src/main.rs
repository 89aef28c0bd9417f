//! The `kiln` command.

mod demo_dataframe;
mod deploy;

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap::{Parser, Subcommand};
use kiln::Scheduler;
use kiln::local::Progress;
use kiln::prelude::*;
use kiln_distributed::config::{self, ConfigFile, Section};
use kiln_distributed::{
    Client, LocalCluster, NannyPolicy, SchedulerServer, SecurityArgs, ServerConfig, TlsRole, WorkerArgs, WorkerConfig,
};

/// kiln: Dask rebuilt in Rust.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a distributed scheduler: workers and clients connect to it.
    #[command(args_override_self = true)]
    Scheduler {
        /// Interface to listen on (0.0.0.0: all, as Dask: workers on other machines must reach
        /// it; use TLS or --auth-token when the network is shared).
        #[arg(long, default_value = "0.0.0.0")]
        host: String,
        /// Port to listen on (0: any free port).
        #[arg(long, default_value_t = 8786)]
        port: u16,
        /// Seconds without a heartbeat after which a worker is considered dead.
        #[arg(long, default_value_t = 30)]
        worker_timeout: u64,
        /// The dashboard's flags.
        #[command(flatten)]
        dashboard: DashboardArgs,
        /// Seconds a task that no worker can run (no workers, or every one retiring) waits
        /// before it errs, or `none` to wait forever (Dask's `no-workers-timeout`).
        #[arg(long, default_value = "300", value_parser = parse_no_workers_timeout)]
        no_workers_timeout: NoWorkersTimeout,
        /// Write the scheduler's address to this JSON file for workers and clients
        /// (`kiln worker --scheduler-file`).
        #[arg(long, value_name = "PATH")]
        scheduler_file: Option<std::path::PathBuf>,
        /// TLS and token.
        #[command(flatten)]
        security: SecurityArgs,
    },
    /// Runs a worker that joins the scheduler at ADDR (e.g. tcp://192.168.0.1:8786). A program
    /// of yours that calls `run_worker_if_requested` takes the same flags.
    #[command(args_override_self = true)]
    Worker(WorkerArgs),
    /// Prints the settings in force (kiln.toml < KILN_* variables < flags) and where each came
    /// from: `kiln config`, or `kiln config worker --nthreads 2` to see a command's flags merged.
    Config {
        /// `scheduler` or `worker` (default: both).
        #[arg(value_parser = ["scheduler", "worker"])]
        command: Option<String>,
        /// That command's flags.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// Starts workers as batch jobs (SLURM, PBS, SGE, LSF) for a scheduler run here; Ctrl-C
    /// cancels them. `--dry-run` prints the job script.
    Jobqueue(deploy::JobqueueArgs),
    /// Runs this rank's part of a cluster inside a batch allocation (srun, mpirun): rank 0 the
    /// scheduler, rank 1 the client COMMAND, the others workers.
    RunInAllocation(deploy::AllocationArgs),
    /// Starts a scheduler on the first host and a worker on each other one through `ssh`;
    /// Ctrl-C stops them all.
    Ssh(deploy::SshArgs),
    /// Runs the seeds' computations and reports what happened: the headline
    /// `(x + x.T - x.mean(axis=0)).std()` on an n x n random array on a local cluster of
    /// worker processes and on the local threaded scheduler, then a loop of delayed calls.
    Demo {
        /// Side of the random array (the seeds' full size is 100000: an 80 GB array).
        #[arg(long, default_value_t = 20_000)]
        n: usize,
        /// Block side of the array.
        #[arg(long, default_value_t = 1000)]
        chunk: usize,
        /// Side of the a x b grid of delayed calls (the graph has about side² tasks).
        #[arg(long, default_value_t = 300)]
        side: i64,
        /// Threads for the local scheduler (default: one per core).
        #[arg(long)]
        threads: Option<usize>,
        /// Also draw a 3 x 3 version of the graph to this file (.dot, .svg, .png).
        #[arg(long)]
        visualize: Option<String>,
        /// Workers of the local cluster (0: skip the cluster run).
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Daily CSV files the cluster's dataframe part writes and reads (8,640 rows each).
        #[arg(long, default_value_t = 31)]
        days: usize,
    },
}

/// A build for x86-64-v3 (the workspace's `.cargo/config.toml`) on a CPU without AVX2 would
/// die of an illegal instruction somewhere later: say what to do instead.
fn check_cpu() {
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
    if !(std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("bmi2")
        && std::arch::is_x86_feature_detected!("fma"))
    {
        eprintln!(
            "error: this kiln was built for x86-64-v3 CPUs (AVX2, BMI2, FMA), which this one is not; \
             rebuild it with RUSTFLAGS=\"-C target-cpu=x86-64\""
        );
        std::process::exit(2);
    }
}

fn main() -> Result<()> {
    check_cpu();
    kiln::register_builtins();
    register_demo_kernels();
    match Cli::parse_from(with_configuration(std::env::args_os().collect())?).command {
        Command::Scheduler { host, port, worker_timeout, no_workers_timeout, scheduler_file, security, dashboard } => {
            init_logging();
            let mut config =
                ServerConfig { worker_timeout: Duration::from_secs(worker_timeout), ..ServerConfig::default() };
            config.policy.no_workers_timeout_ms = no_workers_timeout.0;
            config.security = security.to_security(TlsRole::Scheduler)?;
            config.dashboard = dashboard.config();
            runtime()?.block_on(run_scheduler(&format!("{host}:{port}"), config, scheduler_file))
        }
        Command::Config { command, args } => print_configuration(command.as_deref(), &args),
        Command::Worker(args) => {
            init_logging();
            let config = args.to_config()?;
            if !args.no_nanny {
                // The worker runs as this program re-run with `--no-nanny`, restarted when it dies.
                let code = kiln_distributed::run_nanny(
                    std::env::args_os().skip(1).collect(),
                    NannyPolicy::default(),
                    config.local_directory.clone(),
                )
                .context("running the worker under a nanny")?;
                std::process::exit(code);
            }
            kiln_distributed::worker::tune_allocator_for_workers();
            match runtime()?.block_on(run_worker(config)) {
                Ok(Stopped::Done) => Ok(()),
                // No scheduler for the death timeout: a batch job ends rather than waits.
                Ok(Stopped::NoScheduler) => std::process::exit(kiln_distributed::EXIT_NO_SCHEDULER),
                Err(e)
                    if e.downcast_ref::<kiln_distributed::comm::CommError>()
                        .is_some_and(|c| matches!(c, kiln_distributed::comm::CommError::NoScheduler(_))) =>
                {
                    eprintln!("Error: {e:#}");
                    std::process::exit(kiln_distributed::EXIT_NO_SCHEDULER);
                }
                // The nanny starts a new worker process (see `EXIT_FRESH_START`).
                Ok(Stopped::FreshStart) => std::process::exit(kiln_distributed::EXIT_FRESH_START),
                Err(e) => {
                    // A distinct code tells the nanny that restarting would fail the same way.
                    eprintln!("Error: {e:#}");
                    std::process::exit(kiln_distributed::EXIT_CANNOT_START);
                }
            }
        }
        Command::Jobqueue(args) => {
            init_logging();
            deploy::jobqueue(args)
        }
        Command::RunInAllocation(args) => {
            init_logging();
            deploy::run_in_allocation(args)
        }
        Command::Ssh(args) => {
            init_logging();
            deploy::ssh(args)
        }
        Command::Demo { n, chunk, side, threads, visualize, workers, days } => {
            let scheduler =
                threads.map_or_else(LocalScheduler::new, LocalScheduler::threads).with_progress(Progress::Auto);
            if workers > 0 {
                cluster_demo(n, chunk, workers, days)?;
            }
            array_demo(n, chunk, &scheduler)?;
            demo(side, &scheduler, visualize.as_deref())
        }
    }
}

/// `--no-workers-timeout`: milliseconds, or `None` for no timeout.
#[derive(Debug, Clone, Copy)]
struct NoWorkersTimeout(Option<u64>);

fn parse_no_workers_timeout(text: &str) -> Result<NoWorkersTimeout, String> {
    if text.eq_ignore_ascii_case("none") {
        return Ok(NoWorkersTimeout(None));
    }
    match text.parse::<f64>() {
        // Zero would fail every task submitted a moment before its workers join.
        Ok(secs) if secs > 0.0 && secs.is_finite() && secs < 1e12 => {
            Ok(NoWorkersTimeout(Some(((secs * 1000.0) as u64).max(1))))
        }
        _ => Err(format!("{text:?} is not a positive number of seconds or `none`")),
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_target(false).init();
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Resolves when Ctrl-C or SIGTERM arrives; names the signal.
async fn shutdown_signal() -> &'static str {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return "Ctrl-C";
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "Ctrl-C",
        _ = term.recv() => "SIGTERM",
    }
}

/// The scheduler's dashboard flags.
#[derive(clap::Args)]
struct DashboardArgs {
    /// Where the dashboard listens (`:8787`: all interfaces); a free port is used if this one
    /// is taken.
    #[arg(long, default_value = ":8787")]
    dashboard_address: String,
    /// Serve no dashboard (and no `/metrics`).
    #[arg(long)]
    no_dashboard: bool,
    /// Prefix of the Prometheus metric names: `kiln`, or `dask` for dashboards written for Dask.
    #[arg(long, default_value = "kiln")]
    metrics_namespace: String,
}

impl DashboardArgs {
    fn config(self) -> Option<kiln_distributed::DashboardConfig> {
        (!self.no_dashboard).then_some(kiln_distributed::DashboardConfig {
            address: self.dashboard_address,
            namespace: self.metrics_namespace,
        })
    }
}

/// The command line with kiln.toml's and the `KILN_*` variables' settings put in before the
/// user's flags, for `kiln scheduler` and `kiln worker` (see `kiln_distributed::config`).
fn with_configuration(argv: Vec<std::ffi::OsString>) -> Result<Vec<std::ffi::OsString>> {
    let section = match argv.get(1).and_then(|a| a.to_str()) {
        Some("scheduler") => Section::Scheduler,
        Some("worker") => Section::Worker,
        _ => return Ok(argv),
    };
    let file = ConfigFile::find()?;
    let command = Cli::command();
    let sub = command.find_subcommand(section.name()).context("the subcommand exists")?;
    let layered = config::layer(section, sub, &argv[2..], &file)?;
    let mut args = vec![argv[0].clone()];
    args.extend(layered.args);
    Ok(args)
}

fn print_configuration(only: Option<&str>, args: &[std::ffi::OsString]) -> Result<()> {
    let file = ConfigFile::find()?;
    let command = Cli::command();
    let mut lines = Vec::new();
    for section in [Section::Scheduler, Section::Worker] {
        if only.is_some_and(|o| o != section.name()) {
            continue;
        }
        let sub = command.find_subcommand(section.name()).context("the subcommand exists")?;
        let flags = if only.is_some() { args } else { &[] };
        lines.extend(config::layer(section, sub, flags, &file)?.lines);
    }
    // Keys shared by both commands (the CA, the switches) are shown once.
    let mut seen = std::collections::HashSet::new();
    lines.retain(|l| seen.insert(l.key));
    print!("{}", config::render(&file, &lines));
    Ok(())
}

async fn run_scheduler(listen: &str, config: ServerConfig, scheduler_file: Option<std::path::PathBuf>) -> Result<()> {
    let open = !config.security.has_certificate(TlsRole::Scheduler) && config.security.token().is_none();
    let server = SchedulerServer::start(listen, config).await?;
    let address = server.address();
    let shown =
        if address.ip().is_unspecified() { std::net::SocketAddr::new(outward_ip(), address.port()) } else { address };
    let scheme = server.url().split("://").next().unwrap_or("tcp").to_string();
    let url = format!("{scheme}://{shown}");
    // The file first: whoever sees the banner may read the file at once.
    if let Some(path) = &scheduler_file {
        kiln_distributed::scheduler_file::write(path, &url)?;
    }
    // One write, errors ignored: whoever reads the first line may close the pipe after it.
    let mut banner = format!("Scheduler at {url}\n");
    if let Some(notice) = server.dashboard_notice() {
        banner.push_str(&format!("{notice}\n"));
    }
    if let Some(link) = server.dashboard_link() {
        banner.push_str(&format!("Dashboard at {link}\n"));
    }
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(banner.as_bytes()).and_then(|()| out.flush());
    }
    tracing::info!("scheduler listening on {address}");
    if open && !address.ip().is_loopback() {
        tracing::warn!(
            "listening on {address} without TLS or an auth token: anyone who can reach this port can submit work \
             and read results (see --tls-ca-file/--tls-cert/--tls-key, --auth-token)"
        );
    }
    let result = serve_until_stopped(&server).await;
    if let Some(path) = &scheduler_file {
        // A stale file would send the next batch job's workers to a dead address.
        let _ = std::fs::remove_file(path);
    }
    result
}

async fn serve_until_stopped(server: &SchedulerServer) -> Result<()> {
    tokio::select! {
        signal = shutdown_signal() => {
            tracing::info!("received {signal}; telling workers and clients");
            server.stop(&format!("the scheduler received {signal}"));
            server.stopped().await;
        }
        _ = server.stopped() => {}
    }
    Ok(())
}

/// The address other machines most likely reach this one at (no packet is sent).
fn outward_ip() -> std::net::IpAddr {
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("192.0.2.1:9").map(|_| s))
        .and_then(|s| s.local_addr())
        .map(|a| a.ip())
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
}

/// How a worker ended.
enum Stopped {
    /// It left (retired, closed, a signal) or gave up on the scheduler.
    Done,
    /// It left to be started afresh by its nanny.
    FreshStart,
    /// No scheduler was reachable for its death timeout.
    NoScheduler,
}

async fn run_worker(config: WorkerConfig) -> Result<Stopped> {
    let scheduler = config.scheduler.clone();
    let worker = kiln_distributed::start_worker(config)
        .await
        .with_context(|| format!("starting a worker for the scheduler at {scheduler}"))?;
    tracing::info!("worker serving data at {}", worker.address());
    tokio::select! {
        signal = shutdown_signal() => {
            tracing::info!("received {signal}; handing back unstarted tasks");
            worker.close(&format!("received {signal}"));
            worker.stopped().await;
        }
        _ = worker.stopped() => {}
    }
    Ok(if worker.wants_fresh_start() {
        Stopped::FreshStart
    } else if worker.lost_scheduler() {
        Stopped::NoScheduler
    } else {
        Stopped::Done
    })
}

/// The demo's delayed functions, registered so the cluster's workers (this same binary) can
/// run them.
fn demo_functions() -> (kiln::delayed::Func2<i64, i64, i64>, kiln::delayed::Func2<i64, i64, i64>) {
    let f = kiln::delayed::func2("f", |a: &i64, b: &i64| a * b + 1).portable("kiln.demo.f");
    let g = kiln::delayed::func2("g", |a: &i64, b: &i64| a - b).portable("kiln.demo.g");
    (f, g)
}

fn demo_sum() -> kiln::delayed::Func1<Vec<i64>, i64> {
    kiln::delayed::func1("sum", |v: &Vec<i64>| v.iter().sum::<i64>()).portable("kiln.demo.sum")
}

fn register_demo_kernels() {
    let (f, g) = demo_functions();
    let registry = kiln::graph::KernelRegistry::global();
    registry.register_instance(f.kernel());
    registry.register_instance(g.kernel());
    registry.register_instance(demo_sum().kernel());
}

/// The headline on a local cluster of worker processes, as a user of `dask.distributed` would.
fn cluster_demo(n: usize, chunk: usize, workers: usize, days: usize) -> Result<()> {
    anyhow::ensure!(n > 0 && chunk > 0, "--n and --chunk must be positive");
    let t = Instant::now();
    let cluster = LocalCluster::builder().workers(workers).threads_per_worker(1).start()?;
    let client: Client = cluster.client()?;
    println!(
        "kiln demo: local cluster at {} with {} worker processes, started in {:.2?}",
        cluster.address(),
        client.workers().len(),
        t.elapsed()
    );
    let x = kiln::array::random::RandomState::new(42).random(&[n, n], [chunk, chunk]);
    let y = (&x + &x.t() - &x.mean_axis(0)).std();
    let t = Instant::now();
    let value = y.scalar().compute_on(&client).context("computing the seed expression on the cluster")?;
    println!("  (x + x.T - x.mean(axis=0)).std() on {} in {:.2?}: {value:.6}", client.name(), t.elapsed());
    let t = Instant::now();
    let total = grid(60).compute_on(&client).context("computing the delayed grid on the cluster")?;
    anyhow::ensure!(total == expected(60), "wrong answer from the cluster: {total} != {}", expected(60));
    println!("  the seeds' delayed loop (60 x 60) on the cluster in {:.2?}: total = {total}", t.elapsed());
    demo_dataframe::run(&client, days)?;
    drop(client);
    cluster.close();
    Ok(())
}

/// The seeds' loop (`f(a, b)` when `a < b`, else `g(a, b)`) over a side x side grid, the
/// results summed by a tree of partial sums.
fn grid(side: i64) -> kiln::delayed::Delayed<i64> {
    let (f, g) = demo_functions();
    let mut level = Vec::with_capacity((side * side) as usize);
    for a in 0..side {
        for b in 0..side {
            level.push(if a < b { f.call(a, b) } else { g.call(a, b) });
        }
    }
    let add8 = demo_sum();
    while level.len() > 1 {
        level = level.chunks(8).map(|c| add8.call(kiln::delayed::collect(c.to_vec()))).collect();
    }
    level.pop().expect("a non-empty grid")
}

fn expected(side: i64) -> i64 {
    (0..side).flat_map(|a| (0..side).map(move |b| if a < b { a * b + 1 } else { a - b })).sum()
}

/// The seeds' headline array computation.
fn array_demo(n: usize, chunk: usize, scheduler: &LocalScheduler) -> Result<()> {
    anyhow::ensure!(n > 0 && chunk > 0, "--n and --chunk must be positive");
    let x = kiln::array::random::RandomState::new(42).random(&[n, n], [chunk, chunk]);
    println!("kiln demo: x = {x} ({:.1} GB if held in memory)", x.nbytes() as f64 / 1e9);
    let y = (&x + &x.t() - &x.mean_axis(0)).std();
    let (graph, _) = y.graph().context("building the graph")?;
    println!("  (x + x.T - x.mean(axis=0)).std() is a graph of {} tasks", graph.len());
    drop(graph);
    let t = Instant::now();
    let value = y.scalar().compute_on(scheduler).context("computing the seed expression")?;
    println!(
        "  computed on {} in {:.2?}: {value:.6} (uniform data tends to sqrt(1/6) = {:.6})",
        scheduler.name(),
        t.elapsed(),
        (1.0f64 / 6.0).sqrt()
    );
    Ok(())
}

fn demo(side: i64, scheduler: &LocalScheduler, visualize: Option<&str>) -> Result<()> {
    anyhow::ensure!(side > 0, "--side must be positive");
    println!("kiln demo: the seeds' `f(a, b) if a < b else g(a, b)` loop over a {side} x {side} grid, summed");

    let t0 = Instant::now();
    let total = grid(side);
    let build = t0.elapsed();
    let (graph, _) = total.graph().context("building the graph")?;
    println!("  built {} delayed calls ({} tasks) with plain loops in {build:.2?}", side * side, graph.len());
    drop(graph);

    let t1 = Instant::now();
    let value = total.compute_on(scheduler).context("computing the grid")?;
    let run = t1.elapsed();
    println!("  computed on {} in {run:.2?}: total = {value}", scheduler.name());
    let check = expected(side);
    anyhow::ensure!(value == check, "wrong answer: {value} != {check}");
    println!("  matches the plain-loop answer ({check})");

    if let Some(path) = visualize {
        grid(3).visualize(path).with_context(|| format!("drawing {path}"))?;
        println!("  drew the 3 x 3 graph to {path}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_no_workers_timeout_is_seconds_or_none_and_zero_is_refused() {
        assert_eq!(parse_no_workers_timeout("300").unwrap().0, Some(300_000));
        assert_eq!(parse_no_workers_timeout("0.5").unwrap().0, Some(500));
        assert_eq!(parse_no_workers_timeout("none").unwrap().0, None);
        for bad in ["0", "-1", "soon", "inf", "NaN"] {
            let message = parse_no_workers_timeout(bad).unwrap_err();
            assert!(message.contains("positive number of seconds"), "{bad}: {message}");
        }
    }
}
