//! Issue 5's figure: the time to detect a killed worker and finish the computation, in kiln and
//! in Dask.
//!
//! A `LocalCluster` of 3 single-threaded worker processes computes the seed expression
//! `(x + x.T - x.mean(axis=0)).std()` with `x = random((n, n), chunks=(c, c))`: a warm-up run,
//! a clean run (time T0), then the same computation with one worker SIGKILLed at T0/2 after its
//! start. Measured: the time from the kill until the scheduler has removed the worker (the
//! client's worker list, polled every 5 ms from another thread), the total time of the run with
//! the kill (T1), the overhead T1 − T0; the result must equal the clean run's (relative 1e-9).
//! `bench/dask_kill_recovery.py` does the same with `distributed.LocalCluster` (detection both
//! through the scheduler's `identity` reply, what `client.scheduler_info()` asks for, and in the
//! in-process scheduler's own table; Dask's nanny restarts the killed worker, when is reported).
//!
//! Workers run this program itself (it is its own worker binary) unless `--binary` names the
//! `kiln` CLI. Each run (`--runs`) uses a fresh cluster; the `RESULT` line has the medians.
//!
//! `cargo run --release -p kiln-bench --bin kill_recovery -- [--n 20000] [--chunk 1000]
//! [--workers 3] [--runs 1] [--kill-at 0.5] [--binary PATH] [--no-dask] [--dask-n N]`

use kiln_bench::{arg, median};
use kiln_graph::Collection;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kiln_array::random::RandomState;
use kiln_bench::{get, run_dask};
use kiln_distributed::LocalCluster;

/// One clean run and one run with a kill, on a fresh cluster.
struct Run {
    warmup_s: f64,
    clean_s: f64,
    kill_after_s: f64,
    killed_s: f64,
    detect_ms: f64,
    kill_cmd_ms: f64,
}

