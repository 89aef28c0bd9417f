//! Edges where sizes and indices overflow machine integers: the answers NumPy gives, or a clear
//! error, never a wrapped-around result.

use kiln_array::{ArrayError, ChunkSpec, from_array, idx, ones};
use kiln_graph::Collection;
use kiln_local::{LocalScheduler, Progress};
use ndarray::{ArrayD, IxDyn};

fn sched() -> LocalScheduler {
    LocalScheduler::threads(2).with_progress(Progress::Never)
}

#[test]
fn the_largest_slice_steps_take_one_element_as_in_numpy() {
    // NumPy: np.arange(5.)[::sys.maxsize] == [0.], np.arange(5.)[::-sys.maxsize - 1] == [4.]
    let x = from_array(ArrayD::from_shape_vec(IxDyn(&[5]), vec![0.0, 1.0, 2.0, 3.0, 4.0]).unwrap(), 2);
    let forward = x.slice(&idx![..;isize::MAX]).compute_on(&sched()).unwrap();
    assert_eq!(forward.as_slice().unwrap(), &[0.0]);
    let backward = x.slice(&idx![..;isize::MIN]).compute_on(&sched()).unwrap();
    assert_eq!(backward.as_slice().unwrap(), &[4.0]);
}

#[test]
fn a_shape_too_large_to_count_in_bytes_is_refused_not_wrapped() {
    let x = ones::<f64>(&[1 << 32, 1 << 32], 1 << 20);
    match x.check() {
        Err(ArrayError::Shape(m)) => assert!(m.contains("more than 2**64 bytes"), "{m}"),
        other => panic!("expected a shape error, got {other:?}"),
    }
    // Sizes of large but countable arrays are exact, and never wrap to something small.
    let big = ones::<f64>(&[1 << 30, 1 << 30], 1 << 15);
    assert!(big.check().is_ok());
    assert_eq!(big.nbytes(), 8usize << 60);
    // An empty array stays valid however long its other axes are (NumPy: np.ones((2**62, 0))).
    let empty = ones::<f64>(&[1 << 62, 4, 0], [1 << 40, 4, 1]);
    assert!(empty.check().is_ok(), "{:?}", empty.check());
    assert_eq!((empty.size(), empty.nbytes()), (0, 0));
}

#[test]
fn explicit_chunks_whose_sum_overflows_are_refused() {
    let chunks = ChunkSpec::Explicit(vec![vec![usize::MAX, 2]]);
    let x = from_array(ArrayD::<f64>::zeros(IxDyn(&[1])), chunks);
    match x.check() {
        Err(ArrayError::Chunks(m)) => assert!(m.contains("add up to more than"), "{m}"),
        other => panic!("expected a chunks error, got {other:?}"),
    }
}
