//! How bags become graphs: fused steps, reduction trees, partial computation for `take`, and
//! invalid bags reported as errors.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use kiln_bag::{Bag, BagError};
use kiln_graph::collection::graph_of;
use kiln_graph::{Collection, ComputeError};
use kiln_local::{LocalScheduler, Progress};

fn sched() -> LocalScheduler {
    LocalScheduler::threads(2).with_progress(Progress::Never)
}

#[test]
fn a_chain_of_elementwise_steps_is_one_task_per_partition() {
    let bag = Bag::range(100, 4).map(|x| x * 2).filter(|x| x % 3 == 0).flat_map(|x| [*x, *x]).map(|x| x + 1);
    let (graph, outputs) = graph_of(&bag).unwrap();
    // 4 range tasks and 4 fused pipeline tasks; the outputs are the pipelines.
    assert_eq!((graph.len(), outputs.len()), (8, 4));
    assert!(graph.key(outputs[0]).name().starts_with("map-"), "{}", graph.key(outputs[0]));
    // The steps' partial result is fused too: a reduction adds only its combine tasks.
    let (graph, _) = graph_of(&bag.count()).unwrap();
    assert_eq!(graph.len(), 4 + 4 + 1);
}

#[test]
fn reductions_are_trees_of_split_every_partials() {
    let bag = Bag::range(1000, 20);
    // 20 partials -> 3 combines of at most 8 -> the final combine.
    let (graph, _) = graph_of(&bag.sum()).unwrap();
    assert_eq!(graph.len(), 20 + 20 + 3 + 1);
    let (graph, _) = graph_of(&bag.split_every(2).sum()).unwrap();
    // 20 -> 10 -> 5 -> 3 -> 2 -> final.
    assert_eq!(graph.len(), 20 + 20 + 10 + 5 + 3 + 2 + 1);
    assert_eq!(bag.split_every(2).sum().compute_on(&sched()).unwrap(), 999 * 1000 / 2);
    // One partition still ends in one combine, so finalisation runs exactly once.
    assert_eq!(Bag::range(5, 1).mean().compute_on(&sched()).unwrap(), 2.0);
}

#[test]
fn equal_bags_share_keys_and_different_steps_do_not() {
    let a = Bag::range(10, 2);
    let b = Bag::range(10, 2);
    assert_eq!(graph_of(&a).unwrap().0.keys(), graph_of(&b).unwrap().0.keys());
    let plucked = |bag: &Bag<serde_json::Value>, key| graph_of(&bag.pluck(key)).unwrap().0.keys().to_vec();
    let records = Bag::from_sequence(vec![serde_json::json!({"a": 1, "b": 2})], 1);
    assert_eq!(plucked(&records, "a"), plucked(&records, "a"));
    assert_ne!(plucked(&records, "a"), plucked(&records, "b"));
}

#[test]
fn take_computes_only_the_partitions_it_needs() {
    let partitions_run = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&partitions_run);
    let bag = Bag::from_sequence_sized(0..100i64, 10).map_partitions(move |part| {
        counter.fetch_add(1, Ordering::SeqCst);
        part.to_vec()
    });
    assert_eq!(bag.take(3, &sched()).unwrap(), vec![0, 1, 2]);
    assert_eq!(partitions_run.load(Ordering::SeqCst), 1);
    // 25 elements: the first partition, then 2 more: 30 elements from 3 partitions.
    assert_eq!(bag.take(25, &sched()).unwrap(), (0..25).collect::<Vec<_>>());
    assert_eq!(partitions_run.load(Ordering::SeqCst), 1 + 3);
    assert_eq!(bag.take(1000, &sched()).unwrap().len(), 100);
}

fn invalid_cause(error: ComputeError) -> BagError {
    match error {
        ComputeError::InvalidCollection { collection: "bag", cause } => {
            cause.downcast_ref::<BagError>().cloned().expect("a BagError cause")
        }
        other => panic!("expected an invalid bag, got {other}"),
    }
}

