//! Audit probes of issue 13 against pandas 3.1.1 (the expected values in each test were
//! printed by pandas; the Python is quoted in the comments). Each runs on 1, 3 and 7
//! partitions where partitioning matters; NaN and missing values are in the data.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampNanosecondArray,
};
use arrow::compute::{SortColumn, lexsort_to_indices, take_record_batch};
use arrow::datatypes::{Float64Type, Int64Type};
use kiln_dataframe::{Agg, DType, DataFrame, How, MergeOptions, Scalar};
use kiln_graph::Collection;
use kiln_local::LocalScheduler;

const PARTITIONS: [usize; 3] = [1, 3, 7];

fn s() -> LocalScheduler {
    LocalScheduler::new()
}

fn frames(batch: &RecordBatch) -> Vec<(usize, DataFrame)> {
    PARTITIONS.iter().map(|&n| (n, DataFrame::from_batch(batch.clone(), n.min(batch.num_rows())).unwrap())).collect()
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

/// Floats with NaN read as missing (pandas has one missing float).
fn floats(array: &ArrayRef) -> Vec<Option<f64>> {
    array.as_primitive::<Float64Type>().iter().map(|v| v.filter(|x| !x.is_nan())).collect()
}

fn ints(array: &ArrayRef) -> Vec<Option<i64>> {
    array.as_primitive::<Int64Type>().iter().collect()
}

fn texts(array: &ArrayRef) -> Vec<Option<String>> {
    array.as_string::<i32>().iter().map(|v| v.map(str::to_string)).collect()
}

fn bools(array: &ArrayRef) -> Vec<Option<bool>> {
    array.as_boolean().iter().collect()
}

fn names(batch: &RecordBatch) -> Vec<String> {
    batch.schema().fields().iter().map(|f| f.name().clone()).collect()
}

fn sorted_by(batch: &RecordBatch, column: &str) -> RecordBatch {
    let i = batch.schema().index_of(column).unwrap();
    let idx = lexsort_to_indices(&[SortColumn { values: batch.column(i).clone(), options: None }], None);
    take_record_batch(batch, &idx.unwrap()).unwrap()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * 1f64.max(a.abs())
}

/// pandas: `pd.Series([1.0, np.nan, 5.0, -3.0])`, NaN as a float NaN and as an Arrow null.
fn nan_batch() -> RecordBatch {
    RecordBatch::try_from_iter([
        ("id", i64s(&[Some(0), Some(1), Some(2), Some(3), Some(4)])),
        ("x", f64s(&[Some(1.0), Some(f64::NAN), Some(5.0), Some(-3.0), None])),
    ])
    .unwrap()
}

#[test]
fn nan_values_are_missing_for_isna_dropna_fillna_count_clip() {
    // x = pd.Series([1.0, nan, 5.0, -3.0, nan])
    // x.isna() -> [F, T, F, F, T]; x.dropna().index -> [0, 2, 3]; x.fillna(0) -> [1, 0, 5, -3, 0]
    // x.count() -> 3; x.clip(0, 4) -> [1, nan, 4, 0, nan]; x.mean() -> 1.0
    for (n, df) in frames(&nan_batch()) {
        let isna = df.assign("m", &df.col("x").isna()).unwrap().compute_on(&s()).unwrap();
        assert_eq!(bools(isna.column(2)), [Some(false), Some(true), Some(false), Some(false), Some(true)], "{n}");
        let kept = df.dropna().compute_on(&s()).unwrap();
        assert_eq!(ints(kept.column(0)), [Some(0), Some(2), Some(3)], "dropna on {n}");
        let filled = df.assign("x", &df.col("x").fillna(0.0)).unwrap().compute_on(&s()).unwrap();
        assert_eq!(floats(filled.column(1)), [Some(1.0), Some(0.0), Some(5.0), Some(-3.0), Some(0.0)], "{n}");
        assert_eq!(df.col("x").count().compute_on(&s()).unwrap(), Scalar::Int(3), "count on {n}");
        assert_eq!(df.col("x").mean().compute_on(&s()).unwrap(), Scalar::Float(1.0), "mean on {n}");
        let clipped = df
            .assign("x", &df.col("x").clip(Some(Scalar::Float(0.0)), Some(Scalar::Float(4.0))))
            .unwrap()
            .compute_on(&s())
            .unwrap();
        assert_eq!(floats(clipped.column(1)), [Some(1.0), None, Some(4.0), Some(0.0), None], "clip on {n}");
    }
}

#[test]
fn reductions_of_only_missing_values() {
    // pd.Series([nan, nan]).mean() -> nan; .sum() -> 0.0; pd.Series([nan]).var() -> nan
    let batch = RecordBatch::try_from_iter([("x", f64s(&[None, Some(f64::NAN)]))]).unwrap();
    for (n, df) in frames(&batch) {
        let mean = df.col("x").mean().compute_on(&s()).unwrap();
        assert!(matches!(mean, Scalar::Null) || matches!(mean, Scalar::Float(v) if v.is_nan()), "{n}: {mean:?}");
        assert_eq!(df.col("x").sum().compute_on(&s()).unwrap(), Scalar::Float(0.0), "sum on {n}");
    }
}

#[test]
fn var_and_std_with_ddof_of_integers() {
    // pd.Series([1, 2, 3, 4]).var(ddof=0) -> 1.25; .std() -> 1.2909944487358056
    let batch = RecordBatch::try_from_iter([("x", i64s(&[Some(1), Some(2), None, Some(3), Some(4)]))]).unwrap();
    for (n, df) in frames(&batch) {
        let var0 = df.col("x").var_ddof(0).compute_on(&s()).unwrap().as_f64().unwrap();
        assert!(close(var0, 1.25), "{n}: {var0}");
        let std = df.col("x").std().split_every(2).compute_on(&s()).unwrap().as_f64().unwrap();
        assert!(close(std, 1.2909944487358056), "{n}: {std}");
    }
}

#[test]
fn booleans_sum_and_mean_as_pandas() {
    // pd.Series([True, False, True, True]).sum() -> 3, .mean() -> 0.75
    let batch = RecordBatch::try_from_iter([(
        "b",
        Arc::new(BooleanArray::from(vec![Some(true), Some(false), Some(true), Some(true)])) as ArrayRef,
    )])
    .unwrap();
    for (n, df) in frames(&batch) {
        assert_eq!(df.col("b").sum().compute_on(&s()).unwrap().as_i64(), Some(3), "{n}");
        assert_eq!(df.col("b").mean().compute_on(&s()).unwrap(), Scalar::Float(0.75), "{n}");
    }
}

#[test]
fn groupby_single_row_groups_and_missing_values() {
    // g = pd.DataFrame({"k": [1, 1, 2, 3, 3], "x": [1.0, 3.0, 5.0, nan, 2.0]})
    // g.groupby("k").x.agg(["var", "std", "mean", "count", "size", "sum", "min"]) ->
    // var [2.0, nan, nan], std [1.414.., nan, nan], mean [2, 5, 2], count [2, 1, 1],
    // size [2, 1, 2], sum [4, 5, 2], min [1, 5, 2]
    let batch = RecordBatch::try_from_iter([
        ("k", i64s(&[Some(1), Some(1), Some(2), Some(3), Some(3)])),
        ("x", f64s(&[Some(1.0), Some(3.0), Some(5.0), Some(f64::NAN), Some(2.0)])),
    ])
    .unwrap();
    for (n, df) in frames(&batch) {
        for split_out in [1, 2] {
            let out = df
                .groupby(["k"])
                .unwrap()
                .split_out(split_out)
                .agg([
                    Agg::var("x").alias("var"),
                    Agg::std("x").alias("std"),
                    Agg::mean("x").alias("mean"),
                    Agg::count("x").alias("count"),
                    Agg::size().alias("size"),
                    Agg::sum("x").alias("sum"),
                    Agg::min("x").alias("min"),
                ])
                .unwrap()
                .compute_on(&s())
                .unwrap();
            let out = sorted_by(&out, "k");
            assert_eq!(names(&out), ["k", "var", "std", "mean", "count", "size", "sum", "min"]);
            let at = |c: &str| floats(out.column(out.schema().index_of(c).unwrap()));
            let label = format!("{n} partitions, split_out {split_out}");
            assert_eq!(at("var"), [Some(2.0), None, None], "{label}");
            assert_eq!(at("std")[1..], [None, None], "{label}");
            assert!(close(at("std")[0].unwrap(), std::f64::consts::SQRT_2), "{label}");
            assert_eq!(at("mean"), [Some(2.0), Some(5.0), Some(2.0)], "{label}");
            assert_eq!(ints(out.column(4)), [Some(2), Some(1), Some(1)], "{label}");
            assert_eq!(ints(out.column(5)), [Some(2), Some(1), Some(2)], "{label}");
            assert_eq!(at("sum"), [Some(4.0), Some(5.0), Some(2.0)], "{label}");
            assert_eq!(at("min"), [Some(1.0), Some(5.0), Some(2.0)], "{label}");
        }
    }
}

#[test]
fn strings_compare_and_between_as_pandas() {
    // pd.Series(["a", "b", "c", "d", "e", None]).between("b", "d") -> [F, T, T, T, F, F]
    // (pd.Series(["a", "c", None]) > "b") -> [F, T, F]
    let batch =
        RecordBatch::try_from_iter([("s", strs(&[Some("a"), Some("b"), Some("c"), Some("d"), Some("e"), None]))])
            .unwrap();
    for (n, df) in frames(&batch) {
        let out = df
            .assign("between", &df.col("s").between("b", "d"))
            .unwrap()
            .assign("gt", &df.col("s").gt("b"))
            .unwrap()
            .compute_on(&s())
            .unwrap();
        let f = Some(false);
        let t = Some(true);
        assert_eq!(bools(out.column(1)), [f, t, t, t, f, f], "between on {n}");
        assert_eq!(bools(out.column(2)), [f, f, t, t, t, f], "gt on {n}");
    }
}

#[test]
fn fillna_of_text_and_assign_over_a_column_keeps_its_place() {
    // pd.Series(["a", None]).fillna("z") -> ["a", "z"]
    // d = pd.DataFrame({"a": [1, 2], "b": [3, 4], "c": [5, 6]}); list(d.assign(a=d.b * 2).columns)
    // -> ["a", "b", "c"], a = [6, 8]
    let batch = RecordBatch::try_from_iter([
        ("a", i64s(&[Some(1), Some(2)])),
        ("b", i64s(&[Some(3), Some(4)])),
        ("c", i64s(&[Some(5), Some(6)])),
        ("t", strs(&[Some("a"), None])),
    ])
    .unwrap();
    for (n, df) in frames(&batch) {
        let out = df
            .assign("t", &df.col("t").fillna("z"))
            .unwrap()
            .assign("a", &(df.col("b") * 2))
            .unwrap()
            .compute_on(&s())
            .unwrap();
        assert_eq!(names(&out), ["a", "b", "c", "t"], "{n}");
        assert_eq!(ints(out.column(0)), [Some(6), Some(8)], "{n}");
        assert_eq!(texts(out.column(3)), [Some("a".to_string()), Some("z".to_string())], "{n}");
    }
}

#[test]
fn round_to_tens_halves_to_even() {
    // pd.Series([15.0, 25.0, -35.0, 1234.5678]).round(-1) -> [20.0, 20.0, -40.0, 1230.0]
    let batch =
        RecordBatch::try_from_iter([("x", f64s(&[Some(15.0), Some(25.0), Some(-35.0), Some(1234.5678), None]))])
            .unwrap();
    for (n, df) in frames(&batch) {
        let out = df.assign("x", &df.col("x").round(-1)).unwrap().compute_on(&s()).unwrap();
        assert_eq!(floats(out.column(0)), [Some(20.0), Some(20.0), Some(-40.0), Some(1230.0), None], "{n}");
    }
}

#[test]
fn astype_truncates_floats_and_formats_numbers() {
    // pd.Series([1.7, -1.7, 2.5]).astype("int64") -> [1, -1, 2]
    // pd.Series([3, -2]).astype(str) -> ["3", "-2"]; pd.Series([1.5, None]).astype(str) -> ["1.5", nan]
    let batch = RecordBatch::try_from_iter([
        ("x", f64s(&[Some(1.7), Some(-1.7), Some(2.5)])),
        ("i", i64s(&[Some(3), Some(-2), None])),
    ])
    .unwrap();
    for (n, df) in frames(&batch) {
        let out = df
            .assign("xi", &df.col("x").astype(DType::Int64))
            .unwrap()
            .assign("is", &df.col("i").astype(DType::Utf8))
            .unwrap()
            .compute_on(&s())
            .unwrap();
        assert_eq!(ints(out.column(2)), [Some(1), Some(-1), Some(2)], "{n}");
        assert_eq!(texts(out.column(3)), [Some("3".into()), Some("-2".into()), None], "{n}");
    }
}

#[test]
fn distinct_counts_skip_nan() {
    // s = pd.Series([1.0, nan, 1.0, 2.0, nan, 3.0, 3.0, 3.0])
    // s.nunique() -> 3; s.value_counts() -> {3.0: 3, 1.0: 2, 2.0: 1}
    let batch = RecordBatch::try_from_iter([(
        "x",
        f64s(&[Some(1.0), Some(f64::NAN), Some(1.0), Some(2.0), None, Some(3.0), Some(3.0), Some(3.0)]),
    )])
    .unwrap();
    for (n, df) in frames(&batch) {
        assert_eq!(df.col("x").nunique().compute_on(&s()).unwrap(), 3, "{n}");
        let counts = df.col("x").value_counts().unwrap().compute_on(&s()).unwrap();
        assert_eq!(floats(counts.column(0)), [Some(3.0), Some(1.0), Some(2.0)], "{n}");
        assert_eq!(ints(counts.column(1)), [Some(3), Some(2), Some(1)], "{n}");
    }
}

#[test]
fn describe_of_a_small_series_is_exact() {
    // pd.Series([1.0, 2.0, nan, 4.0, 10.0]).describe() -> count 4, mean 4.25,
    // std 4.031128874149275, min 1, 25% 1.75, 50% 3, 75% 5.5, max 10
    let batch =
        RecordBatch::try_from_iter([("x", f64s(&[Some(1.0), Some(2.0), None, Some(4.0), Some(10.0)]))]).unwrap();
    let expected =
        [("count", 4.0), ("mean", 4.25), ("std", 4.031128874149275), ("min", 1.0), ("25%", 1.75), ("50%", 3.0)];
    for (n, df) in frames(&batch) {
        let got = df.col("x").describe(&s()).unwrap();
        for (name, value) in expected.iter().chain(&[("75%", 5.5), ("max", 10.0)]) {
            let found = got.iter().find(|(k, _)| k == name).unwrap_or_else(|| panic!("{n}: no {name} in {got:?}"));
            assert!(close(found.1, *value), "{n}: {name} = {} not {value}", found.1);
        }
    }
}

#[test]
fn drop_duplicates_treats_nan_as_equal() {
    // d = pd.DataFrame({"a": [1.0, nan, 1.0, nan, 2.0], "b": ["x", "y", "x", "y", None]})
    // d.drop_duplicates().index -> [0, 1, 4]; d.drop_duplicates(subset=["a"]).index -> [0, 1, 4]
    let batch = RecordBatch::try_from_iter([
        ("id", i64s(&[Some(0), Some(1), Some(2), Some(3), Some(4)])),
        ("a", f64s(&[Some(1.0), Some(f64::NAN), Some(1.0), None, Some(2.0)])),
        ("b", strs(&[Some("x"), Some("y"), Some("x"), Some("y"), None])),
    ])
    .unwrap();
    for (n, df) in frames(&batch) {
        let all = df.select(&["a", "b"]).unwrap().drop_duplicates(None).unwrap().compute_on(&s()).unwrap();
        assert_eq!(all.num_rows(), 3, "{n}");
        let sub = df.drop_duplicates(Some(&["a"])).unwrap().compute_on(&s()).unwrap();
        let mut ids = ints(sub.column(0));
        ids.sort();
        assert_eq!(ids, [Some(0), Some(1), Some(4)], "{n}");
    }
}

#[test]
fn head_takes_rows_from_as_many_partitions_as_it_needs() {
    // pd.DataFrame({"id": range(10)}).head(5).id -> [0, 1, 2, 3, 4]
    let batch = RecordBatch::try_from_iter([("id", i64s(&(0..10).map(Some).collect::<Vec<_>>()))]).unwrap();
    for (n, df) in frames(&batch) {
        let head = df.head_from(5, n).compute_on(&s()).unwrap();
        assert_eq!(ints(head.column(0)), [Some(0), Some(1), Some(2), Some(3), Some(4)], "{n}");
        assert_eq!(df.head(0).compute_on(&s()).unwrap().num_rows(), 0, "{n}");
        assert_eq!(df.head_from(50, n).compute_on(&s()).unwrap().num_rows(), 10, "{n}");
        // Dask's head(n) reads the first partition only (and warns when it is short).
        assert_eq!(df.head(5).compute_on(&s()).unwrap().num_rows(), 5.min(10 / n), "{n}");
    }
}

#[test]
fn merge_on_differently_named_keys_keeps_both_and_suffixes_the_rest() {
    // l = pd.DataFrame({"a": [1, 2, 3], "v": [10, 20, 30]})
    // r = pd.DataFrame({"b": [2, 3, 4], "v": [200, 300, 400]})
    // l.merge(r, left_on="a", right_on="b", how="outer") -> columns ["a", "v_x", "b", "v_y"],
    // a [1, 2, 3, nan], v_x [10, 20, 30, nan], b [nan, 2, 3, 4], v_y [nan, 200, 300, 400]
    // with suffixes=("_l", "_r"): columns ["a", "v_l", "b", "v_r"]
    let left = RecordBatch::try_from_iter([
        ("a", i64s(&[Some(1), Some(2), Some(3)])),
        ("v", i64s(&[Some(10), Some(20), Some(30)])),
    ])
    .unwrap();
    let right = RecordBatch::try_from_iter([
        ("b", i64s(&[Some(2), Some(3), Some(4)])),
        ("v", i64s(&[Some(200), Some(300), Some(400)])),
    ])
    .unwrap();
    for (n, l) in frames(&left) {
        for m in [1, 2] {
            let r = DataFrame::from_batch(right.clone(), m).unwrap();
            let out =
                l.merge(&r, &MergeOptions::left_right(["a"], ["b"]).how(How::Outer)).unwrap().compute_on(&s()).unwrap();
            assert_eq!(names(&out), ["a", "v_x", "b", "v_y"], "{n}/{m}");
            let out = sorted_by(&out, "b");
            // Sorted by b, nulls first: the left-only row, then 2, 3, 4.
            assert_eq!(ints(out.column(0)), [Some(1), Some(2), Some(3), None], "{n}/{m}");
            assert_eq!(ints(out.column(1)), [Some(10), Some(20), Some(30), None], "{n}/{m}");
            assert_eq!(ints(out.column(3)), [None, Some(200), Some(300), Some(400)], "{n}/{m}");
            let named = l
                .merge(&r, &MergeOptions::left_right(["a"], ["b"]).suffixes("_l", "_r"))
                .unwrap()
                .compute_on(&s())
                .unwrap();
            assert_eq!(names(&named), ["a", "v_l", "b", "v_r"], "{n}/{m}");
            assert_eq!(named.num_rows(), 2, "{n}/{m}");
        }
    }
}

fn ts_batch() -> RecordBatch {
    // 2015-01-01 00:00, 05:00, 2015-01-02 03:00, 23:00, 2015-01-03 01:00
    let h = 3_600_000_000_000i64;
    let day = 24 * h;
    let t0 = 1_420_070_400_000_000_000i64;
    let ts =
        TimestampNanosecondArray::from(vec![t0, t0 + 5 * h, t0 + day + 3 * h, t0 + day + 23 * h, t0 + 2 * day + h]);
    RecordBatch::try_from_iter([
        ("ts", Arc::new(ts) as ArrayRef),
        ("v", i64s(&[Some(1), Some(2), Some(3), Some(4), Some(5)])),
    ])
    .unwrap()
}

#[test]
fn join_left_on_the_index_keeps_every_left_row() {
    // li = pd.DataFrame({"k": [1, 2, 3], "x": [10, 20, 30]}).set_index("k")
    // ri = pd.DataFrame({"k": [2, 3, 4], "y": [200, 300, 400]}).set_index("k")
    // li.join(ri, how="left").reset_index() -> k [1, 2, 3], x [10, 20, 30], y [nan, 200, 300]
    // li.join(ri, how="outer") -> k [1, 2, 3, 4]
    let left = RecordBatch::try_from_iter([
        ("k", i64s(&[Some(1), Some(2), Some(3)])),
        ("x", i64s(&[Some(10), Some(20), Some(30)])),
    ])
    .unwrap();
    let right = RecordBatch::try_from_iter([
        ("k", i64s(&[Some(2), Some(3), Some(4)])),
        ("y", i64s(&[Some(200), Some(300), Some(400)])),
    ])
    .unwrap();
    let l = DataFrame::from_sorted_batches(vec![left.slice(0, 1), left.slice(1, 2)], "k").unwrap();
    let r = DataFrame::from_sorted_batches(vec![right.slice(0, 2), right.slice(2, 1)], "k").unwrap();
    let out = sorted_by(&l.join(&r, How::Left).unwrap().compute_on(&s()).unwrap(), "k");
    assert_eq!(names(&out), ["k", "x", "y"]);
    assert_eq!(ints(out.column(2)), [None, Some(200), Some(300)]);
    let outer = sorted_by(&l.join(&r, How::Outer).unwrap().compute_on(&s()).unwrap(), "k");
    assert_eq!(ints(outer.column(0)), [Some(1), Some(2), Some(3), Some(4)]);
}

#[test]
fn astype_to_text_of_floats() {
    // pd.Series([1.0, 2.5]).astype(str) -> ["1.0", "2.5"]
    let batch = RecordBatch::try_from_iter([("x", f64s(&[Some(1.0), Some(2.5)]))]).unwrap();
    for (n, df) in frames(&batch) {
        let out = df.assign("xs", &df.col("x").astype(DType::Utf8)).unwrap().compute_on(&s()).unwrap();
        assert_eq!(texts(out.column(1)), [Some("1.0".into()), Some("2.5".into())], "{n}");
    }
}

fn indexed_ts(cuts: &[usize]) -> DataFrame {
    let batch = ts_batch();
    let v = arrow::compute::cast(batch.column(1), &arrow::datatypes::DataType::Float64).unwrap();
    let batch = RecordBatch::try_from_iter([("ts", batch.column(0).clone()), ("v", v)]).unwrap();
    let mut parts = Vec::new();
    let mut start = 0;
    for &end in cuts.iter().chain(&[batch.num_rows()]) {
        parts.push(batch.slice(start, end - start));
        start = end;
    }
    DataFrame::from_sorted_batches(parts, "ts").unwrap()
}

#[test]
fn rolling_time_spans_min_var_count_across_partition_edges() {
    // t = pd.DataFrame({"v": [1.0, 2.0, 3.0, 4.0, 5.0]}, index=<the five timestamps above>)
    // t.rolling("1D").min() -> [1, 1, 2, 3, 3]; t.rolling("1D").var() -> [nan, .5, .5, .5, 1.0]
    // t.rolling("26h").count() -> [1, 2, 2, 2, 3]; t.rolling(2).min() -> [nan, 1, 2, 3, 4]
    for cuts in [vec![], vec![2, 4], vec![1, 2, 3, 4]] {
        let df = indexed_ts(&cuts);
        let min = df.rolling("1D").unwrap().min().unwrap().compute_on(&s()).unwrap();
        assert_eq!(floats(min.column(1)), [Some(1.0), Some(1.0), Some(2.0), Some(3.0), Some(3.0)], "{cuts:?}");
        let var = df.rolling("1D").unwrap().var().unwrap().compute_on(&s()).unwrap();
        assert_eq!(floats(var.column(1)), [None, Some(0.5), Some(0.5), Some(0.5), Some(1.0)], "{cuts:?}");
        let count = df.rolling("26h").unwrap().count().unwrap().compute_on(&s()).unwrap();
        assert_eq!(floats(count.column(1)), [Some(1.0), Some(2.0), Some(2.0), Some(2.0), Some(3.0)], "{cuts:?}");
        let rows = df.rolling(2).unwrap().min().unwrap().compute_on(&s()).unwrap();
        assert_eq!(floats(rows.column(1)), [None, Some(1.0), Some(2.0), Some(3.0), Some(4.0)], "{cuts:?}");
        let same = df.shift(0).unwrap().compute_on(&s()).unwrap();
        assert_eq!(floats(same.column(1)), [Some(1.0), Some(2.0), Some(3.0), Some(4.0), Some(5.0)], "{cuts:?}");
    }
}

#[test]
fn repartition_to_divisions_that_do_not_cover_the_rows_loses_none_silently() {
    // Dask: repartition(divisions=...) whose ends lie inside the data raises ValueError
    // ("left side of the new division must be equal or smaller than old division").
    let df = indexed_ts(&[2, 4]);
    let h = 3_600_000_000_000i64;
    let t0 = 1_420_070_400_000_000_000i64;
    let narrow = vec![Scalar::TimestampNs(t0 + h), Scalar::TimestampNs(t0 + 30 * h)];
    match df.repartition_divisions(narrow) {
        Err(_) => {}
        Ok(moved) => match moved.compute_on(&s()) {
            Err(_) => {}
            Ok(out) => assert_eq!(out.num_rows(), 5, "rows lost by repartition_divisions"),
        },
    }
}

#[test]
fn semi_and_anti_merges_match_missing_keys_as_inner_does() {
    // pandas' merge matches NaN keys: l.merge(r, on="k").k -> [1.0, nan] for
    // l.k = [1.0, nan, 2.0], r.k = [nan, 1.0]; so semi keeps [1.0, nan] and anti [2.0]
    // (as l[l.k.isin(r.k)] and l[~l.k.isin(r.k)] do).
    let left = RecordBatch::try_from_iter([
        ("k", f64s(&[Some(1.0), None, Some(2.0)])),
        ("id", i64s(&[Some(0), Some(1), Some(2)])),
    ])
    .unwrap();
    let right = RecordBatch::try_from_iter([("k", f64s(&[None, Some(1.0)]))]).unwrap();
    for (n, l) in frames(&left) {
        for m in [1, 2] {
            let r = DataFrame::from_batch(right.clone(), m).unwrap();
            let ids = |how: How| {
                let out = l.merge(&r, &MergeOptions::on(["k"]).how(how)).unwrap().compute_on(&s()).unwrap();
                let mut v = ints(out.column(out.schema().index_of("id").unwrap()));
                v.sort();
                v
            };
            assert_eq!(ids(How::Inner), [Some(0), Some(1)], "inner {n}/{m}");
            assert_eq!(ids(How::Semi), [Some(0), Some(1)], "semi {n}/{m}");
            assert_eq!(ids(How::Anti), [Some(2)], "anti {n}/{m}");
        }
    }
}

#[test]
fn text_minimum_maximum_and_counts() {
    // s = pd.Series(["b", None, "a", "c"]); s.min() -> "a"; s.max() -> "c"
    // pd.DataFrame({"k": [1, 1, 2], "s": ["b", "a", None]}).groupby("k").s.agg(["min", "max"])
    // -> min ["a", nan], max ["b", nan]
    // pd.Series(["a", None, "b", "a"]).value_counts() -> {"a": 2, "b": 1}
    let batch = RecordBatch::try_from_iter([("s", strs(&[Some("b"), None, Some("a"), Some("c")]))]).unwrap();
    for (n, df) in frames(&batch) {
        assert_eq!(df.col("s").min().compute_on(&s()).unwrap(), Scalar::from("a"), "{n}");
        assert_eq!(df.col("s").max().compute_on(&s()).unwrap(), Scalar::from("c"), "{n}");
    }
    let grouped = RecordBatch::try_from_iter([
        ("k", i64s(&[Some(1), Some(1), Some(2)])),
        ("s", strs(&[Some("b"), Some("a"), None])),
    ])
    .unwrap();
    for (n, df) in frames(&grouped) {
        let out = df.groupby(["k"]).unwrap().agg([Agg::min("s"), Agg::max("s").alias("smax")]).unwrap();
        let out = sorted_by(&out.compute_on(&s()).unwrap(), "k");
        assert_eq!(texts(out.column(1)), [Some("a".into()), None], "{n}");
        assert_eq!(texts(out.column(2)), [Some("b".into()), None], "{n}");
    }
    let counted = RecordBatch::try_from_iter([("s", strs(&[Some("a"), None, Some("b"), Some("a")]))]).unwrap();
    for (n, df) in frames(&counted) {
        let out = df.col("s").value_counts().unwrap().compute_on(&s()).unwrap();
        assert_eq!(texts(out.column(0)), [Some("a".into()), Some("b".into())], "{n}");
        assert_eq!(ints(out.column(1)), [Some(2), Some(1)], "{n}");
    }
}

#[test]
fn quantiles_of_integers_interpolate_linearly() {
    // pd.Series([1, 2, 3, 4]).quantile([0.5, 0.1]) -> [2.5, 1.3]
    let batch = RecordBatch::try_from_iter([("x", i64s(&[Some(1), Some(2), None, Some(3), Some(4)]))]).unwrap();
    for (n, df) in frames(&batch) {
        let q = df.col("x").quantile(&[0.5, 0.1]).unwrap().compute_on(&s()).unwrap();
        assert!(close(q[0], 2.5) && close(q[1], 1.3), "{n}: {q:?}");
    }
}

#[test]
fn groupby_of_booleans_sums_and_averages_them() {
    // d = pd.DataFrame({"k": [1, 1, 2, 2, 2], "b": [True, False, True, True, False]})
    // d.groupby("k").b.agg(["sum", "mean", "count"]) -> sum [1, 2], mean [0.5, 2/3], count [2, 3]
    let batch = RecordBatch::try_from_iter([
        ("k", i64s(&[Some(1), Some(1), Some(2), Some(2), Some(2)])),
        ("b", Arc::new(BooleanArray::from(vec![true, false, true, true, false])) as ArrayRef),
    ])
    .unwrap();
    for (n, df) in frames(&batch) {
        let out = df
            .groupby(["k"])
            .unwrap()
            .agg([Agg::sum("b").alias("sum"), Agg::mean("b").alias("mean"), Agg::count("b").alias("count")])
            .unwrap();
        let out = sorted_by(&out.compute_on(&s()).unwrap(), "k");
        let sum = arrow::compute::cast(out.column(1), &arrow::datatypes::DataType::Int64).unwrap();
        assert_eq!(ints(&sum), [Some(1), Some(2)], "{n}");
        let mean = floats(out.column(2));
        assert!(mean[0] == Some(0.5) && close(mean[1].unwrap(), 2.0 / 3.0), "{n}: {mean:?}");
        assert_eq!(ints(out.column(3)), [Some(2), Some(3)], "{n}");
    }
}

#[test]
fn loc_of_a_repeated_index_value_finds_every_row() {
    // k = [0]*5 + [5]*20 + [9]*15; pd.DataFrame({"k": k}).set_index("k").loc[5:5] -> 20 rows
    let k: Vec<Option<i64>> = (0..40)
        .map(|i| {
            Some(if i < 5 {
                0
            } else if i < 25 {
                5
            } else {
                9
            })
        })
        .collect();
    let id: Vec<Option<i64>> = (0..40).map(Some).collect();
    let batch = RecordBatch::try_from_iter([("id", i64s(&id)), ("k", i64s(&k))]).unwrap();
    for (n, df) in frames(&batch) {
        let indexed = df.set_index("k", &s()).unwrap();
        let rows = indexed.loc(Some(Scalar::Int(5)), Some(Scalar::Int(5))).unwrap().compute_on(&s()).unwrap();
        assert_eq!(rows.num_rows(), 20, "set_index on {n}");
        let count = indexed.len().compute_on(&s()).unwrap();
        assert_eq!(count, 40, "{n}");
    }
}

#[test]
fn head_of_a_sorted_frame_is_the_smallest_rows() {
    // pd.DataFrame({"x": [5, 3, 9, 1, 7, 2, 8, 0, 6, 4]}).sort_values("x").head(3).x -> [0, 1, 2]
    let x = [5, 3, 9, 1, 7, 2, 8, 0, 6, 4].map(Some);
    let batch = RecordBatch::try_from_iter([("x", i64s(&x))]).unwrap();
    for (n, df) in frames(&batch) {
        let sorted = df.sort_values("x", false, &s()).unwrap();
        let head = sorted.head_from(3, sorted.npartitions()).compute_on(&s()).unwrap();
        assert_eq!(ints(head.column(0)), [Some(0), Some(1), Some(2)], "{n}");
        let descending = df.sort_values("x", true, &s()).unwrap();
        let top = descending.head_from(2, descending.npartitions()).compute_on(&s()).unwrap();
        assert_eq!(ints(top.column(0)), [Some(9), Some(8)], "{n}");
    }
}

/// k = [0]*5 + [5]*20 + [9]*15 in four sorted batches of 10 rows: the boundaries repeat 5 and 9.
fn repeated_boundaries() -> Vec<RecordBatch> {
    let k: Vec<Option<i64>> = (0..40)
        .map(|i| {
            Some(if i < 5 {
                0
            } else if i < 25 {
                5
            } else {
                9
            })
        })
        .collect();
    let id: Vec<Option<i64>> = (0..40).map(Some).collect();
    let batch = RecordBatch::try_from_iter([("id", i64s(&id)), ("k", i64s(&k))]).unwrap();
    [0, 10, 20, 30].iter().map(|&o| batch.slice(o, 10)).collect()
}

#[test]
fn loc_between_values_when_sorted_batches_repeat_a_boundary_value() {
    let sorted = DataFrame::from_sorted_batches(repeated_boundaries(), "k").unwrap();
    let rows = sorted.loc(Some(Scalar::Int(1)), Some(Scalar::Int(8))).unwrap().compute_on(&s()).unwrap();
    assert_eq!(rows.num_rows(), 20, "from_sorted_batches loc[1:8]");
}

#[test]
fn join_on_an_index_whose_batches_repeat_a_boundary_value() {
    // d = pd.DataFrame({"k": k, "id": range(40)}).set_index("k"); len(d.join(d, rsuffix="_r")) -> 650
    let left = DataFrame::from_sorted_batches(repeated_boundaries(), "k").unwrap();
    let right = DataFrame::from_sorted_batches(repeated_boundaries(), "k").unwrap().rename(&[("id", "rid")]).unwrap();
    let joined = left.join(&right, How::Inner).unwrap();
    assert_eq!(joined.len().compute_on(&s()).unwrap(), 650);
}

#[test]
fn resample_when_sorted_batches_repeat_a_boundary_value() {
    // The same k read as seconds since the epoch: .resample("5s").size() -> [5, 35]
    // (bucket [0 s, 5 s) holds the five 0s, [5 s, 10 s) the twenty 5s and fifteen 9s).
    let parts: Vec<RecordBatch> = repeated_boundaries()
        .into_iter()
        .map(|b| {
            let ts = arrow::compute::cast(
                &arrow::compute::kernels::numeric::mul(b.column(1), &Int64Array::new_scalar(1_000_000_000)).unwrap(),
                &arrow::datatypes::DataType::Timestamp(arrow::datatypes::TimeUnit::Nanosecond, None),
            )
            .unwrap();
            RecordBatch::try_from_iter([("ts", ts), ("id", b.column(0).clone())]).unwrap()
        })
        .collect();
    let df = DataFrame::from_sorted_batches(parts, "ts").unwrap();
    let out = df.resample("5s").unwrap().size().unwrap().compute_on(&s()).unwrap();
    assert_eq!(ints(out.column(1)), [Some(5), Some(35)]);
}

fn temp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-audit-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_late_value_of_another_type_than_the_sample_is_an_error_naming_the_column_not_a_null() {
    // pandas reads the whole file: x becomes float64 with 1.5 in row 1500. Dask (sampling)
    // raises a ValueError naming the column ("Mismatched dtypes ... x int64 float64").
    let dir = temp("late-type");
    let mut text = String::from("id,x\n");
    for i in 0..2000 {
        text.push_str(&format!("{i},{}\n", if i == 1500 { "1.5".to_string() } else { i.to_string() }));
    }
    std::fs::write(dir.join("a.csv"), text).unwrap();
    let df = kiln_dataframe::read_csv(&format!("{}/*.csv", dir.display()), &Default::default()).unwrap();
    match df.compute_on(&s()) {
        Ok(batch) => {
            let x = arrow::compute::cast(batch.column(1), &arrow::datatypes::DataType::Float64).unwrap();
            assert_eq!(floats(&x)[1500], Some(1.5), "the value read back");
        }
        Err(e) => assert!(e.to_string().contains('x') && e.to_string().contains("1.5"), "{e}"),
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn join_and_repartition_of_an_index_whose_batches_repeat_a_boundary_value() {
    // d.join(r) with r = pd.DataFrame({"k": [0, 5, 9], "name": [...]}).set_index("k") -> 40 rows
    let left = DataFrame::from_sorted_batches(repeated_boundaries(), "k").unwrap();
    let right_batch = RecordBatch::try_from_iter([
        ("k", i64s(&[Some(0), Some(5), Some(9)])),
        ("name", strs(&[Some("zero"), Some("five"), Some("nine")])),
    ])
    .unwrap();
    for cuts in [vec![3], vec![1, 2], vec![2, 1]] {
        let mut parts = Vec::new();
        let mut start = 0;
        for len in &cuts {
            parts.push(right_batch.slice(start, *len));
            start += len;
        }
        let right = DataFrame::from_sorted_batches(parts, "k").unwrap();
        for how in [How::Inner, How::Left] {
            let joined = left.join(&right, how).unwrap();
            let out = joined.compute_on(&s()).unwrap();
            assert_eq!(out.num_rows(), 40, "{cuts:?} {how:?}");
            assert_eq!(out.column(2).null_count(), 0, "{cuts:?} {how:?}: unmatched rows");
        }
    }
    let moved = left.repartition_divisions(vec![Scalar::Int(0), Scalar::Int(5), Scalar::Int(9)]).unwrap();
    let parts = moved.partitions().compute_on(&s()).unwrap();
    let sizes: Vec<usize> = parts.iter().map(RecordBatch::num_rows).collect();
    // pandas' half-open divisions: [0, 5) holds the five 0s, [5, 9] the rest.
    assert_eq!(sizes, [5, 35]);
}

/// The five timestamps with v = [1.0, NaN, 3.0, NaN, 5.0] (NaN as a float, not a null).
fn nan_series(cuts: &[usize]) -> DataFrame {
    let batch = ts_batch();
    let v = f64s(&[Some(1.0), Some(f64::NAN), Some(3.0), Some(f64::NAN), Some(5.0)]);
    let batch = RecordBatch::try_from_iter([("ts", batch.column(0).clone()), ("v", v)]).unwrap();
    let mut parts = Vec::new();
    let mut start = 0;
    for &end in cuts.iter().chain(&[batch.num_rows()]) {
        parts.push(batch.slice(start, end - start));
        start = end;
    }
    DataFrame::from_sorted_batches(parts, "ts").unwrap()
}

#[test]
fn nan_values_are_skipped_by_max_min_resample_rolling_and_diff() {
    // t = pd.DataFrame({"v": [1.0, nan, 3.0, nan, 5.0]}, index=<the five timestamps>)
    // t.v.max() -> 5.0, t.v.min() -> 1.0
    // t.resample("D").max() -> [1, 3, 5]; .mean() -> [1, 3, 5]; .count() -> [1, 1, 1]
    // t.rolling(2).sum() -> all nan; t.rolling(2, min_periods=1).max() -> [1, 1, 3, 3, 5]
    // t.rolling("1D").max() -> [1, 1, 3, 3, 5]; .mean() -> [1, 1, 3, 3, 4]; .count() -> [1, 1, 1, 1, 2]
    // t.diff() -> all nan
    for cuts in [vec![], vec![2, 4], vec![1, 2, 3, 4]] {
        let df = nan_series(&cuts);
        let v = df.col("v");
        assert_eq!(v.max().compute_on(&s()).unwrap(), Scalar::Float(5.0), "{cuts:?}");
        assert_eq!(v.min().compute_on(&s()).unwrap(), Scalar::Float(1.0), "{cuts:?}");
        let column = |out: RecordBatch| floats(out.column(1));
        let day = df.resample("D").unwrap();
        assert_eq!(column(day.max().unwrap().compute_on(&s()).unwrap()), [Some(1.0), Some(3.0), Some(5.0)], "{cuts:?}");
        assert_eq!(
            column(day.mean().unwrap().compute_on(&s()).unwrap()),
            [Some(1.0), Some(3.0), Some(5.0)],
            "{cuts:?}"
        );
        let counts = day.count().unwrap().compute_on(&s()).unwrap();
        assert_eq!(ints(counts.column(1)), [Some(1), Some(1), Some(1)], "{cuts:?}");
        let sum2 = column(df.rolling(2).unwrap().sum().unwrap().compute_on(&s()).unwrap());
        assert_eq!(sum2, [None; 5], "{cuts:?}");
        let max2 = column(df.rolling(2).unwrap().min_periods(1).max().unwrap().compute_on(&s()).unwrap());
        assert_eq!(max2, [Some(1.0), Some(1.0), Some(3.0), Some(3.0), Some(5.0)], "{cuts:?}");
        let span = df.rolling("1D").unwrap();
        let max = column(span.max().unwrap().compute_on(&s()).unwrap());
        assert_eq!(max, [Some(1.0), Some(1.0), Some(3.0), Some(3.0), Some(5.0)], "{cuts:?}");
        let mean = column(span.mean().unwrap().compute_on(&s()).unwrap());
        assert_eq!(mean, [Some(1.0), Some(1.0), Some(3.0), Some(3.0), Some(4.0)], "{cuts:?}");
        let count = column(span.count().unwrap().compute_on(&s()).unwrap());
        assert_eq!(count, [Some(1.0), Some(1.0), Some(1.0), Some(1.0), Some(2.0)], "{cuts:?}");
        let diff = column(df.diff(1).unwrap().compute_on(&s()).unwrap());
        assert_eq!(diff, [None; 5], "{cuts:?}");
    }
}

#[test]
fn groupby_max_min_first_last_skip_nan() {
    // g = pd.DataFrame({"k": [1, 1, 2, 2], "x": [nan, 2.0, nan, nan]})
    // g.groupby("k").x.agg(["max", "min", "first", "last", "nunique"])
    // -> max [2, nan], min [2, nan], first [2, nan], last [2, nan], nunique [1, 0]
    let batch = RecordBatch::try_from_iter([
        ("k", i64s(&[Some(1), Some(1), Some(2), Some(2)])),
        ("x", f64s(&[Some(f64::NAN), Some(2.0), Some(f64::NAN), Some(f64::NAN)])),
    ])
    .unwrap();
    for (n, df) in frames(&batch) {
        for split_out in [1, 2] {
            let out = df
                .groupby(["k"])
                .unwrap()
                .split_out(split_out)
                .agg([
                    Agg::max("x").alias("max"),
                    Agg::min("x").alias("min"),
                    Agg::first("x").alias("first"),
                    Agg::last("x").alias("last"),
                    Agg::nunique("x").alias("nunique"),
                ])
                .unwrap();
            let out = sorted_by(&out.compute_on(&s()).unwrap(), "k");
            for c in 1..5 {
                assert_eq!(floats(out.column(c)), [Some(2.0), None], "{n}/{split_out} column {c}");
            }
            assert_eq!(ints(out.column(5)), [Some(1), Some(0)], "{n}/{split_out}");
        }
    }
}

/// k = 0..40 in four sorted batches, id = 100 + k.
fn unique_index() -> DataFrame {
    let k: Vec<Option<i64>> = (0..40).map(Some).collect();
    let id: Vec<Option<i64>> = (0..40).map(|i| Some(100 + i)).collect();
    let batch = RecordBatch::try_from_iter([("k", i64s(&k)), ("id", i64s(&id))]).unwrap();
    DataFrame::from_sorted_batches([0, 10, 20, 30].iter().map(|&o| batch.slice(o, 10)).collect(), "k").unwrap()
}

#[test]
fn join_after_assigning_over_the_index_column_matches_every_row() {
    // left.k = 39 - k, right.k = k: every one of the 40 values is on both sides.
    let df = unique_index();
    let reversed = df.assign("k", &(-df.col("k") + 39)).unwrap();
    assert_eq!(reversed.index(), Some("k"));
    let right = unique_index().rename(&[("id", "rid")]).unwrap();
    let joined = reversed.join(&right, How::Inner).unwrap();
    assert_eq!(joined.len().compute_on(&s()).unwrap(), 40);
}

// ---- Fixed after the audit: each of these failed before its fix. ----

#[test]
fn loc_on_sorted_batches_whose_boundaries_repeat_a_value_finds_every_row() {
    // k = [0]*5 + [5]*20 + [9]*15 in batches of 10: values 5 and 9 run across partitions.
    // pandas: .loc[5:5] -> 20 rows, .loc[5:] -> 35, .loc[9:9] -> 15, .loc[:0] -> 5.
    let sorted = DataFrame::from_sorted_batches(repeated_boundaries(), "k").unwrap();
    let count = |low: Option<i64>, high: Option<i64>| {
        sorted.loc(low.map(Scalar::Int), high.map(Scalar::Int)).unwrap().compute_on(&s()).unwrap().num_rows()
    };
    assert_eq!(
        (count(Some(5), Some(5)), count(Some(5), None), count(Some(9), Some(9)), count(None, Some(0))),
        (20, 35, 15, 5)
    );
}

#[test]
fn loc_on_parquet_files_whose_boundaries_repeat_a_value_finds_every_row() {
    // The same frame as four Parquet files; the divisions come from the footers.
    let dir = temp("parquet-repeat-fixed");
    for (i, batch) in repeated_boundaries().iter().enumerate() {
        let file = std::fs::File::create(dir.join(format!("part.{i}.parquet"))).unwrap();
        let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
        writer.write(batch).unwrap();
        writer.close().unwrap();
    }
    let df = kiln_dataframe::read_parquet(&dir.to_string_lossy()).unwrap().set_index_sorted("k", &s()).unwrap();
    let count = |low: Option<i64>, high: Option<i64>| {
        df.loc(low.map(Scalar::Int), high.map(Scalar::Int)).unwrap().compute_on(&s()).unwrap().num_rows()
    };
    let got = (count(Some(5), Some(5)), count(Some(5), None), count(Some(9), Some(9)));
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(got, (20, 35, 15));
}

#[test]
fn an_index_overwritten_by_assign_keeps_no_divisions_and_loc_agrees_with_a_filter() {
    let df = unique_index();
    let negated = df.assign("k", &(df.col("k") * -1)).unwrap();
    assert_eq!(negated.index(), Some("k"));
    assert_eq!(negated.divisions(), &kiln_dataframe::Divisions::Unknown);
    let by_filter = negated.filter(&negated.col("k").between(-15, -5)).unwrap().len().compute_on(&s()).unwrap();
    let by_loc = negated.loc(Some(Scalar::Int(-15)), Some(Scalar::Int(-5))).unwrap().len().compute_on(&s()).unwrap();
    assert_eq!((by_filter, by_loc), (11, 11));
    // A join on the overwritten index still matches all 40 values (39 - k against k).
    let reversed = df.assign("k", &(-df.col("k") + 39)).unwrap();
    let right = unique_index().rename(&[("id", "rid")]).unwrap();
    assert_eq!(reversed.join(&right, How::Inner).unwrap().len().compute_on(&s()).unwrap(), 40);
}

#[test]
fn a_renamed_index_follows_its_column() {
    let df = unique_index();
    // Swapping names: the index values are now under "id", still divided as before.
    let swapped = df.rename(&[("k", "id"), ("id", "k")]).unwrap();
    assert_eq!(swapped.index(), Some("id"));
    assert_eq!(swapped.divisions(), df.divisions());
    let rows = swapped.loc(Some(Scalar::Int(10)), Some(Scalar::Int(15))).unwrap().compute_on(&s()).unwrap();
    let ks: Vec<i64> = rows.column_by_name("k").unwrap().as_primitive::<Int64Type>().values().to_vec();
    assert_eq!(ks, vec![110, 111, 112, 113, 114, 115]);
    // Dropping the index column drops the index; selecting it keeps it.
    assert_eq!(df.drop(&["k"]).unwrap().index(), None);
    assert_eq!(df.select(&["id", "k"]).unwrap().index(), Some("k"));
}

fn ts_frame() -> DataFrame {
    // 2015-01-01 00:00, 05:00, 2015-01-02 03:00, 23:00, 2015-01-03 01:00, 2015-02-01 00:30
    let h = 3_600_000_000_000i64;
    let day = 24 * h;
    let t0 = 1_420_070_400_000_000_000i64;
    let ts = arrow::array::TimestampNanosecondArray::from(vec![
        t0,
        t0 + 5 * h,
        t0 + day + 3 * h,
        t0 + day + 23 * h,
        t0 + 2 * day + h,
        t0 + 31 * day + h / 2,
    ]);
    let v = i64s(&[Some(1), Some(2), Some(3), Some(4), Some(5), Some(6)]);
    let batch = RecordBatch::try_from_iter([("ts", Arc::new(ts) as ArrayRef), ("v", v)]).unwrap();
    DataFrame::from_sorted_batches(vec![batch.slice(0, 2), batch.slice(2, 2), batch.slice(4, 2)], "ts").unwrap()
}

#[test]
fn loc_with_date_strings_selects_whole_periods_as_pandas_does() {
    // t = pd.DataFrame({"v": [1, 2, 3, 4, 5, 6]}, index=pd.to_datetime(["2015-01-01 00:00",
    //     "2015-01-01 05:00", "2015-01-02 03:00", "2015-01-02 23:00", "2015-01-03 01:00",
    //     "2015-02-01 00:30"]))
    let df = ts_frame();
    let v = |low: Option<&str>, high: Option<&str>| {
        let out = df.loc(low.map(Into::into), high.map(Into::into)).unwrap().compute_on(&s()).unwrap();
        out.column(1).as_primitive::<Int64Type>().values().to_vec()
    };
    // t.loc["2015-01-01":"2015-01-02"].v -> [1, 2, 3, 4]
    assert_eq!(v(Some("2015-01-01"), Some("2015-01-02")), [1, 2, 3, 4]);
    // t.loc["2015-01-02":].v -> [3, 4, 5, 6]
    assert_eq!(v(Some("2015-01-02"), None), [3, 4, 5, 6]);
    // t.loc["2015-01"].v and t.loc[:"2015-01"].v -> [1, 2, 3, 4, 5]
    assert_eq!(v(Some("2015-01"), Some("2015-01")), [1, 2, 3, 4, 5]);
    assert_eq!(v(None, Some("2015-01")), [1, 2, 3, 4, 5]);
    // t.loc["2015"].v -> all six; t.loc["2015-01-02 03":"2015-01-02 23:00"].v -> [3, 4]
    assert_eq!(v(Some("2015"), Some("2015")), [1, 2, 3, 4, 5, 6]);
    assert_eq!(v(Some("2015-01-02 03"), Some("2015-01-02 23:00")), [3, 4]);
    // A full timestamp is an instant: t.loc[:"2015-01-02 03:00:00"].v -> [1, 2, 3]
    assert_eq!(v(None, Some("2015-01-02T03:00:00")), [1, 2, 3]);
    // t.loc["2015-02-01 00:30:00.5":].v -> [] (a fraction of a second is an instant too)
    assert_eq!(v(Some("2015-02-01 00:30:00.5"), None), Vec::<i64>::new());
}

#[test]
fn isin_matches_missing_values_when_the_list_holds_one() {
    // pd.Series([1.0, nan, 2.0]).isin([1.0, nan]) -> [T, T, F]
    // pd.Series(["a", None, "b"]).isin(["a", None]) -> [T, T, F]
    let batch = RecordBatch::try_from_iter([
        ("x", f64s(&[Some(1.0), Some(f64::NAN), Some(2.0)])),
        ("t", strs(&[Some("a"), None, Some("b")])),
    ])
    .unwrap();
    for (n, df) in frames(&batch) {
        let out = df
            .assign("xi", &df.col("x").isin([Scalar::Float(1.0), Scalar::Float(f64::NAN)]))
            .unwrap()
            .assign("ti", &df.col("t").isin([Scalar::from("a"), Scalar::Null]))
            .unwrap()
            .compute_on(&s())
            .unwrap();
        assert_eq!(bools(out.column(3)), [Some(true), Some(true), Some(false)], "t on {n}");
        assert_eq!(bools(out.column(2)), [Some(true), Some(true), Some(false)], "x on {n}");
    }
}

#[test]
fn join_on_differently_named_indexes_keeps_one_index_column() {
    // li = pd.DataFrame({"a": [1, 2, 3], "x": [10, 20, 30]}).set_index("a")
    // ri = pd.DataFrame({"b": [2, 3, 4], "y": [200, 300, 400]}).set_index("b")
    // li.join(ri, how="inner") -> index [2, 3], columns x [20, 30], y [200, 300] (no "b")
    let left = RecordBatch::try_from_iter([
        ("a", i64s(&[Some(1), Some(2), Some(3)])),
        ("x", i64s(&[Some(10), Some(20), Some(30)])),
    ])
    .unwrap();
    let right = RecordBatch::try_from_iter([
        ("b", i64s(&[Some(2), Some(3), Some(4)])),
        ("y", i64s(&[Some(200), Some(300), Some(400)])),
    ])
    .unwrap();
    let l = DataFrame::from_sorted_batches(vec![left], "a").unwrap();
    let r = DataFrame::from_sorted_batches(vec![right], "b").unwrap();
    let out = l.join(&r, How::Inner).unwrap().compute_on(&s()).unwrap();
    assert_eq!(names(&out), ["a", "x", "y"]);
}

#[test]
fn an_outer_join_on_differently_named_indexes_coalesces_them() {
    // li.join(ri, how="outer") -> index [1, 2, 3, 4], x [10, 20, 30, NaN], y [NaN, 200, 300, 400]
    let left = RecordBatch::try_from_iter([
        ("a", i64s(&[Some(1), Some(2), Some(3)])),
        ("x", i64s(&[Some(10), Some(20), Some(30)])),
    ])
    .unwrap();
    let right = RecordBatch::try_from_iter([
        ("b", i64s(&[Some(2), Some(3), Some(4)])),
        ("y", i64s(&[Some(200), Some(300), Some(400)])),
    ])
    .unwrap();
    let l = DataFrame::from_sorted_batches(vec![left.slice(0, 2), left.slice(2, 1)], "a").unwrap();
    let r = DataFrame::from_sorted_batches(vec![right.slice(0, 1), right.slice(1, 2)], "b").unwrap();
    let out = sorted_by(&l.join(&r, How::Outer).unwrap().compute_on(&s()).unwrap(), "a");
    assert_eq!(names(&out), ["a", "x", "y"]);
    assert_eq!(ints(out.column(0)), [Some(1), Some(2), Some(3), Some(4)]);
    assert_eq!(ints(out.column(1)), [Some(10), Some(20), Some(30), None]);
    assert_eq!(ints(out.column(2)), [None, Some(200), Some(300), Some(400)]);
}

#[test]
fn series_nlargest_and_nsmallest_as_pandas() {
    // s = pd.Series([3.0, nan, 1.0, 7.0, 3.0]); s.nlargest(10) -> [7, 3, 3, 1, nan],
    // s.nlargest(2) -> [7, 3], s.nsmallest(10) -> [1, 3, 3, 7, nan]
    let batch =
        RecordBatch::try_from_iter([("x", f64s(&[Some(3.0), Some(f64::NAN), Some(1.0), Some(7.0), Some(3.0)]))])
            .unwrap();
    for (n, df) in frames(&batch) {
        let values = |e: kiln_dataframe::Extremes| floats(e.compute_on(&s()).unwrap().column(0));
        let large = values(df.col("x").nlargest(10).unwrap());
        assert_eq!(large[..4], [Some(7.0), Some(3.0), Some(3.0), Some(1.0)], "on {n}");
        assert!(large[4].is_none_or(f64::is_nan), "missing last on {n}");
        assert_eq!(values(df.col("x").nlargest(2).unwrap()), [Some(7.0), Some(3.0)], "on {n}");
        let small = values(df.col("x").nsmallest(10).unwrap());
        assert_eq!(small[..4], [Some(1.0), Some(3.0), Some(3.0), Some(7.0)], "on {n}");
    }
    // Text cannot be ranked (pandas raises TypeError too).
    let text = RecordBatch::try_from_iter([("t", strs(&[Some("a")]))]).unwrap();
    assert!(DataFrame::from_batch(text, 1).unwrap().col("t").nlargest(1).is_err());
}
