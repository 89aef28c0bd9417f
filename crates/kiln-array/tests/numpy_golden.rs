//! kiln-array against NumPy: every expected value here was computed by NumPy
//! (`tests/fixtures/make_fixtures.py`) and committed as `.npy`. Inputs are chunked unevenly so
//! that every operation crosses block boundaries.

// NumPy slices such as `5:1:-1` are written as ranges that Rust considers empty.
#![allow(clippy::reversed_empty_ranges)]

use kiln_graph::Collection;
use std::path::PathBuf;

use kiln_array::npy::read_npy_as;
use kiln_array::{Array, Element, Reduce, from_array, idx, where_};
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

fn run<T: Element>(x: &Array<T>) -> ArrayD<T> {
    x.compute_on(&LocalScheduler::threads(2).with_progress(Progress::Never)).unwrap_or_else(|e| panic!("{x}: {e}"))
}

fn close_f64(got: &ArrayD<f64>, name: &str) {
    let want = fixture::<f64>(name);
    assert_eq!(got.shape(), want.shape(), "{name}: shape");
    for (g, w) in got.iter().zip(want.iter()) {
        let ok = (g.is_nan() && w.is_nan()) || (g - w).abs() <= 1e-12 * w.abs().max(1.0);
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
