//! The seeds' headline: `(x + x.T - x.mean(axis=0)).std()` with
//! `x = random((n, n), chunks=(c, c))`, in kiln and in dask.array (threaded scheduler), each
//! timed from building the expression to the value: one warm-up, then `--runs` timed runs on
//! both sides, medians compared (see `kiln_bench`'s protocol).
//!
//! `cargo run --release -p kiln-bench --bin seed_array -- [--n 20000] [--chunk 1000] [--runs 3]
//! [--threads N] [--no-dask] [--dask-n N] [--progress]`

use kiln_array::random::RandomState;
use kiln_bench::{Protocol, Side, arg, compute_scalar, get, peak_rss_bytes, ratio, run_dask, text};
use kiln_local::{LocalScheduler, Progress};

/// What uniform [0, 1) data tends to as n grows: sqrt(2/12) (x and x.T add, the mean removes
/// little).
fn expected_std() -> f64 {
    (2.0f64 / 12.0).sqrt()
}

fn main() {
    let n: usize = arg("--n", 20_000);
    let chunk: usize = arg("--chunk", 1000);
    let protocol = Protocol::from_args(3);
    let progress = if std::env::args().any(|a| a == "--progress") { Progress::Always } else { Progress::Never };

    let scheduler = LocalScheduler::threads(protocol.threads).with_progress(progress);
    let (kiln, value) = Side::measure("kiln", protocol.runs, || {
        let x = RandomState::new(42).random(&[n, n], [chunk, chunk]);
        let y = (&x + &x.t() - &x.mean_axis(0)).std();
        compute_scalar(&y, &scheduler).expect("the seed computation runs")
    });
    let rss = peak_rss_bytes().unwrap_or(0);
    println!(
        "kiln: n={n} chunks={chunk}: std = {value:.6}, {} threads: {}; peak RSS {:.0} MB",
        scheduler.num_threads(),
        kiln.summary(),
        rss as f64 / 1e6
    );
    assert!((value - expected_std()).abs() < 0.01, "std {value} is off");
    let mut line = format!(
        "RESULT n={n} chunk={chunk} {} kiln_threads={} {} kiln_peak_rss_bytes={rss} kiln_std={value:.6}",
        protocol.fields(protocol.threads),
        scheduler.num_threads(),
        kiln.fields()
    );
    if !protocol.no_dask {
        let dask_n = protocol.dask_n(n);
        let args = ["--n".into(), dask_n.to_string(), "--chunk".into(), chunk.to_string()];
        match run_dask("dask_seed_array.py", &args, &protocol, protocol.threads) {
            Ok(d) => {
                let dask = Side::from_dask("dask", &d, "").expect("the Dask side reports its runs");
                let dstd = get(&d, "std").unwrap_or(f64::NAN);
                let drss = get(&d, "peak_rss_bytes").unwrap_or(f64::NAN);
                // Different generators, so the values differ; both must be the statistic's value.
                assert!((dstd - expected_std()).abs() < 0.01, "dask's std {dstd} is off");
                let speedup = ratio(&dask, &kiln, dask_n == n);
                println!(
                    "dask: n={dask_n}: {}; peak RSS {:.0} MB; kiln is {speedup:.2}x faster (median/median), RSS {:.2}x of dask",
                    dask.summary(),
                    drss / 1e6,
                    rss as f64 / drss
                );
                line.push_str(&format!(
                    " dask_n={dask_n} dask_threads={} {} dask_peak_rss_bytes={drss:.0} dask_std={dstd:.6} speedup={speedup:.2} \
                     dask={}",
                    protocol.threads,
                    dask.fields(),
                    text(&d, "dask")
                ));
            }
            Err(e) => println!("dask side skipped: {e}"),
        }
    }
    println!("{line}");
}
