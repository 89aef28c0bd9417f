//! File partitions read in chunks, fused with the steps and the reduction's partial: any chunk
//! size gives the answer of the materialised path (the same lines as in-memory partitions), the
//! graph keeps one task per file, and errors still name the file and line.

mod common;

use common::{TempDir, sched, write};

use kiln_bag::{Bag, BagError, read_json_lines, read_text, read_text_blocks};
use kiln_graph::Collection;
use kiln_graph::collection::graph_of;
use proptest::prelude::*;
use serde_json::{Value, json};

/// A record from a small random tuple: a name, a kind and a number.
fn record((name, kind, n): &(u8, u8, i64)) -> Value {
    let name = ["Alice", "Bob", "Carol"][*name as usize % 3];
    json!({"name": name, "type": format!("T{}", kind % 5), "n": n})
}

/// Files of records (every other one gzip), written to `dir`; returns each file's lines.
fn write_files(dir: &TempDir, files: &[Vec<(u8, u8, i64)>]) -> Vec<Vec<String>> {
    files
        .iter()
        .enumerate()
        .map(|(i, records)| {
            let lines: Vec<String> = records.iter().map(|r| record(r).to_string()).collect();
            let mut text = lines.join("\n");
            if !lines.is_empty() && i % 3 != 2 {
                text.push('\n');
            }
            let name = if i % 2 == 1 { format!("f{i:02}.json.gz") } else { format!("f{i:02}.json") };
            write(&dir.0.join(name), &text);
            lines
        })
        .collect()
}

// Bag functions take `&T`, and these bags' elements are `String`s.
#[allow(clippy::ptr_arg)]
fn parse(line: &String) -> Result<Value, serde_json::Error> {
    serde_json::from_str(line)
}

fn files() -> impl Strategy<Value = Vec<Vec<(u8, u8, i64)>>> {
    prop::collection::vec(prop::collection::vec((0u8..3, 0u8..7, -40i64..40), 0..40), 1..5)
}

fn config() -> ProptestConfig {
    ProptestConfig { cases: 24, ..ProptestConfig::default() }
}

/// Runs `pipeline` on the files read in chunks of `chunk` lines and on the same lines as
/// in-memory partitions (the materialised path), and checks they agree.
fn same<R: PartialEq + std::fmt::Debug>(
    streamed: &Bag<String>,
    materialised: &Bag<String>,
    pipeline: impl Fn(&Bag<String>) -> Result<R, kiln_graph::ComputeError>,
) {
    let expected = pipeline(materialised).unwrap();
    assert_eq!(pipeline(streamed).unwrap(), expected);
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_chunk_size_gives_the_materialised_answer(files in files(), chunk in 1usize..12, k in 0usize..6, seed in any::<u64>()) {
        let dir = TempDir::new("prop");
        let lines = write_files(&dir, &files);
        let streamed = read_text(&dir.pattern("f*")).unwrap().chunk_size(chunk);
        let materialised = Bag::from_partitions(lines.clone());
        let s = sched();
        let records = |b: &Bag<String>| b.try_map(parse);
        same(&streamed, &materialised, |b| b.count().compute_on(&s));
        same(&streamed, &materialised, |b| records(b).filter(|r| r["name"] == "Alice").count().compute_on(&s));
        same(&streamed, &materialised, |b| records(b).pluck("type").frequencies().compute_on(&s));
        same(&streamed, &materialised, |b| {
            records(b).pluck("type").frequencies().topk(k, |(_, n)| *n).compute_on(&s)
        });
        same(&streamed, &materialised, |b| records(b).pluck("name").distinct().compute_on(&s));
        let numbers = |b: &Bag<String>| records(b).map(|r| r["n"].as_i64().unwrap());
        same(&streamed, &materialised, |b| numbers(b).sum().compute_on(&s));
        same(&streamed, &materialised, |b| numbers(b).var(0).compute_on(&s).map(f64::to_bits).or(Ok(0)));
        same(&streamed, &materialised, |b| numbers(b).max().compute_on(&s).or(Ok(i64::MIN)));
        same(&streamed, &materialised, |b| numbers(b).map(|n| *n > 30).any().compute_on(&s));
        same(&streamed, &materialised, |b| numbers(b).topk(k, |n| n.abs()).compute_on(&s));
        same(&streamed, &materialised, |b| {
            records(b)
                .foldby(|r| r["type"].as_str().unwrap().to_string(), |acc, r| acc * 3 + r["n"].as_i64().unwrap(), 1, |a, b| a + b, 0)
                .compute_on(&s)
        });
        // `fold` continues its accumulator across chunks, in element order.
        same(&streamed, &materialised, |b| {
            numbers(b).fold(|acc: Vec<i64>, n| { let mut acc = acc; acc.push(*n); acc }, |mut a, b| { a.extend(b); a }, Vec::new()).compute_on(&s)
        });
        // Without a fold the steps' chunks are concatenated, and steps that need the whole
        // partition run after.
        same(&streamed, &materialised, |b| {
            records(b).flat_map(|r| vec![r["n"].clone(); (r["n"].as_i64().unwrap().unsigned_abs() % 3) as usize]).compute_on(&s)
        });
        same(&streamed, &materialised, |b| {
            numbers(b).map_partitions(|part| vec![part.len() as i64, part.iter().sum()]).compute_on(&s)
        });
        same(&streamed, &materialised, |b| numbers(b).random_sample(0.5, seed).compute_on(&s));
        same(&streamed, &materialised, |b| {
            numbers(b).reduction(|part| part.first().copied(), |firsts| firsts.into_iter().flatten().next()).compute_on(&s)
        });
        // Typed records read in chunks too, with no step before the reduction.
        let typed = read_json_lines::<Value>(&dir.pattern("f*")).unwrap().chunk_size(chunk);
        prop_assert_eq!(typed.count().compute_on(&s).unwrap(), lines.iter().map(Vec::len).sum::<usize>() as u64);
        prop_assert_eq!(
            typed.pluck("name").compute_on(&s).unwrap(),
            records(&materialised).pluck("name").compute_on(&s).unwrap()
        );
    }

    #[test]
    fn blocks_read_in_chunks_match_whole_blocks(files in files(), chunk in 1usize..8, blocksize in 1u64..200) {
        let dir = TempDir::new("blocks");
        let lines = write_files(&dir, &files);
        let pattern = dir.pattern("f*");
        let blocks = read_text_blocks(&pattern, blocksize).unwrap();
        let s = sched();
        let whole: Vec<String> = blocks.compute_on(&s).unwrap();
        prop_assert_eq!(&whole, &lines.concat());
        let streamed = blocks.chunk_size(chunk).map(|l| l.len()).compute_on(&s).unwrap();
        prop_assert_eq!(streamed, whole.iter().map(String::len).collect::<Vec<_>>());
        let counted = blocks.chunk_size(chunk).filter(|l| l.contains("Bob")).count().compute_on(&s).unwrap();
        prop_assert_eq!(counted, whole.iter().filter(|l| l.contains("Bob")).count() as u64);
    }
}

