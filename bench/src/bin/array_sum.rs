//! `x.sum()` over an in-memory array of n f64 (default 10^9, 8 GB) in auto (128 MiB) chunks,
//! against the machine's memory bandwidth measured with a copy kernel and a read kernel in the
//! same run, and against dask.array on the same data. Every measurement (copy, read, kiln, Dask)
//! runs once untimed, then `--runs` times timed; medians are compared.
//!
//! `cargo run --release -p kiln-bench --bin array_sum -- [--n 1000000000] [--runs 3] [--threads N]
//! [--no-dask]`

use kiln_array::{ChunkSpec, from_array};
use kiln_bench::{Protocol, Side, arg, compute_scalar, get, ratio, run_dask, text};
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
    let protocol = Protocol::from_args(3);
    let threads = protocol.threads;
    let data: Vec<f64> = (0..n).map(|i| (i % 1000) as f64 * 0.001).collect();
    let expected: f64 = (0..1000).map(|i| i as f64 * 0.001).sum::<f64>() * (n / 1000) as f64
        + (0..n % 1000).map(|i| i as f64 * 0.001).sum::<f64>();
    let bytes = (n * 8) as f64;
    let part = n.div_ceil(threads).max(1);

    // Bandwidth: copy the whole array, one part per thread, counting bytes read + written. The
    // destination is written once first so that page faults are not counted.
    let mut dst = vec![1.0f64; n];
    let (copy, ()) = Side::measure("copy", protocol.runs, || {
        std::thread::scope(|s| {
            for (src, out) in data.chunks(part).zip(dst.chunks_mut(part)) {
                s.spawn(move || out.copy_from_slice(src));
            }
        });
    });
    let bandwidth = 2.0 * bytes / copy.median();
    drop(dst);
    // The machine's read bandwidth: a vectorized sum on every thread.
    let (read, _) = Side::measure("read_kernel", protocol.runs, || {
        std::thread::scope(|s| {
            let handles: Vec<_> = data.chunks(part).map(|c| s.spawn(move || read_kernel(c))).collect();
            handles.into_iter().map(|h| h.join().expect("read kernel")).sum::<f64>()
        })
    });

    let x = from_array(ArrayD::from_shape_vec(IxDyn(&[n]), data).expect("n elements"), ChunkSpec::auto());
    let sched = LocalScheduler::threads(threads).with_progress(Progress::Never);
    let (kiln, total) = Side::measure("kiln", protocol.runs, || compute_scalar(&x.sum(), &sched).expect("sum runs"));
    assert!((total - expected).abs() <= 1e-6 * expected.abs(), "{total} vs {expected}");
    let at_bandwidth = bytes / bandwidth;
    println!("{threads}-thread read kernel: {} ({:.1} GB/s)", read.summary(), bytes / read.median() / 1e9);
    println!("{threads}-thread copy kernel: {} ({:.1} GB/s read+write)", copy.summary(), bandwidth / 1e9);
    println!(
        "n={n}: kiln sum on {threads} threads: {} ({:.1} GB/s); reading the array at the copy kernel's rate takes \
         {at_bandwidth:.3} s; kiln is at {:.2}x of it (medians)",
        kiln.summary(),
        bytes / kiln.median() / 1e9,
        kiln.median() / at_bandwidth
    );
    let mut line = format!(
        "RESULT n={n} {} kiln_threads={threads} {} bandwidth_gbs={:.2} bandwidth_read_s={at_bandwidth:.3} \
         ratio_to_bandwidth={:.2} {} {} ratio_to_read_kernel={:.2}",
        protocol.fields(threads),
        kiln.fields(),
        bandwidth / 1e9,
        kiln.median() / at_bandwidth,
        read.fields(),
        copy.fields(),
        kiln.median() / read.median()
    );
    // Dask builds its own copy of the data: free kiln's first.
    drop(x);
    if !protocol.no_dask {
        match run_dask("dask_array_sum.py", &["--n".into(), n.to_string()], &protocol, threads) {
            Ok(d) => {
                let dask = Side::from_dask("dask", &d, "").expect("the Dask side reports its runs");
                let dtotal = get(&d, "total").unwrap_or(f64::NAN);
                assert!((dtotal - expected).abs() <= 1e-6 * expected.abs(), "dask's {dtotal} vs {expected}");
                let speedup = ratio(&dask, &kiln, true);
                println!("dask: {}; kiln is {speedup:.2}x faster (median/median)", dask.summary());
                line.push_str(&format!(
                    " dask_threads={threads} {} speedup={speedup:.2} dask={}",
                    dask.fields(),
                    text(&d, "dask")
                ));
            }
            Err(e) => println!("dask side skipped: {e}"),
        }
    }
    println!("{line}");
}
