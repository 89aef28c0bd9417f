//! A memory pause that waiting cannot end (issue 10.2): a task leaves memory behind that is not
//! the worker's data (as a library's cache or an allocator's arenas do), so once its result has
//! been fetched and freed the worker is over its pause threshold while running nothing and
//! holding nothing. Before, it stayed paused for good and the next computation waited for the
//! no-workers timeout. Now a worker under a nanny leaves and its nanny starts a fresh process,
//! and a worker without a nanny resumes; each says why, once, at warn.
//!
//! This file is its own test program (`harness = false`): started as `<it> worker ADDR ...`,
//! it is the worker, and knows the kernel that keeps memory.

use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kiln::Collection;
use kiln::delayed::{Func1, Func2, func1, func2};
use kiln::graph::KernelRegistry;
use kiln_distributed::{Client, SchedulerServer, ServerConfig, run_worker_if_requested};

mod support;
use support::Guard;

/// Keeps `mb` megabytes for the rest of the process's life, touched so they are resident.
fn hoard() -> Func1<i64, i64> {
    func1("hoard", |mb: &i64| {
        let kept: &'static mut [u8] = Vec::leak(vec![1u8; (*mb as usize) << 20]);
        kept.len() as i64 >> 20
    })
    .portable("test.stuck.hoard")
}
fn add() -> Func2<i64, i64, i64> {
    func2("add", |a: &i64, b: &i64| a + b).portable("test.stuck.add")
}

/// Runs `f` on a thread; fails the test if it does not return within `within`.
fn within<T: Send + 'static>(what: &str, within: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(within).unwrap_or_else(|_| panic!("{what} did not finish within {within:?}"))
}

/// The pid of the worker process: the nanny's child, or the process itself without one.
fn worker_pid(process: u32, nanny: bool) -> Option<u32> {
    if !nanny {
        return Some(process);
    }
    let children = std::fs::read_to_string(format!("/proc/{process}/task/{process}/children")).ok()?;
    children.split_whitespace().next()?.parse().ok()
}

/// One worker (64 MB limit), one task that keeps 56 MB, then a task that must still run.
fn run_case(nanny: bool) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let server = runtime.block_on(SchedulerServer::start("127.0.0.1:0", ServerConfig::default())).unwrap();
    let address = server.address().to_string();
    let log = std::env::temp_dir().join(format!("kiln-stuck-worker-{}-{nanny}.log", std::process::id()));
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.args(["worker", &address, "--nthreads", "1", "--memory-limit", "64MB", "--name", "stuck"]);
    if !nanny {
        command.arg("--no-nanny");
    }
    let worker = Guard(
        command
            .env("RUST_LOG", "info")
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let client = Client::connect(&address).unwrap();
    client.wait_for_workers(1, Duration::from_secs(30)).unwrap();
    let first_pid = worker_pid(worker.0.id(), nanny).expect("the nanny runs a worker");

    // 56 MB kept on a 64 MB worker: over its 51 MB pause threshold once the result is freed.
    let c = client.clone();
    assert_eq!(
        within("the hoarding task", Duration::from_secs(60), move || hoard().call(56).compute_on(&c).unwrap()),
        56
    );
    // The worker pauses with nothing to run, hold or spill (its memory is checked ten times a
    // second, so the result may be fetched and freed before or after the pause)...
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&log).unwrap().contains("paused: process memory") {
        assert!(Instant::now() < deadline, "the worker did not pause:\n{}", std::fs::read_to_string(&log).unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
    // ...and this task must run all the same.
    let c = client.clone();
    assert_eq!(
        within("a task after the pause", Duration::from_secs(60), move || add().call(2, 3).compute_on(&c).unwrap()),
        5
    );

    let text = std::fs::read_to_string(&log).unwrap();
    let why =
        |l: &&str| l.contains("WARN") && l.contains("running nothing and holding no data, so waiting cannot free it");
    assert_eq!(text.lines().filter(why).count(), 1, "the reason is not logged once at warn:\n{text}");
    let pid_now = worker_pid(worker.0.id(), nanny);
    if nanny {
        assert!(text.contains("leaving so that the nanny starts a fresh process"), "{text}");
        assert!(text.contains("worker left for a fresh start; starting a new one"), "{text}");
        assert!(pid_now.is_some_and(|p| p != first_pid), "the nanny runs the same process {first_pid}:\n{text}");
        // A planned restart is not a death.
        assert!(!text.contains("worker exited with"), "{text}");
    } else {
        assert!(text.contains("resuming (no nanny to restart it)"), "{text}");
        assert!(text.contains("resumed: process memory"), "{text}");
    }
    drop(client);
    drop(worker);
    server.stop("the test is done");
    std::fs::remove_file(&log).unwrap();
    eprintln!("stuck worker, {}: ok", if nanny { "under a nanny" } else { "without a nanny" });
}

fn main() {
    kiln::register_builtins();
    KernelRegistry::global().register_instance(hoard().kernel());
    KernelRegistry::global().register_instance(add().kernel());
    if std::env::args().nth(1).as_deref() == Some("worker") {
        // The worker's and the nanny's logs are what the test reads.
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_ansi(false).init();
    }
    run_worker_if_requested();
    let start = Instant::now();
    run_case(true);
    run_case(false);
    eprintln!("stuck_worker: passed in {:.1?}", start.elapsed());
}
