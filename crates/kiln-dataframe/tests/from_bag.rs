//! Bags to frames (`DataFrame::from_bag`, `from_json_bag`): typed records, JSON records with
//! missing keys, records that do not fit, empty partitions, a group-by of the result.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{DataType, Field, Float64Type, Int32Type, Int64Type, Schema, SchemaRef};
use kiln_bag::{Bag, Json};
use kiln_dataframe::{Agg, DataFrame, DataFrameError};
use kiln_graph::Collection;
use kiln_local::LocalScheduler;
use serde_json::json;

#[derive(Clone, serde::Serialize)]
struct Trip {
    id: i64,
    miles: f64,
    driver: String,
    paid: bool,
    note: Option<String>,
    passengers: Option<i32>,
}

fn trip_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("miles", DataType::Float64, false),
        Field::new("driver", DataType::Utf8, false),
        Field::new("paid", DataType::Boolean, false),
        Field::new("note", DataType::Utf8, true),
        Field::new("passengers", DataType::Int32, true),
    ]))
}

fn trip(id: i64) -> Trip {
    Trip {
        id,
        miles: id as f64 * 1.5,
        driver: format!("d{}", id % 3),
        paid: id % 2 == 0,
        note: (id % 4 == 1).then(|| format!("n{id}")),
        passengers: (id % 3 != 0).then_some(id as i32 * 10),
    }
}

#[test]
fn typed_records_give_exact_columns_and_nulls() {
    let bag = Bag::from_partitions(vec![(0..3).map(trip).collect(), Vec::new(), (3..7).map(trip).collect()]);
    let df = DataFrame::from_bag(&bag, trip_schema());
    assert_eq!(df.npartitions(), 3);
    assert!(df.schema().fields().iter().all(|f| f.is_nullable()));
    let out = df.compute_on(&LocalScheduler::new()).unwrap();
    assert_eq!(out.num_rows(), 7);
    let ids: Vec<i64> = out.column(0).as_primitive::<Int64Type>().values().to_vec();
    assert_eq!(ids, (0..7).collect::<Vec<_>>());
    let miles: Vec<f64> = out.column(1).as_primitive::<Float64Type>().values().to_vec();
    assert_eq!(miles, vec![0.0, 1.5, 3.0, 4.5, 6.0, 7.5, 9.0]);
    let drivers: Vec<&str> = out.column(2).as_string::<i32>().iter().map(Option::unwrap).collect();
    assert_eq!(drivers, vec!["d0", "d1", "d2", "d0", "d1", "d2", "d0"]);
    let paid: Vec<bool> = out.column(3).as_boolean().iter().map(Option::unwrap).collect();
    assert_eq!(paid, vec![true, false, true, false, true, false, true]);
    let notes: Vec<Option<&str>> = out.column(4).as_string::<i32>().iter().collect();
    assert_eq!(notes, vec![None, Some("n1"), None, None, None, Some("n5"), None]);
    let passengers: Vec<Option<i32>> = out.column(5).as_primitive::<Int32Type>().iter().collect();
    assert_eq!(passengers, vec![None, Some(10), Some(20), None, Some(40), Some(50), None]);
}

#[test]
fn partition_count_and_contents_are_preserved() {
    let bag = Bag::from_partitions(vec![(0..2).map(trip).collect(), Vec::new(), (2..5).map(trip).collect()]);
    let df = DataFrame::from_bag(&bag, trip_schema());
    let parts = df.partitions().compute_on(&LocalScheduler::new()).unwrap();
    let rows: Vec<usize> = parts.iter().map(RecordBatch::num_rows).collect();
    assert_eq!(rows, vec![2, 0, 3]);
    // The empty partition still has the frame's schema.
    assert_eq!(parts[1].schema(), df.schema());
}

#[test]
fn a_bag_of_only_empty_partitions_gives_an_empty_frame() {
    let bag: Bag<Trip> = Bag::from_partitions(vec![Vec::new(), Vec::new()]);
    let df = DataFrame::from_bag(&bag, trip_schema());
    assert_eq!(df.npartitions(), 2);
    let out = df.compute_on(&LocalScheduler::new()).unwrap();
    assert_eq!(out.num_rows(), 0);
    assert_eq!(out.num_columns(), 6);
    let error = DataFrame::from_json_bag(
        &Bag::<serde_json::Value>::from_partitions(vec![Vec::new()]),
        10,
        &LocalScheduler::new(),
    )
    .err()
    .unwrap();
    assert!(matches!(error, DataFrameError::InvalidArgument(ref m) if m.contains("no records")), "{error}");
}

fn events() -> Vec<serde_json::Value> {
    vec![
        json!({"user": "ann", "n": 1, "score": 0.5, "tag": "a"}),
        json!({"user": "bob", "n": 2}),
        json!({"user": "ann", "score": 2, "ok": true}),
        json!({"user": "cid", "n": 4, "score": 1.25, "tag": "c", "ok": false}),
    ]
}

