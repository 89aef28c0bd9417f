//! The planner and the plumbing around it: projection pushdown (measured in bytes read),
//! fusion (graph sizes), `explain`, the display, storage plug-ins, Parquet round trips, the
//! partition codec, portable task specs, and a chain of 100,000 steps on a small stack.

use std::collections::HashMap;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arrow::array::{Array, AsArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema};
use kiln_dataframe::storage::{LocalStorage, Storage, StorageError, register_storage};
use kiln_dataframe::{Agg, CsvOptions, DataFrame, DataFrameError, MergeOptions, Scalar, read_csv, read_parquet};
use kiln_graph::collection::graph_of;
use kiln_graph::{CodecRegistry, Collection, KernelRegistry, Value};
use kiln_local::LocalScheduler;

fn fixture(rel: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(rel).to_string_lossy().into_owned()
}

fn trips_csv(n: usize) -> DataFrame {
    read_csv(&fixture(&format!("csv/{n}/*.csv")), &CsvOptions::default().parse_dates(["ts"])).unwrap()
}

#[test]
fn explain_shows_the_projection_pushed_into_the_reader() {
    let df = trips_csv(3);
    let df = df.assign("double", &(df.col("fare") * 2)).unwrap();
    let df = df.filter(&df.col("vendor").eq("A")).unwrap();
    let df = df.select(&["double"]).unwrap();
    let text = df.explain();
    let (before, after) = text.split_once("optimized plan").unwrap();
    assert!(before.contains("read_csv 3 file(s), all 6 columns"), "{text}");
    assert!(after.contains("read_csv 3 file(s), columns [fare, vendor]"), "{text}");
    // The projection that assigned `double` keeps only what is read later.
    assert!(after.contains("project [vendor, double := (fare * 2)]"), "{text}");
    assert!(after.contains("filter (vendor == \"A\")") && after.contains("project [double]"), "{text}");
}

#[test]
fn explain_of_a_groupby_shows_its_input_plan() {
    let df = trips_csv(7);
    let text = df.groupby([df.col("ts").dt().hour()]).unwrap().agg([Agg::mean("fare")]).unwrap().explain();
    assert!(text.contains("groupby [ts] agg [fare := mean(fare)]"), "{text}");
    assert!(text.contains("(tree, 8 partials per combine)"), "{text}");
    assert!(text.contains("group-by input (7 partitions, partial aggregation fused into each)"), "{text}");
    assert!(text.contains("read_csv 7 file(s), columns [ts, fare]"), "{text}");
}

#[test]
fn a_projection_after_a_merge_reaches_both_readers() {
    let (left, right) = (trips_csv(7), trips_csv(3));
    for broadcast in [Some(false), Some(true)] {
        let merged = left.merge(&right, &MergeOptions::on(["id"]).broadcast(broadcast)).unwrap();
        let picked = merged.select(&["fare_x", "passenger_count_y"]).unwrap();
        let text = picked.explain();
        let (_, inputs) = text.split_once("merge left (7 partitions)").unwrap();
        let (left_plan, right_plan) = inputs.split_once("merge right (3 partitions)").unwrap();
        let (_, left_after) = left_plan.split_once("optimized plan").unwrap();
        let (_, right_after) = right_plan.split_once("optimized plan").unwrap();
        // Each side reads its key and the one column kept from it.
        assert!(left_after.contains("read_csv 7 file(s), columns [id, fare]"), "{text}");
        assert!(right_after.contains("read_csv 3 file(s), columns [id, passenger_count]"), "{text}");
        // The same rows as the whole merge, projected afterwards.
        let scheduler = LocalScheduler::new();
        let whole = merged.compute_on(&scheduler).unwrap();
        let columns = ["fare_x", "passenger_count_y"].map(|c| whole.schema().index_of(c).unwrap());
        assert_eq!(picked.compute_on(&scheduler).unwrap(), whole.project(&columns).unwrap(), "{broadcast:?}");
    }
}

