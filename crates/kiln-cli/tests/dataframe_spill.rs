//! Dataframe shuffles out of core: `kiln worker` processes under a memory limit sort
//! (`set_index`) and group (`split_out > 1`) a table three times that limit, each answer is
//! checked row by row, and every worker's peak memory stays under its limit.
//! Alone in its test binary, as `spill_limit.rs` is: peak memory is what is measured, so no
//! other cluster competes for the two cores while the workers spill (test binaries run one at
//! a time).

use std::io::Write;
use std::path::Path;

use kiln::Collection;
use kiln::dataframe::arrow::array::{Array, AsArray, RecordBatch};
use kiln::dataframe::arrow::datatypes::{Float64Type, Int64Type};
use kiln::dataframe::{Agg, CsvOptions, DType, DataFrame, read_csv, read_parquet};
use kiln::local::LocalScheduler;
use kiln_distributed::LocalCluster;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

/// Each worker's memory limit.
const LIMIT: u64 = 128 << 20;
/// Rows: four 8-byte columns, so 13.2 M rows are 3× `LIMIT` in memory.
const ROWS: i64 = 13_200_000;
/// CSV files (partitions): ~4.8 MB of columns each, so a worker holds many at once only by
/// spilling.
const FILES: i64 = 84;
/// Distinct group keys: enough that a split-out group-by is the right plan.
const KEYS: i64 = 200_003;

/// Row `i`'s index value: a permutation of `0..ROWS` (the multiplier is prime to `ROWS`), so the
/// sort has to move nearly every row.
fn id_of(i: i64) -> i64 {
    (i * 7_919) % ROWS
}

fn key_of(id: i64) -> i64 {
    (id * 31 + 7) % KEYS
}

fn value_of(id: i64) -> f64 {
    (id % 1_000) as f64
}

fn pad_of(id: i64) -> i64 {
    id ^ 0x5a5a_5a5a
}

fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// Each worker's peak memory since the last call, in MB; the peak is reset (`clear_refs` 5) so
/// the next phase is measured on its own.
fn phase_peaks(pids: &[u32]) -> Vec<u64> {
    pids.iter()
        .map(|&pid| {
            let peak = peak_rss(pid);
            std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
            peak
        })
        .collect()
}

/// Writes the table as CSV files and returns each key's (sum, count), the group-by's answer.
fn write_table(dir: &Path) -> Vec<(f64, i64)> {
    let mut groups = vec![(0.0, 0); KEYS as usize];
    let per_file = ROWS / FILES;
    for file in 0..FILES {
        let out = std::fs::File::create(dir.join(format!("part-{file:03}.csv"))).unwrap();
        let mut out = std::io::BufWriter::with_capacity(1 << 20, out);
        writeln!(out, "id,key,value,pad").unwrap();
        let end = if file == FILES - 1 { ROWS } else { (file + 1) * per_file };
        for i in file * per_file..end {
            let id = id_of(i);
            let (key, value) = (key_of(id), value_of(id));
            writeln!(out, "{id},{key},{value},{}", pad_of(id)).unwrap();
            let group = &mut groups[key as usize];
            group.0 += value;
            group.1 += 1;
        }
        out.flush().unwrap();
    }
    groups
}

fn int64(batch: &RecordBatch, name: &str) -> Vec<i64> {
    let column = batch.column_by_name(name).unwrap();
    assert_eq!(column.null_count(), 0, "{name} has nulls");
    column.as_primitive::<Int64Type>().values().to_vec()
}

fn float64(batch: &RecordBatch, name: &str) -> Vec<f64> {
    let column = batch.column_by_name(name).unwrap();
    assert_eq!(column.null_count(), 0, "{name} has nulls");
    column.as_primitive::<Float64Type>().values().to_vec()
}

