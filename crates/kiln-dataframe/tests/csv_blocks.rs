//! `read_csv` with `blocksize`: big files split into byte-range blocks at line ends (Dask's
//! `read_csv(blocksize=...)`). The law: any blocksize reads exactly the frame that one
//! partition per file reads, or, when a quoted field holds a line break across a block
//! boundary, fails saying so; never other rows. Plus what each block reads, compressed and
//! empty files, and errors that name the file and the line in it.

use std::io::Write;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use kiln_dataframe::storage::{LocalStorage, Storage, StorageError, register_storage};
use kiln_dataframe::{CsvOptions, DType, DataFrame, DataFrameError, read_csv};
use kiln_graph::{Collection, ComputeError};
use kiln_local::LocalScheduler;
use proptest::prelude::*;

/// A fresh directory for one test case.
fn temp_dir(name: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("kiln-csv-blocks-{}-{name}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(dir: &std::path::Path, name: &str, text: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

fn compute(df: &DataFrame) -> Result<RecordBatch, ComputeError> {
    df.compute_on(&LocalScheduler::threads(2))
}

/// One field of the generated text column: plain words, quoted fields holding the delimiter
/// and doubled quotes, missing-value spellings, empty fields; with `newlines`, quoted fields
/// holding line breaks too.
fn text_field(newlines: bool) -> impl Strategy<Value = String> {
    let mut choices = vec![
        "[a-z]{1,6}".prop_map(|s| s).boxed(),
        "[a-z ]{0,4},[a-z]{0,4}".prop_map(|s| format!("\"{s}\"")).boxed(),
        "[a-z]{0,3}".prop_map(|s| format!("\"say \"\"{s}\"\"\"")).boxed(),
        Just(String::new()).boxed(),
        Just("NA".to_string()).boxed(),
        Just("\"\"".to_string()).boxed(),
    ];
    if newlines {
        choices.push("[a-z]{0,3}".prop_map(|s| format!("\"two\n{s}\"")).boxed());
        choices.push("[a-z]{0,3}".prop_map(|s| format!("\"a,\r\n\n{s}\"")).boxed());
    }
    proptest::strategy::Union::new(choices)
}

/// A CSV file: a header, rows of an integer, a float and a text column with missing values,
/// `\n` or `\r\n` line ends, sometimes a blank line, and a last line with or without its line
/// break.
fn csv_text(newlines: bool) -> impl Strategy<Value = Vec<u8>> {
    let int = prop_oneof![4 => (-1000i64..1000).prop_map(|v| v.to_string()), 1 => Just(String::new())];
    let float = prop_oneof![
        4 => (-1e4f64..1e4).prop_map(|v| format!("{v:.3}")),
        1 => Just("NaN".to_string()),
        1 => Just(String::new())
    ];
    let row = (int, float, text_field(newlines), prop::bool::weighted(0.05));
    (prop::collection::vec(row, 1..60), any::<bool>(), any::<bool>()).prop_map(|(rows, crlf, last_break)| {
        let eol = if crlf { "\r\n" } else { "\n" };
        let mut text = format!("id,x,s{eol}");
        // The first row has every column, so inference sees each type whatever comes next.
        text.push_str(&format!("7,0.5,first{eol}"));
        for (i, (id, x, s, blank)) in rows.iter().enumerate() {
            if *blank {
                text.push_str(eol);
            }
            text.push_str(&format!("{id},{x},{s}"));
            if i + 1 < rows.len() || last_break {
                text.push_str(eol);
            }
        }
        text.into_bytes()
    })
}

fn read(path: &str, blocksize: Option<u64>) -> Result<DataFrame, DataFrameError> {
    read_csv(path, &CsvOptions::default().blocksize(blocksize))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Any blocksize, from one byte to more than the file, gives the frame one partition gives,
    /// also through the planner's projection and filter pushdown.
    #[test]
    fn any_blocksize_reads_the_same_frame_as_one_partition(
        text in csv_text(false),
        fraction in 0.0f64..1.2,
    ) {
        let dir = temp_dir("same");
        let path = write(&dir, "data.csv", &text);
        let size = text.len() as u64;
        let blocksize = 1 + (fraction * size as f64) as u64;
        let one = read(&path, None).unwrap();
        let split = read(&path, Some(blocksize)).unwrap();
        prop_assert_eq!(split.npartitions() as u64, (size / blocksize).max(1));
        prop_assert!(!split.known_divisions());
        prop_assert_eq!(compute(&split).unwrap(), compute(&one).unwrap());
        let picked = |df: &DataFrame| {
            let kept = df.filter(&df.col("x").gt(0.0)).unwrap();
            compute(&kept.select(&["s", "id"]).unwrap()).unwrap()
        };
        prop_assert_eq!(picked(&split), picked(&one));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// With quoted line breaks a block boundary may fall inside a field: then reading fails
    /// naming the file and blocksize=None; otherwise the frame is the one partition's.
    #[test]
    fn quoted_line_breaks_give_the_same_frame_or_an_error_saying_so(
        text in csv_text(true),
        fraction in 0.0f64..1.2,
    ) {
        let dir = temp_dir("quoted");
        let path = write(&dir, "data.csv", &text);
        let blocksize = 1 + (fraction * text.len() as f64) as u64;
        let one = compute(&read(&path, None).unwrap()).unwrap();
        match compute(&read(&path, Some(blocksize)).unwrap()) {
            Ok(split) => prop_assert_eq!(split, one),
            Err(e) => {
                let message = e.to_string();
                prop_assert!(message.contains(&path) && message.contains("blocksize=None"), "{}", message);
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn a_boundary_inside_a_quoted_line_break_is_an_error_naming_the_line() {
    let dir = temp_dir("boundary");
    let mut text = String::from("id,note\n");
    for i in 0..20 {
        text.push_str(&format!("{i},plain\n"));
    }
    // Line 22 opens a field that closes on line 24.
    text.push_str("20,\"first\nsecond\nthird\"\n");
    for i in 21..40 {
        text.push_str(&format!("{i},plain\n"));
    }
    let path = write(&dir, "notes.csv", text.as_bytes());
    let one = compute(&read(&path, None).unwrap()).unwrap();
    assert_eq!(one.num_rows(), 40);
    let opens = text.find("\"first").unwrap() as u64;
    // Blocks of this size end inside the quoted field: the block that holds its first line.
    let blocksize = opens + 3;
    let df = read(&path, Some(blocksize)).unwrap();
    let message = compute(&df).unwrap_err().to_string();
    assert!(message.contains(&path) && message.contains("line 22") && message.contains("blocksize=None"), "{message}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_compressed_file_is_one_partition_whatever_the_blocksize() {
    let dir = temp_dir("gzip");
    let mut text = String::from("a,b\n");
    for i in 0..500 {
        text.push_str(&format!("{i},{}\n", i * 2));
    }
    let path = dir.join("data.csv.gz");
    let mut encoder = flate2::write::GzEncoder::new(std::fs::File::create(&path).unwrap(), Default::default());
    encoder.write_all(text.as_bytes()).unwrap();
    encoder.finish().unwrap();
    let path = path.to_string_lossy().into_owned();
    let df = read(&path, Some(64)).unwrap();
    assert_eq!(df.npartitions(), 1);
    let out = compute(&df).unwrap();
    assert_eq!(out.num_rows(), 500);
    assert_eq!(out.column(1).as_primitive::<Int64Type>().value(499), 998);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn errors_in_later_blocks_name_the_file_and_the_line_in_it() {
    let dir = temp_dir("lines");
    let mut text = String::from("id,name\n");
    for i in 0..1000 {
        // A quoted line break early on: the line count before a block includes it.
        if i == 3 {
            text.push_str("3,\"two\nlines\"\n");
        } else if i == 700 {
            text.push_str("x700,bad\n");
        } else {
            text.push_str(&format!("{i},n{i}\n"));
        }
    }
    let path = write(&dir, "ids.csv", text.as_bytes());
    // The value on line 703 (header, 700 rows, one extra line from the quoted break).
    let options = CsvOptions::default().dtype("id", DType::Int64);
    for blocksize in [None, Some(1000), Some(97)] {
        let df = read_csv(&path, &options.clone().blocksize(blocksize)).unwrap();
        let message = compute(&df).unwrap_err().to_string();
        assert!(message.contains(&path) && message.contains("line 703") && message.contains("'x700'"), "{message}");
        // The bad column unread: nothing to fail.
        assert_eq!(compute(&df.select(&["name"]).unwrap()).unwrap().num_rows(), 1000);
    }
    // A ragged row is found past the projected columns too (beyond the inference sample,
    // which would refuse it first).
    let ragged = text.replace("x700,bad\n", "700,n700,extra\n");
    let path = write(&dir, "ragged.csv", ragged.as_bytes());
    for blocksize in [None, Some(1000), Some(97)] {
        let df = read_csv(&path, &CsvOptions::default().sample_rows(100).blocksize(blocksize)).unwrap();
        let message = compute(&df.select(&["id"]).unwrap()).unwrap_err().to_string();
        assert!(message.contains(&path) && message.contains("line 703") && message.contains("found 3"), "{message}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_empty_file_is_an_error_naming_it_first_and_skipped_when_splitting_later() {
    let dir = temp_dir("empty");
    let empty = write(&dir, "a.csv", b"");
    for blocksize in [None, Some(4)] {
        let err = read(&empty, blocksize).unwrap_err();
        assert!(
            matches!(&err, DataFrameError::Csv { path, message } if *path == empty && message.contains("empty")),
            "{err}"
        );
    }
    // pandas' and Dask's answers: with splitting, Dask gives an empty file no block; without,
    // reading it fails as pandas does (EmptyDataError).
    write(&dir, "b.csv", b"a,b\n1,2\n3,4\n");
    write(&dir, "c.csv", b"a,b\n5,6\n");
    std::fs::rename(dir.join("a.csv"), dir.join("d.csv")).unwrap();
    let pattern = format!("{}/*.csv", dir.display());
    let split = read(&pattern, Some(4)).unwrap();
    assert_eq!(split.npartitions(), 5);
    let out = compute(&split).unwrap();
    assert_eq!(out.column(0).as_primitive::<Int64Type>().values().to_vec(), [1, 3, 5]);
    let defaults = read_csv(&pattern, &CsvOptions::default()).unwrap();
    assert_eq!(defaults.npartitions(), 2);
    assert_eq!(compute(&defaults).unwrap(), out);
    let whole_files = read(&pattern, None).unwrap();
    assert_eq!(whole_files.npartitions(), 3);
    let message = compute(&whole_files).unwrap_err().to_string();
    assert!(message.contains("d.csv") && message.contains("empty"), "{message}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Local files under `blocks://`, recording every range read.
#[derive(Default)]
struct RecordingStorage {
    reads: Mutex<Vec<(String, Range<u64>)>>,
}

impl RecordingStorage {
    fn take(&self) -> Vec<(String, Range<u64>)> {
        std::mem::take(&mut *self.reads.lock().unwrap())
    }
}

const SCHEME: &str = "blocks://";

impl Storage for RecordingStorage {
    fn list(&self, pattern: &str) -> Result<Vec<String>, StorageError> {
        let local = LocalStorage.list(pattern.trim_start_matches(SCHEME))?;
        Ok(local.into_iter().map(|p| format!("{SCHEME}{p}")).collect())
    }
    fn size(&self, path: &str) -> Result<u64, StorageError> {
        LocalStorage.size(path.trim_start_matches(SCHEME))
    }
    fn read_range(&self, path: &str, range: Range<u64>) -> Result<Vec<u8>, StorageError> {
        self.reads.lock().unwrap().push((path.to_string(), range.clone()));
        LocalStorage.read_range(path.trim_start_matches(SCHEME), range)
    }
    fn write(&self, path: &str, bytes: &[u8]) -> Result<(), StorageError> {
        LocalStorage.write(path.trim_start_matches(SCHEME), bytes)
    }
    fn delete(&self, path: &str) -> Result<(), StorageError> {
        LocalStorage.delete(path.trim_start_matches(SCHEME))
    }
}

#[test]
fn each_block_reads_its_range_and_the_end_of_its_last_line_through_the_storage() {
    let storage = Arc::new(RecordingStorage::default());
    register_storage("blocks", storage.clone());
    let dir = temp_dir("ranges");
    let mut text = String::from("id,value,label\n");
    for i in 0..20_000 {
        text.push_str(&format!("{i},{}.25,label-{}\n", i * 3, i % 7));
    }
    let local = write(&dir, "big.csv", text.as_bytes());
    let size = text.len() as u64;
    let path = format!("{SCHEME}{local}");
    let blocksize = size / 8;
    let df = read(&path, Some(blocksize)).unwrap();
    assert_eq!(df.npartitions(), 8);
    storage.take();

    // head(n) reads the first block only: its range and the rest of the line crossing its end.
    let head = df.head(5).compute_on(&LocalScheduler::threads(2)).unwrap();
    assert_eq!(head.column(0).as_primitive::<Int64Type>().values().to_vec(), [0, 1, 2, 3, 4]);
    let reads = storage.take();
    let furthest = reads.iter().map(|(_, r)| r.end).max().unwrap();
    let read_bytes: u64 = reads.iter().map(|(_, r)| r.end - r.start).sum();
    assert!(furthest <= blocksize + (64 << 10) && read_bytes < size / 2, "head read {reads:?} of {size} bytes");

    // All blocks: each byte of the file about once, no block reading the whole file.
    let all = compute(&df).unwrap();
    assert_eq!(all.num_rows(), 20_000);
    let ids = all.column(0).as_primitive::<Int64Type>();
    assert!(ids.values().iter().enumerate().all(|(i, &v)| v == i as i64));
    let reads = storage.take();
    let read_bytes: u64 = reads.iter().map(|(_, r)| r.end - r.start).sum();
    assert!(reads.iter().all(|(p, r)| *p == path && r.end - r.start <= blocksize + (64 << 10)), "{reads:?}");
    assert!(read_bytes <= size + 8 * (64 << 10), "read {read_bytes} bytes of a {size}-byte file");

    // A projection and a filter run in each block.
    let big = df.filter(&df.col("value").gt(30_000.0)).unwrap().select(&["label"]).unwrap();
    assert_eq!(compute(&big).unwrap().num_rows(), 20_000 - 10_000);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn explain_tells_how_many_blocks_and_the_default_blocksize_is_dasks() {
    assert_eq!(CsvOptions::default().blocksize, Some(kiln_dataframe::DEFAULT_BLOCKSIZE));
    assert_eq!(kiln_dataframe::DEFAULT_BLOCKSIZE, 64_000_000);
    assert_eq!(CsvOptions::default().blocksize(Some(0)).blocksize, None);
    let dir = temp_dir("explain");
    let path = write(&dir, "x.csv", b"x\n1\n2\n3\n4\n5\n6\n7\n8\n9\n");
    let text = read(&path, Some(5)).unwrap().explain();
    assert!(text.contains("read_csv 1 file(s) in 4 partition(s) by blocksize"), "{text}");
    assert_eq!(read(&path, None).unwrap().npartitions(), 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_blocksize_that_would_plan_millions_of_partitions_is_an_error_saying_what_to_give() {
    let dir = temp_dir("tiny-blocksize");
    // A 4 GiB file that takes no disk: its header and rows, then a hole.
    let path = write(&dir, "big.csv", b"x\n1\n2\n");
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(4 << 30).unwrap();
    let err = read(&path, Some(1)).unwrap_err().to_string();
    assert!(err.contains("blocksize=1 bytes") && err.contains("4294967296 partitions"), "{err}");
    assert!(err.contains(&path) && err.contains("64 MB") && err.contains("None"), "{err}");
    // A blocksize that gives at most the limit plans; the suggested one does.
    let at_least: u64 = err.split("at least ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    assert_eq!(read(&path, Some(at_least)).unwrap().npartitions() as u64, (4u64 << 30) / at_least);
    std::fs::remove_dir_all(&dir).unwrap();
}