#[test]
fn row_wise_steps_are_one_task_per_partition_and_groupby_is_a_tree() {
    let df = trips_csv(7);
    let mut chained = df.clone();
    for i in 0..10 {
        chained = chained.assign(&format!("c{i}"), &(chained.col("fare") + i)).unwrap();
        chained = chained.filter(&chained.col("id").ge(i)).unwrap();
    }
    let (graph, outputs) = graph_of(&chained).unwrap();
    assert_eq!((graph.len(), outputs.len()), (7, 7));

    let grouped = chained.groupby(["vendor"]).unwrap().split_every(2).agg([Agg::sum("c3")]).unwrap();
    let (graph, outputs) = graph_of(&grouped).unwrap();
    // 7 partials, combined 2 at a time while more than 2 remain (7 -> 4 -> 2), then the root.
    assert_eq!((graph.len(), outputs.len()), (7 + 4 + 2 + 1, 1));
    let default = chained.groupby(["vendor"]).unwrap().agg([Agg::sum("c3")]).unwrap();
    assert_eq!(graph_of(&default).unwrap().0.len(), 7 + 1);
    let sum = chained.col("c3").sum();
    assert_eq!(graph_of(&sum).unwrap().0.len(), 7 + 1);
    assert_eq!(graph_of(&sum.split_every(3)).unwrap().0.len(), 7 + 3 + 1);
    let scheduler = LocalScheduler::new();
    let (narrow, wide) = (sum.split_every(2).compute_on(&scheduler).unwrap(), sum.compute_on(&scheduler).unwrap());
    assert!((narrow.as_f64().unwrap() - wide.as_f64().unwrap()).abs() < 1e-9 * wide.as_f64().unwrap().abs());
}

#[test]
fn head_runs_only_the_first_partition() {
    let df = trips_csv(7);
    let head = df.head(3);
    let (graph, outputs) = graph_of(&head).unwrap();
    let (culled, _) = kiln_graph::collection::optimize(graph, outputs).unwrap();
    assert_eq!(culled.len(), 1);
    let rows = head.compute_on(&LocalScheduler::new()).unwrap();
    let ids: Vec<i64> = rows.column(0).as_primitive::<Int64Type>().values().to_vec();
    assert_eq!(ids, [0, 1, 2]);
    // More rows than the first partition holds: take them from more partitions.
    let more = df.head_from(100, 7).compute_on(&LocalScheduler::new()).unwrap();
    assert_eq!(more.num_rows(), 100);
}

#[test]
fn display_shows_structure_without_computing() {
    let df = trips_csv(3);
    let text = df.filter(&df.col("fare").gt(1)).unwrap().to_string();
    assert!(text.starts_with("kiln DataFrame: npartitions=3, divisions unknown"), "{text}");
    assert!(text.contains("ts               Timestamp(ns)") || text.contains("ts  "), "{text}");
    assert!(
        text.contains("vendor") && text.contains("Utf8") && text.ends_with("plan: read-csv then 1 row-wise step(s)"),
        "{text}"
    );
    assert!(!df.known_divisions());
    assert_eq!(df.col("fare").gt(2).name(), "fare");
}

/// Local files, counting the bytes each read asks for.
struct CountingStorage {
    bytes: AtomicU64,
}

impl Storage for CountingStorage {
    fn list(&self, pattern: &str) -> Result<Vec<String>, StorageError> {
        let local = LocalStorage.list(pattern.trim_start_matches("count://"))?;
        Ok(local.into_iter().map(|p| format!("count://{p}")).collect())
    }
    fn size(&self, path: &str) -> Result<u64, StorageError> {
        LocalStorage.size(path.trim_start_matches("count://"))
    }
    fn read_range(&self, path: &str, range: Range<u64>) -> Result<Vec<u8>, StorageError> {
        self.bytes.fetch_add(range.end - range.start, Ordering::SeqCst);
        LocalStorage.read_range(path.trim_start_matches("count://"), range)
    }
    fn write(&self, path: &str, bytes: &[u8]) -> Result<(), StorageError> {
        LocalStorage.write(path.trim_start_matches("count://"), bytes)
    }
    fn delete(&self, path: &str) -> Result<(), StorageError> {
        LocalStorage.delete(path.trim_start_matches("count://"))
    }
}

