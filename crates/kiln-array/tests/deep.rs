//! Long chains of operations (issue 10.4): every walk over an array's expression (lowering,
//! fusion, optimization, drawing, sending, dropping) is iterative or bounded, so 100,000 chained
//! operations run on a default 2 MiB test thread and give the closed-form answer. Before, 2,000
//! chained `x + 1` or 3,000 chained `rechunk`s overflowed the stack (SIGABRT).

use kiln_array::{Array, arange, ones};
use kiln_graph::collection::{graph_of, optimize};
use kiln_graph::{CodecRegistry, Collection, GraphBuilder};
use kiln_local::{LocalScheduler, Progress};

const STEPS: usize = 100_000;

fn sched() -> LocalScheduler {
    LocalScheduler::threads(2).with_progress(Progress::Never)
}

fn chain_of_adds(n: usize) -> Array<f64> {
    let mut x = ones::<f64>(&[10], 5);
    for _ in 0..n {
        x = &x + 1.0;
    }
    x
}

#[test]
fn a_hundred_thousand_chained_elementwise_ops_compute_the_closed_form_and_drop() {
    let x = chain_of_adds(STEPS);
    let values = x.compute_on(&sched()).unwrap();
    assert!(values.iter().all(|&v| v == 1.0 + STEPS as f64), "{:?}", values.iter().next());
    // Mixed with a reduction and other elementwise functions: sum(|x - 1| * -2) = -2 * 10 * STEPS
    let y = ((&x - 1.0).abs() * -2.0).sum();
    assert_eq!(y.scalar().compute_on(&sched()).unwrap(), -2.0 * 10.0 * STEPS as f64);
    // Dropping the only handle of the chain unlinks it without recursion.
    drop((x, y));
}

#[test]
fn fused_kernels_of_a_long_chain_stay_small() {
    let x = chain_of_adds(STEPS);
    let (graph, outputs) = graph_of(&x).unwrap();
    let (graph, _) = optimize(graph, outputs).unwrap();
    // Each task fuses a bounded piece of the chain, so what a worker receives (and caches)
    // per task stays small however long the chain.
    let largest = graph.ids().filter_map(|t| graph.kernel(t).spec()).map(|s| s.params.len()).max().unwrap();
    assert!(largest < 1 << 20, "a kernel spec of {largest} bytes");
    // The whole graph travels as specs (what a distributed client sends).
    let specs = kiln_graph::portable::graph_to_specs(&graph, CodecRegistry::global()).unwrap();
    assert_eq!(specs.len(), graph.len());
}

#[test]
fn a_hundred_thousand_chained_rechunks_compute_and_drop() {
    let mut x = ones::<f64>(&[8], 4);
    for i in 0..STEPS {
        x = x.rechunk(if i % 2 == 0 { 2 } else { 4 });
    }
    assert_eq!(x.sum().scalar().compute_on(&sched()).unwrap(), 8.0);
    drop(x);
}

#[test]
fn a_hundred_thousand_steps_mixing_fused_and_materialized_operations() {
    // Elementwise steps fuse into their readers; rechunks and reductions emit tasks: the
    // lowering alternates between the two kinds of nesting.
    let mut x = ones::<f64>(&[6, 4], [3, 2]);
    for i in 0..STEPS {
        x = match i % 4 {
            0 => &x + 1.0,
            1 => x.rechunk([2, 4]),
            2 => &x * 1.0,
            _ => x.rechunk([3, 2]),
        };
    }
    let total = x.sum().scalar().compute_on(&sched()).unwrap();
    assert_eq!(total, 24.0 * (1.0 + (STEPS / 4) as f64));
}

#[test]
fn shared_operands_are_lowered_once_not_once_per_path() {
    // x = x + x, 200 times: 2**200 paths from the result to the source, 200 operations.
    let mut x = ones::<f64>(&[4], 2);
    for _ in 0..200 {
        x = &x + &x;
    }
    // Once decided per block, not once per path: this finishes at all.
    assert_eq!(x.compute_on(&sched()).unwrap()[0], 2f64.powi(200));
}

#[test]
fn the_unfused_graph_of_a_long_chain_builds_and_draws() {
    // What `visualize` draws: one task per operation and block, lowered without fusion.
    let x = chain_of_adds(STEPS);
    let mut builder = GraphBuilder::new();
    let outputs = x.add_to_unfused(&mut builder).unwrap();
    let graph = builder.build().unwrap();
    assert_eq!(outputs.len(), 2);
    assert_eq!(graph.len(), 2 * (STEPS + 1));
    let options = kiln_graph::dot::DotOptions { max_tasks: usize::MAX, ..Default::default() };
    let dot = kiln_graph::dot::to_dot(&graph, &options).unwrap();
    assert!(dot.starts_with("digraph"));
    assert_eq!(x.to_string(), "kiln.Array<add, shape=(10,), dtype=float64, chunksize=(5,)>");
}

#[test]
fn a_cumulative_sum_over_a_hundred_thousand_blocks() {
    // The carries run along the axis, 100,000 blocks long. Asking for the last block first
    // walks the whole chain of carries from its end.
    let x = arange::<i64>(0.0, STEPS as f64, 1.0, 1).cumsum(0);
    let n = STEPS as i64;
    let last = x.slice(&kiln_array::idx![-1..]).compute_on(&sched()).unwrap();
    assert_eq!(last.as_slice().unwrap(), &[n * (n - 1) / 2]);
    let v = x.compute_on(&sched()).unwrap();
    assert_eq!(v[[1000]], 1000 * 1001 / 2);
}
