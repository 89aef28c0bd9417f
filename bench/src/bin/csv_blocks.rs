//! One big CSV file read as one partition against byte-range blocks (`read_csv`'s
//! `blocksize`), beside dask.dataframe's `read_csv(blocksize=None)` and
//! `read_csv(blocksize=...)` on the same file (`bench/dask_csv_blocks.py`).
//!
//! `csv_blocks [--file /tmp/kiln-csv-blocks.csv] [--mb 1000] [--blocksize 64000000] [--runs 3]
//! [--threads 2] [--no-dask]`: writes the file when it is missing (flights-like rows: an id,
//! origin and destination codes, a departure delay with 3 % `NA`, a distance, a carrier), then
//! times the seeds' group-by, `df.groupby("origin").dep_delay.mean()`, both ways on each side,
//! one warm-up and `--runs` timed runs each, with the peak RSS of each way. The answers are
//! checked against a sequential pass over the file and between the sides. Ends with a `RESULT`
//! line. The file is left in place for the next run; delete it after.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};

use kiln_bench::{Protocol, Side, arg, get, peak_rss_bytes, reset_peak_rss, run_dask};
use kiln_dataframe::arrow::array::AsArray;
use kiln_dataframe::arrow::datatypes::Float64Type;
use kiln_dataframe::{Agg, CsvOptions, read_csv};
use kiln_graph::Collection;
use kiln_local::LocalScheduler;

type Error = Box<dyn std::error::Error>;

const ORIGINS: [&str; 3] = ["EWR", "JFK", "LGA"];
const DESTS: [&str; 8] = ["ATL", "BOS", "DEN", "LAX", "MIA", "ORD", "SFO", "SEA"];
const CARRIERS: [&str; 5] = ["AA", "B6", "DL", "UA", "WN"];

/// Writes about `mb` megabytes of rows (a fixed-seed generator: the same file every time).
fn generate(path: &str, mb: u64) -> Result<(), Error> {
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    writeln!(out, "id,origin,dest,dep_delay,distance,carrier")?;
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (mut written, target, mut id) = (0u64, mb * 1_000_000, 0u64);
    while written < target {
        let r = next();
        let origin = ORIGINS[(r % 3) as usize];
        let dest = DESTS[((r >> 8) % 8) as usize];
        let carrier = CARRIERS[((r >> 16) % 5) as usize];
        let distance = 200 + (r >> 24) % 2500;
        let line = if (r >> 40) % 100 < 3 {
            format!("{id},{origin},{dest},NA,{distance},{carrier}\n")
        } else {
            // Delays from -20 to 179 minutes, skewed by origin so the means differ.
            let delay = ((r >> 48) % 200) as i64 - 20 + (r % 3) as i64 * 4;
            format!("{id},{origin},{dest},{delay},{distance},{carrier}\n")
        };
        out.write_all(line.as_bytes())?;
        written += line.len() as u64;
        id += 1;
    }
    out.flush()?;
    Ok(())
}

/// Each origin's mean delay by a plain pass over the lines.
fn sequential_means(path: &str) -> Result<BTreeMap<String, f64>, Error> {
    let mut sums: BTreeMap<String, (f64, u64)> = BTreeMap::new();
    let file = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(path)?);
    for line in file.lines().skip(1) {
        let line = line?;
        let fields: Vec<&str> = line.split(',').collect();
        if fields[3] != "NA" {
            let e = sums.entry(fields[1].to_string()).or_default();
            e.0 += fields[3].parse::<f64>()?;
            e.1 += 1;
        }
    }
    Ok(sums.into_iter().map(|(k, (s, n))| (k, s / n as f64)).collect())
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

