//! What the pandas golden tests share (`pandas_golden.rs`, `pandas_golden_more.rs`): the
//! fixtures and pandas' answers, and the trips table in every layout.

use std::path::PathBuf;
use std::sync::OnceLock;

use kiln_dataframe::{CsvOptions, DataFrame, read_csv, read_parquet};
use kiln_graph::Collection;
use kiln_local::LocalScheduler;
use serde_json::Value as Json;

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn expected() -> &'static Json {
    static EXPECTED: OnceLock<Json> = OnceLock::new();
    EXPECTED.get_or_init(|| {
        let text = std::fs::read_to_string(fixtures().join("expected.json")).expect("expected.json");
        serde_json::from_str(&text).expect("expected.json parses")
    })
}

pub fn scheduler() -> LocalScheduler {
    LocalScheduler::new()
}

pub fn csv_options() -> CsvOptions {
    CsvOptions::default().parse_dates(["ts"])
}

pub fn path(rel: &str) -> String {
    fixtures().join(rel).to_string_lossy().into_owned()
}

/// The trips table in every layout, with a label for failure messages.
pub fn layouts() -> Vec<(String, DataFrame)> {
    let mut out = Vec::new();
    for n in [1, 3, 7] {
        out.push((format!("csv/{n}"), read_csv(&path(&format!("csv/{n}/*.csv")), &csv_options()).unwrap()));
        out.push((format!("parquet/{n}"), read_parquet(&path(&format!("parquet/{n}"))).unwrap()));
    }
    out.push(("csv/gz".into(), read_csv(&path("csv/gz/*.csv.gz"), &csv_options()).unwrap()));
    // The one-file table split by bytes (read_csv's blocksize) into 5 and 13 blocks: every
    // case below then runs on partitions that start at line ends inside the file.
    let one_file = path("csv/1/trips-0.csv");
    let size = std::fs::metadata(&one_file).unwrap().len();
    for n in [5, 13] {
        let options = csv_options().blocksize(Some(size / n));
        out.push((format!("csv/blocks/{n}"), read_csv(&one_file, &options).unwrap()));
    }
    let whole = read_csv(&path("csv/1/trips-0.csv"), &csv_options()).unwrap().compute_on(&scheduler()).unwrap();
    out.push(("batches/3".into(), DataFrame::from_batch(whole, 3).unwrap()));
    for (label, df) in &out {
        let expected_parts = label.rsplit('/').next().and_then(|n| n.parse::<usize>().ok()).unwrap_or(3);
        assert_eq!(df.npartitions(), expected_parts, "{label}");
    }
    out
}

pub fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * 1f64.max(a.abs()).max(b.abs())
}
