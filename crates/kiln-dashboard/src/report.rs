//! Performance reports: one self-contained HTML file that shows where a computation's time
//! and memory went (Dask's `performance_report`).
//!
//! A report is built from a [`ReportData`]: the task stream (one record per task: prefix,
//! thread, start and stop, output bytes), memory over time, and facts about the run. Two
//! sources fill it: [`performance_report`] records a local computation through
//! [`kiln_local::set_global_callbacks`] (every local run inside the closure, including the
//! default scheduler's), and the distributed client builds one from the scheduler's task stream
//! and worker memory samples. The charts are SVG drawn here with `plotters` and inlined, the
//! styles are inline, and nothing is loaded from elsewhere, so the file opens offline.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kiln_graph::{Key, TaskError};
use plotters::prelude::*;

/// Most tasks the task-stream chart draws; past it, every n-th task is drawn (the page says
/// so), since a chart of millions of rectangles would make a file no browser opens quickly.
/// The tables count every task.
pub const MAX_DRAWN_TASKS: usize = 20_000;

/// One task as the report shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRecord {
    /// The task's prefix (its key's name without the token).
    pub prefix: String,
    /// Where it ran: a worker thread's label, one row of the task stream each.
    pub lane: String,
    /// Start, seconds since the report began.
    pub start_s: f64,
    /// Stop, seconds since the report began.
    pub stop_s: f64,
    /// Bytes of its result (0 when it failed or the size is unknown).
    pub nbytes: u64,
    /// Whether it failed.
    pub failed: bool,
}

/// Memory of one process over time.
#[derive(Debug, Clone, PartialEq)]
pub struct MemorySeries {
    /// The process (a worker's name, or "this process").
    pub name: String,
    /// (seconds since the report began, bytes).
    pub points: Vec<(f64, u64)>,
}

/// Everything a report shows.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportData {
    /// The page's title.
    pub title: String,
    /// What ran the work, e.g. `"threads(2)"` or the scheduler's address.
    pub scheduler: String,
    /// When the report began, µs since the Unix epoch.
    pub started_us: u64,
    /// How long the report's computation took, in seconds.
    pub wall_s: f64,
    /// Threads that could run tasks (summed over workers).
    pub threads: usize,
    /// The task stream.
    pub tasks: Vec<TaskRecord>,
    /// Memory over time, one series per process.
    pub memory: Vec<MemorySeries>,
    /// Tasks the run recorded but the report could not show one by one (a stream buffer that
    /// overflowed); counted in the summary.
    pub tasks_not_shown: u64,
}

/// Per-prefix totals of a report.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PrefixSummary {
    /// Tasks that ran.
    pub tasks: u64,
    /// Tasks that failed.
    pub failed: u64,
    /// Seconds spent in them, summed over threads.
    pub compute_s: f64,
    /// Bytes of their results.
    pub nbytes: u64,
    /// The longest one, in seconds.
    pub longest_s: f64,
}

/// Why a report could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The file could not be written.
    #[error("cannot write the performance report {path}: {source}")]
    Write {
        /// The report's path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A chart could not be drawn.
    #[error("cannot draw the report's {chart} chart: {message}")]
    Chart {
        /// Which chart.
        chart: &'static str,
        /// The cause.
        message: String,
    },
    /// The cluster's data could not be read.
    #[error("cannot read the cluster's task stream for the report: {0}")]
    Source(String),
}

impl ReportData {
    /// Totals per prefix, in name order.
    pub fn prefixes(&self) -> BTreeMap<String, PrefixSummary> {
        let mut out: BTreeMap<String, PrefixSummary> = BTreeMap::new();
        for t in &self.tasks {
            let p = out.entry(t.prefix.clone()).or_default();
            let d = (t.stop_s - t.start_s).max(0.0);
            p.tasks += 1;
            p.failed += t.failed as u64;
            p.compute_s += d;
            p.nbytes += t.nbytes;
            p.longest_s = p.longest_s.max(d);
        }
        out
    }

    /// The HTML page.
    ///
    /// # Errors
    /// [`ReportError::Chart`] when a chart cannot be drawn.
    pub fn to_html(&self) -> Result<String, ReportError> {
        render(self)
    }

    /// Writes the HTML page to `path`.
    ///
    /// # Errors
    /// [`ReportError::Write`] naming the path, or [`ReportError::Chart`].
    pub fn write(&self, path: &Path) -> Result<(), ReportError> {
        let html = self.to_html()?;
        std::fs::write(path, html).map_err(|source| ReportError::Write { path: path.to_path_buf(), source })
    }
}

