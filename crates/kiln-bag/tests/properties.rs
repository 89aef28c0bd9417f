//! Every bag operation against a plain sequential implementation, on random data split into
//! random partitions (empty ones included), with random tree fan-ins, on the local scheduler
//! with one and two threads.

use std::collections::HashMap;

use kiln_bag::Bag;
use kiln_graph::Collection;
use kiln_local::{LocalScheduler, Progress};
use proptest::prelude::*;

fn schedulers() -> [LocalScheduler; 2] {
    [
        LocalScheduler::threads(1).with_progress(Progress::Never),
        LocalScheduler::threads(2).with_progress(Progress::Never),
    ]
}

/// Random data and a random partitioning of it.
fn partitioned() -> impl Strategy<Value = (Vec<Vec<i64>>, usize)> {
    (prop::collection::vec(prop::collection::vec(-50i64..50, 0..12), 1..12), 2usize..6)
}

fn flat(parts: &[Vec<i64>]) -> Vec<i64> {
    parts.iter().flatten().copied().collect()
}

fn bag_of(parts: &[Vec<i64>], split_every: usize) -> Bag<i64> {
    Bag::from_partitions(parts.to_vec()).split_every(split_every)
}

fn config() -> ProptestConfig {
    ProptestConfig { cases: 40, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn elementwise_chains_match_iterators((parts, split_every) in partitioned()) {
        let bag = bag_of(&parts, split_every);
        let chained = bag
            .map(|x| x * 3)
            .filter(|x| x % 2 == 0)
            .remove(|x| *x > 90)
            .flat_map(|x| std::iter::repeat_n(*x, (x.unsigned_abs() % 3) as usize))
            .map_partitions(|part| part.iter().rev().map(|x| x.to_string()).collect())
            .try_map(|s| s.parse::<i64>());
        let mut expected = Vec::new();
        for part in &parts {
            let step: Vec<i64> = part
                .iter()
                .map(|x| x * 3)
                .filter(|x| x % 2 == 0)
                .filter(|x| *x <= 90)
                .flat_map(|x| std::iter::repeat_n(x, (x.unsigned_abs() % 3) as usize))
                .collect();
            expected.extend(step.into_iter().rev());
        }
        for s in schedulers() {
            prop_assert_eq!(chained.compute_on(&s).unwrap(), expected.clone());
            prop_assert_eq!(bag.compute_on(&s).unwrap(), flat(&parts));
        }
        prop_assert_eq!(chained.npartitions(), parts.len());
    }

    #[test]
    fn numeric_reductions_match_iterators((parts, split_every) in partitioned()) {
        let bag = bag_of(&parts, split_every);
        let data = flat(&parts);
        let n = data.len() as f64;
        for s in schedulers() {
            prop_assert_eq!(bag.count().compute_on(&s).unwrap(), data.len() as u64);
            prop_assert_eq!(bag.sum().compute_on(&s).unwrap(), data.iter().sum::<i64>());
            prop_assert_eq!(bag.min().compute_on(&s).ok(), data.iter().min().copied());
            prop_assert_eq!(bag.max().compute_on(&s).ok(), data.iter().max().copied());
            if data.is_empty() {
                let error = bag.mean().compute_on(&s).unwrap_err().to_string();
                prop_assert!(error.contains("mean of an empty bag"), "{}", error);
                continue;
            }
            let mean = data.iter().sum::<i64>() as f64 / n;
            let squares = data.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>();
            prop_assert!((bag.mean().compute_on(&s).unwrap() - mean).abs() < 1e-9);
            prop_assert!((bag.var(0).compute_on(&s).unwrap() - squares / n).abs() < 1e-7);
            prop_assert!((bag.std(0).compute_on(&s).unwrap() - (squares / n).sqrt()).abs() < 1e-7);
            if data.len() > 1 {
                prop_assert!((bag.var(1).compute_on(&s).unwrap() - squares / (n - 1.0)).abs() < 1e-7);
            } else {
                let error = bag.var(1).compute_on(&s).unwrap_err().to_string();
                prop_assert!(error.contains("needs more than 1 elements"), "{}", error);
            }
            let floats = bag.map(|&x| x as f64 / 4.0);
            prop_assert!((floats.sum().compute_on(&s).unwrap() - data.iter().sum::<i64>() as f64 / 4.0).abs() < 1e-9);
        }
    }

    #[test]
    fn boolean_and_general_reductions_match_iterators((parts, split_every) in partitioned(), threshold in -60i64..60) {
        let bag = bag_of(&parts, split_every);
        let data = flat(&parts);
        let above = bag.map(move |&x| x > threshold);
        let folded = bag.fold(|acc: Vec<i64>, &x| { let mut acc = acc; acc.push(x); acc }, |mut a, b| { a.extend(b); a }, Vec::new());
        let reduced = bag.reduction(|part: &[i64]| part.iter().map(|x| x.abs()).sum::<i64>(), |sums: Vec<i64>| sums.into_iter().sum());
        for s in schedulers() {
            prop_assert_eq!(above.any().compute_on(&s).unwrap(), data.iter().any(|&x| x > threshold));
            prop_assert_eq!(above.all().compute_on(&s).unwrap(), data.iter().all(|&x| x > threshold));
            // Partials combine in partition order, so even an order-sensitive fold is exact.
            prop_assert_eq!(folded.compute_on(&s).unwrap(), data.clone());
            prop_assert_eq!(reduced.compute_on(&s).unwrap(), data.iter().map(|x| x.abs()).sum::<i64>());
        }
    }

    #[test]
    fn grouped_reductions_match_iterators((parts, split_every) in partitioned(), k in 0usize..15) {
        let bag = bag_of(&parts, split_every);
        let data = flat(&parts);
        // Reference: first-seen order of keys, as the bag promises.
        let mut order: Vec<i64> = Vec::new();
        let mut counts: HashMap<i64, u64> = HashMap::new();
        for &x in &data {
            if !counts.contains_key(&x) { order.push(x); }
            *counts.entry(x).or_default() += 1;
        }
        let frequencies: Vec<(i64, u64)> = order.iter().map(|x| (*x, counts[x])).collect();

        let mut by_residue: Vec<(i64, i64)> = Vec::new();
        for &x in &data {
            let key = x.rem_euclid(5);
            match by_residue.iter_mut().find(|(k, _)| *k == key) {
                Some((_, total)) => *total += x,
                None => by_residue.push((key, x)),
            }
        }
        let mut top = data.clone();
        top.sort_by_key(|x| std::cmp::Reverse(x.rem_euclid(7))); // stable: ties keep bag order
        top.truncate(k);
        let mut bottom = data.clone();
        bottom.sort_by_key(|x| x.abs());
        bottom.truncate(k);

        let foldby = bag.foldby(|x| x.rem_euclid(5), |acc, x| acc + x, 0, |a, b| a + b, 0);
        for s in schedulers() {
            prop_assert_eq!(bag.frequencies().compute_on(&s).unwrap(), frequencies.clone());
            prop_assert_eq!(bag.distinct().compute_on(&s).unwrap(), order.clone());
            prop_assert_eq!(foldby.compute_on(&s).unwrap(), by_residue.clone());
            prop_assert_eq!(bag.topk(k, |x| x.rem_euclid(7)).compute_on(&s).unwrap(), top.clone());
            prop_assert_eq!(bag.bottomk(k, |x| x.abs()).compute_on(&s).unwrap(), bottom.clone());
            // Results that are lists are bags again: the seeds' frequencies().topk(..) chain.
            let most = bag.frequencies().topk(3, |(_, n)| *n).compute_on(&s).unwrap();
            let mut expected_most = frequencies.clone();
            expected_most.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
            expected_most.truncate(3);
            prop_assert_eq!(most, expected_most);
        }
    }

    #[test]
    fn concat_and_flatten_match_iterators((parts, split_every) in partitioned(), (others, _) in partitioned()) {
        let a = bag_of(&parts, split_every).map(|x| x * 2);
        let b = bag_of(&others, split_every).filter(|x| x % 3 != 0);
        let both = Bag::concat(&[a.clone(), b.clone()]);
        let mut expected: Vec<i64> = flat(&parts).into_iter().map(|x| x * 2).collect();
        expected.extend(flat(&others).into_iter().filter(|x| x % 3 != 0));
        prop_assert_eq!(both.npartitions(), parts.len() + others.len());
        // Borrowed lists (flatten first) and owned ones (flatten after a map) alike.
        let lists = Bag::from_partitions(parts.iter().map(|p| vec![p.clone()]).collect());
        let moved = lists.map(|l| l.iter().map(|x| x + 1).collect::<Vec<i64>>()).flatten();
        for s in schedulers() {
            prop_assert_eq!(both.compute_on(&s).unwrap(), expected.clone());
            prop_assert_eq!(both.sum().compute_on(&s).unwrap(), expected.iter().sum::<i64>());
            prop_assert_eq!(lists.flatten().compute_on(&s).unwrap(), flat(&parts));
            prop_assert_eq!(moved.compute_on(&s).unwrap(), flat(&parts).into_iter().map(|x| x + 1).collect::<Vec<_>>());
        }
    }

    #[test]
    fn take_reads_only_what_it_needs((parts, split_every) in partitioned(), k in 0usize..40) {
        let bag = bag_of(&parts, split_every).map(|x| x + 1);
        let expected: Vec<i64> = flat(&parts).into_iter().map(|x| x + 1).take(k).collect();
        for s in schedulers() {
            prop_assert_eq!(bag.take(k, &s).unwrap(), expected.clone());
        }
    }

    #[test]
    fn creation_matches_its_definition(items in prop::collection::vec(any::<i32>(), 0..60), n in 1usize..9, size in 1usize..9) {
        let s = &schedulers()[1];
        let even = Bag::from_sequence(items.clone(), n);
        prop_assert_eq!(even.npartitions(), n.min(items.len()).max(1));
        prop_assert_eq!(even.compute_on(s).unwrap(), items.clone());
        let sized = Bag::from_sequence_sized(items.clone(), size);
        prop_assert_eq!(sized.npartitions(), items.len().div_ceil(size).max(1));
        prop_assert_eq!(sized.compute_on(s).unwrap(), items.clone());
        let range = Bag::range(items.len() as u64, n);
        prop_assert_eq!(range.compute_on(s).unwrap(), (0..items.len() as u64).collect::<Vec<_>>());
    }

    #[test]
    fn pluck_matches_iterators(names in prop::collection::vec(prop::option::of("[a-c]{1,2}"), 0..30), n in 1usize..5) {
        use serde_json::{Value, json};
        let records: Vec<Value> = names
            .iter()
            .enumerate()
            .map(|(i, name)| match name {
                Some(name) => json!({"id": i, "name": name}),
                None => json!({"id": i}),
            })
            .collect();
        let bag = Bag::from_sequence(records, n);
        let s = &schedulers()[1];
        let ids = bag.pluck("id").compute_on(s).unwrap();
        prop_assert_eq!(ids, (0..names.len()).map(|i| json!(i)).collect::<Vec<_>>());
        let with_default = bag.pluck_or("name", json!("?")).compute_on(s).unwrap();
        let expected: Vec<Value> = names.iter().map(|n| json!(n.clone().unwrap_or_else(|| "?".into()))).collect();
        prop_assert_eq!(with_default, expected);
        let strict = bag.pluck("name").compute_on(s);
        prop_assert_eq!(strict.is_err(), names.iter().any(Option::is_none));
    }
}

/// A JSON record per number, some with the key, some with a list.
fn record(x: i64) -> serde_json::Value {
    if x % 4 == 0 {
        serde_json::json!({"n": x, "list": [x, x + 1], "deep": {"v": x * 2}})
    } else {
        serde_json::json!({"n": x, "list": [x]})
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn reshaping_and_tuple_operations_match_iterators((parts, split_every) in partitioned(), n in 1usize..9, seed in any::<u64>(), fraction in 0.0f64..=1.0) {
        let bag = bag_of(&parts, split_every);
        let all = flat(&parts);
        for s in schedulers() {
            // repartition keeps elements and order.
            let re = bag.map(|x| x + 1).repartition(n);
            prop_assert_eq!(re.npartitions(), n);
            prop_assert_eq!(re.compute_on(&s).unwrap(), all.iter().map(|x| x + 1).collect::<Vec<_>>());
            prop_assert_eq!(re.sum().compute_on(&s).unwrap(), all.iter().map(|x| x + 1).sum::<i64>());
            // zip with a bag derived partition by partition, then starmap.
            let zipped = bag.zip(&bag.map(|x| x * 10));
            let expected: Vec<(i64, i64)> = all.iter().map(|x| (*x, x * 10)).collect();
            prop_assert_eq!(zipped.compute_on(&s).unwrap(), expected.clone());
            prop_assert_eq!(zipped.starmap(|a, b| a + b).compute_on(&s).unwrap(), expected.iter().map(|(a, b)| a + b).collect::<Vec<_>>());
            // random_sample: a deterministic subsequence; 0 and 1 are none and all.
            let sample = bag.random_sample(fraction, seed).compute_on(&s).unwrap();
            prop_assert_eq!(&sample, &bag.random_sample(fraction, seed).compute_on(&s).unwrap());
            let mut rest = all.iter();
            prop_assert!(sample.iter().all(|x| rest.any(|y| y == x)), "not a subsequence");
            prop_assert!(bag.random_sample(0.0, seed).compute_on(&s).unwrap().is_empty());
            prop_assert_eq!(bag.random_sample(1.0, seed).compute_on(&s).unwrap(), all.clone());
            // join with an in-memory table: the nested loop.
            let table: Vec<(i64, String)> = (-5..5).flat_map(|k| [(k, format!("a{k}")), (k, format!("b{k}"))]).collect();
            let joined = bag.join(table.clone(), |x| x % 5, |(k, _)| *k).compute_on(&s).unwrap();
            let nested: Vec<((i64, String), i64)> = all
                .iter()
                .flat_map(|x| table.iter().filter(|(k, _)| *k == x % 5).map(|o| (o.clone(), *x)).collect::<Vec<_>>())
                .collect();
            prop_assert_eq!(joined, nested);
            // remove is filter's complement; to_delayed gives the partitions.
            prop_assert_eq!(bag.remove(|x| x % 3 == 0).compute_on(&s).unwrap(), all.iter().copied().filter(|x| x % 3 != 0).collect::<Vec<_>>());
            let delayed = bag.map(|x| x * 2).to_delayed();
            prop_assert_eq!(delayed.len(), parts.len());
            for (d, part) in delayed.iter().zip(&parts) {
                prop_assert_eq!(d.compute_on(&s).unwrap(), part.iter().map(|x| x * 2).collect::<Vec<_>>());
            }
            // pluck by key (with a default), by index, by path.
            let records = bag.map(|x| record(*x));
            let plucked = records.pluck_path_or(&["deep".into(), "v".into()], serde_json::json!(null)).compute_on(&s).unwrap();
            prop_assert_eq!(plucked, all.iter().map(|x| record(*x).pointer("/deep/v").cloned().unwrap_or(serde_json::Value::Null)).collect::<Vec<_>>());
            let firsts = records.pluck("list").pluck_index(0).compute_on(&s).unwrap();
            prop_assert_eq!(firsts, all.iter().map(|x| serde_json::json!(x)).collect::<Vec<_>>());
        }
    }
}

#[test]
fn reshaping_errors_are_clear() {
    let s = LocalScheduler::threads(1).with_progress(Progress::Never);
    let bag = Bag::from_partitions(vec![vec![1i64, 2], vec![3]]);
    let error = bag.zip(&Bag::from_partitions(vec![vec![1i64], vec![2, 3]])).compute_on(&s).unwrap_err();
    assert!(error.to_string().contains("partition 0 has 2 elements on the left and 1 on the right"), "{error}");
    let error = bag.zip(&Bag::range(3, 3)).compute_on(&s).unwrap_err();
    assert!(error.to_string().contains("2 and 3 partitions"), "{error}");
    let error = bag.random_sample(1.5, 0).compute_on(&s).unwrap_err();
    assert!(error.to_string().contains("between 0 and 1"), "{error}");
    let error = bag.repartition(0).compute_on(&s).unwrap_err();
    assert!(error.to_string().contains("at least 1"), "{error}");
    let records = Bag::from_sequence([serde_json::json!({"a": [1]}), serde_json::json!({"a": {"b": 1}})], 2);
    let error = records.pluck_path(&["a".into(), 0.into()]).compute_on(&s).unwrap_err();
    assert!(error.to_string().contains("cannot take index 0 from a JSON object"), "{error}");
    let error = records.pluck_path(&["a".into(), 3.into()]).compute_on(&s).unwrap_err();
    assert!(error.to_string().contains(r#"nothing at "a"[3]"#), "{error}");
    let error = Bag::range(3, 1).portable("app.nothing").compute_on(&s).unwrap_err();
    assert!(error.to_string().contains("no user function to register"), "{error}");
}
