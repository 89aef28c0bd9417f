#![cfg(feature = "zarr")]
//! Stores written by zarr-python (both format versions, compressed, sharded, partly written) read
//! by kiln, and stores written by kiln in the layout zarr-python writes. The stores and their
//! expected values come from `tests/fixtures/zarr/make_zarr_fixtures.py`; that script's
//! `--check` mode reads a kiln-written store back with zarr-python.

use std::path::{Path, PathBuf};

use kiln_array::npy::read_npy_as;
use kiln_array::zarr::from_zarr;
use kiln_array::{ChunkSpec, Element};
use kiln_graph::Collection;
use kiln_local::{LocalScheduler, Progress};
use ndarray::ArrayD;

fn sched() -> LocalScheduler {
    LocalScheduler::threads(2).with_progress(Progress::Never)
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/zarr").join(name)
}

/// Equal element by element, NaN equal to NaN (the stores hold NaNs on purpose). `x != x` is
/// the NaN test that works for every element type, floats and integers alike.
#[allow(clippy::eq_op)]
fn same<T: Element>(a: &ArrayD<T>, b: &ArrayD<T>) -> bool {
    a.shape() == b.shape() && a.iter().zip(b.iter()).all(|(x, y)| x == y || (x != x && y != y))
}

/// Reads `name` with the store's own chunks and with other chunks, and compares both with the
/// values zarr-python wrote.
fn reads_like_zarr_python<T: Element>(name: &str, other_chunks: ChunkSpec) {
    let want: ArrayD<T> = read_npy_as(fixture(&format!("{name}.npy"))).unwrap();
    let x = from_zarr::<T>(fixture(name), None).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(x.shape(), want.shape(), "{name}");
    let got = x.compute_on(&sched()).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(same(&got, &want), "{name}: kiln read\n{got:?}\nzarr-python wrote\n{want:?}");
    let rechunked = from_zarr::<T>(fixture(name), Some(other_chunks)).unwrap();
    let got = rechunked.compute_on(&sched()).unwrap();
    assert!(same(&got, &want), "{name} read under other chunks");
}

#[test]
fn version_2_stores_with_the_default_compressor_and_gzip() {
    reads_like_zarr_python::<f64>("v2_f64_default", ChunkSpec::PerAxis(vec![7, 17]));
    reads_like_zarr_python::<i32>("v2_i32_gzip", ChunkSpec::PerAxis(vec![4, 9]));
}

#[test]
fn version_3_stores_with_zstd_gzip_and_blosc() {
    reads_like_zarr_python::<f64>("v3_f64_default", ChunkSpec::PerAxis(vec![23, 3]));
    reads_like_zarr_python::<i32>("v3_i32_gzip", ChunkSpec::PerAxis(vec![11, 6]));
    reads_like_zarr_python::<i64>("v3_i64_blosc", ChunkSpec::PerAxis(vec![5, 5, 5]));
    reads_like_zarr_python::<f32>("v3_f32_zstd", ChunkSpec::PerAxis(vec![13]));
    reads_like_zarr_python::<bool>("v3_bool", ChunkSpec::PerAxis(vec![9, 2]));
}

#[test]
fn a_sharded_version_3_store() {
    reads_like_zarr_python::<f64>("v3_f64_sharded", ChunkSpec::PerAxis(vec![6, 6]));
}

#[test]
fn chunks_never_written_read_as_the_fill_value() {
    reads_like_zarr_python::<f64>("v3_f64_partial", ChunkSpec::PerAxis(vec![5, 12]));
    reads_like_zarr_python::<f64>("v2_f64_partial", ChunkSpec::PerAxis(vec![12, 5]));
}

#[test]
fn reading_with_the_wrong_element_type_names_both_types() {
    let err = from_zarr::<i64>(fixture("v3_f64_default"), None).unwrap_err().to_string();
    assert!(err.contains("v3_f64_default") && err.contains("float64") && err.contains("int64"), "{err}");
}

/// The metadata kiln writes has the fields, with the values, that zarr-python writes for the same
/// array. Beyond this, zarr-python itself read kiln-written stores (f64 37x23 in 10x8 chunks, and
/// i32) equal to their values, with the fixture script's `--check` mode (zarr-python 3.1.6,
/// 2026-11-27); CI has no Python, so that check is run by hand when the writer changes.
#[test]
fn kiln_writes_the_metadata_zarr_python_writes() {
    let want: ArrayD<f64> = read_npy_as(fixture("v3_f64_default.npy")).unwrap();
    let dir = std::env::temp_dir().join(format!("kiln-zarr-python-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let x = kiln_array::from_array(want.clone(), [8, 5]);
    x.to_zarr(&dir).unwrap().compute_on(&sched()).unwrap();
    let ours: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("zarr.json")).unwrap()).unwrap();
    let theirs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("v3_f64_default/zarr.json")).unwrap()).unwrap();
    for field in ["zarr_format", "node_type", "shape", "data_type", "chunk_grid", "chunk_key_encoding"] {
        assert_eq!(ours[field], theirs[field], "field {field}");
    }
    assert_eq!(ours["fill_value"].as_f64(), theirs["fill_value"].as_f64());
    let back = from_zarr::<f64>(&dir, None).unwrap().compute_on(&sched()).unwrap();
    assert!(same(&back, &want));
    std::fs::remove_dir_all(&dir).unwrap();
}
