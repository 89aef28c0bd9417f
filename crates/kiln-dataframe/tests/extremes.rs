//! `nlargest`/`nsmallest` against pandas 3.1 (`keep="first"`) on 1, 3 and 7 partitions,
//! empty partitions included: missing values and NaN never chosen, ties to the earlier rows.

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampNanosecondArray};
use kiln_dataframe::DataFrame;
use kiln_graph::Collection;
use kiln_local::LocalScheduler;

fn frame_batch() -> RecordBatch {
    let x = vec![
        Some(5.0),
        Some(f64::NAN),
        Some(2.0),
        Some(9.0),
        None,
        Some(5.0),
        Some(-1.0),
        Some(9.0),
        Some(0.0),
        Some(-0.0),
        Some(5.0),
        Some(3.0),
    ];
    let day = 86_400_000_000_000i64;
    let start = 1_420_070_400_000_000_000i64; // 2015-01-01
    RecordBatch::try_from_iter([
        ("id", Arc::new(Int64Array::from_iter_values(0..12)) as ArrayRef),
        ("x", Arc::new(Float64Array::from(x)) as ArrayRef),
        ("d", Arc::new(TimestampNanosecondArray::from_iter_values((0..12).map(|i| start + (i % 5) * day))) as ArrayRef),
        ("s", Arc::new(StringArray::from_iter_values((0..12).map(|i| format!("r{i}")))) as ArrayRef),
    ])
    .unwrap()
}

fn ids(batch: &RecordBatch) -> Vec<i64> {
    batch.column(0).as_any().downcast_ref::<Int64Array>().unwrap().values().to_vec()
}

#[test]
fn the_rows_pandas_picks_on_any_partitioning() {
    let local = LocalScheduler::new();
    for n in [1, 3, 7, 12] {
        let frame = DataFrame::from_batch(frame_batch(), n).unwrap();
        // df.nlargest(4, 'x').id -> [3, 7, 0, 5]; df.nsmallest(3, 'x').id -> [6, 8, 9]
        assert_eq!(ids(&frame.nlargest(4, "x").unwrap().compute_on(&local).unwrap()), [3, 7, 0, 5], "{n}");
        assert_eq!(ids(&frame.nsmallest(3, "x").unwrap().compute_on(&local).unwrap()), [6, 8, 9], "{n}");
        // df.nlargest(3, 'd').id -> [4, 9, 3]
        assert_eq!(ids(&frame.nlargest(3, "d").unwrap().compute_on(&local).unwrap()), [4, 9, 3], "{n}");
        // Every present value, in order; pandas adds the missing rows last only when n is at
        // least the row count (`nsmallest(20)` gives ... 3, 7, 1, 4): kiln never picks them.
        let all = frame.nsmallest(20, "x").unwrap().compute_on(&local).unwrap();
        assert_eq!(ids(&all), [6, 8, 9, 2, 11, 0, 5, 10, 3, 7], "{n}");
        assert_eq!(all.num_columns(), 4);
        assert_eq!(frame.nlargest(0, "x").unwrap().compute_on(&local).unwrap().num_rows(), 0);
    }
}

#[test]
fn a_column_that_cannot_be_ranked_is_an_error_naming_it() {
    let frame = DataFrame::from_batch(frame_batch(), 2).unwrap();
    let err = frame.nlargest(2, "s").err().unwrap().to_string();
    assert!(err.contains("\"s\"") && err.contains("nlargest"), "{err}");
    let err = frame.nsmallest(2, "nope").err().unwrap().to_string();
    assert!(err.contains("nope"), "{err}");
}
