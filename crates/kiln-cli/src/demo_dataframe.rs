//! The demo's dataframe part: the seeds' `dd.read_csv('data/2015-*-*.csv',
//! parse_dates=['timestamp'])`, `df.groupby(df.timestamp.dt.hour).value.mean()` and
//! `df.value.resample('h').mean()`, on the demo's local cluster, over daily CSV files the demo
//! writes first (so it runs offline). Both answers are checked against the same means taken
//! row by row while the files are written.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use kiln::Collection;
use kiln::dataframe::arrow::array::{Array, AsArray, RecordBatch};
use kiln::dataframe::arrow::datatypes::{Float64Type, Int32Type, Int64Type};
use kiln::dataframe::{Agg, CsvOptions, read_csv};
use kiln_distributed::Client;

/// One reading every 10 s: 8,640 rows a day.
const STEP_SECONDS: usize = 10;
const ROWS_PER_DAY: usize = 86_400 / STEP_SECONDS;

/// The data directory, removed when the demo ends (or fails).
struct DataDir(PathBuf);

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A reading: a daily cycle plus deterministic noise, so every hour has its own mean.
fn reading(day: usize, row: usize) -> f64 {
    let hour = row * STEP_SECONDS / 3600;
    let noise = ((day * ROWS_PER_DAY + row) * 7_919 % 1_000) as f64 / 1_000.0;
    10.0 + hour as f64 + noise
}

/// Each hour's (sum of readings, readings).
type Sums = Vec<(f64, usize)>;

/// Writes `days` files `2015-01-DD.csv` (`timestamp,value`) and returns each hour's
/// (sum, count) by hour of day and by hour of the month.
fn write_days(dir: &Path, days: usize) -> Result<(Sums, Sums)> {
    let mut by_hour = vec![(0.0, 0); 24];
    let mut by_bucket = vec![(0.0, 0); days * 24];
    for day in 0..days {
        let path = dir.join(format!("2015-01-{:02}.csv", day + 1));
        let file = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let mut out = std::io::BufWriter::new(file);
        writeln!(out, "timestamp,value")?;
        for row in 0..ROWS_PER_DAY {
            let seconds = row * STEP_SECONDS;
            let (hour, minute, second) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
            let value = reading(day, row);
            writeln!(out, "2015-01-{:02} {hour:02}:{minute:02}:{second:02},{value}", day + 1)?;
            for slot in [&mut by_hour[hour], &mut by_bucket[day * 24 + hour]] {
                slot.0 += value;
                slot.1 += 1;
            }
        }
        out.flush().with_context(|| format!("writing {}", path.display()))?;
    }
    Ok((by_hour, by_bucket))
}

fn floats(batch: &RecordBatch, column: usize) -> Vec<f64> {
    batch.column(column).as_primitive::<Float64Type>().values().to_vec()
}

/// Every mean within rounding of its row-by-row value.
fn check(what: &str, got: &[f64], expected: &[(f64, usize)]) -> Result<()> {
    ensure!(got.len() == expected.len(), "{what}: {} values, expected {}", got.len(), expected.len());
    for (i, (value, (sum, count))) in got.iter().zip(expected).enumerate() {
        let want = sum / *count as f64;
        ensure!((value - want).abs() <= 1e-9 * want.abs(), "{what}: value {i} is {value}, expected {want}");
    }
    Ok(())
}

/// Runs the dataframe part on `client` over `days` daily files.
pub fn run(client: &Client, days: usize) -> Result<()> {
    ensure!(days > 0, "--days must be positive");
    let dir = DataDir(std::env::temp_dir().join(format!("kiln-demo-data-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).with_context(|| format!("creating {}", dir.0.display()))?;
    let t = Instant::now();
    let (by_hour, by_bucket) = write_days(&dir.0, days)?;
    println!(
        "  dataframe: wrote {days} daily CSV files ({} rows) to {} in {:.2?}",
        days * ROWS_PER_DAY,
        dir.0.display(),
        t.elapsed()
    );

    let pattern = format!("{}/2015-*-*.csv", dir.0.display());
    let df = read_csv(&pattern, &CsvOptions::default().parse_dates(["timestamp"]))?;
    println!("  df = read_csv('{pattern}', parse_dates=['timestamp']): {} partitions", df.npartitions());

    let t = Instant::now();
    let hourly = df.groupby([df.col("timestamp").dt().hour()])?.agg([Agg::mean("value")])?;
    let out = hourly.compute_on(client).context("computing the group-by on the hour on the cluster")?;
    let hours: Vec<i64> = match out.column(0).data_type() {
        kiln::dataframe::arrow::datatypes::DataType::Int32 => {
            out.column(0).as_primitive::<Int32Type>().values().iter().map(|&h| i64::from(h)).collect()
        }
        _ => out.column(0).as_primitive::<Int64Type>().values().to_vec(),
    };
    // A split-out group-by (more than 15 files) returns the hours in hash order.
    let mut by_hour_out: Vec<(i64, f64)> = hours.into_iter().zip(floats(&out, 1)).collect();
    by_hour_out.sort_by_key(|&(hour, _)| hour);
    let hours: Vec<i64> = by_hour_out.iter().map(|&(hour, _)| hour).collect();
    ensure!(hours == (0..24).collect::<Vec<i64>>(), "the group-by's hours are {hours:?}");
    let means: Vec<f64> = by_hour_out.iter().map(|&(_, mean)| mean).collect();
    check("groupby(timestamp.dt.hour).value.mean()", &means, &by_hour)?;
    let shown: Vec<String> = means.iter().take(4).map(|m| format!("{m:.4}")).collect();
    println!(
        "  df.groupby(df.timestamp.dt.hour).value.mean() in {:.2?}: 24 hours [{}, ...], matches the row-by-row means",
        t.elapsed(),
        shown.join(", ")
    );

    let t = Instant::now();
    // The files are in time order, so the index is set without moving rows (Dask's
    // `set_index('timestamp', sorted=True)`); resampling needs its divisions.
    let indexed = df.set_index_sorted("timestamp", client).context("indexing by timestamp on the cluster")?;
    let resampled = indexed.col("value").resample("h")?.mean()?;
    let out = resampled.compute_on(client).context("computing the resample on the cluster")?;
    ensure!(out.column(1).null_count() == 0, "the resample has empty hours");
    let means = floats(&out, 1);
    check("value.resample('h').mean()", &means, &by_bucket)?;
    println!(
        "  df.set_index('timestamp', sorted=True).value.resample('h').mean() in {:.2?}: {} hourly means, matches the row-by-row means",
        t.elapsed(),
        means.len()
    );
    Ok(())
}
