//! Files: plain and gzip inputs, globs, malformed JSON lines under both policies, missing
//! files, and writing text files back.

mod common;

use std::io::Write;

use common::{TempDir, sched, write_gzip};

use kiln_bag::{BadLines, BagError, Compression, OnBadLine, read_json_lines, read_json_lines_with, read_text};
use kiln_graph::Collection;

#[test]
fn plain_and_gzip_files_are_one_partition_each_in_path_order() {
    let dir = TempDir::new("text");
    std::fs::write(dir.0.join("a.txt"), "one\ntwo\r\nthree").unwrap();
    write_gzip(&dir.0.join("b.txt.gz"), "four\nfive\n");
    std::fs::write(dir.0.join("c.log"), "ignored by the glob\n").unwrap();
    let bag = read_text(&dir.pattern("*.txt*")).unwrap();
    assert_eq!(bag.npartitions(), 2);
    assert_eq!(bag.compute_on(&sched()).unwrap(), ["one", "two", "three", "four", "five"]);
    assert_eq!(bag.map(|l| l.len() as u64).sum().compute_on(&sched()).unwrap(), 3 + 3 + 5 + 4 + 4);
}

#[test]
fn patterns_that_match_nothing_and_files_that_vanish_are_clear_errors() {
    let dir = TempDir::new("missing");
    let pattern = dir.pattern("*.json");
    assert_eq!(read_text(&pattern).unwrap_err(), BagError::NoFilesMatch { pattern: pattern.clone() });
    let plain = dir.pattern("absent.txt");
    assert!(read_json_lines::<serde_json::Value>(&plain).unwrap_err().to_string().contains("no files match"));
    assert!(matches!(read_text(&dir.pattern("[")).unwrap_err(), BagError::BadPattern { .. }));
    // A file deleted between building and computing fails its task, naming the file.
    let path = dir.0.join("gone.txt");
    std::fs::write(&path, "x\n").unwrap();
    let bag = read_text(path.to_str().unwrap()).unwrap();
    std::fs::remove_file(&path).unwrap();
    let error = bag.compute_on(&sched()).unwrap_err().to_string();
    assert!(error.contains("gone.txt"), "{error}");
}

#[derive(serde::Deserialize, Clone, Debug, PartialEq)]
struct Event {
    id: u64,
    name: String,
}

#[test]
fn malformed_json_lines_fail_naming_file_and_line_or_are_skipped_and_counted() {
    let dir = TempDir::new("json");
    std::fs::write(dir.0.join("a.jsonl"), "{\"id\": 1, \"name\": \"Alice\"}\n\n{\"id\": 2, \"name\": \"Bob\"}\n")
        .unwrap();
    write_gzip(
        &dir.0.join("b.jsonl.gz"),
        "{\"id\": 3, \"name\": \"Carol\"}\n{\"id\": 4, \"name\"\n{\"id\": \"x\", \"name\": \"Dan\"}\n",
    );

    let strict = read_json_lines::<Event>(&dir.pattern("*.jsonl*")).unwrap();
    let error = strict.compute_on(&sched()).unwrap_err().to_string();
    assert!(error.contains("b.jsonl.gz, line 2"), "{error}");

    let skipped = BadLines::new();
    let lenient = read_json_lines_with::<Event>(&dir.pattern("*.jsonl*"), OnBadLine::Skip(skipped.clone())).unwrap();
    let names = lenient.map(|e| e.name.clone()).compute_on(&sched()).unwrap();
    assert_eq!(names, ["Alice", "Bob", "Carol"]);
    assert_eq!(skipped.count(), 2);
    let lines: Vec<u64> = skipped.lines().iter().map(|l| l.line).collect();
    assert_eq!(lines, [2, 3]);
    assert!(skipped.lines().iter().all(|l| l.path.ends_with("b.jsonl.gz")));
    assert!(skipped.lines()[1].message.contains("invalid type"), "{}", skipped.lines()[1].message);
    skipped.clear();
    assert_eq!(skipped.count(), 0);

    // Schemaless records accept what the typed ones refused (but not the truncated line).
    let values = read_json_lines_with::<serde_json::Value>(&dir.pattern("*.jsonl*"), OnBadLine::Skip(skipped.clone()));
    assert_eq!(values.unwrap().pluck("name").count().compute_on(&sched()).unwrap(), 4);
    assert_eq!(skipped.count(), 1);
}

#[test]
fn invalid_utf8_names_the_line() {
    let dir = TempDir::new("utf8");
    std::fs::write(dir.0.join("bad.txt"), b"fine\n\xff\xfe\n").unwrap();
    let error = read_text(&dir.pattern("*.txt")).unwrap().compute_on(&sched()).unwrap_err().to_string();
    assert!(error.contains("bad.txt, line 2: not UTF-8"), "{error}");
}

#[test]
fn text_files_round_trip_plain_and_gzip() {
    let dir = TempDir::new("write");
    let bag = kiln_bag::Bag::from_sequence((0..25).map(|i| format!("line {i}")), 3);
    for (compression, glob) in [(Compression::None, "plain/*.txt"), (Compression::Gzip, "gz/*.gz")] {
        let out = dir.0.join(glob.split('/').next().unwrap());
        let paths = bag.to_textfiles(&out, compression).compute_on(&sched()).unwrap();
        assert_eq!(paths.len(), 3);
        assert!(paths[2].file_name().unwrap().to_str().unwrap().starts_with("part.2.txt"));
        let back = read_text(&dir.pattern(glob)).unwrap();
        assert_eq!(back.npartitions(), 3);
        assert_eq!(back.compute_on(&sched()).unwrap(), bag.compute_on(&sched()).unwrap());
    }
    let gz = std::fs::read(dir.0.join("gz/part.0.txt.gz")).unwrap();
    assert_eq!(&gz[..2], &[0x1f, 0x8b], "gzip magic");
}

