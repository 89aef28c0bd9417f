//! Shared helpers for the benchmarks: peak memory, the Dask side (a Python virtual environment
//! with Dask, created on first use), the `RESULT` line, and the measuring protocol every
//! side-by-side benchmark follows, so that kiln and Dask are compared like with like:
//!
//! - the same work on both sides (`--dask-n` is a loudly announced exception that drops the ratio);
//! - one untimed warm-up run, then `--runs N` timed runs, on BOTH sides ([`Protocol`], [`Side`],
//!   and `measure` in `bench/dask_common.py`);
//! - the median of each side reported with the best beside it; ratios are median / median;
//! - the thread count of each side set explicitly and printed (`--threads`; the Dask child gets
//!   `OMP_NUM_THREADS`, `OPENBLAS_NUM_THREADS`, `MKL_NUM_THREADS` and `num_workers` from
//!   [`run_dask`]);
//! - the 1-minute load average at the start and end of each side, in the `RESULT` line, since a
//!   busy machine explains an outlier better than any code change does.

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
/// The script gets `--runs` and `--threads` from `protocol` after `args`, and `threads` BLAS /
/// OpenMP threads through its environment: NumPy's BLAS reads those variables once, at import,
/// so they cannot be set from inside the script. `threads` is the per-process thread count
/// (1 for the single-threaded workers of the distributed benchmarks).
///
/// # Errors
/// A message when the script fails or prints no `RESULT` line.
pub fn run_dask(
    script: &str,
    args: &[String],
    protocol: &Protocol,
    threads: usize,
) -> Result<Vec<(String, String)>, String> {
    let python = dask_python()?;
    let t = threads.to_string();
    let output = Command::new(&python)
        .arg(bench_dir().join(script))
        .args(args)
        .args(["--runs", &protocol.runs.to_string(), "--threads", &t])
        .envs(BLAS_THREAD_VARS.iter().map(|v| (*v, t.as_str())))
        .output()
        .map_err(|e| format!("running {}: {e}", python.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    print!("{}", stdout.lines().map(|l| format!("  dask| {l}\n")).collect::<String>());
    if !output.status.success() {
        return Err(format!("{script} failed: {}", String::from_utf8_lossy(&output.stderr)));
    }
    parse_result(&stdout).ok_or_else(|| format!("{script} printed no RESULT line"))
}

/// The environment variables that fix the BLAS / OpenMP thread count of the Dask side.
pub const BLAS_THREAD_VARS: [&str; 3] = ["OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"];

/// The command-line options every side-by-side benchmark shares.
#[derive(Debug, Clone)]
pub struct Protocol {
    /// Timed runs on each side (after one untimed warm-up run).
    pub runs: usize,
    /// Threads of kiln's local scheduler, and of the Dask side's threaded scheduler and BLAS.
    pub threads: usize,
    /// `--no-dask`: kiln only.
    pub no_dask: bool,
}

impl Protocol {
    /// Reads `--runs` (default `default_runs`), `--threads` (default: the available cores) and
    /// `--no-dask`.
    pub fn from_args(default_runs: usize) -> Self {
        // The flags some benchmarks had before the protocol: still honoured, so that recorded
        // command lines mean what they meant, but named as what they are now.
        let mut runs = default_runs;
        for old in ["--repeat", "--reps"] {
            if std::env::args().any(|a| a == old) {
                runs = arg(old, default_runs);
                println!("note: {old} is now --runs (timed runs after one untimed warm-up, on both sides)");
            }
        }
        Protocol {
            runs: arg("--runs", runs).max(1),
            threads: arg("--threads", available_threads()).max(1),
            no_dask: std::env::args().any(|a| a == "--no-dask"),
        }
    }

    /// The Dask side's problem size: `n` unless `--dask-n` overrides it, in which case a loud
    /// note is printed and the caller must not compute a ratio (see [`ratio`]).
    pub fn dask_n(&self, n: usize) -> usize {
        let dask_n = arg("--dask-n", n);
        if dask_n != n {
            println!(
                "NOTE: --dask-n {dask_n} differs from --n {n}: the two sides do DIFFERENT work; no ratio is computed"
            );
        }
        dask_n
    }

    /// `runs=… threads=…` for the `RESULT` line: `threads` is the thread count each process
    /// of the benchmark computes with (1 for the single-threaded workers of a cluster).
    pub fn fields(&self, threads: usize) -> String {
        format!("runs={} threads={threads}", self.runs)
    }
}

/// The cores this process may use (2 when unknown).
pub fn available_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |p| p.get())
}

/// The 1-minute load average (`/proc/loadavg`); NaN when unreadable.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(f64::NAN)
}