#[test]
fn a_projection_reads_only_its_columns_bytes() {
    let counting = Arc::new(CountingStorage { bytes: AtomicU64::new(0) });
    register_storage("count", counting.clone());
    let df = read_parquet(&format!("count://{}", fixture("parquet/3"))).unwrap();
    let measure = |frame: &DataFrame| {
        let before = counting.bytes.load(Ordering::SeqCst);
        let out = frame.compute_on(&LocalScheduler::threads(1)).unwrap();
        (out, counting.bytes.load(Ordering::SeqCst) - before)
    };
    let (all, all_bytes) = measure(&df);
    let (one, one_bytes) = measure(&df.select(&["fare"]).unwrap());
    assert_eq!(all.num_columns(), 6);
    assert_eq!(one.num_columns(), 1);
    assert_eq!(one.column(0), all.column(4));
    // Column chunks are read exactly (no piece reads running into the next chunk), so the
    // footers, read at planning and by every task, are most of these small files' bytes: the
    // five columns left out are a third of what reading all of them costs.
    assert!(one_bytes * 3 < all_bytes * 2, "one column read {one_bytes} bytes, all columns {all_bytes}");
}

/// Files in memory, for the storage plug-in point.
#[derive(Default)]
struct MemoryStorage {
    files: Mutex<HashMap<String, Vec<u8>>>,
}

impl Storage for MemoryStorage {
    fn list(&self, pattern: &str) -> Result<Vec<String>, StorageError> {
        let prefix = pattern.trim_end_matches('*');
        let mut names: Vec<String> =
            self.files.lock().unwrap().keys().filter(|k| k.starts_with(prefix)).cloned().collect();
        names.sort();
        Ok(names)
    }
    fn size(&self, path: &str) -> Result<u64, StorageError> {
        self.files.lock().unwrap().get(path).map(|f| f.len() as u64).ok_or(StorageError::NotFound { url: path.into() })
    }
    fn read_range(&self, path: &str, range: Range<u64>) -> Result<Vec<u8>, StorageError> {
        let files = self.files.lock().unwrap();
        let file = files.get(path).ok_or(StorageError::NotFound { url: path.into() })?;
        Ok(file[range.start as usize..range.end as usize].to_vec())
    }
    fn write(&self, path: &str, bytes: &[u8]) -> Result<(), StorageError> {
        self.files.lock().unwrap().insert(path.to_string(), bytes.to_vec());
        Ok(())
    }
    fn delete(&self, path: &str) -> Result<(), StorageError> {
        self.files.lock().unwrap().remove(path);
        Ok(())
    }
}

#[test]
fn a_registered_storage_serves_csv_and_parquet() {
    let memory = Arc::new(MemoryStorage::default());
    register_storage("mem", memory.clone());
    memory.write("mem://in/a.csv", b"k,v\nx,1.5\ny,2\n").unwrap();
    memory.write("mem://in/b.csv", b"k,v\nx,4\n").unwrap();
    let df = read_csv("mem://in/*", &CsvOptions::default()).unwrap();
    assert_eq!(df.npartitions(), 2);
    let written = df.to_parquet("mem://out").compute_on(&LocalScheduler::new()).unwrap();
    assert_eq!(written, 3);
    assert_eq!(memory.list("mem://out/*").unwrap(), ["mem://out/part.0.parquet", "mem://out/part.1.parquet"]);
    let back = read_parquet("mem://out/*").unwrap();
    let sums = back.groupby(["k"]).unwrap().agg([Agg::sum("v")]).unwrap().compute_on(&LocalScheduler::new()).unwrap();
    assert_eq!(sums.column(1).as_primitive::<Float64Type>().values(), &[5.5, 2.0]);
    assert!(
        matches!(read_csv("nowhere://x.csv", &CsvOptions::default()), Err(DataFrameError::Io { message, .. }) if message.contains("register_storage"))
    );
}

