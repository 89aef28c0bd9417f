//! Bags on a `LocalCluster` of worker processes give the local scheduler's answers. This test
//! program is its own worker binary (`harness = false`; `run_worker_if_requested`), so its
//! workers know the user functions it registers, as a user's program would: partitions cross
//! processes through the MessagePack codec (strings, `serde_json::Value`, a user struct),
//! every pipeline, reduction, file read and write is rebuilt from its spec, and a closure that
//! was never registered is refused before anything is sent.

use std::io::Write;
use std::path::Path;

use kiln_bag::{Bag, Compression, Json, portable, read_json, read_json_lines, read_text};
use kiln_distributed::{LocalCluster, run_worker_if_requested};
use kiln_graph::{Collection, ComputeError};
use kiln_local::{LocalScheduler, Progress};
use serde_json::{Value, json};

#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
struct Event {
    #[serde(rename = "type")]
    kind: String,
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    size: Option<u32>,
}

// Bag functions take `&T`, and these bags' elements are `String`s.
#[allow(clippy::ptr_arg)]
fn parse(line: &String) -> Result<Value, serde_json::Error> {
    serde_json::from_str(line)
}
fn is_alice(record: &Value) -> bool {
    record["name"] == "Alice"
}
fn by_count(pair: &(Value, u64)) -> u64 {
    pair.1
}
fn json_is_alice(record: &Json) -> bool {
    record["name"] == "Alice"
}
fn json_by_count(pair: &(Json, u64)) -> u64 {
    pair.1
}
fn square(x: &u64) -> u64 {
    x * x
}
fn has_size(event: &Event) -> bool {
    event.size.is_some()
}
fn is_alice_number(x: &u64) -> bool {
    x % 3 == 1
}
#[allow(clippy::ptr_arg)]
fn words(line: &String) -> Vec<String> {
    line.split_whitespace().map(str::to_string).collect()
}
fn event_kind(event: &Event) -> String {
    event.kind.clone()
}
fn residue_of_seven(x: &u64) -> u64 {
    x % 7
}
fn bigger_first(events: &[Event]) -> Vec<Event> {
    let mut events = events.to_vec();
    events.sort_by_key(|e| std::cmp::Reverse(e.size));
    events
}
fn add(acc: u64, x: &u64) -> u64 {
    acc + x
}
fn longest(best: u64, event: &Event) -> u64 {
    best.max(event.name.len() as u64 + u64::from(event.size.unwrap_or(0)))
}
fn larger(a: u64, b: &u64) -> u64 {
    a.max(*b)
}
fn sizes(events: &[Event]) -> Vec<u32> {
    events.iter().filter_map(|e| e.size).collect()
}
// `reduction`'s aggregate takes the list of partials by value.
#[allow(clippy::needless_pass_by_value)]
fn merge_sizes(lists: Vec<Vec<u32>>) -> Vec<u32> {
    lists.concat()
}
fn name_of(event: &Event) -> String {
    event.name.clone()
}
fn person_name(person: &Person) -> String {
    person.name.clone()
}
fn sized(event: &Event, kind: &String) -> String {
    format!("{kind}:{}", event.size.unwrap_or(0))
}
fn times(a: &u64, b: &u64) -> u64 {
    a * b
}
fn load(n: &u64) -> Vec<u64> {
    (0..*n).collect()
}

/// A table row joined with events by name.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Person {
    name: String,
    age: u32,
}

/// What the client and every worker register (the worker side runs this before
/// `run_worker_if_requested`).
fn register() {
    portable::register_hashable::<Event>("test.Event");
    portable::register_try_map("test.parse", parse);
    portable::register_filter("test.is_alice", is_alice);
    portable::register_key("test.by_count", by_count);
    portable::register_filter("test.json_is_alice", json_is_alice);
    portable::register_key("test.json_by_count", json_by_count);
    portable::register_map("test.square", square);
    portable::register_filter("test.is_alice_number", is_alice_number);
    portable::register_map("test.has_size", has_size);
    portable::register_flat_map("test.words", words);
    portable::register_map("test.event_kind", event_kind);
    portable::register_map_partitions("test.bigger_first", bigger_first);
    portable::register_group_key("test.event_kind", event_kind);
    portable::register_group_key("test.residue_of_seven", residue_of_seven);
    portable::register_fold("test.longest", longest, larger);
    portable::register_reduction("test.sizes", sizes, merge_sizes);
    portable::register_foldby("test.sum_by_residue", residue_of_seven, add, |a, b| a + b);
    portable::register_join("test.people", name_of, person_name);
    portable::register_starmap("test.sized", sized);
    portable::register_starmap("test.times", times);
    portable::register_text::<u32>("u32");
    portable::register_zip::<Event, String>().unwrap();
    let loader = kiln_delayed::func1("load", load).portable("test.load");
    kiln_graph::KernelRegistry::global().register_instance(loader.kernel());
}

