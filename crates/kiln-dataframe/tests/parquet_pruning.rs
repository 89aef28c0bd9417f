//! Row-group pruning by Parquet statistics: a filter read from Parquet gives the rows of the
//! same filter on the unfiltered file and on the data in memory, whatever the data (missing
//! values, NaN, signed zeros, strings, dates, timestamps) and the filter; and a selective filter
//! on a sorted column reads only the row groups that can match. Reads go through a storage
//! scheme of this test's that counts each file's row-group fetches (one `read_ranges` call per
//! row group read).

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use arrow::array::{
    ArrayRef, Date32Array, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use kiln_dataframe::storage::{LocalStorage, Storage, StorageError, register_storage};
use kiln_dataframe::{DataFrame, Scalar, Series, read_parquet};
use kiln_graph::Collection;
use kiln_local::LocalScheduler;
use proptest::prelude::*;

/// Local files under `rgcount://`, counting each file's `read_ranges` calls.
#[derive(Default)]
struct Counting {
    reads: Mutex<HashMap<String, usize>>,
}

fn local(path: &str) -> &str {
    path.trim_start_matches("rgcount://")
}

impl Storage for Counting {
    fn list(&self, pattern: &str) -> Result<Vec<String>, StorageError> {
        Ok(LocalStorage.list(local(pattern))?.into_iter().map(|p| format!("rgcount://{p}")).collect())
    }
    fn size(&self, path: &str) -> Result<u64, StorageError> {
        LocalStorage.size(local(path))
    }
    fn read_range(&self, path: &str, range: Range<u64>) -> Result<Vec<u8>, StorageError> {
        LocalStorage.read_range(local(path), range)
    }
    fn read_ranges(&self, path: &str, ranges: &[Range<u64>]) -> Result<Vec<Vec<u8>>, StorageError> {
        *self.reads.lock().unwrap().entry(local(path).to_string()).or_default() += 1;
        LocalStorage.read_ranges(local(path), ranges)
    }
    fn write(&self, path: &str, bytes: &[u8]) -> Result<(), StorageError> {
        LocalStorage.write(local(path), bytes)
    }
    fn delete(&self, path: &str) -> Result<(), StorageError> {
        LocalStorage.delete(local(path))
    }
}

fn counting() -> Arc<Counting> {
    static STORAGE: OnceLock<Arc<Counting>> = OnceLock::new();
    STORAGE
        .get_or_init(|| {
            let storage = Arc::new(Counting::default());
            register_storage("rgcount", storage.clone());
            storage
        })
        .clone()
}

/// Row groups read from files under `dir` since the last call (each test has its own dir).
fn groups_read(dir: &Path) -> usize {
    let prefix = dir.to_string_lossy().to_string();
    let storage = counting();
    let mut reads = storage.reads.lock().unwrap();
    let n = reads.iter().filter(|(p, _)| p.starts_with(&prefix)).map(|(_, n)| *n).sum();
    reads.retain(|p, _| !p.starts_with(&prefix));
    n
}

/// A fresh directory, readable as `rgcount://` + its path.
fn temp_dir(name: &str) -> PathBuf {
    counting();
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("kiln-pruning-{}-{name}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write_parquet(path: &Path, batch: &RecordBatch, group_rows: usize) {
    let props =
        parquet::file::properties::WriterProperties::builder().set_max_row_group_row_count(Some(group_rows)).build();
    let file = std::fs::File::create(path).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), Some(props)).unwrap();
    writer.write(batch).unwrap();
    writer.close().unwrap();
}

fn compute(df: &DataFrame) -> RecordBatch {
    df.compute_on(&LocalScheduler::default()).unwrap()
}

/// Every value as text (NaN too, which `==` on arrays would not match), column by column.
fn cells(batch: &RecordBatch) -> Vec<(String, Vec<Option<String>>)> {
    batch
        .schema()
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(f, c)| {
            let text = arrow::compute::cast(c, &DataType::Utf8).unwrap();
            let text = text.as_any().downcast_ref::<StringArray>().unwrap();
            (f.name().clone(), text.iter().map(|v| v.map(str::to_string)).collect())
        })
        .collect()
}

