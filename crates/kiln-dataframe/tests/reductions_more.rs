//! Reductions and group-by aggregations beyond sum/mean/var: `first`, `last` and `nunique`
//! (group-by and whole-column), against pandas' answers on 1, 3 and 7 partitions with empty
//! partitions, missing values, NaN and `-0.0`, and against a naive single-batch pass over
//! random data and random partitionings (tree and shuffle).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use kiln_dataframe::{Agg, DataFrame, DataFrameError, Scalar};
use kiln_graph::Collection;
use kiln_local::LocalScheduler;
use proptest::prelude::*;

/// The fixture of the pandas answers below, built there as
/// ```python
/// nan = np.nan
/// df = pd.DataFrame({"k": pd.array([1, 2, 1, None, 2, 1, 3, 2, 1, 3], dtype="Int64"),
///                    "x": [nan, 2.0, nan, 5.0, -0.0, 1.5, nan, 0.0, 1.5, nan],
///                    "s": ["a", None, "b", "z", "c", None, None, "c", "a", None]})
/// ```
/// (`x`'s first value is a null here, its others NaN: pandas has only NaN).
fn fixture() -> RecordBatch {
    let nan = f64::NAN;
    let k =
        Int64Array::from(vec![Some(1), Some(2), Some(1), None, Some(2), Some(1), Some(3), Some(2), Some(1), Some(3)]);
    let x = Float64Array::from(vec![
        None,
        Some(2.0),
        Some(nan),
        Some(5.0),
        Some(-0.0),
        Some(1.5),
        Some(nan),
        Some(0.0),
        Some(1.5),
        Some(nan),
    ]);
    let s = StringArray::from(vec![
        Some("a"),
        None,
        Some("b"),
        Some("z"),
        Some("c"),
        None,
        None,
        Some("c"),
        Some("a"),
        None,
    ]);
    RecordBatch::try_from_iter([("k", Arc::new(k) as ArrayRef), ("x", Arc::new(x) as _), ("s", Arc::new(s) as _)])
        .unwrap()
}

/// The fixture on 1, 3 and 7 partitions, and split with empty partitions at both ends and
/// between.
fn partitionings(batch: &RecordBatch) -> Vec<DataFrame> {
    let mut out: Vec<DataFrame> = [1, 3, 7].iter().map(|&n| DataFrame::from_batch(batch.clone(), n).unwrap()).collect();
    let n = batch.num_rows();
    let cut = n / 2;
    out.push(
        DataFrame::from_batches(vec![
            batch.slice(0, 0),
            batch.slice(0, cut),
            batch.slice(cut, 0),
            batch.slice(cut, n - cut),
            batch.slice(n, 0),
        ])
        .unwrap(),
    );
    out
}

fn scalars(column: &ArrayRef) -> Vec<Scalar> {
    (0..column.len()).map(|i| Scalar::from_array(column.as_ref(), i).unwrap()).collect()
}

fn floats(values: &[Option<f64>]) -> Vec<Scalar> {
    values.iter().map(|v| v.map_or(Scalar::Null, Scalar::Float)).collect()
}

fn strs(values: &[Option<&str>]) -> Vec<Scalar> {
    values.iter().map(|v| v.map_or(Scalar::Null, |s| Scalar::Str(s.to_string()))).collect()
}

fn ints(values: &[i64]) -> Vec<Scalar> {
    values.iter().map(|&v| Scalar::Int(v)).collect()
}

fn first_last_nunique() -> Vec<Agg> {
    vec![
        Agg::first("x").alias("first"),
        Agg::last("x").alias("last"),
        Agg::nunique("x").alias("nu"),
        Agg::first("s").alias("sf"),
        Agg::last("s").alias("sl"),
        Agg::nunique("s").alias("snu"),
    ]
}