fn write_file(path: &Path, text: &str) {
    let file = std::fs::File::create(path).unwrap();
    let mut out: Box<dyn Write> = match path.extension().and_then(|e| e.to_str()) {
        Some("gz") => Box::new(flate2::write::GzEncoder::new(file, flate2::Compression::fast())),
        Some("bz2") => Box::new(bzip2::write::BzEncoder::new(file, bzip2::Compression::fast())),
        Some("zst") => Box::new(zstd::stream::write::Encoder::new(file, 1).unwrap().auto_finish()),
        _ => Box::new(file),
    };
    out.write_all(text.as_bytes()).unwrap();
}

fn main() {
    kiln_bag::portable::ensure_registered();
    register();
    run_worker_if_requested();

    let dir = std::env::temp_dir().join(format!("kiln-bag-cluster-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let names = ["Alice", "Bob", "Carol"];
    let kinds = ["PushEvent", "WatchEvent", "ForkEvent", "PushEvent"];
    for (f, ext) in ["jsonl", "jsonl.gz", "jsonl.bz2", "jsonl.zst"].iter().enumerate() {
        let mut text = String::new();
        for i in 0..200 {
            let n = f * 200 + i;
            let size = if n % 3 == 0 { String::new() } else { format!(", \"size\": {}", n % 97) };
            text += &format!(
                "{{\"type\": \"{}\", \"name\": \"{}\"{size}, \"id\": {n}}}\n",
                kinds[(n * 7) % 4],
                names[(n * 5) % 3]
            );
        }
        write_file(&dir.join(format!("part-{f}.{ext}")), &text);
    }
    let pattern = dir.join("part-*").to_string_lossy().into_owned();

    let local = LocalScheduler::threads(2).with_progress(Progress::Never);
    let exe = std::env::current_exe().unwrap();
    let cluster = LocalCluster::builder().workers(2).binary(exe).start().unwrap();
    assert!(!cluster.worker_pids().is_empty(), "workers are processes");
    let client = cluster.client().unwrap();

    macro_rules! same {
        ($collection:expr) => {{
            let c = $collection;
            let remote = c.compute_on(&client).unwrap_or_else(|e| panic!("{}: {e}", stringify!($collection)));
            assert_eq!(remote, c.compute_on(&local).unwrap(), "{}", stringify!($collection));
            remote
        }};
    }

    // The seeds' pipelines on compressed and plain files.
    let records = read_text(&pattern).unwrap().try_map(parse).portable("test.parse");
    assert_eq!(same!(records.filter(is_alice).portable("test.is_alice").count()), 267);
    let top = same!(records.pluck("type").frequencies().topk(2, by_count).portable("test.by_count"));
    assert_eq!(top, vec![(json!("PushEvent"), 400), (json!("ForkEvent"), 200)]);
    same!(read_json_lines::<Value>(&pattern).unwrap().pluck_or("size", json!(-1)));
    same!(records.remove(is_alice).portable("test.is_alice").pluck("id").distinct().count());

    // The same with schemaless `Json` records: read, filtered and plucked on the workers,
    // travelling back through the codec as structured values.
    let records_json = read_json(&pattern).unwrap();
    assert_eq!(same!(records_json.filter(json_is_alice).portable("test.json_is_alice").count()), 267);
    let top = same!(records_json.pluck("type").frequencies().topk(2, json_by_count).portable("test.json_by_count"));
    assert_eq!(top[0], (Json::parse("\"PushEvent\"").unwrap(), 400));
    same!(records_json.pluck_or("size", Json::parse("-1").unwrap()));
    same!(records_json.pluck("name").distinct());

    // A user struct, typed reading, its own codec (a skipped field), a map over partitions.
    let events = read_json_lines::<Event>(&pattern).unwrap();
    same!(events.map_partitions(bigger_first).portable("test.bigger_first"));
    same!(events.frequencies());
    same!(events.map(event_kind).portable("test.event_kind").frequencies());
    // groupby: files read in chunks into the shuffle's first round on the workers, pieces
    // moved between them, groups travelling back through the codec.
    let by_kind = same!(events.groupby(event_kind).portable("test.event_kind"));
    assert_eq!(by_kind.iter().map(|(_, events)| events.len()).sum::<usize>(), 800);

    // Numbers: every numeric reduction; in-memory partitions travel as literals.
    let numbers = Bag::range(1000, 7).map(square).portable("test.square");
    same!(numbers.sum());
    same!(numbers.split_every(2).max());
    same!(numbers.min());
    same!(numbers.count());
    same!(numbers.repartition(3).sum());
    same!(numbers.repartition(11).random_sample(0.5, 7));
    // A shuffle in three rounds of base 2 into 5 partitions, then a reduction of the groups.
    let options = kiln_bag::GroupByOptions { npartitions: Some(5), max_branch: 2 };
    let groups = numbers.groupby_with(residue_of_seven, options).portable("test.residue_of_seven");
    let grouped = same!(groups.clone());
    // Squares modulo 7 are 0, 1, 2 or 4.
    assert_eq!(grouped.len(), 4);
    assert!(grouped.iter().all(|(k, xs)| xs.iter().all(|x| x % 7 == *k)));
    assert_eq!(grouped.iter().map(|(_, xs)| xs.len()).sum::<usize>(), 1000);
    assert_eq!(same!(groups.count()), 4);
    let (mean, std) = (same!(numbers.mean()), same!(numbers.std(1)));
    assert!(mean > 0.0 && std > 0.0);
    let lines = Bag::from_sequence(["a b", "b c d", "", "d d"].map(String::from), 3);
    same!(lines.flat_map(words).portable("test.words").frequencies());
    same!(Bag::from_sequence([true, false, true], 2).any());
    same!(Bag::from_sequence(vec![vec![1u64, 2], vec![3]], 2).flatten());

    // fold, reduction and foldby with user functions; their initial values travel with the
    // tasks. Records read from files on the workers, numbers from literals.
    let longest_event = same!(events.fold(longest, larger, 0).portable("test.longest"));
    assert!(longest_event >= 5);
    let all_sizes = same!(events.reduction(sizes, merge_sizes).portable("test.sizes"));
    assert_eq!(all_sizes.len(), 800 - 267);
    let sums = same!(numbers.foldby(residue_of_seven, add, 0, |a, b| a + b, 0).portable("test.sum_by_residue"));
    assert_eq!(sums.iter().map(|(_, s)| s).sum::<u64>(), (0..1000u64).map(|x| x * x).sum::<u64>());
    // A foldby whose initial values are not neutral: each partition and each combine starts
    // from them, the same on both schedulers.
    same!(numbers.split_every(3).foldby(residue_of_seven, add, 1, |a, b| a + b, 10).portable("test.sum_by_residue"));
    // join with an in-memory table, which travels with the tasks.
    let people = vec![
        Person { name: "Alice".into(), age: 30 },
        Person { name: "Bob".into(), age: 40 },
        Person { name: "Alice".into(), age: 31 },
    ];
    let joined = same!(events.join(people.clone(), name_of, person_name).portable("test.people"));
    // Alice (267 events) matches two people, Bob (266) one, Carol none.
    assert_eq!(joined.len(), 267 * 2 + 266);
    // zip (registered for events and strings; built in for numbers) and starmap.
    let pairs = events.zip(&events.map(event_kind).portable("test.event_kind"));
    same!(pairs.starmap(sized).portable("test.sized").frequencies());
    same!(numbers.zip(&Bag::range(1000, 7)).starmap(times).portable("test.times").sum());

    // to_delayed and from_delayed: a bag's partitions as delayed values on the cluster, a bag
    // of delayed values (a registered delayed function) computed there.
    let parts = numbers.to_delayed();
    assert_eq!(parts.len(), 7);
    for part in &parts {
        same!(part.clone());
    }
    let again = Bag::from_delayed(parts.clone());
    assert_eq!(same!(again.clone()), same!(numbers.clone()));
    same!(again.filter(is_alice_number).portable("test.is_alice_number").sum());
    let loader = kiln_delayed::func1("load", load).portable("test.load");
    let loaded = Bag::from_delayed((1..5u64).map(|n| loader.call(n)).collect());
    assert_eq!(same!(loaded.map(square).portable("test.square").frequencies()).len(), 4);
    let total = kiln_delayed::func1("sum", |v: &Vec<u64>| v.iter().sum::<u64>());
    assert!(total.call(&parts[0]).compute_on(&client).is_err(), "an unregistered delayed function is refused");

    // Writing text files from the workers, then reading them back there.
    let out = dir.join("out");
    let written = same!(records.pluck("name").to_textfiles(&out, Compression::Zstd));
    assert_eq!(written.len(), 4);
    let back = read_text(&out.join("*.zst").to_string_lossy()).unwrap();
    assert_eq!(same!(back.count()), 800);

    // A closure that was never registered is refused before anything is sent, naming the
    // operation and the registration to make (not a kernel registration: bags have their own).
    let refusal = |error: ComputeError| {
        assert!(matches!(error, ComputeError::NotPortable(_)), "{error}");
        let message = error.to_string();
        assert!(!message.contains("register_instance") && !message.contains("myapp"), "{message}");
        message
    };
    let numbers_here = Bag::range(10, 2);
    let cases: Vec<(ComputeError, &str, &str)> = vec![
        (numbers_here.map(|x| x + 1).sum().compute_on(&client).unwrap_err(), "`map`", "register_map(id, f)"),
        (numbers_here.filter(|x| x % 2 == 0).compute_on(&client).unwrap_err(), "`filter`", "register_filter"),
        (numbers_here.flat_map(|x| vec![*x]).compute_on(&client).unwrap_err(), "`flat_map`", "register_flat_map"),
        (numbers_here.topk(2, |x| *x).compute_on(&client).unwrap_err(), "`topk`", "register_key(id, key)"),
        (numbers_here.groupby(|x| x % 2).compute_on(&client).unwrap_err(), "`groupby", "register_group_key"),
        (numbers_here.fold(add, |a, b| a + b, 0).compute_on(&client).unwrap_err(), "`fold`", "register_fold"),
        (
            numbers_here
                .reduction(|p: &[u64]| p.len(), |v: Vec<usize>| v.into_iter().sum())
                .compute_on(&client)
                .unwrap_err(),
            "`reduction`",
            "register_reduction",
        ),
        (
            numbers_here.foldby(|x| x % 2, add, 0, |a, b| a + b, 0).compute_on(&client).unwrap_err(),
            "`foldby`",
            "register_foldby",
        ),
        (
            numbers_here.join(vec![(1u64, 2u64)], |x| *x, |o| o.0).compute_on(&client).unwrap_err(),
            "`join`",
            "register_join",
        ),
        (
            numbers_here.zip(&numbers_here).starmap(|a, b| a + b).compute_on(&client).unwrap_err(),
            "`starmap`",
            "register_starmap",
        ),
        (
            events.zip(&events.map(has_size).portable("test.has_size")).compute_on(&client).unwrap_err(),
            "`zip` into (cluster::Event, bool)",
            "register_zip::<T, U>()",
        ),
    ];
    for (error, operation, registration) in cases {
        let message = refusal(error);
        assert!(message.contains(operation) && message.contains(registration), "{operation}: {message}");
    }
    // A built-in operation on a type that was never registered names the element
    // registration.
    #[derive(Clone, Debug, PartialEq, Eq, Hash)]
    struct Local(u8);
    let error = Bag::from_sequence([Local(1), Local(2), Local(1)], 2).frequencies().compute_on(&client).unwrap_err();
    assert!(error.to_string().contains("Local"), "{error}");
    // Marking a reduction portable when it has no user function says so.
    let error = numbers.sum().portable("test.nothing").compute_on(&client).unwrap_err();
    assert!(error.to_string().contains("no user function"), "{error}");
    // A registered step used under a name that was never registered fails on the worker
    // with the id.
    let error = Bag::range(10, 2).map(square).portable("test.nope").count().compute_on(&client).unwrap_err();
    assert!(error.to_string().contains("kiln.bag.map/test.nope"), "{error}");

    drop(client);
    cluster.close();
    std::fs::remove_dir_all(&dir).unwrap();
    eprintln!("bag pipelines on worker processes gave the local answers");
}
