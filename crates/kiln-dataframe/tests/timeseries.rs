//! Hand-checked time-series cases at partition edges (a bucket split over partitions, a window
//! reaching back over a one-row and an empty partition, shifts both ways), the errors of bad
//! rules and missing divisions, and the same plans on a `LocalCluster`.

use std::sync::Arc;

use arrow::array::{Array, AsArray, Float64Array, Int64Array, RecordBatch, TimestampNanosecondArray};
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, TimeUnit, TimestampNanosecondType};
use kiln_dataframe::{Agg, DataFrame, DataFrameError, Divisions, Scalar};
use kiln_distributed::{LocalCluster, WorkerMode};
use kiln_graph::Collection;
use kiln_local::LocalScheduler;

const MINUTE: i64 = 60_000_000_000;

/// Rows at `minutes` after 2015-01-01 with `values`, cut into partitions of these sizes.
fn frame(minutes: &[i64], values: &[Option<f64>], sizes: &[usize]) -> DataFrame {
    let start = 1_420_070_400_000_000_000i64;
    let schema = Arc::new(Schema::new(vec![
        Field::new("t", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
        Field::new("v", DataType::Float64, true),
    ]));
    let mut batches = Vec::new();
    let mut at = 0;
    for &n in sizes {
        let t: TimestampNanosecondArray = minutes[at..at + n].iter().map(|m| Some(start + m * MINUTE)).collect();
        let v: Float64Array = values[at..at + n].iter().copied().collect();
        batches.push(RecordBatch::try_new(schema.clone(), vec![Arc::new(t), Arc::new(v)]).unwrap());
        at += n;
    }
    DataFrame::from_sorted_batches(batches, "t").unwrap()
}

fn floats(batch: &RecordBatch, column: usize) -> Vec<Option<f64>> {
    batch.column(column).as_primitive::<Float64Type>().iter().collect()
}

fn minutes_of(batch: &RecordBatch) -> Vec<i64> {
    let start = 1_420_070_400_000_000_000i64;
    batch.column(0).as_primitive::<TimestampNanosecondType>().values().iter().map(|t| (t - start) / MINUTE).collect()
}

fn edges() -> DataFrame {
    // 00:10, 00:50 | 00:55, 02:10 | 05:00: the first hour spans two partitions, hours 1, 3
    // and 4 are empty.
    frame(&[10, 50, 55, 130, 300], &[Some(1.0), Some(2.0), Some(4.0), Some(8.0), Some(16.0)], &[2, 2, 1])
}

#[test]
fn a_bucket_split_over_partitions_and_empty_buckets() {
    let df = edges();
    let out = df
        .resample("h")
        .unwrap()
        .agg([Agg::sum("v"), Agg::count("v").alias("n"), Agg::mean("v").alias("mean")])
        .unwrap();
    assert!(matches!(out.divisions(), Divisions::Known(_)), "resample keeps known divisions");
    assert_eq!(out.index(), Some("t"));
    let got = out.compute_on(&LocalScheduler::new()).unwrap();
    assert_eq!(minutes_of(&got), [0, 60, 120, 180, 240, 300]);
    assert_eq!(floats(&got, 1), [Some(7.0), Some(0.0), Some(8.0), Some(0.0), Some(0.0), Some(16.0)]);
    assert_eq!(got.column(2).as_primitive::<Int64Type>().values().to_vec(), [3, 0, 1, 0, 0, 1]);
    assert_eq!(floats(&got, 3), [Some(7.0 / 3.0), None, Some(8.0), None, None, Some(16.0)]);
}

#[test]
fn a_time_window_reaches_into_earlier_partitions() {
    let got = edges().rolling("1h").unwrap().sum().unwrap().compute_on(&LocalScheduler::new()).unwrap();
    // (t - 1h, t]: 00:55 sees 00:10 and 00:50 of the partition before.
    assert_eq!(floats(&got, 1), [Some(1.0), Some(3.0), Some(7.0), Some(8.0), Some(16.0)]);
    let got = edges().rolling("2h").unwrap().count().unwrap().compute_on(&LocalScheduler::new()).unwrap();
    // 02:10 sees (00:10, 02:10]: 00:50 and 00:55 from earlier partitions, and itself.
    assert_eq!(floats(&got, 1), [Some(1.0), Some(2.0), Some(3.0), Some(3.0), Some(1.0)]);
}

/// 1, 2 | 4 | (8, filtered away) | 16, 32: a window of three rows over a one-row and an empty
/// partition.
fn sparse() -> DataFrame {
    let values = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0].map(Some);
    let df = frame(&[0, 1, 2, 3, 4, 5], &values, &[2, 1, 1, 2]);
    let kept = df.filter(&df.col("v").ne(8.0)).unwrap();
    assert!(kept.known_divisions());
    kept
}

#[test]
fn a_row_window_over_a_one_row_and_an_empty_partition() {
    let sched = LocalScheduler::new();
    let got = sparse().rolling(3).unwrap().sum().unwrap().compute_on(&sched).unwrap();
    assert_eq!(minutes_of(&got), [0, 1, 2, 4, 5]);
    assert_eq!(floats(&got, 1), [None, None, Some(7.0), Some(22.0), Some(52.0)]);
    let got = sparse().rolling(3).unwrap().min_periods(1).max().unwrap().compute_on(&sched).unwrap();
    assert_eq!(floats(&got, 1), [Some(1.0), Some(2.0), Some(4.0), Some(16.0), Some(32.0)]);
}

