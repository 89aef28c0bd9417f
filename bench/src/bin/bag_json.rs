//! The seeds' bag pipelines on GitHub-event-like JSON lines, side by side with dask.bag and a
//! hand-written single-pass Rust program (serde_json + rayon over the files, the practical
//! limit):
//!
//! - `bag_json generate --mb 2000 --dir /work/data/bag` writes the data set: 16 gzip and 16
//!   plain files of deterministic events (SplitMix64 from `--seed`), about `--mb` MB of JSON.
//! - `bag_json run --dir /work/data/bag` times `read_text(..).map(json.loads).filter(name ==
//!   'Alice').count()` and `.pluck('type').frequencies().topk(10)` in kiln (schemaless
//!   `serde_json::Value` records, as the seeds; the same records parsed by the library with
//!   `read_json_lines::<Value>`; and a typed `read_json_lines::<Event>`), the baseline, and
//!   dask.bag with its default multiprocessing scheduler (`bench/dask_bag_json.py`, `--python`
//!   the Dask venv's interpreter); checks that all agree and ends with a `RESULT` line.
//!   `--runs N` takes the median of N runs for `read_json`, the typed reader and the baseline.
//! - `bag_json profile --dir D --what read_json|baseline --runs N` runs only one side's two
//!   pipelines, for a profiler.

// kiln and the baseline allocate with mimalloc (unless built with `--features
// system-allocator`): the schemaless pipeline allocates and frees millions of small JSON nodes,
// where glibc malloc spends a third of the time consolidating its free lists. Choosing the
// allocator is the program's business, not the library's.
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use kiln_bag::{Json, read_json, read_json_lines, read_text};
use kiln_graph::Collection;
use kiln_local::{LocalScheduler, Progress};
use rayon::prelude::*;
use serde_json::{Value, json};

struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

const NAMES: &[&str] = &["Alice", "Bob", "Carol", "Dan", "Erin", "Frank", "Grace", "Heidi", "Ivan", "Judy"];
const TYPES: &[&str] = &[
    "PushEvent",
    "PushEvent",
    "PushEvent",
    "WatchEvent",
    "WatchEvent",
    "CreateEvent",
    "PullRequestEvent",
    "IssuesEvent",
    "IssueCommentEvent",
    "ForkEvent",
    "DeleteEvent",
    "ReleaseEvent",
    "GollumEvent",
    "MemberEvent",
];

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn generate(dir: &Path, mb: u64, seed: u64) {
    std::fs::create_dir_all(dir).unwrap();
    let per_file = mb * 1_000_000 / 32;
    let mut rng = SplitMix(seed);
    let mut id = 0u64;
    for f in 0..32 {
        let mut text = String::with_capacity(per_file as usize + 1024);
        while (text.len() as u64) < per_file {
            id += 1;
            let event = json!({
                "id": id.to_string(),
                "type": rng.pick(TYPES),
                "name": rng.pick(NAMES),
                "actor": {"id": rng.next() % 100_000, "login": format!("user{}", rng.next() % 5000)},
                "repo": {"id": rng.next() % 1_000_000, "name": format!("org{}/repo{}", rng.next() % 200, rng.next() % 500)},
                "payload": {"size": rng.next() % 10, "public": rng.next().is_multiple_of(2), "ref": "refs/heads/main"},
                "created_at": format!("2015-01-{:02}T{:02}:{:02}:00Z", 1 + rng.next() % 28, rng.next() % 24, rng.next() % 60),
            });
            text.push_str(&event.to_string());
            text.push('\n');
        }
        if f % 2 == 1 {
            let file = std::fs::File::create(dir.join(format!("events-{f:02}.json.gz"))).unwrap();
            let mut encoder = flate2::write::GzEncoder::new(file, flate2::Compression::default());
            encoder.write_all(text.as_bytes()).unwrap();
            encoder.finish().unwrap();
        } else {
            std::fs::write(dir.join(format!("events-{f:02}.json")), text).unwrap();
        }
    }
    println!("wrote {id} events, about {mb} MB of JSON, to {}", dir.display());
}

/// The fields the pipelines read, borrowed from the line where possible.
#[derive(serde::Deserialize)]
struct Borrowed<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    name: std::borrow::Cow<'a, str>,
}

#[derive(serde::Deserialize, Clone)]
struct Event {
    #[serde(rename = "type")]
    kind: String,
    name: String,
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("events-"))
        .collect();
    files.sort();
    files
}