#[test]
fn groupby_first_last_nunique_match_pandas() {
    // pandas: df.groupby("k").agg(first=("x", "first"), last=("x", "last"), nu=("x", "nunique"),
    //                             sf=("s", "first"), sl=("s", "last"), snu=("s", "nunique"))
    //    first  last  nu   sf   sl  snu
    // k
    // 1    1.5   1.5   1    a    a    2
    // 2    2.0   0.0   2    c    c    1
    // 3    NaN   NaN   0  NaN  NaN    0
    // Group 2's -0.0 and 0.0 are one value; group 3 has only missing values.
    let scheduler = LocalScheduler::threads(2);
    for df in partitionings(&fixture()) {
        for split_out in [1, 3] {
            let out = df
                .groupby(["k"])
                .unwrap()
                .split_every(2)
                .split_out(split_out)
                .agg(first_last_nunique())
                .unwrap()
                .compute_on(&scheduler)
                .unwrap();
            let order = arrow::compute::sort_to_indices(out.column(0), None, None).unwrap();
            let out = arrow::compute::take_record_batch(&out, &order).unwrap();
            let what = format!("{} partitions, split_out {split_out}", df.npartitions());
            assert_eq!(scalars(out.column(0)), ints(&[1, 2, 3]), "{what}");
            assert_eq!(scalars(out.column(1)), floats(&[Some(1.5), Some(2.0), None]), "{what}");
            assert_eq!(scalars(out.column(2)), floats(&[Some(1.5), Some(0.0), None]), "{what}");
            assert_eq!(scalars(out.column(3)), ints(&[1, 2, 0]), "{what}");
            assert_eq!(scalars(out.column(4)), strs(&[Some("a"), Some("c"), None]), "{what}");
            assert_eq!(scalars(out.column(5)), strs(&[Some("a"), Some("c"), None]), "{what}");
            assert_eq!(scalars(out.column(6)), ints(&[2, 1, 0]), "{what}");
            assert_eq!(out.schema().field(1).data_type(), &DataType::Float64);
            assert_eq!(out.schema().field(4).data_type(), &DataType::Utf8);
            assert_eq!(out.schema().field(3).data_type(), &DataType::Int64);
        }
    }
}

#[test]
fn whole_column_first_last_nunique_match_pandas() {
    // pandas: df.x.dropna().iloc[0] == 2.0, df.x.dropna().iloc[-1] == 1.5,
    //         df.s.dropna().iloc[0] == "a", df.s.dropna().iloc[-1] == "a",
    //         df.k.dropna().iloc[0] == 1, df.k.dropna().iloc[-1] == 3,
    //         df.x.nunique() == 4 ({2.0, 5.0, 0.0, 1.5}), df.s.nunique() == 4.
    let scheduler = LocalScheduler::new();
    for df in partitionings(&fixture()) {
        let what = format!("{} partitions", df.npartitions());
        assert_eq!(df.col("x").first().compute_on(&scheduler).unwrap(), Scalar::Float(2.0), "{what}");
        assert_eq!(df.col("x").last().compute_on(&scheduler).unwrap(), Scalar::Float(1.5), "{what}");
        assert_eq!(df.col("s").first().compute_on(&scheduler).unwrap(), Scalar::Str("a".into()), "{what}");
        assert_eq!(df.col("s").last().compute_on(&scheduler).unwrap(), Scalar::Str("a".into()), "{what}");
        assert_eq!(df.col("k").first().compute_on(&scheduler).unwrap(), Scalar::Int(1), "{what}");
        assert_eq!(df.col("k").last().compute_on(&scheduler).unwrap(), Scalar::Int(3), "{what}");
        let out = df
            .agg([Agg::nunique("x"), Agg::nunique("s"), Agg::first("x").alias("xf")])
            .unwrap()
            .compute_on(&scheduler)
            .unwrap();
        assert_eq!(out.num_rows(), 1, "{what}");
        assert_eq!(scalars(out.column(0)), ints(&[4]), "{what}");
        assert_eq!(scalars(out.column(1)), ints(&[4]), "{what}");
        assert_eq!(scalars(out.column(2)), floats(&[Some(2.0)]), "{what}");
    }
    // Of nothing, or of only missing values: first/last missing, nunique 0 (pandas:
    // pd.Series([nan, nan]).nunique() == 0).
    let only_missing = fixture().slice(6, 1);
    let df = DataFrame::from_batch(only_missing, 3).unwrap();
    assert_eq!(df.col("x").first().compute_on(&scheduler).unwrap(), Scalar::Null);
    assert_eq!(df.col("s").last().compute_on(&scheduler).unwrap(), Scalar::Null);
    let out = df.agg([Agg::nunique("x")]).unwrap().compute_on(&scheduler).unwrap();
    assert_eq!(scalars(out.column(0)), ints(&[0]));
}

#[test]
fn first_last_nunique_of_bad_columns_are_errors_naming_them() {
    let df = DataFrame::from_batch(fixture(), 2).unwrap();
    for agg in [Agg::first("nope"), Agg::last("nope"), Agg::nunique("nope")] {
        let err = df.groupby(["k"]).unwrap().agg([agg]).unwrap_err();
        assert!(matches!(err, DataFrameError::ColumnNotFound { .. }), "{err}");
        assert!(err.to_string().contains("nope"), "{err}");
    }
}

#[derive(Debug, Clone)]
struct Row {
    k: Option<i64>,
    x: Option<f64>,
    s: Option<&'static str>,
}