/// Runs `computation`, recording every task the local scheduler runs meanwhile (on any
/// thread of this process, with any [`kiln_local::LocalScheduler`] that has no callbacks of its
/// own) and this process's memory every 20 ms, then writes the report to `path` and returns
/// the computation's result. A report already recording is suspended meanwhile and resumes
/// after (the inner report gets the tasks).
///
/// ```no_run
/// use kiln_dashboard::report::performance_report;
/// let total = performance_report("report.html", || 1 + 1).unwrap();
/// ```
///
/// # Errors
/// [`ReportError`] when the file cannot be written; the computation's own errors are in its
/// result.
pub fn performance_report<T>(path: impl AsRef<Path>, computation: impl FnOnce() -> T) -> Result<T, ReportError> {
    let recorder = Arc::new(LocalRecorder::new());
    let previous = kiln_local::set_global_callbacks(Some(recorder.clone()));
    let sampler = MemorySampler::start(recorder.started, Duration::from_millis(20));
    // Restores the previous callbacks even when the computation panics.
    struct Restore(Option<Option<Arc<dyn kiln_local::Callbacks>>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            if let Some(previous) = self.0.take() {
                kiln_local::set_global_callbacks(previous);
            }
        }
    }
    let restore = Restore(Some(previous));
    let value = computation();
    drop(restore);
    let memory = sampler.stop();
    let data = recorder.finish(memory);
    data.write(path.as_ref())?;
    Ok(value)
}

/// Records local tasks: start and stop per thread, result bytes.
struct LocalRecorder {
    started: Instant,
    started_us: u64,
    lanes: Mutex<HashMap<ThreadId, usize>>,
    tasks: Mutex<Vec<TaskRecord>>,
}

thread_local! {
    /// When the task running on this thread started and stopped: a thread runs one task at a
    /// time, and `on_start`, `on_finish` and `on_result` come in that order on its thread.
    static CURRENT: std::cell::Cell<(Option<Instant>, Option<Instant>)> = const { std::cell::Cell::new((None, None)) };
}

impl LocalRecorder {
    fn new() -> Self {
        LocalRecorder {
            started: Instant::now(),
            started_us: unix_us(),
            lanes: Mutex::default(),
            tasks: Mutex::default(),
        }
    }

    fn record(&self, key: &Key, stop: Instant, nbytes: u64, failed: bool) {
        let start = CURRENT.with(|c| c.get().0).unwrap_or(stop);
        let lane = {
            let mut lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
            let n = lanes.len();
            *lanes.entry(std::thread::current().id()).or_insert(n)
        };
        let record = TaskRecord {
            prefix: key.prefix().to_string(),
            lane: format!("thread {lane}"),
            start_s: start.saturating_duration_since(self.started).as_secs_f64(),
            stop_s: stop.saturating_duration_since(self.started).as_secs_f64(),
            nbytes: if nbytes == kiln_local::UNKNOWN_SIZE { 0 } else { nbytes },
            failed,
        };
        self.tasks.lock().unwrap_or_else(|p| p.into_inner()).push(record);
    }

    fn finish(&self, memory: Vec<(f64, u64)>) -> ReportData {
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        let threads = self.lanes.lock().unwrap_or_else(|p| p.into_inner()).len();
        ReportData {
            title: "kiln performance report".into(),
            scheduler: "local threads".into(),
            started_us: self.started_us,
            wall_s: self.started.elapsed().as_secs_f64(),
            threads,
            tasks,
            memory: vec![MemorySeries { name: "this process (resident)".into(), points: memory }],
            tasks_not_shown: 0,
        }
    }
}

impl kiln_local::Callbacks for LocalRecorder {
    fn on_start(&self, _key: &Key) {
        CURRENT.with(|c| c.set((Some(Instant::now()), None)));
    }
    fn on_finish(&self, key: &Key, error: Option<&TaskError>) {
        let now = Instant::now();
        if error.is_some() {
            self.record(key, now, 0, true);
        } else {
            CURRENT.with(|c| c.set((c.get().0, Some(now))));
        }
    }
    fn on_result(&self, key: &Key, nbytes: u64) {
        let stop = CURRENT.with(|c| c.get().1).unwrap_or_else(Instant::now);
        self.record(key, stop, nbytes, false);
    }
}

/// Samples this process's resident memory on a thread until stopped.
struct MemorySampler {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<(f64, u64)>>>,
}

