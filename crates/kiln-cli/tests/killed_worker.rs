//! Issue 10.1(b) end to end: a task that kills its worker process. Workers run under nannies
//! (the default of `LocalCluster`), so each death is followed by a restart; after the
//! scheduler's `allowed_failures` (3) deaths the client's computation fails with
//! `ComputeError::KilledWorker` naming the task and the last worker, the cluster keeps
//! working, and no process outlives the cluster.
//!
//! This file is its own test program (`harness = false`): started as `<it> worker ADDR ...`,
//! it is the worker, and knows the kernel that aborts.

use std::time::Duration;

use kiln::ComputeError;
use kiln::delayed::{Func1, func1};
use kiln::graph::KernelRegistry;
use kiln::prelude::*;
use kiln_distributed::{LocalCluster, run_worker_if_requested};

mod support;
use support::processes_mentioning;

fn abort() -> Func1<i64, i64> {
    func1("abort", |_: &i64| -> i64 { std::process::abort() }).portable("test.killed.abort")
}
fn double() -> Func1<i64, i64> {
    func1("double", |x: &i64| 2 * x).portable("test.killed.double")
}

/// Workers this test aborts must not leave core files behind: children inherit the limit.
fn no_core_dumps() {
    let none = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: setrlimit with a valid, initialized struct.
    let _ = unsafe { libc::setrlimit(libc::RLIMIT_CORE, &none) };
}

fn main() {
    no_core_dumps();
    kiln::register_builtins();
    KernelRegistry::global().register_instance(abort().kernel());
    KernelRegistry::global().register_instance(double().kernel());
    run_worker_if_requested();

    let binary = std::env::current_exe().unwrap();
    let cluster = LocalCluster::builder().workers(2).binary(&binary).start().unwrap();
    let address = cluster.address();
    let scheduler = address.trim_start_matches("tcp://").to_string();
    assert_eq!(cluster.nanny_pids().len(), 2);
    let client = cluster.client().unwrap();

    let fatal = abort().call(1);
    let key = fatal.key().clone();
    match fatal.compute_on(&client) {
        Err(ComputeError::KilledWorker { key: failed, last_worker, failures }) => {
            assert_eq!(failed, key);
            assert_eq!(failures, 3);
            assert!(last_worker.starts_with("worker ") && last_worker.contains(" at 127.0.0.1:"), "{last_worker}");
            eprintln!("killed_worker: {}", ComputeError::KilledWorker { key: failed, last_worker, failures });
        }
        other => panic!("expected KilledWorker, got {other:?}"),
    }

    // The nannies bring the workers back; the cluster computes the next thing.
    client.wait_for_workers(2, Duration::from_secs(60)).unwrap();
    assert_eq!(double().call(21).compute_on(&client).unwrap(), 42);
    assert_eq!(cluster.nanny_pids().len(), 2, "a nanny gave up");

    let pids: Vec<u32> = cluster.worker_pids().into_iter().chain(cluster.nanny_pids()).collect();
    drop(client);
    cluster.close();
    // Nothing that was started for this cluster runs on: nannies, workers, restarted workers.
    let left = processes_mentioning(&scheduler);
    assert!(left.is_empty(), "processes left after the cluster closed: {left:?}");
    for pid in pids {
        let running = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "));
        assert!(!running, "process {pid} still runs");
    }
    eprintln!("killed_worker: KilledWorker after 3 deaths, cluster usable afterwards, no process left");
}