fn row() -> impl Strategy<Value = Row> {
    (
        prop::option::weighted(0.9, 0i64..4),
        // Few values, so groups repeat them; NaN and both zeros among them.
        prop::option::weighted(0.8, prop::sample::select(vec![0.0, -0.0, 1.0, 2.5, f64::NAN, -3.0])),
        prop::option::weighted(0.8, prop::sample::select(vec!["a", "b", "", "a longer value"])),
    )
        .prop_map(|(k, x, s)| Row { k, x, s })
}

fn batch(rows: &[Row]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, true),
        Field::new("x", DataType::Float64, true),
        Field::new("s", DataType::Utf8, true),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(rows.iter().map(|r| r.k).collect::<Int64Array>()),
            Arc::new(rows.iter().map(|r| r.x).collect::<Float64Array>()),
            Arc::new(rows.iter().map(|r| r.s).collect::<StringArray>()),
        ],
    )
    .unwrap()
}

/// first, last, nunique of x, then of s, of the rows in order: pandas' rules by hand.
fn naive(rows: &[&Row]) -> Vec<Scalar> {
    let xs: Vec<f64> = rows.iter().filter_map(|r| r.x).filter(|x| !x.is_nan()).collect();
    let ss: Vec<&str> = rows.iter().filter_map(|r| r.s).collect();
    let distinct_x: HashSet<u64> = xs.iter().map(|x| (x + 0.0).to_bits()).collect();
    let distinct_s: HashSet<&str> = ss.iter().copied().collect();
    let f = |v: Option<&f64>| v.map_or(Scalar::Null, |x| Scalar::Float(*x));
    let s = |v: Option<&&str>| v.map_or(Scalar::Null, |x| Scalar::Str(x.to_string()));
    vec![
        f(xs.first()),
        f(xs.last()),
        Scalar::Int(distinct_x.len() as i64),
        s(ss.first()),
        s(ss.last()),
        Scalar::Int(distinct_s.len() as i64),
    ]
}

/// The batch cut at the given points (sorted, repeats make empty partitions).
fn cut(batch: &RecordBatch, mut cuts: Vec<usize>) -> DataFrame {
    let n = batch.num_rows();
    for c in &mut cuts {
        *c = (*c).min(n);
    }
    cuts.sort_unstable();
    let mut bounds = vec![0];
    bounds.extend(cuts);
    bounds.push(n);
    DataFrame::from_batches(bounds.windows(2).map(|w| batch.slice(w[0], w[1] - w[0])).collect()).unwrap()
}