#[test]
fn json_records_with_missing_keys_give_nulls_and_an_inferred_schema() {
    let bag = Bag::from_sequence(events(), 2);
    let df = DataFrame::from_json_bag(&bag, 100, &LocalScheduler::new()).unwrap();
    let types: BTreeMap<String, DataType> =
        df.schema().fields().iter().map(|f| (f.name().clone(), f.data_type().clone())).collect();
    assert_eq!(
        types,
        BTreeMap::from([
            ("n".to_string(), DataType::Int64),
            ("ok".to_string(), DataType::Boolean),
            // An integer and fractions under one key: the column is a float.
            ("score".to_string(), DataType::Float64),
            ("tag".to_string(), DataType::Utf8),
            ("user".to_string(), DataType::Utf8),
        ])
    );
    let out = df.compute_on(&LocalScheduler::new()).unwrap();
    let col = |name: &str| out.column_by_name(name).unwrap().clone();
    let n: Vec<Option<i64>> = col("n").as_primitive::<Int64Type>().iter().collect();
    assert_eq!(n, vec![Some(1), Some(2), None, Some(4)]);
    let score: Vec<Option<f64>> = col("score").as_primitive::<Float64Type>().iter().collect();
    assert_eq!(score, vec![Some(0.5), None, Some(2.0), Some(1.25)]);
    let ok: Vec<Option<bool>> = col("ok").as_boolean().iter().collect();
    assert_eq!(ok, vec![None, None, Some(true), Some(false)]);
    let tag = col("tag");
    let tag: Vec<Option<&str>> = tag.as_string::<i32>().iter().collect();
    assert_eq!(tag, vec![Some("a"), None, None, Some("c")]);

    // The same records as `Json` (parsed from their text) give the same frame.
    let texts: Vec<Json> = events().iter().map(Json::from_value).collect();
    let df = DataFrame::from_json_bag(&Bag::from_sequence(texts, 3), 100, &LocalScheduler::new()).unwrap();
    assert_eq!(df.npartitions(), 3);
    let again = df.compute_on(&LocalScheduler::new()).unwrap();
    assert_eq!(again, out);
}

#[test]
fn the_schema_is_inferred_from_the_sample_only() {
    // The first record alone says `n` is an integer; a later string fails its task.
    let bag = Bag::from_partitions(vec![vec![json!({"n": 1})], vec![json!({"n": "many"})]]);
    let df = DataFrame::from_json_bag(&bag, 1, &LocalScheduler::new()).unwrap();
    assert_eq!(df.schema().field(0).data_type(), &DataType::Int64);
    let error = df.compute_on(&LocalScheduler::new()).unwrap_err().to_string();
    assert!(error.contains("'n'"), "{error}");
}

#[test]
fn a_record_of_the_wrong_type_fails_naming_the_field() {
    let schema =
        Arc::new(Schema::new(vec![Field::new("user", DataType::Utf8, true), Field::new("n", DataType::Int64, true)]));
    let records = vec![json!({"user": "ann", "n": 1}), json!({"user": "bob", "n": "seven"})];
    let error = DataFrame::from_bag(&Bag::from_sequence(records.clone(), 1), schema.clone())
        .compute_on(&LocalScheduler::new())
        .unwrap_err()
        .to_string();
    assert!(error.contains("whilst decoding field 'n'"), "{error}");
    assert!(error.contains("bag records to a frame"), "{error}");
    // The text path of `Json` records reports it the same way.
    let texts: Vec<Json> = records.iter().map(Json::from_value).collect();
    let error = DataFrame::from_bag(&Bag::from_sequence(texts, 1), schema)
        .compute_on(&LocalScheduler::new())
        .unwrap_err()
        .to_string();
    assert!(error.contains("field 'n'"), "{error}");
    // A typed struct whose field is a string where the schema says a number.
    let wrong = Arc::new(Schema::new(vec![Field::new("driver", DataType::Int64, true)]));
    let error = DataFrame::from_bag(&Bag::from_sequence(vec![trip(1)], 1), wrong)
        .compute_on(&LocalScheduler::new())
        .unwrap_err()
        .to_string();
    assert!(error.contains("'driver'"), "{error}");
}

#[test]
fn the_frame_groups_like_any_other() {
    let bag = Bag::from_partitions(vec![(0..5).map(trip).collect(), Vec::new(), (5..9).map(trip).collect()]);
    let df = DataFrame::from_bag(&bag, trip_schema());
    let sums = df.groupby(["driver"]).unwrap().agg([Agg::sum("miles"), Agg::count("passengers"), Agg::size()]).unwrap();
    let out = sums.compute_on(&LocalScheduler::new()).unwrap();
    let mut got = BTreeMap::new();
    for row in 0..out.num_rows() {
        let driver = out.column(0).as_string::<i32>().value(row).to_string();
        let miles = out.column(1).as_primitive::<Float64Type>().value(row);
        let count = out.column(2).as_primitive::<Int64Type>().value(row);
        let size = out.column(3).as_primitive::<Int64Type>().value(row);
        got.insert(driver, (miles, count, size));
    }
    // Trips 0..9 (miles = 1.5 id): d0 gets 0, 3, 6 (no passengers on any: id % 3 == 0);
    // d1 gets 1, 4, 7; d2 gets 2, 5, 8.
    let want = BTreeMap::from([
        ("d0".to_string(), (13.5, 0, 3)),
        ("d1".to_string(), (18.0, 3, 3)),
        ("d2".to_string(), (22.5, 3, 3)),
    ]);
    assert_eq!(got, want);
}