#[test]
fn to_parquet_round_trips_every_partition() {
    let dir = std::env::temp_dir().join(format!("kiln-df-roundtrip-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let df = trips_csv(3);
    let rows = df.to_parquet(&dir.to_string_lossy()).compute_on(&LocalScheduler::new()).unwrap();
    assert_eq!(rows, 240);
    let mut names: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["part.0.parquet", "part.1.parquet", "part.2.parquet"]);
    let back = read_parquet(&dir.to_string_lossy()).unwrap();
    assert_eq!(back.npartitions(), 3);
    assert_eq!(back.compute_on(&LocalScheduler::new()).unwrap(), df.compute_on(&LocalScheduler::new()).unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn partitions_round_trip_through_the_ipc_codec() {
    kiln_dataframe::ensure_registered();
    let batch = trips_csv(1).compute_on(&LocalScheduler::new()).unwrap();
    let codecs = CodecRegistry::global();
    let value = Value::new(batch.clone());
    let encoded = codecs.encode(&value).unwrap();
    assert_eq!(encoded.tag, kiln_dataframe::lower::BATCH_CODEC_TAG);
    let back = codecs.decode(&encoded).unwrap();
    assert_eq!(back.downcast_ref::<RecordBatch>().unwrap(), &batch);
    let nbytes = codecs.nbytes(&value).unwrap();
    // Each allocation once, without Arrow's per-array overheads.
    assert!(nbytes <= batch.get_array_memory_size(), "{nbytes}");
    assert!(nbytes >= 240 * 8 * 5, "{nbytes}");
    // A decoded batch's columns share the message body, which counts once, not per column.
    let decoded = codecs.nbytes(&back).unwrap();
    assert!(decoded <= nbytes + nbytes / 4, "{decoded} decoded, {nbytes} before");
    assert!(back.downcast_ref::<RecordBatch>().unwrap().get_array_memory_size() > 2 * decoded);
    let mut broken = encoded.clone();
    broken.frames[0] = broken.frames[0][..10].to_vec().into();
    assert!(matches!(codecs.decode(&broken), Err(kiln_graph::CodecError::Malformed { .. })));
}

#[test]
fn every_task_is_portable_and_runs_rebuilt_from_its_spec() {
    kiln_dataframe::ensure_registered();
    let df = trips_csv(7);
    let positive = df.filter(&df.col("fare").gt(0)).unwrap();
    let grouped = positive
        .groupby([positive.col("ts").dt().hour()])
        .unwrap()
        .split_every(3)
        .agg([Agg::mean("fare"), Agg::size()])
        .unwrap();
    let in_memory = DataFrame::from_batch(df.compute_on(&LocalScheduler::new()).unwrap(), 4).unwrap();
    // Regular expressions travel as their text and are compiled again when a task is decoded.
    let regex = in_memory
        .assign("a_or_b", &in_memory.col("vendor").str().contains_regex("^(A|B)$"))
        .unwrap()
        .assign("bracketed", &in_memory.col("vendor").str().replace_regex("(?P<v>[A-Z])", r"<\g<v>\1>"))
        .unwrap();
    for frame in [grouped, in_memory, regex] {
        let (graph, outputs) = graph_of(&frame).unwrap();
        let specs = kiln_graph::portable::graph_to_specs(&graph, CodecRegistry::global()).unwrap();
        let rebuilt =
            kiln_graph::portable::specs_to_graph(&specs, KernelRegistry::global(), CodecRegistry::global()).unwrap();
        let keys: Vec<_> = outputs.iter().map(|&id| graph.key(id).clone()).collect();
        let rebuilt_outputs = rebuilt.ids_of(&keys).unwrap();
        let values = kiln_graph::Scheduler::compute(&LocalScheduler::new(), &rebuilt, &rebuilt_outputs).unwrap();
        let direct = frame.compute_on(&LocalScheduler::new()).unwrap();
        assert_eq!(frame.assemble(&rebuilt, &rebuilt_outputs, values).unwrap(), direct);
    }
}

#[test]
fn a_chain_of_100000_steps_builds_runs_and_drops_on_a_small_stack() {
    let handle = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(|| {
            let schema = Arc::new(Schema::new(vec![
                Field::new("x", DataType::Int64, true),
                Field::new("s", DataType::Utf8, true),
            ]));
            let batch = RecordBatch::try_new(
                schema,
                vec![
                    Arc::new(Int64Array::from(vec![1, 2, 3, 4])),
                    Arc::new(StringArray::from(vec!["a", "b", "c", "d"])),
                ],
            )
            .unwrap();
            let mut df = DataFrame::from_batch(batch, 2).unwrap();
            for _ in 0..100_000 {
                df = df.assign("x", &(df.col("x") + 1)).unwrap();
            }
            assert_eq!(df.plan_steps(), 100_000);
            let (graph, _) = graph_of(&df).unwrap();
            assert_eq!(graph.len(), 2);
            let out = df.compute_on(&LocalScheduler::new()).unwrap();
            assert_eq!(out.column(0).as_primitive::<Int64Type>().values(), &[100_001, 100_002, 100_003, 100_004]);
            let total = df.col("x").sum().compute_on(&LocalScheduler::new()).unwrap();
            assert_eq!(total, Scalar::Int(400_010));
            drop(df);
        })
        .unwrap();
    handle.join().unwrap();
}

#[test]
fn float_columns_without_nulls_reduce_like_numpy() {
    let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Float64, true)]));
    let values: Vec<f64> = (0..1000).map(|i| ((i * 37) % 101) as f64 * 0.25 - 7.0).collect();
    let batch = RecordBatch::try_new(schema, vec![Arc::new(Float64Array::from(values.clone()))]).unwrap();
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1.0);
    for parts in [1, 3, 7, 64] {
        let df = DataFrame::from_batch(batch.clone(), parts).unwrap();
        let got = df.col("v").var().compute_on(&LocalScheduler::new()).unwrap().as_f64().unwrap();
        assert!((got - var).abs() < 1e-9 * var, "{parts} partitions: {got} vs {var}");
        let got_mean = df.col("v").mean().compute_on(&LocalScheduler::new()).unwrap().as_f64().unwrap();
        assert!((got_mean - mean).abs() < 1e-12, "{parts}");
    }
    assert!(Float64Array::from(values).null_count() == 0);
}

