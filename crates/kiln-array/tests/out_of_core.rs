#![cfg(feature = "zarr")]
//! The seed expression `(x + x.T - x.mean(axis=0)).std()` over a Zarr store four times larger
//! than the local scheduler's memory limit (issue 11): the answer is right and the results held
//! at once stay under the limit. First the scheduler alone, on the graph without re-reads: it
//! holds back new reads and spills the blocks needed last to disk. Then as `compute_on` runs
//! it, with the re-reads planned from the scheduler's memory target.

use kiln_array::random::RandomState;
use kiln_array::zarr::from_zarr;
use kiln_array::{Array, from_array};
use kiln_graph::Collection;
use kiln_graph::collection::{graph_of, optimize};
use kiln_local::{LocalScheduler, Progress};

const N: usize = 4000;
const CHUNK: usize = 500;
const BLOCK_BYTES: u64 = (CHUNK * CHUNK * 8) as u64;
const ARRAY_BYTES: u64 = (N * N * 8) as u64;

fn sched() -> LocalScheduler {
    LocalScheduler::threads(2).with_progress(Progress::Never)
}

fn seed(x: &Array<f64>) -> Array<f64> {
    (&x.clone() + &x.t() - &x.mean_axis(0)).std()
}

/// NumPy's semantics written out: `m[j]` the mean of column `j`, `z[i][j] = x[i][j] + x[j][i] -
/// m[j]`, then the population standard deviation (ddof 0) of `z`, in two passes.
fn by_hand(x: &ndarray::ArrayD<f64>) -> f64 {
    let x = x.view().into_dimensionality::<ndarray::Ix2>().unwrap();
    let n = x.nrows();
    let m: Vec<f64> = (0..n).map(|j| (0..n).map(|i| x[[i, j]]).sum::<f64>() / n as f64).collect();
    let z = |i: usize, j: usize| x[[i, j]] + x[[j, i]] - m[j];
    let count = (n * n) as f64;
    let mean = (0..n).flat_map(|i| (0..n).map(move |j| (i, j))).map(|(i, j)| z(i, j)).sum::<f64>() / count;
    let var =
        (0..n).flat_map(|i| (0..n).map(move |j| (i, j))).map(|(i, j)| (z(i, j) - mean).powi(2)).sum::<f64>() / count;
    var.sqrt()
}

#[test]
fn the_seed_expression_over_a_store_four_times_the_memory_limit() {
    let root = std::env::temp_dir().join(format!("kiln-out-of-core-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let store = root.join("x.zarr");
    let spill = root.join("spill");

    let x = RandomState::new(2026).normal(1.0, 2.0, &[N, N], [CHUNK, CHUNK]);
    x.to_zarr(&store).unwrap().compute_on(&sched()).unwrap();
    let data = x.compute_on(&sched()).unwrap();

    // The same expression on the data in memory, without a limit, and by hand.
    let in_memory = seed(&from_array(data.clone(), [CHUNK, CHUNK])).scalar().compute_on(&sched()).unwrap();
    let hand = by_hand(&data);
    assert!((in_memory - hand).abs() <= 1e-12 * hand, "in memory {in_memory} vs by hand {hand}");

    let limit = ARRAY_BYTES / 4;
    let limited = sched().memory_limit(limit).spill_dir(&spill);
    let stored = seed(&from_zarr::<f64>(&store, None).unwrap()).scalar();
    // The scheduler alone: culled and fused, but every block read once and held until its
    // last reader (no re-reads planned).
    let (graph, outputs) = graph_of(&stored).unwrap();
    let (graph, outputs) = optimize(graph, outputs).unwrap();
    let (values, stats) = limited.run_with_stats(&graph, &outputs).unwrap();
    let got = stored.assemble(&graph, &outputs, values).unwrap();
    eprintln!("without re-reads: {} (array {} MiB, {got})", stats.summary(), ARRAY_BYTES >> 20);

    // Same blocks, same tree, same arithmetic: the stored array gives the in-memory answer.
    assert!((got - in_memory).abs() <= 1e-12 * in_memory, "from the store {got} vs in memory {in_memory}");
    assert!((got - hand).abs() <= 1e-12 * hand, "from the store {got} vs by hand {hand}");

    // Without spilling, the static order holds nearly every block at once on this graph (it
    // reads all of them for the mean before the blocks of x + x.T - mean can be finished).
    assert!(stats.spill_count > 0 && stats.read_back_count > 0, "{stats:?}");
    // The slack: each of the two threads may hold one new block (its result, or a block read
    // back for it) before the spiller makes room, plus the 256 KiB a thread counts locally
    // before adding to the shared count.
    let slack = 2 * (BLOCK_BYTES + (256 << 10));
    assert!(stats.peak_held_bytes <= limit + slack, "peak {} over {limit} + {slack}: {stats:?}", stats.peak_held_bytes);
    assert!(!spill.exists() || std::fs::read_dir(&spill).unwrap().next().is_none(), "spill files left behind");

    // As users run it: compute_on plans re-reads below the scheduler's memory target, and the
    // scheduler spills whatever those leave over the limit. Same answer, same bound.
    let again = stored.compute_on(&limited).unwrap();
    let stats = limited.last_run_stats().unwrap();
    eprintln!("with re-reads: {}", stats.summary());
    assert!((again - in_memory).abs() <= 1e-12 * in_memory, "compute_on {again} vs in memory {in_memory}");
    assert!(stats.peak_held_bytes <= limit + slack, "peak {} over {limit} + {slack}: {stats:?}", stats.peak_held_bytes);
    assert!(!spill.exists() || std::fs::read_dir(&spill).unwrap().next().is_none(), "spill files left behind");
    std::fs::remove_dir_all(&root).unwrap();
}