fn main() -> Result<(), Error> {
    let protocol = Protocol::from_args(3);
    let file: String = arg("--file", "/tmp/kiln-csv-blocks.csv".to_string());
    let mb: u64 = arg("--mb", 1000);
    let blocksize: u64 = arg("--blocksize", 64_000_000);
    if !std::path::Path::new(&file).exists() {
        println!("writing {file} (~{mb} MB) ...");
        generate(&file, mb)?;
    }
    let size = std::fs::metadata(&file)?.len();
    let expected = sequential_means(&file)?;
    println!("{file}: {size} bytes; mean delay by origin {expected:?}");

    let scheduler = LocalScheduler::threads(protocol.threads);
    let mut sides = Vec::new();
    let mut rss = Vec::new();
    for (label, split) in [("kiln_whole", None), ("kiln_blocks", Some(blocksize))] {
        let options = CsvOptions::default().blocksize(split);
        let df = read_csv(&file, &options)?;
        let nparts = df.npartitions();
        let query = || -> Result<BTreeMap<String, f64>, Error> {
            let df = read_csv(&file, &options)?;
            let out = df.groupby(["origin"])?.agg([Agg::mean("dep_delay")])?.compute_on(&scheduler)?;
            let keys = out.column(0).as_string::<i32>();
            let means = out.column(1).as_primitive::<Float64Type>();
            Ok((0..out.num_rows()).map(|i| (keys.value(i).to_string(), means.value(i))).collect())
        };
        reset_peak_rss();
        let (side, answer) = Side::measure(label, protocol.runs, query);
        let answer = answer?;
        if answer.len() != expected.len()
            || answer.iter().zip(&expected).any(|((k, v), (ek, ev))| k != ek || !close(*v, *ev))
        {
            return Err(format!("{label}: means {answer:?}, a plain pass gives {expected:?}").into());
        }
        let peak = peak_rss_bytes().unwrap_or(0) as f64 / 1e6;
        println!("{label} ({nparts} partition(s)): {}, peak RSS {peak:.0} MB", side.summary());
        sides.push(side);
        rss.push(peak);
    }
    let mut fields = format!(
        "name=csv_blocks {} file_mb={:.0} blocksize={blocksize} {} {} kiln_whole_peak_rss_mb={:.0} \
         kiln_blocks_peak_rss_mb={:.0} kiln_whole_over_blocks={:.2}",
        protocol.fields(protocol.threads),
        size as f64 / 1e6,
        sides[0].fields(),
        sides[1].fields(),
        rss[0],
        rss[1],
        sides[0].median() / sides[1].median()
    );
    if !protocol.no_dask {
        let args = vec![file.clone(), blocksize.to_string()];
        let pairs = run_dask("dask_csv_blocks.py", &args, &protocol, protocol.threads)?;
        for origin in ORIGINS {
            let theirs = get(&pairs, &format!("mean_{origin}")).ok_or("dask printed no mean")?;
            if expected.get(origin).is_none_or(|&ours| !close(theirs, ours)) {
                return Err(format!("dask: {origin} mean {theirs}, a plain pass gives {expected:?}").into());
            }
        }
        let whole = Side::from_dask("dask_whole", &pairs, "whole").ok_or("dask printed no whole times")?;
        let blocks = Side::from_dask("dask_blocks", &pairs, "blocks").ok_or("dask printed no block times")?;
        println!("dask_whole: {}", whole.summary());
        println!("dask_blocks: {}", blocks.summary());
        fields.push_str(&format!(
            " {} {} dask_whole_peak_rss_mb={:.0} dask_blocks_peak_rss_mb={:.0} dask_blocks_npartitions={:.0} \
             dask_whole_over_blocks={:.2} dask_over_kiln_blocks={:.2} dask_over_kiln_whole={:.2}",
            whole.fields(),
            blocks.fields(),
            get(&pairs, "whole_peak_rss_mb").unwrap_or(f64::NAN),
            get(&pairs, "blocks_peak_rss_mb").unwrap_or(f64::NAN),
            get(&pairs, "blocks_npartitions").unwrap_or(f64::NAN),
            whole.median() / blocks.median(),
            blocks.median() / sides[1].median(),
            whole.median() / sides[0].median(),
        ));
    }
    println!("RESULT {fields}");
    Ok(())
}