#[test]
fn division_by_zero_follows_pandas_and_a_series_computes_to_its_column() {
    let schema =
        Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, true), Field::new("b", DataType::Int64, true)]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(vec![Some(1), Some(-1), Some(0), None])),
            Arc::new(Int64Array::from(vec![0, 0, 0, 1])),
        ],
    )
    .unwrap();
    let df = DataFrame::from_batch(batch, 2).unwrap();
    let ratio = (df.col("a") / df.col("b")).compute_on(&LocalScheduler::new()).unwrap();
    let ratio = ratio.as_primitive::<Float64Type>();
    assert_eq!((ratio.value(0), ratio.value(1)), (f64::INFINITY, f64::NEG_INFINITY));
    assert!(ratio.value(2).is_nan() && ratio.is_null(3));
    // NaN (0 / 0) is a missing value, as in pandas: `isna`, comparisons, `fillna`, `isin`.
    let r = df.col("a") / df.col("b");
    let scheduler = LocalScheduler::new();
    let bools = |s: kiln_dataframe::Series| -> Vec<bool> {
        s.compute_on(&scheduler).unwrap().as_boolean().iter().map(|v| v.unwrap()).collect()
    };
    assert_eq!(bools(r.isna()), [false, false, true, true]);
    assert_eq!(bools(r.gt(0)), [true, false, false, false]);
    assert_eq!(bools(r.le(f64::INFINITY)), [true, true, false, false]);
    assert_eq!(bools(r.ne(1.0)), [true, true, true, true]);
    // pandas: pd.Series([inf, -inf, nan, nan]).isin([nan, 0.0]) -> [False, False, True, True]
    assert_eq!(bools(r.isin([f64::NAN, 0.0])), [false, false, true, true]);
    assert_eq!(bools(r.isin([0.0])), [false, false, false, false]);
    let filled = r.fillna(7.0).compute_on(&scheduler).unwrap();
    assert_eq!(filled.as_primitive::<Float64Type>().values(), &[f64::INFINITY, f64::NEG_INFINITY, 7.0, 7.0]);
    // A NaN key is a missing key: the group-by drops it, as pandas does.
    let with_ratio = df.assign("r", &(df.col("a") / df.col("b"))).unwrap();
    let counts = with_ratio.groupby(["r"]).unwrap().size().unwrap().compute_on(&LocalScheduler::new()).unwrap();
    assert_eq!(counts.column(0).as_primitive::<Float64Type>().values(), &[f64::NEG_INFINITY, f64::INFINITY]);
}

