//! kiln-array against NumPy: every expected value here was computed by NumPy
//! (`tests/fixtures/make_fixtures.py`) and committed as `.npy`. Inputs are chunked unevenly so
//! that every operation crosses block boundaries.

// NumPy slices such as `5:1:-1` are written as ranges that Rust considers empty.
#![allow(clippy::reversed_empty_ranges)]

use kiln_graph::Collection;
use std::path::PathBuf;

use kiln_array::linalg::{cholesky, qr, svd, svd_compressed};
use kiln_array::npy::read_npy_as;
use kiln_array::overlap::Boundary;
use kiln_array::{
    Array, ChunkSpec, Element, Reduce, arange, concatenate, eye, from_array, full, idx, linspace, stack, tensordot,
    where_,
};
use kiln_local::{LocalScheduler, Progress};
use ndarray::ArrayD;

fn fixture<T: Element>(name: &str) -> ArrayD<T> {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "fixtures", &format!("{name}.npy")].iter().collect();
    read_npy_as::<T>(&path).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

fn chunked<T: Element>(name: &str) -> Array<T> {
    let a = fixture::<T>(name);
    let chunks: Vec<usize> = a.shape().iter().map(|&d| d.div_ceil(3).max(1)).collect();
    from_array(a, chunks)
}

/// Rows of 7 as (3, 2, 2), columns of 5 as (2, 3); the 3x4x5 cube as (2, 1), (1, 3), (2, 2, 1).
fn irregular<T: Element>(name: &str) -> Array<T> {
    let a = fixture::<T>(name);
    let chunks = match a.shape() {
        [7, 5] => vec![vec![3, 2, 2], vec![2, 3]],
        [3, 4, 5] => vec![vec![2, 1], vec![1, 3], vec![2, 2, 1]],
        [13, 4] => vec![vec![5, 4, 4], vec![4]],
        [4, 4] => vec![vec![3, 1], vec![3, 1]],
        [5, 4] => vec![vec![2, 3], vec![1, 3]],
        [5] => vec![vec![2, 3]],
        other => panic!("no irregular chunking for {other:?}"),
    };
    from_array(a, ChunkSpec::Explicit(chunks))
}

fn run<T: Element>(x: &Array<T>) -> ArrayD<T> {
    x.compute_on(&LocalScheduler::threads(2).with_progress(Progress::Never)).unwrap_or_else(|e| panic!("{x}: {e}"))
}

fn close_f64(got: &ArrayD<f64>, name: &str) {
    let want = fixture::<f64>(name);
    assert_eq!(got.shape(), want.shape(), "{name}: shape");
    for (g, w) in got.iter().zip(want.iter()) {
        let ok = (g.is_nan() && w.is_nan()) || g == w || (g - w).abs() <= 1e-12 * w.abs().max(1.0);
        assert!(ok, "{name}: got {g}, want {w}\ngot  {got}\nwant {want}");
    }
}

fn exact<T: Element + PartialEq>(got: &ArrayD<T>, name: &str) {
    let want = fixture::<T>(name);
    assert_eq!(got, &want, "{name}");
}

#[test]
fn broadcasting_and_true_division() {
    let (a, row, col) = (chunked::<f64>("in_a"), chunked::<f64>("in_row"), chunked::<i32>("in_col"));
    close_f64(&run(&(&a + &row)), "add_row");
    close_f64(&run(&(&a * &col.astype::<f64>())), "mul_col");
    close_f64(&run(&(&col.astype::<f64>() + &row)), "col_plus_row");
    let ints = chunked::<i64>("in_ints");
    let divisor = &col.astype::<i64>() + 10;
    close_f64(&run(&(&ints / &divisor)), "ints_truediv");
    exact(&run(&ints.floor_divide(4)), "ints_floor_div");
}

