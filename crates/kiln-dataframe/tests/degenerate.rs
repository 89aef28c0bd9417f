//! Operations on degenerate data against pandas 3.1: empty frames and empty partitions (a
//! filter keeping nothing, or rows in one partition of seven), missing and NaN keys, `-0.0`
//! against `0.0`, one group and a group per row, all-missing columns, merges on missing keys
//! and keys of different types, NaN and ties in sorts, numeric edges (int64 overflow, the
//! variance of large floats, constant columns), and time series at partition edges. Each
//! expectation was checked with pandas 3.1 when written (the pandas call is in the comment);
//! every case runs on several partitionings, including empty partitions between full ones.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray, TimestampNanosecondArray,
};
use arrow::compute::{SortColumn, SortOptions, lexsort_to_indices, take_record_batch};
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use kiln_dataframe::{Agg, DataFrame, Divisions, How, MergeOptions, Scalar};
use kiln_graph::Collection;
use kiln_local::LocalScheduler;

fn s() -> LocalScheduler {
    LocalScheduler::new()
}

fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
    RecordBatch::try_from_iter(columns).unwrap()
}

fn f64s(values: &[Option<f64>]) -> ArrayRef {
    Arc::new(Float64Array::from(values.to_vec()))
}

fn i64s(values: &[Option<i64>]) -> ArrayRef {
    Arc::new(Int64Array::from(values.to_vec()))
}

fn strs(values: &[Option<&str>]) -> ArrayRef {
    Arc::new(StringArray::from(values.to_vec()))
}

/// The rows cut into partitions of these sizes (zeros are empty partitions).
fn cut(all: &RecordBatch, sizes: &[usize]) -> DataFrame {
    assert_eq!(sizes.iter().sum::<usize>(), all.num_rows());
    let mut at = 0;
    let parts = sizes
        .iter()
        .map(|&n| {
            let part = all.slice(at, n);
            at += n;
            part
        })
        .collect();
    DataFrame::from_batches(parts).unwrap()
}

/// The same rows as one partition, three, seven, and seven with the rows only in the third
/// (the others empty), and with empty partitions between full ones.
fn layouts(all: &RecordBatch) -> Vec<(String, DataFrame)> {
    let n = all.num_rows();
    let even = |k: usize| -> Vec<usize> { (0..k).map(|i| n * (i + 1) / k - n * i / k).collect() };
    let mut out = vec![
        ("1".to_string(), cut(all, &[n])),
        ("3".to_string(), cut(all, &even(3))),
        ("7".to_string(), cut(all, &even(7))),
        ("only-2-of-7".to_string(), cut(all, &[0, 0, n, 0, 0, 0, 0])),
    ];
    if n >= 2 {
        out.push(("gaps".to_string(), cut(all, &[0, 1, 0, 0, n - 1, 0])));
    }
    out
}

fn floats(array: &ArrayRef) -> Vec<Option<f64>> {
    let array = arrow::compute::cast(array, &DataType::Float64).unwrap();
    array.as_primitive::<Float64Type>().iter().map(|v| v.filter(|x| !x.is_nan())).collect()
}

fn ints(array: &ArrayRef) -> Vec<Option<i64>> {
    array.as_primitive::<Int64Type>().iter().collect()
}

fn texts(array: &ArrayRef) -> Vec<Option<String>> {
    let array = arrow::compute::cast(array, &DataType::Utf8).unwrap();
    array.as_string::<i32>().iter().map(|v| v.map(str::to_string)).collect()
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    a == b || (a - b).abs() <= rel * 1f64.max(a.abs()).max(b.abs())
}

fn assert_floats(what: &str, got: &[Option<f64>], want: &[Option<f64>]) {
    assert_eq!(got.len(), want.len(), "{what}: {got:?} vs {want:?}");
    for (g, w) in got.iter().zip(want) {
        let ok = match (g, w) {
            (None, None) => true,
            (Some(a), Some(b)) => close(*a, *b, 1e-12),
            _ => false,
        };
        assert!(ok, "{what}: kiln {got:?}, pandas {want:?}");
    }
}

fn col(batch: &RecordBatch, name: &str) -> ArrayRef {
    batch.column_by_name(name).unwrap_or_else(|| panic!("no column {name} in {:?}", batch.schema())).clone()
}