#[test]
fn a_sort_and_a_split_out_groupby_of_three_times_the_memory_limit_complete_under_it() {
    kiln::register_builtins();
    let root = std::env::temp_dir().join(format!("kiln-df-spill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let (input, output) = (root.join("in"), root.join("sorted"));
    std::fs::create_dir_all(&input).unwrap();
    let expected = write_table(&input);

    let cluster =
        LocalCluster::builder().workers(2).threads_per_worker(1).memory_limit(LIMIT).binary(KILN).start().unwrap();
    let client = cluster.client().unwrap();
    let pids = cluster.worker_pids();
    let options = CsvOptions::default().dtype("value", DType::Float64);
    let df = read_csv(&format!("{}/*.csv", input.display()), &options).unwrap();
    assert_eq!(df.npartitions(), FILES as usize);

    // The group-by first: its hash shuffle spreads 200,003 groups over four outputs.
    let grouped: DataFrame = df
        .groupby(["key"])
        .unwrap()
        .split_out(4)
        .agg([Agg::sum("value"), Agg::size(), Agg::mean("value").alias("mean")])
        .unwrap();
    assert_eq!(grouped.npartitions(), 4);
    let answer = grouped.compute_on(&client).unwrap();
    let groupby_peaks = phase_peaks(&pids);
    assert_eq!(answer.num_rows(), KEYS as usize);
    let (keys, sums, means) = (int64(&answer, "key"), float64(&answer, "value"), float64(&answer, "mean"));
    let sizes = int64(&answer, "size");
    let mut seen = vec![false; KEYS as usize];
    for row in 0..answer.num_rows() {
        let key = keys[row] as usize;
        assert!(!seen[key], "key {key} appears twice");
        seen[key] = true;
        let (sum, count) = expected[key];
        assert_eq!((sums[row], sizes[row]), (sum, count), "key {key}");
        assert!((means[row] - sum / count as f64).abs() <= 1e-12 * sum.abs().max(1.0), "key {key}");
    }

    // The sort: sampled divisions, a range shuffle of every row, each partition sorted and
    // written by the worker holding it.
    let sorted = df.set_index("id", &client).unwrap();
    assert!(sorted.known_divisions());
    let written = sorted.to_parquet(&output.to_string_lossy()).compute_on(&client).unwrap();
    assert_eq!(written, ROWS as u64);
    let sort_peaks = phase_peaks(&pids);
    drop(client);
    cluster.close();
    let mb = |peaks: &[u64]| peaks.iter().map(|p| p >> 20).collect::<Vec<_>>();
    eprintln!(
        "workers' peak RSS: group-by {:?} MB, sort {:?} MB, for {} MB of data, limit {} MB each",
        mb(&groupby_peaks),
        mb(&sort_peaks),
        (ROWS * 32) >> 20,
        LIMIT >> 20
    );

    // Every id once, in order across the partitions, each row intact.
    let mut next = 0i64;
    let mut parts = 0;
    let local = LocalScheduler::new();
    while let Ok(part) = read_parquet(&output.join(format!("part.{parts}.parquet")).to_string_lossy()) {
        let batch = part.compute_on(&local).unwrap();
        let (ids, keys, values, pads) =
            (int64(&batch, "id"), int64(&batch, "key"), float64(&batch, "value"), int64(&batch, "pad"));
        for row in 0..batch.num_rows() {
            let id = ids[row];
            assert_eq!(id, next, "partition {parts} row {row}");
            assert_eq!((keys[row], values[row], pads[row]), (key_of(id), value_of(id), pad_of(id)), "id {id}");
            next += 1;
        }
        parts += 1;
    }
    assert_eq!(next, ROWS, "rows in {parts} partitions");
    std::fs::remove_dir_all(&root).unwrap();

    // Every worker's peak memory stays under its limit, the bar. What got it there:
    // no task holds more than about a partition's worth of rows (the group-by's shuffle
    // combines partial states where they meet; before, a task concatenated a quarter of every
    // partial row and workers peaked at 336 and 461 MB); a paused worker fetches nothing and at
    // most 10 % of its limit arrives from peers at once (the range shuffle's 1,700 pieces took
    // sort peaks to 146-240 MB before); a run's inputs count against the limit until the run
    // ends; over its spill threshold a worker reads back and fetches nothing while anything
    // else is under way, since waiting tasks pin what is already there (sort peaks 131-181 MB
    // before); and a sorted partition is written a slice at a time. Six runs since peaked at
    // 99-112 MB.
    let bound = LIMIT;
    for (phase, peaks) in [("group-by", &groupby_peaks), ("sort", &sort_peaks)] {
        for (pid, peak) in pids.iter().zip(peaks) {
            assert!(*peak < bound, "{phase}: worker {pid} peak RSS {} MB exceeds {} MB", peak >> 20, bound >> 20);
        }
    }
}