#[test]
fn reductions_with_axes_keepdims_and_ddof() {
    let c = chunked::<f64>("in_clean");
    close_f64(&run(&c.sum()), "clean_sum");
    close_f64(&run(&c.sum_axis(0)), "clean_sum_axis0");
    close_f64(&run(&c.sum_with(&Reduce::axis(1).keepdims(true))), "clean_sum_axis1_keepdims");
    close_f64(&run(&c.mean_axis(1)), "clean_mean_axis1");
    close_f64(&run(&c.var_with(&Reduce::default().ddof(1.0))), "clean_var_ddof1");
    close_f64(&run(&c.std_with(&Reduce::axis(0).ddof(1.0))), "clean_std_axis0_ddof1");
    close_f64(&run(&c.std()), "clean_std");
    close_f64(&run(&c.prod_with(&Reduce::axis(0))), "clean_prod_axis0");
    for split in [2, 3, 16] {
        close_f64(&run(&c.std_with(&Reduce::default().split_every(split))), "clean_std");
    }
}

#[test]
fn integer_and_bool_reductions_follow_numpy_dtypes() {
    let ints = chunked::<i64>("in_ints");
    exact(&run(&ints.sum()), "ints_sum");
    close_f64(&run(&ints.mean_axis(0)), "ints_mean_axis0");
    exact(&run(&ints.argmax_axis(Some(0))), "ints_argmax_axis0");
    exact(&run(&ints.argmin()), "ints_argmin");
    exact(&run(&ints.max_axis(1)), "ints_max_axis1");
    // int32 and bool sums are int64, as in NumPy.
    exact(&run(&chunked::<i32>("in_col").sum()), "col_sum");
    exact(&run(&chunked::<f64>("in_clean").gt(0.0).sum()), "bool_sum");
}

#[test]
fn nan_handling() {
    let a = chunked::<f64>("in_a");
    close_f64(&run(&a.sum()), "a_sum");
    close_f64(&run(&a.max_axis(0)), "a_max_axis0");
    close_f64(&run(&a.nansum()), "a_nansum");
    close_f64(&run(&a.mean_with(&Reduce::axis(0).skipna(true))), "a_nanmean_axis0");
    close_f64(&run(&a.nanmax()), "a_nanmax");
    close_f64(&run(&a.min_with(&Reduce::axis(1).skipna(true))), "a_nanmin_axis1");
    close_f64(&run(&a.nanstd()), "a_nanstd");
    exact(&run(&a.argmax()), "a_argmax");
    exact(&run(&a.nanargmax()), "a_nanargmax");
    exact(&run(&a.isnan().any_with(&Reduce::axis(1))), "a_isnan_any_axis1");
}

#[test]
fn slicing_like_numpy() {
    let a = chunked::<f64>("in_a");
    close_f64(&run(&a.slice(&idx![..;-2, 1..-1])), "a_rev2_mid");
    close_f64(&run(&a.slice(&idx![5..1;-1])), "a_5_to_1_rev");
    close_f64(&run(&a.slice(&idx![-3..;1, ..;2])), "a_last3_step2");
    close_f64(&run(&a.slice(&idx![2])), "a_row2");
    close_f64(&run(&a.slice(&idx![.., -1])), "a_col_neg1");
    close_f64(&run(&a.slice(&idx![5..2])), "a_empty_slice");
}

#[test]
fn empty_arrays() {
    let e = from_array(fixture::<f64>("in_empty"), [2, 2]);
    close_f64(&run(&e.sum_axis(0)), "empty_sum_axis0");
    close_f64(&run(&e.mean()), "empty_mean");
    assert!(e.max().error().is_some(), "max of an empty array has no identity");
}

#[test]
fn elementwise_functions() {
    let c = chunked::<f64>("in_clean");
    close_f64(&run(&where_(&c.gt(0.0), &c, &-&c)), "clean_where");
    close_f64(&run(&c.clip(-2.0, 3.0)), "clean_clip");
    close_f64(&run(&c.sin().exp()), "clean_exp_sin");
    close_f64(&run(&(&c / 3.0).round()), "clean_round");
    let sq = c.slice(&idx![..5, ..5]);
    close_f64(&run(&(&sq + &sq.t())), "transpose_add");
}

// ---- Every public operation against NumPy, on irregular chunks (issue 16).

