//! The property tests of `properties.rs` on a cluster: every portable bag operation, on random
//! data split into random partitions (empty ones included) with random tree fan-ins, computed
//! by a `LocalCluster` of worker processes, must equal both a plain sequential implementation
//! and the local scheduler's answer. One cluster runs every case (starting one costs more than
//! all the cases); the cases come from a fixed seed, so a failure reproduces. This program is
//! its own worker binary (`harness = false`; `run_worker_if_requested`), so its workers know the
//! functions it registers, as a user's program would.

use std::collections::HashMap;

use kiln_bag::{Bag, portable};
use kiln_distributed::{Client, LocalCluster, run_worker_if_requested};
use kiln_graph::{Collection, ComputeError};
use kiln_local::{LocalScheduler, Progress};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestCaseResult, TestRng, TestRunner};
use serde_json::{Value, json};

fn triple(x: &i64) -> i64 {
    x * 3
}
fn times_ten(x: &i64) -> i64 {
    x * 10
}
fn is_even(x: &i64) -> bool {
    x % 2 == 0
}
fn is_positive(x: &i64) -> bool {
    *x > 0
}
fn repeats(x: &i64) -> Vec<i64> {
    vec![*x; (x.unsigned_abs() % 3) as usize]
}
fn residue5(x: &i64) -> i64 {
    x.rem_euclid(5)
}
fn residue7(x: &i64) -> i64 {
    x.rem_euclid(7)
}
fn by_count(pair: &(i64, u64)) -> u64 {
    pair.1
}
fn add(acc: i64, x: &i64) -> i64 {
    acc + x
}
fn append(mut acc: Vec<i64>, x: &i64) -> Vec<i64> {
    acc.push(*x);
    acc
}
// Fold functions take the partial by reference.
#[allow(clippy::ptr_arg)]
fn concatenate(mut a: Vec<i64>, b: &Vec<i64>) -> Vec<i64> {
    a.extend(b);
    a
}
fn abs_sum(part: &[i64]) -> i64 {
    part.iter().map(|x| x.abs()).sum()
}
fn total(sums: Vec<i64>) -> i64 {
    sums.into_iter().sum()
}
fn table_key(item: &(i64, String)) -> i64 {
    item.0
}
fn plus(a: &i64, b: &i64) -> i64 {
    a + b
}
fn record(x: &i64) -> Value {
    if x % 4 == 0 { json!({"n": x, "list": [x, x + 1], "deep": {"v": x * 2}}) } else { json!({"n": x, "list": [x]}) }
}

/// What the client and every worker register (the worker side runs this before
/// `run_worker_if_requested`).
fn register() {
    kiln_bag::portable::ensure_registered();
    portable::register_map("prop.triple", triple);
    portable::register_map("prop.times_ten", times_ten);
    portable::register_map("prop.record", record);
    portable::register_map("prop.is_positive", is_positive);
    portable::register_filter("prop.is_even", is_even);
    portable::register_flat_map("prop.repeats", repeats);
    portable::register_key("prop.residue7", residue7);
    portable::register_key("prop.by_count", by_count);
    portable::register_group_key("prop.residue5", residue5);
    portable::register_foldby("prop.sum_by_residue5", residue5, add, |a, b| a + b);
    portable::register_fold("prop.append", append, concatenate);
    portable::register_reduction("prop.abs_sum", abs_sum, total);
    portable::register_join("prop.residue5", residue5, table_key);
    portable::register_starmap("prop.plus", plus);
}

/// One random case: partitions, a fan-in, and the parameters of the operations that take some.
type Case = (Vec<Vec<i64>>, usize, usize, usize, u64, f64, Vec<Vec<i64>>);

fn cases() -> impl Strategy<Value = Case> {
    let parts = || prop::collection::vec(prop::collection::vec(-50i64..50, 0..12), 1..10);
    (parts(), 2usize..6, 0usize..15, 1usize..9, any::<u64>(), 0.0f64..=1.0, parts())
}

