//! The `kiln` command.

use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use kiln::Scheduler;
use kiln::local::Progress;
use kiln::prelude::*;

/// kiln: Dask rebuilt in Rust.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the seeds' computations on the local scheduler and reports what happened: the
    /// headline `(x + x.T - x.mean(axis=0)).std()` on an n x n random array (with a progress
    /// bar), then a loop of delayed calls.
    Demo {
        /// Side of the random array (the seeds' full size is 100000: an 80 GB array).
        #[arg(long, default_value_t = 20_000)]
        n: usize,
        /// Block side of the array.
        #[arg(long, default_value_t = 1000)]
        chunk: usize,
        /// Side of the a x b grid of delayed calls (the graph has about side² tasks).
        #[arg(long, default_value_t = 300)]
        side: i64,
        /// Threads for the local scheduler (default: one per core).
        #[arg(long)]
        threads: Option<usize>,
        /// Also draw a 3 x 3 version of the graph to this file (.dot, .svg, .png).
        #[arg(long)]
        visualize: Option<String>,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Demo { n, chunk, side, threads, visualize } => {
            let scheduler =
                threads.map_or_else(LocalScheduler::new, LocalScheduler::threads).with_progress(Progress::Auto);
            array_demo(n, chunk, &scheduler)?;
            demo(side, &scheduler, visualize.as_deref())
        }
    }
}

/// The seeds' loop (`f(a, b)` when `a < b`, else `g(a, b)`) over a side x side grid, the
/// results summed by a tree of partial sums.
fn grid(side: i64) -> kiln::delayed::Delayed<i64> {
    let f = kiln::delayed::func2("f", |a: &i64, b: &i64| a * b + 1);
    let g = kiln::delayed::func2("g", |a: &i64, b: &i64| a - b);
    let mut level = Vec::with_capacity((side * side) as usize);
    for a in 0..side {
        for b in 0..side {
            level.push(if a < b { f.call(a, b) } else { g.call(a, b) });
        }
    }
    let add8 = kiln::delayed::func1("sum", move |v: &Vec<i64>| v.iter().sum::<i64>());
    while level.len() > 1 {
        level = level.chunks(8).map(|c| add8.call(kiln::delayed::collect(c.to_vec()))).collect();
    }
    level.pop().expect("a non-empty grid")
}

fn expected(side: i64) -> i64 {
    (0..side).flat_map(|a| (0..side).map(move |b| if a < b { a * b + 1 } else { a - b })).sum()
}

/// The seeds' headline array computation.
fn array_demo(n: usize, chunk: usize, scheduler: &LocalScheduler) -> Result<()> {
    anyhow::ensure!(n > 0 && chunk > 0, "--n and --chunk must be positive");
    let x = kiln::array::random::RandomState::new(42).random(&[n, n], [chunk, chunk]);
    println!("kiln demo: x = {x} ({:.1} GB if held in memory)", x.nbytes() as f64 / 1e9);
    let y = (&x + &x.t() - &x.mean_axis(0)).std();
    let (graph, _) = y.graph().context("building the graph")?;
    println!("  (x + x.T - x.mean(axis=0)).std() is a graph of {} tasks", graph.len());
    drop(graph);
    let t = Instant::now();
    let value = y.scalar().compute_on(scheduler).context("computing the seed expression")?;
    println!(
        "  computed on {} in {:.2?}: {value:.6} (uniform data tends to sqrt(1/6) = {:.6})",
        scheduler.name(),
        t.elapsed(),
        (1.0f64 / 6.0).sqrt()
    );
    Ok(())
}

fn demo(side: i64, scheduler: &LocalScheduler, visualize: Option<&str>) -> Result<()> {
    anyhow::ensure!(side > 0, "--side must be positive");
    println!("kiln demo: the seeds' `f(a, b) if a < b else g(a, b)` loop over a {side} x {side} grid, summed");

    let t0 = Instant::now();
    let total = grid(side);
    let build = t0.elapsed();
    let (graph, _) = total.graph().context("building the graph")?;
    println!("  built {} delayed calls ({} tasks) with plain loops in {build:.2?}", side * side, graph.len());
    drop(graph);

    let t1 = Instant::now();
    let value = total.compute_on(scheduler).context("computing the grid")?;
    let run = t1.elapsed();
    println!("  computed on {} in {run:.2?}: total = {value}", scheduler.name());
    let check = expected(side);
    anyhow::ensure!(value == check, "wrong answer: {value} != {check}");
    println!("  matches the plain-loop answer ({check})");

    if let Some(path) = visualize {
        grid(3).visualize(path).with_context(|| format!("drawing {path}"))?;
        println!("  drew the 3 x 3 graph to {path}");
    }
    Ok(())
}