#[test]
fn arithmetic_and_comparisons_follow_numpy_with_nans() {
    for (a, b) in [(irregular::<f64>("in_a"), irregular::<f64>("in_b")), (chunked("in_a"), chunked("in_b"))] {
        close_f64(&run(&(&a - &b)), "ab_sub");
        close_f64(&run(&(&a * &b)), "ab_mul");
        close_f64(&run(&(&a / &b)), "ab_div");
        close_f64(&run(&-&a), "a_neg");
        // NaN against anything is false, except for `!=`.
        exact(&run(&a.gt(&b)), "ab_gt");
        exact(&run(&a.ge(&b)), "ab_ge");
        exact(&run(&a.lt(&b)), "ab_lt");
        exact(&run(&a.le(&b)), "ab_le");
        exact(&run(&a.equal(&b)), "ab_equal");
        exact(&run(&a.not_equal(&b)), "ab_not_equal");
        exact(&run(&a.lt(1.0)), "a_lt_1");
        // maximum and minimum propagate NaN from either side.
        close_f64(&run(&a.maximum(&b)), "ab_maximum");
        close_f64(&run(&a.minimum(&b)), "ab_minimum");
        close_f64(&run(&a.maximum(0.0)), "a_maximum_0");
        close_f64(&run(&where_(&a.gt(&b), &a, &b)), "a_where_ab");
        close_f64(&run(&a.clip(-2.0, 3.0)), "a_clip");
    }
    let pos = irregular::<f64>("in_pos");
    let row = irregular::<f64>("in_row");
    close_f64(&run(&pos.pow(row.abs())), "pos_pow_row");
    let ints = irregular::<i64>("in_ints");
    exact(&run(&ints.pow(2)), "ints_pow_2");
}

#[test]
fn logical_operations_match_numpy() {
    let clean = irregular::<f64>("in_clean");
    let ints = irregular::<i64>("in_ints");
    let (mask, imask) = (clean.gt(0.0), ints.gt(0));
    exact(&run(&mask.and(&imask)), "masks_and");
    exact(&run(&mask.or(&imask)), "masks_or");
    exact(&run(&mask.not()), "mask_not");
    exact(&run(&mask.all_with(&Reduce::axis(0))), "mask_all_axis0");
    exact(&run(&mask.any()), "mask_any");
    exact(&run(&mask.all()), "mask_all");
}

#[test]
fn elementwise_math_matches_numpy_including_nan_and_domain_errors() {
    let a = irregular::<f64>("in_a");
    close_f64(&run(&a.abs()), "a_abs");
    close_f64(&run(&a.sign()), "a_sign");
    close_f64(&run(&(&a / 2.0).floor()), "a_floor_half");
    close_f64(&run(&(&a / 2.0).ceil()), "a_ceil_half");
    close_f64(&run(&(&a / 2.0).round()), "a_round_half");
    close_f64(&run(&a.sqrt()), "a_sqrt");
    close_f64(&run(&a.exp()), "a_exp");
    close_f64(&run(&a.sin()), "a_sin");
    close_f64(&run(&a.cos()), "a_cos");
    close_f64(&run(&a.tan()), "a_tan");
    close_f64(&run(&a.tanh()), "a_tanh");
    let pos = irregular::<f64>("in_pos");
    close_f64(&run(&pos.log()), "pos_log");
    close_f64(&run(&pos.log10()), "pos_log10");
    exact(&run(&(&a / &irregular::<f64>("in_clean")).isfinite()), "a_isfinite");
    let ints = irregular::<i64>("in_ints");
    exact(&run(&ints.abs()), "ints_abs");
    exact(&run(&ints.sign()), "ints_sign");
    close_f64(&run(&ints.sqrt()), "ints_sqrt");
    close_f64(&run(&ints.astype::<f64>()), "ints_astype_f64");
    // Casting floats to integers truncates toward zero, as NumPy's astype.
    exact(&run(&irregular::<f64>("in_clean").astype::<i64>()), "a_astype_i64");
}

