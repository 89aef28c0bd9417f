//! delayed: graphs from ordinary code, with the seeds' examples.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use kiln_delayed::{collect, collect_map, func1, func2, func3, try_func1, value, value_tokenized};
use kiln_graph::{Collection, ComputeError, TaskError};
use kiln_local::{LocalScheduler, Progress};

fn sched() -> LocalScheduler {
    LocalScheduler::threads(2).with_progress(Progress::Never)
}

#[test]
fn nested_loops_with_f_and_g() {
    // The seeds' example: f(a, b) when a < b, else g(a, b), over all pairs.
    let f = func2("f", |a: &i64, b: &i64| a * 10 + b);
    let g = func2("g", |a: &i64, b: &i64| a - b);
    let (a_values, b_values) = ([1i64, 2, 3, 4], [2i64, 3, 5]);
    let mut results = BTreeMap::new();
    for a in a_values {
        for b in b_values {
            results.insert((a, b), if a < b { f.call(a, b) } else { g.call(a, b) });
        }
    }
    let all = collect_map(results).compute_on(&sched()).unwrap();
    let mut expected = BTreeMap::new();
    for a in a_values {
        for b in b_values {
            expected.insert((a, b), if a < b { a * 10 + b } else { a - b });
        }
    }
    assert_eq!(all, expected);
}

#[test]
fn fit_pipeline_shares_the_data_and_scores() {
    let loads = Arc::new(AtomicUsize::new(0));
    let load = {
        let loads = loads.clone();
        func1("load", move |n: &usize| {
            loads.fetch_add(1, Ordering::SeqCst);
            (0..*n).map(|i| i as f64).collect::<Vec<f64>>()
        })
    };
    let fit1 = func2("fit1", |x: &Vec<f64>, a: &f64| x.iter().map(|v| v * a).sum::<f64>());
    let fit2 = func2("fit2", |r: &f64, b: &f64| r + b);
    let fit3 = func2("fit3", |r: &f64, c: &f64| r / c);
    let x = load.call(100usize);
    let mut results = BTreeMap::new();
    for a in [1i64, 2] {
        for b in [0i64, 10] {
            for c in [1i64, 4] {
                let r1 = fit1.call(&x, a as f64);
                let r2 = fit2.call(r1, b as f64);
                results.insert((a, b, c), fit3.call(r2, c as f64));
            }
        }
    }
    let score = func1("score", |m: &BTreeMap<(i64, i64, i64), f64>| {
        m.iter().max_by(|a, b| a.1.total_cmp(b.1)).map(|(k, v)| (*k, *v)).unwrap()
    });
    let best = score.call(collect_map(results));
    let (params, value) = best.compute_on(&sched()).unwrap();
    assert_eq!(params, (2, 10, 1));
    assert_eq!(value, 2.0 * 4950.0 + 10.0);
    assert_eq!(loads.load(Ordering::SeqCst), 1, "x is loaded once and shared");
}

#[test]
fn equal_calls_get_equal_keys_and_run_once() {
    let runs = Arc::new(AtomicUsize::new(0));
    let slow = {
        let runs = runs.clone();
        func1("slow", move |x: &i64| {
            runs.fetch_add(1, Ordering::SeqCst);
            x * 2
        })
    };
    let add = func2("add", |a: &i64, b: &i64| a + b);
    let (p, q) = (slow.call(21), slow.call(21));
    assert_eq!(p.key(), q.key());
    assert_ne!(slow.call(22).key(), p.key());
    assert_eq!(add.call(p, q).compute_on(&sched()).unwrap(), 84);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    // Two wrappers of different closures under one name do not collide.
    let other = func1("slow", |x: &i64| x * 3);
    assert_ne!(other.call(21).key(), slow.call(21).key());
}

