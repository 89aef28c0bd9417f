//! TPC-H Q1, Q6 and Q3 written with kiln's dataframe API, over the normalized Parquet copy that
//! `bench/tpch.py gen` writes. `bench/tpch.py run` starts this binary beside dask.dataframe,
//! polars and DuckDB, compares the answers and prints the table; this side prints one JSON line
//! (times, load average before each query's runs, answers, peak RSS).
//!
//! `tpch --data /tmp/tpch/sf1/norm [--runs 3] [--threads N] [--only q1,q6,q3] [--timeline]`

#[path = "../../../examples/tpch_queries.rs"]
mod queries;

use kiln_bench::{arg, load_average, peak_rss_bytes};
use kiln_local::LocalScheduler;
use queries::{Error, Query, q1, q3, q6};
use serde_json::json;

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