mod blocks {
    use super::*;
    use kiln_bag::read_text_blocks;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        /// Split at any byte, every line is read once and whole, in order.
        #[test]
        fn blocks_of_any_size_read_every_line_once(
            lines in prop::collection::vec("[a-zé]{0,12}", 0..30),
            crlf in any::<bool>(),
            trailing in any::<bool>(),
            blocksize in 1u64..40,
        ) {
            let dir = TempDir::new(&format!("blocks-{blocksize}-{}", lines.len()));
            let mut text = lines.join(if crlf { "\r\n" } else { "\n" });
            if trailing && !lines.is_empty() {
                text.push('\n');
            }
            let path = dir.0.join("data.txt");
            std::fs::write(&path, &text).unwrap();
            let whole = read_text(path.to_str().unwrap()).unwrap().compute_on(&sched()).unwrap();
            let blocks = read_text_blocks(path.to_str().unwrap(), blocksize).unwrap();
            prop_assert_eq!(blocks.npartitions() as u64, (text.len() as u64).div_ceil(blocksize).max(1));
            prop_assert_eq!(blocks.compute_on(&sched()).unwrap(), whole);
        }
    }

    #[test]
    fn compressed_files_stay_whole_and_zero_blocksize_is_an_error() {
        let dir = TempDir::new("blocks-gz");
        write_gzip(&dir.0.join("a.txt.gz"), "x\ny\nz\n");
        std::fs::write(dir.0.join("b.txt"), "1\n2\n3\n").unwrap();
        let bag = read_text_blocks(&dir.pattern("*"), 2).unwrap();
        assert_eq!(bag.npartitions(), 1 + 3);
        assert_eq!(bag.compute_on(&sched()).unwrap(), ["x", "y", "z", "1", "2", "3"]);
        assert_eq!(read_text_blocks(&dir.pattern("*"), 0).unwrap_err(), BagError::ZeroBlocksize);
    }
}

#[test]
fn bzip2_and_zstd_files_are_read_by_extension_and_written_back() {
    let dir = TempDir::new("bz2-zstd");
    // Written by the compressors' own writers (two concatenated streams for bzip2, as
    // `cat a.bz2 b.bz2` makes), read back by extension.
    let mut bz = Vec::new();
    for text in ["{\"n\": 1}\n", "{\"n\": 2}\n"] {
        let mut encoder = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        encoder.write_all(text.as_bytes()).unwrap();
        bz.extend(encoder.finish().unwrap());
    }
    std::fs::write(dir.0.join("a.jsonl.bz2"), bz).unwrap();
    std::fs::write(dir.0.join("b.jsonl.zst"), zstd::encode_all(&b"{\"n\": 3}\n\n{\"n\": 4}\n"[..], 3).unwrap())
        .unwrap();
    let records = read_json_lines::<serde_json::Value>(&dir.pattern("*.jsonl.*")).unwrap();
    assert_eq!(records.npartitions(), 2);
    let numbers = records.pluck("n").compute_on(&sched()).unwrap();
    assert_eq!(numbers, [1, 2, 3, 4].map(|n| serde_json::json!(n)));

    for (compression, suffix) in [(Compression::Bz2, "bz2"), (Compression::Zstd, "zst")] {
        let out = dir.0.join(suffix);
        let written = kiln_bag::Bag::range(7, 3).to_textfiles(&out, compression).compute_on(&sched()).unwrap();
        assert!(written[2].ends_with(format!("part.2.txt.{suffix}")), "{:?}", written[2]);
        let back = read_text(&format!("{}/*.{suffix}", out.display())).unwrap();
        assert_eq!(back.compute_on(&sched()).unwrap(), ["0", "1", "2", "3", "4", "5", "6"]);
    }
    // A pattern names the files; its extension picks the compression unless one is given.
    let gzip: &[u8] = &[0x1f, 0x8b];
    let zstd: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
    for (pattern, compression, magic) in
        [("events-*.json.gz", Compression::None, gzip), ("z-*.log", Compression::Zstd, zstd)]
    {
        let target = dir.0.join("named").join(pattern);
        let written = kiln_bag::Bag::range(7, 3).to_textfiles(&target, compression).compute_on(&sched()).unwrap();
        let expected: Vec<_> = (0..3).map(|i| dir.0.join("named").join(pattern.replace('*', &i.to_string()))).collect();
        assert_eq!(written, expected);
        // Compressed as the extension or the argument says (by the format's magic number).
        assert!(std::fs::read(&written[0]).unwrap().starts_with(magic), "{pattern}");
    }
    let back = read_text(&dir.pattern("named/events-*.json.gz")).unwrap();
    assert_eq!(back.compute_on(&sched()).unwrap(), ["0", "1", "2", "3", "4", "5", "6"]);

    // A file whose name says zstd but whose bytes are not is an error naming the file.
    std::fs::write(dir.0.join("bad.txt.zst"), b"plain text\n").unwrap();
    let error = read_text(&dir.pattern("bad.txt.zst")).unwrap().compute_on(&sched()).unwrap_err();
    assert!(error.to_string().contains("bad.txt.zst"), "{error}");
}
