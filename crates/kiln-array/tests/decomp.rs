//! TSQR, SVD and randomized SVD against dense factorizations.

use faer::Mat;
use kiln_array::linalg::{qr, svd, svd_compressed};
use kiln_array::random::RandomState;
use kiln_array::{Array, ArrayError, ones};
use kiln_graph::Collection;
use kiln_local::{LocalScheduler, Progress};
use ndarray::{Array2, ArrayD, Ix1, Ix2};

fn sched() -> LocalScheduler {
    LocalScheduler::threads(2).with_progress(Progress::Never)
}

fn get2(a: &Array<f64>) -> Array2<f64> {
    a.compute_on(&sched()).unwrap().into_dimensionality::<Ix2>().unwrap()
}

fn dense_singular_values(a: &Array2<f64>) -> Vec<f64> {
    let m = Mat::from_fn(a.nrows(), a.ncols(), |i, j| a[[i, j]]);
    let svd = m.thin_svd().unwrap();
    let s = svd.S().column_vector();
    (0..s.nrows()).map(|i| s[i]).collect()
}

fn max_abs_diff(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    assert_eq!(a.shape(), b.shape());
    a.iter().zip(b.iter()).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

#[test]
fn tsqr_reconstructs_and_is_orthonormal() {
    let x = RandomState::new(1).normal(0.0, 1.0, &[200, 8], [50, 8]);
    let (q, r) = qr(&x);
    assert_eq!((q.shape(), r.shape()), (&[200usize, 8][..], &[8usize, 8][..]));
    let (a, q, r) = (get2(&x), get2(&q), get2(&r));
    assert!(max_abs_diff(&q.dot(&r), &a) < 1e-12);
    assert!(max_abs_diff(&q.t().dot(&q), &Array2::eye(8)) < 1e-12);
    assert!((0..8).all(|i| (0..i).all(|j| r[[i, j]].abs() < 1e-14)), "r is upper triangular");
}

#[test]
fn svd_matches_the_dense_singular_values() {
    let x = RandomState::new(2).random(&[300, 12], [64, 5]);
    let (u, s, vt) = svd(&x);
    let (a, u, vt) = (get2(&x), get2(&u), get2(&vt));
    let s = s.compute_on(&sched()).unwrap().into_dimensionality::<Ix1>().unwrap();
    let dense = dense_singular_values(&a);
    for (got, want) in s.iter().zip(&dense) {
        assert!((got - want).abs() < 1e-10 * want.max(1.0), "{got} vs {want}");
    }
    assert!(s.windows(2).into_iter().all(|w| w[0] >= w[1]), "decreasing");
    let rebuilt = (&u * &s).dot(&vt);
    assert!(max_abs_diff(&rebuilt, &a) < 1e-10);
}

#[test]
fn wide_arrays_and_the_seed_example() {
    let x = RandomState::new(3).random(&[6, 40], [3, 10]);
    let (u, s, vt) = svd(&x);
    assert_eq!((u.shape(), s.shape(), vt.shape()), (&[6usize, 6][..], &[6usize][..], &[6usize, 40][..]));
    let s = s.compute_on(&sched()).unwrap();
    let rebuilt = (&get2(&u) * &s.into_dimensionality::<Ix1>().unwrap()).dot(&get2(&vt));
    assert!(max_abs_diff(&rebuilt, &get2(&x)) < 1e-10);
    // The seeds: linalg.svd(x + x.T - x.mean()) on a 15 x 15 array in 5 x 5 blocks.
    let x = RandomState::new(4).random(&[15, 15], [5, 5]);
    let y = &(&x + &x.t()) - &x.mean();
    let (u, s, vt) = svd(&y);
    let s = s.compute_on(&sched()).unwrap().into_dimensionality::<Ix1>().unwrap();
    let rebuilt = (&get2(&u) * &s).dot(&get2(&vt));
    assert!(max_abs_diff(&rebuilt, &get2(&y)) < 1e-10);
}

#[test]
fn randomized_svd_recovers_a_low_rank_matrix() {
    let rs = RandomState::new(5);
    let left = rs.normal(0.0, 1.0, &[400, 4], [100, 4]);
    let right = RandomState::new(6).normal(0.0, 1.0, &[4, 60], [4, 30]);
    let a = left.dot(&right);
    let (u, s, vt) = svd_compressed(&a, 4, 6, 2, 42);
    let s = s.compute_on(&sched()).unwrap().into_dimensionality::<Ix1>().unwrap();
    let dense = dense_singular_values(&get2(&a));
    for (got, want) in s.iter().zip(&dense[..4]) {
        assert!((got - want).abs() < 1e-8 * want, "{got} vs {want}");
    }
    let rebuilt = (&get2(&u) * &s).dot(&get2(&vt));
    assert!(max_abs_diff(&rebuilt, &get2(&a)) < 1e-8 * dense[0]);
}

#[test]
fn bad_input_is_reported() {
    let cube = ones::<f64>(&[4, 4, 4], 2);
    let err = qr(&cube).0.check().unwrap_err();
    assert!(matches!(&err, ArrayError::Shape(m) if m.contains("2-d array, got 3-d")), "{err}");
    let with_nan = kiln_array::from_array(ArrayD::from_elem(ndarray::IxDyn(&[4, 2]), f64::NAN), 2);
    let err = svd(&with_nan).1.compute_on(&sched()).unwrap_err().to_string();
    assert!(err.contains("NaN"), "{err}");
    let err = svd_compressed(&ones::<f64>(&[5, 5], 5), 9, 1, 0, 0).0.check().unwrap_err();
    assert!(matches!(&err, ArrayError::Invalid(m) if m.contains("k=9 for [5, 5]")), "{err}");
}

#[test]
fn blocked_cholesky_matches_the_dense_factor() {
    use kiln_array::linalg::cholesky;
    // A symmetric positive definite matrix: x x^T + n I.
    let x = RandomState::new(9).normal(0.0, 1.0, &[23, 23], [7, 23]);
    let spd = &x.dot(&x.t()) + &(kiln_array::eye::<f64>(23, 7) * 23.0);
    let a = get2(&spd);
    for chunk in [23usize, 7, 5] {
        let l = get2(&cholesky(&spd.rechunk(chunk)));
        assert!((0..23).all(|i| (i + 1..23).all(|j| l[[i, j]] == 0.0)), "lower triangular");
        assert!(max_abs_diff(&l.dot(&l.t()), &a) < 1e-9, "chunk {chunk}");
    }
    let not_spd = kiln_array::eye::<f64>(4, 2) * -1.0;
    let err = cholesky(&not_spd).compute_on(&sched()).unwrap_err().to_string();
    assert!(err.contains("not positive definite"), "{err}");
    let err = cholesky(&ones::<f64>(&[3, 4], 2)).check().unwrap_err();
    assert!(matches!(&err, ArrayError::Shape(m) if m.contains("square") && m.contains("[3, 4]")), "{err}");
}
