//! How the Parquet reader asks storage for bytes: a row group's projected column chunks in one
//! coalesced `read_ranges` call (never page by page), the next row group announced with
//! `prefetch` before this one is read, and the same answers as a plain computation whatever the
//! projection's order. The storage is the local file system behind a scheme of this test's,
//! which counts the calls.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arrow::array::{ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema};
use kiln_dataframe::storage::{LocalStorage, Storage, StorageError, register_storage};
use kiln_dataframe::{Agg, read_parquet};
use kiln_graph::Collection;
use kiln_local::LocalScheduler;

/// Local files under `ranges://`, with every read counted.
#[derive(Default)]
struct Counted {
    single: AtomicU64,
    many: AtomicU64,
    ranges: Mutex<Vec<Range<u64>>>,
    prefetched: Mutex<Vec<Range<u64>>>,
}

fn local(path: &str) -> &str {
    path.trim_start_matches("ranges://")
}

impl Storage for Counted {
    fn list(&self, pattern: &str) -> Result<Vec<String>, StorageError> {
        Ok(LocalStorage.list(local(pattern))?.into_iter().map(|p| format!("ranges://{p}")).collect())
    }
    fn size(&self, path: &str) -> Result<u64, StorageError> {
        LocalStorage.size(local(path))
    }
    fn read_range(&self, path: &str, range: Range<u64>) -> Result<Vec<u8>, StorageError> {
        self.single.fetch_add(1, Ordering::SeqCst);
        LocalStorage.read_range(local(path), range)
    }
    fn read_ranges(&self, path: &str, ranges: &[Range<u64>]) -> Result<Vec<Vec<u8>>, StorageError> {
        self.many.fetch_add(1, Ordering::SeqCst);
        self.ranges.lock().unwrap().extend(ranges.iter().cloned());
        LocalStorage.read_ranges(local(path), ranges)
    }
    /// What a remote store says (kiln-object-store's gap), so that merging is tested here.
    fn coalesce_gap(&self) -> u64 {
        1 << 20
    }
    fn prefetch(&self, _path: &str, ranges: &[Range<u64>]) {
        self.prefetched.lock().unwrap().extend(ranges.iter().cloned());
    }
    fn write(&self, path: &str, bytes: &[u8]) -> Result<(), StorageError> {
        LocalStorage.write(local(path), bytes)
    }
    fn delete(&self, path: &str) -> Result<(), StorageError> {
        LocalStorage.delete(local(path))
    }
}

const ROWS: usize = 90_000;
const GROUP_ROWS: usize = 15_000;

fn value(column: usize, row: usize) -> f64 {
    ((row * (column + 7)) % 9973) as f64 * 0.25
}

/// Five columns (a, b, d, e float, c integer), row groups of `group_rows`, pages of 500 rows,
/// plain-encoded and uncompressed so that chunk sizes are known.
fn write_file(path: &std::path::Path, rows: usize, group_rows: usize, c_step: usize) {
    let schema = Arc::new(Schema::new(
        ["a", "b", "c", "d", "e"]
            .map(|n| Field::new(n, if n == "c" { DataType::Int64 } else { DataType::Float64 }, true))
            .to_vec(),
    ));
    let columns: Vec<ArrayRef> = (0..5)
        .map(|k| -> ArrayRef {
            if k == 2 {
                Arc::new(Int64Array::from_iter_values((0..rows).map(|i| (i * c_step) as i64)))
            } else {
                Arc::new(Float64Array::from_iter_values((0..rows).map(|i| value(k, i))))
            }
        })
        .collect();
    let batch = RecordBatch::try_new(schema.clone(), columns).unwrap();
    let properties = parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_row_count(Some(group_rows))
        .set_data_page_row_count_limit(500)
        .set_write_batch_size(500)
        .set_dictionary_enabled(false)
        .set_compression(parquet::basic::Compression::UNCOMPRESSED)
        .build();
    let file = std::fs::File::create(path).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, schema, Some(properties)).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

fn storage() -> Arc<Counted> {
    static STORAGE: std::sync::OnceLock<Arc<Counted>> = std::sync::OnceLock::new();
    STORAGE
        .get_or_init(|| {
            let storage = Arc::new(Counted::default());
            register_storage("ranges", storage.clone());
            storage
        })
        .clone()
}

/// Tests of this binary share the counting storage: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