/// A table of every kind of column pruning handles, rows in the order given.
fn table(rows: &[Row]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, true),
        Field::new("x", DataType::Float64, true),
        Field::new("i", DataType::Int32, true),
        Field::new("s", DataType::Utf8, true),
        Field::new("d", DataType::Date32, true),
        Field::new("t", DataType::Timestamp(TimeUnit::Millisecond, None), true),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(rows.iter().map(|r| r.k).collect::<Vec<_>>())),
        Arc::new(Float64Array::from(rows.iter().map(|r| r.x).collect::<Vec<_>>())),
        Arc::new(Int32Array::from(rows.iter().map(|r| r.i).collect::<Vec<_>>())),
        Arc::new(StringArray::from(rows.iter().map(|r| r.s.clone()).collect::<Vec<_>>())),
        Arc::new(Date32Array::from(rows.iter().map(|r| r.d).collect::<Vec<_>>())),
        Arc::new(TimestampMillisecondArray::from(rows.iter().map(|r| r.t).collect::<Vec<_>>())),
    ];
    RecordBatch::try_new(schema, columns).unwrap()
}

#[derive(Debug, Clone)]
struct Row {
    k: Option<i64>,
    x: Option<f64>,
    i: Option<i32>,
    s: Option<String>,
    d: Option<i32>,
    t: Option<i64>,
}

/// Values from small ranges, so that filters often match and often do not; runs of a value
/// (sorted stretches) make whole row groups decidable.
fn row() -> impl Strategy<Value = Row> {
    let x = prop_oneof![
        6 => (-20i32..20).prop_map(|v| Some(f64::from(v) / 2.0)),
        1 => Just(Some(f64::NAN)),
        1 => Just(Some(-0.0)),
        1 => Just(None),
    ];
    let s = prop_oneof![5 => "[a-d]{0,3}".prop_map(Some), 1 => Just(Some("é".to_string())), 1 => Just(None)];
    (
        prop::option::weighted(0.9, -30i64..30),
        x,
        prop::option::weighted(0.9, -5i32..5),
        s,
        prop::option::weighted(0.9, 18_000i32..18_020),
        prop::option::weighted(0.9, 0i64..40),
    )
        .prop_map(|(k, x, i, s, d, t)| Row { k, x, i, s, d, t: t.map(|t| 1_600_000_000_000 + t * 3_600_000) })
}

/// A filter term over `df`'s columns, from a recipe of numbers.
fn term(df: &DataFrame, recipe: (u8, u8, i32, i32)) -> Series {
    let (column, op, a, b) = recipe;
    let (lo, hi) = (a.min(b), a.max(b));
    let (name, value, low, high): (&str, Scalar, Scalar, Scalar) = match column % 6 {
        0 => ("k", Scalar::Int(i64::from(a)), Scalar::Int(i64::from(lo)), Scalar::Int(i64::from(hi))),
        1 => (
            "x",
            Scalar::Float(f64::from(a) / 2.0),
            Scalar::Float(f64::from(lo) / 2.0),
            Scalar::Float(f64::from(hi) / 2.0),
        ),
        2 => ("i", Scalar::Float(f64::from(a) / 4.0), Scalar::Int(i64::from(lo / 4)), Scalar::Int(i64::from(hi / 4))),
        3 => {
            let text = |v: i32| ["", "a", "ab", "b", "bcd", "c", "d", "dd", "é"][v.unsigned_abs() as usize % 9];
            ("s", Scalar::from(text(a)), Scalar::from(text(lo)), Scalar::from(text(hi)))
        }
        4 => {
            let day = |v: i32| Scalar::Str(format!("2019-04-{:02}", 14 + v.rem_euclid(17)));
            ("d", day(a), day(lo), day(hi))
        }
        _ => {
            let at =
                |v: i32| Scalar::TimestampNs((1_600_000_000_000 + i64::from(v.rem_euclid(40)) * 3_600_000) * 1_000_000);
            ("t", at(a), at(lo), at(hi))
        }
    };
    let c = df.col(name);
    match op % 9 {
        0 => c.lt(value),
        1 => c.le(value),
        2 => c.gt(value),
        3 => c.ge(value),
        4 => c.eq(value),
        5 => c.ne(value),
        6 => c.between(low, high),
        7 => c.isin([value, low]),
        _ => c.isna(),
    }
}

