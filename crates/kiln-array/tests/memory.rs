//! Sizes that do not fit in memory are errors, never aborts (issue 10.1c and 10.6): a result too
//! large to assemble is refused before anything runs, and a block larger than the scheduler's
//! memory budget fails its task with both sizes named. Before, both aborted the process
//! (`memory allocation of 320000000000 bytes failed`, signal 6).

use kiln_array::{ones, zeros};
use kiln_graph::{Collection, ComputeError, TaskError};
use kiln_local::{LocalScheduler, Progress};

fn sched() -> LocalScheduler {
    LocalScheduler::threads(2).with_progress(Progress::Never)
}

fn limited(bytes: u64) -> LocalScheduler {
    sched().with_memory_limit(Some(bytes))
}

/// The task error of a failed computation, as text.
fn task_error(result: Result<impl std::fmt::Debug, ComputeError>) -> String {
    match result {
        Err(ComputeError::Task { error: error @ TaskError::TooLarge(_), .. }) => error.to_string(),
        Err(ComputeError::Task { error, .. }) => error.to_string(),
        other => panic!("expected a task error, got {other:?}"),
    }
}

#[test]
fn a_result_larger_than_memory_is_refused_before_anything_runs() {
    // 10**12 float64 elements: 8 TB.
    let x = ones::<f64>(&[1_000_000, 1_000_000], 1000);
    match x.compute_on(&sched()) {
        Err(ComputeError::TooLarge(e)) => {
            let m = e.to_string();
            assert!(m.starts_with("result of 7.28 TiB does not fit in the "), "{m}");
            assert!(m.contains(" of available memory; "), "{m}");
            assert!(m.contains("to_zarr"), "{m}");
            assert_eq!(e.bytes, 8_000_000_000_000);
        }
        other => panic!("expected a result-size error, got {:?}", other.map(|a| a.len())),
    }
    // In a combined computation too, and a reduction of the same array is fine.
    let both = (ones::<f64>(&[3], 3), x.clone());
    assert!(matches!(both.compute_on(&sched()), Err(ComputeError::TooLarge(_))));
    let corner = x.slice(&kiln_array::idx![..2, ..3]).compute_on(&sched()).unwrap();
    assert_eq!(corner.shape(), &[2, 3]);
}

#[test]
fn a_block_larger_than_available_memory_fails_its_task() {
    // One block of 200,000 x 200,000 float64: 320 GB, more than any test machine has.
    let x = ones::<f64>(&[200_000, 200_000], [200_000, 200_000]);
    let m = task_error(x.sum().scalar().compute_on(&sched()));
    assert!(m.starts_with("block of 298.02 GiB does not fit in the "), "{m}");
    assert!(m.ends_with(" of available memory; use smaller chunks"), "{m}");
    // The repro: the rechunk's pieces are cut from the same oversized block.
    let m = task_error(x.rechunk([100_000, 100_000]).sum().scalar().compute_on(&sched()));
    assert!(m.starts_with("block of 298.02 GiB does not fit in the "), "{m}");
}

#[test]
fn blocks_are_checked_against_a_configured_limit_wherever_they_are_allocated() {
    let mib = 1 << 20;
    // A generated block of 8 MB (7.63 MiB).
    let m = task_error(ones::<f64>(&[1000, 1000], 1000).sum().scalar().compute_on(&limited(mib)));
    assert_eq!(m, "block of 7.63 MiB exceeds the memory limit of 1.00 MiB; use smaller chunks");
    // The same array in small blocks runs.
    assert_eq!(ones::<f64>(&[1000, 1000], 100).sum().scalar().compute_on(&limited(mib)).unwrap(), 1e6);
    // A rechunk assembling small pieces into one large block.
    let m = task_error(ones::<f64>(&[1000, 1000], 100).rechunk(1000).compute_on(&limited(mib)));
    assert!(m.starts_with("block of 7.63 MiB exceeds the memory limit of 1.00 MiB"), "{m}");
    // A broadcast whose result is larger than its operands: (1000, 1) + (1000,).
    let (col, row) = (ones::<f64>(&[1000, 1], 1000), zeros::<f64>(&[1000], 1000));
    let m = task_error((&col + &row).compute_on(&limited(mib)));
    assert!(m.starts_with("block of 7.63 MiB exceeds the memory limit of 1.00 MiB"), "{m}");
    let m = task_error(col.gt(&row).compute_on(&limited(100_000)));
    assert!(m.starts_with("block of 976.56 KiB exceeds the memory limit of 97.66 KiB"), "{m}");
    // The scheduler that failed the task is fine for the next computation.
    let s = limited(mib);
    assert!(ones::<f64>(&[1000, 1000], 1000).sum().scalar().compute_on(&s).is_err());
    assert_eq!(ones::<f64>(&[10], 5).sum().scalar().compute_on(&s).unwrap(), 10.0);
}
