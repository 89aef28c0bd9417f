//! Directories of `.npy` blocks: round trips for every dtype and chunking, the seed expression
//! with blocks read again, and every malformed directory giving an error naming the file.

use kiln_array::npy::write_npy;
use kiln_array::npy_blocks::from_npy_blocks;
use kiln_array::random::RandomState;
use kiln_array::{Array, from_array};
use kiln_graph::collection::{REREAD_SHARE, graph_of, optimize_for};
use kiln_graph::{Collection, ComputeError};
use kiln_local::{LocalScheduler, Progress};
use ndarray::{ArrayD, IxDyn};

fn sched() -> LocalScheduler {
    LocalScheduler::threads(2).with_progress(Progress::Never)
}

fn temp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-npy-blocks-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn round_trips_keep_values_dtypes_and_chunks() {
    let dir = temp("roundtrip");
    let values = ArrayD::from_shape_fn(IxDyn(&[7, 5, 3]), |i| (i[0] * 100 + i[1] * 10 + i[2]) as f64 - 250.5);
    for chunks in [vec![vec![7], vec![5], vec![3]], vec![vec![3, 3, 1], vec![2, 3], vec![1, 1, 1]]] {
        let x = from_array(values.clone(), chunks.clone());
        assert_eq!(
            x.to_npy_blocks(&dir).unwrap().compute_on(&sched()).unwrap(),
            x.numblocks().iter().product::<usize>()
        );
        let back = from_npy_blocks::<f64>(&dir).unwrap();
        assert_eq!(back.chunks(), chunks.as_slice());
        assert_eq!(back.compute_on(&sched()).unwrap(), values);
    }
    // Other element types, one and two axes.
    let ints = ArrayD::from_shape_fn(IxDyn(&[9]), |i| i[0] as i64 * -3);
    from_array(ints.clone(), vec![4]).to_npy_blocks(&dir).unwrap().compute_on(&sched()).unwrap();
    assert_eq!(from_npy_blocks::<i64>(&dir).unwrap().compute_on(&sched()).unwrap(), ints);
    let small = ArrayD::from_shape_fn(IxDyn(&[4, 6]), |i| (i[0] + i[1]) as i32);
    from_array(small.clone(), vec![3, 4]).to_npy_blocks(&dir).unwrap().compute_on(&sched()).unwrap();
    assert_eq!(from_npy_blocks::<i32>(&dir).unwrap().compute_on(&sched()).unwrap(), small);
    let floats = small.mapv(|v| v as f32 / 3.0);
    from_array(floats.clone(), vec![2, 6]).to_npy_blocks(&dir).unwrap().compute_on(&sched()).unwrap();
    assert_eq!(from_npy_blocks::<f32>(&dir).unwrap().compute_on(&sched()).unwrap(), floats);
    // An axis of length zero.
    let empty = ArrayD::<f64>::zeros(IxDyn(&[0, 3]));
    from_array(empty.clone(), vec![2, 2]).to_npy_blocks(&dir).unwrap().compute_on(&sched()).unwrap();
    let back = from_npy_blocks::<f64>(&dir).unwrap();
    assert_eq!(back.shape(), &[0, 3]);
    assert_eq!(back.compute_on(&sched()).unwrap(), empty);
    let mask = small.mapv(|v| v % 3 == 0);
    from_array(mask.clone(), vec![4, 5]).to_npy_blocks(&dir).unwrap().compute_on(&sched()).unwrap();
    assert_eq!(from_npy_blocks::<bool>(&dir).unwrap().compute_on(&sched()).unwrap(), mask);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A local scheduler with a memory target, so that `compute_on` plans re-reads.
struct WithTarget(LocalScheduler, u64);

impl kiln_graph::Scheduler for WithTarget {
    fn compute(&self, g: &kiln_graph::Graph, o: &[kiln_graph::TaskId]) -> Result<Vec<kiln_graph::Value>, ComputeError> {
        self.0.compute(g, o)
    }
    fn name(&self) -> String {
        self.0.name()
    }
    fn memory_target(&self) -> Option<u64> {
        Some(self.1)
    }
}

#[test]
fn the_seed_expression_over_npy_blocks_reads_blocks_again_under_a_target() {
    let dir = temp("seed");
    let n = 10;
    RandomState::new(5).random(&[3 * n, 3 * n], vec![3, 3]).to_npy_blocks(&dir).unwrap().compute_on(&sched()).unwrap();
    let x: Array<f64> = from_npy_blocks(&dir).unwrap();
    let seed = |a: &Array<f64>| (a + &a.t() - &a.mean_axis(0)).std();
    let in_memory = from_array(x.compute_on(&sched()).unwrap(), vec![3, 3]);
    let want = seed(&in_memory).scalar().compute_on(&sched()).unwrap();
    // Blocks of 72 bytes; cap n of them.
    let target = 72 * n as u64 * REREAD_SHARE;
    let (g, outs) = graph_of(&seed(&x)).unwrap();
    let plan = optimize_for(g, outs, Some(target)).unwrap().reread.expect("holding exceeds n blocks");
    assert!(plan.extra_reads > 0 && plan.held_after <= 72 * n as u64, "{plan:?}");
    let got = seed(&x).scalar().compute_on(&WithTarget(sched(), target)).unwrap();
    assert!((got - want).abs() <= 1e-12 * want.abs(), "{got} vs {want}");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn error_of(dir: &std::path::Path) -> String {
    match from_npy_blocks::<f64>(dir) {
        Ok(_) => panic!("{} opened", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn malformed_directories_name_the_file() {
    let dir = temp("bad");
    // Missing directory, then an empty one.
    assert!(error_of(&dir).contains(&dir.display().to_string()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("notes.txt"), "not a block").unwrap();
    assert!(error_of(&dir).contains("holds no block files"));

    let block = |r: usize, c: usize| ArrayD::from_elem(IxDyn(&[r, c]), 1.0f64);
    // A hole in the grid.
    write_npy(dir.join("0.0.npy"), &block(2, 2)).unwrap();
    write_npy(dir.join("1.1.npy"), &block(2, 2)).unwrap();
    write_npy(dir.join("0.1.npy"), &block(2, 2)).unwrap();
    let e = error_of(&dir);
    assert!(e.contains("1.0.npy") && e.contains("is missing"), "{e}");
    // A block whose shape does not fit its row and column.
    write_npy(dir.join("1.0.npy"), &block(2, 3)).unwrap();
    let e = error_of(&dir);
    assert!(e.contains("1.0.npy") && e.contains("[2, 3]"), "{e}");
    // Another element type.
    write_npy(dir.join("1.0.npy"), &ArrayD::from_elem(IxDyn(&[2, 2]), 1i64)).unwrap();
    let e = error_of(&dir);
    assert!(e.contains("1.0.npy") && e.contains("int64"), "{e}");
    // Not an .npy file at all.
    std::fs::write(dir.join("1.0.npy"), b"hello, world").unwrap();
    let e = error_of(&dir);
    assert!(e.contains("1.0.npy") && e.contains("not an .npy file"), "{e}");
    // A stray file far outside the grid: an error naming the first hole, not an allocation of a
    // slot per block of a 10^9-row grid.
    write_npy(dir.join("999999999.0.npy"), &block(2, 2)).unwrap();
    let e = error_of(&dir);
    assert!(e.contains("2.0.npy") && e.contains("is missing"), "{e}");
    std::fs::remove_file(dir.join("999999999.0.npy")).unwrap();
    write_npy(dir.join(format!("{}.0.npy", usize::MAX)), &block(2, 2)).unwrap();
    assert!(error_of(&dir).contains("is missing"));
    std::fs::remove_file(dir.join(format!("{}.0.npy", usize::MAX))).unwrap();
    // Two names for one block.
    write_npy(dir.join("01.0.npy"), &block(2, 2)).unwrap();
    assert!(error_of(&dir).contains("two files for the same block"));
    std::fs::remove_file(dir.join("01.0.npy")).unwrap();
    // A name with another number of indices.
    write_npy(dir.join("1.0.npy"), &block(2, 2)).unwrap();
    write_npy(dir.join("0.0.0.npy"), &block(2, 2)).unwrap();
    assert!(error_of(&dir).contains("another number of indices"));
    std::fs::remove_file(dir.join("0.0.0.npy")).unwrap();

    // Opens now; a block truncated afterwards fails its task with the file named.
    let x = from_npy_blocks::<f64>(&dir).unwrap();
    assert_eq!(x.sum().scalar().compute_on(&sched()).unwrap(), 16.0);
    let path = dir.join("1.1.npy");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 8]).unwrap();
    match x.sum().scalar().compute_on(&sched()) {
        Err(ComputeError::Task { error, .. }) => {
            let e = error.to_string();
            assert!(e.contains("1.1.npy") && e.contains("the header says"), "{e}");
        }
        other => panic!("a truncated block computed: {other:?}"),
    }
    // A block rewritten with another shape after opening.
    write_npy(&path, &block(2, 1)).unwrap();
    let e = format!("{:?}", x.sum().scalar().compute_on(&sched()).unwrap_err());
    assert!(e.contains("1.1.npy") && e.contains("opened with"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
