//! `x.dot(x.T)` for an n x n f64 array in c x c blocks (default 8000 and 2000), against one
//! in-memory faer GEMM of the same size on all cores, and against dask.array.
//!
//! `cargo run --release -p kiln-bench --bin array_dot -- [--n 8000] [--chunk 2000] [--no-dask]`

use kiln_bench::arg;
use kiln_graph::Collection;
use std::time::Instant;

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, Par};
use kiln_array::random::RandomState;
use kiln_bench::{get, run_dask};
use kiln_local::{LocalScheduler, Progress};

fn main() {
    let n: usize = arg("--n", 8000);
    let chunk: usize = arg("--chunk", 2000);
    let threads = std::thread::available_parallelism().map_or(2, |p| p.get());
    let flops = 2.0 * (n as f64).powi(3);

    // Reference: one GEMM of the whole matrix, faer on all cores.
    let a = Mat::<f64>::from_fn(n, n, |i, j| ((i * 31 + j * 17) % 1000) as f64 / 1000.0);
    let mut c = Mat::<f64>::zeros(n, n);
    let t = Instant::now();
    matmul(c.as_mut(), Accum::Replace, a.as_ref(), a.transpose(), 1.0, Par::rayon(threads));
    let gemm_s = t.elapsed().as_secs_f64();
    drop((a, c));

    let x = RandomState::new(7).random(&[n, n], [chunk, chunk]);
    let y = x.dot(&x.t());
    let sched = LocalScheduler::threads(threads).with_progress(Progress::Never);
    let t = Instant::now();
    let out = y.compute_on(&sched).expect("dot runs");
    let kiln_s = t.elapsed().as_secs_f64();
    assert_eq!(out.shape(), &[n, n]);
    let (kg, gg) = (flops / kiln_s / 1e9, flops / gemm_s / 1e9);
    println!(
        "n={n} chunks={chunk}: kiln blocked dot {kiln_s:.2} s = {kg:.1} GFLOP/s; one faer GEMM ({threads} threads) \
         {gemm_s:.2} s = {gg:.1} GFLOP/s; kiln reaches {:.0}% of it",
        100.0 * kg / gg
    );
    let mut line = format!(
        "RESULT n={n} chunk={chunk} kiln_s={kiln_s:.3} kiln_gflops={kg:.1} gemm_s={gemm_s:.3} gemm_gflops={gg:.1} fraction_of_gemm={:.3}",
        kg / gg
    );
    if !std::env::args().any(|a| a == "--no-dask") {
        match run_dask("dask_array_dot.py", &["--n".into(), n.to_string(), "--chunk".into(), chunk.to_string()]) {
            Ok(d) => {
                let ds = get(&d, "dask_s").unwrap_or(f64::NAN);
                println!("dask: {ds:.2} s = {:.1} GFLOP/s; kiln is {:.2}x faster", flops / ds / 1e9, ds / kiln_s);
                line.push_str(&format!(" dask_s={ds:.3} speedup={:.2}", ds / kiln_s));
            }
            Err(e) => println!("dask side skipped: {e}"),
        }
    }
    println!("{line}");
}
