//! Delayed graphs as plain data: converted to task specs, round-tripped through postcard,
//! rebuilt from fresh registries and run, on the local scheduler and with every intermediate
//! value passed through its codec.

use std::collections::BTreeMap;
use std::fmt::Debug;

use kiln_delayed::{collect, collect_map, func1, func2, register_portable, value, value_tokenized};
use kiln_graph::collection::{graph_of, optimize};
use kiln_graph::graph::Input;
use kiln_graph::portable::{PortableError, TaskSpec, graph_to_specs, specs_to_graph};
use kiln_graph::{CodecRegistry, Collection, Encoded, KernelRegistry, TaskId, Value};
use kiln_local::{LocalScheduler, Progress};
use proptest::prelude::*;

fn sched() -> LocalScheduler {
    LocalScheduler::threads(2).with_progress(Progress::Never)
}

/// As the array tests' helper: the rebuilt graph on the scheduler, and a sequential run that
/// passes every value through its codec.
fn through_specs<C: Collection>(c: &C, kernels: &KernelRegistry, codecs: &CodecRegistry) -> (C::Output, C::Output) {
    let (graph, outputs) = graph_of(c).unwrap();
    let (graph, outputs) = optimize(graph, outputs).unwrap();
    let specs = graph_to_specs(&graph, codecs).unwrap_or_else(|e| panic!("not portable: {e}"));
    let specs: Vec<TaskSpec> = postcard::from_bytes(&postcard::to_allocvec(&specs).unwrap()).unwrap();
    let rebuilt = specs_to_graph(&specs, kernels, codecs).unwrap_or_else(|e| panic!("rebuild: {e}"));
    let outs: Vec<TaskId> = outputs.iter().map(|&o| rebuilt.id_of(graph.key(o)).unwrap()).collect();
    let scheduled = c.assemble(&rebuilt, &outs, sched().run(&rebuilt, &outs).unwrap()).unwrap();
    let mut slots: Vec<Option<Value>> = vec![None; rebuilt.len()];
    for &id in rebuilt.topological_order() {
        let inputs: Vec<Value> = rebuilt
            .inputs(id)
            .iter()
            .map(|i| match i {
                Input::Task(d) => slots[d.index()].clone().unwrap(),
                Input::Literal(v) => v.clone(),
            })
            .collect();
        let out = rebuilt.kernel(id).call(&inputs).unwrap();
        let encoded = codecs.encode(&out).unwrap_or_else(|e| panic!("task {}: {e}", rebuilt.key(id)));
        let encoded: Encoded = postcard::from_bytes(&postcard::to_allocvec(&encoded).unwrap()).unwrap();
        slots[id.index()] = Some(codecs.decode(&encoded).unwrap());
    }
    let values = outs.iter().map(|o| slots[o.index()].clone().unwrap()).collect();
    (scheduled, c.assemble(&rebuilt, &outs, values).unwrap())
}

fn registries() -> (KernelRegistry, CodecRegistry) {
    let (kernels, codecs) = (KernelRegistry::new(), CodecRegistry::with_builtins());
    register_portable(&kernels, &codecs);
    register_portable(&kernels, &codecs);
    (kernels, codecs)
}

#[track_caller]
fn check<T: Clone + Debug + PartialEq + Send + Sync + 'static>(
    d: &kiln_delayed::Delayed<T>,
    kernels: &KernelRegistry,
    codecs: &CodecRegistry,
) -> T {
    let direct = d.compute_on(&sched()).unwrap();
    let (a, b) = through_specs(d, kernels, codecs);
    assert_eq!(a, direct);
    assert_eq!(b, direct);
    direct
}