#[test]
fn reductions_with_nans_match_numpy_on_irregular_chunks() {
    let a = irregular::<f64>("in_a");
    close_f64(&run(&a.min()), "a_min");
    close_f64(&run(&a.min_axis(1)), "a_min_axis1");
    close_f64(&run(&a.prod_with(&Reduce::axis(1))), "a_prod_axis1");
    close_f64(&run(&a.mean_axis(0)), "a_mean_axis0");
    close_f64(&run(&a.var_with(&Reduce::axis(1))), "a_var_axis1");
    close_f64(&run(&a.nanmin()), "a_nanmin");
    close_f64(&run(&a.max_with(&Reduce::axis(0).skipna(true))), "a_nanmax_axis0");
    close_f64(&run(&a.nanmean()), "a_nanmean");
    close_f64(&run(&a.nanvar()), "a_nanvar");
    close_f64(&run(&a.var_with(&Reduce::axis(0).ddof(1.0).skipna(true))), "a_nanvar_axis0_ddof1");
    close_f64(&run(&a.std_with(&Reduce::axis(1).skipna(true))), "a_nanstd_axis1");
    close_f64(&run(&a.sum_with(&Reduce::axis(1).skipna(true))), "a_nansum_axis1");
    close_f64(&run(&a.nansum()), "a_nansum");
    close_f64(&run(&a.nanstd()), "a_nanstd");
    close_f64(&run(&a.nanmax()), "a_nanmax");
    let c = irregular::<f64>("in_clean");
    close_f64(&run(&c.sum_with(&Reduce::axes([0, 1]).keepdims(true))), "clean_sum_axes01_keepdims");
}

#[test]
fn arg_reductions_return_numpys_indices_with_nans() {
    for a in [irregular::<f64>("in_a"), chunked("in_a")] {
        exact(&run(&a.argmin_axis(Some(0))), "a_argmin_axis0");
        exact(&run(&a.argmax_axis(Some(1))), "a_argmax_axis1");
        exact(&run(&a.nanargmin()), "a_nanargmin");
        exact(&run(&a.nanargmax()), "a_nanargmax");
    }
}

#[test]
fn argmin_and_argmax_over_all_axes_return_the_first_nan_across_blocks() {
    // The NaNs of `in_a` sit at flat indices 7 and 20, in different row blocks.
    for a in [irregular::<f64>("in_a"), chunked("in_a")] {
        exact(&run(&a.argmin()), "a_argmin");
        exact(&run(&a.argmax()), "a_argmax");
    }
    // Regression: the first NaN (flat 3) is in a later block than the second (flat 4).
    for chunks in [ChunkSpec::from(2), ChunkSpec::Explicit(vec![vec![3, 1], vec![3, 1]])] {
        let x = from_array(fixture::<f64>("in_nan2"), chunks);
        exact(&run(&x.argmin()), "nan2_argmin");
        exact(&run(&x.argmax()), "nan2_argmax");
    }
}

#[test]
fn cumulative_sums_and_products_match_numpy() {
    let a = irregular::<f64>("in_a");
    close_f64(&run(&a.cumsum(0)), "a_cumsum_axis0");
    let c = irregular::<f64>("in_clean");
    close_f64(&run(&c.cumsum(-1)), "clean_cumsum_axis1");
    close_f64(&run(&(&c / 2.0).cumprod(0)), "clean_cumprod_axis0");
    exact(&run(&irregular::<i64>("in_ints").cumsum(0)), "ints_cumsum_axis0");
}

#[test]
fn shape_operations_match_numpy() {
    let cube = irregular::<f64>("in_cube");
    close_f64(&run(&cube.t()), "cube_t");
    close_f64(&run(&cube.transpose(&[2, 0, 1])), "cube_transpose_201");
    close_f64(&run(&cube.swapaxes(0, -1)), "cube_swapaxes_0_2");
    close_f64(&run(&cube.expand_dims(1)), "cube_expand_dims_1");
    close_f64(&run(&cube.reshape(&[6, 10])), "cube_reshape_6_10");
    close_f64(&run(&cube.reshape(&[5, -1, 2])), "cube_reshape_5_m1_2");
    close_f64(&run(&cube.slice(&idx![.., ..1, ..]).squeeze(&[1])), "cube_squeeze");
    close_f64(&run(&cube.slice(&idx![1, ..;-2, 1..4])), "cube_slice_mixed");
    close_f64(&run(&cube.rechunk([3, 1, 2]).t()), "cube_t");
    let a = irregular::<f64>("in_a");
    close_f64(&run(&a.take(&[4, -1, 0, 2, 2], 1)), "a_take_cols");
    let sched = LocalScheduler::threads(2).with_progress(Progress::Never);
    let picked = a.select_where(&irregular::<f64>("in_clean").gt(1.0), &sched).unwrap();
    close_f64(&run(&picked), "a_select_where");
    let b = chunked::<f64>("in_b");
    close_f64(&run(&concatenate(&[a.clone(), b.clone()], 0)), "ab_concat_axis0");
    close_f64(&run(&stack(&[a, b], 2)), "ab_stack_axis2");
}