fn flat(parts: &[Vec<i64>]) -> Vec<i64> {
    parts.iter().flatten().copied().collect()
}

/// `collection` on the cluster, equal to the local scheduler's answer and to `oracle`.
fn check<C>(name: &str, collection: &C, client: &Client, local: &LocalScheduler, oracle: &C::Output) -> TestCaseResult
where
    C: Collection,
    C::Output: PartialEq + std::fmt::Debug,
{
    let remote =
        collection.compute_on(client).map_err(|e| TestCaseError::fail(format!("{name} on the cluster: {e}")))?;
    let here = collection.compute_on(local).map_err(|e| TestCaseError::fail(format!("{name} locally: {e}")))?;
    prop_assert_eq!(&remote, &here, "{} differs between the cluster and the local scheduler", name);
    prop_assert_eq!(&remote, oracle, "{} differs from the sequential implementation", name);
    Ok(())
}

/// `collection` fails on both schedulers with a message containing `message`.
fn check_error<C: Collection>(
    name: &str,
    collection: &C,
    client: &Client,
    local: &LocalScheduler,
    message: &str,
) -> TestCaseResult {
    for (scheduler, error) in
        [("cluster", collection.compute_on(client).err()), ("local", collection.compute_on(local).err())]
    {
        let error: Option<ComputeError> = error;
        let Some(error) = error else {
            return Err(TestCaseError::fail(format!("{name} on the {scheduler} scheduler did not fail")));
        };
        prop_assert!(error.to_string().contains(message), "{} on the {}: {}", name, scheduler, error);
    }
    Ok(())
}

/// A float on the cluster, bit for bit the local one (same tree, same order), and close to the
/// sequential value.
fn check_close(
    name: &str,
    item: &kiln_bag::Item<f64>,
    client: &Client,
    local: &LocalScheduler,
    oracle: f64,
) -> TestCaseResult {
    let remote = item.compute_on(client).map_err(|e| TestCaseError::fail(format!("{name} on the cluster: {e}")))?;
    let here = item.compute_on(local).map_err(|e| TestCaseError::fail(format!("{name} locally: {e}")))?;
    prop_assert_eq!(remote.to_bits(), here.to_bits(), "{}: cluster {} local {}", name, remote, here);
    prop_assert!((remote - oracle).abs() <= 1e-9 * oracle.abs().max(1.0), "{}: {} vs {}", name, remote, oracle);
    Ok(())
}