#[test]
fn registered_functions_values_and_collect() {
    let (kernels, codecs) = registries();
    let inc = func1("inc", |x: &i64| x + 1).portable("test.inc");
    let add = func2("add", |a: &i64, b: &f64| *a as f64 + b).portable("test.add");
    let mean = func1("mean", |v: &Vec<f64>| v.iter().sum::<f64>() / v.len() as f64).portable("test.mean");
    let label = func1("label", |v: &f64| format!("{v:.1}")).portable("test.label");
    for k in [inc.kernel(), add.kernel(), mean.kernel(), label.kernel()] {
        kernels.register_instance(k);
    }
    let parts: Vec<_> = (0..6).map(|i| add.call(inc.call(i), 0.5)).collect();
    let all = collect(parts);
    assert_eq!(check(&all, &kernels, &codecs), vec![1.5, 2.5, 3.5, 4.5, 5.5, 6.5]);
    assert_eq!(check(&mean.call(all.clone()), &kernels, &codecs), 4.0);
    assert_eq!(check(&mean.call(value(vec![1.0, 2.0, 6.0])), &kernels, &codecs), 3.0);
    let labels = collect((0..3).map(|i| label.call(add.call(value_tokenized(i as i64), 0.25))).collect());
    assert_eq!(check(&labels, &kernels, &codecs), vec!["0.2", "1.2", "2.2"]);
    assert_eq!(check(&value(7usize), &kernels, &codecs), 7);
    assert_eq!(check(&value(vec![3usize, 1]), &kernels, &codecs), vec![3, 1]);
    assert_eq!(check(&collect(vec![value(true), value(false)]), &kernels, &codecs), vec![true, false]);
    let nested = collect(vec![value(vec![1.0f64]), value(Vec::new()), value(vec![2.0, 3.0])]);
    assert_eq!(check(&nested, &kernels, &codecs), vec![vec![1.0], vec![], vec![2.0, 3.0]]);
    assert_eq!(check(&collect(vec![value("a".to_string())]), &kernels, &codecs), vec!["a".to_string()]);
}

#[test]
fn collect_map_with_tuple_keys() {
    let (kernels, codecs) = registries();
    let f = func2("f", |a: &i64, b: &i64| a * 10 + b).portable("test.f");
    let g = func2("g", |a: &i64, b: &i64| a - b).portable("test.g");
    kernels.register_instance(f.kernel());
    kernels.register_instance(g.kernel());
    let mut results = BTreeMap::new();
    for a in [1i64, 2, 3, 4] {
        for b in [2i64, 3, 5] {
            results.insert((a, b), if a < b { f.call(a, b) } else { g.call(a, b) });
        }
    }
    let all = check(&collect_map(results), &kernels, &codecs);
    assert_eq!(all[&(1, 5)], 15);
    let named: BTreeMap<String, _> = [("x".to_string(), value(1.5f64)), ("y".to_string(), value(2.5))].into();
    assert_eq!(check(&collect_map(named), &kernels, &codecs)["y"], 2.5);
}

#[test]
fn closures_and_codec_less_values_are_refused_by_name() {
    let (_, codecs) = registries();
    let local = func1("my_local_step", |x: &i64| x * 2);
    let (graph, _) = graph_of(&local.call(1)).unwrap();
    let err = graph_to_specs(&graph, &codecs).unwrap_err();
    assert!(matches!(&err, PortableError::NotPortable { kernel, .. } if kernel == "my_local_step"), "{err}");

    #[derive(Clone)]
    struct Opaque;
    let v = value(Opaque);
    let (graph, _) = graph_of(&v).unwrap();
    let err = graph_to_specs(&graph, &codecs).unwrap_err();
    match &err {
        PortableError::Literal { key, position: 0, .. } => assert_eq!(key, v.key()),
        other => panic!("unexpected {other}"),
    }
    // collect of a type without a codec stays local-only.
    let (graph, _) = graph_of(&collect(vec![value(Opaque)])).unwrap();
    let collect_task = graph.ids().find(|&id| graph.key(id).prefix() == "collect").unwrap();
    assert!(graph.kernel(collect_task).spec().is_none());
}

#[test]
fn the_global_registries_know_delayed_kernels_once_a_graph_is_built() {
    let _ = value(1i64).graph().unwrap();
    assert!(KernelRegistry::global().contains("kiln.delayed.value"));
    assert!(KernelRegistry::global().contains("kiln.delayed.collect.i64"));
    assert!(CodecRegistry::global().encode(&Value::new(3usize)).is_ok());
    let spec = kiln_graph::KernelSpec {
        id: "kiln.delayed.collect_map.(i64,i64).i64".into(),
        params: postcard::to_allocvec(&vec![(1i64, 2i64)]).unwrap(),
    };
    assert_eq!(KernelRegistry::global().resolve(&spec).unwrap().name(), "collect_map");
}

proptest! {
    #[test]
    fn added_codecs_never_panic_on_garbage(tag in prop::sample::select(vec!["usize", "isize", "vec<usize>", "vec<isize>", "vec<vec<f64>>", "btreemap<(i64,i64),f64>"]),
                                           header in prop::collection::vec(any::<u8>(), 0..24),
                                           frames in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..24), 0..3)) {
        let (_, codecs) = registries();
        let _ = codecs.decode(&Encoded { tag: tag.to_string(), header, frames: frames.into_iter().map(Into::into).collect() });
    }
}
