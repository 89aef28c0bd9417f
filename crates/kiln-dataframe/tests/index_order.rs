//! Sorting, the index and distinct values against pandas (`tests/fixtures/expected.json`), on
//! the trips as 1, 3 and 7 CSV files and 3 in-memory partitions: `sort_values`, `set_index`
//! with divisions and `loc` pruning partitions, `set_index(sorted=true)`, `repartition`,
//! `drop_duplicates`, `nunique` and `value_counts`.

use std::path::PathBuf;
use std::sync::OnceLock;

use arrow::array::RecordBatch;
use arrow::compute::{SortColumn, lexsort_to_indices, take_record_batch};
use kiln_dataframe::{CsvOptions, DataFrame, DataFrameError, Divisions, Scalar, read_csv};
use kiln_graph::Collection;
use kiln_local::LocalScheduler;
use serde_json::Value as Json;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn expected() -> &'static Json {
    static EXPECTED: OnceLock<Json> = OnceLock::new();
    EXPECTED.get_or_init(|| {
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("expected.json")).unwrap()).unwrap()
    })
}

fn layouts() -> Vec<(String, DataFrame)> {
    let options = CsvOptions::default().parse_dates(["ts"]);
    let path = |rel: &str| fixtures().join(rel).to_string_lossy().into_owned();
    let mut out: Vec<(String, DataFrame)> = [1, 3, 7]
        .iter()
        .map(|n| (format!("csv/{n}"), read_csv(&path(&format!("csv/{n}/*.csv")), &options).unwrap()))
        .collect();
    let whole = read_csv(&path("csv/1/trips-0.csv"), &options).unwrap().compute_on(&LocalScheduler::new()).unwrap();
    out.push(("batches/3".into(), DataFrame::from_batch(whole, 3).unwrap()));
    out
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

fn sorted_by_id(batch: &RecordBatch) -> RecordBatch {
    let id = SortColumn { values: batch.column_by_name("id").unwrap().clone(), options: None };
    take_record_batch(batch, &lexsort_to_indices(&[id], None).unwrap()).unwrap()
}

#[test]
fn sort_values_orders_across_partitions_like_pandas() {
    let s = LocalScheduler::new();
    for (label, df) in layouts() {
        let up = df.sort_values("fare", false, &s).unwrap();
        assert!(up.explain().contains("range shuffle on fare"), "{}", up.explain());
        assert_frame("sort_fare", &label, &up.compute_on(&s).unwrap());
        let down = df.sort_values("trip_distance", true, &s).unwrap();
        assert_frame("sort_distance_desc", &label, &down.compute_on(&s).unwrap());
    }
}

#[test]
fn set_index_gives_known_divisions_and_loc_prunes_partitions() {
    let s = LocalScheduler::new();
    let bounds = &expected()["loc_ts_bounds"];
    let (low, high) = (bounds["low"].as_i64().unwrap(), bounds["high"].as_i64().unwrap());
    for (label, df) in layouts() {
        let indexed = df.set_index("ts", &s).unwrap();
        assert_eq!(indexed.index(), Some("ts"));
        let Divisions::Known(divisions) = indexed.divisions().clone() else { panic!("{label}: divisions unknown") };
        assert_eq!(divisions.len(), indexed.npartitions() + 1);
        // Every partition's rows lie within its divisions, sorted.
        let parts = indexed.partitions().compute_on(&s).unwrap();
        for (i, part) in parts.iter().enumerate() {
            let ts: Vec<Scalar> =
                (0..part.num_rows()).map(|r| Scalar::from_array(part.column(1).as_ref(), r).unwrap()).collect();
            let (Scalar::TimestampNs(lo), Scalar::TimestampNs(hi)) = (&divisions[i], &divisions[i + 1]) else {
                panic!()
            };
            for (r, t) in ts.iter().enumerate() {
                let Scalar::TimestampNs(t) = t else { panic!() };
                assert!(t >= lo && (t < hi || (i + 1 == parts.len() && t <= hi)), "{label}: partition {i} row {r}");
            }
        }
        let selected = indexed.loc(Some(Scalar::TimestampNs(low)), Some(Scalar::TimestampNs(high))).unwrap();
        if indexed.npartitions() > 2 {
            assert!(selected.npartitions() < indexed.npartitions(), "{label}: loc pruned nothing");
        }
        assert_frame("loc_ts", &label, &selected.compute_on(&s).unwrap());
        // The same rows when the divisions are unknown (sort_values keeps the index but not
        // the divisions): every partition is filtered.
        let split = indexed.sort_values("ts", false, &s).unwrap();
        assert!(!split.known_divisions() && split.index() == Some("ts"));
        let filtered = split.loc(Some(Scalar::TimestampNs(low)), Some(Scalar::TimestampNs(high))).unwrap();
        assert_eq!(filtered.npartitions(), split.npartitions());
        assert_frame("loc_ts", &format!("{label} unknown divisions"), &filtered.compute_on(&s).unwrap());
        let plain = indexed.reset_index();
        assert!(plain.index().is_none() && !plain.known_divisions());
    }
}

#[test]
fn set_index_sorted_trusts_and_checks_the_order() {
    let s = LocalScheduler::new();
    for (label, df) in layouts() {
        // The trips are written sorted by id.
        let indexed = df.set_index_sorted("id", &s).unwrap();
        let Divisions::Known(d) = indexed.divisions() else { panic!("{label}") };
        assert_eq!(d.first(), Some(&Scalar::Int(0)));
        assert_eq!(d.last(), Some(&Scalar::Int(239)));
        assert!(!indexed.explain().contains("shuffle"), "{label}: {}", indexed.explain());
        let some = indexed.loc(Some(Scalar::Int(100)), Some(Scalar::Int(119))).unwrap();
        assert_eq!(some.compute_on(&s).unwrap().num_rows(), 20, "{label}");
        let err = df.set_index_sorted("fare", &s).unwrap_err();
        assert!(err.to_string().contains("not sorted") || err.to_string().contains("starts at"), "{label}: {err}");
    }
}

#[test]
fn repartition_keeps_rows_and_order() {
    let s = LocalScheduler::new();
    for (label, df) in layouts() {
        for n in [1, 2, 5, 11] {
            let re = df.repartition(n).unwrap();
            assert_eq!(re.npartitions(), n);
            assert_frame("read_all", &format!("{label} into {n}"), &re.compute_on(&s).unwrap());
        }
    }
    assert!(layouts()[0].1.repartition(0).is_err());
}

#[test]
fn drop_duplicates_keeps_the_first_row_of_each_value() {
    let s = LocalScheduler::new();
    for (label, df) in layouts() {
        let distinct = df.drop_duplicates(Some(&["vendor", "passenger_count"])).unwrap();
        assert_frame("drop_duplicates_pair", &label, &sorted_by_id(&distinct.compute_on(&s).unwrap()));
        let err = df.drop_duplicates(Some(&["nope"])).unwrap_err();
        assert!(matches!(err, DataFrameError::ColumnNotFound { .. }), "{err}");
    }
}

#[test]
fn nunique_and_value_counts_match_pandas() {
    let s = LocalScheduler::new();
    for (label, df) in layouts() {
        for column in ["vendor", "passenger_count", "trip_distance"] {
            let n = df.col(column).nunique().compute_on(&s).unwrap();
            assert_eq!(n as u64, expected()["nunique"][column].as_u64().unwrap(), "{label}: {column}");
        }
        let counts = df.col("passenger_count").value_counts().unwrap();
        assert_frame("value_counts_pc", &label, &counts.compute_on(&s).unwrap());
    }
}

#[test]
fn index_operations_report_bad_input() {
    let s = LocalScheduler::new();
    let df = layouts().remove(1).1;
    assert!(matches!(df.set_index("nope", &s).unwrap_err(), DataFrameError::ColumnNotFound { .. }));
    assert!(matches!(df.sort_values("nope", false, &s).unwrap_err(), DataFrameError::ColumnNotFound { .. }));
    assert!(matches!(df.loc(None, None).unwrap_err(), DataFrameError::InvalidArgument(_)));
    let indexed = df.set_index("vendor", &s).unwrap();
    let err = indexed.loc(Some(Scalar::TimestampNs(0)), None).unwrap_err();
    assert!(matches!(err, DataFrameError::TypeMismatch { .. }), "{err}");
}