#[test]
fn creation_routines_match_numpy() {
    close_f64(&run(&arange::<f64>(0.5, 7.2, 0.75, 4)), "arange_f64");
    exact(&run(&arange::<i64>(-3.0, 11.0, 2.0, 3)), "arange_i64");
    close_f64(&run(&arange::<f64>(5.0, -2.0, -1.5, 2)), "arange_neg_step");
    close_f64(&run(&linspace(-1.0, 2.0, 7, ChunkSpec::Explicit(vec![vec![3, 2, 2]]))), "linspace_7");
    close_f64(&run(&eye::<f64>(7, ChunkSpec::Explicit(vec![vec![3, 2, 2], vec![2, 5]]))), "eye_7");
    close_f64(&run(&full(&[7, 5], 2.5, ChunkSpec::Explicit(vec![vec![3, 2, 2], vec![2, 3]]))), "full_7x5");
    close_f64(&run(&(&kiln_array::ones::<f64>(&[7, 5], [3, 2]) * 2.5)), "full_7x5");
    close_f64(&run(&(&kiln_array::zeros::<f64>(&[7, 5], [2, 3]) + 2.5)), "full_7x5");
}

#[test]
fn products_match_numpy() {
    let c = irregular::<f64>("in_clean");
    let m2 = irregular::<f64>("in_m2");
    close_f64(&run(&c.dot(&m2)), "clean_dot_m2");
    close_f64(&run(&c.matmul(&m2)), "clean_matmul_m2");
    close_f64(&run(&c.dot(&irregular::<f64>("in_row"))), "clean_dot_row");
    let cube = irregular::<f64>("in_cube");
    close_f64(&run(&tensordot(&cube, &cube.rechunk([1, 2, 5]), &[1, 2], &[1, 2])), "cube_tensordot");
    close_f64(&run(&cholesky(&irregular::<f64>("in_spd"))), "spd_cholesky");
}

#[test]
fn qr_and_svd_satisfy_the_laws_numpys_factors_satisfy() {
    let tall = irregular::<f64>("in_tall");
    let a = fixture::<f64>("in_tall").into_dimensionality::<ndarray::Ix2>().unwrap();
    let (q, r) = qr(&tall);
    let q = run(&q).into_dimensionality::<ndarray::Ix2>().unwrap();
    let r = run(&r).into_dimensionality::<ndarray::Ix2>().unwrap();
    assert_eq!((q.dim(), r.dim()), ((13, 4), (4, 4)));
    let eye4 = ndarray::Array2::<f64>::eye(4);
    assert!(q.t().dot(&q).iter().zip(eye4.iter()).all(|(g, w)| (g - w).abs() < 1e-12), "Q orthonormal");
    assert!((0..4).all(|i| (0..i).all(|j| r[[i, j]] == 0.0)), "R upper triangular: {r}");
    assert!(q.dot(&r).iter().zip(a.iter()).all(|(g, w)| (g - w).abs() < 1e-12), "Q R = A");
    let (u, s, vt) = svd(&tall);
    let (u, vt) = (
        run(&u).into_dimensionality::<ndarray::Ix2>().unwrap(),
        run(&vt).into_dimensionality::<ndarray::Ix2>().unwrap(),
    );
    let s = run(&s);
    let want = fixture::<f64>("tall_singular_values");
    assert_eq!(s.shape(), want.shape());
    assert!(s.iter().zip(want.iter()).all(|(g, w)| (g - w).abs() <= 1e-10 * w), "singular values {s} vs NumPy {want}");
    // The randomized SVD with k equal to the rank recovers the same singular values.
    let s_compressed = run(&svd_compressed(&tall, 4, 2, 1, 3).1);
    assert!(
        s_compressed.iter().zip(want.iter()).all(|(g, w)| (g - w).abs() <= 1e-10 * w),
        "compressed singular values {s_compressed} vs NumPy {want}"
    );
    let us = &u * &s.view().into_dimensionality::<ndarray::Ix1>().unwrap();
    assert!(us.dot(&vt).iter().zip(a.iter()).all(|(g, w)| (g - w).abs() < 1e-12), "U S Vt = A");
}