impl MemorySampler {
    fn start(since: Instant, every: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("kiln-report-memory".into())
            .spawn(move || {
                let mut points = Vec::new();
                loop {
                    if let Some(rss) = resident_bytes() {
                        points.push((since.elapsed().as_secs_f64(), rss));
                    }
                    if flag.load(Ordering::Relaxed) {
                        return points;
                    }
                    std::thread::park_timeout(every);
                }
            })
            .ok();
        MemorySampler { stop, thread }
    }

    fn stop(mut self) -> Vec<(f64, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take() {
            Some(t) => {
                t.thread().unpark();
                t.join().unwrap_or_default()
            }
            None => Vec::new(),
        }
    }
}

/// This process's resident set size (Linux `/proc/self/status`); `None` elsewhere.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn unix_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// What in `html` would make a browser fetch something from elsewhere (an absolute URL, a
/// `src=` attribute, a stylesheet link, a CSS import): empty for a self-contained file that
/// works offline, as a report must.
pub fn external_references(html: &str) -> Vec<&'static str> {
    ["http://", "https://", "src=", "<link", "@import"].into_iter().filter(|needle| html.contains(needle)).collect()
}

/// The per-prefix table of a report written by this module, read back: tasks and output bytes
/// by task prefix (what tests and scripts compare with the computation they measured). Rows
/// that do not parse are left out.
pub fn prefix_rows(html: &str) -> std::collections::BTreeMap<String, (u64, u64)> {
    let attr = |row: &str, name: &str| -> Option<String> {
        let from = row.find(&format!("{name}=\""))? + name.len() + 2;
        Some(row[from..from + row[from..].find('"')?].to_string())
    };
    html.split("<tr class=\"prefix\"")
        .skip(1)
        .filter_map(|row| {
            let tasks = attr(row, "data-tasks")?.parse().ok()?;
            let bytes = attr(row, "data-bytes")?.parse().ok()?;
            Some((attr(row, "data-prefix")?, (tasks, bytes)))
        })
        .collect()
}

/// `1.5 MiB`, `312 B`.
pub fn human_bytes(bytes: f64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes;
    let mut unit = 0;
    while v.abs() >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{v:.0} {}", UNITS[0]) } else { format!("{v:.1} {}", UNITS[unit]) }
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A colour per prefix, stable within one report (prefixes in name order).
fn prefix_colors(data: &ReportData) -> HashMap<String, RGBColor> {
    data.prefixes().keys().enumerate().map(|(i, p)| (p.clone(), pick(i))).collect()
}

fn pick(i: usize) -> RGBColor {
    let (r, g, b) = Palette99::pick(i).rgb();
    RGBColor(r, g, b)
}

fn chart_error(chart: &'static str) -> impl Fn(String) -> ReportError {
    move |message| ReportError::Chart { chart, message }
}

/// Inline SVG in HTML needs no namespace declaration; dropping it keeps every URL out of the
/// file, so a test can check the page loads nothing.
fn inline_svg(svg: String) -> String {
    svg.replace(" xmlns=\"http://www.w3.org/2000/svg\"", "")
}

fn task_stream_svg(data: &ReportData, colors: &HashMap<String, RGBColor>) -> Result<String, ReportError> {
    let err = chart_error("task stream");
    let mut lanes: Vec<&str> = data.tasks.iter().map(|t| t.lane.as_str()).collect();
    lanes.sort_unstable();
    lanes.dedup();
    let lane_index: HashMap<&str, usize> = lanes.iter().enumerate().map(|(i, l)| (*l, i)).collect();
    let t_max = data.tasks.iter().map(|t| t.stop_s).fold(data.wall_s, f64::max).max(1e-3);
    let rows = lanes.len().max(1);
    let height = (120 + 28 * rows).min(900) as u32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        let mut chart = ChartBuilder::on(&root)
            .caption("Task stream (one row per thread, one bar per task)", ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(90)
            .build_cartesian_2d(0f64..t_max, 0f64..rows as f64)
            .map_err(|e| err(e.to_string()))?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .x_desc("time since start (s)")
            .y_desc("thread")
            .y_labels(rows.min(30))
            .y_label_formatter(&|y| {
                let i = y.floor() as usize;
                lanes.get(i).map_or(String::new(), |l| (*l).to_string())
            })
            .draw()
            .map_err(|e| err(e.to_string()))?;
        let step = data.tasks.len().div_ceil(MAX_DRAWN_TASKS).max(1);
        for (prefix, color) in sorted(colors) {
            let color = *color;
            let bars = data.tasks.iter().step_by(step).filter(|t| t.prefix == *prefix).map(|t| {
                let y = lane_index[t.lane.as_str()] as f64;
                // A task shorter than a pixel would vanish: give it a minimal width.
                let x1 = t.stop_s.max(t.start_s + t_max / 2000.0);
                let style = if t.failed { RED.filled() } else { color.filled() };
                Rectangle::new([(t.start_s, y + 0.1), (x1, y + 0.9)], style)
            });
            chart
                .draw_series(bars)
                .map_err(|e| err(e.to_string()))?
                .label(prefix.as_str())
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(e.to_string()))?;
        root.present().map_err(|e| err(e.to_string()))?;
    }
    Ok(inline_svg(svg))
}

fn sorted(colors: &HashMap<String, RGBColor>) -> Vec<(&String, &RGBColor)> {
    let mut v: Vec<_> = colors.iter().collect();
    v.sort_by(|a, b| a.0.cmp(b.0));
    v
}

fn prefix_bars_svg(data: &ReportData, colors: &HashMap<String, RGBColor>) -> Result<String, ReportError> {
    let err = chart_error("time per prefix");
    let prefixes = data.prefixes();
    let names: Vec<&String> = prefixes.keys().collect();
    let max = prefixes.values().map(|p| p.compute_s).fold(0.0, f64::max).max(1e-6) * 1.1;
    let rows = names.len().max(1);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, (100 + 30 * rows).min(900) as u32)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        let mut chart = ChartBuilder::on(&root)
            .caption("Compute time per task prefix (summed over threads)", ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(140)
            .build_cartesian_2d(0f64..max, 0f64..rows as f64)
            .map_err(|e| err(e.to_string()))?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .x_desc("compute time (s)")
            .y_desc("prefix")
            .y_labels(rows.min(30))
            .y_label_formatter(&|y| names.get(y.floor() as usize).map_or(String::new(), |n| n.to_string()))
            .draw()
            .map_err(|e| err(e.to_string()))?;
        let bars = names.iter().enumerate().map(|(i, n)| {
            let color = colors.get(*n).copied().unwrap_or(BLUE);
            Rectangle::new([(0.0, i as f64 + 0.15), (prefixes[*n].compute_s, i as f64 + 0.85)], color.filled())
        });
        chart.draw_series(bars).map_err(|e| err(e.to_string()))?;
        root.present().map_err(|e| err(e.to_string()))?;
    }
    Ok(inline_svg(svg))
}