#[test]
fn computing_several_values_at_once_shares_their_tasks() {
    let runs = Arc::new(AtomicUsize::new(0));
    let base = {
        let runs = runs.clone();
        func1("base", move |x: &i64| {
            runs.fetch_add(1, Ordering::SeqCst);
            *x
        })
    };
    let b = base.call(5);
    let plus = b.map("plus", |v: &i64| v + 1);
    let times = b.map("times", |v: &i64| v * 3);
    let label = b.map("label", |v: &i64| format!("v={v}"));
    let (p, t, l) = (plus, times, label).compute_on(&sched()).unwrap();
    assert_eq!((p, t, l.as_str()), (6, 15, "v=5"));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[test]
fn errors_carry_the_key_of_the_failing_call() {
    let checked = try_func1("checked", |x: &i64| if *x < 0 { Err(format!("negative input {x}")) } else { Ok(*x) });
    let bad = checked.call(-3);
    let twice = bad.map("twice", |v: &i64| v * 2);
    let err = twice.compute_on(&sched()).unwrap_err();
    match &err {
        ComputeError::Task { key, error: TaskError::Failed(msg) } => {
            assert_eq!(key, bad.key());
            assert_eq!(msg, "negative input -3");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn deep_chains_build_run_and_drop_without_overflowing_the_stack() {
    let inc = func1("inc", |x: &i64| x + 1);
    let mut x = value(0i64);
    for _ in 0..200_000 {
        x = inc.call(x);
    }
    assert_eq!(x.compute_on(&sched()).unwrap(), 200_000);
    drop(x);
}

#[test]
fn chains_are_fused_before_running() {
    let inc = func1("inc", |x: &i64| x + 1);
    let double = func1("double", |x: &i64| x * 2);
    let y = double.call(inc.call(inc.call(1)));
    let (graph, out) = y.graph().unwrap();
    assert_eq!(graph.len(), 3);
    let (fused, outs) = kiln_graph::collection::optimize(graph, vec![out]).unwrap();
    assert_eq!(fused.len(), 1);
    assert_eq!(fused.kernel(outs[0]).name(), "inc-double");
    assert_eq!(y.compute_on(&sched()).unwrap(), 6);
}

#[test]
fn values_and_collect() {
    let data = value(vec![1.0f64, 2.0, 3.0]);
    let mean = data.map("mean", |v: &Vec<f64>| v.iter().sum::<f64>() / v.len() as f64);
    let parts: Vec<_> = (0..5).map(|i| mean.map("shift", move |m: &f64| m + i as f64)).collect();
    assert_eq!(collect(parts).compute_on(&sched()).unwrap(), vec![2.0, 3.0, 4.0, 5.0, 6.0]);
    assert_eq!(value_tokenized(5i64).key(), value_tokenized(5i64).key());
    assert_ne!(value(5i64).key(), value(5i64).key());
}

#[test]
fn three_argument_functions_and_dot() {
    let clamp = func3("clamp", |x: &f64, lo: &f64, hi: &f64| x.clamp(*lo, *hi));
    let y = clamp.call(5.0, 0.0, 1.0);
    assert_eq!(y.compute_on(&sched()).unwrap(), 1.0);
    let dot = y.to_dot().unwrap();
    assert!(dot.contains("label=\"clamp\""));
}

#[test]
fn a_long_chain_fuses_into_pieces_whose_specs_stay_small() {
    // One fused task per 256 calls: what a worker receives and caches per task stays small
    // however long the chain (a 1,000,000-long chain once made one 100 MB kernel spec).
    let inc = func1("inc", |x: &i64| x + 1).portable("kiln.test.inc");
    let mut x = value(0i64);
    for _ in 0..100_000 {
        x = inc.call(x);
    }
    let (graph, out) = x.graph().unwrap();
    let (fused, _) = kiln_graph::collection::optimize(graph, vec![out]).unwrap();
    assert!(fused.len() >= 100_001 / kiln_graph::fuse::MAX_FUSED_CHAIN, "{} tasks", fused.len());
    let largest = fused.ids().filter_map(|t| fused.kernel(t).spec()).map(|s| s.params.len()).max().unwrap();
    assert!(largest < 64 << 10, "a spec of {largest} bytes");
    assert_eq!(x.compute_on(&sched()).unwrap(), 100_000);
}
