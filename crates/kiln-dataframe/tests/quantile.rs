//! `quantile` and `describe` against pandas 3.1 (exact when partitions are small), and the
//! stated error bound of the sampled quantiles on a large shuffled column.

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use kiln_dataframe::{DataFrame, QUANTILE_SAMPLES};
use kiln_graph::Collection;
use kiln_local::LocalScheduler;

fn close(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-12 * b.abs().max(1.0)
}

fn small() -> RecordBatch {
    let x = [4.0, f64::NAN, 1.0, 3.0, 2.0, -7.5, 10.0, f64::NAN, 2.0, 0.25, 5.0];
    let x: Float64Array = x.iter().enumerate().map(|(i, v)| (i != 7).then_some(*v)).collect();
    let name = StringArray::from_iter_values((0..11).map(|i| format!("r{i}")));
    RecordBatch::try_from_iter([("x", Arc::new(x) as ArrayRef), ("name", Arc::new(name) as ArrayRef)]).unwrap()
}

#[test]
fn small_partitions_give_pandas_exact_answers() {
    let local = LocalScheduler::new();
    // pd.Series([4, nan, 1, 3, 2, -7.5, 10, nan, 2, 0.25, 5]).quantile([0, .1, .25, .5, .75, .9, 1])
    let want = [-7.5, -1.2999999999999996, 1.0, 2.0, 4.0, 6.000000000000001, 10.0];
    // .describe()
    let described = [9.0, 2.1944444444444446, 4.63643481327817, -7.5, 1.0, 2.0, 4.0, 10.0];
    for n in [1, 3, 7, 11] {
        let frame = DataFrame::from_batch(small(), n).unwrap();
        let got = frame.col("x").quantile(&[0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0]).unwrap().compute_on(&local).unwrap();
        assert!(got.iter().zip(&want).all(|(g, w)| close(*g, *w)), "{n} partitions: {got:?}");
        let d = frame.col("x").describe(&local).unwrap();
        let names: Vec<&str> = d.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(names, ["count", "mean", "std", "min", "25%", "50%", "75%", "max"]);
        assert!(d.iter().zip(&described).all(|((_, g), w)| close(*g, *w)), "{n} partitions: {d:?}");
    }
    // One integer value: std is NaN (pandas [1, 3, nan, 3, 3, 3, 3, 3]).
    let one = RecordBatch::try_from_iter([("k", Arc::new(Int64Array::from(vec![3])) as ArrayRef)]).unwrap();
    let d = DataFrame::from_batch(one, 1).unwrap().col("k").describe(&local).unwrap();
    let values: Vec<f64> = d.iter().map(|(_, v)| *v).collect();
    assert!(
        values.iter().zip(&[1.0, 3.0, f64::NAN, 3.0, 3.0, 3.0, 3.0, 3.0]).all(|(g, w)| close(*g, *w)),
        "{values:?}"
    );
}

#[test]
fn large_partitions_stay_within_the_stated_rank_bound() {
    let local = LocalScheduler::new();
    let rows = 200_000u64;
    // The values 0..rows in a scrambled order, so every partition holds values from all over.
    let values: Float64Array = (0..rows).map(|i| Some(((i * 7_919) % rows) as f64)).collect();
    let batch = RecordBatch::try_from_iter([("v", Arc::new(values) as ArrayRef)]).unwrap();
    let frame = DataFrame::from_batch(batch, 4).unwrap();
    let qs = [0.0, 0.01, 0.25, 0.5, 0.9, 0.999, 1.0];
    let got = frame.col("v").quantile(&qs).unwrap().compute_on(&local).unwrap();
    // Value equals rank here, so the rank bound is a value bound: sum of rows_i / samples.
    let bound = (rows / QUANTILE_SAMPLES as u64) as f64 + 1.0;
    for (q, g) in qs.iter().zip(&got) {
        let exact = q * (rows - 1) as f64;
        assert!((g - exact).abs() <= bound, "q={q}: {g} vs {exact} (bound {bound})");
    }
    assert_eq!((got[0], got[6]), (0.0, (rows - 1) as f64), "the ends are exact");
}

#[test]
fn bad_requests_are_clear_errors() {
    let frame = DataFrame::from_batch(small(), 2).unwrap();
    let err = frame.col("x").quantile(&[1.5]).err().unwrap().to_string();
    assert!(err.contains("1.5"), "{err}");
    let err = frame.col("name").quantile(&[0.5]).err().unwrap().to_string();
    assert!(err.contains("name") && err.contains("not a number"), "{err}");
    // No values at all: NaN, as pandas.
    let empty = frame.filter(&frame.col("x").gt(1e9)).unwrap();
    let got = empty.col("x").quantile(&[0.5]).unwrap().compute_on(&LocalScheduler::new()).unwrap();
    assert!(got[0].is_nan());
}