/// The timed runs of one side of a benchmark, with the load average around them.
#[derive(Debug, Clone)]
pub struct Side {
    /// Prefix of this side's `RESULT` fields (`kiln`, `dask`, `gemm`, ...).
    pub label: String,
    /// Seconds of each timed run.
    pub times: Vec<f64>,
    /// The 1-minute load average when the side started and ended.
    pub load_start: f64,
    pub load_end: f64,
}

impl Side {
    /// Starts a side: reads the load average.
    pub fn begin(label: &str) -> Self {
        Side { label: label.to_string(), times: Vec::new(), load_start: load_average(), load_end: f64::NAN }
    }

    /// Records one timed run.
    pub fn push(&mut self, secs: f64) {
        self.times.push(secs);
    }

    /// Ends a side: reads the load average.
    pub fn end(&mut self) {
        self.load_end = load_average();
    }

    /// Runs `work` once untimed (the warm-up), then `runs` times timed; returns the side and
    /// the value of the last run.
    pub fn measure<R>(label: &str, runs: usize, mut work: impl FnMut() -> R) -> (Self, R) {
        let mut side = Side::begin(label);
        let mut last = work();
        for _ in 0..runs {
            let t = std::time::Instant::now();
            last = std::hint::black_box(work());
            side.push(t.elapsed().as_secs_f64());
        }
        side.end();
        (side, last)
    }

    /// The side the Dask script reported through `dask_common.result_line`, under `label`.
    pub fn from_dask(label: &str, pairs: &[(String, String)], prefix: &str) -> Option<Self> {
        let key = |k: &str| if prefix.is_empty() { k.to_string() } else { format!("{prefix}_{k}") };
        let times = pairs
            .iter()
            .find(|(k, _)| *k == key("times_s"))?
            .1
            .split(',')
            .map(|v| v.parse::<f64>().ok())
            .collect::<Option<Vec<_>>>()?;
        Some(Side {
            label: label.to_string(),
            times,
            load_start: get(pairs, "load_start").unwrap_or(f64::NAN),
            load_end: get(pairs, "load_end").unwrap_or(f64::NAN),
        })
    }

    /// The median run.
    pub fn median(&self) -> f64 {
        median(&self.times)
    }

    /// The fastest run.
    pub fn best(&self) -> f64 {
        self.times.iter().copied().fold(f64::NAN, f64::min)
    }

    /// `median 1.234 s (best 1.200 s, 3 runs, load 0.10 -> 1.90)`, for the printed summary.
    pub fn summary(&self) -> String {
        format!(
            "median {:.4} s (best {:.4} s, {} runs, load {:.2} -> {:.2})",
            self.median(),
            self.best(),
            self.times.len(),
            self.load_start,
            self.load_end
        )
    }

    /// `<label>_median_s=… <label>_best_s=… <label>_load_start=… <label>_load_end=…`.
    pub fn fields(&self) -> String {
        let l = &self.label;
        format!(
            "{l}_median_s={:.6} {l}_best_s={:.6} {l}_load_start={:.2} {l}_load_end={:.2}",
            self.median(),
            self.best(),
            self.load_start,
            self.load_end
        )
    }
}

/// `slow / fast` of the medians (how many times faster `fast` is), or NaN when the two sides
/// did different work (`same_work` false): a ratio of different work means nothing.
pub fn ratio(slow: &Side, fast: &Side, same_work: bool) -> f64 {
    if same_work { slow.median() / fast.median() } else { f64::NAN }
}

/// The one place the bench binaries compute a kiln array, so every binary times the same call.
///
/// # Errors
/// The construction error or the first failing task.
pub fn compute_array<T: kiln_array::Element>(
    array: &kiln_array::Array<T>,
    sched: &dyn kiln_graph::Scheduler,
) -> Result<ndarray::ArrayD<T>, kiln_graph::ComputeError> {
    use kiln_graph::Collection;
    array.compute_on(sched)
}

/// The one place the bench binaries compute a one-element kiln array to its value (see
/// [`compute_array`]).
///
/// # Errors
/// The construction error or the first failing task.
pub fn compute_scalar<T: kiln_array::Element>(
    array: &kiln_array::Array<T>,
    sched: &dyn kiln_graph::Scheduler,
) -> Result<T, kiln_graph::ComputeError> {
    use kiln_graph::Collection;
    array.scalar().compute_on(sched)
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

/// A text value in `RESULT` pairs, or `?` when missing.
pub fn text<'a>(pairs: &'a [(String, String)], name: &str) -> &'a str {
    pairs.iter().find(|(k, _)| k == name).map_or("?", |(_, v)| v.as_str())
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

