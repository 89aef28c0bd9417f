//! The seeds' dataframe examples on CSV files this program writes (so it runs offline):
//!
//! ```python
//! df = dd.read_csv('data/2015-*-*.csv', parse_dates=['timestamp'])
//! df.groupby(df.timestamp.dt.hour).value.mean()
//! df.passenger_count.mean()
//! df.groupby(df.passenger_count).trip_distance.mean()
//! df.trip_distance.resample('h').mean()
//! df = dd.read_parquet('...'); data = df[['age', 'income', 'married']]
//! ```
//!
//! Run: `cargo run --release --example dataframe_seed [days]` (default 10 days, one file each).

use std::fmt::Write as _;
use std::time::Instant;

use kiln::dataframe::arrow::array::RecordBatch;
use kiln::dataframe::arrow::util::display::{ArrayFormatter, FormatOptions};
use kiln::dataframe::{Agg, CsvOptions, read_csv, read_parquet};
use kiln::prelude::*;

/// One day of trips, a few thousand rows, with some passenger counts missing.
fn write_day(dir: &std::path::Path, day: u32) -> std::io::Result<()> {
    let mut text = String::from("timestamp,value,passenger_count,trip_distance,age,income,married\n");
    let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(day);
    let mut next = move || {
        // SplitMix64: reproducible data without a random-number dependency.
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) as f64 / u64::MAX as f64
    };
    for i in 0..5_000u32 {
        let second = i * 17;
        let (h, m, s) = (second / 3600 % 24, second / 60 % 60, second % 60);
        let passengers = if next() < 0.05 { String::new() } else { format!("{}", 1 + (next() * 5.0) as u32) };
        let _ = writeln!(
            text,
            "2015-01-{:02} {h:02}:{m:02}:{s:02},{:.3},{passengers},{:.2},{},{:.0},{}",
            day,
            10.0 + 5.0 * (f64::from(h) / 24.0 * std::f64::consts::TAU).sin() + next(),
            next() * 8.0,
            18 + (next() * 60.0) as u32,
            20_000.0 + next() * 80_000.0,
            next() < 0.5,
        );
    }
    std::fs::write(dir.join(format!("2015-01-{day:02}.csv")), text)
}

/// The batch as text, a line per row.
fn table(batch: &RecordBatch) -> String {
    let mut out = batch.schema().fields().iter().map(|f| format!("{:>20}", f.name())).collect::<String>();
    // Arrow's own value formatting: dates and times as text, not raw counts of nanoseconds.
    let options = FormatOptions::default().with_null("NaN");
    let formatters: Vec<_> =
        batch.columns().iter().map(|c| ArrayFormatter::try_new(c.as_ref(), &options).expect("formattable")).collect();
    for row in 0..batch.num_rows() {
        out.push('\n');
        for formatter in &formatters {
            let _ = write!(out, "{:>20}", formatter.value(row).to_string());
        }
    }
    out
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let days: u32 = std::env::args().nth(1).map_or(Ok(10), |d| d.parse())?;
    let dir = std::env::temp_dir().join(format!("kiln-dataframe-seed-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    for day in 1..=days {
        write_day(&dir, day)?;
    }

    let start = Instant::now();
    let df = read_csv(&format!("{}/2015-*-*.csv", dir.display()), &CsvOptions::default().parse_dates(["timestamp"]))?;
    println!("{df}\n");
    let by_hour = df.groupby([df.col("timestamp").dt().hour()])?.agg([Agg::mean("value")])?;
    println!("{}", by_hour.explain());
    println!("mean value by hour:\n{}", table(&by_hour.head(5).compute()?));
    println!("mean passenger_count: {}", df.col("passenger_count").mean().compute()?);
    let by_passengers = df.groupby(["passenger_count"])?.agg([Agg::mean("trip_distance")])?;
    println!("mean trip_distance by passenger_count:\n{}", table(&by_passengers.compute()?));
    // Resampling needs a datetime index with known divisions; the files are in time order, so
    // it is set without moving rows (Dask's `set_index('timestamp', sorted=True)`).
    let indexed = df.set_index_sorted("timestamp", &*kiln::default_scheduler())?;
    let hourly = indexed.col("trip_distance").resample("h")?.mean()?;
    println!("hourly mean trip_distance (first hours):\n{}", table(&hourly.head(3).compute()?));

    let parquet = dir.join("parquet");
    df.to_parquet(&parquet.to_string_lossy()).compute()?;
    let data = read_parquet(&parquet.to_string_lossy())?.select(&["age", "income", "married"])?;
    println!("{} rows of {:?} from {} Parquet files", data.len().compute()?, data.columns(), data.npartitions());
    println!("total {:.2?} for {days} files", start.elapsed());
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
