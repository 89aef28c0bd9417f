//! The seed expression on stored data (issue 11): `(x + x.T - x.mean(axis=0)).std()` with
//! `x = from_zarr(store)`, the store written by zarr-python with its defaults (f64, Zarr v3,
//! zstd, chunks 1000²) by `bench/make_zarr_store.py` when it is missing; with `--npy`, the same
//! data as a directory of `.npy` blocks (`bench/make_npy_blocks.py`, read with
//! `from_npy_blocks`; Dask assembles it with `da.block` over delayed `np.load`); with `--hdf5`
//! (build with `--features hdf5`), the same data as dataset `x` of an HDF5 file written by h5py
//! in the store's chunks, uncompressed (`bench/make_hdf5_file.py`; kiln reads it with
//! `from_hdf5`, Dask with `da.from_array` over the h5py dataset, with its default lock);
//! `--gzip LEVEL` [`--shuffle`] makes and reads a deflate-compressed (and shuffled) copy
//! instead (`seed-<n>-<chunk>-gzip<LEVEL>[-shuffle].h5`), and `--hdf5-library` has kiln read
//! every chunk through the HDF5 library rather than decode it itself. kiln and dask.array
//! (threaded scheduler) read the same store; one warm-up (which also warms the page cache),
//! then `--runs` timed runs on both sides, medians compared (see `kiln_bench`'s protocol).
//!
//! `cargo run --release -p kiln-bench --bin seed_zarr -- [--n 20000] [--chunk 1000]
//! [--store DIR] [--npy | --hdf5 [--gzip LEVEL [--shuffle]] [--hdf5-library]] [--memory-limit BYTES] [--runs 3] [--threads N] [--no-dask] [--progress]`
//!
//! `--memory-limit` sets the local scheduler's memory limit (default: half the machine's
//! memory); stored blocks kept for later readers stay under an eighth of it, at most 512 MiB
//! (`kiln_graph::reread`).
//!
//! The store defaults to `$KILN_BENCH_DATA` (or the system temp dir) `/seed-<n>-<chunk>.zarr`;
//! at n = 20000 it takes 3.2 GB of disk, at 40000 12.8 GB.

use std::path::PathBuf;
use std::process::Command;

use kiln_array::zarr::from_zarr;
use kiln_bench::{Protocol, Side, arg, compute_scalar, dask_python, get, peak_rss_bytes, ratio, run_dask, text};
use kiln_local::{LocalScheduler, Progress};