/// Calls `f` with every line of a file (gzip by extension): the baseline's reader.
fn for_lines(path: &Path, mut f: impl FnMut(&[u8])) {
    let file = std::fs::File::open(path).unwrap();
    let reader: Box<dyn Read> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::MultiGzDecoder::new(BufReader::with_capacity(1 << 16, file)))
    } else {
        Box::new(file)
    };
    let mut reader = BufReader::with_capacity(1 << 16, reader);
    let mut line = Vec::new();
    while reader.read_until(b'\n', &mut line).unwrap() > 0 {
        f(&line);
        line.clear();
    }
}

fn baseline_count(files: &[PathBuf]) -> u64 {
    files
        .par_iter()
        .map(|path| {
            let mut n = 0u64;
            for_lines(path, |line| {
                let e: Borrowed = serde_json::from_slice(line).unwrap();
                n += u64::from(e.name == "Alice");
            });
            n
        })
        .sum()
}

fn baseline_top(files: &[PathBuf]) -> Vec<(String, u64)> {
    let maps: Vec<Vec<(String, u64)>> = files
        .par_iter()
        .map(|path| {
            let mut counts: Vec<(String, u64)> = Vec::new();
            for_lines(path, |line| {
                let e: Borrowed = serde_json::from_slice(line).unwrap();
                match counts.iter_mut().find(|(k, _)| *k == e.kind) {
                    Some((_, n)) => *n += 1,
                    None => counts.push((e.kind.into_owned(), 1)),
                }
            });
            counts
        })
        .collect();
    let mut total: Vec<(String, u64)> = Vec::new();
    for (k, n) in maps.into_iter().flatten() {
        match total.iter_mut().find(|(t, _)| *t == k) {
            Some((_, m)) => *m += n,
            None => total.push((k, n)),
        }
    }
    total.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    total.truncate(10);
    total
}

fn timed<R>(f: impl FnOnce() -> R) -> (R, f64) {
    let start = Instant::now();
    let r = f();
    (r, start.elapsed().as_secs_f64())
}

/// The last result of `runs` runs of `f` and the median time (the machine is shared: one run
/// can land on another builder's burst).
fn median_of<R>(runs: usize, mut f: impl FnMut() -> R) -> (R, f64) {
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..runs.max(1) {
        let (r, t) = timed(&mut f);
        times.push(t);
        last = Some(r);
    }
    times.sort_by(f64::total_cmp);
    (last.expect("at least one run"), times[times.len() / 2])
}

fn load() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(-1.0)
}

