#![cfg(feature = "zarr")]
//! Zarr round trips on the local filesystem.

use kiln_array::random::RandomState;
use kiln_array::zarr::from_zarr;
use kiln_array::{ArrayError, ChunkSpec};
use kiln_graph::Collection;
use kiln_local::{LocalScheduler, Progress};

fn sched() -> LocalScheduler {
    LocalScheduler::threads(2).with_progress(Progress::Never)
}

fn temp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-zarr-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn write_then_read_back_under_other_chunks() {
    let dir = temp("roundtrip");
    let x = RandomState::new(11).normal(0.0, 1.0, &[37, 23], [10, 8]);
    let want = x.compute_on(&sched()).unwrap();
    let written = (x.to_zarr(&dir).unwrap()).compute_on(&sched()).unwrap();
    assert_eq!(written, 4 * 3);
    let back = from_zarr::<f64>(&dir, None).unwrap();
    assert_eq!(back.chunks()[0], vec![10, 10, 10, 7]);
    assert_eq!(back.compute_on(&sched()).unwrap(), want);
    let rechunked = from_zarr::<f64>(&dir, Some(ChunkSpec::PerAxis(vec![7, 23]))).unwrap();
    assert_eq!(rechunked.compute_on(&sched()).unwrap(), want);
    // Computations read only what they need.
    let col_sums = rechunked.sum_axis(0).compute_on(&sched()).unwrap();
    assert!((col_sums.sum() - want.sum()).abs() < 1e-9);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn integers_and_irregular_chunks() {
    let dir = temp("ints");
    let x = RandomState::new(3).integers(-50, 50, &[12], 5).rechunk(ChunkSpec::Explicit(vec![vec![2, 7, 3]]));
    let want = x.compute_on(&sched()).unwrap();
    (x.to_zarr(&dir).unwrap()).compute_on(&sched()).unwrap();
    assert_eq!(from_zarr::<i64>(&dir, None).unwrap().compute_on(&sched()).unwrap(), want);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn missing_stores_and_wrong_types_are_clear_errors() {
    let missing = from_zarr::<f64>("/nonexistent/kiln.zarr", None).unwrap_err();
    assert!(
        matches!(&missing, ArrayError::Io(m) if m.contains("/nonexistent/kiln.zarr") && m.contains("does not exist")),
        "{missing}"
    );
    let dir = temp("types");
    (RandomState::new(1).random(&[4], 2).to_zarr(&dir).unwrap()).compute_on(&sched()).unwrap();
    let wrong = from_zarr::<i32>(&dir, None).unwrap_err().to_string();
    assert!(wrong.contains("not int32"), "{wrong}");
    std::fs::remove_dir_all(&dir).unwrap();
}