#[test]
fn invalid_arguments_are_typed_errors_when_computed() {
    let s = sched();
    assert_eq!(
        invalid_cause(Bag::from_sequence(0..3, 0).compute_on(&s).unwrap_err()),
        BagError::ZeroPartitions { operation: "from_sequence" }
    );
    assert_eq!(
        invalid_cause(Bag::<i32>::from_sequence_sized(0..3, 0).count().compute_on(&s).unwrap_err()),
        BagError::ZeroPartitionSize
    );
    assert_eq!(
        invalid_cause(Bag::range(3, 0).sum().compute_on(&s).unwrap_err()),
        BagError::ZeroPartitions { operation: "range" }
    );
    assert_eq!(
        invalid_cause(Bag::range(3, 1).split_every(1).sum().compute_on(&s).unwrap_err()),
        BagError::SplitEvery(1)
    );
    assert!(Bag::range(3, 1).split_every(0).take(1, &s).is_err());
}

#[test]
fn runtime_failures_name_what_went_wrong() {
    let s = sched();
    let error = Bag::<i64>::from_partitions(vec![vec![], vec![]]).min().compute_on(&s).unwrap_err();
    assert!(error.to_string().contains("min of an empty bag"), "{error}");
    let error = Bag::from_sequence([i64::MAX, 1], 2).sum().compute_on(&s).unwrap_err();
    assert!(error.to_string().contains("sum overflows i64"), "{error}");
    let records = Bag::from_sequence(vec![serde_json::json!({"type": "Push"}), serde_json::json!({"name": "x"})], 2);
    let error = records.pluck("type").compute_on(&s).unwrap_err();
    assert!(matches!(error, ComputeError::Task { .. }), "{error:?}");
    assert!(error.to_string().contains(r#"no key "type""#), "{error}");
    let error = Bag::from_sequence(vec![serde_json::json!([1, 2])], 1).pluck("a").compute_on(&s).unwrap_err();
    assert!(error.to_string().contains(r#"cannot take key "a" from a JSON array"#), "{error}");
}

#[test]
fn from_delayed_partitions_and_other_element_types() {
    let load =
        kiln_delayed::func1("load", |prefix: &String| (0..3).map(|i| format!("{prefix}{i}")).collect::<Vec<_>>());
    let bag = Bag::from_delayed(vec![load.call("a"), load.call("b")]);
    assert_eq!(bag.npartitions(), 2);
    let upper = bag.map(|s| s.to_uppercase());
    assert_eq!(upper.compute_on(&sched()).unwrap(), ["A0", "A1", "A2", "B0", "B1", "B2"]);
    assert_eq!(upper.distinct().count().compute_on(&sched()).unwrap(), 6);
    assert!(Bag::<String>::from_delayed(Vec::new()).compute_on(&sched()).is_err());
}

#[test]
fn partition_sizes_come_from_an_encoded_sample() {
    use kiln_graph::{CodecRegistry, Value};
    kiln_bag::portable::ensure_registered();
    let long_lines = vec!["x".repeat(1000); 100];
    let size = CodecRegistry::global().nbytes(&Value::new(long_lines)).unwrap();
    assert!((100_000..120_000).contains(&size), "{size}");
    let records: Vec<serde_json::Value> =
        (0..1000).map(|i| serde_json::json!({"id": i, "name": "someone", "tags": ["a", "b"]})).collect();
    let size = CodecRegistry::global().nbytes(&Value::new(records)).unwrap();
    assert!(size > 1000 * 30, "{size}");
    // A codec round trip of schemaless records (MessagePack is self-describing).
    let records = vec![serde_json::json!({"a": [1, 2.5, null], "b": {"c": "d"}})];
    let encoded = CodecRegistry::global().encode(&Value::new(records.clone())).unwrap();
    let back = CodecRegistry::global().decode(&encoded).unwrap();
    assert_eq!(back.downcast_ref::<Vec<serde_json::Value>>().unwrap(), &records);
}