/// The foundation graph's kernels for clusters, `(inc, add)`: portable as `bench.inc` and
/// `bench.add`, so a benchmark that registers them before `run_worker_if_requested` can run the
/// graph on its own worker processes.
pub fn portable_foundation_kernels() -> (std::sync::Arc<dyn kiln_graph::Kernel>, std::sync::Arc<dyn kiln_graph::Kernel>)
{
    use kiln_graph::Value;
    use kiln_graph::kernel::{func1, input, slice_kernel};
    let inc = func1("inc", |x: &i64| x + 1).portable("bench.inc");
    let add = slice_kernel("add", |xs: &[Value]| {
        let mut total = 1i64;
        for i in 0..xs.len() {
            total += input::<i64>(xs, i)?;
        }
        Ok(Value::new(total))
    })
    .portable("bench.add");
    (std::sync::Arc::new(inc), std::sync::Arc::new(add))
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

/// A dataframe answer as rows of JSON values (numbers as numbers, nulls and the rest as text),
/// for the Python drivers that compare engines' answers (`bench/tpch.py`, `bench/nycflights.py`).
///
/// # Errors
/// A column arrow cannot format.
pub fn json_rows(
    batch: &kiln_dataframe::arrow::array::RecordBatch,
) -> Result<serde_json::Value, kiln_dataframe::arrow::error::ArrowError> {
    use kiln_dataframe::arrow::array::Array;
    use kiln_dataframe::arrow::util::display::{ArrayFormatter, FormatOptions};
    let options = FormatOptions::default();
    let formatters =
        batch.columns().iter().map(|c| ArrayFormatter::try_new(c.as_ref(), &options)).collect::<Result<Vec<_>, _>>()?;
    let mut out = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        let mut values = Vec::with_capacity(batch.num_columns());
        for (column, formatter) in batch.columns().iter().zip(&formatters) {
            let text = formatter.value(row).to_string();
            let numeric = column.data_type().is_numeric() && !column.is_null(row);
            values.push(match text.parse::<f64>() {
                Ok(v) if numeric => serde_json::json!(v),
                _ => serde_json::json!(text),
            });
        }
        out.push(serde_json::Value::Array(values));
    }
    Ok(serde_json::Value::Array(out))
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

    #[test]
    fn a_dask_side_reads_back_with_median_and_best() {
        let text = "RESULT times_s=3.0,1.0,2.0 load_start=0.50 load_end=1.25 dask=2026.8.0\n";
        let pairs = super::parse_result(text).unwrap();
        let side = super::Side::from_dask("dask", &pairs, "").unwrap();
        assert_eq!(side.median(), 2.0);
        assert_eq!(side.best(), 1.0);
        assert_eq!(side.load_end, 1.25);
        assert!(side.fields().contains("dask_median_s=2.000000 dask_best_s=1.000000"));
    }

    #[test]
    fn measure_warms_up_once_then_times_each_run() {
        let mut calls = 0;
        let (side, last) = super::Side::measure("kiln", 3, || {
            calls += 1;
            calls
        });
        assert_eq!(calls, 4, "one warm-up and three timed runs");
        assert_eq!(last, 4);
        assert_eq!(side.times.len(), 3);
    }

    #[test]
    fn a_smoke_run_result_line_has_the_protocol_fields() {
        // `array_dot --n 800 --chunk 200 --runs 2`, as printed.
        let text = "RESULT n=800 chunk=200 runs=2 threads=2 kiln_threads=2 gemm_threads=2 kiln_median_s=0.021506 kiln_best_s=0.007919 kiln_load_start=3.25 kiln_load_end=3.25 kiln_gflops=47.6 gemm_median_s=0.026018 gemm_best_s=0.025488 gemm_load_start=3.25 gemm_load_end=3.25 gemm_gflops=39.4 fraction_of_gemm=1.210 dask_threads=2 dask_median_s=0.034055 dask_best_s=0.031060 dask_load_start=3.25 dask_load_end=3.25 dask_gflops=30.1 speedup=1.58 dask=2026.8.0";
        let pairs = super::parse_result(text).unwrap();
        for name in [
            "runs",
            "threads",
            "kiln_threads",
            "dask_threads",
            "kiln_median_s",
            "kiln_best_s",
            "dask_median_s",
            "dask_best_s",
            "gemm_median_s",
            "kiln_load_start",
            "kiln_load_end",
            "dask_load_start",
            "dask_load_end",
            "speedup",
        ] {
            assert!(super::get(&pairs, name).is_some(), "{name} is missing");
        }
        assert_eq!(super::text(&pairs, "dask"), "2026.8.0");
    }

    #[test]
    fn no_ratio_between_different_work() {
        let a = super::Side { label: "a".into(), times: vec![2.0], load_start: 0.0, load_end: 0.0 };
        let b = super::Side { label: "b".into(), times: vec![1.0], load_start: 0.0, load_end: 0.0 };
        assert_eq!(super::ratio(&a, &b, true), 2.0);
        assert!(super::ratio(&a, &b, false).is_nan());
    }
}
