//! The nanny and the no-workers timeout with real processes: `kiln worker` restarts a worker
//! that dies abnormally and takes it along when it goes; tasks that no worker can run err after
//! the scheduler's `--no-workers-timeout` instead of hanging.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kiln::ComputeError;
use kiln::local::LocalScheduler;
use kiln::prelude::*;
use kiln_distributed::{Client, LocalCluster};

mod support;
use support::{Guard, grid_total, start_scheduler};

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

/// A `kiln worker` (with its nanny unless `--no-nanny` is among `extra`), logging to `log`.
fn start_worker(scheduler: &str, name: &str, log: &std::path::Path, extra: &[&str]) -> Guard {
    Guard(
        Command::new(KILN)
            .args(["worker", scheduler, "--nthreads", "1", "--name", name])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(std::fs::File::create(log).unwrap()) // tracing writes to stdout
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// Workers this test aborts must not leave core files behind: children inherit the limit.
fn no_core_dumps() {
    let none = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: setrlimit with a valid, initialized struct.
    let _ = unsafe { libc::setrlimit(libc::RLIMIT_CORE, &none) };
}

fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .map(|s| s.split_whitespace().filter_map(|p| p.parse().ok()).collect())
        .unwrap_or_default()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

fn signal(pid: u32, name: &str) {
    assert!(Command::new("kill").args([&format!("-{name}"), &pid.to_string()]).status().unwrap().success());
}

/// Waits (at most `within`, a guard against hanging, not a timing claim) until `ready` holds.
fn wait_until(within: Duration, what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !ready() {
        assert!(Instant::now() < deadline, "{what} did not happen within {within:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn the_only_child(nanny: u32) -> u32 {
    let mut child = None;
    wait_until(Duration::from_secs(20), "the nanny starting its worker", || {
        child = children_of(nanny).first().copied();
        child.is_some()
    });
    child.unwrap()
}

fn log_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("kiln-nanny-{name}-{}.log", std::process::id()))
}

#[test]
fn a_worker_killed_by_a_signal_is_restarted_and_sigterm_to_the_nanny_stops_both() {
    no_core_dumps();
    let (_scheduler, address) = start_scheduler(&[]);
    let log = log_path("restart");
    let mut nanny = start_worker(&address, "nannied", &log, &[]);
    let client = Client::connect(&address).unwrap();
    client.wait_for_workers(1, Duration::from_secs(30)).unwrap();
    let first = client.workers()[0].id;
    let worker = the_only_child(nanny.0.id());
    assert_ne!(worker, nanny.0.id());

    signal(worker, "ABRT");
    wait_until(Duration::from_secs(30), "a restarted worker registering", || {
        client.workers().iter().any(|w| w.name == "nannied" && w.id != first)
    });
    let restarted = the_only_child(nanny.0.id());
    assert_ne!(restarted, worker);
    assert_eq!(grid_total(4).compute_on(&client).unwrap(), grid_total(4).compute_on(&LocalScheduler::new()).unwrap());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("worker exited with signal 6 (SIGABRT); restarting (1 of 5 in 60 s)"), "{text}");

    // SIGTERM goes on to the worker, which leaves cleanly; the nanny exits after it.
    signal(nanny.0.id(), "TERM");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = nanny.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the nanny did not exit");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{status}");
    assert!(!alive(restarted), "the worker outlived its nanny");
    wait_until(Duration::from_secs(20), "the scheduler dropping the worker", || client.workers().is_empty());
    let _ = std::fs::remove_file(&log);
}

#[test]
fn a_sigkilled_nanny_takes_its_worker_with_it() {
    let (_scheduler, address) = start_scheduler(&[]);
    let log = log_path("orphan");
    let nanny = start_worker(&address, "orphan", &log, &[]);
    let client = Client::connect(&address).unwrap();
    client.wait_for_workers(1, Duration::from_secs(30)).unwrap();
    let worker = the_only_child(nanny.0.id());
    signal(nanny.0.id(), "KILL");
    wait_until(Duration::from_secs(20), "the orphaned worker exiting", || !alive(worker));
    wait_until(Duration::from_secs(20), "the scheduler dropping the worker", || client.workers().is_empty());
    drop(nanny);
    let _ = std::fs::remove_file(&log);
}

