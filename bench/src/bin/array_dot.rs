//! `x.dot(x.T)` for an n x n f64 array in c x c blocks (default 8000 and 2000), against one
//! in-memory faer GEMM of the same size on the same threads, and against dask.array (threaded
//! scheduler, its BLAS on the same threads). Each of the three runs once untimed (a cold GEMM
//! pays for page faults and thread start-up that a warm one does not), then `--runs` times
//! timed; medians are compared.
//!
//! `cargo run --release -p kiln-bench --bin array_dot -- [--n 8000] [--chunk 2000] [--runs 3]
//! [--threads N] [--no-dask]`

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, Par};
use kiln_array::random::RandomState;
use kiln_bench::{Protocol, Side, arg, compute_array, get, ratio, run_dask, text};
use kiln_local::{LocalScheduler, Progress};

fn main() {
    let n: usize = arg("--n", 8000);
    let chunk: usize = arg("--chunk", 2000);
    let protocol = Protocol::from_args(3);
    let threads = protocol.threads;
    let flops = 2.0 * (n as f64).powi(3);
    let gflops = |side: &Side| flops / side.median() / 1e9;

    // Reference: one GEMM of the whole matrix, faer on the same threads as kiln.
    let a = Mat::<f64>::from_fn(n, n, |i, j| ((i * 31 + j * 17) % 1000) as f64 / 1000.0);
    let mut c = Mat::<f64>::zeros(n, n);
    let (gemm, ()) = Side::measure("gemm", protocol.runs, || {
        matmul(c.as_mut(), Accum::Replace, a.as_ref(), a.transpose(), 1.0, Par::rayon(threads));
    });
    drop((a, c));

    let x = RandomState::new(7).random(&[n, n], [chunk, chunk]);
    let y = x.dot(&x.t());
    let sched = LocalScheduler::threads(threads).with_progress(Progress::Never);
    let (kiln, trace) = Side::measure("kiln", protocol.runs, || {
        let out = compute_array(&y, &sched).expect("dot runs");
        assert_eq!(out.shape(), &[n, n]);
        (0..n).map(|i| out[[i, i]]).sum::<f64>()
    });
    // The diagonal holds squared row norms of uniform [0, 1) rows: n/3 each on average.
    let expected_trace = (n * n) as f64 / 3.0;
    assert!((trace / expected_trace - 1.0).abs() < 0.05, "kiln's trace {trace} vs about {expected_trace}");
    let (kg, gg) = (gflops(&kiln), gflops(&gemm));
    println!("n={n} chunks={chunk}, {threads} threads:");
    println!("  one faer GEMM: {} = {gg:.1} GFLOP/s", gemm.summary());
    println!("  kiln blocked dot: {} = {kg:.1} GFLOP/s; {:.0}% of the GEMM (medians)", kiln.summary(), 100.0 * kg / gg);
    let mut line = format!(
        "RESULT n={n} chunk={chunk} {} kiln_threads={threads} gemm_threads={threads} {} kiln_gflops={kg:.1} {} \
         gemm_gflops={gg:.1} fraction_of_gemm={:.3}",
        protocol.fields(threads),
        kiln.fields(),
        gemm.fields(),
        kg / gg
    );
    if !protocol.no_dask {
        let args = ["--n".into(), n.to_string(), "--chunk".into(), chunk.to_string()];
        match run_dask("dask_array_dot.py", &args, &protocol, threads) {
            Ok(d) => {
                let dask = Side::from_dask("dask", &d, "").expect("the Dask side reports its runs");
                let dtrace = get(&d, "trace").unwrap_or(f64::NAN);
                assert!(
                    (dtrace / expected_trace - 1.0).abs() < 0.05,
                    "dask's trace {dtrace} vs about {expected_trace}"
                );
                let speedup = ratio(&dask, &kiln, true);
                println!(
                    "  dask: {} = {:.1} GFLOP/s; kiln is {speedup:.2}x faster (median/median)",
                    dask.summary(),
                    gflops(&dask)
                );
                line.push_str(&format!(
                    " dask_threads={threads} {} dask_gflops={:.1} speedup={speedup:.2} dask={}",
                    dask.fields(),
                    gflops(&dask),
                    text(&d, "dask")
                ));
            }
            Err(e) => println!("dask side skipped: {e}"),
        }
    }
    println!("{line}");
}
