//! Where the time goes when a million delayed calls are computed: constructing the calls,
//! lowering them to a graph, optimizing (cull + fuse), and running.
//!
//! `cargo run --release -p kiln-bench --bin delayed_phases -- [--n 1000000]`

use std::time::Instant;

use kiln_delayed::{collect, func1, func2};
use kiln_graph::collection::{graph_of, optimize};
use kiln_local::{LocalScheduler, Progress};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: i64 = args.iter().position(|a| a == "--n").and_then(|i| args.get(i + 1)?.parse().ok()).unwrap_or(1_000_000);
    let t = Instant::now();
    let inc = func1("inc", |x: &i64| x + 1);
    let sum = func1("sum", |v: &Vec<i64>| v.iter().sum::<i64>());
    let _unused = func2("add", |a: &i64, b: &i64| a + b);
    let mut level: Vec<_> = (0..n).map(|i| inc.call(i)).collect();
    while level.len() > 1 {
        level = level.chunks(8).map(|c| sum.call(collect(c.to_vec()))).collect();
    }
    let root = level.pop().unwrap();
    let construct = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let (graph, outs) = graph_of(&root).unwrap();
    let tasks = graph.len();
    let lower = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let (graph, outs) = optimize(graph, outs).unwrap();
    let opt = t.elapsed().as_secs_f64();
    let fused_tasks = graph.len();
    let t = Instant::now();
    let out = LocalScheduler::new().with_progress(Progress::Never).run(&graph, &outs).unwrap();
    let run = t.elapsed().as_secs_f64();
    let t = Instant::now();
    drop(graph);
    drop(root);
    let teardown = t.elapsed().as_secs_f64();
    let value = *out[0].downcast_ref::<i64>().unwrap();
    assert_eq!(value, (1..=n).sum::<i64>());
    let total = construct + lower + opt + run + teardown;
    println!(
        "{n} calls, {tasks} tasks ({fused_tasks} after fusion): construct {construct:.3} s, lower {lower:.3} s, \
         optimize {opt:.3} s, run {run:.3} s, teardown {teardown:.3} s; {:.3} us per call end to end",
        total / n as f64 * 1e6
    );
    println!(
        "RESULT calls={n} tasks={tasks} fused_tasks={fused_tasks} construct_s={construct:.3} lower_s={lower:.3} \
         optimize_s={opt:.3} run_s={run:.3} teardown_s={teardown:.3} us_per_call={:.3}",
        total / n as f64 * 1e6
    );
}
