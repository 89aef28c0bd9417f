//! TPC-H Q1, Q6 and Q3 written with kiln's dataframe API, over the normalized Parquet copy that
//! `bench/tpch.py gen` writes. `bench/tpch.py run` starts this binary beside dask.dataframe,
//! polars and DuckDB, compares the answers and prints the table; this side prints one JSON line
//! (times, load average before each query's runs, answers, peak RSS).
//!
//! `tpch --data /tmp/tpch/sf1/norm [--runs 3] [--threads N] [--only q1,q6,q3] [--timeline]`

use kiln_bench::{arg, load_average, peak_rss_bytes};
use kiln_dataframe::arrow::array::RecordBatch;
use kiln_dataframe::arrow::compute::{SortColumn, SortOptions, lexsort_to_indices, take_record_batch};
use kiln_dataframe::{Agg, AggFunc, DataFrame, MergeOptions, read_parquet};
use kiln_graph::Collection;
use kiln_local::LocalScheduler;
use serde_json::json;

type Error = Box<dyn std::error::Error>;

fn table(data: &str, name: &str) -> Result<DataFrame, Error> {
    Ok(read_parquet(&format!("{data}/{name}"))?)
}

/// `price * (1 - discount)` as kiln builds it (no scalar-on-the-left operators).
fn disc_price(df: &DataFrame) -> kiln_dataframe::Series {
    df.col("l_extendedprice") * (-&df.col("l_discount") + 1.0)
}

fn q1(data: &str, scheduler: &LocalScheduler) -> Result<RecordBatch, Error> {
    let li = table(data, "lineitem")?;
    let li = li.filter(&li.col("l_shipdate").le("1998-09-02"))?;
    let price = disc_price(&li);
    let charge = &price * (li.col("l_tax") + 1.0);
    let out = li.groupby(["l_returnflag", "l_linestatus"])?.split_out(1).agg([
        Agg::sum("l_quantity").alias("sum_qty"),
        Agg::sum("l_extendedprice").alias("sum_base_price"),
        Agg::of(AggFunc::Sum, &price).alias("sum_disc_price"),
        Agg::of(AggFunc::Sum, &charge).alias("sum_charge"),
        Agg::mean("l_quantity").alias("avg_qty"),
        Agg::mean("l_extendedprice").alias("avg_price"),
        Agg::mean("l_discount").alias("avg_disc"),
        Agg::size().alias("count_order"),
    ])?;
    // The group-by's answer is sorted by its keys already, as TPC-H orders Q1.
    Ok(out.compute_on(scheduler)?)
}

fn q6(data: &str, scheduler: &LocalScheduler) -> Result<RecordBatch, Error> {
    let li = table(data, "lineitem")?;
    let mask = li.col("l_shipdate").ge("1994-01-01")
        & li.col("l_shipdate").lt("1995-01-01")
        & li.col("l_discount").between(0.05, 0.07)
        & li.col("l_quantity").lt(24.0);
    let li = li.filter(&mask)?;
    let revenue = li.col("l_extendedprice") * li.col("l_discount");
    let out = li.agg([Agg::of(AggFunc::Sum, &revenue).alias("revenue")])?;
    Ok(out.compute_on(scheduler)?)
}

fn q3(data: &str, scheduler: &LocalScheduler) -> Result<RecordBatch, Error> {
    let c = table(data, "customer")?;
    let c = c.filter(&c.col("c_mktsegment").eq("BUILDING"))?.select(&["c_custkey"])?;
    let o = table(data, "orders")?;
    let o = o.filter(&o.col("o_orderdate").lt("1995-03-15"))?.select(&[
        "o_orderkey",
        "o_custkey",
        "o_orderdate",
        "o_shippriority",
    ])?;
    let li = table(data, "lineitem")?;
    let li =
        li.filter(&li.col("l_shipdate").gt("1995-03-15"))?.select(&["l_orderkey", "l_extendedprice", "l_discount"])?;
    let co = c.merge(&o, &MergeOptions::left_right(["c_custkey"], ["o_custkey"]))?;
    let j = co.merge(&li, &MergeOptions::left_right(["o_orderkey"], ["l_orderkey"]))?;
    let revenue = disc_price(&j);
    let grouped = j
        .groupby(["l_orderkey", "o_orderdate", "o_shippriority"])?
        .agg([Agg::of(AggFunc::Sum, &revenue).alias("revenue")])?;
    let all = grouped.compute_on(scheduler)?;
    // The top 10 of about 11 000 groups (SF1) on the caller, as Dask's `nlargest` does.
    let revenue = all.column_by_name("revenue").ok_or("no revenue column")?;
    let date = all.column_by_name("o_orderdate").ok_or("no o_orderdate column")?;
    let order = lexsort_to_indices(
        &[
            SortColumn { values: revenue.clone(), options: Some(SortOptions { descending: true, nulls_first: false }) },
            SortColumn { values: date.clone(), options: Some(SortOptions::default()) },
        ],
        Some(10),
    )?;
    let top = take_record_batch(&all, &order)?;
    let columns = ["l_orderkey", "revenue", "o_orderdate", "o_shippriority"];
    let positions = columns.iter().map(|c| top.schema().index_of(c)).collect::<Result<Vec<_>, _>>()?;
    Ok(top.project(&positions)?)
}