/// Rows sorted by the named columns, missing last (to compare unordered results).
fn sorted(batch: &RecordBatch, by: &[&str]) -> RecordBatch {
    if batch.num_rows() == 0 {
        return batch.clone();
    }
    let columns: Vec<SortColumn> = by
        .iter()
        .map(|c| SortColumn {
            values: col(batch, c),
            options: Some(SortOptions { descending: false, nulls_first: false }),
        })
        .collect();
    take_record_batch(batch, &lexsort_to_indices(&columns, None).unwrap()).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Reductions

/// `pd.Series([], dtype=float)`: sum 0.0, count 0, mean/min/max/var/std NaN;
/// `pd.Series([], dtype="int64").sum()` is 0 (an integer).
#[test]
fn reductions_of_nothing() {
    let all = batch(vec![("x", f64s(&[Some(1.0), Some(2.0), Some(3.0)])), ("i", i64s(&[Some(1), Some(2), None]))]);
    for (label, df) in layouts(&all) {
        for (what, empty) in [
            ("filter keeps none", df.filter(&df.col("x").gt(100.0)).unwrap()),
            ("filter of missing", df.filter(&(df.col("i").isna() & df.col("x").gt(100.0))).unwrap()),
        ] {
            let x = empty.col("x");
            let ctx = format!("{label}, {what}");
            assert_eq!(x.sum().compute_on(&s()).unwrap(), Scalar::Float(0.0), "{ctx}");
            assert_eq!(empty.col("i").sum().compute_on(&s()).unwrap(), Scalar::Int(0), "{ctx}");
            assert_eq!(x.count().compute_on(&s()).unwrap(), Scalar::Int(0), "{ctx}");
            for r in [x.mean(), x.min(), x.max(), x.var(), x.std(), empty.col("i").min()] {
                assert_eq!(r.compute_on(&s()).unwrap(), Scalar::Null, "{ctx}");
            }
            assert_eq!(empty.len().compute_on(&s()).unwrap(), 0, "{ctx}");
            assert_eq!(empty.compute_on(&s()).unwrap().num_rows(), 0, "{ctx}");
            assert_eq!(empty.head(5).compute_on(&s()).unwrap().num_rows(), 0, "{ctx}");
        }
    }
}

/// `pd.Series([2.5]).var()` is NaN, `.var(ddof=0)` 0.0, `.std()` NaN; an all-NaN column sums
/// to 0.0 and counts 0.
#[test]
fn one_row_and_all_missing_reductions() {
    let all = batch(vec![
        ("x", f64s(&[Some(2.5), None, Some(f64::NAN)])),
        ("nan", f64s(&[Some(f64::NAN), None, Some(f64::NAN)])),
    ]);
    for (label, df) in layouts(&all) {
        let x = df.col("x");
        assert_eq!(x.var().compute_on(&s()).unwrap(), Scalar::Null, "{label}");
        assert_eq!(x.std().compute_on(&s()).unwrap(), Scalar::Null, "{label}");
        assert_eq!(x.var_ddof(0).compute_on(&s()).unwrap(), Scalar::Float(0.0), "{label}");
        assert_eq!(x.mean().compute_on(&s()).unwrap(), Scalar::Float(2.5), "{label}");
        let nan = df.col("nan");
        assert_eq!(nan.sum().compute_on(&s()).unwrap(), Scalar::Float(0.0), "{label}");
        assert_eq!(nan.count().compute_on(&s()).unwrap(), Scalar::Int(0), "{label}");
        assert_eq!(nan.min().compute_on(&s()).unwrap(), Scalar::Null, "{label}");
        assert_eq!(nan.mean().compute_on(&s()).unwrap(), Scalar::Null, "{label}");
        assert_eq!(df.len().compute_on(&s()).unwrap(), 3, "{label}");
    }
}

/// `pd.Series([2**63 - 1, 1, 5]).sum()` wraps to -9223372036854775803, as NumPy's int64 sum;
/// kiln wraps too (the decision: pandas' answer, not an error).
#[test]
fn int64_sums_wrap_like_pandas() {
    let all = batch(vec![("k", i64s(&[Some(1), Some(1), Some(2)])), ("v", i64s(&[Some(i64::MAX), Some(1), Some(5)]))]);
    for (label, df) in layouts(&all) {
        assert_eq!(df.col("v").sum().compute_on(&s()).unwrap(), Scalar::Int(-9223372036854775803), "{label}");
        // df.groupby("k").v.sum(): 1 -> -9223372036854775808, 2 -> 5
        let g = df.groupby(["k"]).unwrap().agg([Agg::sum("v")]).unwrap().compute_on(&s()).unwrap();
        assert_eq!(ints(&col(&g, "v")), [Some(i64::MIN), Some(5)], "{label}");
        // mean goes through float64: 3.0744573456182584e+18
        let Scalar::Float(mean) = df.col("v").mean().compute_on(&s()).unwrap() else { panic!() };
        assert!(close(mean, 3.0744573456182584e18, 1e-15), "{label}: {mean}");
    }
}

/// `pd.Series(1e9 + np.arange(1, 101.)).var()` is 841.6666666666666 (the exact n(n+1)/12);
/// with 1e15 as offset pandas' own two-pass answer is 841.68 (the exact is still 841.67):
/// kiln's Welford-then-Chan must stay within that.
#[test]
fn variance_of_large_floats_split_over_partitions() {
    for (offset, tolerance) in [(1e9, 1e-9), (1e15, 1e-4)] {
        let values: Vec<Option<f64>> = (1..=100).map(|i| Some(offset + f64::from(i))).collect();
        let all = batch(vec![("x", f64s(&values))]);
        for (label, df) in layouts(&all) {
            let Scalar::Float(var) = df.col("x").var().compute_on(&s()).unwrap() else { panic!() };
            assert!(close(var, 841.6666666666666, tolerance), "{label} offset {offset}: var {var}");
            let Scalar::Float(mean) = df.col("x").mean().compute_on(&s()).unwrap() else { panic!() };
            assert!(close(mean, offset + 50.5, 1e-15), "{label} offset {offset}: mean {mean}");
        }
    }
}

/// `pd.Series([0.1] * 50).std()` is 2.8e-17 (pandas' two passes round); 0 or as tiny is right.
#[test]
fn std_of_a_constant_column_is_zero_or_tiny() {
    let all = batch(vec![("x", f64s(&[Some(0.1); 50])), ("k", i64s(&[Some(7); 50]))]);
    for (label, df) in layouts(&all) {
        let Scalar::Float(std) = df.col("x").std().compute_on(&s()).unwrap() else { panic!() };
        assert!(std.abs() < 1e-15, "{label}: {std}");
        let g = df.groupby(["k"]).unwrap().agg([Agg::std("x"), Agg::var("x").alias("v")]).unwrap();
        let g = g.compute_on(&s()).unwrap();
        assert!(floats(&col(&g, "x"))[0].unwrap().abs() < 1e-15, "{label}");
    }
}

// ---------------------------------------------------------------------------------------------
// Group-by

fn keyed() -> RecordBatch {
    // k: 0.0, -0.0, 1.0, NaN, -0.0, null, 1.0, 0.0 ; v: 1..8 ; w all missing; s strings.
    batch(vec![
        ("k", f64s(&[Some(0.0), Some(-0.0), Some(1.0), Some(f64::NAN), Some(-0.0), None, Some(1.0), Some(0.0)])),
        ("v", i64s(&[Some(1), Some(2), Some(3), Some(4), Some(5), Some(6), Some(7), Some(8)])),
        ("w", f64s(&[None, Some(f64::NAN), None, None, Some(f64::NAN), None, None, None])),
        ("s", strs(&[Some("a"), None, Some("b"), Some("a"), None, Some("c"), Some("b"), None])),
    ])
}

/// `df.groupby("k").agg(v=("v","sum"), n=("v","size"), w_sum=("w","sum"), w_mean=("w","mean"),
/// w_count=("w","count"), w_min=("w","min"), w_var=("w","var"))`: NaN and null keys dropped,
/// -0.0 and 0.0 one group: k [0.0, 1.0], v [16, 10], n [4, 2], w_sum [0, 0], w_mean NaN,
/// w_count [0, 0], w_min NaN, w_var NaN.
#[test]
fn groupby_missing_and_signed_zero_keys() {
    for (label, df) in layouts(&keyed()) {
        for split_out in [1, 3] {
            let g = df
                .groupby(["k"])
                .unwrap()
                .split_out(split_out)
                .agg([
                    Agg::sum("v"),
                    Agg::size().alias("n"),
                    Agg::sum("w").alias("w_sum"),
                    Agg::mean("w").alias("w_mean"),
                    Agg::count("w").alias("w_count"),
                    Agg::min("w").alias("w_min"),
                    Agg::var("w").alias("w_var"),
                ])
                .unwrap()
                .compute_on(&s())
                .unwrap();
            let g = sorted(&g, &["k"]);
            let ctx = format!("{label} split_out {split_out}");
            assert_floats(&ctx, &floats(&col(&g, "k")), &[Some(0.0), Some(1.0)]);
            assert_eq!(ints(&col(&g, "v")), [Some(16), Some(10)], "{ctx}");
            assert_eq!(ints(&col(&g, "n")), [Some(4), Some(2)], "{ctx}");
            assert_floats(&ctx, &floats(&col(&g, "w_sum")), &[Some(0.0), Some(0.0)]);
            assert_floats(&ctx, &floats(&col(&g, "w_mean")), &[None, None]);
            assert_eq!(ints(&col(&g, "w_count")), [Some(0), Some(0)], "{ctx}");
            assert_floats(&ctx, &floats(&col(&g, "w_min")), &[None, None]);
            assert_floats(&ctx, &floats(&col(&g, "w_var")), &[None, None]);
        }
    }
}

/// `df.groupby("s").v.sum()`: a [5], b [10], c [6] (null keys dropped); one group when every
/// key is equal; a group per row when all differ; none for an empty frame, with the schema.
#[test]
fn groupby_one_group_every_row_and_nothing() {
    for (label, df) in layouts(&keyed()) {
        let g = df.groupby(["s"]).unwrap().agg([Agg::sum("v")]).unwrap().compute_on(&s()).unwrap();
        assert_eq!(texts(&col(&g, "s")), [Some("a".into()), Some("b".into()), Some("c".into())], "{label}");
        assert_eq!(ints(&col(&g, "v")), [Some(5), Some(10), Some(6)], "{label}");
        // Every row its own group (v is distinct), and one group (a constant key).
        let g = df.groupby(["v"]).unwrap().agg([Agg::size()]).unwrap().compute_on(&s()).unwrap();
        assert_eq!(ints(&col(&g, "v")), (1..=8).map(Some).collect::<Vec<_>>(), "{label}");
        let one = df.assign("one", &df.col("v").gt(100)).unwrap();
        let g = one.groupby(["one"]).unwrap().agg([Agg::mean("v")]).unwrap().compute_on(&s()).unwrap();
        assert_floats(&label, &floats(&col(&g, "v")), &[Some(4.5)]);
        // Nothing: pandas gives no rows with columns k, v (int64) and size (int64).
        let none = df.filter(&df.col("v").gt(100)).unwrap();
        for split_out in [1, 3] {
            let g = none
                .groupby(["k"])
                .unwrap()
                .split_out(split_out)
                .agg([Agg::sum("v"), Agg::size().alias("n"), Agg::var("w")])
                .unwrap()
                .compute_on(&s())
                .unwrap();
            assert_eq!(g.num_rows(), 0, "{label}");
            assert_eq!(g.schema().field(1).data_type(), &DataType::Int64, "{label}");
        }
        // Every key missing: no groups.
        let g = df.groupby(["w"]).unwrap().agg([Agg::sum("v")]).unwrap().compute_on(&s()).unwrap();
        assert_eq!(g.num_rows(), 0, "{label}");
    }
}

/// `pd.Series([nan, 1.0, nan, -0.0, 0.0, None]).nunique()` is 2, `.value_counts()` gives
/// -0.0 -> 2, 1.0 -> 1 (NaN dropped); `drop_duplicates` keeps one NaN and one zero:
/// `df.drop_duplicates("k")` keeps rows 0 (0.0), 2 (1.0), 3 (NaN).
#[test]
fn distinct_values_with_nan_null_and_signed_zero() {
    for (label, df) in layouts(&keyed()) {
        assert_eq!(df.col("k").nunique().compute_on(&s()).unwrap(), 2, "{label}");
        assert_eq!(df.col("s").nunique().compute_on(&s()).unwrap(), 3, "{label}");
        assert_eq!(df.col("w").nunique().compute_on(&s()).unwrap(), 0, "{label}");
        let vc = df.col("k").value_counts().unwrap().compute_on(&s()).unwrap();
        assert_floats(&label, &floats(&col(&vc, "k")), &[Some(0.0), Some(1.0)]);
        assert_eq!(ints(&col(&vc, "count")), [Some(4), Some(2)], "{label}");
        let vc = df.col("s").value_counts().unwrap().compute_on(&s()).unwrap();
        assert_eq!(ints(&col(&vc, "count")), [Some(2), Some(2), Some(1)], "{label}");
        let d = df.drop_duplicates(Some(&["k"])).unwrap().compute_on(&s()).unwrap();
        let d = sorted(&d, &["v"]);
        assert_eq!(ints(&col(&d, "v")), [Some(1), Some(3), Some(4)], "{label}");
        // pandas: NaN and None are the same missing value in a float column.
        let d = df.drop_duplicates(Some(&["w"])).unwrap().compute_on(&s()).unwrap();
        assert_eq!(ints(&col(&d, "v")), [Some(1)], "{label}");
        let empty = df.filter(&df.col("v").gt(100)).unwrap();
        assert_eq!(empty.drop_duplicates(None).unwrap().compute_on(&s()).unwrap().num_rows(), 0, "{label}");
        assert_eq!(empty.col("k").nunique().compute_on(&s()).unwrap(), 0, "{label}");
        assert_eq!(empty.col("k").value_counts().unwrap().compute_on(&s()).unwrap().num_rows(), 0, "{label}");
    }
}

// ---------------------------------------------------------------------------------------------
// Merge

fn merge_rows(left: &DataFrame, right: &DataFrame, options: &MergeOptions, by: &[&str]) -> RecordBatch {
    sorted(&left.merge(right, options).unwrap().compute_on(&s()).unwrap(), by)
}

/// A left side, a right side, and the (a, b) pairs their inner merge matches.
type Case<'a> = (&'a RecordBatch, &'a RecordBatch, &'a [(i64, i64)]);

