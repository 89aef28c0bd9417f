//! `map_partitions`: a registered user function applied to every partition, the columns it
//! is given not pruned by the planner, its declared schema checked, and its spec portable to
//! cluster workers.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use kiln_dataframe::{Agg, DataFrame, read_parquet};
use kiln_distributed::{LocalCluster, WorkerMode};
use kiln_graph::Collection;
use kiln_local::LocalScheduler;

fn batch(rows: i64) -> RecordBatch {
    RecordBatch::try_from_iter([
        ("k", Arc::new(Int64Array::from_iter_values((0..rows).map(|i| i % 5))) as ArrayRef),
        ("x", Arc::new(Float64Array::from_iter((0..rows).map(|i| (i % 4 != 0).then_some(i as f64 * 0.5))))),
        ("y", Arc::new(Int64Array::from_iter_values(0..rows))),
    ])
    .unwrap()
}

fn with_z_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, true),
        Field::new("x", DataType::Float64, true),
        Field::new("y", DataType::Int64, true),
        Field::new("z", DataType::Float64, true),
    ]))
}

/// z = x + y, missing where x is.
fn add_z(b: &RecordBatch) -> Result<RecordBatch, String> {
    let x = b.column_by_name("x").ok_or("no column x")?.as_any().downcast_ref::<Float64Array>().ok_or("x not f64")?;
    let y = b.column_by_name("y").ok_or("no column y")?.as_any().downcast_ref::<Int64Array>().ok_or("y not i64")?;
    let z: Float64Array = x.iter().zip(y.iter()).map(|(x, y)| Some(x? + y? as f64)).collect();
    let mut columns = b.columns().to_vec();
    columns.push(Arc::new(z));
    RecordBatch::try_new(with_z_schema(), columns).map_err(|e| e.to_string())
}

/// The sum of z per k, computed on the whole batch without kiln.
fn expected_sums(rows: i64) -> Vec<(i64, f64)> {
    let mut sums = [0.0f64; 5];
    for i in 0..rows {
        if i % 4 != 0 {
            sums[(i % 5) as usize] += i as f64 * 0.5 + i as f64;
        }
    }
    sums.iter().enumerate().map(|(k, s)| (k as i64, *s)).collect()
}

fn sums_of(result: &RecordBatch) -> Vec<(i64, f64)> {
    let k = result.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
    let s = result.column(1).as_any().downcast_ref::<Float64Array>().unwrap();
    let mut out: Vec<(i64, f64)> = (0..result.num_rows()).map(|i| (k.value(i), s.value(i))).collect();
    out.sort_by_key(|p| p.0);
    out
}

#[test]
fn a_mapped_column_groups_like_the_same_column_computed_whole() {
    let local = LocalScheduler::new();
    for n in [1, 3, 7] {
        let frame = DataFrame::from_batch(batch(1000), n).unwrap();
        let mapped = frame.map_partitions("test.add_z", with_z_schema(), add_z).unwrap();
        assert_eq!(mapped.columns(), ["k", "x", "y", "z"]);
        assert!(mapped.explain().contains("map_partitions test.add_z"), "{}", mapped.explain());
        let sums = mapped.groupby(["k"]).unwrap().agg([Agg::sum("z")]).unwrap().compute_on(&local).unwrap();
        assert_eq!(sums_of(&sums), expected_sums(1000), "{n} partitions");
        // Rows after the map filter as any other.
        let kept = mapped.filter(&mapped.col("z").gt(100.0)).unwrap().len().compute_on(&local).unwrap();
        let whole = (0..1000i64).filter(|i| i % 4 != 0 && *i as f64 * 1.5 > 100.0).count();
        assert_eq!(kept, whole);
    }
}

#[test]
fn the_function_is_given_every_column_even_when_one_is_used_after_it() {
    let dir = std::env::temp_dir().join(format!("kiln-map-partitions-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let local = LocalScheduler::new();
    DataFrame::from_batch(batch(300), 3).unwrap().to_parquet(&dir.to_string_lossy()).compute_on(&local).unwrap();
    let frame = read_parquet(&dir.to_string_lossy()).unwrap();
    // Only z is used after the map, but z needs x and y: the reader must not drop them.
    let mapped = frame.map_partitions("test.add_z.pushdown", with_z_schema(), add_z).unwrap();
    let total = mapped.col("z").sum().compute_on(&local).unwrap();
    let want: f64 = (0..300i64).filter(|i| i % 4 != 0).map(|i| i as f64 * 1.5).sum();
    assert_eq!(total, kiln_dataframe::Scalar::Float(want));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_wrong_result_or_a_failing_function_is_an_error_naming_it() {
    let local = LocalScheduler::new();
    let frame = DataFrame::from_batch(batch(10), 2).unwrap();
    // Declares z but returns the input unchanged.
    let wrong = frame.map_partitions("test.forgets_z", with_z_schema(), |b: &RecordBatch| Ok(b.clone())).unwrap();
    let err = wrong.compute_on(&local).unwrap_err().to_string();
    assert!(err.contains("test.forgets_z") && err.contains("declared"), "{err}");
    let failing = frame
        .map_partitions("test.fails", with_z_schema(), |_: &RecordBatch| Err("no luck today".to_string()))
        .unwrap();
    let err = failing.compute_on(&local).unwrap_err().to_string();
    assert!(err.contains("test.fails") && err.contains("no luck today"), "{err}");
    let err = frame.map_partitions("", with_z_schema(), add_z).unwrap_err().to_string();
    assert!(err.contains("non-empty id"), "{err}");
}

#[test]
fn a_mapped_frame_runs_on_cluster_workers_from_its_spec() {
    kiln_dataframe::ensure_registered();
    let cluster = LocalCluster::builder().workers(2).threads_per_worker(1).mode(WorkerMode::Threads).start().unwrap();
    let client = cluster.client().unwrap();
    let frame = DataFrame::from_batch(batch(1000), 4).unwrap();
    let mapped = frame.map_partitions("test.add_z.cluster", with_z_schema(), add_z).unwrap();
    let sums = mapped.groupby(["k"]).unwrap().split_out(2).agg([Agg::sum("z")]).unwrap().compute_on(&client).unwrap();
    assert_eq!(sums_of(&sums), expected_sums(1000));
}
