//! `foldby` against `groupby` on 10 M records (Dask's advice: foldby groups and reduces
//! without a shuffle, groupby moves every record), side by side with dask.bag's own foldby
//! and groupby on the same records (`bench/dask_bag_groupby.py`, its default multiprocessing
//! scheduler and, without a distributed client, its on-disk shuffle).
//!
//! `bag_groupby [--n 10000000] [--partitions 20] [--runs 3] [--python P] [--no-dask]`:
//! records `(key, amount)` = `((i * 7919) % 1000, i % 100)` for `i` in `0..n`, made by the
//! partitions' tasks; both pipelines give each key's total amount, checked against the closed
//! form and against each other (and Dask's checksum). Ends with a `RESULT` line.

#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Instant;

use kiln_bag::Bag;
use kiln_graph::Collection;
use kiln_local::{LocalScheduler, Progress};

const KEYS: u64 = 1000;

fn record(i: &u64) -> (u64, u64) {
    ((i * 7919) % KEYS, i % 100)
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

/// The same sum as the Python script: order-free, sensitive to every pair.
fn checksum(totals: &BTreeMap<u64, u64>) -> u64 {
    totals.iter().map(|(k, t)| k * 1_000_003 + t).sum()
}

fn median(mut times: Vec<f64>) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: u64 = arg(&args, "--n").map_or(10_000_000, |v| v.parse().expect("--n is a number"));
    let partitions: usize = arg(&args, "--partitions").map_or(20, |v| v.parse().expect("--partitions is a number"));
    let runs: usize = arg(&args, "--runs").map_or(3, |v| v.parse().expect("--runs is a number"));
    let load_start = kiln_bench::load_average();

    // The closed form: each key's total, sequentially.
    let mut expected: BTreeMap<u64, u64> = BTreeMap::new();
    for i in 0..n {
        let (k, amount) = record(&i);
        *expected.entry(k).or_default() += amount;
    }

    let scheduler = LocalScheduler::new().with_progress(Progress::Never);
    let records = Bag::range(n, partitions).map(record);
    let foldby = records.foldby(|r| r.0, |total, r| total + r.1, 0u64, |a, b| a + b, 0u64);
    let groupby = records.groupby(|r| r.0).map(|(k, rs)| (*k, rs.iter().map(|r| r.1).sum::<u64>()));

    let time = |label: &str, bag: &Bag<(u64, u64)>| {
        let mut times = Vec::new();
        for run in 0..=runs {
            let start = Instant::now();
            let out = bag.compute_on(&scheduler).unwrap();
            let secs = start.elapsed().as_secs_f64();
            let totals: BTreeMap<u64, u64> = out.iter().copied().collect();
            assert_eq!(out.len(), totals.len(), "{label}: a key twice");
            assert_eq!(totals, expected, "{label}: wrong totals");
            // Run 0 warms up.
            if run > 0 {
                times.push(secs);
            }
        }
        let m = median(times.clone());
        println!("kiln {label}: median {m:.3} s of {runs} ({times:.3?})");
        m
    };
    let foldby_s = time("foldby", &foldby);
    let groupby_s = time("groupby", &groupby);
    let load_end = kiln_bench::load_average();
    println!("kiln: foldby is {:.1}x faster than groupby on {n} records", groupby_s / foldby_s);

    let mut dask = String::new();
    if !args.iter().any(|a| a == "--no-dask") {
        let python = arg(&args, "--python").unwrap_or_else(|| "/work/main/bench/.venv/bin/python".into());
        let script = kiln_bench::bench_dir().join("dask_bag_groupby.py");
        let out = Command::new(python)
            .arg(script)
            .arg(n.to_string())
            .arg(partitions.to_string())
            .output()
            .expect("run the Dask script");
        let text = String::from_utf8_lossy(&out.stdout);
        print!("{text}");
        assert!(out.status.success(), "Dask failed: {}", String::from_utf8_lossy(&out.stderr));
        let line = text.lines().find(|l| l.starts_with("DASK ")).expect("a DASK line");
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("no {name} in {line}"))
                .to_string()
        };
        assert_eq!(field("checksum"), checksum(&expected).to_string(), "Dask's totals differ");
        let (dask_foldby, dask_groupby): (f64, f64) =
            (field("foldby_s").parse().unwrap(), field("groupby_s").parse().unwrap());
        dask = format!(
            " dask_foldby_s={dask_foldby:.3} dask_groupby_s={dask_groupby:.3} foldby_vs_dask={:.1} groupby_vs_dask={:.1}",
            dask_foldby / foldby_s,
            dask_groupby / groupby_s
        );
    }
    println!(
        "RESULT n={n} partitions={partitions} keys={KEYS} foldby_s={foldby_s:.3} groupby_s={groupby_s:.3} \
         foldby_vs_groupby={:.1}{dask} load_start={load_start:.2} load_end={load_end:.2}",
        groupby_s / foldby_s
    );
}
