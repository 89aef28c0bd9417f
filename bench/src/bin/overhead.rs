//! Per-task overhead: n trivial tasks (add one to an integer) feeding an 8-ary tree of sums,
//! built, ordered and run by kiln's local scheduler, then the same graph in Dask.
//!
//! `cargo run --release -p kiln-bench --bin overhead -- [--n 1000000] [--threads 2] [--no-dask]`

use kiln_bench::arg;
use std::sync::Arc;
use std::time::Instant;

use kiln_bench::{get, peak_rss_bytes, reset_peak_rss, run_dask};
use kiln_graph::kernel::{func1, input, slice_kernel};
use kiln_graph::order::order;
use kiln_graph::{Graph, Kernel, TaskId, Value};
use kiln_local::{LocalScheduler, Progress};

fn build(n: usize, fan_in: usize) -> (Graph, TaskId) {
    let inc: Arc<dyn Kernel> = Arc::new(func1("inc", |x: &i64| x + 1));
    let add: Arc<dyn Kernel> = Arc::new(slice_kernel("add", |xs: &[Value]| {
        let mut total = 1i64;
        for i in 0..xs.len() {
            total += input::<i64>(xs, i)?;
        }
        Ok(Value::new(total))
    }));
    kiln_bench::foundation_graph(n, fan_in, &inc, &add)
}

fn main() {
    let n: usize = arg("--n", 1_000_000);
    let threads: usize = arg("--threads", std::thread::available_parallelism().map_or(2, |p| p.get()));
    let no_dask = std::env::args().any(|a| a == "--no-dask");
    let reps: usize = arg("--reps", 3);

    let mut best = (f64::MAX, 0.0, 0.0, 0.0, 0usize, 0i64);
    let mut sync_best = f64::MAX;
    for _ in 0..reps {
        reset_peak_rss();
        let t0 = Instant::now();
        let (graph, root) = build(n, 8);
        let build_s = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let prio = order(&graph, &[root]);
        let order_s = t1.elapsed().as_secs_f64();
        drop(prio);
        let t2 = Instant::now();
        let out = LocalScheduler::threads(threads).with_progress(Progress::Never).run(&graph, &[root]).unwrap();
        let run_s = t2.elapsed().as_secs_f64();
        let result = *out[0].downcast_ref::<i64>().unwrap();
        // End to end: build + run (the run orders the graph itself).
        let total = build_s + run_s;
        if total < best.0 {
            best = (total, build_s, order_s, run_s, graph.len(), result);
        }
        let t3 = Instant::now();
        LocalScheduler::synchronous().with_progress(Progress::Never).run(&graph, &[root]).unwrap();
        sync_best = sync_best.min(build_s + t3.elapsed().as_secs_f64());
    }
    let (total, build_s, order_s, run_s, tasks, result) = best;
    let rss = peak_rss_bytes().unwrap_or(0);
    let us_per_task = total / tasks as f64 * 1e6;
    let sync_us = sync_best / tasks as f64 * 1e6;
    println!(
        "kiln threads({threads}): {tasks} tasks; build {build_s:.3} s, order {order_s:.3} s, run (incl. order) {run_s:.3} s; \
         end to end {total:.3} s = {us_per_task:.3} us/task; synchronous {sync_us:.3} us/task; peak RSS {:.0} MB",
        rss as f64 / 1e6
    );

    let mut line = format!(
        "RESULT tasks={tasks} result={result} kiln_us_per_task={us_per_task:.3} kiln_sync_us_per_task={sync_us:.3} \
         kiln_build_s={build_s:.3} kiln_order_s={order_s:.3} kiln_run_s={run_s:.3} kiln_peak_rss_bytes={rss}"
    );
    if !no_dask {
        match run_dask("dask_overhead.py", &["--n".into(), n.to_string()]) {
            Ok(d) => {
                let dt = get(&d, "tasks").unwrap_or(0.0);
                assert_eq!(dt as usize, tasks, "both systems run the same graph");
                assert_eq!(get(&d, "result"), Some(result as f64), "both systems agree");
                let sync = get(&d, "sync_s").unwrap_or(f64::NAN) / dt * 1e6;
                let threaded = get(&d, "threaded_s").unwrap_or(f64::NAN) / dt * 1e6;
                let drss = get(&d, "peak_rss_bytes").unwrap_or(f64::NAN);
                println!(
                    "dask: synchronous {sync:.1} us/task, threaded {threaded:.1} us/task, peak RSS {:.0} MB",
                    drss / 1e6
                );
                println!(
                    "ratio: kiln is {:.0}x faster than dask threaded, {:.0}x faster than dask synchronous; RSS {:.2}x of dask",
                    threaded / us_per_task,
                    sync / sync_us,
                    rss as f64 / drss
                );
                line.push_str(&format!(
                    " dask_sync_us_per_task={sync:.2} dask_threaded_us_per_task={threaded:.2} dask_peak_rss_bytes={drss:.0} \
                     speedup_vs_threaded={:.1} speedup_vs_sync={:.1}",
                    threaded / us_per_task,
                    sync / sync_us
                ));
            }
            Err(e) => println!("dask side skipped: {e}"),
        }
    }
    println!("{line}");
}