type Query = fn(&str, &LocalScheduler) -> Result<RecordBatch, Error>;

/// `--timeline`: every task's thread, start and end (ms from the first start), on stderr after
/// each run, to see where the cores wait.
#[derive(Default)]
struct Timeline {
    spans: std::sync::Mutex<Vec<(String, String, f64, f64)>>,
    open: std::sync::Mutex<std::collections::HashMap<String, f64>>,
    origin: std::sync::OnceLock<std::time::Instant>,
}

impl Timeline {
    fn now(&self) -> f64 {
        self.origin.get_or_init(std::time::Instant::now).elapsed().as_secs_f64() * 1e3
    }

    fn print(&self) {
        let mut spans = std::mem::take(&mut *self.spans.lock().unwrap());
        spans.sort_by(|a, b| a.2.total_cmp(&b.2));
        for (key, thread, start, end) in spans {
            eprintln!("{start:8.1} {end:8.1} {:7.1} {thread:>12} {key}", end - start);
        }
    }
}

impl kiln_local::Callbacks for Timeline {
    fn on_start(&self, key: &kiln_graph::Key) {
        let t = self.now();
        self.open.lock().unwrap().insert(key.to_string(), t);
    }
    fn on_finish(&self, key: &kiln_graph::Key, _error: Option<&kiln_graph::TaskError>) {
        let t = self.now();
        let start = self.open.lock().unwrap().remove(&key.to_string()).unwrap_or(t);
        let thread = format!("{:?}", std::thread::current().id());
        self.spans.lock().unwrap().push((key.to_string(), thread, start, t));
    }
}

fn main() -> Result<(), Error> {
    let data: String = arg("--data", "/tmp/tpch/sf1/norm".to_string());
    let runs: usize = arg("--runs", 3);
    let threads: usize = arg("--threads", kiln_bench::available_threads());
    let timeline = std::env::args().any(|a| a == "--timeline").then(|| std::sync::Arc::new(Timeline::default()));
    let mut scheduler = LocalScheduler::threads(threads);
    if let Some(t) = &timeline {
        scheduler = scheduler.with_callbacks(t.clone());
    }
    let only: String = arg("--only", "q1,q6,q3".to_string());
    let queries: [(&str, Query); 3] = [("q1", q1), ("q6", q6), ("q3", q3)];
    let queries = queries.into_iter().filter(|(name, _)| only.split(',').any(|o| o == *name));
    let (mut times, mut load, mut answers) = (json!({}), json!({}), json!({}));
    for (name, query) in queries {
        load[name] = json!(load_average());
        let mut secs = Vec::with_capacity(runs);
        let mut answer = None;
        for _ in 0..runs.max(1) {
            let start = std::time::Instant::now();
            let batch = query(&data, &scheduler)?;
            secs.push(start.elapsed().as_secs_f64());
            if let Some(t) = &timeline {
                eprintln!("{name}: {:.1} ms", secs[secs.len() - 1] * 1e3);
                t.print();
            }
            answer = Some(batch);
        }
        times[name] = json!(secs);
        answers[name] = kiln_bench::json_rows(answer.as_ref().ok_or("no run")?)?;
    }
    let rss = peak_rss_bytes().unwrap_or(0) as f64 / (1 << 20) as f64;
    println!(
        "{}",
        json!({"engine": "kiln", "times": times, "load": load, "answers": answers, "peak_rss_mb": rss, "threads": threads})
    );
    Ok(())
}