fn one_run(n: usize, chunk: usize, workers: usize, kill_at: f64, binary: &PathBuf) -> Run {
    let cluster = LocalCluster::builder()
        .workers(workers)
        .threads_per_worker(1)
        .binary(binary)
        .start()
        .expect("the local cluster starts");
    let client = cluster.client().expect("the client connects");
    let x = RandomState::new(42).random(&[n, n], [chunk, chunk]);
    let y = (&x + &x.t() - &x.mean_axis(0)).std();

    let t = Instant::now();
    let warm = y.scalar().compute_on(&client).expect("the warm-up run computes");
    let warmup_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let clean = y.scalar().compute_on(&client).expect("the clean run computes");
    let clean_s = t.elapsed().as_secs_f64();
    assert!((warm - clean).abs() <= 1e-9 * clean.abs(), "warm-up {warm} vs clean {clean}");

    // Watch the scheduler's worker list (pushed to the client) from another thread.
    let stop = Arc::new(AtomicBool::new(false));
    let monitor = std::thread::spawn({
        let client = client.clone();
        let stop = stop.clone();
        move || {
            while !stop.load(Ordering::Relaxed) {
                if client.workers().len() < workers {
                    return Some(Instant::now());
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            None
        }
    });
    let victim = cluster.worker_pids()[1];
    let started = Instant::now();
    let computation = std::thread::spawn({
        let client = client.clone();
        let y = y.clone();
        move || {
            let value = y.scalar().compute_on(&client);
            (value, started.elapsed())
        }
    });
    let kill_after = Duration::from_secs_f64(clean_s * kill_at);
    std::thread::sleep(kill_after.saturating_sub(started.elapsed()));
    // `kill` is a separate program: the clock starts before it runs (an upper bound on the
    // detection time by the ~1 ms it takes to start, reported as `kill_cmd_ms`).
    let killed_at = Instant::now();
    let status = Command::new("kill").args(["-KILL", &victim.to_string()]).status().expect("kill runs");
    let kill_cmd_ms = killed_at.elapsed().as_secs_f64() * 1e3;
    assert!(status.success(), "kill -KILL {victim} failed");
    let kill_after_s = killed_at.duration_since(started).as_secs_f64();
    let (value, took) = computation.join().expect("the computation thread");
    let killed = value.expect("the run with a killed worker computes");
    // The removal may in principle come after the answer; give it time before giving up.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !monitor.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Relaxed);
    let removed_at = monitor.join().expect("the monitor thread").expect("the killed worker was removed");
    let killed_s = took.as_secs_f64();
    assert!(killed_s > kill_after_s, "the computation ended before the kill; make it larger");
    assert!((killed - clean).abs() <= 1e-9 * clean.abs(), "with a kill {killed} vs clean {clean}");
    let detect_ms = removed_at.saturating_duration_since(killed_at).as_secs_f64() * 1e3;
    assert_eq!(client.workers().len(), workers - 1);
    drop(client);
    cluster.close();
    Run { warmup_s, clean_s, kill_after_s, killed_s, detect_ms, kill_cmd_ms }
}

fn main() {
    // Worker processes are this program: register the kernels, then serve if asked to.
    kiln_array::ensure_registered();
    kiln_delayed::ensure_registered();
    kiln_distributed::run_worker_if_requested();

    let n: usize = arg("--n", 20_000);
    let chunk: usize = arg("--chunk", 1000);
    let workers: usize = arg("--workers", 3);
    let runs: usize = arg("--runs", 1).max(1);
    let kill_at: f64 = arg("--kill-at", 0.5);
    let dask_n: usize = arg("--dask-n", n);
    let no_dask = std::env::args().any(|a| a == "--no-dask");
    let binary: PathBuf = arg("--binary", std::env::current_exe().expect("this program's path"));
    assert!(workers >= 2, "a kill needs at least 2 workers");

    let mut all = Vec::new();
    for i in 1..=runs {
        let r = one_run(n, chunk, workers, kill_at, &binary);
        println!(
            "kiln run {i}: n={n} chunks={chunk} workers={workers}: warm-up {:.2} s, clean {:.2} s, killed a worker at \
             {:.2} s, done in {:.2} s (+{:.2} s); removed {:.1} ms after the kill (the kill command took {:.1} ms)",
            r.warmup_s,
            r.clean_s,
            r.kill_after_s,
            r.killed_s,
            r.killed_s - r.clean_s,
            r.detect_ms,
            r.kill_cmd_ms
        );
        all.push(r);
    }
    let clean = median(&all.iter().map(|r| r.clean_s).collect::<Vec<_>>());
    let killed = median(&all.iter().map(|r| r.killed_s).collect::<Vec<_>>());
    let overhead = median(&all.iter().map(|r| r.killed_s - r.clean_s).collect::<Vec<_>>());
    let detect = median(&all.iter().map(|r| r.detect_ms).collect::<Vec<_>>());
    let mut line = format!(
        "RESULT n={n} chunk={chunk} workers={workers} runs={runs} kiln_clean_s={clean:.3} kiln_killed_s={killed:.3} \
         kiln_overhead_s={overhead:.3} kiln_detect_ms={detect:.1}"
    );
    if !no_dask {
        let args: Vec<String> = [
            "--n",
            &dask_n.to_string(),
            "--chunk",
            &chunk.to_string(),
            "--workers",
            &workers.to_string(),
            "--runs",
            &runs.to_string(),
            "--kill-at",
            &kill_at.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        match run_dask("dask_kill_recovery.py", &args) {
            Ok(d) => {
                let v = |k: &str| get(&d, k).unwrap_or(f64::NAN);
                println!(
                    "dask: n={dask_n}: clean {:.2} s, with a kill {:.2} s (+{:.2} s), removed {:.1} ms after the kill \
                     ({:.1} ms in the scheduler's own table)",
                    v("dask_clean_s"),
                    v("dask_killed_s"),
                    v("dask_overhead_s"),
                    v("dask_detect_ms"),
                    v("dask_detect_sched_ms")
                );
                line.push_str(&format!(
                    " dask_n={dask_n} dask_clean_s={:.3} dask_killed_s={:.3} dask_overhead_s={:.3} dask_detect_ms={:.1} \
                     dask_detect_sched_ms={:.1} dask_replaced_s={:.2}",
                    v("dask_clean_s"),
                    v("dask_killed_s"),
                    v("dask_overhead_s"),
                    v("dask_detect_ms"),
                    v("dask_detect_sched_ms"),
                    v("dask_replaced_s")
                ));
            }
            Err(e) => println!("dask side skipped: {e}"),
        }
    }
    println!("{line}");
}
