//! `groupby` through the shared staged shuffle against a sequential grouping, on random data,
//! partitionings, output partition counts and shuffle fan-outs (one and several rounds), on
//! the local scheduler with one and two threads; files read in chunks straight into the
//! shuffle; invalid options.

use std::collections::{BTreeMap, HashMap};

use kiln_bag::{Bag, GroupByOptions, read_text};
use kiln_graph::Collection;
use kiln_local::{LocalScheduler, Progress};
use proptest::prelude::*;

fn schedulers() -> [LocalScheduler; 2] {
    [
        LocalScheduler::threads(1).with_progress(Progress::Never),
        LocalScheduler::threads(2).with_progress(Progress::Never),
    ]
}

/// Each key's elements in bag order, and the position of each key's first element.
fn sequential<T: Clone, K: Ord + Clone + std::hash::Hash>(
    items: &[T],
    key: impl Fn(&T) -> K,
) -> (BTreeMap<K, Vec<T>>, HashMap<K, usize>) {
    let mut groups: BTreeMap<K, Vec<T>> = BTreeMap::new();
    let mut first: HashMap<K, usize> = HashMap::new();
    for (i, x) in items.iter().enumerate() {
        let k = key(x);
        first.entry(k.clone()).or_insert(i);
        groups.entry(k).or_default().push(x.clone());
    }
    (groups, first)
}

/// Checks a grouped bag partition by partition: every key in exactly one partition, its
/// elements those of the sequential grouping in bag order, and the keys of each partition in
/// order of their first element.
fn check_groups<T, K>(
    grouped: &Bag<(K, Vec<T>)>,
    expected: &BTreeMap<K, Vec<T>>,
    first: &HashMap<K, usize>,
    scheduler: &LocalScheduler,
) -> Result<(), TestCaseError>
where
    T: kiln_bag::Element + PartialEq + std::fmt::Debug,
    K: kiln_bag::Element + Ord + std::hash::Hash + std::fmt::Debug,
{
    let mut seen: BTreeMap<K, Vec<T>> = BTreeMap::new();
    for part in grouped.to_delayed() {
        let groups = part.compute_on(scheduler).unwrap();
        let order: Vec<usize> = groups.iter().map(|(k, _)| first[k]).collect();
        prop_assert!(order.windows(2).all(|w| w[0] < w[1]), "keys out of first-seen order: {:?}", order);
        for (k, items) in groups {
            prop_assert!(seen.insert(k.clone(), items).is_none(), "key {:?} in two partitions", k);
        }
    }
    prop_assert_eq!(&seen, expected);
    // The whole bag gives the same groups.
    let all: BTreeMap<K, Vec<T>> = grouped.compute_on(scheduler).unwrap().into_iter().collect();
    prop_assert_eq!(&all, expected);
    Ok(())
}

