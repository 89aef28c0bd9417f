//! `from_delayed`: partitions made by ordinary functions through `delayed`, checked against
//! the declared schema, computed with the frame's operations after them.

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use kiln_dataframe::{Agg, DataFrame};
use kiln_graph::Collection;
use kiln_local::LocalScheduler;

fn meta() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("day", DataType::Int64, true), Field::new("value", DataType::Float64, true)]))
}

/// The rows a "loader" of day `d` makes: 24 hourly values `d * 100 + h`.
fn load(day: &i64) -> Result<RecordBatch, String> {
    let values: Vec<f64> = (0..24).map(|h| (*day * 100 + h) as f64).collect();
    RecordBatch::try_new(
        meta(),
        vec![Arc::new(Int64Array::from(vec![*day; 24])) as ArrayRef, Arc::new(Float64Array::from(values))],
    )
    .map_err(|e| e.to_string())
}

#[test]
fn delayed_loaders_become_partitions() {
    let loader = kiln_delayed::try_func1("load-day", load);
    let parts: Vec<_> = (1..=5i64).map(|d| loader.call(kiln_delayed::value(d))).collect();
    let frame = DataFrame::from_delayed(parts, meta()).unwrap();
    assert_eq!(frame.npartitions(), 5);
    assert!(frame.explain().contains("from_delayed 5 partition(s)"), "{}", frame.explain());
    let local = LocalScheduler::new();
    let means = frame.groupby(["day"]).unwrap().agg([Agg::mean("value")]).unwrap().compute_on(&local).unwrap();
    let days = means.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
    let values = means.column(1).as_any().downcast_ref::<Float64Array>().unwrap();
    let mut pairs: Vec<(i64, f64)> = (0..means.num_rows()).map(|i| (days.value(i), values.value(i))).collect();
    pairs.sort_by_key(|p| p.0);
    assert_eq!(pairs, (1..=5).map(|d| (d, (d * 100) as f64 + 11.5)).collect::<Vec<_>>());
    assert_eq!(frame.len().compute_on(&local).unwrap(), 120);
}

#[test]
fn a_partition_with_other_columns_or_a_failing_loader_is_an_error() {
    let local = LocalScheduler::new();
    let wrong = kiln_delayed::try_func1("load-wrong", |_: &i64| {
        RecordBatch::try_from_iter([("name", Arc::new(StringArray::from(vec!["x"])) as ArrayRef)])
            .map_err(|e| e.to_string())
    });
    let frame = DataFrame::from_delayed(vec![wrong.call(kiln_delayed::value(1i64))], meta()).unwrap();
    let err = frame.compute_on(&local).unwrap_err().to_string();
    assert!(err.contains("from_delayed: partition 0") && err.contains("declared"), "{err}");
    let failing = kiln_delayed::try_func1("load-fails", |_: &i64| -> Result<RecordBatch, String> {
        Err("the source is down".to_string())
    });
    let frame = DataFrame::from_delayed(vec![failing.call(kiln_delayed::value(1i64))], meta()).unwrap();
    let err = frame.compute_on(&local).unwrap_err().to_string();
    assert!(err.contains("the source is down"), "{err}");
    let none: Vec<kiln_delayed::Delayed<RecordBatch>> = Vec::new();
    let err = DataFrame::from_delayed(none, meta()).unwrap_err().to_string();
    assert!(err.contains("at least one partition"), "{err}");
}