/// `pd.merge(l, r, on="k")` with l.k = [1.0, NaN, 2.0, -0.0], r.k = [NaN, 1.0, NaN, 0.0]:
/// NaN matches NaN (twice), -0.0 matches 0.0: a/b pairs (1,20), (2,10), (2,30), (4,40).
/// The same with None in string keys (`["x", None, "y"]` vs `[None, "x", NaN]`: (1,20),
/// (2,10), (2,30)) and pd.NA in Int64 keys (`[1, NA, 2]` vs `[NA, 1]`: (1,20), (2,10)).
#[test]
fn merge_matches_missing_keys_to_missing_keys() {
    let l = batch(vec![
        ("k", f64s(&[Some(1.0), Some(f64::NAN), Some(2.0), Some(-0.0)])),
        ("a", i64s(&[Some(1), Some(2), Some(3), Some(4)])),
    ]);
    let r = batch(vec![
        ("k", f64s(&[Some(f64::NAN), Some(1.0), None, Some(0.0)])),
        ("b", i64s(&[Some(10), Some(20), Some(30), Some(40)])),
    ]);
    let ls = batch(vec![("k", strs(&[Some("x"), None, Some("y")])), ("a", i64s(&[Some(1), Some(2), Some(3)]))]);
    let rs = batch(vec![("k", strs(&[None, Some("x"), None])), ("b", i64s(&[Some(10), Some(20), Some(30)]))]);
    let li = batch(vec![("k", i64s(&[Some(1), None, Some(2)])), ("a", i64s(&[Some(1), Some(2), Some(3)]))]);
    let ri = batch(vec![("k", i64s(&[None, Some(1)])), ("b", i64s(&[Some(10), Some(20)]))]);
    let cases: [Case; 3] = [
        (&l, &r, &[(1, 20), (2, 10), (2, 30), (4, 40)]),
        (&ls, &rs, &[(1, 20), (2, 10), (2, 30)]),
        (&li, &ri, &[(1, 20), (2, 10)]),
    ];
    for (lb, rb, want) in cases {
        for (llabel, left) in layouts(lb) {
            for (rlabel, right) in [("1", cut(rb, &[rb.num_rows()])), ("3", cut(rb, &[1, 0, rb.num_rows() - 1]))] {
                for broadcast in [None, Some(false)] {
                    let options = MergeOptions::on(["k"]).broadcast(broadcast);
                    let got = merge_rows(&left, &right, &options, &["a", "b"]);
                    let pairs: Vec<(i64, i64)> = ints(&col(&got, "a"))
                        .into_iter()
                        .zip(ints(&col(&got, "b")))
                        .map(|(a, b)| (a.unwrap(), b.unwrap()))
                        .collect();
                    assert_eq!(pairs, want, "{llabel} x {rlabel} broadcast {broadcast:?}");
                }
            }
        }
    }
}

/// Many-to-many: l.k = [1, 1, 2, NaN], r.k = [1, 1, 1, NaN, 3]: `pd.merge(..., how="outer")`
/// has 6 + 1 (2 unmatched) + 1 (NaN with NaN) + 1 (3 unmatched) = 9 rows; inner 7.
#[test]
fn merge_many_to_many_and_empty_sides() {
    let l = batch(vec![
        ("k", f64s(&[Some(1.0), Some(1.0), Some(2.0), None])),
        ("a", i64s(&[Some(1), Some(2), Some(3), Some(4)])),
    ]);
    let r = batch(vec![
        ("k", f64s(&[Some(1.0), Some(1.0), Some(1.0), Some(f64::NAN), Some(3.0)])),
        ("b", i64s(&[Some(10), Some(20), Some(30), Some(40), Some(50)])),
    ]);
    for (label, left) in layouts(&l) {
        let right = cut(&r, &[2, 0, 3]);
        let count = |how: How| {
            let options = MergeOptions::on(["k"]).how(how);
            left.merge(&right, &options).unwrap().len().compute_on(&s()).unwrap()
        };
        assert_eq!(
            [count(How::Inner), count(How::Left), count(How::Right), count(How::Outer)],
            [7, 8, 8, 9],
            "{label}"
        );
        // An empty side: a filter keeping nothing. pd.merge(l, r[r.b > 100], how=...) has
        // 0 rows (inner, right), 4 (left, outer, every b missing).
        let none = right.filter(&right.col("b").gt(100)).unwrap();
        for (how, rows) in [(How::Inner, 0), (How::Left, 4), (How::Right, 0), (How::Outer, 4), (How::Anti, 4)] {
            let got = left.merge(&none, &MergeOptions::on(["k"]).how(how)).unwrap().compute_on(&s()).unwrap();
            assert_eq!(got.num_rows(), rows, "{label} {how:?} with an empty right");
            if how == How::Left {
                assert_eq!(col(&got, "b").null_count(), 4, "{label}");
            }
            let got = none.merge(&left, &MergeOptions::on(["k"]).how(how)).unwrap().compute_on(&s()).unwrap();
            let rows = match how {
                How::Right | How::Outer => 4,
                _ => 0,
            };
            assert_eq!(got.num_rows(), rows, "{label} {how:?} with an empty left");
        }
        // A side whose keys are all missing matches the other side's missing key only.
        let missing = batch(vec![("k", f64s(&[None, Some(f64::NAN)])), ("b", i64s(&[Some(1), Some(2)]))]);
        let got = left.merge(&cut(&missing, &[1, 1]), &MergeOptions::on(["k"])).unwrap().compute_on(&s()).unwrap();
        assert_eq!(sorted(&got, &["b"]).num_rows(), 2, "{label}");
        assert_eq!(ints(&col(&sorted(&got, &["b"]), "a")), [Some(4), Some(4)], "{label}");
    }
}

