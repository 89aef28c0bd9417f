#![cfg(feature = "hdf5")]
//! HDF5 files written by h5py (chunked, gzip-compressed, contiguous, big-endian, partly written,
//! many files) read by kiln value for value, files written by kiln read back, and bad input. The
//! files and their expected values come from `tests/fixtures/hdf5/make_hdf5_fixtures.py`; its
//! `--check` mode reads a kiln-written file back with h5py. `filters.h5` holds the filter
//! pipelines kiln decodes itself (gzip levels, shuffle, fletcher32, skipped filters, chunks never
//! written, corrupt chunks).

use std::path::{Path, PathBuf};

use kiln_array::hdf5::{Hdf5Options, Hdf5ReadOptions, from_hdf5, from_hdf5_files, from_hdf5_with};
use kiln_array::npy::read_npy_as;
use kiln_array::{ArrayError, ChunkSpec, Element, Idx, arange, from_array};
use kiln_graph::Collection;
use kiln_local::{LocalScheduler, Progress};
use ndarray::ArrayD;

fn sched() -> LocalScheduler {
    LocalScheduler::threads(2).with_progress(Progress::Never)
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hdf5").join(name)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-hdf5-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Equal element by element, NaN equal to NaN (`x != x` is the NaN test for every type).
#[allow(clippy::eq_op)]
fn same<T: Element>(a: &ArrayD<T>, b: &ArrayD<T>) -> bool {
    a.shape() == b.shape() && a.iter().zip(b.iter()).all(|(x, y)| x == y || (x != x && y != y))
}

/// Reads `dataset` of `mixed.h5` with the file's own chunking and with `other`, and compares both
/// with the values h5py wrote.
fn reads_like_h5py<T: Element>(dataset: &str, other: ChunkSpec) {
    let want: ArrayD<T> = read_npy_as(fixture(&format!("mixed_{}.npy", dataset.replace('/', "_")))).unwrap();
    let x = from_hdf5::<T>(fixture("mixed.h5"), dataset, None).unwrap_or_else(|e| panic!("{dataset}: {e}"));
    assert_eq!(x.shape(), want.shape(), "{dataset}");
    let got = x.compute_on(&sched()).unwrap_or_else(|e| panic!("{dataset}: {e}"));
    assert!(same(&got, &want), "{dataset}: kiln read\n{got:?}\nh5py wrote\n{want:?}");
    let y = from_hdf5::<T>(fixture("mixed.h5"), dataset, Some(other)).unwrap();
    let got = y.compute_on(&sched()).unwrap();
    assert!(same(&got, &want), "{dataset} read in other blocks ({:?})", y.chunks());
}

#[test]
fn chunked_compressed_contiguous_and_nested_datasets_read_value_for_value() {
    reads_like_h5py::<f64>("chunked_gzip", ChunkSpec::PerAxis(vec![4, 6]));
    reads_like_h5py::<f32>("contiguous_f32", ChunkSpec::PerAxis(vec![4, 2, 3]));
    reads_like_h5py::<i64>("group/sub/ints", ChunkSpec::Uniform(13));
    reads_like_h5py::<i32>("i32", ChunkSpec::PerAxis(vec![5, 2]));
    reads_like_h5py::<bool>("flags", ChunkSpec::PerAxis(vec![2, 3]));
}

#[test]
fn big_endian_partly_written_and_scalar_datasets() {
    reads_like_h5py::<f64>("big_endian", ChunkSpec::PerAxis(vec![2, 4]));
    // Chunks never written read as the dataset's fill value, as h5py reads them.
    reads_like_h5py::<f64>("partly_written", ChunkSpec::PerAxis(vec![3, 3]));
    let s = from_hdf5::<f64>(fixture("mixed.h5"), "scalar", None).unwrap();
    assert_eq!(s.shape(), &[] as &[usize]);
    assert_eq!(s.compute_on(&sched()).unwrap().iter().copied().collect::<Vec<_>>(), vec![2.5]);
}

#[test]
fn blocks_follow_the_storage_chunks_by_default() {
    // 7 x 5 chunks of f64 are tiny: blocks grow by whole chunks (the leading axis first).
    let x = from_hdf5::<f64>(fixture("mixed.h5"), "chunked_gzip", None).unwrap();
    assert_eq!(x.chunks(), &[vec![23], vec![17]]);
    let x = from_hdf5::<f64>(fixture("mixed.h5"), "chunked_gzip", Some(ChunkSpec::PerAxis(vec![7, 5]))).unwrap();
    assert_eq!(x.numblocks(), vec![4, 4]);
}

#[test]
fn reductions_over_nans_match_numpy() {
    let want: ArrayD<f64> = read_npy_as(fixture("mixed_chunked_gzip.npy")).unwrap();
    let x = from_hdf5::<f64>(fixture("mixed.h5"), "chunked_gzip", Some(ChunkSpec::PerAxis(vec![7, 5]))).unwrap();
    let finite: Vec<f64> = want.iter().copied().filter(|v| !v.is_nan()).collect();
    let nanmean = finite.iter().sum::<f64>() / finite.len() as f64;
    let got = x.nanmean().scalar().compute_on(&sched()).unwrap();
    assert!((got - nanmean).abs() < 1e-12, "{got} vs {nanmean}");
    // A NaN anywhere makes the plain sum NaN, as in NumPy.
    assert!(x.sum().scalar().compute_on(&sched()).unwrap().is_nan());
}

#[test]
fn many_files_concatenate_along_an_axis() {
    let paths: Vec<PathBuf> = (0..3).map(|d| fixture(&format!("day{d}.h5"))).collect();
    let x = from_hdf5_files::<f64, _>(&paths, "t", 0, None).unwrap();
    assert_eq!(x.shape(), &[4 + 5 + 6, 6]);
    let parts: Vec<ArrayD<f64>> = (0..3).map(|d| read_npy_as(fixture(&format!("day{d}_t.npy"))).unwrap()).collect();
    let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
    let want = ndarray::concatenate(ndarray::Axis(0), &views).unwrap();
    assert!(same(&x.compute_on(&sched()).unwrap(), &want));
    // Along the other axis the shapes do not line up: the error names the file.
    let err = from_hdf5_files::<f64, _>(&paths, "t", 1, None).unwrap_err();
    assert!(err.to_string().contains("day1.h5"), "{err}");
    assert!(matches!(from_hdf5_files::<f64, PathBuf>(Vec::new(), "t", 0, None), Err(ArrayError::Invalid(_))));
}

#[test]
fn kiln_writes_what_it_reads_back_in_any_blocks() {
    let path = scratch("roundtrip.h5");
    let _ = std::fs::remove_file(&path);
    let data = arange::<f64>(0.0, 120.0, 1.0, 120).reshape(&[12, 10]) / 4.0;
    let x = data.rechunk(ChunkSpec::PerAxis(vec![5, 4]));
    let written =
        x.to_hdf5_with(&path, "written/x", &Hdf5Options { deflate: Some(4) }).unwrap().compute_on(&sched()).unwrap();
    assert_eq!(written, 9); // 3 x 3 blocks
    let want = data.compute_on(&sched()).unwrap();
    let back = from_hdf5::<f64>(&path, "written/x", None).unwrap();
    assert_eq!(back.chunksize(), vec![12, 10]); // small storage chunks grown
    assert!(same(&back.compute_on(&sched()).unwrap(), &want));
    // HDF5 refuses to open a file for writing while this process has it open for reading.
    drop(back);
    // A second dataset in the same file keeps the first; the same name replaces it.
    let ints = from_array(ndarray::ArrayD::from_shape_fn(ndarray::IxDyn(&[7]), |i| i[0] as i32 - 3), 3);
    ints.to_hdf5(&path, "ints").unwrap().compute_on(&sched()).unwrap();
    ints.to_hdf5(&path, "ints").unwrap().compute_on(&sched()).unwrap();
    let ints_back = from_hdf5::<i32>(&path, "ints", Some(ChunkSpec::Uniform(2))).unwrap().compute_on(&sched()).unwrap();
    assert_eq!(ints_back.iter().copied().collect::<Vec<_>>(), vec![-3, -2, -1, 0, 1, 2, 3]);
    assert!(same(&from_hdf5::<f64>(&path, "written/x", None).unwrap().compute_on(&sched()).unwrap(), &want));
    // With h5py at hand (KILN_H5PY_PYTHON=/path/to/python), h5py reads it too.
    if let Ok(python) = std::env::var("KILN_H5PY_PYTHON") {
        let script = fixture("make_hdf5_fixtures.py");
        let out = std::process::Command::new(python).arg(script).arg("--check").arg(&path).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn bad_input_is_a_clear_error_naming_file_and_dataset() {
    let msg = |r: Result<kiln_array::Array<f64>, ArrayError>| match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    };
    let missing = msg(from_hdf5::<f64>(fixture("nope.h5"), "x", None));
    assert!(missing.contains("nope.h5") && missing.contains("does not exist"), "{missing}");
    let not_hdf5 = msg(from_hdf5::<f64>(fixture("mixed_scalar.npy"), "x", None));
    assert!(not_hdf5.contains("mixed_scalar.npy") && not_hdf5.contains("HDF5"), "{not_hdf5}");
    let truncated = msg(from_hdf5::<f64>(fixture("truncated.h5"), "chunked_gzip", None));
    assert!(truncated.contains("truncated.h5"), "{truncated}");
    let no_dataset = msg(from_hdf5::<f64>(fixture("mixed.h5"), "temperature", None));
    assert!(no_dataset.contains("mixed.h5") && no_dataset.contains("temperature"), "{no_dataset}");
    let wrong_type = msg(from_hdf5::<f64>(fixture("mixed.h5"), "group/sub/ints", None));
    assert!(wrong_type.contains("int64") && wrong_type.contains("not float64"), "{wrong_type}");
    let unsupported = msg(from_hdf5::<f64>(fixture("mixed.h5"), "shorts", None));
    assert!(unsupported.contains("shorts"), "{unsupported}");
    // A file that cannot be created: the error names it.
    let under_a_file = fixture("mixed_scalar.npy").join("out.h5");
    let Err(err) = arange::<f64>(0.0, 4.0, 1.0, 2).to_hdf5(&under_a_file, "x") else { panic!("expected an error") };
    let err = err.to_string();
    assert!(err.contains("out.h5"), "{err}");
    let path = scratch("bad-level.h5");
    let bad_level = arange::<f64>(0.0, 4.0, 1.0, 2).to_hdf5_with(&path, "y", &Hdf5Options { deflate: Some(12) });
    assert!(matches!(bad_level, Err(ArrayError::Invalid(_))));
    assert!(!path.exists(), "nothing is created for invalid options");
}

#[test]
fn uncompressed_datasets_read_directly_under_any_blocks() {
    // Uncompressed little-endian data is read with positioned reads (no HDF5 call); blocks that
    // straddle chunks, cover parts of them, or run along a contiguous dataset's rows must give
    // exactly the library's values.
    let path = scratch("direct.h5");
    let _ = std::fs::remove_file(&path);
    let data = (arange::<f64>(0.0, (37 * 23) as f64, 1.0, 100).reshape(&[37, 23]) * 0.5)
        .rechunk(ChunkSpec::PerAxis(vec![5, 4]));
    data.to_hdf5(&path, "chunked").unwrap().compute_on(&sched()).unwrap();
    let ints =
        arange::<i64>(0.0, (6 * 7 * 5) as f64, 1.0, 50).reshape(&[6, 7, 5]).rechunk(ChunkSpec::PerAxis(vec![4, 3, 5]));
    ints.to_hdf5(&path, "ints3d").unwrap().compute_on(&sched()).unwrap();
    let want = data.compute_on(&sched()).unwrap();
    let want_ints = ints.compute_on(&sched()).unwrap();
    for spec in [vec![5, 4], vec![7, 9], vec![37, 23], vec![1, 23], vec![36, 1], vec![3, 11]] {
        let x = from_hdf5::<f64>(&path, "chunked", Some(ChunkSpec::PerAxis(spec.clone()))).unwrap();
        assert!(same(&x.compute_on(&sched()).unwrap(), &want), "blocks {spec:?}");
    }
    for spec in [vec![4, 3, 5], vec![2, 5, 2], vec![6, 7, 5], vec![5, 2, 4]] {
        let x = from_hdf5::<i64>(&path, "ints3d", Some(ChunkSpec::PerAxis(spec.clone()))).unwrap();
        assert!(same(&x.compute_on(&sched()).unwrap(), &want_ints), "blocks {spec:?}");
    }
    // h5py's contiguous f32 dataset, read along rows in blocks that split every axis.
    reads_like_h5py::<f32>("contiguous_f32", ChunkSpec::PerAxis(vec![5, 3, 3]));
    // A file cut in half after it was opened: a block read whole from it is an error naming the
    // file, never a block with bytes it did not read.
    let x = from_hdf5::<f64>(&path, "chunked", Some(ChunkSpec::PerAxis(vec![5, 4]))).unwrap();
    let len = std::fs::metadata(&path).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(len / 2).unwrap();
    let err = x.compute_on(&sched()).unwrap_err().to_string();
    // A block of one whole chunk says "the file ends"; an edge block (part of a chunk) fails
    // in its positioned read_exact: which fails first depends on where the parallel writes put
    // the chunks.
    let direct = err.contains("the file ends") || err.contains("failed to fill whole buffer");
    assert!(err.contains("direct.h5") && direct, "{err}");
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn datasets_of_more_than_4096_chunks_read_directly() {
    // 65 x 65 = 4225 chunks: past the old cap of the direct path's chunk index (which HDF5 1.10
    // could only list in quadratic time). Read value for value, then with the file cut: the
    // direct path's own error shows the blocks were read without the library.
    let path = scratch("many_chunks.h5");
    let _ = std::fs::remove_file(&path);
    let data =
        arange::<f64>(0.0, (130 * 129) as f64, 1.0, 2000).reshape(&[130, 129]).rechunk(ChunkSpec::PerAxis(vec![2, 2]));
    data.to_hdf5(&path, "small_chunks").unwrap().compute_on(&sched()).unwrap();
    let want = data.compute_on(&sched()).unwrap();
    for spec in [vec![2, 2], vec![13, 43], vec![130, 129]] {
        let x = from_hdf5::<f64>(&path, "small_chunks", Some(ChunkSpec::PerAxis(spec.clone()))).unwrap();
        assert!(same(&x.compute_on(&sched()).unwrap(), &want), "blocks {spec:?}");
    }
    let x = from_hdf5::<f64>(&path, "small_chunks", Some(ChunkSpec::PerAxis(vec![130, 129]))).unwrap();
    let len = std::fs::metadata(&path).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(len / 2).unwrap();
    let err = x.compute_on(&sched()).unwrap_err().to_string();
    // The library's errors say "hdf5 file ..., dataset ...": this is the positioned read's.
    assert!(err.contains("reading hdf5 file") && err.contains("many_chunks.h5"), "{err}");
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn degenerate_arrays_and_names() {
    let path = scratch("degenerate.h5");
    let _ = std::fs::remove_file(&path);
    // A zero-length axis writes and reads back as an empty array.
    let empty = from_array(ndarray::ArrayD::<f64>::zeros(ndarray::IxDyn(&[0, 4])), 2);
    empty.to_hdf5(&path, "empty").unwrap().compute_on(&sched()).unwrap();
    let back = from_hdf5::<f64>(&path, "empty", None).unwrap();
    assert_eq!(back.shape(), &[0, 4]);
    assert_eq!(back.compute_on(&sched()).unwrap().len(), 0);
    assert_eq!(back.sum().scalar().compute_on(&sched()).unwrap(), 0.0);
    // An empty or missing dataset name is an error naming the file, not a panic.
    for name in ["", "/", "no/such/group/x"] {
        match from_hdf5::<f64>(&path, name, None) {
            Ok(_) => panic!("{name:?} opened"),
            Err(e) => assert!(e.to_string().contains("degenerate.h5"), "{name:?}: {e}"),
        }
    }
    std::fs::remove_file(&path).unwrap();
}

/// Reads `dataset` of `filters.h5` in several block shapes, directly (kiln decodes the chunks)
/// and through the library, and compares both with the values h5py wrote.
fn decodes_like_the_library<T: Element>(dataset: &str, specs: &[Vec<usize>]) {
    let file = fixture("filters.h5");
    let want: ArrayD<T> = read_npy_as(fixture(&format!("filters_{dataset}.npy"))).unwrap();
    let library = Hdf5ReadOptions { direct: false };
    let by_library = from_hdf5_with::<T>(&file, dataset, None, &library).unwrap().compute_on(&sched()).unwrap();
    assert!(same(&by_library, &want), "{dataset}: the library's read differs from what h5py wrote");
    let mut specs: Vec<Option<ChunkSpec>> = specs.iter().map(|s| Some(ChunkSpec::PerAxis(s.clone()))).collect();
    specs.push(None);
    for spec in specs {
        let x = from_hdf5::<T>(&file, dataset, spec.clone()).unwrap_or_else(|e| panic!("{dataset}: {e}"));
        let got = x.compute_on(&sched()).unwrap_or_else(|e| panic!("{dataset} in blocks {spec:?}: {e}"));
        assert!(same(&got, &want), "{dataset} in blocks {spec:?}: kiln read\n{got:?}\nh5py wrote\n{want:?}");
    }
}

#[test]
fn gzip_levels_and_shuffle_decode_like_the_library_in_any_blocks() {
    // Chunks of 7 x 5 over 23 x 17: the last row and column of chunks are partial edge chunks,
    // stored whole (padded) and compressed whole.
    for name in ["gzip1", "gzip9"] {
        decodes_like_the_library::<f64>(name, &[vec![7, 5], vec![23, 17], vec![4, 6], vec![1, 17], vec![10, 3]]);
    }
    decodes_like_the_library::<i32>("gzip0_i32", &[vec![4, 4], vec![3, 5], vec![11, 9]]);
    decodes_like_the_library::<f32>("shuffle_gzip_f32", &[vec![2, 8, 4], vec![3, 7, 5], vec![1, 20, 9]]);
    decodes_like_the_library::<i64>("shuffle_gzip_i64", &[vec![8], vec![5], vec![50]]);
    decodes_like_the_library::<f64>("shuffle_only", &[vec![3, 3], vec![4, 2], vec![10, 3]]);
}

#[test]
fn checksums_skipped_filters_and_unwritten_chunks_decode_like_the_library() {
    decodes_like_the_library::<f64>("fletcher_gzip", &[vec![5, 5], vec![13, 10], vec![6, 4]]);
    decodes_like_the_library::<i32>("fletcher_only_i32", &[vec![4, 3], vec![9, 7], vec![2, 5]]);
    // Chunks stored with shuffle, gzip or both skipped (their filter masks) beside normal ones.
    decodes_like_the_library::<f64>("masked", &[vec![4, 4], vec![8, 8], vec![3, 5]]);
    // Chunks never written read as the fill value, whole or in part of a block.
    decodes_like_the_library::<f64>("unwritten_fill", &[vec![4, 4], vec![12, 12], vec![5, 3], vec![2, 12]]);
    decodes_like_the_library::<i64>("unwritten_zero_i64", &[vec![4, 4], vec![8, 9], vec![3, 7]]);
    // A filter kiln does not decode (scale-offset) is read by the library.
    decodes_like_the_library::<i32>("scaleoffset_i32", &[vec![4, 4], vec![10, 10], vec![3, 7]]);
}

#[test]
fn corrupt_compressed_chunks_are_errors_naming_file_dataset_and_chunk() {
    let file = fixture("filters.h5");
    // Every block but the one holding the corrupt chunk reads; that one fails, saying where.
    let x = from_hdf5::<f64>(&file, "corrupt", Some(ChunkSpec::PerAxis(vec![4, 4]))).unwrap();
    let top = [Idx::Slice { start: Some(0), stop: Some(4), step: 1 }, Idx::full()];
    let fine = x.slice(&top).compute_on(&sched()).unwrap();
    assert_eq!(fine.shape(), &[4, 8]);
    let err = x.compute_on(&sched()).unwrap_err().to_string();
    for part in ["filters.h5", "dataset corrupt", "chunk at [4, 4]", "deflate"] {
        assert!(err.contains(part), "missing {part:?} in: {err}");
    }
    // A block that only partly covers the chunk fails the same way.
    let y = from_hdf5::<f64>(&file, "corrupt", Some(ChunkSpec::PerAxis(vec![3, 3]))).unwrap();
    let err = y.compute_on(&sched()).unwrap_err().to_string();
    assert!(err.contains("chunk at [4, 4]") && err.contains("filters.h5"), "{err}");
    let z = from_hdf5::<f64>(&file, "bad_checksum", None).unwrap();
    let err = z.compute_on(&sched()).unwrap_err().to_string();
    for part in ["filters.h5", "dataset bad_checksum", "chunk at [0, 4]", "fletcher32"] {
        assert!(err.contains(part), "missing {part:?} in: {err}");
    }
    // The library refuses them too (an error, not a panic).
    let library = Hdf5ReadOptions { direct: false };
    for name in ["corrupt", "bad_checksum"] {
        let err = from_hdf5_with::<f64>(&file, name, None, &library).unwrap().compute_on(&sched()).unwrap_err();
        assert!(err.to_string().contains("filters.h5"), "{err}");
    }
}
