//! Bags to frames on a `LocalCluster` of worker processes give the local scheduler's answers:
//! typed records (a user struct registered with `register_bag_record`) and schemaless JSON
//! records read from plain and gzip files on the workers, converted to Arrow batches there,
//! then grouped. A record type that was never registered for frames is refused before
//! anything is sent, naming what to register. This test program is its own worker binary
//! (`harness = false`; `run_worker_if_requested`), as a user's program would be.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use kiln::bag::{Bag, JsonToDataFrame, ToDataFrame, portable, read_json, read_json_lines, register_bag_record};
use kiln::dataframe::arrow::array::{AsArray, RecordBatch};
use kiln::dataframe::arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, SchemaRef};
use kiln::dataframe::{Agg, DataFrame};
use kiln::distributed::{LocalCluster, run_worker_if_requested};
use kiln::{Collection, ComputeError, LocalScheduler};

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Trip {
    id: i64,
    driver: String,
    miles: f64,
    #[serde(default)]
    note: Option<String>,
}

/// Registered as a bag element (so its bags travel) but not as a frame record.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Unlisted {
    id: i64,
}

fn trip_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("driver", DataType::Utf8, true),
        Field::new("miles", DataType::Float64, true),
        Field::new("note", DataType::Utf8, true),
    ]))
}

/// What the client and every worker register (the worker side runs this before
/// `run_worker_if_requested`).
fn register() {
    kiln::register_builtins();
    register_bag_record::<Trip>("test.Trip");
    portable::register_element::<Unlisted>("test.Unlisted");
}

/// `(driver, total miles, trips)` per driver, sorted by driver. The miles are quarters, so the
/// sums are exact whatever order the partial sums are combined in.
fn per_driver(frame: &DataFrame, on: &dyn kiln::Scheduler) -> Vec<(String, f64, i64)> {
    let sums = frame.groupby(["driver"]).unwrap().agg([Agg::sum("miles"), Agg::count("id").alias("n")]).unwrap();
    let out: RecordBatch = sums.compute_on(on).unwrap();
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
    rows
}

fn write_file(path: &Path, text: &str) {
    let file = std::fs::File::create(path).unwrap();
    let mut out: Box<dyn Write> = match path.extension().and_then(|e| e.to_str()) {
        Some("gz") => Box::new(flate2::write::GzEncoder::new(file, flate2::Compression::fast())),
        _ => Box::new(file),
    };
    out.write_all(text.as_bytes()).unwrap();
}

fn main() {
    register();
    run_worker_if_requested();

    let dir = std::env::temp_dir().join(format!("kiln-bag-frames-cluster-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut expected = std::collections::BTreeMap::<String, (f64, i64)>::new();
    for (f, ext) in ["jsonl", "jsonl.gz", "jsonl"].iter().enumerate() {
        let mut text = String::new();
        for i in 0..150 {
            let id = (f * 150 + i) as i64;
            let driver = format!("d{}", id % 4);
            let miles = id as f64 * 0.25;
            let note = if id % 5 == 0 { format!(", \"note\": \"n{id}\"") } else { String::new() };
            // `{miles:.2}` always writes a fraction, so inference sees a float column.
            text += &format!("{{\"id\": {id}, \"driver\": \"{driver}\", \"miles\": {miles:.2}{note}}}\n");
            let entry = expected.entry(driver).or_default();
            entry.0 += miles;
            entry.1 += 1;
        }
        write_file(&dir.join(format!("part-{f}.{ext}")), &text);
    }
    let expected: Vec<(String, f64, i64)> = expected.into_iter().map(|(d, (m, n))| (d, m, n)).collect();
    let pattern = dir.join("part-*").to_string_lossy().into_owned();

    let local = LocalScheduler::threads(2);
    let exe = std::env::current_exe().unwrap();
    let cluster = LocalCluster::builder().workers(2).threads_per_worker(1).binary(exe).start().unwrap();
    assert!(!cluster.worker_pids().is_empty(), "workers are processes");
    let client = cluster.client().unwrap();

    // Typed records read on the workers, converted there with the registered kernel.
    let trips = DataFrame::from_bag(&read_json_lines::<Trip>(&pattern).unwrap(), trip_schema());
    assert_eq!(trips.npartitions(), 3);
    let remote = trips.compute_on(&client).unwrap();
    assert_eq!(remote, trips.compute_on(&local).unwrap());
    assert_eq!(remote.num_rows(), 450);
    assert_eq!(remote.column(3).null_count(), 450 - 90);
    assert_eq!(per_driver(&trips, &client), expected);
    assert_eq!(per_driver(&trips, &local), expected);

    // In-memory partitions of the same type travel as literals; the facade's trait.
    let made =
        Bag::from_sequence((0..40).map(|id| Trip { id, driver: format!("d{}", id % 4), miles: 0.5, note: None }), 3)
            .to_dataframe(trip_schema());
    assert_eq!(per_driver(&made, &client), per_driver(&made, &local));

    // Schemaless JSON records: the schema inferred on the client from a sample computed on
    // the cluster, then every partition converted on the workers.
    let records = read_json(&pattern).unwrap();
    let inferred = records.to_dataframe_inferred(50, &client).unwrap();
    assert_eq!(inferred.schema(), records.to_dataframe_inferred(50, &local).unwrap().schema());
    assert_eq!(inferred.compute_on(&client).unwrap(), inferred.compute_on(&local).unwrap());
    assert_eq!(per_driver(&inferred, &client), expected);
    // `serde_json::Value` records too.
    let values = read_json_lines::<serde_json::Value>(&pattern).unwrap();
    let inferred = DataFrame::from_json_bag(&values, 50, &client).unwrap();
    assert_eq!(per_driver(&inferred, &client), expected);

    // A record that does not fit the schema fails on the worker, naming the field.
    let wrong = Arc::new(Schema::new(vec![Field::new("driver", DataType::Int64, true)]));
    let error = records.to_dataframe(wrong).compute_on(&client).unwrap_err();
    assert!(error.to_string().contains("driver"), "{error}");

    // A type never registered for frames is refused before anything is sent, naming the
    // registration it needs.
    let unlisted = Bag::from_sequence((0..4).map(|id| Unlisted { id }), 2);
    let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)]));
    let frame = DataFrame::from_bag(&unlisted, schema);
    assert_eq!(frame.compute_on(&local).unwrap().num_rows(), 4);
    let error = frame.compute_on(&client).unwrap_err();
    assert!(matches!(error, ComputeError::NotPortable(_)), "{error}");
    assert!(error.to_string().contains("register_bag_record::<bag_cluster::Unlisted>"), "{error}");
    // The remedy is the record registration alone, not the closures' `.portable(id)`.
    assert!(!error.to_string().contains(".portable(") && !error.to_string().contains("register_instance"), "{error}");

    // So is one registered nowhere (its partitions could not travel either).
    #[derive(Clone, serde::Serialize)]
    struct Nowhere {
        id: i64,
    }
    let nowhere = Bag::from_sequence((0..4).map(|id| Nowhere { id }), 2);
    let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)]));
    let error = DataFrame::from_bag(&nowhere, schema).compute_on(&client).unwrap_err();
    assert!(error.to_string().contains("register_bag_record::<bag_cluster::main::Nowhere>"), "{error}");

    drop(client);
    cluster.close();
    std::fs::remove_dir_all(&dir).unwrap();
    eprintln!("bags became the local frames on worker processes");
}