fn config() -> ProptestConfig {
    ProptestConfig { cases: 40, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn groupby_matches_a_sequential_grouping(
        parts in prop::collection::vec(prop::collection::vec(-40i64..40, 0..15), 1..14),
        modulus in 1i64..12,
        npartitions in prop::option::of(1usize..12),
        max_branch in 2usize..6,
    ) {
        let bag = Bag::from_partitions(parts.clone());
        let data: Vec<i64> = parts.concat();
        let options = GroupByOptions { npartitions, max_branch };
        let grouped = bag.groupby_with(move |x| x.rem_euclid(modulus), options);
        prop_assert_eq!(grouped.npartitions(), npartitions.unwrap_or(parts.len()));
        let (expected, first) = sequential(&data, |x| x.rem_euclid(modulus));

        // Steps before the shuffle fuse with its first round; steps after it with the groups.
        let mapped = bag.filter(|x| x % 3 != 0).map(|x| x * 2).groupby_with(move |x| x.rem_euclid(modulus), options);
        let kept: Vec<i64> = data.iter().filter(|x| *x % 3 != 0).map(|x| x * 2).collect();
        let (expected_mapped, first_mapped) = sequential(&kept, |x| x.rem_euclid(modulus));
        let sizes = grouped.map(|(k, items)| (*k, items.len() as u64)).frequencies();
        for s in schedulers() {
            check_groups(&grouped, &expected, &first, &s)?;
            check_groups(&mapped, &expected_mapped, &first_mapped, &s)?;
            prop_assert_eq!(grouped.count().compute_on(&s).unwrap(), expected.len() as u64);
            let mut got = sizes.compute_on(&s).unwrap();
            got.sort();
            let want: Vec<((i64, u64), u64)> = expected.iter().map(|(k, v)| ((*k, v.len() as u64), 1)).collect();
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn groupby_of_strings_matches_a_sequential_grouping(
        words in prop::collection::vec("[a-d]{0,3}", 0..60),
        npartitions in 1usize..20,
        max_branch in 2usize..4,
    ) {
        let bag = Bag::from_sequence(words.clone(), 7);
        let grouped = bag.groupby_with(|w: &String| w.len(), GroupByOptions { npartitions: Some(npartitions), max_branch });
        let (expected, first) = sequential(&words, |w| w.len());
        for s in schedulers() {
            check_groups(&grouped, &expected, &first, &s)?;
        }
    }
}

#[test]
fn files_stream_into_the_shuffle_in_chunks() {
    let dir = std::env::temp_dir().join(format!("kiln-bag-groupby-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut lines: Vec<String> = Vec::new();
    for f in 0..5 {
        let text: String = (0..97).map(|i| format!("user{} {}\n", (f * 97 + i) % 13, f * 97 + i)).collect();
        lines.extend(text.lines().map(str::to_string));
        std::fs::write(dir.join(format!("part-{f}.txt")), text).unwrap();
    }
    let pattern = dir.join("part-*.txt").to_string_lossy().into_owned();
    let user = |line: &String| line.split(' ').next().unwrap_or_default().to_string();
    let (expected, first) = sequential(&lines, user);
    for chunk in [1, 10, 1000] {
        let bag = read_text(&pattern).unwrap().chunk_size(chunk);
        let grouped = bag.groupby_with(user, GroupByOptions { npartitions: Some(3), max_branch: 2 });
        for s in schedulers() {
            check_groups(&grouped, &expected, &first, &s).unwrap();
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_shuffle_is_staged_beyond_max_branch() {
    let bag = Bag::range(1000, 16);
    let one_round = bag.groupby_with(|x| x % 10, GroupByOptions { npartitions: None, max_branch: 16 });
    let two_rounds = bag.groupby_with(|x| x % 10, GroupByOptions { npartitions: None, max_branch: 4 });
    let selects = |b: &Bag<(u64, Vec<u64>)>| {
        let mut builder = kiln_graph::GraphBuilder::new();
        b.add_to(&mut builder).unwrap();
        let graph = builder.build().unwrap();
        graph.keys().iter().filter(|k| k.name().starts_with("groupby-select-")).count()
    };
    // One round: 16 × 16 pieces; two rounds of base 4: 2 × 16 × 4.
    assert_eq!(selects(&one_round), 256);
    assert_eq!(selects(&two_rounds), 128);
    let s = LocalScheduler::threads(2).with_progress(Progress::Never);
    let mut a = one_round.compute_on(&s).unwrap();
    let mut b = two_rounds.compute_on(&s).unwrap();
    a.sort();
    b.sort();
    assert_eq!(a, b);
    assert_eq!(a.len(), 10);
    assert!(a.iter().all(|(k, items)| items.len() == 100 && items.iter().all(|x| x % 10 == *k)));
}

#[test]
fn bad_options_are_clear_errors() {
    let s = LocalScheduler::threads(1).with_progress(Progress::Never);
    let bag = Bag::range(10, 2);
    let error = bag.groupby_with(|x| *x, GroupByOptions { npartitions: Some(0), max_branch: 4 }).compute_on(&s);
    assert!(error.unwrap_err().to_string().contains("groupby: the number of partitions must be at least 1"));
    let error = bag.groupby_with(|x| *x, GroupByOptions { npartitions: None, max_branch: 1 }).compute_on(&s);
    assert!(error.unwrap_err().to_string().contains("max_branch must be at least 2, got 1"));
    // A failing step before the shuffle fails the computation with its message.
    let error = bag.try_map(|x| if *x == 7 { Err("seven") } else { Ok(*x) }).groupby(|x| x % 2).compute_on(&s);
    assert!(error.unwrap_err().to_string().contains("seven"));
}