#[test]
fn sorted_batches_give_known_divisions_that_row_wise_steps_keep() {
    let whole = trips_csv(1).compute_on(&LocalScheduler::new()).unwrap();
    let parts: Vec<RecordBatch> = [(0, 80), (80, 80), (160, 80)].iter().map(|&(o, l)| whole.slice(o, l)).collect();
    let df = DataFrame::from_sorted_batches(parts.clone(), "id").unwrap();
    assert!(df.known_divisions());
    assert_eq!(df.index(), Some("id"));
    assert_eq!(
        df.divisions(),
        &kiln_dataframe::Divisions::Known(vec![Scalar::Int(0), Scalar::Int(80), Scalar::Int(160), Scalar::Int(239)])
    );
    assert!(
        df.to_string().starts_with("kiln DataFrame: npartitions=3, divisions [0, 80, 160, 239]\nindex: id\n"),
        "{df}"
    );
    let cheap = df.filter(&df.col("fare").lt(10)).unwrap();
    assert_eq!(cheap.divisions(), df.divisions());
    assert!(!cheap.select(&["fare"]).unwrap().known_divisions());
    // Out of order across partitions, or inside one: refused, naming the index.
    let swapped = vec![parts[1].clone(), parts[0].clone()];
    assert!(
        matches!(DataFrame::from_sorted_batches(swapped, "id"), Err(DataFrameError::InvalidArgument(m)) if m.contains("id"))
    );
    let reversed = arrow::compute::take_record_batch(
        &whole,
        &arrow::array::UInt32Array::from((0..240u32).rev().collect::<Vec<_>>()),
    )
    .unwrap();
    assert!(matches!(DataFrame::from_sorted_batches(vec![reversed], "id"), Err(DataFrameError::InvalidArgument(_))));
    assert!(matches!(DataFrame::from_sorted_batches(parts, "nope"), Err(DataFrameError::ColumnNotFound { .. })));
}