/// Float scalars compared bit for bit, so a first value of `-0.0` must be `-0.0`.
fn same(a: &Scalar, b: &Scalar) -> bool {
    match (a, b) {
        (Scalar::Float(x), Scalar::Float(y)) => x.to_bits() == y.to_bits(),
        _ => a == b,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn first_last_nunique_equal_the_naive_pass(
        rows in prop::collection::vec(row(), 0..60),
        cuts in prop::collection::vec(0usize..60, 0..7),
        split_every in 2usize..5,
        split_out in prop::sample::select(vec![1usize, 3]),
        max_branch in 2usize..5,
    ) {
        let all = batch(&rows);
        let df = cut(&all, cuts);
        let scheduler = LocalScheduler::threads(2);
        let out = df
            .groupby(["k"])
            .unwrap()
            .split_every(split_every)
            .split_out(split_out)
            // A small max_branch takes the shuffle through several stages, which must keep
            // the partials in partition order too.
            .max_branch(max_branch)
            .agg(first_last_nunique())
            .unwrap()
            .compute_on(&scheduler)
            .unwrap();
        let order = arrow::compute::sort_to_indices(out.column(0), None, None).unwrap();
        let out = arrow::compute::take_record_batch(&out, &order).unwrap();
        let mut groups: BTreeMap<i64, Vec<&Row>> = BTreeMap::new();
        for r in &rows {
            if let Some(k) = r.k {
                groups.entry(k).or_default().push(r);
            }
        }
        prop_assert_eq!(out.num_rows(), groups.len());
        for (i, (k, members)) in groups.iter().enumerate() {
            prop_assert_eq!(Scalar::from_array(out.column(0).as_ref(), i).unwrap(), Scalar::Int(*k));
            for (c, want) in naive(members).iter().enumerate() {
                let got = Scalar::from_array(out.column(c + 1).as_ref(), i).unwrap();
                prop_assert!(same(&got, want), "group {} column {}: {:?} vs {:?}", k, c + 1, got, want);
            }
        }
        // Without keys: one row, present even when there are no rows.
        let whole = df.agg(first_last_nunique()).unwrap().compute_on(&scheduler).unwrap();
        let every: Vec<&Row> = rows.iter().collect();
        for (c, want) in naive(&every).iter().enumerate() {
            let got = Scalar::from_array(whole.column(c).as_ref(), 0).unwrap();
            prop_assert!(same(&got, want), "whole column {}: {:?} vs {:?}", c, got, want);
        }
    }
}

#[test]
fn first_last_nunique_run_on_a_local_cluster() {
    // The partial, combine and finalize kernels are rebuilt from their specs on the workers,
    // and the list state of nunique travels through the codec between them.
    use kiln_distributed::{LocalCluster, WorkerMode};
    kiln_dataframe::ensure_registered();
    let cluster = LocalCluster::builder().workers(2).threads_per_worker(1).mode(WorkerMode::Threads).start().unwrap();
    let client = cluster.client().unwrap();
    let df = DataFrame::from_batch(fixture(), 7).unwrap();
    for split_out in [1, 3] {
        let grouped = df.groupby(["k"]).unwrap().split_every(2).split_out(split_out).agg(first_last_nunique()).unwrap();
        let remote = grouped.compute_on(&client).unwrap();
        let order = arrow::compute::sort_to_indices(remote.column(0), None, None).unwrap();
        let remote = arrow::compute::take_record_batch(&remote, &order).unwrap();
        // The pandas answer of `groupby_first_last_nunique_match_pandas`.
        assert_eq!(scalars(remote.column(2)), floats(&[Some(1.5), Some(0.0), None]), "split_out {split_out}");
        assert_eq!(scalars(remote.column(6)), ints(&[2, 1, 0]), "split_out {split_out}");
        let local = grouped.compute_on(&LocalScheduler::new()).unwrap();
        let local = arrow::compute::take_record_batch(
            &local,
            &arrow::compute::sort_to_indices(local.column(0), None, None).unwrap(),
        )
        .unwrap();
        assert_eq!(remote, local);
    }
    assert_eq!(df.col("s").last().compute_on(&client).unwrap(), Scalar::Str("a".into()));
    let unique = df.col("s").unique().compute_on(&client).unwrap();
    assert_eq!(scalars(&unique), strs(&[Some("a"), None, Some("b"), Some("z"), Some("c")]));
    let booleans = DataFrame::from_batch(with_booleans(), 7).unwrap();
    assert_eq!(booleans.col("b").all().compute_on(&client).unwrap(), Scalar::Bool(false));
}

/// The fixture with a boolean column, as pandas' nullable `boolean` dtype:
/// `b = pd.array([True, None, False, True, None, True, None, True, True, None], dtype="boolean")`.
fn with_booleans() -> RecordBatch {
    let b = arrow::array::BooleanArray::from(vec![
        Some(true),
        None,
        Some(false),
        Some(true),
        None,
        Some(true),
        None,
        Some(true),
        Some(true),
        None,
    ]);
    let base = fixture();
    let mut columns = base.columns().to_vec();
    columns.push(Arc::new(b));
    let mut fields: Vec<Field> = base.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new("b", DataType::Boolean, true));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
}

#[test]
fn any_and_all_skip_missing_values_as_pandas_does() {
    // pandas: b.any() == True, b.all() == False; of rows 1 and 4 (both missing): any() ==
    // False, all() == True; of rows 0, 3, 5: all() == True; of nothing: any() False, all() True.
    let scheduler = LocalScheduler::new();
    let all_rows = with_booleans();
    let only_missing =
        arrow::compute::take_record_batch(&all_rows, &arrow::array::UInt32Array::from(vec![1, 4])).unwrap();
    let all_true =
        arrow::compute::take_record_batch(&all_rows, &arrow::array::UInt32Array::from(vec![0, 3, 5])).unwrap();
    let cases = [
        (all_rows.clone(), true, false),
        (only_missing, false, true),
        (all_true, true, true),
        (all_rows.slice(0, 0), false, true),
    ];
    for (batch, any, all) in cases {
        for df in partitionings(&batch) {
            let what = format!("{} rows on {} partitions", batch.num_rows(), df.npartitions());
            assert_eq!(df.col("b").any().compute_on(&scheduler).unwrap(), Scalar::Bool(any), "{what}");
            assert_eq!(df.col("b").all().compute_on(&scheduler).unwrap(), Scalar::Bool(all), "{what}");
        }
    }
    // Per group, through the same states (checked with pandas' groupby("k").b.any()/.all()).
    let df = DataFrame::from_batch(with_booleans(), 3).unwrap();
    let out = df
        .groupby(["k"])
        .unwrap()
        .agg([
            Agg::of(kiln_dataframe::AggFunc::Any, &df.col("b")).alias("any"),
            Agg::of(kiln_dataframe::AggFunc::All, &df.col("b")).alias("all"),
        ])
        .unwrap()
        .compute_on(&scheduler)
        .unwrap();
    // Groups: 1 -> rows 0, 2, 5, 8 (True, False, True, True); 2 -> rows 1, 4, 7 (None, None,
    // True); 3 -> rows 6, 9 (None, None). pandas: any [True, True, False], all [False, True, True].
    let bools = |v: &[bool]| v.iter().map(|&b| Scalar::Bool(b)).collect::<Vec<_>>();
    assert_eq!(scalars(out.column(1)), bools(&[true, true, false]));
    assert_eq!(scalars(out.column(2)), bools(&[false, true, true]));
    // Not booleans: an error naming the column.
    let err = df.col("x").any().check().unwrap_err();
    assert!(err.to_string().contains('x') && err.to_string().contains("booleans"), "{err}");
}