/// Keys of compatible types: pandas keeps the left key's type for inner and left merges
/// (`pd.merge(int64 l, float64 r, how="inner").k.dtype` is int64, int32 with int64 is int32)
/// and matches 1 with 1.0.
#[test]
fn merge_keys_of_different_types() {
    let l = batch(vec![("k", i64s(&[Some(1), Some(2), Some(3)])), ("a", i64s(&[Some(1), Some(2), Some(3)]))]);
    let rf = batch(vec![("k", f64s(&[Some(1.0), Some(2.5), None])), ("b", i64s(&[Some(10), Some(20), Some(30)]))]);
    let l32 = batch(vec![
        ("k", Arc::new(Int32Array::from(vec![1, 2, 3])) as ArrayRef),
        ("a", i64s(&[Some(1), Some(2), Some(3)])),
    ]);
    let r64 = batch(vec![("k", i64s(&[Some(1), Some(4)])), ("b", i64s(&[Some(10), Some(20)]))]);
    for (label, left) in layouts(&l) {
        let right = cut(&rf, &[1, 2]);
        let inner = merge_rows(&left, &right, &MergeOptions::on(["k"]), &["a"]);
        assert_eq!(ints(&col(&inner, "a")), [Some(1)], "{label}");
        assert_eq!(inner.schema().field(0).data_type(), &DataType::Int64, "{label}: inner keeps the left type");
        let lj = merge_rows(&left, &right, &MergeOptions::on(["k"]).how(How::Left), &["a"]);
        assert_eq!(lj.schema().field(0).data_type(), &DataType::Int64, "{label}: left keeps the left type");
        assert_eq!(ints(&col(&lj, "k")), [Some(1), Some(2), Some(3)], "{label}");
        // outer: float64 keys [1.0, 2.0, 2.5, 3.0, NaN]
        let outer = merge_rows(&left, &right, &MergeOptions::on(["k"]).how(How::Outer), &["k"]);
        assert_floats(&label, &floats(&col(&outer, "k")), &[Some(1.0), Some(2.0), Some(2.5), Some(3.0), None]);
    }
    for (label, left) in layouts(&l32) {
        let right = cut(&r64, &[1, 1]);
        let inner = merge_rows(&left, &right, &MergeOptions::on(["k"]), &["a"]);
        assert_eq!(inner.schema().field(0).data_type(), &DataType::Int32, "{label}");
        let outer = merge_rows(&left, &right, &MergeOptions::on(["k"]).how(How::Outer), &["k"]);
        assert_eq!(outer.schema().field(0).data_type(), &DataType::Int64, "{label}");
        assert_eq!(ints(&col(&outer, "k")), [Some(1), Some(2), Some(3), Some(4)], "{label}");
    }
}

// ---------------------------------------------------------------------------------------------
// Order

/// `df.sort_values("x", kind="stable")` with x = [3, NaN, 1, None, 1, -0.0, 0.0, 3]: NaN
/// last, ties in row order: v = [6, 7, 3, 5, 1, 8, 2, 4]; descending
/// (`ascending=False, na_position="last"`): [1, 8, 3, 5, 6, 7, 2, 4].
#[test]
fn sort_values_with_nan_ties_and_empty_partitions() {
    let all = batch(vec![
        ("x", f64s(&[Some(3.0), Some(f64::NAN), Some(1.0), None, Some(1.0), Some(-0.0), Some(0.0), Some(3.0)])),
        ("v", i64s(&[Some(1), Some(2), Some(3), Some(4), Some(5), Some(6), Some(7), Some(8)])),
        ("s", strs(&[Some("b"), None, Some("a"), Some("c"), None, Some("a"), Some("b"), Some("a")])),
    ]);
    for (label, df) in layouts(&all) {
        let up = df.sort_values("x", false, &s()).unwrap().compute_on(&s()).unwrap();
        assert_eq!(ints(&col(&up, "v")), [6, 7, 3, 5, 1, 8, 2, 4].map(Some), "{label}");
        let down = df.sort_values("x", true, &s()).unwrap().compute_on(&s()).unwrap();
        // pandas' descending stable sort keeps ties in row order too.
        assert_eq!(ints(&col(&down, "v")), [1, 8, 3, 5, 6, 7, 2, 4].map(Some), "{label}");
        // df.sort_values("s", kind="stable"): a a a b b c None None -> v [3, 6, 8, 1, 7, 4, 2, 5]
        let by_s = df.sort_values("s", false, &s()).unwrap().compute_on(&s()).unwrap();
        assert_eq!(ints(&col(&by_s, "v")), [3, 6, 8, 1, 7, 4, 2, 5].map(Some), "{label}");
        let none = df.filter(&df.col("v").gt(100)).unwrap();
        assert_eq!(none.sort_values("x", false, &s()).unwrap().compute_on(&s()).unwrap().num_rows(), 0, "{label}");
        // Every value missing: row order kept.
        let missing = df.filter(&df.col("x").isna()).unwrap();
        let got = missing.sort_values("x", false, &s()).unwrap().compute_on(&s()).unwrap();
        assert_eq!(ints(&col(&got, "v")), [Some(2), Some(4)], "{label}");
    }
}

