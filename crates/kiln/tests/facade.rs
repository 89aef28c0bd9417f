//! The facade: default scheduler, compute of several collections, visualize.

use std::sync::Arc;

use kiln::prelude::*;
use kiln::visualize::{VisualizeError, render};

#[test]
fn compute_uses_the_installed_default_and_tuples_share_work() {
    let base = kiln::delayed::func1("base", |x: &i64| x * 2);
    let b = base.call(4);
    let (p, q) = kiln::compute(&(b.map("p", |v: &i64| v + 1), b.map("q", |v: &i64| v - 1))).unwrap();
    assert_eq!((p, q), (9, 7));
    let previous = kiln::set_default_scheduler(Arc::new(LocalScheduler::synchronous()));
    assert!(previous.is_none());
    assert_eq!(kiln::default_scheduler().name(), "threads(1)");
    assert_eq!(b.compute().unwrap(), 8);
    kiln::graph::scheduler::clear_default();
}

#[test]
fn visualize_writes_dot_and_renders_or_explains() {
    let dir = std::env::temp_dir().join(format!("kiln-viz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = kiln::delayed::func2("f", |a: &i64, b: &i64| a + b);
    let x = f.call(1, 2);
    x.visualize(dir.join("g.dot")).unwrap();
    let text = std::fs::read_to_string(dir.join("g.dot")).unwrap();
    assert!(text.contains("label=\"f\""));
    match x.visualize(dir.join("g.svg")) {
        Ok(()) => assert!(std::fs::read_to_string(dir.join("g.svg")).unwrap().contains("<svg")),
        Err(VisualizeError::GraphvizMissing(p)) => assert!(p.ends_with("g.svg")),
        Err(other) => panic!("unexpected {other}"),
    }
    assert!(matches!(render("digraph{}", dir.join("g.bmp")), Err(VisualizeError::UnknownFormat(_))));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Tasks in DOT text: kiln draws a circle per task (its kernel) and a box per value (its key),
/// so a task is one node of each.
fn task_count(dot: &str) -> usize {
    dot.lines().filter(|l| l.contains("label=") && !l.contains("->")).count() / 2
}

#[test]
fn dot_draws_the_graph_as_written_and_dot_optimized_the_fused_graph_that_runs() {
    // 2x2 blocks: ones, a transpose, an add and a sum as written; fused, the elementwise work
    // runs inside the reduction's first step.
    let x = kiln::array::ones::<f64>(&[4, 4], 2);
    let y = (&x + &x.t()).sum();
    let written = Visualize::dot(&y).unwrap();
    let runs = Visualize::dot_optimized(&y).unwrap();
    assert!(written.starts_with("digraph") && runs.starts_with("digraph"));
    let (written_nodes, run_nodes) = (task_count(&written), task_count(&runs));
    assert!(run_nodes < written_nodes, "fused {run_nodes} tasks, as written {written_nodes}:\n{runs}");
    assert!(written.contains("transpose") || written.contains("add"), "{written}");
    // The optimized graph is the one computed: same task count as the optimizer produces.
    let (graph, outputs) = kiln::graph::collection::graph_of(&y).unwrap();
    let (optimized, _) = kiln::graph::collection::optimize(graph, outputs).unwrap();
    assert_eq!(run_nodes, optimized.len());
    assert_eq!(y.scalar().compute().unwrap(), 32.0);
}

#[test]
fn drawing_a_hundred_thousand_chained_operations_does_not_overflow_the_stack() {
    let mut x = kiln::array::ones::<f64>(&[10], 5);
    for _ in 0..100_000 {
        x = &x + 1.0;
    }
    // As written: 200,002 tasks, built without recursion, then refused as too large to draw.
    match Visualize::dot(&x) {
        Err(VisualizeError::TooLarge(e)) => assert_eq!(e.tasks, 200_002),
        other => panic!("expected TooLarge, got {:?}", other.map(|d| d.len())),
    }
    // As it runs: fused into a few tasks per block, drawn.
    let runs = Visualize::dot_optimized(&x).unwrap();
    assert!(runs.starts_with("digraph") && task_count(&runs) < 100, "{} tasks", task_count(&runs));
    assert_eq!(x.to_string(), "kiln.Array<add, shape=(10,), dtype=float64, chunksize=(5,)>");
    assert_eq!(x.compute().unwrap()[3], 100_001.0);
}