#[test]
fn unique_keeps_the_order_of_first_appearance_as_pandas_does() {
    // pandas: x.unique() == [nan, 2.0, 5.0, -0.0, 1.5] (one NaN, -0.0 and 0.0 one value, the
    // first kept); s.unique() == ["a", nan, "b", "z", "c"]; k.unique() == [1, 2, <NA>, 3].
    let scheduler = LocalScheduler::threads(2);
    for df in partitionings(&fixture()) {
        let what = format!("{} partitions", df.npartitions());
        let x = df.col("x").unique().compute_on(&scheduler).unwrap();
        let x = x.as_any().downcast_ref::<Float64Array>().unwrap();
        assert_eq!(x.len(), 5, "{what}");
        // The first missing value is a null here (pandas has NaN for it).
        assert!(x.is_null(0), "{what}");
        let rest: Vec<u64> = (1..5).map(|i| x.value(i).to_bits()).collect();
        assert_eq!(rest, [2.0f64, 5.0, -0.0, 1.5].map(f64::to_bits), "{what}");
        let s = df.col("s").unique().compute_on(&scheduler).unwrap();
        assert_eq!(scalars(&s), strs(&[Some("a"), None, Some("b"), Some("z"), Some("c")]), "{what}");
        let k = df.col("k").unique().compute_on(&scheduler).unwrap();
        assert_eq!(k.as_ref(), &Int64Array::from(vec![Some(1), Some(2), None, Some(3)]) as &dyn Array, "{what}");
    }
    // A NaN before any null is the one missing value kept (pandas on rows 2..7:
    // [nan, 5.0, -0.0, 1.5]).
    let nan_first = DataFrame::from_batch(fixture().slice(2, 5), 3).unwrap();
    let x = nan_first.col("x").unique().compute_on(&scheduler).unwrap();
    let x = x.as_any().downcast_ref::<Float64Array>().unwrap();
    assert!(x.is_valid(0) && x.value(0).is_nan(), "{x:?}");
    assert_eq!(x.len(), 4, "{x:?}");
    // Of nothing: an empty array of the column's type.
    let empty = DataFrame::from_batch(fixture().slice(0, 0), 3).unwrap();
    let s = empty.col("s").unique().compute_on(&scheduler).unwrap();
    assert_eq!((s.len(), s.data_type()), (0, &DataType::Utf8));
    assert!(empty.col("nope").unique().check().unwrap_err().to_string().contains("nope"));
}

#[test]
fn the_new_functions_are_not_rolling_aggregations() {
    use arrow::array::TimestampNanosecondArray;
    let t = TimestampNanosecondArray::from(vec![0, 60_000_000_000, 120_000_000_000]);
    let b = arrow::array::BooleanArray::from(vec![true, false, true]);
    let batch = RecordBatch::try_from_iter([("t", Arc::new(t) as ArrayRef), ("b", Arc::new(b) as _)]).unwrap();
    let df = DataFrame::from_sorted_batches(vec![batch], "t").unwrap();
    let rolling = df.rolling(2).unwrap();
    for (agg, name) in [
        (Agg::first("b"), "first"),
        (Agg::nunique("b"), "nunique"),
        (Agg::of(kiln_dataframe::AggFunc::All, &df.col("b")), "all"),
    ] {
        let err = rolling.agg([agg]).unwrap_err();
        assert!(matches!(err, DataFrameError::InvalidArgument(_)), "{err}");
        assert!(err.to_string().contains(&format!("{name} is not a rolling aggregation")), "{err}");
    }
}