fn run_case(case: Case, client: &Client, local: &LocalScheduler) -> TestCaseResult {
    let (parts, split_every, k, n, seed, fraction, others) = case;
    let bag = Bag::from_partitions(parts.clone()).split_every(split_every);
    let data = flat(&parts);

    // Elementwise chains and pluck.
    let chained = bag.map(triple).portable("prop.triple").filter(is_even).portable("prop.is_even");
    let chained = chained.flat_map(repeats).portable("prop.repeats");
    let expected: Vec<i64> = data.iter().map(triple).filter(is_even).flat_map(|x| repeats(&x)).collect();
    check("map/filter/flat_map", &chained, client, local, &expected)?;
    let records = bag.map(record).portable("prop.record");
    check("pluck", &records.pluck("n"), client, local, &data.iter().map(|x| json!(x)).collect())?;
    let deep: Vec<Value> = data.iter().map(|x| record(x).pointer("/deep/v").cloned().unwrap_or(Value::Null)).collect();
    check("pluck_path_or", &records.pluck_path_or(&["deep".into(), "v".into()], Value::Null), client, local, &deep)?;
    check(
        "pluck_index",
        &records.pluck("list").pluck_index(0),
        client,
        local,
        &data.iter().map(|x| json!(x)).collect(),
    )?;

    // Numeric reductions.
    check("count", &bag.count(), client, local, &(data.len() as u64))?;
    check("sum", &bag.sum(), client, local, &data.iter().sum::<i64>())?;
    if data.is_empty() {
        check_error("min", &bag.min(), client, local, "min of an empty bag")?;
        check_error("max", &bag.max(), client, local, "max of an empty bag")?;
        check_error("mean", &bag.mean(), client, local, "mean of an empty bag")?;
    } else {
        check("min", &bag.min(), client, local, data.iter().min().unwrap())?;
        check("max", &bag.max(), client, local, data.iter().max().unwrap())?;
        let count = data.len() as f64;
        let mean = data.iter().sum::<i64>() as f64 / count;
        let squares = data.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>();
        check_close("mean", &bag.mean(), client, local, mean)?;
        check_close("var", &bag.var(0), client, local, squares / count)?;
        check_close("std", &bag.std(0), client, local, (squares / count).sqrt())?;
        if data.len() > 1 {
            check_close("var(1)", &bag.var(1), client, local, squares / (count - 1.0))?;
        } else {
            check_error("var(1)", &bag.var(1), client, local, "needs more than 1 elements")?;
        }
    }
    let positive = bag.map(is_positive).portable("prop.is_positive");
    check("any", &positive.any(), client, local, &data.iter().any(is_positive))?;
    check("all", &positive.all(), client, local, &data.iter().all(is_positive))?;

    // Grouped reductions: keys in first-seen order.
    let mut order: Vec<i64> = Vec::new();
    let mut counts: HashMap<i64, u64> = HashMap::new();
    for &x in &data {
        if !counts.contains_key(&x) {
            order.push(x);
        }
        *counts.entry(x).or_default() += 1;
    }
    let frequencies: Vec<(i64, u64)> = order.iter().map(|x| (*x, counts[x])).collect();
    check("frequencies", &bag.frequencies(), client, local, &frequencies)?;
    check("distinct", &bag.distinct(), client, local, &order)?;
    let mut most = frequencies.clone();
    most.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    most.truncate(3);
    check("frequencies().topk", &bag.frequencies().topk(3, by_count).portable("prop.by_count"), client, local, &most)?;
    let mut top = data.clone();
    top.sort_by_key(|x| std::cmp::Reverse(residue7(x))); // stable: ties keep bag order
    top.truncate(k);
    check("topk", &bag.topk(k, residue7).portable("prop.residue7"), client, local, &top)?;
    let mut by_residue: Vec<(i64, i64)> = Vec::new();
    for &x in &data {
        match by_residue.iter_mut().find(|(key, _)| *key == residue5(&x)) {
            Some((_, total)) => *total += x,
            None => by_residue.push((residue5(&x), x)),
        }
    }
    let foldby = bag.foldby(residue5, add, 0, |a, b| a + b, 0).portable("prop.sum_by_residue5");
    check("foldby", &foldby, client, local, &by_residue)?;
    // Partials combine in partition order, so even an order-sensitive fold is exact.
    check("fold", &bag.fold(append, concatenate, Vec::new()).portable("prop.append"), client, local, &data)?;
    let reduced = bag.reduction(abs_sum, total).portable("prop.abs_sum");
    check("reduction", &reduced, client, local, &data.iter().map(|x| x.abs()).sum::<i64>())?;
    // groupby: groups land in hashed partitions, so compare them by key; each keeps bag order.
    let mut groups: Vec<(i64, Vec<i64>)> = Vec::new();
    for &x in &data {
        match groups.iter_mut().find(|(key, _)| *key == residue5(&x)) {
            Some((_, members)) => members.push(x),
            None => groups.push((residue5(&x), vec![x])),
        }
    }
    groups.sort();
    let grouped = bag.groupby(residue5).portable("prop.residue5");
    let mut remote = grouped.compute_on(client).map_err(|e| TestCaseError::fail(format!("groupby: {e}")))?;
    let here = grouped.compute_on(local).map_err(|e| TestCaseError::fail(format!("groupby locally: {e}")))?;
    prop_assert_eq!(&remote, &here, "groupby differs between the cluster and the local scheduler");
    remote.sort();
    prop_assert_eq!(remote, groups, "groupby differs from the sequential implementation");

    // Tuples: join with an in-memory table (the nested loop), zip, starmap.
    let table: Vec<(i64, String)> =
        (0..5).flat_map(|key| [(key, format!("a{key}")), (key, format!("b{key}"))]).collect();
    let nested: Vec<((i64, String), i64)> = data
        .iter()
        .flat_map(|x| table.iter().filter(|o| o.0 == residue5(x)).map(|o| (o.clone(), *x)).collect::<Vec<_>>())
        .collect();
    let joined = bag.join(table.clone(), residue5, table_key).portable("prop.residue5");
    check("join", &joined, client, local, &nested)?;
    let zipped = bag.zip(&bag.map(times_ten).portable("prop.times_ten"));
    let pairs: Vec<(i64, i64)> = data.iter().map(|x| (*x, x * 10)).collect();
    check("zip", &zipped, client, local, &pairs)?;
    check(
        "starmap",
        &zipped.starmap(plus).portable("prop.plus"),
        client,
        local,
        &pairs.iter().map(|(a, b)| a + b).collect(),
    )?;

    // Reshaping: concat, repartition, take, random_sample.
    let b = Bag::from_partitions(others.clone()).filter(is_even).portable("prop.is_even");
    let mut both = data.clone();
    both.extend(flat(&others).into_iter().filter(is_even));
    check("concat", &Bag::concat(&[bag.clone(), b]), client, local, &both)?;
    let re = bag.map(triple).portable("prop.triple").repartition(n);
    prop_assert_eq!(re.npartitions(), n);
    check("repartition", &re, client, local, &data.iter().map(triple).collect())?;
    check("repartition().sum", &re.sum(), client, local, &data.iter().map(triple).sum::<i64>())?;
    let taken = bag.take(k, client).map_err(|e| TestCaseError::fail(format!("take: {e}")))?;
    prop_assert_eq!(&taken, &bag.take(k, local).map_err(|e| TestCaseError::fail(e.to_string()))?);
    prop_assert_eq!(taken, data.iter().copied().take(k).collect::<Vec<_>>());
    // random_sample is deterministic: the local answer is the oracle of the cluster's, and it
    // is a subsequence; 0 and 1 keep none and all.
    let sample = bag.random_sample(fraction, seed);
    let here = sample.compute_on(local).map_err(|e| TestCaseError::fail(e.to_string()))?;
    check("random_sample", &sample, client, local, &here)?;
    let mut rest = data.iter();
    prop_assert!(here.iter().all(|x| rest.any(|y| y == x)), "not a subsequence");
    check("random_sample(0)", &bag.random_sample(0.0, seed), client, local, &Vec::new())?;
    check("random_sample(1)", &bag.random_sample(1.0, seed), client, local, &data)?;
    Ok(())
}

fn main() {
    register();
    run_worker_if_requested();

    let local = LocalScheduler::threads(2).with_progress(Progress::Never);
    let exe = std::env::current_exe().unwrap();
    let cluster = LocalCluster::builder().workers(2).threads_per_worker(1).binary(exe).start().unwrap();
    assert!(!cluster.worker_pids().is_empty(), "workers are processes");
    let client = cluster.client().unwrap();

    let config = Config { cases: 32, failure_persistence: None, ..Config::default() };
    let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &[17; 32]));
    let result = runner.run(&cases(), |case| run_case(case, &client, &local));

    drop(client);
    cluster.close();
    if let Err(error) = result {
        panic!("{error}");
    }
    eprintln!(
        "32 random cases of every portable bag operation gave the sequential and local answers on worker processes"
    );
}
