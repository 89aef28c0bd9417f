//! Matrix products against ndarray's.

use kiln_array::{ArrayError, from_array, ones};
use kiln_graph::Collection;
use kiln_local::{LocalScheduler, Progress};
use ndarray::{Array2, ArrayD, Ix1, Ix2, IxDyn};

fn sched() -> LocalScheduler {
    LocalScheduler::threads(2).with_progress(Progress::Never)
}

fn matrix(r: usize, c: usize, seed: f64) -> Array2<f64> {
    Array2::from_shape_fn((r, c), |(i, j)| ((i * 7 + j * 3) as f64 * seed).sin())
}

fn close(a: &ArrayD<f64>, b: &ArrayD<f64>) {
    assert_eq!(a.shape(), b.shape());
    for (x, y) in a.iter().zip(b.iter()) {
        assert!((x - y).abs() < 1e-9 * y.abs().max(1.0), "{x} vs {y}");
    }
}

#[test]
fn blocked_products_match_ndarray() {
    let (a, b) = (matrix(37, 53, 0.3), matrix(53, 29, 0.7));
    let want = a.dot(&b).into_dyn();
    // Mismatched chunks along the shared axis are aligned by rechunking.
    for (ca, cb) in [([10, 10], [10, 10]), ([7, 20], [9, 4]), ([37, 53], [53, 29]), ([5, 3], [4, 30])] {
        let x = from_array(a.clone().into_dyn(), ca);
        let y = from_array(b.clone().into_dyn(), cb);
        close(&x.dot(&y).compute_on(&sched()).unwrap(), &want);
    }
}

#[test]
fn many_blocks_along_the_shared_axis_use_a_sum_tree() {
    let (a, b) = (matrix(6, 100, 0.11), matrix(100, 5, 0.13));
    let x = from_array(a.clone().into_dyn(), [6, 3]);
    let y = from_array(b.clone().into_dyn(), [3, 5]);
    close(&x.dot(&y).compute_on(&sched()).unwrap(), &a.dot(&b).into_dyn());
}

#[test]
fn the_seed_product_with_fused_operands() {
    // x.dot(x.T + 1) - x.mean() on the seeds' 15 x 15 ones in 5 x 5 blocks.
    let x = ones::<f64>(&[15, 15], [5, 5]);
    let y = &x.dot(&(&x.t() + 1.0)) - &x.mean();
    let got = y.compute_on(&sched()).unwrap();
    assert_eq!(got, ArrayD::from_elem(IxDyn(&[15, 15]), 29.0));
    assert_eq!(y.std().scalar().compute_on(&sched()).unwrap(), 0.0);
}

#[test]
fn vectors_follow_numpy_dot() {
    let m = matrix(8, 6, 0.5);
    let v = ndarray::Array1::from_shape_fn(6, |i| i as f64 - 2.0);
    let w = ndarray::Array1::from_shape_fn(8, |i| 1.0 / (i as f64 + 1.0));
    let (xm, xv, xw) = (
        from_array(m.clone().into_dyn(), [3, 4]),
        from_array(v.clone().into_dyn(), 4),
        from_array(w.clone().into_dyn(), 5),
    );
    let mv = xm.dot(&xv).compute_on(&sched()).unwrap().into_dimensionality::<Ix1>().unwrap();
    assert!(mv.iter().zip(m.dot(&v).iter()).all(|(a, b)| (a - b).abs() < 1e-12));
    let wm = xw.dot(&xm).compute_on(&sched()).unwrap().into_dimensionality::<Ix1>().unwrap();
    assert!(wm.iter().zip(w.dot(&m).iter()).all(|(a, b)| (a - b).abs() < 1e-12));
    let vv = xv.dot(&xv).scalar().compute_on(&sched()).unwrap();
    assert!((vv - v.dot(&v)).abs() < 1e-12);
}

#[test]
fn integer_products_and_errors() {
    let a = Array2::from_shape_fn((4, 5), |(i, j)| (i * 5 + j) as i64 - 7);
    let x = from_array(a.clone().into_dyn(), [3, 2]);
    let got = x.dot(&x.t()).compute_on(&sched()).unwrap().into_dimensionality::<Ix2>().unwrap();
    assert_eq!(got, a.dot(&a.t()));
    let err = x.dot(&x).check().unwrap_err();
    assert!(matches!(err, ArrayError::Shape(_)), "{err}");
    assert!(err.to_string().contains("not aligned"), "{err}");
}

#[test]
fn tensordot_matches_a_direct_sum() {
    use kiln_array::tensordot;
    let a = ndarray::Array3::from_shape_fn((3, 4, 5), |(i, j, k)| (i * 20 + j * 5 + k) as f64 * 0.1).into_dyn();
    let b = ndarray::Array3::from_shape_fn((5, 4, 2), |(i, j, k)| ((i + 2 * j + 3 * k) as f64).cos()).into_dyn();
    let (x, y) = (from_array(a.clone(), [2, 3, 2]), from_array(b.clone(), [2, 2, 1]));
    // Contract a's axes (1, 2) with b's axes (1, 0): result (3, 2).
    let got = tensordot(&x, &y, &[1, 2], &[1, 0]).compute_on(&sched()).unwrap();
    assert_eq!(got.shape(), &[3, 2]);
    for i in 0..3 {
        for l in 0..2 {
            let want: f64 =
                (0..4).flat_map(|j| (0..5).map(move |k| (j, k))).map(|(j, k)| a[[i, j, k]] * b[[k, j, l]]).sum();
            assert!((got[[i, l]] - want).abs() < 1e-9, "{} vs {want}", got[[i, l]]);
        }
    }
    let err = tensordot(&x, &y, &[0], &[0]).check().unwrap_err();
    assert!(matches!(&err, ArrayError::Shape(m) if m.contains("axes [0] of")), "{err}");
}
