//! TPC-H Q1, Q6 and Q3 on real data with kiln's dataframe: the realistic workload,
//! the same query code the benchmark times (`tpch_queries.rs`).
//!
//! The data: TPC-H tables as directories of Parquet files, e.g. written by
//! `bench/.venv/bin/python bench/tpch.py gen --sf 1 --dir /tmp/tpch` (tpchgen-cli, then a copy
//! with types normalized to float64 / string / date32, which every engine reads).
//!
//! Run: `cargo run --release --example tpch -- /tmp/tpch/sf1/norm`

#[path = "tpch_queries.rs"]
mod queries;

use std::time::Instant;

use kiln::dataframe::arrow::array::RecordBatch;
use kiln::dataframe::arrow::util::display::{ArrayFormatter, FormatOptions};

fn print(batch: &RecordBatch) {
    let header: String = batch.schema().fields().iter().map(|f| format!("{:>20} ", f.name())).collect();
    println!("{header}");
    let options = FormatOptions::default();
    let formatters: Vec<_> =
        batch.columns().iter().map(|c| ArrayFormatter::try_new(c.as_ref(), &options).expect("formattable")).collect();
    for row in 0..batch.num_rows() {
        let line: String = formatters.iter().map(|f| format!("{:>20} ", f.value(row).to_string())).collect();
        println!("{line}");
    }
}

fn main() -> Result<(), queries::Error> {
    let Some(data) = std::env::args().nth(1) else {
        return Err("usage: tpch DATA_DIR (a directory holding lineitem/, orders/ and customer/ as Parquet)".into());
    };
    let scheduler = kiln::default_scheduler();
    let lineitem = queries::table(&data, "lineitem")?;
    println!("{lineitem}\n");
    let all: [(&str, queries::Query); 3] = [("Q1", queries::q1), ("Q6", queries::q6), ("Q3", queries::q3)];
    for (name, query) in all {
        let start = Instant::now();
        let answer = query(&data, &*scheduler)?;
        println!("{name} in {:.2?}:", start.elapsed());
        print(&answer);
        println!();
    }
    Ok(())
}
