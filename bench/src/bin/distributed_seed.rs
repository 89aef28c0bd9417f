//! The seed array computation on a cluster (issue 4): `(x + x.T - x.mean(axis=0)).std()` with
//! `x = random((n, n), chunks=(c, c))`, on kiln's local threaded scheduler and on a
//! `LocalCluster` of 2 single-threaded worker processes, then on Dask's
//! `distributed.LocalCluster(n_workers=2, threads_per_worker=1)`.
//!
//! Target: the cluster within 1.5× of the local threaded scheduler's time. Times run from
//! building the expression to the scalar (cluster start excluded); the bench binary is its own
//! worker program (`run_worker_if_requested` after `kiln_array::ensure_registered`).
//!
//! `cargo run --release -p kiln-bench --bin distributed_seed -- [--n 20000] [--chunk 1000]
//! [--repeat 2] [--workers 2] [--no-dask] [--dask-n N]`

use kiln_bench::{arg, median, peak_rss_of};
use kiln_graph::Collection;
use std::time::Instant;

use kiln_array::Array;
use kiln_array::random::RandomState;
use kiln_bench::{get, peak_rss_bytes, run_dask};
use kiln_distributed::{LocalCluster, run_worker_if_requested};
use kiln_graph::Scheduler;
use kiln_local::{LocalScheduler, Progress};

/// CPU seconds (user + system) used so far by these processes, exited threads included
/// (`/proc/PID/stat`, 10 ms ticks).
fn cpu_seconds(pids: &[u32]) -> f64 {
    let mut total = 0.0;
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let Some(close) = stat.rfind(')') else { continue };
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        total += (ticks(11) + ticks(12)) / 100.0;
    }
    total
}

/// Builds the expression and computes it on `scheduler`: (seconds, value).
fn seed(n: usize, chunk: usize, scheduler: &dyn Scheduler) -> (f64, f64) {
    let t0 = Instant::now();
    let x: Array<f64> = RandomState::new(42).random(&[n, n], [chunk, chunk]);
    let y = (&x + &x.t() - &x.mean_axis(0)).std();
    let value = y.scalar().compute_on(scheduler).expect("the seed computation runs");
    (t0.elapsed().as_secs_f64(), value)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    kiln_array::ensure_registered();
    run_worker_if_requested();

    let n: usize = arg("--n", 20_000);
    let chunk: usize = arg("--chunk", 1000);
    let repeat: usize = arg("--repeat", 2).max(1);
    let workers: usize = arg("--workers", 2);
    let dask_n: usize = arg("--dask-n", n);
    let no_dask = std::env::args().any(|a| a == "--no-dask");

    let local = LocalScheduler::new().with_progress(Progress::Never);
    let t = Instant::now();
    let cluster =
        LocalCluster::builder().workers(workers).threads_per_worker(1).binary(std::env::current_exe()?).start()?;
    let client = cluster.client()?;
    println!(
        "kiln: n={n} chunks={chunk}; local threaded scheduler: {} threads; cluster of {workers} worker processes x 1 \
         thread started in {:.2} s",
        local.num_threads(),
        t.elapsed().as_secs_f64()
    );

    // Alternate the two so that both see the same background load.
    let (mut local_times, mut cluster_times) = (Vec::new(), Vec::new());
    let (mut local_value, mut cluster_value) = (f64::NAN, f64::NAN);
    let mut own_and_workers = vec![std::process::id()];
    own_and_workers.extend(cluster.worker_pids());
    for rep in 0..repeat {
        let c0 = cpu_seconds(&own_and_workers);
        let (ls, lv) = seed(n, chunk, &local);
        let c1 = cpu_seconds(&own_and_workers);
        let (cs, cv) = seed(n, chunk, &client);
        let c2 = cpu_seconds(&own_and_workers);
        println!(
            "  run {}: local {ls:.2} s (std {lv:.12}, CPU {:.2} s), cluster {cs:.2} s (std {cv:.12}, CPU {:.2} s)",
            rep + 1,
            c1 - c0,
            c2 - c1
        );
        local_times.push(ls);
        cluster_times.push(cs);
        local_value = lv;
        cluster_value = cv;
    }
    let worker_rss: Vec<u64> = cluster.worker_pids().into_iter().map(peak_rss_of).collect();
    drop(client);
    cluster.close();
    let local_rss = peak_rss_bytes().unwrap_or(0);

    let rel = ((cluster_value - local_value) / local_value).abs();
    assert!(rel < 1e-9, "cluster std {cluster_value} and local std {local_value} differ by {rel:e} (relative)");
    assert!((local_value - (2.0f64 / 12.0).sqrt()).abs() < 0.01, "std {local_value} is off");
    let (lbest, cbest) =
        (local_times.iter().copied().fold(f64::MAX, f64::min), cluster_times.iter().copied().fold(f64::MAX, f64::min));
    let (lmed, cmed) = (median(&local_times), median(&cluster_times));
    let ratio = cbest / lbest;
    let met = ratio <= 1.5;
    println!(
        "kiln: local best {lbest:.2} s (median {lmed:.2}), cluster best {cbest:.2} s (median {cmed:.2}); cluster/local \
         = {ratio:.2} (median {:.2}); results agree to {rel:.1e} relative; peak RSS: this process {:.0} MB, workers {:?} MB",
        cmed / lmed,
        local_rss as f64 / 1e6,
        worker_rss.iter().map(|b| b / 1_000_000).collect::<Vec<_>>()
    );
    println!("target cluster <= 1.5x local: {}", if met { "met" } else { "MISSED" });

    let mut line = format!(
        "RESULT n={n} chunk={chunk} workers={workers} local_s={lbest:.3} local_median_s={lmed:.3} cluster_s={cbest:.3} \
         cluster_median_s={cmed:.3} ratio={ratio:.3} local_std={local_value:.12} cluster_std={cluster_value:.12} \
         rel_diff={rel:.1e} worker_peak_rss_bytes={} target_met={met}",
        worker_rss.iter().max().copied().unwrap_or(0)
    );
    if !no_dask {
        let args = [
            "--n".into(),
            dask_n.to_string(),
            "--chunk".into(),
            chunk.to_string(),
            "--workers".into(),
            workers.to_string(),
        ];
        match run_dask("dask_distributed_seed.py", &args) {
            Ok(d) => {
                let ds = get(&d, "dask_s").unwrap_or(f64::NAN);
                let dstd = get(&d, "std").unwrap_or(f64::NAN);
                println!(
                    "dask distributed: n={dask_n}: {ds:.2} s (std {dstd:.6}); kiln's cluster is {:.1}x faster",
                    if dask_n == n { ds / cbest } else { f64::NAN }
                );
                line.push_str(&format!(
                    " dask_n={dask_n} dask_distributed_s={ds:.3} dask_std={dstd:.6} speedup_vs_dask={:.2}",
                    if dask_n == n { ds / cbest } else { f64::NAN }
                ));
            }
            Err(e) => println!("dask side skipped: {e}"),
        }
    }
    println!("{line}");
    Ok(())
}
