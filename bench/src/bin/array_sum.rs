//! `x.sum()` over an in-memory array of n f64 (default 10^9, 8 GB) in auto (128 MiB) chunks,
//! against the machine's memory bandwidth measured with a copy kernel in the same run (best of
//! three each), and against dask.array on the same data size.
//!
//! `cargo run --release -p kiln-bench --bin array_sum -- [--n 1000000000] [--no-dask]`

use kiln_bench::arg;
use kiln_graph::Collection;
use std::time::Instant;

use kiln_array::{ChunkSpec, from_array};
use kiln_bench::{get, run_dask};
use kiln_local::{LocalScheduler, Progress};
use ndarray::{ArrayD, IxDyn};

/// Sums with 16 independent accumulators (vectorizes), using AVX2 when the CPU has it.
fn read_kernel(xs: &[f64]) -> f64 {
    #[inline(always)]
    fn body(xs: &[f64]) -> f64 {
        let mut acc = [0.0f64; 16];
        for c in xs.chunks_exact(16) {
            for i in 0..16 {
                acc[i] += c[i];
            }
        }
        acc.iter().sum::<f64>() + xs.chunks_exact(16).remainder().iter().sum::<f64>()
    }
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2")]
        fn avx2(xs: &[f64]) -> f64 {
            body(xs)
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { avx2(xs) };
        }
    }
    body(xs)
}

fn main() {
    let n: usize = arg("--n", 1_000_000_000);
    let threads = std::thread::available_parallelism().map_or(2, |p| p.get());
    let data: Vec<f64> = (0..n).map(|i| (i % 1000) as f64 * 0.001).collect();
    let expected: f64 = (0..1000).map(|i| i as f64 * 0.001).sum::<f64>() * (n / 1000) as f64
        + (0..n % 1000).map(|i| i as f64 * 0.001).sum::<f64>();

    // Bandwidth: copy the whole array once per thread's half, counting bytes read + written.
    // The destination is written once first so that page faults are not counted; best of 3.
    let mut dst = vec![1.0f64; n];
    let mut copy_s = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        std::thread::scope(|s| {
            let half = n.div_ceil(threads);
            for (src, out) in data.chunks(half).zip(dst.chunks_mut(half)) {
                s.spawn(move || out.copy_from_slice(src));
            }
        });
        copy_s = copy_s.min(t.elapsed().as_secs_f64());
    }
    let bandwidth = 2.0 * (n * 8) as f64 / copy_s;
    drop(dst);
    // The machine's read bandwidth: a vectorized sum on every core, best of 3.
    let mut read_s = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        let partial: f64 = std::thread::scope(|s| {
            let half = n.div_ceil(threads);
            let handles: Vec<_> = data.chunks(half).map(|c| s.spawn(move || read_kernel(c))).collect();
            handles.into_iter().map(|h| h.join().expect("read kernel")).sum()
        });
        std::hint::black_box(partial);
        read_s = read_s.min(t.elapsed().as_secs_f64());
    }

    let x = from_array(ArrayD::from_shape_vec(IxDyn(&[n]), data).expect("n elements"), ChunkSpec::auto());
    let sched = LocalScheduler::threads(threads).with_progress(Progress::Never);
    let (mut total, mut sum_s) = (0.0, f64::MAX);
    for _ in 0..3 {
        let t = Instant::now();
        total = x.sum().scalar().compute_on(&sched).expect("sum runs");
        sum_s = sum_s.min(t.elapsed().as_secs_f64());
    }
    assert!((total - expected).abs() <= 1e-6 * expected.abs(), "{total} vs {expected}");
    let at_bandwidth = (n * 8) as f64 / bandwidth;
    println!("{threads}-thread read kernel: {read_s:.3} s ({:.1} GB/s)", (n * 8) as f64 / read_s / 1e9);
    println!(
        "n={n}: kiln sum {sum_s:.3} s ({:.1} GB/s); copy-kernel bandwidth {:.1} GB/s (read+write); \
         reading the array at that rate takes {at_bandwidth:.3} s; kiln is at {:.2}x of it",
        (n * 8) as f64 / sum_s / 1e9,
        bandwidth / 1e9,
        sum_s / at_bandwidth
    );
    let mut line = format!(
        "RESULT n={n} kiln_s={sum_s:.3} bandwidth_gbs={:.2} bandwidth_read_s={:.3} ratio_to_bandwidth={:.2} read_kernel_s={read_s:.3} ratio_to_read_kernel={:.2}",
        bandwidth / 1e9,
        (n * 8) as f64 / bandwidth,
        sum_s / ((n * 8) as f64 / bandwidth),
        sum_s / read_s
    );
    drop(x);
    if !std::env::args().any(|a| a == "--no-dask") {
        match run_dask("dask_array_sum.py", &["--n".into(), n.to_string()]) {
            Ok(d) => {
                let ds = get(&d, "dask_s").unwrap_or(f64::NAN);
                println!("dask: {ds:.3} s; kiln is {:.2}x faster", ds / sum_s);
                line.push_str(&format!(" dask_s={ds:.3} speedup={:.2}", ds / sum_s));
            }
            Err(e) => println!("dask side skipped: {e}"),
        }
    }
    println!("{line}");
}
