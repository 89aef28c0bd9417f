//! The same plans on a `LocalCluster` (a scheduler and two thread workers over loopback):
//! partitions cross between workers and back to the client as Arrow IPC, every kernel is
//! rebuilt from its spec, and the answers are the local scheduler's (and pandas', through the
//! golden fixtures' group-by on the hour).

use std::path::PathBuf;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::Float64Type;
use kiln_dataframe::{Agg, CsvOptions, DataFrame, read_csv, read_parquet};
use kiln_distributed::{LocalCluster, WorkerMode};
use kiln_graph::Collection;
use kiln_local::LocalScheduler;

fn fixture(rel: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(rel).to_string_lossy().into_owned()
}

fn expected_hour_means() -> Vec<f64> {
    let text = std::fs::read_to_string(fixture("expected.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["groupby_hour_mean"]["data"]["fare"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect()
}

#[test]
fn groupby_reductions_and_writes_run_on_a_local_cluster() {
    kiln_dataframe::ensure_registered();
    let cluster = LocalCluster::builder().workers(2).threads_per_worker(1).mode(WorkerMode::Threads).start().unwrap();
    let client = cluster.client().unwrap();

    let df = read_csv(&fixture("csv/7/*.csv"), &CsvOptions::default().parse_dates(["ts"])).unwrap();
    let by_hour = df.groupby([df.col("ts").dt().hour()]).unwrap().split_every(2).agg([Agg::mean("fare")]).unwrap();
    let remote = by_hour.compute_on(&client).unwrap();
    assert_eq!(remote, by_hour.compute_on(&LocalScheduler::new()).unwrap());
    let means = remote.column(1).as_primitive::<Float64Type>().values().to_vec();
    let expected = expected_hour_means();
    assert_eq!(means.len(), expected.len());
    for (got, want) in means.iter().zip(&expected) {
        assert!((got - want).abs() < 1e-9 * want.abs().max(1.0), "{got} vs {want}");
    }

    // In-memory partitions travel to the cluster as task literals, through the codec.
    let local: RecordBatch = df.compute_on(&LocalScheduler::new()).unwrap();
    let from_memory = DataFrame::from_batch(local.clone(), 5).unwrap();
    let filtered = from_memory.filter(&from_memory.col("vendor").isin(["A", "C"])).unwrap();
    assert_eq!(filtered.compute_on(&client).unwrap(), filtered.compute_on(&LocalScheduler::new()).unwrap());
    assert_eq!(
        from_memory.col("trip_distance").std().compute_on(&client).unwrap(),
        from_memory.col("trip_distance").std().compute_on(&LocalScheduler::new()).unwrap()
    );
    assert_eq!(df.len().compute_on(&client).unwrap(), 240);

    let dir = std::env::temp_dir().join(format!("kiln-df-cluster-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(df.to_parquet(&dir.to_string_lossy()).compute_on(&client).unwrap(), 240);
    assert_eq!(read_parquet(&dir.to_string_lossy()).unwrap().compute_on(&client).unwrap(), local);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_shuffled_merge_and_a_split_out_groupby_run_on_a_local_cluster() {
    use kiln_dataframe::{How, MergeOptions};
    kiln_dataframe::ensure_registered();
    let cluster = LocalCluster::builder().workers(2).threads_per_worker(1).mode(WorkerMode::Threads).start().unwrap();
    let client = cluster.client().unwrap();
    let local = LocalScheduler::new();

    let trips = read_csv(&fixture("csv/7/*.csv"), &CsvOptions::default().parse_dates(["ts"])).unwrap();
    let vendors = read_csv(&fixture("tables/vendors.csv"), &CsvOptions::default()).unwrap();
    let vendors = DataFrame::from_batch(vendors.compute_on(&local).unwrap(), 3).unwrap();
    // An outer merge cannot broadcast: both sides go through the staged shuffle (two stages
    // with max_branch 2), so split pieces cross workers through the pieces codec.
    let merged = trips.merge(&vendors, &MergeOptions::on(["vendor"]).how(How::Outer).max_branch(2)).unwrap();
    assert!(merged.explain().contains("hash shuffle of both sides into 7 partitions"), "{}", merged.explain());
    let sort = |b: &RecordBatch| {
        let columns: Vec<arrow::compute::SortColumn> = ["id", "rid"]
            .iter()
            .map(|c| arrow::compute::SortColumn {
                values: b.column_by_name(c).unwrap().clone(),
                options: Some(arrow::compute::SortOptions { descending: false, nulls_first: false }),
            })
            .collect();
        arrow::compute::take_record_batch(b, &arrow::compute::lexsort_to_indices(&columns, None).unwrap()).unwrap()
    };
    let remote = sort(&merged.compute_on(&client).unwrap());
    assert_eq!(remote.num_rows(), 307);
    assert_eq!(remote, sort(&merged.compute_on(&local).unwrap()));

    let by_hour = trips
        .groupby([trips.col("ts").dt().hour()])
        .unwrap()
        .split_out(3)
        .max_branch(2)
        .agg([Agg::mean("fare")])
        .unwrap();
    let parts = by_hour.partitions().compute_on(&client).unwrap();
    assert_eq!(parts.len(), 3);
    let mut pairs: Vec<(i64, f64)> = Vec::new();
    for part in &parts {
        let hours = arrow::compute::cast(part.column(0), &arrow::datatypes::DataType::Int64).unwrap();
        let hours = hours.as_primitive::<arrow::datatypes::Int64Type>();
        let means = part.column(1).as_primitive::<Float64Type>();
        pairs.extend((0..part.num_rows()).map(|i| (hours.value(i), means.value(i))));
    }
    pairs.sort_by_key(|p| p.0);
    let expected = expected_hour_means();
    assert_eq!(pairs.len(), expected.len());
    for ((_, got), want) in pairs.iter().zip(&expected) {
        assert!((got - want).abs() < 1e-9 * want.abs().max(1.0), "{got} vs {want}");
    }
}
