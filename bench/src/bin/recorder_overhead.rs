//! What the local scheduler's task hook costs on trivial tasks: the same graph (n `inc` tasks
//! feeding an 8-ary tree of sums) run with no callbacks (the default), with a global no-op
//! hook installed (the per-task dispatch alone), and inside a performance report (recording
//! every task and writing the HTML file). Modes alternate run by run so load drifts hit all
//! three alike; medians are compared.
//!
//! `cargo run --release -p kiln-bench --bin recorder_overhead -- [--n 200000] [--threads 2] [--runs 5]`

use std::sync::Arc;
use std::time::Instant;

use kiln_bench::{arg, load_average, median};
use kiln_graph::kernel::{func1, input, slice_kernel};
use kiln_graph::{Kernel, Value};
use kiln_local::{Callbacks, LocalScheduler, Progress};

struct Nothing;
impl Callbacks for Nothing {}

fn main() {
    let n: usize = arg("--n", 200_000);
    let threads: usize = arg("--threads", 2);
    let runs: usize = arg("--runs", 5);
    let inc: Arc<dyn Kernel> = Arc::new(func1("inc", |x: &i64| x + 1));
    let add: Arc<dyn Kernel> = Arc::new(slice_kernel("add", |xs: &[Value]| {
        let mut total = 1i64;
        for i in 0..xs.len() {
            total += input::<i64>(xs, i)?;
        }
        Ok(Value::new(total))
    }));
    let (graph, root) = kiln_bench::foundation_graph(n, 8, &inc, &add);
    let scheduler = LocalScheduler::threads(threads).with_progress(Progress::Never);
    let path = std::env::temp_dir().join(format!("kiln-recorder-overhead-{}.html", std::process::id()));
    let load_start = load_average();
    let (mut off, mut hook, mut report) = (Vec::new(), Vec::new(), Vec::new());
    for rep in 0..=runs {
        let t = Instant::now();
        scheduler.run(&graph, &[root]).unwrap();
        let off_s = t.elapsed().as_secs_f64();
        kiln_local::set_global_callbacks(Some(Arc::new(Nothing)));
        let t = Instant::now();
        scheduler.run(&graph, &[root]).unwrap();
        let hook_s = t.elapsed().as_secs_f64();
        kiln_local::set_global_callbacks(None);
        let t = Instant::now();
        kiln_dashboard::report::performance_report(&path, || scheduler.run(&graph, &[root]).unwrap()).unwrap();
        let report_s = t.elapsed().as_secs_f64();
        // Run 0 warms up.
        if rep > 0 {
            off.push(off_s);
            hook.push(hook_s);
            report.push(report_s);
        }
    }
    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let _ = std::fs::remove_file(&path);
    let tasks = graph.len() as f64;
    let us = |s: f64| 1e6 * s / tasks;
    let (o, h, r) = (median(&off), median(&hook), median(&report));
    println!(
        "RESULT tasks={} threads={threads} runs={runs} off_us_per_task={:.3} hook_us_per_task={:.3} report_us_per_task={:.3} hook_overhead_pct={:.1} report_overhead_pct={:.1} report_bytes={bytes} load_start={load_start:.2} load_end={:.2}",
        graph.len(),
        us(o),
        us(h),
        us(r),
        100.0 * (h / o - 1.0),
        100.0 * (r / o - 1.0),
        load_average()
    );
}