/// `bag_json profile --dir D [--what read_json|baseline] [--runs N]`: only one side's two
/// pipelines, repeated, so a profiler sees that side alone.
fn profile(dir: &Path, args: &[String]) {
    let files = files(dir);
    let pattern = dir.join("events-*").to_string_lossy().into_owned();
    let runs: usize = arg(args, "--runs").map_or(1, |s| s.parse().unwrap());
    let what = arg(args, "--what").unwrap_or_else(|| "read_json".into());
    rayon::ThreadPoolBuilder::new().num_threads(2).build_global().unwrap();
    let s = LocalScheduler::threads(2).with_progress(Progress::Never);
    for _ in 0..runs {
        let (count, t_count, t_top) = match what.as_str() {
            "read_json" => {
                let records = read_json(&pattern).unwrap();
                let (alice, t_count) =
                    timed(|| records.filter(|r| r["name"] == "Alice").count().compute_on(&s).unwrap());
                let (_, t_top) =
                    timed(|| records.pluck("type").frequencies().topk(10, |(_, n)| *n).compute_on(&s).unwrap());
                (alice, t_count, t_top)
            }
            "baseline" => {
                let (alice, t_count) = timed(|| baseline_count(&files));
                let (_, t_top) = timed(|| baseline_top(&files));
                (alice, t_count, t_top)
            }
            other => panic!("--what {other}: read_json or baseline"),
        };
        println!(
            "RESULT name=bag_json_profile what={what} count={count} count_s={t_count:.3} topk_s={t_top:.3} load={}",
            load()
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = PathBuf::from(arg(&args, "--dir").unwrap_or_else(|| "/work/data/bag".into()));
    match args.get(1).map(String::as_str) {
        Some("generate") => {
            let mb = arg(&args, "--mb").map_or(2000, |s| s.parse().unwrap());
            let seed = arg(&args, "--seed").map_or(2015, |s| s.parse().unwrap());
            generate(&dir, mb, seed);
            return;
        }
        Some("run") => {}
        Some("profile") => {
            profile(&dir, &args);
            return;
        }
        _ => {
            eprintln!(
                "usage: bag_json generate [--mb 2000] [--dir D] [--seed S] | run [--dir D] [--python P] [--no-dask] [--chunk N] [--runs N] | profile [--dir D] [--what read_json|baseline] [--runs N]"
            );
            std::process::exit(2);
        }
    }
    let files = files(&dir);
    let bytes: u64 = files.iter().map(|p| std::fs::metadata(p).unwrap().len()).sum();
    let pattern = dir.join("events-*").to_string_lossy().into_owned();
    let load_start = load();
    println!("{} files, {:.0} MB on disk, load {load_start}", files.len(), bytes as f64 / 1e6);

    let s = LocalScheduler::threads(2).with_progress(Progress::Never);
    kiln_bench::reset_peak_rss();
    // `--runs N`: the fast pipelines (`read_json`, typed, baseline) report the median of N runs.
    let runs: usize = arg(&args, "--runs").map_or(1, |s| s.parse().unwrap());
    // `--chunk N`: lines a file task reads at a time (kiln's default otherwise).
    let chunk = arg(&args, "--chunk").map_or(kiln_bag::DEFAULT_CHUNK_SIZE, |s| s.parse().unwrap());
    let records = read_text(&pattern).unwrap().chunk_size(chunk).try_map(|line| serde_json::from_str::<Value>(line));
    let (alice, t_count) = timed(|| records.filter(|r| r["name"] == "Alice").count().compute_on(&s).unwrap());
    let (top, t_top) = timed(|| records.pluck("type").frequencies().topk(10, |(_, n)| *n).compute_on(&s).unwrap());
    let kiln_rss = kiln_bench::peak_rss_bytes().unwrap_or(0);
    println!(
        "kiln (Value records): count {alice} in {t_count:.2} s, topk in {t_top:.2} s, peak RSS {} MB",
        kiln_rss >> 20
    );

    // The same schemaless records parsed by the library from its line buffer (no `String` per
    // line), as `read_json_lines::<Value>`.
    kiln_bench::reset_peak_rss();
    let values = read_json_lines::<Value>(&pattern).unwrap().chunk_size(chunk);
    let (alice_values, t_count_values) =
        timed(|| values.filter(|r| r["name"] == "Alice").count().compute_on(&s).unwrap());
    let (top_values, t_top_values) =
        timed(|| values.pluck("type").frequencies().topk(10, |(_, n)| *n).compute_on(&s).unwrap());
    let values_rss = kiln_bench::peak_rss_bytes().unwrap_or(0);
    println!(
        "kiln (read_json_lines::<Value>): count in {t_count_values:.2} s, topk in {t_top_values:.2} s, peak RSS {} MB",
        values_rss >> 20
    );
    assert_eq!((alice_values, &top_values), (alice, &top));

    // Schemaless `Json` records (validated text, fields found on demand): first as the seeds
    // write it, text lines mapped through the parser, then read by the library (`read_json`).
    kiln_bench::reset_peak_rss();
    let lazy = read_text(&pattern).unwrap().chunk_size(chunk).try_map(|line| Json::parse(line));
    let (alice_lazy, t_count_lazy) = timed(|| lazy.filter(|r| r["name"] == "Alice").count().compute_on(&s).unwrap());
    let (top_lazy, t_top_lazy) =
        timed(|| lazy.pluck("type").frequencies().topk(10, |(_, n)| *n).compute_on(&s).unwrap());
    let lazy_rss = kiln_bench::peak_rss_bytes().unwrap_or(0);
    println!(
        "kiln (read_text + Json::parse): count in {t_count_lazy:.2} s, topk in {t_top_lazy:.2} s, peak RSS {} MB",
        lazy_rss >> 20
    );
    kiln_bench::reset_peak_rss();
    let records_json = read_json(&pattern).unwrap().chunk_size(chunk);
    let (alice_rj, t_count_rj) =
        median_of(runs, || records_json.filter(|r| r["name"] == "Alice").count().compute_on(&s).unwrap());
    let (top_rj, t_top_rj) =
        median_of(runs, || records_json.pluck("type").frequencies().topk(10, |(_, n)| *n).compute_on(&s).unwrap());
    let rj_rss = kiln_bench::peak_rss_bytes().unwrap_or(0);
    println!("kiln (read_json): count in {t_count_rj:.2} s, topk in {t_top_rj:.2} s, peak RSS {} MB", rj_rss >> 20);
    let as_strings = |top: &[(Json, u64)]| -> Vec<(String, u64)> {
        top.iter().map(|(k, n)| (k.as_str().unwrap().into_owned(), *n)).collect()
    };
    let top_lazy = as_strings(&top_lazy);
    assert_eq!((alice_lazy, alice_rj), (alice, alice));
    assert_eq!(as_strings(&top_rj), top_lazy);

    kiln_bench::reset_peak_rss();
    let typed = read_json_lines::<Event>(&pattern).unwrap().chunk_size(chunk);
    let (alice_typed, t_count_typed) =
        median_of(runs, || typed.filter(|e| e.name == "Alice").count().compute_on(&s).unwrap());
    let (top_typed, t_top_typed) = median_of(runs, || {
        typed
            .foldby(|e| e.kind.clone(), |n, _| n + 1, 0u64, |a, b| a + b, 0)
            .topk(10, |(_, n)| *n)
            .compute_on(&s)
            .unwrap()
    });
    let typed_rss = kiln_bench::peak_rss_bytes().unwrap_or(0);
    println!(
        "kiln (typed read_json_lines): count in {t_count_typed:.2} s, topk in {t_top_typed:.2} s, peak RSS {} MB",
        typed_rss >> 20
    );

    rayon::ThreadPoolBuilder::new().num_threads(2).build_global().unwrap();
    let (alice_base, t_count_base) = median_of(runs, || baseline_count(&files));
    let (top_base, t_top_base) = median_of(runs, || baseline_top(&files));
    println!("baseline (serde_json + rayon): count in {t_count_base:.2} s, topk in {t_top_base:.2} s");
    assert_eq!((alice, alice_typed), (alice_base, alice_base));
    let top_strings: Vec<(String, u64)> = top.iter().map(|(k, n)| (k.as_str().unwrap().to_string(), *n)).collect();
    assert_eq!(top_strings, top_base);
    assert_eq!(top_typed, top_base);
    assert_eq!(top_lazy, top_base);

    let mut dask = String::new();
    if !args.iter().any(|a| a == "--no-dask") {
        let python = arg(&args, "--python").unwrap_or_else(|| "/work/main/bench/.venv/bin/python".into());
        let script = kiln_bench::bench_dir().join("dask_bag_json.py");
        let out = Command::new(python).arg(script).arg(&pattern).output().expect("run the Dask script");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        print!("{text}{}", String::from_utf8_lossy(&out.stderr));
        let line = text.lines().find(|l| l.starts_with("DASK ")).expect("the Dask script's DASK line");
        let field = |name: &str| -> f64 {
            line.split_whitespace().find_map(|w| w.strip_prefix(&format!("{name}="))?.parse().ok()).unwrap()
        };
        assert_eq!(field("count") as u64, alice, "Dask counts the same");
        let (d_count, d_top, d_rss) = (field("count_s"), field("topk_s"), field("peak_rss_mb"));
        dask = format!(
            " dask_count_s={d_count:.2} dask_topk_s={d_top:.2} dask_peak_rss_mb={d_rss:.0} speedup_count={:.1} speedup_topk={:.1} \
             speedup_count_lazy={:.1} speedup_topk_lazy={:.1} speedup_count_read_json={:.1} speedup_topk_read_json={:.1} speedup_count_typed={:.1} speedup_topk_typed={:.1}",
            d_count / t_count,
            d_top / t_top,
            d_count / t_count_lazy,
            d_top / t_top_lazy,
            d_count / t_count_rj,
            d_top / t_top_rj,
            d_count / t_count_typed,
            d_top / t_top_typed
        );
    }
    println!(
        "RESULT name=bag_json allocator={} mb={:.0} chunk={chunk} runs={runs} count_s={t_count:.2} topk_s={t_top:.2} typed_count_s={t_count_typed:.2} typed_topk_s={t_top_typed:.2} \
         base_count_s={t_count_base:.2} base_topk_s={t_top_base:.2} vs_base_count={:.2} vs_base_topk={:.2} vs_base_typed_count={:.2} vs_base_typed_topk={:.2} \
         json_count_s={t_count_values:.2} json_topk_s={t_top_values:.2} lazy_count_s={t_count_lazy:.2} lazy_topk_s={t_top_lazy:.2} \
         read_json_count_s={t_count_rj:.2} read_json_topk_s={t_top_rj:.2} vs_base_lazy_count={:.2} vs_base_lazy_topk={:.2} \
         lazy_peak_rss_mb={} read_json_peak_rss_mb={} kiln_peak_rss_mb={} json_peak_rss_mb={} typed_peak_rss_mb={}{dask} load_start={load_start} load_end={}",
        if cfg!(feature = "system-allocator") { "glibc" } else { "mimalloc" },
        bytes as f64 / 1e6,
        t_count / t_count_base,
        t_top / t_top_base,
        t_count_typed / t_count_base,
        t_top_typed / t_top_base,
        t_count_lazy / t_count_base,
        t_top_lazy / t_top_base,
        lazy_rss >> 20,
        rj_rss >> 20,
        kiln_rss >> 20,
        values_rss >> 20,
        typed_rss >> 20,
        load()
    );
}