#[test]
fn without_a_nanny_the_worker_runs_in_the_process_itself() {
    let (_scheduler, address) = start_scheduler(&[]);
    let log = log_path("plain");
    let worker = start_worker(&address, "plain", &log, &["--no-nanny"]);
    let client = Client::connect(&address).unwrap();
    client.wait_for_workers(1, Duration::from_secs(30)).unwrap();
    assert_eq!(grid_total(3).compute_on(&client).unwrap(), grid_total(3).compute_on(&LocalScheduler::new()).unwrap());
    assert!(children_of(worker.0.id()).is_empty());
    let _ = std::fs::remove_file(&log);
}

#[test]
fn a_worker_that_cannot_start_is_not_restarted() {
    let output = Command::new(KILN).args(["worker", "tcp://127.0.0.1:1"]).env("RUST_LOG", "warn").output().unwrap();
    assert_eq!(output.status.code(), Some(kiln_distributed::EXIT_CANNOT_START), "{output:?}");
    let all = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(all.contains("127.0.0.1:1") && !all.contains("restarting"), "{all}");
}

#[test]
fn retiring_every_worker_makes_computations_err_with_no_workers_not_hang() {
    let (_scheduler, address) = start_scheduler(&["--no-workers-timeout", "1"]);
    let log = log_path("retired");
    let mut nanny = start_worker(&address, "retiree", &log, &[]);
    let client = Client::connect(&address).unwrap();
    client.wait_for_workers(1, Duration::from_secs(30)).unwrap();
    assert_eq!(grid_total(3).compute_on(&client).unwrap(), grid_total(3).compute_on(&LocalScheduler::new()).unwrap());
    let ids: Vec<_> = client.workers().into_iter().map(|w| w.id).collect();
    client.retire_workers(&ids);
    // Retired is a clean exit: the nanny does not restart the worker, it exits too.
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = nanny.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the retired worker's nanny did not exit");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{status}");
    wait_until(Duration::from_secs(20), "the scheduler dropping the worker", || client.workers().is_empty());
    match grid_total(3).compute_on(&client) {
        Err(ComputeError::NoWorkers(message)) => {
            assert!(message.contains("no-workers timeout") && message.contains("1 of them retired"), "{message}")
        }
        other => panic!("expected a no-workers error, got {other:?}"),
    }
    let _ = std::fs::remove_file(&log);
}

#[test]
fn a_client_that_submits_before_any_worker_joins_gets_its_answer_when_one_does() {
    let (_scheduler, address) = start_scheduler(&["--no-workers-timeout", "120"]);
    let client = Client::connect(&address).unwrap();
    assert!(client.workers().is_empty());
    let pending = std::thread::spawn({
        let client = client.clone();
        move || grid_total(3).compute_on(&client)
    });
    // The graph reaches the scheduler before the worker starts.
    wait_until(Duration::from_secs(20), "the tasks reaching the scheduler", || {
        assert!(!pending.is_finished(), "the computation ended without a worker");
        client.cluster_load().unwrap().waiting > 0
    });
    let log = log_path("late");
    let _worker = start_worker(&address, "late", &log, &[]);
    let total = pending.join().unwrap().unwrap();
    assert_eq!(total, grid_total(3).compute_on(&LocalScheduler::new()).unwrap());
    let _ = std::fs::remove_file(&log);
}

#[test]
fn a_local_cluster_whose_workers_all_retire_holding_data_reports_it() {
    let cluster = LocalCluster::builder()
        .workers(1)
        .binary(KILN)
        .no_workers_timeout(Some(Duration::from_millis(500)))
        .start()
        .unwrap();
    let client = cluster.client().unwrap();
    let kept = client.persist(&kiln::array::ones::<f64>(&[100], [50])).unwrap();
    let ids: Vec<_> = client.workers().into_iter().map(|w| w.id).collect();
    // The worker holds the only copy of data a client wants: it is never let go, so the
    // cluster has a worker and no thread to run anything.
    client.retire_workers(&ids);
    match grid_total(2).compute_on(&client) {
        Err(ComputeError::NoWorkers(message)) => {
            assert!(message.contains("every worker of the cluster (1) is retiring"), "{message}")
        }
        other => panic!("expected a no-workers error, got {other:?}"),
    }
    drop(kept);
}
