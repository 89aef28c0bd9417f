//! Shuffles and merges against pandas (`tests/fixtures/expected.json`): the trips read as 1, 3
//! and 7 CSV files and 3 in-memory partitions, merged with small tables (duplicate keys, a key
//! only one side has, missing keys, a column both sides have) under every strategy the planner
//! has. With one partition per side the rows must come out in pandas' order; otherwise both
//! sides are sorted by (id, rid) first.

use std::path::PathBuf;
use std::sync::OnceLock;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::{SortColumn, SortOptions, lexsort_to_indices, take_record_batch};
use arrow::datatypes::Int64Type;
use kiln_dataframe::{Agg, CsvOptions, DataFrame, DataFrameError, How, MergeOptions, Scalar, read_csv};
use kiln_graph::Collection;
use kiln_local::LocalScheduler;
use serde_json::Value as Json;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn path(rel: &str) -> String {
    fixtures().join(rel).to_string_lossy().into_owned()
}

fn expected() -> &'static Json {
    static EXPECTED: OnceLock<Json> = OnceLock::new();
    EXPECTED.get_or_init(|| {
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("expected.json")).unwrap()).unwrap()
    })
}

fn trips(layout: &str) -> DataFrame {
    let options = CsvOptions::default().parse_dates(["ts"]);
    match layout {
        "batches/3" => {
            let whole =
                read_csv(&path("csv/1/trips-0.csv"), &options).unwrap().compute_on(&LocalScheduler::new()).unwrap();
            DataFrame::from_batch(whole, 3).unwrap()
        }
        n => read_csv(&path(&format!("{n}/*.csv")), &options).unwrap(),
    }
}

const LAYOUTS: [&str; 4] = ["csv/1", "csv/3", "csv/7", "batches/3"];

fn table(name: &str, npartitions: usize) -> DataFrame {
    let whole = read_csv(&path(&format!("tables/{name}.csv")), &CsvOptions::default())
        .unwrap()
        .compute_on(&LocalScheduler::new())
        .unwrap();
    DataFrame::from_batch(whole, npartitions).unwrap()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * 1f64.max(a.abs()).max(b.abs())
}