#[test]
fn a_projected_read_asks_once_per_row_group_and_announces_the_next() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = std::env::temp_dir().join(format!("kiln-parquet-ranges-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("near.parquet");
    write_file(&path, ROWS, GROUP_ROWS, 1);
    let storage = storage();
    let url = format!("ranges://{}", path.display());
    let (single, many) = (storage.single.load(Ordering::SeqCst), storage.many.load(Ordering::SeqCst));
    storage.ranges.lock().unwrap().clear();
    storage.prefetched.lock().unwrap().clear();

    // d before b: the answer comes in the order asked.
    let frame = read_parquet(&url).unwrap().select(&["d", "b"]).unwrap();
    let out = frame.agg([Agg::sum("d"), Agg::sum("b")]).unwrap().compute_on(&LocalScheduler::new()).unwrap();
    let sum = |k: usize| (0..ROWS).map(|i| value(k, i)).sum::<f64>();
    assert_eq!(out.column(0).as_primitive::<Float64Type>().value(0), sum(3));
    assert_eq!(out.column(1).as_primitive::<Float64Type>().value(0), sum(1));

    // One read_ranges call and one range per row group (c, 120 KB, lies between b and d, well
    // inside the merging gap), each of the next five announced before the one before it is
    // read; the footers are the only single reads (planning and the task read them, 2 each),
    // none per page (30 a chunk).
    let groups = ROWS / GROUP_ROWS;
    assert_eq!(storage.many.load(Ordering::SeqCst) - many, groups as u64);
    let ranges = storage.ranges.lock().unwrap().clone();
    assert_eq!(ranges.len(), groups, "{ranges:?}");
    assert_eq!(*storage.prefetched.lock().unwrap(), ranges[1..], "each row group after the first is announced");
    let single_reads = storage.single.load(Ordering::SeqCst) - single;
    assert!(single_reads <= 4, "{single_reads} single reads besides the row groups' ranges");
    // Each range covers b through d of its row group and nothing of a or e.
    let size = std::fs::metadata(&path).unwrap().len();
    let fetched: u64 = ranges.iter().map(|r| r.end - r.start).sum();
    assert!(fetched < size * 7 / 10, "{fetched} of {size} bytes fetched for 3 of 5 columns");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn chunks_far_apart_are_separate_ranges_and_every_column_reads_back_exactly() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = std::env::temp_dir().join(format!("kiln-parquet-far-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("far.parquet");
    // 2 row groups of 150,000 rows: each column chunk is 1.2 MB, so b, c and d between a and e
    // are a gap too wide to fetch for nothing.
    let (rows, group_rows) = (300_000, 150_000);
    write_file(&path, rows, group_rows, 3);
    let storage = storage();
    let url = format!("ranges://{}", path.display());
    let sum = |k: usize| (0..rows).map(|i| value(k, i)).sum::<f64>();

    storage.ranges.lock().unwrap().clear();
    let frame = read_parquet(&url).unwrap();
    let ends = frame.agg([Agg::sum("a"), Agg::sum("e")]).unwrap().compute_on(&LocalScheduler::new()).unwrap();
    assert_eq!(ends.column(0).as_primitive::<Float64Type>().value(0), sum(0));
    assert_eq!(ends.column(1).as_primitive::<Float64Type>().value(0), sum(4));
    assert_eq!(storage.ranges.lock().unwrap().len(), 4, "a and e apart in each of 2 row groups");

    storage.ranges.lock().unwrap().clear();
    let all = frame
        .agg([Agg::sum("a"), Agg::sum("b"), Agg::sum("c"), Agg::sum("d"), Agg::sum("e")])
        .unwrap()
        .compute_on(&LocalScheduler::new())
        .unwrap();
    for (position, k) in [(0, 0), (1, 1), (3, 3), (4, 4)] {
        assert_eq!(all.column(position).as_primitive::<Float64Type>().value(0), sum(k), "column {k}");
    }
    let c: i64 = (0..rows).map(|i| (i * 3) as i64).sum();
    assert_eq!(all.column(2).as_primitive::<Int64Type>().value(0), c);
    assert_eq!(storage.ranges.lock().unwrap().len(), 2, "a whole row group is one range");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_selective_filter_gives_the_same_rows_with_one_request_per_row_group() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = std::env::temp_dir().join(format!("kiln-parquet-rowfilter-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("filtered.parquet");
    write_file(&path, ROWS, GROUP_ROWS, 1);
    let storage = storage();
    let url = format!("ranges://{}", path.display());
    let many = storage.many.load(Ordering::SeqCst);
    storage.ranges.lock().unwrap().clear();

    // c is the row number: the first row group keeps 1,000 of its 15,000 rows, the fifth
    // 1,500, the rest none.
    let keep = |c: usize| c < 1_000 || (60_000..61_500).contains(&c);
    let frame = read_parquet(&url).unwrap();
    let c = frame.col("c");
    let kept = frame.filter(&(c.lt(1_000i64) | (c.ge(60_000i64) & c.lt(61_500i64)))).unwrap();
    // d before b, and a step after the filter.
    let kept = kept.select(&["d", "b"]).unwrap();
    let out = kept
        .agg([Agg::sum("d"), Agg::sum("b"), Agg::size().alias("rows")])
        .unwrap()
        .compute_on(&LocalScheduler::new())
        .unwrap();
    let sum = |k: usize| (0..ROWS).filter(|&i| keep(i)).map(|i| value(k, i)).sum::<f64>();
    assert_eq!(out.column(0).as_primitive::<Float64Type>().value(0), sum(3));
    assert_eq!(out.column(1).as_primitive::<Float64Type>().value(0), sum(1));
    assert_eq!(out.column(2).as_primitive::<Int64Type>().value(0), 2_500);
    // The kept rows themselves, in file order, equal the plain filter's.
    let rows = kept.compute_on(&LocalScheduler::new()).unwrap();
    let expected: Vec<f64> = (0..ROWS).filter(|&i| keep(i)).map(|i| value(3, i)).collect();
    assert_eq!(rows.column(0).as_primitive::<Float64Type>().values().to_vec(), expected);
    // One request per row group read, for each of the two computations: the statistics of c
    // rule out every row group but the first and the fifth.
    assert_eq!(storage.many.load(Ordering::SeqCst) - many, 2 * 2);
    std::fs::remove_dir_all(dir).unwrap();
}