#[test]
fn map_blocks_and_blockwise_agree_with_numpys_ufuncs() {
    let a = irregular::<f64>("in_a");
    close_f64(&run(&a.map_blocks("sin", |b: &ArrayD<f64>| b.mapv(f64::sin))), "a_sin");
    let b = chunked::<f64>("in_b");
    let sub = kiln_array::blockwise(&a, &b, "sub", |p: &ArrayD<f64>, q: &ArrayD<f64>| p - q);
    close_f64(&run(&sub), "ab_sub");
}

#[test]
fn sum_of_a_transposed_single_block_matches_numpy() {
    let x = arange::<f64>(0.0, 6.0, 1.0, 6).reshape(&[2, 3, 1]);
    close_f64(&run(&x.t().sum_axis(0)), "tr_block_sum_axis0");
    let data = ArrayD::from_shape_vec(ndarray::IxDyn(&[2, 3, 1]), (0..6).map(f64::from).collect()).unwrap();
    let x = from_array(data, [2, 3, 1]);
    close_f64(&run(&x.t().sum_axis(0)), "tr_block_sum_axis0");
    close_f64(&run(&x.t().sum_with(&Reduce::axis(0).split_every(2))), "tr_block_sum_axis0");
}

/// The 5-point Laplacian of an extended block's interior; the outermost ring is left as is.
fn block_laplacian(b: &ArrayD<f64>) -> ArrayD<f64> {
    let mut out = b.clone();
    let (r, c) = (b.shape()[0], b.shape()[1]);
    for i in 1..r.saturating_sub(1) {
        for j in 1..c.saturating_sub(1) {
            out[[i, j]] = b[[i - 1, j]] + b[[i + 1, j]] + b[[i, j - 1]] + b[[i, j + 1]] - 4.0 * b[[i, j]];
        }
    }
    out
}

#[test]
fn map_overlap_matches_numpys_pad_modes() {
    for c in [irregular::<f64>("in_clean"), chunked("in_clean")] {
        for (boundary, name) in [
            (Boundary::Reflect, "clean_lap_reflect"),
            (Boundary::Periodic, "clean_lap_periodic"),
            (Boundary::Constant(2.0), "clean_lap_constant"),
            (Boundary::None, "clean_lap_none"),
        ] {
            close_f64(&run(&c.map_overlap(&[1, 1], boundary, "laplacian", block_laplacian)), name);
        }
    }
}

#[test]
fn npy_files_in_fortran_order_read_in_c_order() {
    close_f64(&run(&irregular::<f64>("in_clean_fortran")), "in_clean");
}

fn close_f32(got: &ArrayD<f32>, name: &str) {
    let want = fixture::<f32>(name);
    assert_eq!(got.shape(), want.shape(), "{name}: shape");
    for (g, w) in got.iter().zip(want.iter()) {
        assert!((g - w).abs() <= 1e-5 * w.abs().max(1.0), "{name}: got {g}, want {w}\ngot  {got}\nwant {want}");
    }
}

#[test]
fn scalars_on_the_left_and_division_by_integer_zero_follow_numpy() {
    close_f64(&run(&(2.0 - &irregular::<f64>("in_a"))), "a_rsub_2");
    // True division of integers gives float64, and 7 / 0 is inf as in NumPy.
    close_f64(&run(&(7 / &irregular::<i64>("in_ints"))), "ints_rdiv_7");
}

#[test]
fn float32_arrays_stay_float32_like_numpy() {
    let x = irregular::<f32>("in_f32");
    close_f32(&run(&x.sum_axis(0)), "f32_sum_axis0");
    close_f32(&run(&x.mean_axis(1)), "f32_mean_axis1");
    close_f32(&run(&x.abs().sqrt()), "f32_sqrt_abs");
    close_f32(&run(&x.max()), "f32_max");
}
