//! `Json` records against serde_json on random JSON (nested objects and arrays, escapes,
//! numbers at the edges, different spellings of the same value), and `read_json` on files:
//! the seeds' pipelines against a sequential computation, malformed lines, `pluck` errors.

mod common;

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

use common::{TempDir, sched, write};
use kiln_bag::{BadLines, Bag, BagError, Json, JsonKind, OnBadLine, PathSegment, read_json, read_json_with, read_text};
use kiln_graph::Collection;
use proptest::prelude::*;
use serde_json::{Map, Value};

/// How a value is spelled: insignificant whitespace, `\u` escapes for every non-ASCII
/// character (surrogate pairs beyond the BMP) and `\/`, object keys in reverse order.
#[derive(Clone, Copy, Debug)]
struct Style {
    spaced: bool,
    escaped: bool,
    reversed: bool,
}

fn render(value: &Value, style: Style) -> String {
    let mut out = String::new();
    render_into(value, style, &mut out);
    out
}

fn render_into(value: &Value, style: Style, out: &mut String) {
    let ws = if style.spaced { " \n\t " } else { "" };
    match value {
        Value::Null | Value::Bool(_) | Value::Number(_) => out.push_str(&value.to_string()),
        Value::String(s) => render_str(s, style, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(ws);
                render_into(item, style, out);
                out.push_str(ws);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            let mut entries: Vec<_> = map.iter().collect();
            if style.reversed {
                entries.reverse();
            }
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(ws);
                render_str(k, style, out);
                out.push_str(ws);
                out.push(':');
                out.push_str(ws);
                render_into(v, style, out);
            }
            out.push_str(ws);
            out.push('}');
        }
    }
}

fn render_str(s: &str, style: Style, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '/' if style.escaped => out.push_str("\\/"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c if style.escaped && !c.is_ascii() => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04X}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        prop::sample::select(vec![0.0, -0.0, 1.0, 5e-324, 1.7976931348623157e308, -1e-300, 0.1]).prop_map(Value::from),
        prop::sample::select(vec![u64::MAX, 0, 1, i64::MAX as u64 + 1]).prop_map(Value::from),
        Just(Value::from(i64::MIN)),
    ]
}

fn text() -> impl Strategy<Value = String> {
    "[a-c\"\\\\/é\u{1}\u{1f}\u{7f}😀\u{2028} ]{0,6}"
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf =
        prop_oneof![Just(Value::Null), any::<bool>().prop_map(Value::Bool), number(), text().prop_map(Value::String)];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((text(), inner), 0..6)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

/// Values from a small domain, so that random pairs are often equal.
fn small_value() -> impl Strategy<Value = Value> {
    let leaf = prop::sample::select(vec![
        Value::Null,
        Value::Bool(true),
        Value::from(0u64),
        Value::from(0.0),
        Value::from(-1),
        Value::from("a"),
        Value::from("é"),
    ]);
    leaf.prop_recursive(2, 8, 2, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..2).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(vec!["a", "b"]), inner), 0..3)
                .prop_map(|e| Value::Object(e.into_iter().map(|(k, v)| (k.to_string(), v)).collect::<Map<_, _>>())),
        ]
    })
}

fn style() -> impl Strategy<Value = Style> {
    (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(spaced, escaped, reversed)| Style {
        spaced,
        escaped,
        reversed,
    })
}

fn hash_of(json: &Json) -> u64 {
    // One fixed state: equal values must hash equally under the same hasher.
    static STATE: std::sync::OnceLock<RandomState> = std::sync::OnceLock::new();
    STATE.get_or_init(RandomState::new).hash_one(json)
}

