//! Shared helpers for the benchmarks: peak memory, the Dask side (a Python virtual environment
//! with Dask, created on first use) and the `RESULT` line.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Peak resident set size of this process so far, in bytes (Linux `VmHWM`).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Resets the peak RSS counter (Linux `clear_refs` 5), so phases can be measured separately.
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The directory of this crate (`bench/`).
pub fn bench_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Python interpreter of the benchmark virtual environment, creating it (with Dask) when
/// missing by running `bench/setup-venv.sh`.
///
/// # Errors
/// A message when the environment cannot be created.
pub fn dask_python() -> Result<PathBuf, String> {
    let dir = bench_dir();
    let python = dir.join(".venv/bin/python");
    if !python.exists() {
        eprintln!("creating the Dask virtual environment (bench/.venv) ...");
        let status = Command::new("bash")
            .arg(dir.join("setup-venv.sh"))
            .status()
            .map_err(|e| format!("running setup-venv.sh: {e}"))?;
        if !status.success() {
            return Err(format!("setup-venv.sh failed: {status}"));
        }
    }
    Ok(python)
}

/// Runs a Python benchmark script from `bench/` with the Dask environment and returns the
/// `name=value` pairs of its `RESULT` line.
///
/// # Errors
/// A message when the script fails or prints no `RESULT` line.
pub fn run_dask(script: &str, args: &[String]) -> Result<Vec<(String, String)>, String> {
    let python = dask_python()?;
    let output = Command::new(&python)
        .arg(bench_dir().join(script))
        .args(args)
        .output()
        .map_err(|e| format!("running {}: {e}", python.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    print!("{}", stdout.lines().map(|l| format!("  dask| {l}\n")).collect::<String>());
    if !output.status.success() {
        return Err(format!("{script} failed: {}", String::from_utf8_lossy(&output.stderr)));
    }
    parse_result(&stdout).ok_or_else(|| format!("{script} printed no RESULT line"))
}

/// The `name=value` pairs of the last `RESULT` line in `text`.
pub fn parse_result(text: &str) -> Option<Vec<(String, String)>> {
    let line = text.lines().rev().find(|l| l.starts_with("RESULT "))?;
    Some(
        line.split_whitespace()
            .skip(1)
            .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
            .collect(),
    )
}

/// Looks a numeric value up in `RESULT` pairs.
pub fn get(pairs: &[(String, String)], name: &str) -> Option<f64> {
    pairs.iter().find(|(k, _)| k == name).and_then(|(_, v)| v.parse().ok())
}

/// Whether a file exists under `bench/`.
pub fn has_script(name: &str) -> bool {
    Path::new(&bench_dir()).join(name).exists()
}

/// The value after `name` on the command line, parsed, or `default`.
pub fn arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The median (the mean of the middle two for an even count); NaN when empty.
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[m],
        _ => (v[m - 1] + v[m]) / 2.0,
    }
}

/// Peak RSS of another process (Linux `VmHWM`) in bytes; 0 when unknown.
pub fn peak_rss_of(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()))
        .map_or(0, |kib| kib * 1024)
}

/// The foundation benchmark's graph: `n` tasks `inc(i)` feeding a `fan_in`-ary tree of `add`
/// tasks (each adds one to the sum of its inputs), with Dask-style keys `("inc", i)` and
/// `("sum", level, j)`. Returns the graph and its root.
pub fn foundation_graph(
    n: usize,
    fan_in: usize,
    inc: &std::sync::Arc<dyn kiln_graph::Kernel>,
    add: &std::sync::Arc<dyn kiln_graph::Kernel>,
) -> (kiln_graph::Graph, kiln_graph::TaskId) {
    use kiln_graph::{Arg, GraphBuilder, Key, TaskId};
    let mut g = GraphBuilder::with_capacity(n + n / (fan_in - 1) + 1);
    let inc_name: std::sync::Arc<str> = "inc".into();
    let sum_name: std::sync::Arc<str> = "sum".into();
    let mut level: Vec<TaskId> = (0..n)
        .map(|i| g.add(Key::from_shared(&inc_name, &[i as u32]), inc.clone(), [Arg::literal(i as i64)]).unwrap())
        .collect();
    let mut depth = 0u32;
    while level.len() > 1 {
        level = level
            .chunks(fan_in)
            .enumerate()
            .map(|(j, group)| {
                let key = Key::from_shared(&sum_name, &[depth, j as u32]);
                g.add(key, add.clone(), group.iter().map(|&t| Arg::Task(t))).unwrap()
            })
            .collect();
        depth += 1;
    }
    (g.build().unwrap(), level[0])
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_the_last_result_line() {
        let text = "noise\nRESULT a=1 b=2.5\nmore\nRESULT a=3 c=x\n";
        let pairs = super::parse_result(text).unwrap();
        assert_eq!(super::get(&pairs, "a"), Some(3.0));
        assert_eq!(super::get(&pairs, "b"), None);
    }
}