/// pandas' per-vendor sums of fares (from the golden fixtures).
fn pandas_vendor_fare_sums() -> Vec<(String, f64)> {
    let text = std::fs::read_to_string(fixture("expected.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let case = &json["groupby_vendor"]["data"];
    let vendors = case["vendor"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string());
    vendors.zip(case["fare_sum"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap())).collect()
}

#[test]
fn a_groupby_result_is_a_frame_that_further_steps_and_reductions_apply_to() {
    let sums = pandas_vendor_fare_sums();
    let threshold = sums.iter().map(|(_, s)| *s).sum::<f64>() / sums.len() as f64;
    let want_total: f64 = sums.iter().map(|(_, s)| *s).filter(|s| *s > threshold).sum();
    let want_vendors: Vec<String> = sums.iter().filter(|(_, s)| *s > threshold).map(|(v, _)| v.clone()).collect();
    for n in [1, 3, 7] {
        let df = trips_csv(n);
        let by_vendor = df.groupby(["vendor"]).unwrap().agg([Agg::sum("fare")]).unwrap();
        assert_eq!(by_vendor.npartitions(), 1);
        let big = by_vendor.filter(&by_vendor.col("fare").gt(threshold)).unwrap();
        let total = big.col("fare").sum().compute_on(&LocalScheduler::new()).unwrap().as_f64().unwrap();
        assert!((total - want_total).abs() < 1e-9 * want_total, "{n} files: {total} vs {want_total}");
        let vendors = big.select(&["vendor"]).unwrap().compute_on(&LocalScheduler::new()).unwrap();
        let got: Vec<String> = vendors.column(0).as_string::<i32>().iter().map(|v| v.unwrap().to_string()).collect();
        assert_eq!(got, want_vendors);
        // A whole-frame `agg` is a group-by without keys: one row.
        let whole =
            df.agg([Agg::sum("fare").alias("fares"), Agg::size()]).unwrap().compute_on(&LocalScheduler::new()).unwrap();
        assert_eq!(whole.num_rows(), 1);
        let fares = whole.column(0).as_primitive::<Float64Type>().value(0);
        let text = std::fs::read_to_string(fixture("expected.json")).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        let pandas_sum = json["reductions"]["fare"]["sum"].as_f64().unwrap();
        assert!((fares - pandas_sum).abs() < 1e-9 * pandas_sum, "{fares} vs {pandas_sum}");
        assert_eq!(whole.column(1).as_primitive::<Int64Type>().value(0), 240);
    }
}

/// A sorted frame's partitions are written in order a slice of rows at a time: with more rows
/// than a slice, ties kept in input order, missing keys last, either direction, the files hold
/// exactly the rows of the sort computed in memory, and in the order of a stable sort.
#[test]
fn a_sorted_frame_is_written_in_order_across_write_slices() {
    let rows = 150_000i64;
    let keys: Int64Array = (0..rows).map(|i| (i % 13 != 0).then_some((i * 7_919) % 1_000)).collect();
    let ids = Int64Array::from_iter_values(0..rows);
    let values: Float64Array = (0..rows).map(|i| Some(if i % 17 == 0 { f64::NAN } else { i as f64 / 3.0 })).collect();
    let batch = RecordBatch::try_from_iter([
        ("k", Arc::new(keys.clone()) as Arc<dyn Array>),
        ("id", Arc::new(ids) as Arc<dyn Array>),
        ("v", Arc::new(values) as Arc<dyn Array>),
    ])
    .unwrap();
    let local = LocalScheduler::new();
    for descending in [false, true] {
        let dir = std::env::temp_dir().join(format!("kiln-df-sorted-write-{}-{descending}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let df = DataFrame::from_batch(batch.clone(), 2).unwrap();
        let sorted = df.sort_values("k", descending, &local).unwrap();
        let written = sorted.to_parquet(&dir.to_string_lossy()).compute_on(&local).unwrap();
        assert_eq!(written, rows as u64);
        let back = read_parquet(&dir.to_string_lossy()).unwrap().compute_on(&local).unwrap();
        assert_eq!(back, sorted.compute_on(&local).unwrap(), "descending {descending}");
        // A stable sort of (key, input position), missing keys last.
        let mut expected: Vec<(Option<i64>, i64)> =
            (0..rows).map(|i| (keys.is_valid(i as usize).then(|| keys.value(i as usize)), i)).collect();
        expected.sort_by(|a, b| match (a.0, b.0) {
            (Some(x), Some(y)) if descending => y.cmp(&x),
            (Some(x), Some(y)) => x.cmp(&y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        });
        let got = back.column_by_name("id").unwrap().as_primitive::<Int64Type>().values().to_vec();
        assert_eq!(got, expected.iter().map(|(_, i)| *i).collect::<Vec<_>>(), "descending {descending}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// `head(n)` reads the first partition only; when it holds fewer than `n` rows and other
/// partitions were not read, the shorter answer comes with a warning, as in Dask.
#[test]
fn a_short_head_warns_that_other_partitions_were_not_read() {
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).finish();
    let batch =
        RecordBatch::try_from_iter([("x", Arc::new(Int64Array::from_iter_values(0..10)) as Arc<dyn Array>)]).unwrap();
    let df = DataFrame::from_batch(batch, 5).unwrap();
    let local = LocalScheduler::new();
    let (short, enough, all_read) = tracing::subscriber::with_default(subscriber, || {
        let short = df.head(5).compute_on(&local).unwrap();
        let logged = captured.0.lock().unwrap().len();
        let enough = df.head(2).compute_on(&local).unwrap();
        let all_read = df.head_from(20, 5).compute_on(&local).unwrap();
        assert_eq!(captured.0.lock().unwrap().len(), logged, "warned without cause");
        (short, enough, all_read)
    });
    assert_eq!((short.num_rows(), enough.num_rows(), all_read.num_rows()), (2, 2, 10));
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(log.contains("WARN") && log.contains("5 rows requested, only 2 in the first 1 of 5 partitions"), "{log}");
}