/// Every accessor of `json` agrees with serde_json's reading of the same text, all the way down.
fn agrees(json: &kiln_bag::JsonText, value: &Value) {
    assert_eq!(json.to_value().unwrap(), *value, "to_value of {json}");
    assert!(*json == *value);
    match value {
        Value::Null => assert_eq!(json.kind(), JsonKind::Null),
        Value::Bool(b) => assert_eq!(json.as_bool(), Some(*b)),
        Value::Number(n) => {
            assert_eq!(json.as_number().as_ref(), Some(n));
            assert_eq!((json.as_u64(), json.as_i64(), json.as_f64()), (n.as_u64(), n.as_i64(), n.as_f64()));
        }
        Value::String(s) => {
            assert_eq!(json.as_str().as_deref(), Some(s.as_str()));
            assert!(*json == *s.as_str());
        }
        Value::Array(items) => {
            assert_eq!(json.as_array().unwrap().count(), items.len());
            for (i, item) in items.iter().enumerate() {
                agrees(&json[i], item);
            }
            assert!(json[items.len()].is_null());
        }
        Value::Object(map) => {
            for (k, v) in map {
                agrees(json.get(k).unwrap_or_else(|| panic!("key {k:?} in {json}")), v);
            }
            assert!(json.get("not a key of these").is_none());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn every_spelling_reads_as_serde_json_reads_it(value in json_value(), a in style(), b in style()) {
        let (text_a, text_b) = (render(&value, a), render(&value, b));
        let parsed: Value = serde_json::from_str(&text_a).unwrap();
        let (json_a, json_b) = (Json::parse(&text_a).unwrap(), Json::parse(&format!(" {text_b}\r\n")).unwrap());
        agrees(&json_a, &parsed);
        agrees(&json_b, &parsed);
        prop_assert_eq!(&json_a, &json_b);
        prop_assert_eq!(hash_of(&json_a), hash_of(&json_b));
        // serde_json's float parsing is not exactly round-trip (its `float_roundtrip` feature is
        // off), so a value rebuilt from a `Value` compares with the `Value`'s own spelling.
        let rebuilt = Json::from_value(&parsed);
        prop_assert_eq!(&rebuilt, &Json::parse(&parsed.to_string()).unwrap());
        // Through the serde codecs, as partitions travel between processes.
        let packed = rmp_serde::to_vec_named(&json_a).unwrap();
        prop_assert_eq!(rmp_serde::from_slice::<Json>(&packed).unwrap(), rebuilt);
    }

    #[test]
    fn equality_and_hashing_follow_serde_json(a in small_value(), b in small_value(), sa in style(), sb in style()) {
        let (ja, jb) = (Json::parse(&render(&a, sa)).unwrap(), Json::parse(&render(&b, sb)).unwrap());
        prop_assert_eq!(ja == jb, a == b, "{} vs {}", ja, jb);
        if a == b {
            prop_assert_eq!(hash_of(&ja), hash_of(&jb));
        }
    }

    #[test]
    fn damaged_text_is_refused_exactly_when_serde_json_refuses_it(
        value in json_value(),
        at in any::<prop::sample::Index>(),
        insert in prop::sample::select(vec!["", "{", "}", "[", "]", ",", ":", "\"", "\\", "x", "1", "-", ".", "e", " ", "\\u12"]),
        truncate in any::<bool>(),
    ) {
        let text = value.to_string();
        let mut cut = at.index(text.len() + 1);
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        let damaged = if truncate { text[..cut].to_string() } else { format!("{}{insert}{}", &text[..cut], &text[cut..]) };
        let expected = serde_json::from_str::<Value>(&damaged);
        let got = Json::parse(&damaged);
        prop_assert_eq!(got.is_ok(), expected.is_ok(), "{:?}: {:?}", damaged, expected);
        if let (Ok(json), Ok(value)) = (got, expected) {
            agrees(&json, &value);
        }
    }
}

#[test]
fn repeated_keys_keep_the_last_as_serde_json_does() {
    let json = Json::parse(r#"{"a": 1, "b": [true], "a": {"c": null}}"#).unwrap();
    assert_eq!(json["a"].to_value().unwrap(), serde_json::json!({"c": null}));
    assert_eq!(json, Json::parse(r#"{"b":[true],"a":{"c":null}}"#).unwrap());
    assert_eq!(json.as_object().unwrap().count(), 3);
}

#[test]
fn numbers_out_of_range_and_deep_nesting_are_refused_like_serde_json() {
    for text in ["1e400", "-1e400", "[1e999]", "01", "1.", "-", "NaN", "\"\\ud800\"", "\"\\uDC00x\""] {
        assert_eq!(Json::parse(text).is_ok(), serde_json::from_str::<Value>(text).is_ok(), "{text}");
    }
    for depth in [127, 128, 129, 2000] {
        let text = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        assert_eq!(Json::parse(&text).is_ok(), serde_json::from_str::<Value>(&text).is_ok(), "depth {depth}");
    }
}

const NAMES: [&str; 4] = ["Alice", "Bob", "Al\\u0069ce", "Carol"];

/// Files of event records (every other one gzip) and the records, as serde_json reads them.
fn event_files(dir: &TempDir, files: &[Vec<(u8, u8)>]) -> Vec<Value> {
    let mut all = Vec::new();
    for (f, records) in files.iter().enumerate() {
        let mut text = String::new();
        for (i, (name, kind)) in records.iter().enumerate() {
            let line = format!(
                r#"{{"id": "{f}-{i}", "name": "{}", "actor": {{"login": "u{kind}"}}, "type": "T{}", "n": {i}}}"#,
                NAMES[*name as usize % NAMES.len()],
                kind % 5
            );
            all.push(serde_json::from_str(&line).unwrap());
            text.push_str(&line);
            text.push('\n');
            if i % 7 == 3 {
                text.push_str("  \n");
            }
        }
        let name = if f % 2 == 1 { format!("e{f}.json.gz") } else { format!("e{f}.json") };
        write(&dir.0.join(name), &text);
    }
    all
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn the_seeds_pipelines_match_a_sequential_computation(
        files in prop::collection::vec(prop::collection::vec((any::<u8>(), any::<u8>()), 0..40), 1..5),
        chunk in 1usize..50,
    ) {
        let dir = TempDir::new("json");
        let records = event_files(&dir, &files);
        let alice = records.iter().filter(|r| r["name"] == "Alice").count() as u64;
        let mut counts: HashMap<String, u64> = HashMap::new();
        for r in &records {
            *counts.entry(r["type"].as_str().unwrap().to_string()).or_default() += 1;
        }
        let mut top: Vec<(String, u64)> = counts.into_iter().collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        top.truncate(3);

        let from_lines = read_text(&dir.pattern("e*")).unwrap().chunk_size(chunk)
            .filter(|l| !l.trim().is_empty()).try_map(|l| Json::parse(l));
        let from_files = read_json(&dir.pattern("e*")).unwrap().chunk_size(chunk);
        for bag in [from_lines, from_files] {
            prop_assert_eq!(bag.filter(|r| r["name"] == "Alice").count().compute_on(&sched()).unwrap(), alice);
            let mut got: Vec<(String, u64)> = bag.pluck("type").frequencies().topk(3, |(_, n)| *n)
                .compute_on(&sched()).unwrap().into_iter()
                .map(|(k, n)| (k.as_str().unwrap().into_owned(), n)).collect();
            got.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            // Ties at the cut may pick different keys: compare the counts, then the keys above it.
            prop_assert_eq!(got.iter().map(|p| p.1).collect::<Vec<_>>(), top.iter().map(|p| p.1).collect::<Vec<_>>());
            let cut = top.last().map_or(0, |p| p.1);
            prop_assert_eq!(got.iter().filter(|p| p.1 > cut).collect::<Vec<_>>(), top.iter().filter(|p| p.1 > cut).collect::<Vec<_>>());
            let logins: Vec<Value> = bag.pluck_path(&["actor".into(), "login".into()]).compute_on(&sched()).unwrap()
                .iter().map(|j| j.to_value().unwrap()).collect();
            prop_assert_eq!(logins, records.iter().map(|r| r["actor"]["login"].clone()).collect::<Vec<_>>());
        }
    }
}

#[test]
fn malformed_lines_name_the_file_and_line_or_are_skipped_and_counted() {
    let dir = TempDir::new("json-bad");
    write(&dir.0.join("a.json"), "{\"n\": 1}\n{\"n\": 2}\n");
    write(&dir.0.join("b.json.gz"), "{\"n\": 3}\n\n{\"n\": 4,}\n{\"n\": 1e999}\n{\"n\": 5}\n");
    let error = read_json(&dir.pattern("*.json*")).unwrap().count().compute_on(&sched()).unwrap_err().to_string();
    assert!(error.contains("b.json.gz, line 3"), "{error}");

    let skipped = BadLines::new();
    let bag = read_json_with(&dir.pattern("*.json*"), OnBadLine::Skip(skipped.clone())).unwrap();
    let numbers: Vec<u64> = bag.pluck("n").compute_on(&sched()).unwrap().iter().map(|n| n.as_u64().unwrap()).collect();
    assert_eq!(numbers, [1, 2, 3, 5]);
    assert_eq!(skipped.count(), 2);
    assert_eq!(skipped.lines().iter().map(|l| l.line).collect::<Vec<_>>(), [3, 4]);
    assert!(skipped.lines()[1].message.contains("number out of range"), "{:?}", skipped.lines());
}

#[test]
fn pluck_names_missing_keys_and_wrong_kinds_or_gives_the_default() {
    let records =
        Bag::from_sequence([r#"{"a": {"b": [1, 2]}}"#, r#"{"a": 3}"#, r#"{"c": 1}"#], 2).try_map(|l| Json::parse(l));
    let missing = records.pluck("a").compute_on(&sched()).unwrap_err().to_string();
    assert!(missing.contains(r#"no key "a""#), "{missing}");
    let defaulted = records.pluck_or("a", Json::parse("null").unwrap()).compute_on(&sched()).unwrap();
    assert_eq!(defaulted.iter().map(|j| j.to_string()).collect::<Vec<_>>(), [r#"{"b": [1, 2]}"#, "3", "null"]);
    let path = [PathSegment::key("a"), PathSegment::key("b"), 1.into()];
    let wrong = records.pluck_path(&path).compute_on(&sched()).unwrap_err().to_string();
    assert!(wrong.contains(r#"cannot take key "b" from a JSON number"#), "{wrong}");
    let first = Bag::from_sequence([r#"[[1, 2]]"#], 1).try_map(|l| Json::parse(l));
    assert_eq!(first.pluck_path(&[0.into(), 1.into()]).compute_on(&sched()).unwrap()[0].as_u64(), Some(2));
    let past = first.pluck_index(1).compute_on(&sched()).unwrap_err().to_string();
    assert!(past.contains('1'), "{past}");
    assert!(matches!(
        Bag::from_sequence([1u8], 1).map(|_| Json::parse("{}").unwrap()).pluck_path(&[]).count().compute_on(&sched()),
        Err(e) if e.to_string().contains(&BagError::EmptyPath.to_string())
    ));
}

/// Files are read in blocks of about 128 KiB, split into lines within each block: lines that
/// cross block ends, lines longer than a block, `\r\n` endings, blank lines and a last line
/// without its newline read as line-by-line reading would, in every format, and a line that is
/// not UTF-8 far into a file is named by its number.
#[test]
fn records_across_block_ends_read_as_line_by_line() {
    let dir = TempDir::new("json-blocks");
    let mut text = String::new();
    let mut expected = Vec::new();
    for i in 0..6000usize {
        // Some lines longer than a block (about 300 KB), the rest of many lengths.
        let pad = if i % 1500 == 700 { 300_000 } else { (i * 37) % 200 };
        let line = format!(r#"{{"n": {i}, "pad": "{}", "name": "{}"}}"#, "x".repeat(pad), NAMES[i % 2]);
        expected.push(serde_json::from_str::<Value>(&line).unwrap());
        text.push_str(&line);
        text.push_str(match i % 5 {
            0 => "\r\n",
            1 => "\n\n",
            _ => "\n",
        });
    }
    text.pop(); // No newline after the last line.
    for name in ["a.json", "a.json.gz"] {
        write(&dir.0.join(name), &text);
        let bag = read_json(&dir.pattern(name)).unwrap();
        let got: Vec<Value> = bag.compute_on(&sched()).unwrap().iter().map(|j| j.to_value().unwrap()).collect();
        assert_eq!(got.len(), expected.len(), "{name}");
        assert!(got == expected, "{name}");
        let lines = read_text(&dir.pattern(name)).unwrap().compute_on(&sched()).unwrap();
        assert_eq!(lines.len(), text.split('\n').count(), "{name}");
        assert_eq!(lines.iter().filter(|l| l.ends_with('\r')).count(), 0, "{name}");
        std::fs::remove_file(dir.0.join(name)).unwrap();
    }

    let mut bytes = text.into_bytes();
    let line_of = |bytes: &[u8], at: usize| bytes[..at].iter().filter(|&&b| b == b'\n').count() as u64 + 1;
    let at = bytes.len() - 1000;
    bytes[at] = 0xff;
    let line = line_of(&bytes, at);
    std::fs::write(dir.0.join("bad.json"), &bytes).unwrap();
    let error = read_json(&dir.pattern("bad.json")).unwrap().count().compute_on(&sched()).unwrap_err().to_string();
    assert!(error.contains(&format!("bad.json, line {line}")) && error.contains("UTF-8"), "{error}");
}