fn memory_svg(data: &ReportData) -> Result<String, ReportError> {
    let err = chart_error("memory");
    let t_max = data.memory.iter().flat_map(|s| s.points.iter().map(|p| p.0)).fold(data.wall_s, f64::max).max(1e-3);
    let peak = data.memory.iter().flat_map(|s| s.points.iter().map(|p| p.1)).max().unwrap_or(0).max(1) as f64 * 1.1;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, 320)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        let mut chart = ChartBuilder::on(&root)
            .caption("Memory over time", ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(90)
            .build_cartesian_2d(0f64..t_max, 0f64..peak)
            .map_err(|e| err(e.to_string()))?;
        chart
            .configure_mesh()
            .x_desc("time since start (s)")
            .y_desc("memory (bytes)")
            .y_label_formatter(&|v| human_bytes(*v))
            .draw()
            .map_err(|e| err(e.to_string()))?;
        for (i, series) in data.memory.iter().enumerate() {
            let color = pick(i);
            chart
                .draw_series(LineSeries::new(series.points.iter().map(|&(t, b)| (t, b as f64)), color.stroke_width(2)))
                .map_err(|e| err(e.to_string()))?
                .label(series.name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 14, y)], color.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(e.to_string()))?;
        root.present().map_err(|e| err(e.to_string()))?;
    }
    Ok(inline_svg(svg))
}