#[test]
fn a_fused_read_is_one_task_per_file_before_the_tree() {
    let dir = TempDir::new("shape");
    write_files(&dir, &[vec![(0, 0, 1)], vec![(1, 1, 2)], vec![], vec![(2, 2, 3)]]);
    let lines = read_text(&dir.pattern("f*")).unwrap();
    // 4 chunked reads and the final combine: no task holds a whole file's lines.
    let count = lines.try_map(parse).filter(|r| r["n"].as_i64() > Some(1)).count();
    let (graph, _) = graph_of(&count).unwrap();
    assert_eq!(graph.len(), 4 + 1);
    assert_eq!(count.compute_on(&sched()).unwrap(), 2);
    // Elementwise steps alone: one task per file too.
    let (graph, outputs) = graph_of(&lines.map(|l| l.len())).unwrap();
    assert_eq!((graph.len(), outputs.len()), (4, 4));
    // A step that needs the whole partition first reads the file whole, as before.
    let (graph, _) = graph_of(&lines.map_partitions(|p| p.to_vec()).count()).unwrap();
    assert_eq!(graph.len(), 4 + 4 + 1);
}

#[test]
fn errors_in_chunks_name_the_file_and_line() {
    let dir = TempDir::new("errors");
    write(&dir.0.join("a.json"), "{\"n\": 1}\n{\"n\": 2}\n{\"n\": 3}\nnot json\n{\"n\": 5}\n");
    let path = dir.pattern("a.json");
    for chunk in [1, 2, 3, 100] {
        let error =
            read_json_lines::<Value>(&path).unwrap().chunk_size(chunk).count().compute_on(&sched()).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("a.json") && message.contains("line 4"), "{message}");
        let error =
            read_text(&path).unwrap().chunk_size(chunk).try_map(parse).count().compute_on(&sched()).unwrap_err();
        assert!(error.to_string().contains("expected ident"), "{error}");
    }
    let error = read_text(&path).unwrap().chunk_size(0).count().compute_on(&sched()).unwrap_err();
    assert!(error.to_string().contains(&BagError::ZeroChunkSize.to_string()), "{error}");
}