#[test]
fn shift_and_diff_cross_partitions_both_ways() {
    let sched = LocalScheduler::new();
    let got = sparse().shift(2).unwrap().compute_on(&sched).unwrap();
    assert_eq!(floats(&got, 1), [None, None, Some(1.0), Some(2.0), Some(4.0)]);
    let got = sparse().shift(-3).unwrap().compute_on(&sched).unwrap();
    assert_eq!(floats(&got, 1), [Some(16.0), Some(32.0), None, None, None]);
    let got = sparse().diff(1).unwrap().compute_on(&sched).unwrap();
    assert_eq!(floats(&got, 1), [None, Some(1.0), Some(2.0), Some(12.0), Some(16.0)]);
    let got = sparse().col("v").diff(-1).unwrap().compute_on(&sched).unwrap();
    assert_eq!(floats(&got, 1), [Some(-1.0), Some(-2.0), Some(-12.0), Some(-16.0), None]);
}

#[test]
fn repartition_to_divisions_moves_rows_and_keeps_order() {
    let df = edges();
    let start = 1_420_070_400_000_000_000i64;
    let at = |m: i64| Scalar::TimestampNs(start + m * MINUTE);
    let moved = df.repartition_divisions(vec![at(0), at(52), at(200), at(300)]).unwrap();
    assert_eq!(moved.npartitions(), 3);
    let parts = moved.partitions().compute_on(&LocalScheduler::new()).unwrap();
    let sizes: Vec<usize> = parts.iter().map(RecordBatch::num_rows).collect();
    assert_eq!(sizes, [2, 2, 1]);
    assert_eq!(minutes_of(&parts[1]), [55, 130]);
    let whole = moved.compute_on(&LocalScheduler::new()).unwrap();
    assert_eq!(whole, df.compute_on(&LocalScheduler::new()).unwrap());
}

#[test]
fn bad_rules_and_missing_divisions_are_clear_errors() {
    let df = edges();
    for rule in ["3X", "2W", "0h", "", "h2"] {
        match df.resample(rule) {
            Err(DataFrameError::UnknownFrequency { rule: r, .. }) => assert_eq!(r, rule),
            other => panic!("resample({rule:?}): expected UnknownFrequency, got {:?}", other.err()),
        }
    }
    assert!(matches!(df.rolling("W"), Err(DataFrameError::UnknownFrequency { .. })));
    assert!(matches!(df.rolling(0), Err(DataFrameError::InvalidArgument(_))));
    assert!(matches!(
        df.rolling(2).unwrap().min_periods(3).sum(),
        Err(DataFrameError::InvalidArgument(m)) if m.contains("min_periods 3")
    ));
    // No index at all, and an index whose divisions were lost.
    let plain = df.reset_index();
    let err = plain.resample("h").err().unwrap();
    assert!(matches!(err, DataFrameError::NeedsDivisions { .. }), "{err:?}");
    assert!(err.to_string().contains("set_index"), "{err}");
    let unknown = df.sort_values("v", false, &LocalScheduler::new()).unwrap();
    assert_eq!(unknown.index(), Some("t"));
    assert!(matches!(unknown.rolling(2), Err(DataFrameError::NeedsDivisions { .. })));
    assert!(matches!(unknown.shift(1), Err(DataFrameError::NeedsDivisions { .. })));
    // An index that is not a datetime.
    let ids =
        RecordBatch::try_from_iter([("id", Arc::new(Int64Array::from(vec![1, 2, 3])) as Arc<dyn Array>)]).unwrap();
    let by_id = DataFrame::from_sorted_batches(vec![ids], "id").unwrap();
    assert!(matches!(by_id.resample("h"), Err(DataFrameError::TypeMismatch { .. })));
    // Divisions that do not cover the frame, or do not increase.
    let start = 1_420_070_400_000_000_000i64;
    let at = |m: i64| Scalar::TimestampNs(start + m * MINUTE);
    assert!(matches!(df.repartition_divisions(vec![at(20), at(300)]), Err(DataFrameError::InvalidArgument(_))));
    assert!(matches!(
        df.repartition_divisions(vec![at(0), at(100), at(100), at(300)]),
        Err(DataFrameError::InvalidArgument(_))
    ));
}

#[test]
fn explain_shows_the_resample_and_its_input() {
    let plan = edges().resample("15min").unwrap().mean().unwrap().explain();
    assert!(plan.contains("resample 15min on t agg [v := mean(v)]"), "{plan}");
    assert!(plan.contains("from_sorted_batches") || plan.contains("from_batches"), "{plan}");
}

#[test]
fn time_series_run_on_a_local_cluster() {
    kiln_dataframe::ensure_registered();
    let cluster = LocalCluster::builder().workers(2).threads_per_worker(1).mode(WorkerMode::Threads).start().unwrap();
    let client = cluster.client().unwrap();
    let local = LocalScheduler::new();
    let df = edges();
    let resampled = df.resample("h").unwrap().agg([Agg::sum("v"), Agg::std("v").alias("s")]).unwrap();
    assert_eq!(resampled.compute_on(&client).unwrap(), resampled.compute_on(&local).unwrap());
    let rolled = df.rolling("2h").unwrap().mean().unwrap();
    assert_eq!(rolled.compute_on(&client).unwrap(), rolled.compute_on(&local).unwrap());
    let shifted = sparse().shift(-2).unwrap();
    assert_eq!(shifted.compute_on(&client).unwrap(), shifted.compute_on(&local).unwrap());
}