fn assert_frame(case: &str, label: &str, batch: &RecordBatch) {
    let expected = &expected()[case];
    let columns: Vec<&str> = expected["columns"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    let names: Vec<String> = batch.schema().fields().iter().map(|f| f.name().clone()).collect();
    assert_eq!(names, columns, "{case} on {label}: columns");
    for (i, name) in columns.iter().enumerate() {
        let values = expected["data"][name].as_array().unwrap();
        assert_eq!(batch.num_rows(), values.len(), "{case} on {label}: rows");
        for (row, value) in values.iter().enumerate() {
            let actual = Scalar::from_array(batch.column(i).as_ref(), row).unwrap();
            let ok = match (&actual, value) {
                (Scalar::Null, Json::Null) => true,
                (Scalar::Float(a), Json::Null) => a.is_nan(),
                (Scalar::Bool(a), Json::Bool(b)) => a == b,
                (Scalar::Str(a), Json::String(b)) => a == b,
                (Scalar::Int(a), Json::Number(b)) => b.as_f64().is_some_and(|b| close(*a as f64, b)),
                (Scalar::TimestampNs(a), Json::Number(b)) => b.as_i64() == Some(*a),
                (Scalar::Float(a), Json::Number(b)) => b.as_f64().is_some_and(|b| close(*a, b)),
                _ => false,
            };
            assert!(ok, "{case} on {label}: column {name} row {row}: kiln {actual:?}, pandas {value}");
        }
    }
}

fn sorted_by(batch: &RecordBatch, columns: &[&str]) -> RecordBatch {
    let options = SortOptions { descending: false, nulls_first: false };
    let sort: Vec<SortColumn> = columns
        .iter()
        .map(|c| SortColumn { values: batch.column_by_name(c).unwrap().clone(), options: Some(options) })
        .collect();
    take_record_batch(batch, &lexsort_to_indices(&sort, None).unwrap()).unwrap()
}

/// Runs the merge with the right side in 1 and 3 partitions and under every strategy that
/// applies, checking pandas' answer (in pandas' order where one task joins everything).
fn check_merge(case: &str, right_table: &str, options: MergeOptions) {
    let scheduler = LocalScheduler::new();
    for layout in LAYOUTS {
        let left = trips(layout);
        let mut variants: Vec<(String, DataFrame)> = Vec::new();
        for right_parts in [1, 3] {
            let right = table(right_table, right_parts);
            let planned = left.merge(&right, &options).unwrap();
            variants.push((format!("{layout} + {right_parts} planned"), planned));
            let shuffled =
                left.merge(&right, &options.clone().broadcast(Some(false)).npartitions(5).max_branch(2)).unwrap();
            assert!(
                shuffled.explain().contains("hash shuffle of both sides into 5 partitions"),
                "{}",
                shuffled.explain()
            );
            variants.push((format!("{layout} + {right_parts} shuffled into 5"), shuffled));
        }
        for (label, merged) in variants {
            let out = merged.compute_on(&scheduler).unwrap_or_else(|e| panic!("{case} on {label}: {e}"));
            if merged.npartitions() == 1 && left.npartitions() == 1 {
                assert_frame(case, &label, &out);
            }
            if expected().get(format!("{case}_sorted")).is_some() {
                assert_frame(&format!("{case}_sorted"), &label, &sorted_by(&out, &["id", "rid"]));
            } else {
                assert_frame(case, &label, &sorted_by(&out, &["id"]));
            }
        }
    }
}

#[test]
fn merge_inner_on_a_string_key_with_duplicates_and_missing_keys() {
    check_merge("merge_vendor_inner", "vendors", MergeOptions::on(["vendor"]));
}

#[test]
fn merge_left_keeps_every_left_row_in_order() {
    check_merge("merge_vendor_left", "vendors", MergeOptions::on(["vendor"]).how(How::Left));
}

#[test]
fn merge_right_keeps_every_right_row() {
    check_merge("merge_vendor_right", "vendors", MergeOptions::on(["vendor"]).how(How::Right));
}

#[test]
fn merge_outer_sorts_by_key_with_missing_keys_last() {
    check_merge("merge_vendor_outer", "vendors", MergeOptions::on(["vendor"]).how(How::Outer));
}

#[test]
fn merge_semi_and_anti_keep_left_columns_only() {
    check_merge("merge_vendor_semi", "vendors", MergeOptions::on(["vendor"]).how(How::Semi));
    check_merge("merge_vendor_anti", "vendors", MergeOptions::on(["vendor"]).how(How::Anti));
}

#[test]
fn merge_left_on_right_on_with_a_float_key_where_nan_matches_nan() {
    check_merge("merge_zones_left", "zones", MergeOptions::left_right(["passenger_count"], ["pc"]).how(How::Left));
}

#[test]
fn merge_on_two_keys() {
    check_merge("merge_pairs_inner", "pairs", MergeOptions::on(["vendor", "passenger_count"]));
}

#[test]
fn the_planner_picks_blockwise_broadcast_or_shuffle() {
    let big = trips("csv/7");
    let one = table("vendors", 1);
    let three = table("vendors", 3);
    let on = MergeOptions::on(["vendor"]);
    assert!(big.merge(&one, &on).unwrap().explain().contains("blockwise: the right side is one partition"));
    assert!(big.merge(&three, &on).unwrap().explain().contains("broadcast of the right side"));
    // An outer merge cannot repeat a side: both are shuffled.
    let outer = big.merge(&three, &on.clone().how(How::Outer)).unwrap();
    assert!(outer.explain().contains("hash shuffle of both sides into 7 partitions"), "{}", outer.explain());
    assert_eq!(outer.npartitions(), 7);
    // A right merge may only repeat the left side, which is the big one here.
    assert!(big.merge(&three, &on.clone().how(How::Right)).unwrap().explain().contains("hash shuffle"));
    // Both sides shuffled on their keys alike: blockwise, and the shuffles are not repeated.
    let left = big.shuffle(&["vendor"], 4).unwrap();
    let right = three.shuffle(&["vendor"], 4).unwrap();
    let aligned = left.merge(&right, &on.clone().how(How::Outer)).unwrap();
    assert!(aligned.explain().contains("blockwise: both sides partitioned alike"), "{}", aligned.explain());
    let out = aligned.compute_on(&LocalScheduler::new()).unwrap();
    assert_frame("merge_vendor_outer_sorted", "aligned", &sorted_by(&out, &["id", "rid"]));
    // One side partitioned so: only the other moves.
    let half = left.merge(&three, &on.clone().how(How::Outer)).unwrap();
    let graph = kiln_graph::collection::graph_of(&half).unwrap();
    let shuffle_prefixes: std::collections::BTreeSet<String> = graph
        .0
        .keys()
        .iter()
        .filter(|k| k.name().starts_with("shuffle-select-"))
        .map(|k| k.name().to_string())
        .collect();
    assert_eq!(shuffle_prefixes.len(), 2, "the left side's shuffle and the right side's: {shuffle_prefixes:?}");
    let out = half.compute_on(&LocalScheduler::new()).unwrap();
    assert_frame("merge_vendor_outer_sorted", "half aligned", &sorted_by(&out, &["id", "rid"]));
}

#[test]
fn a_shuffle_puts_equal_keys_in_one_partition_and_keeps_every_row() {
    let scheduler = LocalScheduler::new();
    for layout in LAYOUTS {
        for (n, max_branch) in [(1, 32), (3, 32), (7, 2), (7, 3)] {
            let df = trips(layout);
            let shuffled = df.shuffle_with(&["vendor"], n, max_branch).unwrap();
            assert_eq!(shuffled.npartitions(), n);
            let parts = shuffled.partitions().compute_on(&scheduler).unwrap();
            let mut owner = std::collections::HashMap::new();
            for (p, part) in parts.iter().enumerate() {
                let vendors = part.column_by_name("vendor").unwrap();
                for row in 0..part.num_rows() {
                    let key = Scalar::from_array(vendors.as_ref(), row).unwrap();
                    assert_eq!(
                        *owner.entry(format!("{key:?}")).or_insert(p),
                        p,
                        "{layout} n={n}: {key:?} in two partitions"
                    );
                }
                // Rows keep their input order within a partition.
                let ids = part.column_by_name("id").unwrap().as_primitive::<Int64Type>();
                assert!(ids.values().windows(2).all(|w| w[0] < w[1]), "{layout} n={n}: partition {p} out of order");
            }
            let all = shuffled.compute_on(&scheduler).unwrap();
            let label = format!("{layout} shuffled into {n} (max_branch {max_branch})");
            expected_read_all(&label, &sorted_by(&all, &["id"]));
        }
    }
}

fn expected_read_all(label: &str, batch: &RecordBatch) {
    assert_frame("read_all", label, batch);
}

#[test]
fn a_groupby_after_a_shuffle_on_its_key_moves_no_more_data() {
    let scheduler = LocalScheduler::new();
    for layout in LAYOUTS {
        let df = trips(layout).shuffle(&["vendor"], 3).unwrap();
        // A filter and a projection keeping the key keep the partitioning.
        let df = df.filter(&df.col("id").ge(0)).unwrap().select(&["vendor", "trip_distance", "fare"]).unwrap();
        let grouped =
            df.groupby(["vendor"]).unwrap().agg([Agg::sum("trip_distance").alias("dist_sum"), Agg::size()]).unwrap();
        assert!(
            grouped.explain().contains("blockwise: input already partitioned by the keys"),
            "{}",
            grouped.explain()
        );
        assert_eq!(grouped.npartitions(), 3);
        let graph = kiln_graph::collection::graph_of(&grouped).unwrap();
        assert_eq!(graph.0.keys().iter().filter(|k| k.name().starts_with("groupby-shuffle")).count(), 0);
        let out = sorted_by(&grouped.compute_on(&scheduler).unwrap(), &["vendor"]);
        let expected = &expected()["groupby_vendor"]["data"];
        let sums = out.column(1).as_primitive::<arrow::datatypes::Float64Type>();
        for (row, want) in expected["dist_sum"].as_array().unwrap().iter().enumerate() {
            assert!(close(sums.value(row), want.as_f64().unwrap()), "{layout}: row {row}");
        }
        // Shuffling again on the same key into the same count is a no-op.
        let again = df.shuffle(&["vendor"], 3).unwrap();
        assert_eq!(again.explain(), df.explain());
    }
}

#[test]
fn bad_merges_name_the_problem() {
    let left = trips("csv/3");
    let right = table("vendors", 1);
    let err = left.merge(&right, &MergeOptions::on(["nope"])).unwrap_err();
    assert!(matches!(&err, DataFrameError::ColumnNotFound { column, .. } if column == "nope"), "{err}");
    let err = left.merge(&right, &MergeOptions::left_right(["id"], ["vendor"])).unwrap_err();
    assert!(matches!(err, DataFrameError::TypeMismatch { .. }), "{err}");
    assert!(err.to_string().contains("\"id\"") && err.to_string().contains("\"vendor\""), "{err}");
    let err = left.merge(&right, &MergeOptions::left_right(["id", "vendor"], ["rid"])).unwrap_err();
    assert!(matches!(err, DataFrameError::InvalidArgument(_)), "{err}");
    let err = left.merge(&right, &MergeOptions::on(["vendor"]).suffixes("", "")).unwrap_err();
    assert!(err.to_string().contains("\"fare\""), "{err}");
    let err = left.shuffle(&["nope"], 3).unwrap_err();
    assert!(matches!(&err, DataFrameError::ColumnNotFound { column, .. } if column == "nope"), "{err}");
    assert!(left.shuffle(&["id"], 0).is_err());
    assert!(left.shuffle::<&str>(&[], 2).is_err());
    let err = left.join(&right, How::Inner).unwrap_err();
    assert!(err.to_string().contains("index"), "{err}");
}

#[test]
fn join_matches_rows_on_both_indexes() {
    let scheduler = LocalScheduler::new();
    let whole = trips("csv/1").compute_on(&scheduler).unwrap();
    let sorted = |b: &RecordBatch, n: usize| {
        let rows = b.num_rows();
        (0..n).map(|i| b.slice(rows * i / n, rows * (i + 1) / n - rows * i / n)).collect::<Vec<_>>()
    };
    let left = DataFrame::from_sorted_batches(sorted(&whole.project(&[0, 4]).unwrap(), 3), "id").unwrap();
    let right = DataFrame::from_sorted_batches(sorted(&whole.project(&[0, 3]).unwrap(), 2), "id").unwrap();
    let joined = left.join(&right, How::Inner).unwrap();
    let out = sorted_by(&joined.compute_on(&scheduler).unwrap(), &["id"]);
    assert_eq!(out.num_rows(), 240);
    let names: Vec<String> = out.schema().fields().iter().map(|f| f.name().clone()).collect();
    assert_eq!(names, ["id", "fare", "trip_distance"]);
    assert_eq!(out.column(1).as_ref(), whole.column(4).as_ref());
    assert_eq!(out.column(2).to_data(), whole.column(3).to_data());
}
