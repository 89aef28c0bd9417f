//! Per-task overhead: n trivial tasks (add one to an integer) feeding an 8-ary tree of sums,
//! built, ordered and run by kiln's local scheduler (threaded and synchronous), then the same
//! graph in Dask (threaded and synchronous). A run is timed end to end, building the graph
//! included, on both sides; one warm-up, then `--runs` timed runs each; medians are compared.
//!
//! `cargo run --release -p kiln-bench --bin overhead -- [--n 1000000] [--threads 2] [--runs 3]
//! [--no-dask]`

use std::sync::Arc;
use std::time::Instant;

use kiln_bench::{Protocol, Side, arg, get, median, peak_rss_bytes, ratio, reset_peak_rss, run_dask, text};
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
    let protocol = Protocol::from_args(3);
    let threads = protocol.threads;

    let mut kiln = Side::begin("kiln");
    let mut kiln_sync = Side::begin("kiln_sync");
    let (mut builds, mut orders, mut runs) = (Vec::new(), Vec::new(), Vec::new());
    let (mut tasks, mut result) = (0, 0i64);
    // Run 0 is the warm-up: measured like the others, then dropped.
    for rep in 0..=protocol.runs {
        reset_peak_rss();
        let t0 = Instant::now();
        let (graph, root) = build(n, 8);
        let build_s = t0.elapsed().as_secs_f64();
        // Ordering alone, for the breakdown (the run orders the graph itself).
        let t1 = Instant::now();
        let prio = order(&graph, &[root]);
        let order_s = t1.elapsed().as_secs_f64();
        drop(prio);
        let t2 = Instant::now();
        let out = LocalScheduler::threads(threads).with_progress(Progress::Never).run(&graph, &[root]).unwrap();
        let run_s = t2.elapsed().as_secs_f64();
        result = *out[0].downcast_ref::<i64>().unwrap();
        tasks = graph.len();
        let t3 = Instant::now();
        let sync = LocalScheduler::synchronous().with_progress(Progress::Never).run(&graph, &[root]).unwrap();
        let sync_s = t3.elapsed().as_secs_f64();
        assert_eq!(*sync[0].downcast_ref::<i64>().unwrap(), result, "threaded and synchronous agree");
        if rep > 0 {
            // End to end: build + run.
            kiln.push(build_s + run_s);
            kiln_sync.push(build_s + sync_s);
            builds.push(build_s);
            orders.push(order_s);
            runs.push(run_s);
        }
    }
    kiln.end();
    kiln_sync.end();
    let (build_s, order_s, run_s) = (median(&builds), median(&orders), median(&runs));
    let rss = peak_rss_bytes().unwrap_or(0);
    let per_task = |side: &Side| side.median() / tasks as f64 * 1e6;
    let (us_per_task, sync_us) = (per_task(&kiln), per_task(&kiln_sync));
    println!(
        "kiln threads({threads}): {tasks} tasks; medians: build {build_s:.3} s, order {order_s:.3} s, run (incl. order) \
         {run_s:.3} s; end to end {} = {us_per_task:.3} us/task; synchronous {} = {sync_us:.3} us/task; peak RSS {:.0} MB",
        kiln.summary(),
        kiln_sync.summary(),
        rss as f64 / 1e6
    );

    let mut line = format!(
        "RESULT tasks={tasks} result={result} {} kiln_threads={threads} {} {} kiln_us_per_task={us_per_task:.3} \
         kiln_sync_us_per_task={sync_us:.3} kiln_build_s={build_s:.3} kiln_order_s={order_s:.3} kiln_run_s={run_s:.3} \
         kiln_peak_rss_bytes={rss}",
        protocol.fields(threads),
        kiln.fields(),
        kiln_sync.fields()
    );
    if !protocol.no_dask {
        match run_dask("dask_overhead.py", &["--n".into(), n.to_string()], &protocol, threads) {
            Ok(d) => {
                let dt = get(&d, "tasks").unwrap_or(0.0);
                assert_eq!(dt as usize, tasks, "both systems run the same graph");
                assert_eq!(get(&d, "result"), Some(result as f64), "both systems agree");
                let dask = Side::from_dask("dask", &d, "threaded").expect("the Dask side reports its threaded runs");
                let dask_sync = Side::from_dask("dask_sync", &d, "sync").expect("the Dask side reports its sync runs");
                let (threaded_us, dsync_us) = (per_task(&dask), per_task(&dask_sync));
                let drss = get(&d, "peak_rss_bytes").unwrap_or(f64::NAN);
                println!(
                    "dask: threaded ({threads} workers) {} = {threaded_us:.1} us/task; synchronous {} = {dsync_us:.1} \
                     us/task; peak RSS {:.0} MB",
                    dask.summary(),
                    dask_sync.summary(),
                    drss / 1e6
                );
                let (vs_threaded, vs_sync) = (ratio(&dask, &kiln, true), ratio(&dask_sync, &kiln_sync, true));
                println!(
                    "ratio (median/median): kiln is {vs_threaded:.0}x faster than dask threaded, {vs_sync:.0}x faster than \
                     dask synchronous; RSS {:.2}x of dask",
                    rss as f64 / drss
                );
                line.push_str(&format!(
                    " dask_threads={threads} {} {} dask_sync_us_per_task={dsync_us:.2} dask_threaded_us_per_task={threaded_us:.2} \
                     dask_peak_rss_bytes={drss:.0} speedup_vs_threaded={vs_threaded:.1} speedup_vs_sync={vs_sync:.1} dask={}",
                    dask.fields(),
                    dask_sync.fields(),
                    text(&d, "dask")
                ));
            }
            Err(e) => println!("dask side skipped: {e}"),
        }
    }
    println!("{line}");
}
