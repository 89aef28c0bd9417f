//! The facade's `Bag::to_dataframe`: a bag of parsed JSON lines becomes a frame through the
//! prelude's extension traits, and is grouped like any frame.
#![cfg(feature = "dataframe")]

use std::sync::Arc;

use kiln::dataframe::arrow::array::AsArray;
use kiln::dataframe::arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema};
use kiln::prelude::*;

fn lines() -> Bag<String> {
    let text = [r#"{"k": "x", "v": 1}"#, r#"{"k": "y", "v": 2.5}"#, r#"{"k": "x", "v": 4}"#, r#"{"k": "y"}"#];
    Bag::from_sequence(text.iter().map(|s| s.to_string()), 2)
}

#[test]
fn bags_become_frames_through_the_prelude() {
    let records = lines().map(|line: &String| serde_json::from_str::<serde_json::Value>(line).unwrap());
    let scheduler = LocalScheduler::new();
    let df = records.to_dataframe_inferred(kiln::bag::DEFAULT_INFER_SAMPLE, &scheduler).unwrap();
    assert_eq!(df.npartitions(), 2);
    let sums = df.groupby(["k"]).unwrap().agg([Agg::sum("v"), Agg::count("v").alias("n")]).unwrap();
    let out = sums.compute_on(&scheduler).unwrap();
    let mut rows: Vec<(String, f64, i64)> = (0..out.num_rows())
        .map(|r| {
            (
                out.column(0).as_string::<i32>().value(r).to_string(),
                out.column(1).as_primitive::<Float64Type>().value(r),
                out.column(2).as_primitive::<Int64Type>().value(r),
            )
        })
        .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(rows, vec![("x".to_string(), 5.0, 2), ("y".to_string(), 2.5, 1)]);

    // With a given schema, keys it does not name are left out.
    let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Utf8, true)]));
    let only_k = records.to_dataframe(schema).compute_on(&scheduler).unwrap();
    assert_eq!(only_k.num_columns(), 1);
    assert_eq!(only_k.num_rows(), 4);
}
