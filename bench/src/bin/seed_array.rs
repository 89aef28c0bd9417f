//! The seeds' headline: `(x + x.T - x.mean(axis=0)).std()` with
//! `x = random((n, n), chunks=(c, c))`, in kiln and in dask.array (threaded scheduler).
//!
//! `cargo run --release -p kiln-bench --bin seed_array -- [--n 20000] [--chunk 1000] [--no-dask] [--dask-n N]`

use kiln_bench::arg;
use kiln_graph::Collection;
use std::time::Instant;

use kiln_array::random::RandomState;
use kiln_bench::{get, peak_rss_bytes, run_dask};
use kiln_local::{LocalScheduler, Progress};

fn main() {
    let n: usize = arg("--n", 20_000);
    let chunk: usize = arg("--chunk", 1000);
    let dask_n: usize = arg("--dask-n", n);
    let no_dask = std::env::args().any(|a| a == "--no-dask");
    let progress = if std::env::args().any(|a| a == "--progress") { Progress::Always } else { Progress::Never };

    let scheduler = LocalScheduler::new().with_progress(progress);
    let t0 = Instant::now();
    let x = RandomState::new(42).random(&[n, n], [chunk, chunk]);
    let y = (&x + &x.t() - &x.mean_axis(0)).std();
    let value = y.scalar().compute_on(&scheduler).expect("the seed computation runs");
    let secs = t0.elapsed().as_secs_f64();
    let rss = peak_rss_bytes().unwrap_or(0);
    println!(
        "kiln: n={n} chunks={chunk}: std = {value:.6} in {secs:.2} s on {} threads, peak RSS {:.0} MB",
        scheduler.num_threads(),
        rss as f64 / 1e6
    );
    // For uniform [0,1) data the answer tends to sqrt(2/12) = 0.40825 as n grows.
    assert!((value - (2.0f64 / 12.0).sqrt()).abs() < 0.01, "std {value} is off");
    let mut line = format!("RESULT n={n} chunk={chunk} kiln_s={secs:.3} kiln_peak_rss_bytes={rss} kiln_std={value:.6}");
    if !no_dask {
        match run_dask("dask_seed_array.py", &["--n".into(), dask_n.to_string(), "--chunk".into(), chunk.to_string()]) {
            Ok(d) => {
                let ds = get(&d, "dask_s").unwrap_or(f64::NAN);
                let drss = get(&d, "peak_rss_bytes").unwrap_or(f64::NAN);
                println!(
                    "dask: n={dask_n}: {ds:.2} s, peak RSS {:.0} MB; kiln is {:.1}x faster, RSS {:.2}x of dask",
                    drss / 1e6,
                    ds / secs,
                    rss as f64 / drss
                );
                line.push_str(&format!(
                    " dask_n={dask_n} dask_s={ds:.3} dask_peak_rss_bytes={drss:.0} speedup={:.2}",
                    if dask_n == n { ds / secs } else { f64::NAN }
                ));
            }
            Err(e) => println!("dask side skipped: {e}"),
        }
    }
    println!("{line}");
}