fn main() {
    let n: usize = arg("--n", 20_000);
    let chunk: usize = arg("--chunk", 1000);
    let data_dir = std::env::var_os("KILN_BENCH_DATA").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    let store: PathBuf = arg("--store", data_dir.join(format!("seed-{n}-{chunk}.zarr")).display().to_string()).into();
    let protocol = Protocol::from_args(3);
    // `--sum`: only `x.sum()`, kiln only: what reading the store costs.
    let sum_only = std::env::args().any(|a| a == "--sum");
    let progress = if std::env::args().any(|a| a == "--progress") { Progress::Always } else { Progress::Never };

    let python = dask_python().expect("the Dask environment (bench/.venv) writes the store");
    let status = Command::new(&python)
        .arg(kiln_bench::bench_dir().join("make_zarr_store.py"))
        .args(["--path", &store.display().to_string(), "--n", &n.to_string(), "--chunk", &chunk.to_string()])
        .status()
        .expect("running make_zarr_store.py");
    assert!(status.success(), "make_zarr_store.py failed: {status}");

    let limit: u64 = arg("--memory-limit", 0);
    let mut scheduler = LocalScheduler::threads(protocol.threads).with_progress(progress);
    if limit > 0 {
        scheduler = scheduler.memory_limit(limit);
    }
    let target = kiln_graph::Scheduler::memory_target(&scheduler).unwrap_or(0);
    let npy = std::env::args().any(|a| a == "--npy");
    let hdf5 = std::env::args().any(|a| a == "--hdf5");
    assert!(!(npy && hdf5), "--npy and --hdf5 are two formats: pick one");
    if hdf5 && cfg!(not(feature = "hdf5")) {
        eprintln!("--hdf5 needs the benchmark built with `--features hdf5` (and libhdf5-dev installed)");
        std::process::exit(2);
    }
    let blocks_dir = store.with_extension("npyblocks");
    // The HDF5 copy's filters: none (h5py's default), or deflate at `--gzip`, shuffled first
    // with `--shuffle`; each kind is its own file.
    let gzip: Option<u8> = std::env::args().any(|a| a == "--gzip").then(|| arg("--gzip", 4));
    let shuffle = std::env::args().any(|a| a == "--shuffle");
    let hdf5_library = std::env::args().any(|a| a == "--hdf5-library");
    let filters = match (gzip, shuffle) {
        (None, false) => "none".to_string(),
        (None, true) => panic!("--shuffle goes with --gzip LEVEL"),
        (Some(level), false) => format!("gzip{level}"),
        (Some(level), true) => format!("shuffle-gzip{level}"),
    };
    let h5_file = if filters == "none" {
        store.with_extension("h5")
    } else {
        let stem = store.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        store.with_file_name(format!("{stem}-{filters}.h5"))
    };
    if hdf5 {
        let mut make = vec![
            "--from-zarr".to_string(),
            store.display().to_string(),
            "--path".into(),
            h5_file.display().to_string(),
        ];
        if let Some(level) = gzip {
            make.extend(["--gzip".to_string(), level.to_string()]);
        }
        if shuffle {
            make.push("--shuffle".into());
        }
        let status = Command::new(&python)
            .arg(kiln_bench::bench_dir().join("make_hdf5_file.py"))
            .args(&make)
            .status()
            .expect("running make_hdf5_file.py");
        assert!(status.success(), "make_hdf5_file.py failed: {status}");
    }
    let format = if npy {
        "npy"
    } else if hdf5 {
        "hdf5"
    } else {
        "zarr"
    };
    if npy {
        let status = Command::new(&python)
            .arg(kiln_bench::bench_dir().join("make_npy_blocks.py"))
            .args(["--from-zarr", &store.display().to_string(), "--path", &blocks_dir.display().to_string()])
            .status()
            .expect("running make_npy_blocks.py");
        assert!(status.success(), "make_npy_blocks.py failed: {status}");
    }
    let (kiln, value) = Side::measure("kiln", protocol.runs, || {
        let x = match format {
            "npy" => kiln_array::npy_blocks::from_npy_blocks::<f64>(&blocks_dir).expect("the blocks open"),
            #[cfg(feature = "hdf5")]
            "hdf5" => {
                let options = kiln_array::hdf5::Hdf5ReadOptions { direct: !hdf5_library };
                kiln_array::hdf5::from_hdf5_with::<f64>(&h5_file, "x", None, &options).expect("the file opens")
            }
            _ => from_zarr::<f64>(&store, None).expect("the store opens"),
        };
        let y = if sum_only { x.sum() } else { (&x + &x.t() - &x.mean_axis(0)).std() };
        compute_scalar(&y, &scheduler).expect("the seed computation runs")
    });
    let rss = peak_rss_bytes().unwrap_or(0);
    // What the scheduler itself held at most (results as their codecs measure them), beside the
    // process's RSS: the difference is blocks being computed, allocator slack and the runtime.
    let held = scheduler.last_run_stats().map_or(0, |s| s.peak_held_bytes);
    println!(
        "kiln: {format} n={n} chunks={chunk}: std = {value:.6}, {} threads: {}; peak RSS {:.0} MB (results held at most: {:.0} MB)",
        scheduler.num_threads(),
        kiln.summary(),
        rss as f64 / 1e6,
        held as f64 / 1e6
    );
    let read = if hdf5_library { "library" } else { "direct" };
    let hdf5_fields = if hdf5 { format!(" filters={filters} kiln_read={read}") } else { String::new() };
    let mut line = format!(
        "RESULT format={format}{hdf5_fields} n={n} chunk={chunk} memory_limit={target} {} kiln_threads={} {} kiln_peak_rss_bytes={rss} kiln_peak_held_bytes={held} kiln_std={value:.6}",
        protocol.fields(protocol.threads),
        scheduler.num_threads(),
        kiln.fields()
    );
    if !protocol.no_dask {
        let mut args = vec!["--path".to_string(), store.display().to_string()];
        if npy {
            args = vec!["--path".into(), blocks_dir.display().to_string(), "--npy".into()];
        } else if hdf5 {
            args = vec!["--path".into(), h5_file.display().to_string(), "--hdf5".into()];
        }
        match run_dask("dask_seed_zarr.py", &args, &protocol, protocol.threads) {
            Ok(d) => {
                let dask = Side::from_dask("dask", &d, "").expect("the Dask side reports its runs");
                let dstd = get(&d, "std").unwrap_or(f64::NAN);
                let drss = get(&d, "peak_rss_bytes").unwrap_or(f64::NAN);
                // The same data on both sides: the same statistic up to summation order.
                assert!(
                    (dstd - value).abs() < 1e-9 * value.abs().max(1.0),
                    "dask's std {dstd} differs from kiln's {value}"
                );
                let speedup = ratio(&dask, &kiln, true);
                println!(
                    "dask: {}; peak RSS {:.0} MB; kiln is {speedup:.2}x faster (median/median), RSS {:.2}x of dask",
                    dask.summary(),
                    drss / 1e6,
                    rss as f64 / drss
                );
                line.push_str(&format!(
                    " dask_threads={} {} dask_peak_rss_bytes={drss:.0} dask_std={dstd:.6} speedup={speedup:.2} dask={}",
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