fn render(data: &ReportData) -> Result<String, ReportError> {
    let colors = prefix_colors(data);
    let prefixes = data.prefixes();
    let total = data.tasks.len() as u64 + data.tasks_not_shown;
    let compute: f64 = prefixes.values().map(|p| p.compute_s).sum();
    let nbytes: u64 = prefixes.values().map(|p| p.nbytes).sum();
    let failed: u64 = prefixes.values().map(|p| p.failed).sum();
    let peak = data.memory.iter().flat_map(|s| s.points.iter().map(|p| p.1)).max().unwrap_or(0);
    let longest = data.tasks.iter().max_by(|a, b| (a.stop_s - a.start_s).total_cmp(&(b.stop_s - b.start_s)));
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\n<style>\
         body{{font-family:sans-serif;margin:1.5em;color:#222}}table{{border-collapse:collapse;margin:.5em 0 1.5em}}\
         td,th{{border:1px solid #ccc;padding:.25em .6em;text-align:right}}th{{background:#f2f2f2}}\
         td:first-child,th:first-child{{text-align:left}}.swatch{{display:inline-block;width:.9em;height:.9em;margin-right:.4em;vertical-align:middle}}\
         svg{{display:block;margin:.5em 0 1.5em;max-width:100%;height:auto}}</style></head><body>\n\
         <h1>{title}</h1>\n",
        title = escape(&data.title)
    );
    let _ = write!(h, "<h2>Summary</h2>\n<table id=\"facts\">");
    let facts: Vec<(&str, String)> = vec![
        ("Scheduler", escape(&data.scheduler)),
        ("Started (µs since the Unix epoch)", data.started_us.to_string()),
        ("Wall time", format!("{:.3} s", data.wall_s)),
        ("Tasks", total.to_string()),
        ("Task prefixes", prefixes.len().to_string()),
        ("Failed tasks", failed.to_string()),
        ("Threads", data.threads.to_string()),
        ("Compute time (summed over threads)", format!("{compute:.3} s")),
        (
            "Parallelism (compute time / wall time)",
            if data.wall_s > 0.0 { format!("{:.2}", compute / data.wall_s) } else { "n/a".into() },
        ),
        ("Bytes of results", format!("{} ({nbytes} B)", human_bytes(nbytes as f64))),
        ("Peak memory", human_bytes(peak as f64)),
        (
            "Longest task",
            longest.map_or("none".into(), |t| format!("{} ({:.3} s)", escape(&t.prefix), t.stop_s - t.start_s)),
        ),
    ];
    for (name, value) in facts {
        let _ = write!(h, "<tr><th>{name}</th><td>{value}</td></tr>");
    }
    h.push_str("</table>\n");
    if data.tasks_not_shown > 0 {
        let _ = writeln!(
            h,
            "<p>{} tasks ran before the oldest one the scheduler's task stream still held; the charts and \
             table below show the {} it held.</p>",
            data.tasks_not_shown,
            data.tasks.len()
        );
    }
    h.push_str("<h2>Task stream</h2>\n");
    if data.tasks.len() > MAX_DRAWN_TASKS {
        let _ = writeln!(
            h,
            "<p>The chart draws every {}th of the {} tasks; the tables count them all.</p>",
            data.tasks.len().div_ceil(MAX_DRAWN_TASKS),
            data.tasks.len()
        );
    }
    // plotters measures chart text with the registered font (ab_glyph), also for SVG.
    if !crate::plot::register_font_once() {
        return Err(chart_error("task stream")("the built-in font could not be loaded".into()));
    }
    h.push_str(&task_stream_svg(data, &colors)?);
    h.push_str("\n<h2>Task prefixes</h2>\n<table id=\"prefixes\"><tr><th>prefix</th><th>tasks</th><th>failed</th><th>compute time (s)</th><th>mean (ms)</th><th>longest (ms)</th><th>result bytes</th></tr>");
    for (name, p) in &prefixes {
        let c = colors.get(name).copied().unwrap_or(BLUE);
        let _ = write!(
            h,
            "<tr class=\"prefix\" data-prefix=\"{n}\" data-tasks=\"{t}\" data-bytes=\"{b}\"><td><span class=\"swatch\" style=\"background:rgb({r},{g},{bl})\"></span>{n}</td><td>{t}</td><td>{f}</td><td>{cs:.3}</td><td>{mean:.3}</td><td>{lg:.3}</td><td>{hb}</td></tr>",
            n = escape(name),
            t = p.tasks,
            b = p.nbytes,
            r = c.0,
            g = c.1,
            bl = c.2,
            f = p.failed,
            cs = p.compute_s,
            mean = if p.tasks > 0 { 1e3 * p.compute_s / p.tasks as f64 } else { 0.0 },
            lg = 1e3 * p.longest_s,
            hb = human_bytes(p.nbytes as f64),
        );
    }
    h.push_str("</table>\n");
    h.push_str(&prefix_bars_svg(data, &colors)?);
    h.push_str("\n<h2>Memory</h2>\n");
    h.push_str(&memory_svg(data)?);
    h.push_str("\n<p>Made by kiln; this file loads nothing from elsewhere.</p>\n</body></html>\n");
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_to_elsewhere_are_found() {
        assert!(external_references("<svg><text>12 s</text></svg>").is_empty());
        assert_eq!(external_references("<img src=\"x.png\"><a href=\"https://e.org\">"), ["https://", "src="]);
    }
}
