//! `nlargest`/`nsmallest` against pandas 3.1 (`keep="first"`) on 1, 3 and 7 partitions,
//! empty partitions included: ties to the earlier rows, missing values and NaN after every
//! present value (so only when `n` exceeds the present values), in row order.

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
        (
            "k",
            Arc::new(Int64Array::from(vec![
                Some(4),
                None,
                Some(1),
                Some(4),
                Some(7),
                None,
                Some(-2),
                Some(0),
                None,
                Some(7),
                Some(3),
                Some(1),
            ])) as ArrayRef,
        ),
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
        // pandas 3.1 (checked): once n exceeds the 10 present values, the missing and NaN rows
        // come last in row order, in either direction.
        // df.nsmallest(20, 'x').id -> [6, 8, 9, 2, 11, 0, 5, 10, 3, 7, 1, 4]
        let all = frame.nsmallest(20, "x").unwrap().compute_on(&local).unwrap();
        assert_eq!(ids(&all), [6, 8, 9, 2, 11, 0, 5, 10, 3, 7, 1, 4], "{n}");
        assert_eq!(all.num_columns(), 5);
        // df.nsmallest(10, 'x').id -> the present values only; nsmallest(11) adds row 1.
        assert_eq!(
            ids(&frame.nsmallest(10, "x").unwrap().compute_on(&local).unwrap()),
            [6, 8, 9, 2, 11, 0, 5, 10, 3, 7],
            "{n}"
        );
        assert_eq!(
            ids(&frame.nsmallest(11, "x").unwrap().compute_on(&local).unwrap()),
            [6, 8, 9, 2, 11, 0, 5, 10, 3, 7, 1],
            "{n}"
        );
        // df.nlargest(11, 'x').id -> [3, 7, 0, 5, 10, 11, 2, 8, 9, 6, 1]; nlargest(12) adds 4.
        assert_eq!(
            ids(&frame.nlargest(11, "x").unwrap().compute_on(&local).unwrap()),
            [3, 7, 0, 5, 10, 11, 2, 8, 9, 6, 1],
            "{n}"
        );
        assert_eq!(
            ids(&frame.nlargest(12, "x").unwrap().compute_on(&local).unwrap()),
            [3, 7, 0, 5, 10, 11, 2, 8, 9, 6, 1, 4],
            "{n}"
        );
        // Nulls of an integer column (pandas' nullable Int64) the same way:
        // df.nlargest(n, 'k').id and df.nsmallest(n, 'k').id for n = 9, 10, 12, 20.
        for (count, largest, smallest) in [
            (9, &[4, 9, 0, 3, 10, 2, 11, 7, 6][..], &[6, 7, 2, 11, 10, 0, 3, 4, 9][..]),
            (10, &[4, 9, 0, 3, 10, 2, 11, 7, 6, 1][..], &[6, 7, 2, 11, 10, 0, 3, 4, 9, 1][..]),
            (12, &[4, 9, 0, 3, 10, 2, 11, 7, 6, 1, 5, 8][..], &[6, 7, 2, 11, 10, 0, 3, 4, 9, 1, 5, 8][..]),
            (20, &[4, 9, 0, 3, 10, 2, 11, 7, 6, 1, 5, 8][..], &[6, 7, 2, 11, 10, 0, 3, 4, 9, 1, 5, 8][..]),
        ] {
            assert_eq!(ids(&frame.nlargest(count, "k").unwrap().compute_on(&local).unwrap()), largest, "{count} {n}");
            assert_eq!(ids(&frame.nsmallest(count, "k").unwrap().compute_on(&local).unwrap()), smallest, "{count} {n}");
        }
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
