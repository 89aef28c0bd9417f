//! The seed array computation on a cluster (issue 4): `(x + x.T - x.mean(axis=0)).std()` with
//! `x = random((n, n), chunks=(c, c))`, on kiln's local threaded scheduler and on a
//! `LocalCluster` of 2 single-threaded worker processes, then on Dask's
//! `distributed.LocalCluster(n_workers=2, threads_per_worker=1)`. Each side (kiln local, kiln
//! cluster, Dask cluster) runs once untimed, then `--runs` times timed; medians are compared.
//!
//! Target: the cluster within 1.5× of the local threaded scheduler's time. Times run from
//! building the expression to the scalar (cluster start excluded); the bench binary is its own
//! worker program (`run_worker_if_requested` after `kiln_array::ensure_registered`).
//!
//! `cargo run --release -p kiln-bench --bin distributed_seed -- [--n 20000] [--chunk 1000]
//! [--runs 3] [--threads N] [--workers 2] [--no-dask] [--dask-n N]`

use std::time::Instant;

use kiln_array::Array;
use kiln_array::random::RandomState;
use kiln_bench::{Protocol, Side, arg, compute_scalar, get, peak_rss_bytes, peak_rss_of, ratio, run_dask, text};
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
    let value = compute_scalar(&y, scheduler).expect("the seed computation runs");
    (t0.elapsed().as_secs_f64(), value)
}

/// What uniform [0, 1) data tends to as n grows: sqrt(2/12).
fn expected_std() -> f64 {
    (2.0f64 / 12.0).sqrt()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    kiln_array::ensure_registered();
    run_worker_if_requested();

    let n: usize = arg("--n", 20_000);
    let chunk: usize = arg("--chunk", 1000);
    let workers: usize = arg("--workers", 2);
    let protocol = Protocol::from_args(3);

    let local = LocalScheduler::threads(protocol.threads).with_progress(Progress::Never);
    let t = Instant::now();
    let cluster =
        LocalCluster::builder().workers(workers).threads_per_worker(1).binary(std::env::current_exe()?).start()?;
    let client = cluster.client()?;
    let start_s = t.elapsed().as_secs_f64();
    println!(
        "kiln: n={n} chunks={chunk}; local threaded scheduler: {} threads; cluster of {workers} worker processes x 1 \
         thread started in {start_s:.2} s",
        local.num_threads(),
    );

    // Alternate the two so that both see the same background load; run 0 is the warm-up.
    let (mut local_side, mut cluster_side) = (Side::begin("local"), Side::begin("cluster"));
    let (mut local_value, mut cluster_value) = (f64::NAN, f64::NAN);
    let mut own_and_workers = vec![std::process::id()];
    own_and_workers.extend(cluster.worker_pids());
    for rep in 0..=protocol.runs {
        let c0 = cpu_seconds(&own_and_workers);
        let (ls, lv) = seed(n, chunk, &local);
        let c1 = cpu_seconds(&own_and_workers);
        let (cs, cv) = seed(n, chunk, &client);
        let c2 = cpu_seconds(&own_and_workers);
        println!(
            "  {}: local {ls:.2} s (std {lv:.12}, CPU {:.2} s), cluster {cs:.2} s (std {cv:.12}, CPU {:.2} s)",
            if rep == 0 { "warm-up".to_string() } else { format!("run {rep}") },
            c1 - c0,
            c2 - c1
        );
        if rep > 0 {
            local_side.push(ls);
            cluster_side.push(cs);
        }
        local_value = lv;
        cluster_value = cv;
    }
    local_side.end();
    cluster_side.end();
    let worker_rss: Vec<u64> = cluster.worker_pids().into_iter().map(peak_rss_of).collect();
    drop(client);
    cluster.close();
    let local_rss = peak_rss_bytes().unwrap_or(0);

    let rel = ((cluster_value - local_value) / local_value).abs();
    assert!(rel < 1e-9, "cluster std {cluster_value} and local std {local_value} differ by {rel:e} (relative)");
    assert!((local_value - expected_std()).abs() < 0.01, "std {local_value} is off");
    let cluster_vs_local = cluster_side.median() / local_side.median();
    let met = cluster_vs_local <= 1.5;
    println!(
        "kiln local: {}\nkiln cluster: {}\ncluster/local = {cluster_vs_local:.2} (medians); results agree to {rel:.1e} \
         relative; peak RSS: this process {:.0} MB, workers {:?} MB",
        local_side.summary(),
        cluster_side.summary(),
        local_rss as f64 / 1e6,
        worker_rss.iter().map(|b| b / 1_000_000).collect::<Vec<_>>()
    );
    println!("target cluster <= 1.5x local (medians): {}", if met { "met" } else { "MISSED" });

    let mut line = format!(
        "RESULT n={n} chunk={chunk} {} workers={workers} local_threads={} cluster_threads_per_worker=1 \
         cluster_start_s={start_s:.3} {} {} ratio={cluster_vs_local:.3} local_std={local_value:.12} \
         cluster_std={cluster_value:.12} rel_diff={rel:.1e} worker_peak_rss_bytes={} target_met={met}",
        protocol.fields(protocol.threads),
        local.num_threads(),
        local_side.fields(),
        cluster_side.fields(),
        worker_rss.iter().max().copied().unwrap_or(0)
    );
    if !protocol.no_dask {
        let dask_n = protocol.dask_n(n);
        let args = [
            "--n".into(),
            dask_n.to_string(),
            "--chunk".into(),
            chunk.to_string(),
            "--workers".into(),
            workers.to_string(),
        ];
        // Single-threaded workers on both sides: one BLAS thread each.
        match run_dask("dask_distributed_seed.py", &args, &protocol, 1) {
            Ok(d) => {
                let dask = Side::from_dask("dask", &d, "").expect("the Dask side reports its runs");
                let dstd = get(&d, "std").unwrap_or(f64::NAN);
                // Different generators, so the values differ; both must be the statistic's value.
                assert!((dstd - expected_std()).abs() < 0.01, "dask's std {dstd} is off");
                let speedup = ratio(&dask, &cluster_side, dask_n == n);
                println!(
                    "dask distributed ({workers} workers x 1 thread): n={dask_n}: {} (std {dstd:.6}); kiln's cluster is \
                     {speedup:.1}x faster (median/median)",
                    dask.summary()
                );
                line.push_str(&format!(
                    " dask_n={dask_n} dask_threads_per_worker=1 dask_start_s={:.3} {} dask_std={dstd:.6} \
                     speedup_vs_dask={speedup:.2} dask={}",
                    get(&d, "start_s").unwrap_or(f64::NAN),
                    dask.fields(),
                    text(&d, "dask")
                ));
            }
            Err(e) => println!("dask side skipped: {e}"),
        }
    }
    println!("{line}");
    Ok(())
}