type Recipe = (u8, u8, i32, i32);

fn recipe() -> impl Strategy<Value = Recipe> {
    (any::<u8>(), any::<u8>(), -20i32..20, -20i32..20)
}

/// The filter: one term, two joined by `&` or `|`, or a term and the negation of another.
fn filter(df: &DataFrame, shape: u8, a: Recipe, b: Recipe) -> Series {
    match shape % 4 {
        0 => term(df, a),
        1 => term(df, a) & term(df, b),
        2 => term(df, a) | term(df, b),
        _ => term(df, a) & !term(df, b),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn pruned_reads_equal_unpruned_reads_and_the_filter_in_memory(
        rows in prop::collection::vec(row(), 0..400),
        sorted in any::<bool>(),
        shape in any::<u8>(),
        a in recipe(),
        b in recipe(),
        renamed in any::<bool>(),
    ) {
        let mut rows = rows;
        if sorted {
            // Sorted columns make row groups whose ranges do not overlap: most prunable.
            rows.sort_by_key(|r| (r.k, r.d, r.t));
        }
        let data = table(&rows);
        let dir = temp_dir("prop");
        write_parquet(&dir.join("part.0.parquet"), &data, 50);
        if rows.len() > 100 {
            // A second file of the rows again, other groups.
            write_parquet(&dir.join("part.1.parquet"), &data.slice(30, rows.len() - 30), 37);
        }
        let url = format!("rgcount://{}", dir.to_string_lossy());
        let read = read_parquet(&url).unwrap();
        let unfiltered = compute(&read);
        let in_memory = DataFrame::from_batches(vec![unfiltered.clone()]).unwrap();
        // Through a renaming projection now and then: the pushed predicate follows the name.
        let (read_view, memory_view) = if renamed {
            let rename = |df: &DataFrame| df.rename(&[("k", "key")]).unwrap().rename(&[("key", "k")]).unwrap();
            (rename(&read), rename(&in_memory))
        } else {
            (read.clone(), in_memory.clone())
        };
        let pruned = read_view.filter(&filter(&read_view, shape, a, b)).unwrap();
        // The filter's columns projected away afterwards: statistics are still consulted.
        let pruned = pruned.select(&["k", "s"]).unwrap();
        let expected = memory_view.filter(&filter(&memory_view, shape, a, b)).unwrap().select(&["k", "s"]).unwrap();
        groups_read(&dir);
        let got = compute(&pruned);
        let read_now = groups_read(&dir);
        prop_assert_eq!(cells(&got), cells(&compute(&expected)));
        let total_groups = rows.len().div_ceil(50) + if rows.len() > 100 { (rows.len() - 30).div_ceil(37) } else { 0 };
        prop_assert!(read_now <= total_groups.max(1) + 1, "{} groups read of {}", read_now, total_groups);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// 1,000 rows sorted by `k` in row groups of 50: `k` in [0, 999].
fn sorted_file(name: &str) -> (PathBuf, DataFrame) {
    let dir = temp_dir(name);
    let rows: Vec<Row> = (0..1000)
        .map(|k| Row {
            k: Some(k),
            x: Some(k as f64 / 10.0),
            i: Some((k % 7) as i32),
            s: Some(format!("{k:04}")),
            d: Some(18_000 + (k / 100) as i32),
            t: Some(1_600_000_000_000 + k * 1000),
        })
        .collect();
    write_parquet(&dir.join("part.0.parquet"), &table(&rows), 50);
    let df = read_parquet(&format!("rgcount://{}", dir.to_string_lossy())).unwrap();
    groups_read(&dir);
    (dir, df)
}

#[test]
fn a_selective_filter_on_a_sorted_column_reads_only_the_groups_that_can_match() {
    let (dir, df) = sorted_file("selective");
    let k = df.col("k");
    let cases: Vec<(Series, usize, usize)> = vec![
        // (filter, rows kept, row groups read)
        (k.ge(120i64) & k.lt(180i64), 60, 2),
        (k.eq(999i64), 1, 1),
        (k.between(100i64, 149i64), 50, 1),
        (k.isin([3i64, 510, 2000]), 2, 2),
        (k.gt(5000i64), 0, 0),
        (df.col("s").lt("0050"), 50, 1),
        (df.col("d").eq("2019-04-18"), 100, 2),
        (df.col("x").le(9.95) & df.col("i").eq(3i64), 14, 2),
        (k.lt(100i64) | k.ge(950i64), 150, 3),
        // Nothing to decide: every group is read.
        (k.ne(5i64), 999, 20),
        (df.col("x").abs().lt(1.0), 10, 20),
    ];
    for (i, (mask, rows, groups)) in cases.iter().enumerate() {
        let kept = df.filter(mask).unwrap();
        let batch = compute(&kept);
        assert_eq!(batch.num_rows(), *rows, "case {i}: rows");
        assert_eq!(groups_read(&dir), *groups, "case {i}: row groups read");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn explain_shows_the_pushed_predicate_through_renames_and_stops_at_drop_duplicates() {
    let (dir, df) = sorted_file("explain");
    let renamed = df.rename(&[("k", "key")]).unwrap();
    let filtered = renamed.filter(&renamed.col("key").gt(900i64)).unwrap().select(&["s"]).unwrap();
    let plan = filtered.explain();
    assert!(plan.contains("statistics allow (k > 900)"), "{plan}");
    assert_eq!(compute(&filtered).num_rows(), 99);
    assert_eq!(groups_read(&dir), 2);

    // Which row is first of its duplicates depends on the rows before it: nothing is pushed.
    let deduped = df.drop_duplicates(Some(&["i"])).unwrap();
    let after = deduped.filter(&deduped.col("k").gt(900i64)).unwrap();
    assert!(!after.explain().contains("statistics allow"), "{}", after.explain());
    assert_eq!(compute(&after).num_rows(), 0);
    assert_eq!(groups_read(&dir), 20);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_filter_after_a_cast_that_could_fail_is_not_pushed() {
    let (dir, df) = sorted_file("cast");
    let cast = df.assign("n", &df.col("s").astype(kiln_dataframe::DType::Int64)).unwrap();
    let filtered = cast.filter(&cast.col("k").lt(10i64)).unwrap();
    assert!(!filtered.explain().contains("statistics allow"), "{}", filtered.explain());
    assert_eq!(compute(&filtered).num_rows(), 10);
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Divisions from statistics: `set_index(col, sorted=true)` on files whose footers give the
// column's exact ranges, in order.

/// Rows with `k` from `range` (sorted), `d` a date rising with `k`, `s` the key as text.
fn keyed_rows(range: Range<i64>) -> Vec<Row> {
    range
        .map(|k| Row {
            k: Some(k),
            x: Some(k as f64),
            i: Some((k % 5) as i32),
            s: Some(format!("{k:05}")),
            d: Some(18_000 + (k / 40) as i32),
            t: Some(1_600_000_000_000 + k * 1000),
        })
        .collect()
}

/// Files `part.{i}.parquet` of these rows each, in row groups of 50; returns the directory
/// and the batches (for the scan's answer on the same data).
fn keyed_files(
    name: &str,
    files: &[Vec<Row>],
    props: Option<parquet::file::properties::WriterProperties>,
) -> (PathBuf, Vec<RecordBatch>) {
    let dir = temp_dir(name);
    let mut batches = Vec::new();
    for (i, rows) in files.iter().enumerate() {
        let batch = table(rows);
        let path = dir.join(format!("part.{i}.parquet"));
        match &props {
            None => write_parquet(&path, &batch, 50),
            Some(props) => {
                let file = std::fs::File::create(&path).unwrap();
                let mut writer =
                    parquet::arrow::ArrowWriter::try_new(file, batch.schema(), Some(props.clone())).unwrap();
                writer.write(&batch).unwrap();
                writer.close().unwrap();
            }
        }
        batches.push(batch);
    }
    (dir, batches)
}

/// Which files under `dir` had row groups read since the last call.
fn files_read(dir: &Path) -> Vec<String> {
    let prefix = dir.to_string_lossy().to_string();
    let storage = counting();
    let mut reads = storage.reads.lock().unwrap();
    let mut files: Vec<String> = reads
        .iter()
        .filter(|(p, n)| p.starts_with(&prefix) && **n > 0)
        .map(|(p, _)| p.rsplit('/').next().unwrap().to_string())
        .collect();
    reads.retain(|p, _| !p.starts_with(&prefix));
    files.sort();
    files
}

#[test]
fn divisions_come_from_footers_without_reading_and_loc_reads_only_the_files_needed() {
    let scheduler = LocalScheduler::default();
    // Five files of 100 keys each, with an empty file among them (a partition dropped, as the
    // scan drops it).
    let files: Vec<Vec<Row>> = vec![
        keyed_rows(0..100),
        keyed_rows(100..200),
        Vec::new(),
        keyed_rows(200..300),
        keyed_rows(300..400),
        keyed_rows(400..500),
    ];
    let (dir, batches) = keyed_files("divisions", &files, None);
    let df = read_parquet(&format!("rgcount://{}", dir.to_string_lossy())).unwrap();
    files_read(&dir);
    let in_memory = DataFrame::from_batches(batches).unwrap();
    for column in ["k", "d", "s", "t"] {
        let indexed = df.set_index_sorted(column, &scheduler).unwrap();
        assert_eq!(files_read(&dir), Vec::<String>::new(), "{column}: footers only");
        let scanned = in_memory.set_index_sorted(column, &scheduler).unwrap();
        assert_eq!(indexed.divisions(), scanned.divisions(), "{column}");
        assert_eq!(indexed.npartitions(), 5, "{column}");
    }
    // Through a projection that keeps the column, too.
    let projected = df.select(&["s", "k"]).unwrap().set_index_sorted("k", &scheduler).unwrap();
    assert_eq!(files_read(&dir), Vec::<String>::new());
    assert_eq!(
        projected.divisions(),
        &kiln_dataframe::Divisions::Known(
            [0, 100, 200, 300, 400, 499].into_iter().map(Scalar::Int).collect::<Vec<_>>()
        )
    );

    let indexed = df.set_index_sorted("k", &scheduler).unwrap();
    let picked = indexed.loc(Some(Scalar::Int(250)), Some(Scalar::Int(420))).unwrap();
    let batch = compute(&picked);
    assert_eq!(batch.num_rows(), 171);
    // Files 3, 4 and 5 hold keys 200..500; file 2 is empty and never read.
    assert_eq!(files_read(&dir), ["part.3.parquet", "part.4.parquet", "part.5.parquet"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn footers_that_do_not_tell_fall_back_to_the_scan() {
    let scheduler = LocalScheduler::default();
    // Overlapping files: the scan reports it, as sorted=true does.
    let (dir, _) = keyed_files("overlap", &[keyed_rows(0..100), keyed_rows(50..150)], None);
    let df = read_parquet(&format!("rgcount://{}", dir.to_string_lossy())).unwrap();
    let err = df.set_index_sorted("k", &scheduler).unwrap_err().to_string();
    assert!(err.contains("starts at 50 before the previous one ends at 99"), "{err}");
    assert_eq!(files_read(&dir).len(), 2);
    std::fs::remove_dir_all(&dir).unwrap();

    // A missing index value: the scan names it.
    let mut rows = keyed_rows(100..200);
    rows[7].k = None;
    let (dir, _) = keyed_files("missing", &[keyed_rows(0..100), rows], None);
    let df = read_parquet(&format!("rgcount://{}", dir.to_string_lossy())).unwrap();
    assert!(df.set_index_sorted("k", &scheduler).is_err());
    std::fs::remove_dir_all(&dir).unwrap();

    // No statistics: the scan computes the same divisions.
    let props = parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_row_count(Some(50))
        .set_statistics_enabled(parquet::file::properties::EnabledStatistics::None)
        .build();
    let (dir, batches) = keyed_files("nostats", &[keyed_rows(0..100), keyed_rows(100..200)], Some(props));
    let df = read_parquet(&format!("rgcount://{}", dir.to_string_lossy())).unwrap();
    files_read(&dir);
    let indexed = df.set_index_sorted("k", &scheduler).unwrap();
    assert_eq!(files_read(&dir).len(), 2, "scanned");
    let scanned = DataFrame::from_batches(batches).unwrap().set_index_sorted("k", &scheduler).unwrap();
    assert_eq!(indexed.divisions(), scanned.divisions());

    // A filter before set_index: the rows are not the files' any more, so they are scanned.
    let filtered = df.filter(&df.col("k").ge(10i64)).unwrap();
    let indexed = filtered.set_index_sorted("k", &scheduler).unwrap();
    assert_eq!(
        indexed.divisions(),
        &kiln_dataframe::Divisions::Known(vec![Scalar::Int(10), Scalar::Int(100), Scalar::Int(199)])
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---------------------------------------------------------------------------------------------
// A partition per row group.

#[test]
fn split_row_groups_gives_a_partition_per_row_group_with_the_same_rows() {
    // 200 rows in 4 groups, an empty file (no row groups), 120 rows in 3 groups.
    let (dir, _) = keyed_files("split", &[keyed_rows(0..200), Vec::new(), keyed_rows(200..320)], None);
    let url = format!("rgcount://{}", dir.to_string_lossy());
    let whole = read_parquet(&url).unwrap();
    let split = kiln_dataframe::read_parquet_split_row_groups(&url).unwrap();
    assert_eq!(whole.npartitions(), 3);
    assert_eq!(split.npartitions(), 4 + 1 + 3);
    assert!(split.explain().contains("3 file(s) in 8 partition(s), one per row group"), "{}", split.explain());
    files_read(&dir);
    assert_eq!(cells(&compute(&split)), cells(&compute(&whole)));
    groups_read(&dir);

    // Each partition is its own group, read once.
    let parts = split.partitions().compute_on(&LocalScheduler::default()).unwrap();
    let sizes: Vec<usize> = parts.iter().map(RecordBatch::num_rows).collect();
    assert_eq!(sizes, [50, 50, 50, 50, 0, 50, 50, 20]);
    assert_eq!(cells(&parts[5])[0].1[0].as_deref(), Some("200"));
    assert_eq!(groups_read(&dir), 7);

    // Filters still prune, per partition; answers equal the whole-file read's.
    let f = |df: &DataFrame| df.filter(&df.col("k").between(120i64, 260i64)).unwrap();
    assert_eq!(cells(&compute(&f(&split))), cells(&compute(&f(&whole))));

    // A file rewritten with fewer row groups after planning: an error naming it.
    write_parquet(&dir.join("part.2.parquet"), &table(&keyed_rows(200..240)), 50);
    let err = split.compute_on(&LocalScheduler::default()).unwrap_err().to_string();
    assert!(err.contains("part.2.parquet") && err.contains("asked of a file of 1 row groups"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