/// `set_index` of an empty frame (no data for divisions), of rows in one partition, and of a
/// column whose values are all missing.
#[test]
fn set_index_with_no_data_and_missing_values() {
    let all = batch(vec![
        ("x", i64s(&[Some(5), Some(3), None, Some(9), Some(1)])),
        ("n", f64s(&[None, Some(f64::NAN), None, None, None])),
    ]);
    for (label, df) in layouts(&all) {
        let indexed = df.set_index("x", &s()).unwrap();
        let got = indexed.compute_on(&s()).unwrap();
        assert_eq!(ints(&col(&got, "x")), [Some(1), Some(3), Some(5), Some(9), None], "{label}");
        let none = df.filter(&df.col("x").gt(100)).unwrap();
        let indexed = none.set_index("x", &s()).unwrap();
        assert_eq!(indexed.compute_on(&s()).unwrap().num_rows(), 0, "{label}");
        assert_eq!(indexed.len().compute_on(&s()).unwrap(), 0, "{label}");
        let indexed = df.set_index("n", &s()).unwrap();
        assert_eq!(indexed.compute_on(&s()).unwrap().num_rows(), 5, "{label}");
        if let Divisions::Known(d) = indexed.divisions() {
            assert!(d.iter().all(|v| !v.is_null()), "{label}: divisions of missing values {d:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Time series

const START: i64 = 1_420_070_400_000_000_000; // 2015-01-01
const MINUTE: i64 = 60_000_000_000;

fn timed(minutes: &[i64], values: &[Option<f64>], sizes: &[usize]) -> DataFrame {
    let t: ArrayRef =
        Arc::new(TimestampNanosecondArray::from(minutes.iter().map(|m| START + m * MINUTE).collect::<Vec<_>>()));
    let all = batch(vec![("t", t), ("v", f64s(values))]);
    let mut at = 0;
    let parts = sizes
        .iter()
        .map(|&n| {
            let p = all.slice(at, n);
            at += n;
            p
        })
        .collect();
    DataFrame::from_sorted_batches(parts, "t").unwrap()
}

fn minutes(batch: &RecordBatch) -> Vec<i64> {
    col(batch, "t")
        .as_primitive::<arrow::datatypes::TimestampNanosecondType>()
        .values()
        .iter()
        .map(|t| (t - START) / MINUTE)
        .collect()
}

/// `s.resample("h").agg(["sum", "count", "mean"])` for one row at 00:30: one bucket 00:00.
/// Partitions cut exactly at bucket edges (01:00, 03:00) with empty hours between:
/// rows 00:00, 00:59 | 01:00 | 03:00 -> buckets 0..3: sum [3, 4, 0, 8], count [2, 1, 0, 1].
#[test]
fn resample_single_row_and_edges_on_partition_bounds() {
    let one = timed(&[30], &[Some(2.0)], &[1]);
    let got = one.resample("h").unwrap().agg([Agg::sum("v"), Agg::count("v").alias("n")]).unwrap();
    let got = got.compute_on(&s()).unwrap();
    assert_eq!(minutes(&got), [0]);
    assert_floats("one row", &floats(&col(&got, "v")), &[Some(2.0)]);
    let df = timed(&[0, 59, 60, 180], &[Some(1.0), Some(2.0), Some(4.0), Some(8.0)], &[2, 1, 1]);
    let got = df
        .resample("h")
        .unwrap()
        .agg([Agg::sum("v"), Agg::count("v").alias("n"), Agg::mean("v").alias("m")])
        .unwrap()
        .compute_on(&s())
        .unwrap();
    assert_eq!(minutes(&got), [0, 60, 120, 180]);
    assert_floats("edges", &floats(&col(&got, "v")), &[Some(3.0), Some(4.0), Some(0.0), Some(8.0)]);
    assert_eq!(ints(&col(&got, "n")), [Some(2), Some(1), Some(0), Some(1)]);
    assert_floats("edges", &floats(&col(&got, "m")), &[Some(1.5), Some(4.0), None, Some(8.0)]);
    // Nothing left after a filter: pandas' resample of an empty frame is empty.
    let none = df.filter(&df.col("v").gt(100.0)).unwrap();
    let got = none.resample("h").unwrap().sum().unwrap().compute_on(&s()).unwrap();
    assert_eq!(got.num_rows(), 0);
}

/// `s.rolling(10).sum()` over 4 rows is all NaN, `rolling(10, min_periods=1)` the running
/// sum; `shift(3)`/`diff(2)` across one-row and empty partitions.
#[test]
fn windows_longer_than_the_frame_and_shifts_across_partitions() {
    let values = [Some(1.0), Some(2.0), Some(4.0), Some(8.0)];
    let df = timed(&[0, 1, 2, 3], &values, &[1, 1, 2]);
    let got = df.rolling(10usize).unwrap().sum().unwrap().compute_on(&s()).unwrap();
    assert_floats("rolling 10", &floats(&col(&got, "v")), &[None; 4]);
    let got = df.rolling(10usize).unwrap().min_periods(1).sum().unwrap().compute_on(&s()).unwrap();
    assert_floats("rolling 10 minp 1", &floats(&col(&got, "v")), &[Some(1.0), Some(3.0), Some(7.0), Some(15.0)]);
    // A span longer than the whole frame: every row sees everything before it.
    let got = df.rolling("1D").unwrap().mean().unwrap().compute_on(&s()).unwrap();
    assert_floats("rolling 1D", &floats(&col(&got, "v")), &[Some(1.0), Some(1.5), Some(7.0 / 3.0), Some(3.75)]);
    let got = df.shift(3).unwrap().compute_on(&s()).unwrap();
    assert_floats("shift 3", &floats(&col(&got, "v")), &[None, None, None, Some(1.0)]);
    let got = df.shift(-5).unwrap().compute_on(&s()).unwrap();
    assert_floats("shift -5", &floats(&col(&got, "v")), &[None; 4]);
    // An empty partition in the middle (a filter dropping the row at 00:01 and 00:02 keeps
    // partition 2 empty): diff(1) of [1, 8] is [NaN, 7].
    let gappy = df.filter(&(df.col("v").ne(2.0) & df.col("v").ne(4.0))).unwrap();
    let got = gappy.diff(1).unwrap().compute_on(&s()).unwrap();
    assert_floats("diff over a gap", &floats(&col(&got, "v")), &[None, Some(7.0)]);
    let got = gappy.rolling(2usize).unwrap().sum().unwrap().compute_on(&s()).unwrap();
    assert_floats("rolling over a gap", &floats(&col(&got, "v")), &[None, Some(9.0)]);
    // Everything filtered away.
    let none = df.filter(&df.col("v").gt(100.0)).unwrap();
    assert_eq!(none.shift(1).unwrap().compute_on(&s()).unwrap().num_rows(), 0);
    assert_eq!(none.rolling("1h").unwrap().sum().unwrap().compute_on(&s()).unwrap().num_rows(), 0);
}

// ---------------------------------------------------------------------------------------------
// More types: strings, booleans, int32, timestamps, two keys

/// `pd.merge(l, r, on="k")` with l.k = ["", None, "x"], r.k = [None, "", ""]: the empty string
/// is a value (pairs (1,20), (1,30)), not missing (None with None: (2,10)).
#[test]
fn merge_tells_the_empty_string_from_missing() {
    let l = batch(vec![("k", strs(&[Some(""), None, Some("x")])), ("a", i64s(&[Some(1), Some(2), Some(3)]))]);
    let r = batch(vec![("k", strs(&[None, Some(""), Some("")])), ("b", i64s(&[Some(10), Some(20), Some(30)]))]);
    for (label, left) in layouts(&l) {
        for broadcast in [None, Some(false)] {
            let got = merge_rows(&left, &cut(&r, &[2, 1]), &MergeOptions::on(["k"]).broadcast(broadcast), &["a", "b"]);
            assert_eq!(ints(&col(&got, "a")), [Some(1), Some(1), Some(2)], "{label}");
            assert_eq!(ints(&col(&got, "b")), [Some(20), Some(30), Some(10)], "{label}");
        }
    }
}

/// `pd.Series(np.array([2**31 - 1, 2**31 - 1, 5], dtype="int32")).sum()` is 4294967299 (int64);
/// a boolean column sums to its trues (2) and means 2/3; per group `[1, 1]` and `[0.5, 1.0]`.
#[test]
fn narrow_integers_and_booleans_reduce_as_pandas() {
    let all = batch(vec![
        ("i", Arc::new(Int32Array::from(vec![i32::MAX, i32::MAX, 5])) as ArrayRef),
        ("f", Arc::new(arrow::array::BooleanArray::from(vec![true, false, true])) as ArrayRef),
        ("k", i64s(&[Some(1), Some(1), Some(2)])),
    ]);
    for (label, df) in layouts(&all) {
        assert_eq!(df.col("i").sum().compute_on(&s()).unwrap(), Scalar::Int(4294967299), "{label}");
        assert_eq!(df.col("f").sum().compute_on(&s()).unwrap(), Scalar::Int(2), "{label}");
        let Scalar::Float(mean) = df.col("f").mean().compute_on(&s()).unwrap() else { panic!() };
        assert!(close(mean, 2.0 / 3.0, 1e-15), "{label}");
        let g = df.groupby(["k"]).unwrap().agg([Agg::sum("f"), Agg::mean("f").alias("m")]).unwrap();
        let g = g.compute_on(&s()).unwrap();
        assert_eq!(ints(&col(&g, "f")), [Some(1), Some(1)], "{label}");
        assert_floats(&label, &floats(&col(&g, "m")), &[Some(0.5), Some(1.0)]);
    }
}

/// `pd.Series(["b", None, "a"])`: min "a", max "b", count 2; an all-missing string column's
/// min is missing; timestamps skip NaT: min 2014-01-01, max 2015-01-01.
#[test]
fn strings_and_timestamps_with_missing_values() {
    let ts: ArrayRef = Arc::new(TimestampNanosecondArray::from(vec![
        Some(1_420_070_400_000_000_000),
        None,
        Some(1_388_534_400_000_000_000),
    ]));
    let all = batch(vec![("s", strs(&[Some("b"), None, Some("a")])), ("n", strs(&[None, None, None])), ("t", ts)]);
    for (label, df) in layouts(&all) {
        assert_eq!(df.col("s").min().compute_on(&s()).unwrap(), Scalar::Str("a".into()), "{label}");
        assert_eq!(df.col("s").max().compute_on(&s()).unwrap(), Scalar::Str("b".into()), "{label}");
        assert_eq!(df.col("s").count().compute_on(&s()).unwrap(), Scalar::Int(2), "{label}");
        assert_eq!(df.col("n").min().compute_on(&s()).unwrap(), Scalar::Null, "{label}");
        assert_eq!(df.col("t").min().compute_on(&s()).unwrap(), Scalar::TimestampNs(1_388_534_400_000_000_000));
        assert_eq!(df.col("t").max().compute_on(&s()).unwrap(), Scalar::TimestampNs(1_420_070_400_000_000_000));
        let none = df.filter(&df.col("s").eq("zzz")).unwrap();
        assert_eq!(none.col("t").max().compute_on(&s()).unwrap(), Scalar::Null, "{label}");
        assert_eq!(none.col("s").min().compute_on(&s()).unwrap(), Scalar::Null, "{label}");
    }
}

/// `df.groupby(["a", "b"]).size()` with a = [-0.0, 0.0, 1.0], b all "x": two groups (2, 1);
/// `groupby("k").x.var(ddof=2)` of groups of two and one rows is NaN for both, `std(ddof=0)`
/// [1.0, 0.0].
#[test]
fn two_keys_with_signed_zero_and_ddof_edges() {
    let all = batch(vec![
        ("a", f64s(&[Some(-0.0), Some(0.0), Some(1.0)])),
        ("b", strs(&[Some("x"), Some("x"), Some("x")])),
        ("k", i64s(&[Some(1), Some(1), Some(2)])),
        ("x", f64s(&[Some(1.0), Some(3.0), Some(5.0)])),
    ]);
    for (label, df) in layouts(&all) {
        for split_out in [1, 2] {
            let g = df.groupby(["a", "b"]).unwrap().split_out(split_out).size().unwrap().compute_on(&s()).unwrap();
            let g = sorted(&g, &["a"]);
            assert_eq!(ints(&col(&g, "size")), [Some(2), Some(1)], "{label} split_out {split_out}");
        }
        let g = df
            .groupby(["k"])
            .unwrap()
            .agg([Agg::of(kiln_dataframe::AggFunc::Var { ddof: 2 }, &df.col("x")), {
                Agg::of(kiln_dataframe::AggFunc::Std { ddof: 0 }, &df.col("x")).alias("s0")
            }])
            .unwrap()
            .compute_on(&s())
            .unwrap();
        assert_floats(&label, &floats(&col(&g, "x")), &[None, None]);
        assert_floats(&label, &floats(&col(&g, "s0")), &[Some(1.0), Some(0.0)]);
    }
}

/// `df.sort_values("x", kind="stable")` of a constant column keeps the row order (one
/// division for all: every row in one partition, in input order).
#[test]
fn sorting_a_constant_column_keeps_row_order() {
    let all = batch(vec![("x", f64s(&[Some(1.0); 8])), ("v", i64s(&(1..=8).map(Some).collect::<Vec<_>>()))]);
    for (label, df) in layouts(&all) {
        for descending in [false, true] {
            let got = df.sort_values("x", descending, &s()).unwrap().compute_on(&s()).unwrap();
            assert_eq!(ints(&col(&got, "v")), (1..=8).map(Some).collect::<Vec<_>>(), "{label} {descending}");
        }
        let indexed = df.set_index("x", &s()).unwrap();
        assert_eq!(ints(&col(&indexed.compute_on(&s()).unwrap(), "v")), (1..=8).map(Some).collect::<Vec<_>>());
    }
}

/// Time windows over repeated timestamps: `s.rolling("1min").sum()` with three rows at 00:00
/// and one at 00:01 is [1, 3, 7, 8] (a row's window ends at itself, not at its last equal
/// timestamp); `rolling("2min").count()` [1, 2, 3, 4]. Seven rows of one hour over seven
/// partitions resample into one bucket (sum 28, count 7).
#[test]
fn repeated_timestamps_and_one_bucket_over_many_partitions() {
    let df = timed(&[0, 0, 0, 1], &[Some(1.0), Some(2.0), Some(4.0), Some(8.0)], &[1, 2, 1]);
    let got = df.rolling("1min").unwrap().sum().unwrap().compute_on(&s()).unwrap();
    assert_floats("rolling 1min", &floats(&col(&got, "v")), &[Some(1.0), Some(3.0), Some(7.0), Some(8.0)]);
    let got = df.rolling("2min").unwrap().count().unwrap().compute_on(&s()).unwrap();
    assert_floats("rolling 2min", &floats(&col(&got, "v")), &[Some(1.0), Some(2.0), Some(3.0), Some(4.0)]);
    let values: Vec<Option<f64>> = (1..=7).map(|i| Some(f64::from(i))).collect();
    let df = timed(&[0, 1, 2, 3, 4, 5, 6], &values, &[1; 7]);
    let got = df.resample("h").unwrap().agg([Agg::sum("v"), Agg::count("v").alias("n")]).unwrap();
    let got = got.compute_on(&s()).unwrap();
    assert_eq!(minutes(&got), [0]);
    assert_floats("one bucket", &floats(&col(&got, "v")), &[Some(28.0)]);
    assert_eq!(ints(&col(&got, "n")), [Some(7)]);
}

/// `s[s > 1].resample("7min").sum()` with rows at Jan 1 10:00 (filtered away), Jan 2 00:03
/// and 00:10: pandas counts 7-minute buckets from midnight of Jan 2 (labels 00:00 and 00:07),
/// the partitions were cut counting from Jan 1. kiln refuses instead of answering with the
/// buckets 23:55, 00:02, 00:09 (a redesign would move rows across partition edges); setting
/// the index again gives pandas' answer. A rule dividing a day is not affected.
#[test]
fn resample_by_a_rule_not_dividing_a_day_after_a_filter() {
    let df = timed(&[600, 1443, 1450], &[Some(1.0), Some(2.0), Some(4.0)], &[1, 2]);
    let kept = df.filter(&df.col("v").gt(1.0)).unwrap();
    let err = kept.resample("7min").unwrap().sum().unwrap().compute_on(&s()).unwrap_err().to_string();
    assert!(err.contains("set the index again"), "{err}");
    let again = kept.reset_index().set_index("t", &s()).unwrap();
    let got = again.resample("7min").unwrap().sum().unwrap().compute_on(&s()).unwrap();
    assert_eq!(minutes(&got), [1440, 1447]);
    assert_floats("7min", &floats(&col(&got, "v")), &[Some(2.0), Some(4.0)]);
    let got = kept.resample("15min").unwrap().sum().unwrap().compute_on(&s()).unwrap();
    assert_eq!(minutes(&got), [1440]);
    assert_floats("15min", &floats(&col(&got, "v")), &[Some(6.0)]);
}

// ---------------------------------------------------------------------------------------------
// Bad requests: a clear error or pandas' answer, never a panic

#[test]
fn extreme_arguments_give_answers_or_errors_not_panics() {
    let values = [Some(1.0), Some(2.0), Some(4.0)];
    let df = timed(&[0, 1, 2], &values, &[1, 2]);
    // pandas: shifting by more rows than there are gives all NaN, either way.
    for periods in [i64::MIN, i64::MAX, -3, 3] {
        let got = df.shift(periods).unwrap().compute_on(&s()).unwrap();
        assert_floats(&format!("shift {periods}"), &floats(&col(&got, "v")), &[None; 3]);
        let got = df.diff(periods).unwrap().compute_on(&s()).unwrap();
        assert_floats(&format!("diff {periods}"), &floats(&col(&got, "v")), &[None; 3]);
    }
    let got = df.rolling(usize::MAX).unwrap().min_periods(1).sum().unwrap().compute_on(&s()).unwrap();
    assert_floats("rolling usize::MAX", &floats(&col(&got, "v")), &[Some(1.0), Some(3.0), Some(7.0)]);
    assert!(df.rolling(0usize).is_err());
    for rule in ["0h", "99999999999999999999D", "-1h", "1.5h", "", "h2"] {
        assert!(df.resample(rule).is_err(), "resample({rule:?})");
        assert!(df.rolling(rule).is_err(), "rolling({rule:?})");
    }
    // A window far longer than any data (pandas: every earlier row).
    let got = df.rolling("100000D").unwrap().sum().unwrap().compute_on(&s()).unwrap();
    assert_floats("rolling 100000D", &floats(&col(&got, "v")), &[Some(1.0), Some(3.0), Some(7.0)]);
    // The same before 1970, where the window's start lies before i64's range of nanoseconds:
    // rows at 1900-01-01 + 0, 1, 2 minutes.
    let t: ArrayRef = Arc::new(TimestampNanosecondArray::from(vec![
        -2_208_988_800_000_000_000,
        -2_208_988_740_000_000_000,
        -2_208_988_680_000_000_000,
    ]));
    let old = batch(vec![("t", t), ("v", f64s(&values))]);
    let old = DataFrame::from_sorted_batches(vec![old.slice(0, 1), old.slice(1, 2)], "t").unwrap();
    let got = old.rolling("100000D").unwrap().sum().unwrap().compute_on(&s()).unwrap();
    assert_floats("rolling 100000D before 1970", &floats(&col(&got, "v")), &[Some(1.0), Some(3.0), Some(7.0)]);
    // One bucket of 100000 days, whose end lies past 2262: pandas labels it by its start
    // (`s.resample("100000D").sum()` is 7.0 at the first row's midnight).
    for (frame, midnight) in [(&df, 0), (&old, -2_208_988_800_000_000_000 - START)] {
        let got = frame.resample("100000D").unwrap().sum().unwrap().compute_on(&s()).unwrap();
        assert_eq!(minutes(&got), [midnight / MINUTE]);
        assert_floats("resample 100000D", &floats(&col(&got, "v")), &[Some(7.0)]);
    }
    assert_eq!(df.head(usize::MAX).compute_on(&s()).unwrap().num_rows(), 1);
    assert_eq!(df.head_from(usize::MAX, usize::MAX).compute_on(&s()).unwrap().num_rows(), 3);
    assert_eq!(df.head(0).compute_on(&s()).unwrap().num_rows(), 0);
    // var with more degrees of freedom than rows is missing (pandas: NaN).
    assert_eq!(df.col("v").var_ddof(u32::MAX).compute_on(&s()).unwrap(), Scalar::Null);
    // loc with low above high selects nothing.
    let got = df.loc(Some(Scalar::TimestampNs(START + 2 * MINUTE)), Some(Scalar::TimestampNs(START))).unwrap();
    assert_eq!(got.compute_on(&s()).unwrap().num_rows(), 0);
    // Types that do not fit are errors when written.
    let all = batch(vec![("s", strs(&[Some("a"), None])), ("x", f64s(&[Some(1.0), None]))]);
    let frame = cut(&all, &[1, 1]);
    assert!(frame.col("s").sum().check().is_err());
    assert!(frame.col("s").mean().check().is_err());
    assert!(frame.merge(&frame, &MergeOptions::left_right(["s"], ["x"])).is_err());
    assert!(frame.merge(&frame, &MergeOptions::on(Vec::<String>::new())).is_err());
    assert!(frame.sort_values("nope", false, &s()).is_err());
    assert!(frame.set_index("nope", &s()).is_err());
    assert!(frame.drop_duplicates(Some(&["nope"])).is_err());
    assert!(frame.groupby(["s"]).unwrap().agg(Vec::<Agg>::new()).is_err());
    assert!(frame.resample("h").is_err(), "no datetime index");
    assert!(frame.shift(1).is_err(), "no index");
    // Options at their edges are clamped to something that runs.
    let g = frame.groupby(["s"]).unwrap().split_out(0).split_every(0).max_branch(0).agg([Agg::count("x")]).unwrap();
    assert_eq!(ints(&col(&g.compute_on(&s()).unwrap(), "x")), [Some(1)]);
    let m = frame.merge(&frame, &MergeOptions::on(["s"]).npartitions(0).max_branch(0)).unwrap();
    assert_eq!(m.compute_on(&s()).unwrap().num_rows(), 2, "a with a, missing with missing");
    assert!(frame.shuffle(&["s"], 0).is_err());
    assert!(frame.repartition(0).is_err());
}

/// A group-by of the only column counts its groups; no columns at all (pandas' `df[[]]`,
/// which keeps its index) is refused.
#[test]
fn frames_without_value_columns() {
    let all = batch(vec![("k", i64s(&[Some(1), None, Some(1), Some(2)]))]);
    for (label, df) in layouts(&all) {
        let g = df.groupby(["k"]).unwrap().size().unwrap().compute_on(&s()).unwrap();
        assert_eq!(ints(&col(&g, "size")), [Some(2), Some(1)], "{label}");
        // kiln frames have no index to carry the rows without a column: a clear error.
        let err = df.select::<&str>(&[]).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("at least one column"), "{label}: {err}");
    }
}

/// `df.sort_values("s", ascending=False, kind="stable")` with s = ["b", None, "a", "b"]:
/// missing last in either direction, ties in row order: v = [1, 4, 3, 2].
#[test]
fn descending_strings_keep_missing_last() {
    let all = batch(vec![
        ("s", strs(&[Some("b"), None, Some("a"), Some("b")])),
        ("v", i64s(&[Some(1), Some(2), Some(3), Some(4)])),
    ]);
    for (label, df) in layouts(&all) {
        let got = df.sort_values("s", true, &s()).unwrap().compute_on(&s()).unwrap();
        assert_eq!(ints(&col(&got, "v")), [1, 4, 3, 2].map(Some), "{label}");
    }
}

/// `df.groupby(...).v.sum()` with NaT timestamps (2014-01-01: 4, 2015-01-01: 4), nullable
/// booleans (False: 3, True: 5) and float32 keys with -0.0 and 0.0 (0: 3, 1.5: 3);
/// `pd.merge(l, r, on=["a", "b"])` where both keys may be missing: (1, 20), (2, 10), (3, 30).
#[test]
fn other_key_types_with_missing_values() {
    let t: ArrayRef =
        Arc::new(TimestampNanosecondArray::from(vec![Some(START), None, Some(START), Some(1_388_534_400_000_000_000)]));
    let b: ArrayRef = Arc::new(arrow::array::BooleanArray::from(vec![Some(true), None, Some(false), Some(true)]));
    let f: ArrayRef = Arc::new(arrow::array::Float32Array::from(vec![-0.0, 0.0, 1.5, f32::NAN]));
    let all = batch(vec![("t", t), ("b", b), ("f", f), ("v", i64s(&[Some(1), Some(2), Some(3), Some(4)]))]);
    for (label, df) in layouts(&all) {
        for (key, want) in [("t", [4, 4]), ("b", [3, 5]), ("f", [3, 3])] {
            for split_out in [1, 3] {
                let g = df.groupby([key]).unwrap().split_out(split_out).agg([Agg::sum("v")]).unwrap();
                let g = sorted(&g.compute_on(&s()).unwrap(), &[key]);
                assert_eq!(ints(&col(&g, "v")), want.map(Some), "{label} by {key} split_out {split_out}");
            }
        }
        assert_eq!(df.col("f").nunique().compute_on(&s()).unwrap(), 2, "{label}");
    }
    let l = batch(vec![
        ("a", f64s(&[Some(1.0), None, Some(f64::NAN), Some(2.0)])),
        ("b", strs(&[Some("x"), Some("y"), None, Some("x")])),
        ("i", i64s(&[Some(1), Some(2), Some(3), Some(4)])),
    ]);
    let r = batch(vec![
        ("a", f64s(&[Some(f64::NAN), Some(1.0), None, Some(2.0)])),
        ("b", strs(&[Some("y"), Some("x"), None, None])),
        ("j", i64s(&[Some(10), Some(20), Some(30), Some(40)])),
    ]);
    for (label, left) in layouts(&l) {
        for broadcast in [None, Some(false)] {
            let options = MergeOptions::on(["a", "b"]).broadcast(broadcast);
            let got = merge_rows(&left, &cut(&r, &[1, 3]), &options, &["i"]);
            assert_eq!(ints(&col(&got, "i")), [1, 2, 3].map(Some), "{label}");
            assert_eq!(ints(&col(&got, "j")), [20, 10, 30].map(Some), "{label}");
        }
    }
}

/// `pd.Series(["b", "a", "c", "a", "b", "d"]).value_counts()`: b 2, a 2, c 1, d 1: most
/// frequent first, ties in order of first appearance (pandas 3.1), as one sorted result even
/// when the frame is already partitioned by the values.
#[test]
fn value_counts_orders_ties_by_first_appearance() {
    let all = batch(vec![("s", strs(&[Some("b"), Some("a"), Some("c"), Some("a"), Some("b"), Some("d")]))]);
    let want: Vec<Option<String>> = ["b", "a", "c", "d"].iter().map(|v| Some(v.to_string())).collect();
    for (label, df) in layouts(&all) {
        let vc = df.col("s").value_counts().unwrap();
        assert_eq!(vc.npartitions(), 1, "{label}");
        let got = vc.compute_on(&s()).unwrap();
        assert_eq!(texts(&col(&got, "s")), want, "{label}");
        assert_eq!(ints(&col(&got, "count")), [2, 2, 1, 1].map(Some), "{label}");
        let shuffled = df.shuffle(&["s"], 3).unwrap();
        let vc = shuffled.col("s").value_counts().unwrap();
        assert_eq!(vc.npartitions(), 1, "{label} shuffled");
        let got = vc.compute_on(&s()).unwrap();
        assert_eq!(ints(&col(&got, "count")), [2, 2, 1, 1].map(Some), "{label} shuffled");
    }
}

// ---------------------------------------------------------------------------------------------
// A law: float keys with -0.0, NaN and missing values, cut anywhere (empty partitions too),
// give what a naive pass over the rows gives, under every strategy.

mod float_keys {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// The class pandas puts a key in: `None` for NaN and missing, else the value with -0.0
    /// made 0.0 (as bits, to order it).
    fn class(k: Option<f64>) -> Option<u64> {
        k.filter(|x| !x.is_nan()).map(|x| (x + 0.0).to_bits())
    }

    /// Rows of (key, value), partition sizes to cut them by, and a `split_out`.
    type Case = (Vec<(Option<f64>, i64)>, Vec<usize>, usize);

    fn rows() -> impl Strategy<Value = Case> {
        let key = prop::option::weighted(0.85, prop::sample::select(vec![-0.0, 0.0, f64::NAN, 1.5, -2.0]));
        (prop::collection::vec((key, -50i64..50), 0..40), prop::collection::vec(0usize..5, 1..8), 1usize..4)
    }

    fn frame(rows: &[(Option<f64>, i64)], cuts: &[usize]) -> DataFrame {
        let all = batch(vec![
            ("k", f64s(&rows.iter().map(|r| r.0).collect::<Vec<_>>())),
            ("v", i64s(&rows.iter().map(|r| Some(r.1)).collect::<Vec<_>>())),
        ]);
        // Partition sizes from the cuts, the last taking the rest (zeros are empty partitions).
        let mut sizes = Vec::new();
        let mut left = rows.len();
        for &c in cuts {
            let n = c.min(left);
            sizes.push(n);
            left -= n;
        }
        sizes.push(left);
        cut(&all, &sizes)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        #[test]
        fn groupby_nunique_drop_duplicates_and_merge_match_a_naive_pass((rows, cuts, split_out) in rows()) {
            let df = frame(&rows, &cuts);
            let mut groups: BTreeMap<u64, (i64, i64)> = BTreeMap::new();
            let mut classes: BTreeMap<Option<u64>, i64> = BTreeMap::new();
            for &(k, v) in &rows {
                *classes.entry(class(k)).or_default() += 1;
                if let Some(c) = class(k) {
                    let g = groups.entry(c).or_default();
                    g.0 = g.0.wrapping_add(v);
                    g.1 += 1;
                }
            }
            let got = df.groupby(["k"]).unwrap().split_out(split_out).agg([Agg::sum("v"), Agg::size().alias("n")]);
            let got = sorted(&got.unwrap().compute_on(&s()).unwrap(), &["k"]);
            let keys: Vec<u64> = floats(&col(&got, "k")).iter().map(|k| (k.unwrap() + 0.0).to_bits()).collect();
            let mut want: Vec<(u64, (i64, i64))> = groups.into_iter().collect();
            want.sort_by(|a, b| f64::from_bits(a.0).total_cmp(&f64::from_bits(b.0)));
            prop_assert_eq!(keys, want.iter().map(|w| w.0).collect::<Vec<_>>());
            prop_assert_eq!(ints(&col(&got, "v")), want.iter().map(|w| Some(w.1.0)).collect::<Vec<_>>());
            prop_assert_eq!(ints(&col(&got, "n")), want.iter().map(|w| Some(w.1.1)).collect::<Vec<_>>());
            prop_assert_eq!(df.col("k").nunique().compute_on(&s()).unwrap(), want.len());
            let distinct = df.drop_duplicates(Some(&["k"])).unwrap().len().compute_on(&s()).unwrap();
            prop_assert_eq!(distinct, classes.len());
            // An inner self-merge pairs every two rows of a class, missing with missing.
            let pairs: i64 = classes.values().map(|n| n * n).sum();
            for broadcast in [None, Some(false)] {
                let merged = df.merge(&df, &MergeOptions::on(["k"]).broadcast(broadcast)).unwrap();
                prop_assert_eq!(merged.len().compute_on(&s()).unwrap() as i64, pairs);
            }
        }
    }
}

/// The index on tiny and empty frames: one row repartitioned into seven, `loc` on a frame a
/// filter emptied, divisions beyond the data (`df.loc[a:b]` of pandas: no rows).
#[test]
fn index_operations_on_one_row_and_no_rows() {
    let one = timed(&[5], &[Some(2.0)], &[1]);
    let more = one.repartition(7).unwrap();
    assert_eq!(more.compute_on(&s()).unwrap().num_rows(), 1);
    assert_eq!(more.len().compute_on(&s()).unwrap(), 1);
    let got = more.rolling(2usize).unwrap().min_periods(1).sum().unwrap().compute_on(&s()).unwrap();
    assert_floats("one row rolling", &floats(&col(&got, "v")), &[Some(2.0)]);
    let df = timed(&[0, 10, 20, 30], &[Some(1.0), Some(2.0), Some(4.0), Some(8.0)], &[1, 2, 1]);
    let none = df.filter(&df.col("v").gt(100.0)).unwrap();
    let got = none.loc(Some(Scalar::TimestampNs(START)), None).unwrap().compute_on(&s()).unwrap();
    assert_eq!(got.num_rows(), 0);
    let far = Scalar::TimestampNs(START + 1000 * MINUTE);
    let got = df.loc(Some(far.clone()), None).unwrap().compute_on(&s()).unwrap();
    assert_eq!(got.num_rows(), 0);
    let moved = df.repartition_divisions(vec![far, Scalar::TimestampNs(START + 2000 * MINUTE)]);
    match moved {
        Ok(m) => assert_eq!(m.compute_on(&s()).unwrap().num_rows(), 0),
        Err(e) => assert!(e.to_string().contains("division"), "{e}"),
    }
    // No rows give no divisions: set_index works, a time series on it is a clear error (pandas
    // answers an empty frame).
    let sorted = none.reset_index().set_index("t", &s()).unwrap();
    assert_eq!(sorted.compute_on(&s()).unwrap().num_rows(), 0);
    let err = sorted.resample("h").err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("divisions"), "{err}");
}

/// A filter feeding a broadcast probe (kiln probes through its mask): `l[l.a > 1]` merged
/// with r as in `merge_matches_missing_keys_to_missing_keys` keeps pairs (2,10), (2,30),
/// (4,40); `how="left_semi"` keeps a [2, 4]; a filter keeping nothing gives nothing.
#[test]
fn filtered_probes_with_missing_keys() {
    let l = batch(vec![
        ("k", f64s(&[Some(1.0), Some(f64::NAN), Some(2.0), Some(-0.0)])),
        ("a", i64s(&[Some(1), Some(2), Some(3), Some(4)])),
    ]);
    let r = batch(vec![
        ("k", f64s(&[Some(f64::NAN), Some(1.0), None, Some(0.0)])),
        ("b", i64s(&[Some(10), Some(20), Some(30), Some(40)])),
    ]);
    let right = cut(&r, &[4]);
    for (label, left) in layouts(&l) {
        let kept = left.filter(&left.col("a").gt(1)).unwrap();
        let got = merge_rows(&kept, &right, &MergeOptions::on(["k"]), &["a", "b"]);
        assert_eq!(ints(&col(&got, "a")), [2, 2, 4].map(Some), "{label}");
        assert_eq!(ints(&col(&got, "b")), [10, 30, 40].map(Some), "{label}");
        let got = merge_rows(&kept, &right, &MergeOptions::on(["k"]).how(How::Semi), &["a"]);
        assert_eq!(ints(&col(&got, "a")), [2, 4].map(Some), "{label}");
        let got = merge_rows(&kept, &right, &MergeOptions::on(["k"]).how(How::Anti), &["a"]);
        assert_eq!(ints(&col(&got, "a")), [Some(3)], "{label}");
        let none = left.filter(&left.col("a").gt(10)).unwrap();
        assert_eq!(none.merge(&right, &MergeOptions::on(["k"])).unwrap().len().compute_on(&s()).unwrap(), 0);
    }
}

/// Windows and shifts when filters leave the first and last partitions empty:
/// rows 1..=8 over [2, 2, 2, 2], kept 3..=6 (partitions 0 and 3 empty): `rolling(3).sum()`
/// [NaN, NaN, 12, 15], `shift(-1)` [4, 5, 6, NaN], `diff(-2)` [-2, -2, NaN, NaN],
/// `rolling("2min").max()` [3, 4, 5, 6] (rows a minute apart).
#[test]
fn windows_when_the_outer_partitions_are_empty() {
    let values: Vec<Option<f64>> = (1..=8).map(|i| Some(f64::from(i))).collect();
    let df = timed(&[0, 1, 2, 3, 4, 5, 6, 7], &values, &[2, 2, 2, 2]);
    let kept = df.filter(&df.col("v").between(3.0, 6.0)).unwrap();
    let got = kept.rolling(3usize).unwrap().sum().unwrap().compute_on(&s()).unwrap();
    assert_floats("rolling 3", &floats(&col(&got, "v")), &[None, None, Some(12.0), Some(15.0)]);
    let got = kept.shift(-1).unwrap().compute_on(&s()).unwrap();
    assert_floats("shift -1", &floats(&col(&got, "v")), &[Some(4.0), Some(5.0), Some(6.0), None]);
    let got = kept.diff(-2).unwrap().compute_on(&s()).unwrap();
    assert_floats("diff -2", &floats(&col(&got, "v")), &[Some(-2.0), Some(-2.0), None, None]);
    let got = kept.rolling("2min").unwrap().max().unwrap().compute_on(&s()).unwrap();
    assert_floats("rolling 2min", &floats(&col(&got, "v")), &[Some(3.0), Some(4.0), Some(5.0), Some(6.0)]);
    let got = kept.resample("2min").unwrap().count().unwrap().compute_on(&s()).unwrap();
    // s.between(3, 6) rows at minutes 2..=5: 2-minute buckets 00:02 (2 rows), 00:04 (2 rows).
    assert_eq!(minutes(&got), [2, 4]);
    assert_eq!(ints(&col(&got, "v")), [Some(2), Some(2)]);
}
