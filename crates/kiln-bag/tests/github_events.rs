//! The seeds' example end to end on generated GitHub-event-like JSON lines (half the files
//! gzip): `read_text(..).map(parse).filter(name == "Alice").count()` and
//! `pluck("type").frequencies().topk(10)`, checked against one sequential pass; the same through
//! the schemaless reader (`read_json`) and the typed one (`read_json_lines::<Event>`).

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use kiln_bag::{Bag, Json, read_json, read_json_lines, read_text};
use kiln_graph::Collection;
use kiln_local::{LocalScheduler, Progress};
use serde_json::{Value, json};

/// A small deterministic generator (SplitMix64), so the data set depends only on the seed.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

const NAMES: &[&str] = &["Alice", "Bob", "Carol", "Dan", "Erin", "Frank", "Grace", "Heidi"];
const TYPES: &[&str] = &[
    "PushEvent",
    "PushEvent",
    "PushEvent",
    "WatchEvent",
    "WatchEvent",
    "CreateEvent",
    "PullRequestEvent",
    "IssuesEvent",
    "IssueCommentEvent",
    "ForkEvent",
    "DeleteEvent",
    "ReleaseEvent",
    "GollumEvent",
    "MemberEvent",
];

/// `files` files of `per_file` events each; odd-numbered files gzip.
fn generate(dir: &Path, seed: u64, files: usize, per_file: usize) {
    let mut rng = SplitMix(seed);
    for f in 0..files {
        let mut text = String::new();
        for i in 0..per_file {
            let event = json!({
                "id": (f * per_file + i).to_string(),
                "type": rng.pick(TYPES),
                "name": rng.pick(NAMES),
                "actor": {"login": format!("user{}", rng.next() % 500)},
                "repo": {"name": format!("org{}/repo{}", rng.next() % 20, rng.next() % 50)},
                "payload": {"size": rng.next() % 10, "public": rng.next().is_multiple_of(2)},
            });
            text.push_str(&event.to_string());
            text.push('\n');
        }
        if !f.is_multiple_of(2) {
            let file = std::fs::File::create(dir.join(format!("events-{f:02}.json.gz"))).unwrap();
            let mut encoder = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
            encoder.write_all(text.as_bytes()).unwrap();
            encoder.finish().unwrap();
        } else {
            std::fs::write(dir.join(format!("events-{f:02}.json")), text).unwrap();
        }
    }
}

#[test]
fn the_seed_pipelines_match_a_sequential_pass() {
    let dir = std::env::temp_dir().join(format!("kiln-bag-github-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    generate(&dir, 2015, 6, 2_000);
    let pattern = dir.join("events-*.json*");
    let pattern = pattern.to_str().unwrap();

    // The sequential reference: every file, every line, one pass.
    let mut paths: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    paths.sort();
    let (mut alice, mut types, mut order) = (0u64, HashMap::<String, u64>::new(), Vec::<String>::new());
    for path in &paths {
        let text = if path.extension().unwrap() == "gz" {
            let mut out = String::new();
            std::io::Read::read_to_string(
                &mut flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap()),
                &mut out,
            )
            .unwrap();
            out
        } else {
            std::fs::read_to_string(path).unwrap()
        };
        for line in text.lines() {
            let record: Value = serde_json::from_str(line).unwrap();
            alice += u64::from(record["name"] == "Alice");
            let kind = record["type"].as_str().unwrap().to_string();
            if !types.contains_key(&kind) {
                order.push(kind.clone());
            }
            *types.entry(kind).or_default() += 1;
        }
    }
    let mut top: Vec<(Value, u64)> = order.iter().map(|t| (json!(t), types[t])).collect();
    top.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    top.truncate(10);
    assert!(alice > 0 && top.len() == 10);

    for threads in [1, 2] {
        let s = LocalScheduler::threads(threads).with_progress(Progress::Never);
        let records: Bag<Value> = read_text(pattern).unwrap().try_map(|line| serde_json::from_str::<Value>(line));
        assert_eq!(records.npartitions(), 6);
        assert_eq!(records.filter(|r| r["name"] == "Alice").count().compute_on(&s).unwrap(), alice);
        assert_eq!(records.pluck("type").frequencies().topk(10, |(_, n)| *n).compute_on(&s).unwrap(), top);

        // The same through the schemaless reader.
        let json: Bag<Json> = read_json(pattern).unwrap();
        assert_eq!(json.filter(|r| r["name"] == "Alice").count().compute_on(&s).unwrap(), alice);
        let json_top: Vec<(Value, u64)> = json
            .pluck("type")
            .frequencies()
            .topk(10, |(_, n)| *n)
            .compute_on(&s)
            .unwrap()
            .into_iter()
            .map(|(t, n)| (t.to_value().unwrap(), n))
            .collect();
        assert_eq!(json_top, top);

        // The same through the typed reader.
        #[derive(serde::Deserialize, Clone)]
        struct Event {
            #[serde(rename = "type")]
            kind: String,
            name: String,
        }
        let typed = read_json_lines::<Event>(pattern).unwrap();
        assert_eq!(typed.filter(|e| e.name == "Alice").count().compute_on(&s).unwrap(), alice);
        let by_type = typed
            .foldby(|e| e.kind.clone(), |n, _| n + 1, 0u64, |a, b| a + b, 0)
            .topk(10, |(_, n)| *n)
            .compute_on(&s)
            .unwrap();
        let expected: Vec<(String, u64)> = top.iter().map(|(t, n)| (t.as_str().unwrap().to_string(), *n)).collect();
        assert_eq!(by_type, expected);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
