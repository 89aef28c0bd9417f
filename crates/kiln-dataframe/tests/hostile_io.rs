//! Hostile and degenerate input to the readers and writers: empty and header-only files,
//! line-ending and encoding oddities, damaged compressed and Parquet files, schemas that
//! disagree, types kiln does not compute on, and round trips of awkward values. Bad input
//! must give an error naming the file (and the line and column where there is one), never a
//! panic, a hang, or other rows; good but odd input gives pandas' answer (stated in each test,
//! as pandas 3.1 gives it for the same bytes).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arrow::array::{
    Array, ArrayRef, AsArray, DictionaryArray, Float64Array, Int32Array, Int64Array, LargeStringArray, ListArray,
    RecordBatch, StringArray, StringViewArray, StructArray, TimestampMicrosecondArray, TimestampMillisecondArray,
    TimestampNanosecondArray,
};
use arrow::datatypes::{DataType, Field, Float64Type, Int32Type, Int64Type, Schema, TimeUnit, TimestampNanosecondType};
use kiln_dataframe::storage::{LocalStorage, Storage, StorageError, register_storage};
use kiln_dataframe::{Agg, CsvOptions, DType, DataFrame, DataFrameError, read_csv, read_parquet};
use kiln_graph::{Collection, ComputeError, TaskError};
use kiln_local::LocalScheduler;

/// A fresh directory for one test.
fn temp_dir(name: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("kiln-hostile-io-{}-{name}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path.to_string_lossy().into_owned()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn scheduler() -> LocalScheduler {
    LocalScheduler::threads(2)
}

fn compute(df: &DataFrame) -> Result<RecordBatch, ComputeError> {
    df.compute_on(&scheduler())
}

fn len(df: &DataFrame) -> Result<u64, ComputeError> {
    df.len().compute_on(&scheduler()).map(|n| n as u64)
}

fn head(df: &DataFrame, n: usize) -> Result<RecordBatch, ComputeError> {
    df.head(n).compute_on(&scheduler())
}

/// The message of a computation that must fail in a task (not by a panic).
fn task_message(err: ComputeError) -> String {
    match err {
        ComputeError::Task { error: TaskError::Panicked(message), .. } => panic!("a task panicked: {message}"),
        ComputeError::Task { error: TaskError::Failed(message), .. } => message,
        ComputeError::Task { error: TaskError::At { error, .. }, .. } => {
            assert!(!matches!(*error, TaskError::Panicked(_)), "a task panicked: {error}");
            error.to_string()
        }
        other => panic!("expected a failed task, got {other:?}"),
    }
}

fn names(df: &DataFrame) -> Vec<String> {
    df.columns()
}

fn types(df: &DataFrame) -> Vec<DataType> {
    df.schema().fields().iter().map(|f| f.data_type().clone()).collect()
}

fn ints(batch: &RecordBatch, column: &str) -> Vec<Option<i64>> {
    batch.column_by_name(column).unwrap().as_primitive::<Int64Type>().iter().collect()
}

fn floats(batch: &RecordBatch, column: &str) -> Vec<Option<f64>> {
    batch.column_by_name(column).unwrap().as_primitive::<Float64Type>().iter().collect()
}

fn strings(batch: &RecordBatch, column: &str) -> Vec<Option<String>> {
    let array = arrow::compute::cast(batch.column_by_name(column).unwrap(), &DataType::Utf8).unwrap();
    array.as_string::<i32>().iter().map(|s| s.map(str::to_string)).collect()
}

fn csv(pattern: &str, blocksize: Option<u64>) -> Result<DataFrame, DataFrameError> {
    read_csv(pattern, &CsvOptions::default().blocksize(blocksize))
}

// ---------------------------------------------------------------------------------------------
// CSV

#[test]
fn a_header_only_file_is_an_empty_frame_of_string_columns_as_in_pandas() {
    // pandas: columns ['a', 'b'] of dtype object, no rows; with or without the last line break.
    let dir = temp_dir("header-only");
    for (name, text) in [("lf.csv", "a,b\n"), ("bare.csv", "a,b"), ("crlf.csv", "a,b\r\n")] {
        let path = write(&dir, name, text.as_bytes());
        for blocksize in [None, Some(1)] {
            let df = csv(&path, blocksize).unwrap();
            assert_eq!(names(&df), ["a", "b"], "{name}");
            assert_eq!(types(&df), [DataType::Utf8, DataType::Utf8], "{name}");
            assert_eq!(compute(&df).unwrap().num_rows(), 0, "{name}");
            assert_eq!(len(&df).unwrap(), 0, "{name}");
            assert_eq!(head(&df, 5).unwrap().num_rows(), 0, "{name}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_glob_with_header_only_and_empty_files_among_others_reads_the_others_rows() {
    let dir = temp_dir("glob-empty");
    write(&dir, "a.csv", b"x,y\n1,2\n3,4\n");
    write(&dir, "b.csv", b"x,y\n");
    write(&dir, "c.csv", b"");
    write(&dir, "d.csv", b"x,y\n5,6");
    let pattern = format!("{}/*.csv", dir.display());
    // Dask's default blocksize skips the empty file; the header-only one gives no rows.
    let df = csv(&pattern, Some(kiln_dataframe::DEFAULT_BLOCKSIZE)).unwrap();
    assert_eq!(df.npartitions(), 3);
    let out = compute(&df).unwrap();
    assert_eq!(ints(&out, "x"), [Some(1), Some(3), Some(5)]);
    assert_eq!(ints(&out, "y"), [Some(2), Some(4), Some(6)]);
    assert_eq!(len(&df).unwrap(), 3);
    assert_eq!(ints(&head(&df, 1).unwrap(), "y"), [Some(2)]);
    // One partition per file reads the empty one and fails naming it, as pandas does.
    let whole = csv(&pattern, None).unwrap();
    let message = task_message(compute(&whole).unwrap_err());
    assert!(message.contains("c.csv") && message.contains("empty"), "{message}");
    let message = task_message(len(&whole).unwrap_err());
    assert!(message.contains("c.csv") && message.contains("empty"), "{message}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_row_with_too_few_fields_past_the_sample_names_the_file_and_line() {
    let dir = temp_dir("too-few");
    let mut text = String::from("id,name,score\n");
    for i in 0..300 {
        if i == 250 {
            text.push_str("250,short\n");
        } else {
            text.push_str(&format!("{i},n{i},{i}.5\n"));
        }
    }
    let path = write(&dir, "few.csv", text.as_bytes());
    for blocksize in [None, Some(500)] {
        let options = CsvOptions::default().sample_rows(10).blocksize(blocksize);
        let df = read_csv(&path, &options).unwrap();
        for failing in [compute(&df).map(|_| ()), len(&df).map(|_| ())] {
            let message = task_message(failing.unwrap_err());
            assert!(
                message.contains(&path) && message.contains("line 252") && message.contains("found 2"),
                "{message}"
            );
        }
        // A first block before the row still answers head.
        if blocksize.is_some() {
            assert_eq!(ints(&head(&df, 2).unwrap(), "id"), [Some(0), Some(1)]);
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn crlf_line_ends_leave_no_carriage_return_in_the_last_column() {
    // pandas: name ["plain", "quoted, \"x\"", NaN, "two\r\nlines", "end"], the last row
    // without its line break.
    let dir = temp_dir("crlf");
    let mut text = String::from("id,name\r\n");
    let rows = ["1,plain", "2,\"quoted, \"\"x\"\"\"", "3,", "4,\"two\r\nlines\"", "5,end"];
    // Many rows so a small blocksize cuts between \r and \n and between records.
    // Only the first copy holds a quoted line break, so most blocksizes can split the file.
    for copy in 0..40 {
        for row in rows {
            let row = if copy > 0 { row.replace("\r\n", " ") } else { row.to_string() };
            text.push_str(&row.replacen(char::is_numeric, &format!("{copy}"), 1));
            text.push_str("\r\n");
        }
    }
    text.truncate(text.len() - 2);
    let path = write(&dir, "crlf.csv", text.as_bytes());
    let expected: Vec<Option<String>> = (0..40)
        .flat_map(|copy| {
            let two = if copy == 0 { "two\r\nlines" } else { "two lines" };
            [Some("plain"), Some("quoted, \"x\""), None, Some(two), Some("end")].map(|s| s.map(str::to_string))
        })
        .collect();
    let mut ran = 0;
    for blocksize in [None, Some(7), Some(31), Some(64), Some(200)] {
        let df = csv(&path, blocksize).unwrap();
        assert_eq!(names(&df), ["id", "name"]);
        match compute(&df) {
            Ok(out) => {
                assert_eq!(strings(&out, "name"), expected, "blocksize {blocksize:?}");
                ran += 1;
            }
            // A block boundary inside the quoted line break is refused, never read wrong.
            Err(e) => {
                let message = task_message(e);
                assert!(message.contains("blocksize=None"), "{message}");
            }
        }
    }
    assert!(ran >= 2);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn carriage_returns_alone_end_lines_as_in_pandas() {
    // Classic Mac line ends: pandas reads `a,b\r1,2\r3,4\r` as two rows of int64.
    let dir = temp_dir("cr");
    let path = write(&dir, "cr.csv", b"a,b\r1,2\r3,x\r");
    for blocksize in [None, Some(4)] {
        match csv(&path, blocksize).map(|df| (compute(&df), df)) {
            Ok((Ok(out), df)) => {
                assert_eq!(names(&df), ["a", "b"]);
                assert_eq!(ints(&out, "a"), [Some(1), Some(3)]);
                assert_eq!(strings(&out, "b"), [Some("2".to_string()), Some("x".to_string())]);
            }
            Ok((Err(e), _)) => {
                let message = task_message(e);
                assert!(message.contains(&path) && message.contains("carriage return"), "{message}");
            }
            Err(e) => {
                let message = e.to_string();
                assert!(message.contains(&path) && message.contains("carriage return"), "{message}");
            }
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_utf8_byte_order_mark_is_not_part_of_the_first_column() {
    // pandas: columns ['id', 'x'] of int64; without a header the first field reads as 1.
    let dir = temp_dir("bom");
    let path = write(&dir, "bom.csv", b"\xef\xbb\xbfid,x\n1,2\n3,4\n");
    for blocksize in [None, Some(6)] {
        let df = csv(&path, blocksize).unwrap();
        assert_eq!(names(&df), ["id", "x"]);
        assert_eq!(types(&df), [DataType::Int64, DataType::Int64]);
        assert_eq!(ints(&compute(&df).unwrap(), "id"), [Some(1), Some(3)]);
        assert_eq!(ints(&head(&df, 1).unwrap(), "id"), [Some(1)]);
        assert_eq!(len(&df).unwrap(), 2);
    }
    let path = write(&dir, "bare.csv", b"\xef\xbb\xbf1,2\n3,4\n");
    for blocksize in [None, Some(4)] {
        let df = read_csv(&path, &CsvOptions::default().has_header(false).blocksize(blocksize)).unwrap();
        assert_eq!(types(&df), [DataType::Int64, DataType::Int64]);
        assert_eq!(ints(&compute(&df).unwrap(), "column_1"), [Some(1), Some(3)]);
    }
    // Gzipped too.
    let path = write(&dir, "bom.csv.gz", &gzip(b"\xef\xbb\xbfid,x\n1,2\n"));
    let df = csv(&path, None).unwrap();
    assert_eq!(names(&df), ["id", "x"]);
    assert_eq!(ints(&compute(&df).unwrap(), "id"), [Some(1)]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn invalid_utf8_in_a_string_column_names_the_file_line_and_column() {
    // pandas raises UnicodeDecodeError for the file; kiln names where.
    let dir = temp_dir("utf8");
    let mut text = b"id,name\n".to_vec();
    for i in 0..200 {
        if i == 150 {
            text.extend_from_slice(b"150,caf\xe9\n");
        } else {
            text.extend_from_slice(format!("{i},n{i}\n").as_bytes());
        }
    }
    let path = write(&dir, "latin1.csv", &text);
    for blocksize in [None, Some(300)] {
        let df = read_csv(&path, &CsvOptions::default().sample_rows(20).blocksize(blocksize)).unwrap();
        let message = task_message(compute(&df).unwrap_err());
        assert!(message.contains(&path) && message.contains("line 152") && message.contains("name"), "{message}");
        // The other column reads.
        assert_eq!(compute(&df.select(&["id"]).unwrap()).unwrap().num_rows(), 200);
        assert_eq!(len(&df).unwrap(), 200);
    }
    // Inside the sample, planning fails naming the file.
    let err = read_csv(&path, &CsvOptions::default()).unwrap_err().to_string();
    assert!(err.contains(&path), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_truncated_or_false_gzip_file_is_an_error_naming_it() {
    let dir = temp_dir("gzip-bad");
    let mut text = String::from("id,value\n");
    for i in 0..400_000 {
        text.push_str(&format!("{i},{}\n", i % 97));
    }
    let whole = gzip(text.as_bytes());
    // Cut inside the sample: read_csv fails; cut after it: the partition fails.
    let small = write(&dir, "small.csv.gz", &gzip(b"a,b\n1,2\n3,4\n")[..20]);
    let err = csv(&small, None).unwrap_err().to_string();
    assert!(err.contains(&small) && err.contains("gzip"), "{err}");
    let cut = write(&dir, "cut.csv.gz", &whole[..whole.len() - 100]);
    let df = csv(&cut, None).unwrap();
    for message in [task_message(compute(&df).unwrap_err()), task_message(len(&df).unwrap_err())] {
        assert!(message.contains(&cut) && message.contains("gzip"), "{message}");
    }
    let plain = write(&dir, "plain.csv.gz", b"a,b\n1,2\n");
    let err = csv(&plain, None).unwrap_err().to_string();
    assert!(err.contains(&plain) && err.contains("gzip"), "{err}");
    // An empty compressed file is pandas' EmptyDataError, as an empty plain one.
    let empty = write(&dir, "empty.csv.gz", &gzip(b""));
    let err = csv(&empty, None).unwrap_err().to_string();
    assert!(err.contains(&empty) && err.contains("empty"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn every_member_of_a_multi_member_gzip_file_is_read() {
    // `cat a.gz b.gz > c.gz` (and pigz, bgzip) make files of several members; Python's gzip,
    // so pandas, reads them all: 4 rows.
    let dir = temp_dir("gzip-members");
    let mut bytes = gzip(b"a,b\n1,2\n3,4\n");
    bytes.extend(gzip(b"5,6\n7,8\n"));
    let path = write(&dir, "members.csv.gz", &bytes);
    let df = csv(&path, None).unwrap();
    assert_eq!(ints(&compute(&df).unwrap(), "a"), [Some(1), Some(3), Some(5), Some(7)]);
    assert_eq!(len(&df).unwrap(), 4);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_type_that_changes_after_the_sample_names_the_column_and_line_and_dtype_reads_it() {
    let dir = temp_dir("late-type");
    let mut text = String::from("id,code\n");
    for i in 0..100_000 {
        text.push_str(&format!("{i},{}\n", i % 13));
    }
    text.push_str("100000,x\n");
    let path = write(&dir, "late.csv", text.as_bytes());
    for blocksize in [None, Some(200_000)] {
        let df = csv(&path, blocksize).unwrap();
        assert_eq!(types(&df), [DataType::Int64, DataType::Int64]);
        let message = task_message(compute(&df).unwrap_err());
        assert!(
            message.contains(&path)
                && message.contains("line 100002")
                && message.contains("'x'")
                && message.contains("code")
                && message.contains("dtype"),
            "{message}"
        );
        // The documented override: `dtype=` reads the column as text.
        let df = read_csv(&path, &CsvOptions::default().dtype("code", DType::Utf8).blocksize(blocksize)).unwrap();
        let out = compute(&df).unwrap();
        assert_eq!(out.num_rows(), 100_001);
        assert_eq!(strings(&out, "code")[100_000], Some("x".to_string()));
        assert_eq!(len(&df).unwrap(), 100_001);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn duplicate_and_empty_column_names_are_renamed_as_pandas_does() {
    // pandas: a,a,b,a.1 -> a, a.2, b, a.1 (a name already taken is skipped); an empty name is
    // "Unnamed: <position>".
    let dir = temp_dir("dup-names");
    let path = write(&dir, "dup.csv", b"a,a,b,a.1,\n1,2,3,4,5\n");
    let df = csv(&path, None).unwrap();
    assert_eq!(names(&df), ["a", "a.2", "b", "a.1", "Unnamed: 4"]);
    let out = compute(&df).unwrap();
    assert_eq!(ints(&out, "a.2"), [Some(2)]);
    assert_eq!(ints(&out, "Unnamed: 4"), [Some(5)]);
    let sum = df.col("a.2").sum().compute_on(&scheduler()).unwrap();
    assert_eq!(sum, 2i64.into());
    // Written and read back under the new names.
    df.to_parquet(&dir.join("pq").to_string_lossy()).compute_on(&scheduler()).unwrap();
    let back = read_parquet(&dir.join("pq").to_string_lossy()).unwrap();
    assert_eq!(names(&back), names(&df));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_glob_matching_no_files_or_an_empty_directory_is_no_files() {
    let dir = temp_dir("no-files");
    std::fs::create_dir_all(dir.join("sub.csv")).unwrap();
    for pattern in [format!("{}/*.csv", dir.display()), dir.display().to_string()] {
        assert_eq!(csv(&pattern, None).err(), Some(DataFrameError::NoFiles { pattern: pattern.clone() }));
        assert_eq!(read_parquet(&pattern).err(), Some(DataFrameError::NoFiles { pattern: pattern.clone() }));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unparseable_dates_name_the_column_and_line() {
    let dir = temp_dir("dates");
    let path = write(&dir, "dates.csv", b"id,ts\n1,2013-01-01 10:00:00\n2,\n3,yesterday\n");
    for blocksize in [None, Some(12)] {
        let df = read_csv(&path, &CsvOptions::default().parse_dates(["ts"]).blocksize(blocksize)).unwrap();
        assert_eq!(types(&df)[1], DataType::Timestamp(TimeUnit::Nanosecond, None));
        let message = task_message(compute(&df).unwrap_err());
        assert!(
            message.contains(&path)
                && message.contains("line 4")
                && message.contains("'yesterday'")
                && message.contains("ts"),
            "{message}"
        );
        assert_eq!(len(&df.select(&["id"]).unwrap()).unwrap(), 3);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn infinities_and_columns_of_only_missing_values_are_floats_as_in_pandas() {
    // pandas: b float64 [inf, -inf, inf, 1.5, inf]; c (all missing) float64; d (no value in the
    // sample but one after it) float64 too.
    let dir = temp_dir("inf");
    let path = write(&dir, "inf.csv", b"a,b,c,d\n1,inf,,\n2,-inf,NA,\n3,Infinity,,\n4,1.5,,\n5,INF,,\n6,+inf,,2.5\n");
    let df = read_csv(&path, &CsvOptions::default().sample_rows(5)).unwrap();
    assert_eq!(types(&df), [DataType::Int64, DataType::Float64, DataType::Float64, DataType::Float64]);
    let out = compute(&df).unwrap();
    let inf = f64::INFINITY;
    assert_eq!(floats(&out, "b"), [Some(inf), Some(-inf), Some(inf), Some(1.5), Some(inf), Some(inf)]);
    assert_eq!(out.column_by_name("c").unwrap().null_count(), 6);
    assert_eq!(floats(&out, "d"), [None, None, None, None, None, Some(2.5)]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_sample_that_ends_inside_a_quoted_line_break_does_not_fail_inference() {
    // Rows of ~3 KB with quoted line breaks: the first MiB read for inference ends inside one.
    let dir = temp_dir("sample-cut");
    let mut text = String::from("id,note\n");
    let filler = "word ".repeat(300);
    for i in 0..800 {
        text.push_str(&format!("{i},\"{filler}\n{filler}\n{i}\"\n"));
    }
    let path = write(&dir, "notes.csv", text.as_bytes());
    let df = csv(&path, None).unwrap();
    assert_eq!(types(&df), [DataType::Int64, DataType::Utf8]);
    assert_eq!(len(&df).unwrap(), 800);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn blank_lines_before_the_header_and_lines_of_spaces_are_skipped_as_in_pandas() {
    // pandas: columns ['a', 'b'], rows [[1, 2], [3, 4]] (skip_blank_lines).
    let dir = temp_dir("blank");
    let path = write(&dir, "blank.csv", b"\n\na,b\n1,2\n   \n\t\n3,4\n");
    for blocksize in [None, Some(5)] {
        let df = csv(&path, blocksize).unwrap();
        assert_eq!(names(&df), ["a", "b"]);
        let out = compute(&df).unwrap();
        assert_eq!(ints(&out, "a"), [Some(1), Some(3)]);
        assert_eq!(ints(&out, "b"), [Some(2), Some(4)]);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_csv_as_pandas_writes_nan_inf_and_awkward_strings_reads_as_pandas_reads_it() {
    // pandas' to_csv of i [1, None, 3, 4, 5, 6], f [nan, inf, -inf, None, 0.0, -0.0] and
    // s ["", None, "a,b", 'say "hi"', "two\nlines", "é"]; read_csv gives the values below (the
    // empty string comes back missing in pandas too).
    let text = "i,f,s\n1.0,,\n,inf,\n3.0,-inf,\"a,b\"\n4.0,,\"say \"\"hi\"\"\"\n5.0,0.0,\"two\nlines\"\n6.0,-0.0,é\n";
    let dir = temp_dir("pandas-csv");
    let path = write(&dir, "p.csv", text.as_bytes());
    let df = csv(&path, None).unwrap();
    assert_eq!(types(&df), [DataType::Float64, DataType::Float64, DataType::Utf8]);
    let out = compute(&df).unwrap();
    assert_eq!(floats(&out, "i"), [Some(1.0), None, Some(3.0), Some(4.0), Some(5.0), Some(6.0)]);
    let f = floats(&out, "f");
    assert_eq!(f[..4], [None, Some(f64::INFINITY), Some(f64::NEG_INFINITY), None]);
    assert!(f[4] == Some(0.0) && f[4].unwrap().is_sign_positive() && f[5].unwrap().is_sign_negative());
    let s: Vec<Option<String>> = [None, None, Some("a,b"), Some("say \"hi\""), Some("two\nlines"), Some("é")]
        .map(|s| s.map(String::from))
        .into();
    assert_eq!(strings(&out, "s"), s);
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Parquet

fn write_parquet(path: &Path, batches: &[RecordBatch], schema: Arc<Schema>, rows_per_group: Option<usize>) {
    let mut props = parquet::file::properties::WriterProperties::builder();
    if let Some(rows) = rows_per_group {
        props = props.set_max_row_group_row_count(Some(rows));
    }
    let file = std::fs::File::create(path).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, schema, Some(props.build())).unwrap();
    for batch in batches {
        writer.write(batch).unwrap();
        // One row group per batch when asked for small groups.
        if rows_per_group.is_some() {
            writer.flush().unwrap();
        }
    }
    writer.close().unwrap();
}

fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
    let fields: Vec<Field> = columns.iter().map(|(n, a)| Field::new(*n, a.data_type().clone(), true)).collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns.into_iter().map(|(_, a)| a).collect()).unwrap()
}

fn simple(ids: &[i64]) -> RecordBatch {
    batch(vec![
        ("id", Arc::new(Int64Array::from(ids.to_vec())) as ArrayRef),
        ("name", Arc::new(StringArray::from(ids.iter().map(|i| format!("n{i}")).collect::<Vec<_>>()))),
    ])
}

fn parquet_error(result: Result<DataFrame, DataFrameError>, file: &str) {
    match result {
        Err(DataFrameError::Parquet { path, message }) => assert!(path == file && !message.is_empty(), "{message}"),
        other => panic!("expected a Parquet error naming {file}, got {:?}", other.map(|d| d.to_string())),
    }
}

#[test]
fn empty_truncated_and_foreign_parquet_files_are_errors_naming_them() {
    let dir = temp_dir("pq-bad");
    let good = simple(&[1, 2, 3]);
    write_parquet(&dir.join("a.parquet"), std::slice::from_ref(&good), good.schema(), None);
    let bytes = std::fs::read(dir.join("a.parquet")).unwrap();
    let n = bytes.len();
    // The footer length points before the file's start.
    let mut lying = bytes[..n - 8].to_vec();
    lying.extend_from_slice(&(u32::MAX / 2).to_le_bytes());
    lying.extend_from_slice(b"PAR1");
    // The metadata itself cut short: the length says more than is there.
    let mut short = bytes[..n - 8].to_vec();
    short.drain(4..n / 2);
    short.extend_from_slice(&bytes[n - 8..]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty.parquet", Vec::new()),
        ("magic.parquet", b"PAR1".to_vec()),
        ("cut.parquet", bytes[..n - 5].to_vec()),
        ("half.parquet", bytes[..n / 2].to_vec()),
        ("lying.parquet", lying),
        ("short.parquet", short),
        ("csv.parquet", b"id,name\n1,a\n".to_vec()),
    ];
    for (name, content) in &cases {
        let path = write(&dir, name, content);
        parquet_error(read_parquet(&path), &path);
    }
    // A damaged file after a good one: the plan (from the first) stands, its partition fails
    // naming it; head reads the first only.
    for (name, content) in &cases {
        let sub = dir.join(format!("glob-{name}"));
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::copy(dir.join("a.parquet"), sub.join("a.parquet")).unwrap();
        let bad = write(&sub, "b.parquet", content);
        let df = read_parquet(&sub.to_string_lossy()).unwrap();
        for message in [task_message(compute(&df).unwrap_err()), task_message(len(&df).unwrap_err())] {
            assert!(message.contains(&bad), "{message}");
        }
        assert_eq!(ints(&head(&df, 2).unwrap(), "id"), [Some(1), Some(2)]);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn damaged_parquet_bytes_give_errors_never_panics() {
    // Every byte of a small file flipped in turn: reading either works or fails naming the
    // file, in planning and in the partition.
    let dir = temp_dir("pq-flip");
    let data = batch(vec![
        ("id", Arc::new(Int64Array::from((0..40).collect::<Vec<i64>>())) as ArrayRef),
        ("x", Arc::new(Float64Array::from((0..40).map(|i| (i % 7) as f64 / 2.0).collect::<Vec<_>>()))),
        ("s", Arc::new(StringArray::from((0..40).map(|i| format!("v{}", i % 5)).collect::<Vec<_>>()))),
    ]);
    let path = dir.join("f.parquet");
    write_parquet(&path, &[data.slice(0, 20), data.slice(20, 20)], data.schema(), Some(20));
    let bytes = std::fs::read(&path).unwrap();
    let target = dir.join("g.parquet");
    let target_str = target.to_string_lossy().into_owned();
    let mut panics = Vec::new();
    for at in 0..bytes.len() {
        let mut flipped = bytes.clone();
        flipped[at] ^= 0x5a;
        std::fs::write(&target, &flipped).unwrap();
        let outcome = std::panic::catch_unwind(|| match read_parquet(&target_str) {
            Ok(df) => match compute(&df) {
                Ok(_) => None,
                Err(ComputeError::Task { error, .. }) => {
                    let text = error.to_string();
                    (text.contains("panicked") || !text.contains(&target_str)).then_some(text)
                }
                Err(other) => Some(other.to_string()),
            },
            Err(DataFrameError::Parquet { path, .. } | DataFrameError::Io { path, .. }) if path == target_str => None,
            Err(other) => Some(other.to_string()),
        });
        match outcome {
            Ok(None) => {}
            Ok(Some(text)) => panics.push((at, text)),
            Err(_) => panics.push((at, "planning panicked".to_string())),
        }
    }
    assert!(panics.is_empty(), "{} of {} flips: {:?}", panics.len(), bytes.len(), &panics[..panics.len().min(5)]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_parquet_file_of_no_row_groups_reads_as_an_empty_frame_with_its_schema() {
    let dir = temp_dir("pq-empty");
    let schema = simple(&[]).schema();
    write_parquet(&dir.join("a.parquet"), &[], schema.clone(), None);
    write_parquet(&dir.join("b.parquet"), &[simple(&[])], schema.clone(), None);
    let a = dir.join("a.parquet").to_string_lossy().into_owned();
    let df = read_parquet(&a).unwrap();
    assert_eq!(names(&df), ["id", "name"]);
    assert_eq!(types(&df), [DataType::Int64, DataType::Utf8]);
    assert_eq!(compute(&df).unwrap().num_rows(), 0);
    assert_eq!(len(&df).unwrap(), 0);
    assert_eq!(head(&df, 3).unwrap().num_rows(), 0);
    let kept = df.filter(&df.col("id").gt(0)).unwrap();
    assert_eq!(compute(&kept).unwrap().num_rows(), 0);
    // Among other files.
    write_parquet(&dir.join("c.parquet"), &[simple(&[7, 8])], schema, None);
    let all = read_parquet(&dir.to_string_lossy()).unwrap();
    assert_eq!(all.npartitions(), 3);
    assert_eq!(ints(&compute(&all).unwrap(), "id"), [Some(7), Some(8)]);
    assert_eq!(len(&all).unwrap(), 2);
    assert_eq!(head(&all, 1).unwrap().num_rows(), 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn parquet_files_that_disagree_in_a_type_or_a_column_are_named() {
    let dir = temp_dir("pq-disagree");
    let first = simple(&[1, 2]);
    write_parquet(&dir.join("a.parquet"), std::slice::from_ref(&first), first.schema(), None);
    let retyped = batch(vec![
        ("id", Arc::new(Float64Array::from(vec![1.5])) as ArrayRef),
        ("name", Arc::new(StringArray::from(vec!["x"]))),
    ]);
    let fewer = batch(vec![("id", Arc::new(Int64Array::from(vec![3])) as ArrayRef)]);
    let reordered = batch(vec![
        ("name", Arc::new(StringArray::from(vec!["x"])) as ArrayRef),
        ("id", Arc::new(Int64Array::from(vec![3]))),
    ]);
    for (name, other) in [("retyped", retyped), ("fewer", fewer), ("reordered", reordered)] {
        let sub = dir.join(name);
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::copy(dir.join("a.parquet"), sub.join("a.parquet")).unwrap();
        write_parquet(&sub.join("b.parquet"), std::slice::from_ref(&other), other.schema(), None);
        let df = read_parquet(&sub.to_string_lossy()).unwrap();
        let bad = sub.join("b.parquet").to_string_lossy().into_owned();
        for result in
            [compute(&df).map(|_| ()), len(&df).map(|_| ()), compute(&df.select(&["id"]).unwrap()).map(|_| ())]
        {
            let message = task_message(result.unwrap_err());
            assert!(message.contains(&bad) && message.contains("schema"), "{name}: {message}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

fn nested_batch() -> RecordBatch {
    let inner = StructArray::from(vec![
        (Arc::new(Field::new("a", DataType::Int64, true)), Arc::new(Int64Array::from(vec![10, 20, 30])) as ArrayRef),
        (Arc::new(Field::new("b", DataType::Utf8, true)), Arc::new(StringArray::from(vec!["p", "q", "r"]))),
    ]);
    let list =
        ListArray::from_iter_primitive::<Int64Type, _, _>(vec![Some(vec![Some(1), Some(2)]), None, Some(vec![])]);
    batch(vec![
        ("s", Arc::new(inner) as ArrayRef),
        ("id", Arc::new(Int64Array::from(vec![1, 2, 3]))),
        ("l", Arc::new(list)),
    ])
}

#[test]
fn nested_columns_are_read_when_asked_and_left_unread_otherwise() {
    let dir = temp_dir("pq-nested");
    let data = nested_batch();
    write_parquet(&dir.join("n.parquet"), std::slice::from_ref(&data), data.schema(), None);
    let df = read_parquet(&dir.to_string_lossy()).unwrap();
    assert_eq!(names(&df), ["s", "id", "l"]);
    let ids = df.select(&["id"]).unwrap();
    assert_eq!(ints(&compute(&ids).unwrap(), "id"), [Some(1), Some(2), Some(3)]);
    let kept = df.filter(&df.col("id").ge(2)).unwrap();
    let out = compute(&kept).unwrap();
    assert_eq!(out.num_rows(), 2);
    assert_eq!(out.column(0).as_struct().column(0).as_primitive::<Int64Type>().values().to_vec(), [20, 30]);
    assert_eq!(out.column(2).as_list::<i32>().value_length(1), 0);
    assert_eq!(len(&df).unwrap(), 3);
    assert_eq!(head(&df, 2).unwrap().num_rows(), 2);
    // What kiln does not compute on is refused when the operation is built, naming the column.
    let err = df.col("s").sum().check().unwrap_err();
    assert!(matches!(err, DataFrameError::TypeMismatch { ref expression, .. } if expression == "s"), "{err}");
    let err = df.filter(&df.col("l").gt(1)).unwrap_err();
    assert!(matches!(err, DataFrameError::TypeMismatch { .. }) && err.to_string().contains("l of type List"), "{err}");
    // And written back as it came.
    df.to_parquet(&dir.join("out").to_string_lossy()).compute_on(&scheduler()).unwrap();
    let back = read_parquet(&dir.join("out").to_string_lossy()).unwrap();
    assert_eq!(compute(&back).unwrap(), compute(&df).unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_projection_naming_a_missing_column_is_refused_naming_it() {
    let dir = temp_dir("pq-missing");
    let data = simple(&[1]);
    write_parquet(&dir.join("a.parquet"), std::slice::from_ref(&data), data.schema(), None);
    let df = read_parquet(&dir.to_string_lossy()).unwrap();
    let err = df.select(&["id", "nope"]).unwrap_err();
    assert!(matches!(err, DataFrameError::ColumnNotFound { ref column, .. } if column == "nope"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn dictionary_large_and_view_string_columns_compute_as_strings() {
    // pandas reads all three as strings (a category for the dictionary): filtering on "b"
    // keeps rows 1 and 3; grouping by each sums x to a: 1+5=6, b: 2+4=6, c: 3.
    let dir = temp_dir("pq-strings");
    let values = ["a", "b", "c", "b", "a"];
    let dictionary: DictionaryArray<Int32Type> = values.iter().copied().collect();
    let data = batch(vec![
        ("d", Arc::new(dictionary) as ArrayRef),
        ("l", Arc::new(LargeStringArray::from(values.to_vec()))),
        ("v", Arc::new(StringViewArray::from(values.to_vec()))),
        ("x", Arc::new(Int64Array::from(vec![1, 2, 3, 4, 5]))),
    ]);
    write_parquet(&dir.join("s.parquet"), std::slice::from_ref(&data), data.schema(), None);
    let df = read_parquet(&dir.to_string_lossy()).unwrap();
    for column in ["d", "l", "v"] {
        let kept = df.filter(&df.col(column).eq("b")).unwrap();
        assert_eq!(ints(&compute(&kept).unwrap(), "x"), [Some(2), Some(4)], "{column}");
        let sums = df.groupby([column]).unwrap().agg([Agg::sum("x")]).unwrap();
        let out = compute(&sums).unwrap();
        let keys = strings(&out, column);
        assert_eq!(keys, ["a", "b", "c"].map(|s| Some(s.to_string())), "{column}");
        assert_eq!(ints(&out, "x"), [Some(6), Some(6), Some(3)], "{column}");
        let first = df.select(&[column]).unwrap();
        assert_eq!(len(&first).unwrap(), 5, "{column}");
        assert_eq!(strings(&head(&first, 2).unwrap(), column), [Some("a".into()), Some("b".into())]);
    }
    assert_eq!(len(&df).unwrap(), 5);
    df.to_parquet(&dir.join("out").to_string_lossy()).compute_on(&scheduler()).unwrap();
    let back = compute(&read_parquet(&dir.join("out").to_string_lossy()).unwrap()).unwrap();
    for column in ["d", "l", "v"] {
        assert_eq!(strings(&back, column), values.map(|s| Some(s.to_string())), "{column}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn timestamps_in_every_unit_and_with_time_zones_read_compare_and_round_trip() {
    // 2013-01-01 09:00:00 UTC. pandas: .dt.hour 9 for the naive and UTC columns, 10 for the
    // "+01:00" column (its wall clock); every column is later than 08:30 of that day.
    let dir = temp_dir("pq-times");
    let seconds = 1_357_030_800i64;
    let data = batch(vec![
        ("ms", Arc::new(TimestampMillisecondArray::from(vec![Some(seconds * 1000), None])) as ArrayRef),
        ("us", Arc::new(TimestampMicrosecondArray::from(vec![Some(seconds * 1_000_000), None]))),
        ("ns", Arc::new(TimestampNanosecondArray::from(vec![Some(seconds * 1_000_000_000), None]))),
        (
            "utc",
            Arc::new(TimestampNanosecondArray::from(vec![Some(seconds * 1_000_000_000), None]).with_timezone("UTC")),
        ),
        (
            "plus1",
            Arc::new(TimestampMicrosecondArray::from(vec![Some(seconds * 1_000_000), None]).with_timezone("+01:00")),
        ),
    ]);
    write_parquet(&dir.join("t.parquet"), std::slice::from_ref(&data), data.schema(), None);
    let df = read_parquet(&dir.to_string_lossy()).unwrap();
    assert_eq!(len(&df).unwrap(), 2);
    assert_eq!(head(&df, 1).unwrap().num_rows(), 1);
    // A zone by name needs the time zone database, which kiln's arrow is built without
    // (its `chrono-tz` feature): the field is an error naming the column and the zone.
    let message = task_message(df.col("utc").dt().hour().compute_on(&scheduler()).unwrap_err());
    assert!(message.contains("utc.dt.hour") && message.contains("\"UTC\""), "{message}");
    for (column, hour) in [("ms", 9), ("us", 9), ("ns", 9), ("plus1", 10)] {
        let hours = df.col(column).dt().hour().compute_on(&scheduler()).unwrap();
        let hours = arrow::compute::cast(&hours, &DataType::Int64).unwrap();
        assert_eq!(hours.as_primitive::<Int64Type>().iter().collect::<Vec<_>>(), [Some(hour), None], "{column}");
    }
    for column in ["ms", "us", "ns", "plus1"] {
        let later = df.filter(&df.col(column).gt("2013-01-01 08:30:00")).unwrap();
        assert_eq!(len(&later).unwrap(), 1, "{column}");
    }
    let later = df.filter(&df.col("utc").gt("2013-01-01 08:30:00")).unwrap();
    let message = task_message(len(&later).unwrap_err());
    assert!(message.contains("\"UTC\""), "{message}");
    df.to_parquet(&dir.join("out").to_string_lossy()).compute_on(&scheduler()).unwrap();
    let back = read_parquet(&dir.join("out").to_string_lossy()).unwrap();
    assert_eq!(types(&back), types(&df));
    assert_eq!(compute(&back).unwrap(), compute(&df).unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn filters_over_row_groups_with_nan_and_null_statistics_keep_every_match() {
    // Row groups of four: plain values, NaN among values, all null, all NaN, a mix. Whatever
    // the reader skips by statistics, a filter keeps what a plain scan of the values keeps.
    let dir = temp_dir("pq-stats");
    let nan = f64::NAN;
    let groups: Vec<Vec<Option<f64>>> = vec![
        vec![Some(1.0), Some(2.0), Some(3.0), Some(4.0)],
        vec![Some(nan), Some(5.0), Some(6.0), Some(nan)],
        vec![None, None, None, None],
        vec![Some(nan), Some(nan), Some(nan), Some(nan)],
        vec![None, Some(7.0), Some(nan), Some(-1.0)],
    ];
    let batches: Vec<RecordBatch> =
        groups.iter().map(|g| batch(vec![("x", Arc::new(Float64Array::from(g.clone())) as ArrayRef)])).collect();
    write_parquet(&dir.join("x.parquet"), &batches, batches[0].schema(), Some(4));
    let df = read_parquet(&dir.to_string_lossy()).unwrap();
    let all: Vec<Option<f64>> = groups.concat();
    let x = df.col("x");
    type Test = fn(Option<f64>) -> bool;
    // pandas' semantics: NaN and missing compare false; isna is true for both.
    let cases: Vec<(kiln_dataframe::Series, Test)> = vec![
        (x.gt(4.5), |v| v.is_some_and(|v| v > 4.5)),
        (x.lt(0.0), |v| v.is_some_and(|v| v < 0.0)),
        (x.eq(7.0), |v| v == Some(7.0)),
        (x.ne(2.0), |v| v.is_none_or(|v| v != 2.0)),
        (x.isna(), |v| v.is_none_or(f64::is_nan)),
        (x.notna(), |v| v.is_some_and(|v| !v.is_nan())),
    ];
    for (i, (mask, keep)) in cases.iter().enumerate() {
        let expected = all.iter().filter(|v| keep(**v)).count() as u64;
        let kept = df.filter(mask).unwrap();
        assert_eq!(len(&kept).unwrap(), expected, "case {i}");
        assert_eq!(compute(&kept).unwrap().num_rows() as u64, expected, "case {i}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Writers

#[test]
fn to_parquet_round_trips_nulls_nan_inf_empty_and_awkward_strings_and_datetimes() {
    let dir = temp_dir("roundtrip");
    let data = batch(vec![
        (
            "i",
            Arc::new(Int64Array::from(vec![Some(1), None, Some(i64::MIN), Some(i64::MAX), Some(0), Some(-1)]))
                as ArrayRef,
        ),
        (
            "f",
            Arc::new(Float64Array::from(vec![
                Some(f64::NAN),
                Some(f64::INFINITY),
                Some(f64::NEG_INFINITY),
                None,
                Some(0.0),
                Some(-0.0),
            ])),
        ),
        (
            "s",
            Arc::new(StringArray::from(vec![
                Some(""),
                None,
                Some("a,b"),
                Some("say \"hi\""),
                Some("two\r\nlines\n"),
                Some("é\u{0}\u{feff}"),
            ])),
        ),
        (
            "t",
            Arc::new(TimestampNanosecondArray::from(vec![
                Some(0),
                None,
                Some(-1),
                Some(1_356_987_600_123_456_789),
                Some(i64::MIN + 1),
                Some(i64::MAX),
            ])),
        ),
    ]);
    let df = DataFrame::from_batch(data.clone(), 3).unwrap();
    let out = dir.join("out").to_string_lossy().into_owned();
    assert_eq!(df.to_parquet(&out).compute_on(&scheduler()).unwrap(), 6);
    let back = read_parquet(&out).unwrap();
    assert_eq!(back.npartitions(), 3);
    assert_eq!(back.schema(), df.schema());
    let got = compute(&back).unwrap();
    assert_eq!(ints(&got, "i"), ints(&data, "i"));
    let bits = |b: &RecordBatch| floats(b, "f").iter().map(|v| v.map(f64::to_bits)).collect::<Vec<_>>();
    assert_eq!(bits(&got), bits(&data));
    assert_eq!(strings(&got, "s"), strings(&data, "s"));
    let times = |b: &RecordBatch| {
        b.column_by_name("t").unwrap().as_primitive::<TimestampNanosecondType>().iter().collect::<Vec<_>>()
    };
    assert_eq!(times(&got), times(&data));
    assert_eq!(len(&back).unwrap(), 6);
    assert_eq!(head(&back, 5).unwrap().num_rows(), 2);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn to_parquet_creates_missing_directories_and_names_a_file_in_the_way() {
    let dir = temp_dir("write-dirs");
    let df = DataFrame::from_batch(simple(&[1, 2, 3]), 2).unwrap();
    let deep = dir.join("a/b/c").to_string_lossy().into_owned();
    assert_eq!(df.to_parquet(&deep).compute_on(&scheduler()).unwrap(), 3);
    assert_eq!(len(&read_parquet(&deep).unwrap()).unwrap(), 3);
    let file = write(&dir, "plain-file", b"x");
    let err = df.to_parquet(&file).compute_on(&scheduler()).unwrap_err();
    let message = task_message(err);
    assert!(message.contains(&file), "{message}");
    let below = format!("{file}/sub");
    let message = task_message(df.to_parquet(&below).compute_on(&scheduler()).unwrap_err());
    assert!(message.contains(&file), "{message}");
    assert_eq!(std::fs::read(&file).unwrap(), b"x");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_empty_frame_after_a_filter_writes_files_that_read_back_with_its_schema() {
    let dir = temp_dir("write-empty");
    let data = batch(vec![
        ("id", Arc::new(Int64Array::from(vec![1, 2, 3])) as ArrayRef),
        ("x", Arc::new(Float64Array::from(vec![0.5, 1.5, 2.5]))),
        ("s", Arc::new(StringArray::from(vec!["a", "b", "c"]))),
        ("t", Arc::new(TimestampNanosecondArray::from(vec![1, 2, 3]))),
        ("n", Arc::new(Int32Array::from(vec![1, 2, 3]))),
    ]);
    let df = DataFrame::from_batch(data, 2).unwrap();
    let none = df.filter(&df.col("id").gt(10)).unwrap();
    let out = dir.join("none").to_string_lossy().into_owned();
    assert_eq!(none.to_parquet(&out).compute_on(&scheduler()).unwrap(), 0);
    let back = read_parquet(&out).unwrap();
    assert_eq!(back.schema(), df.schema());
    assert_eq!(compute(&back).unwrap().num_rows(), 0);
    assert_eq!(len(&back).unwrap(), 0);
    assert_eq!(head(&back, 2).unwrap().num_rows(), 0);
    let sum = back.col("x").sum().compute_on(&scheduler()).unwrap();
    assert_eq!(sum, 0.0f64.into());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn to_parquet_over_a_dataset_of_more_parts_leaves_no_stale_rows() {
    // Writing two partitions where four were: reading the directory back must give the two
    // partitions' rows, not the old parts' too.
    let dir = temp_dir("write-stale");
    let out = dir.join("out").to_string_lossy().into_owned();
    let four = DataFrame::from_batch(simple(&[1, 2, 3, 4]), 4).unwrap();
    four.to_parquet(&out).compute_on(&scheduler()).unwrap();
    let two = DataFrame::from_batch(simple(&[7, 8]), 2).unwrap();
    match two.to_parquet(&out).compute_on(&scheduler()) {
        Ok(rows) => {
            assert_eq!(rows, 2);
            assert_eq!(ints(&compute(&read_parquet(&out).unwrap()).unwrap(), "id"), [Some(7), Some(8)]);
        }
        Err(e) => {
            let message = e.to_string();
            assert!(message.contains(&out), "{message}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_parquet_directory_skips_marker_and_hidden_files_as_pyarrow_does() {
    // Spark and Hadoop leave `_SUCCESS` (empty) and `.part-0.parquet.crc` beside the data;
    // pyarrow (so pandas and Dask) skips names starting with `_` or `.` in a directory.
    let dir = temp_dir("pq-markers");
    let data = simple(&[1, 2]);
    write_parquet(&dir.join("part-00000.parquet"), std::slice::from_ref(&data), data.schema(), None);
    write(&dir, "_SUCCESS", b"");
    write(&dir, ".part-00000.parquet.crc", b"crc\x00\x01");
    write(&dir, "_common_metadata", b"not data");
    let df = read_parquet(&dir.to_string_lossy()).unwrap();
    assert_eq!(df.npartitions(), 1);
    assert_eq!(ints(&compute(&df).unwrap(), "id"), [Some(1), Some(2)]);
    assert_eq!(len(&df).unwrap(), 2);
    // A file named outright is read whatever its name.
    std::fs::copy(dir.join("part-00000.parquet"), dir.join("_kept.parquet")).unwrap();
    let named = read_parquet(&dir.join("_kept.parquet").to_string_lossy()).unwrap();
    assert_eq!(len(&named).unwrap(), 2);
    // Only markers: nothing to read.
    let empty = temp_dir("pq-only-markers");
    write(&empty, "_SUCCESS", b"");
    let pattern = empty.to_string_lossy().into_owned();
    assert_eq!(read_parquet(&pattern).err(), Some(DataFrameError::NoFiles { pattern }));
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_dir_all(&empty).unwrap();
}

#[test]
fn parse_dates_reads_the_iso_forms_pandas_reads() {
    // pandas (one format per column): every value below is 2013-01-02 at the time shown.
    let dir = temp_dir("date-forms");
    let cases = [
        ("2013-01-02", 0i64),
        ("2013-01-02 10:30", 37_800),
        ("2013-01-02T10:30:15", 37_815),
        ("2013-01-02 10:30:15.250", 37_815),
    ];
    let day = 1_357_084_800i64;
    for (i, (text, seconds)) in cases.iter().enumerate() {
        let path = write(&dir, &format!("d{i}.csv"), format!("ts\n{text}\n").as_bytes());
        let df = read_csv(&path, &CsvOptions::default().parse_dates(["ts"])).unwrap();
        let out = compute(&df).unwrap();
        let got = out.column(0).as_primitive::<TimestampNanosecondType>().value(0);
        let extra = if text.ends_with(".250") { 250_000_000 } else { 0 };
        assert_eq!(got, (day + seconds) * 1_000_000_000 + extra, "{text}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn numbers_with_spaces_around_them_are_numbers_as_in_pandas() {
    // pandas: b int64 [2, -3], c float64 [1.5, 2.0], d str (an infinity with a space is
    // text to pandas), e str (an integer beyond int64 is an object).
    let dir = temp_dir("spaced");
    let path = write(&dir, "s.csv", b"a,b,c,d,e\n1, 2,1.5 , inf,99999999999999999999\n2, -3 , 2,x,1\n");
    let df = csv(&path, None).unwrap();
    assert_eq!(types(&df), [DataType::Int64, DataType::Int64, DataType::Float64, DataType::Utf8, DataType::Utf8]);
    let out = compute(&df).unwrap();
    assert_eq!(ints(&out, "b"), [Some(2), Some(-3)]);
    assert_eq!(floats(&out, "c"), [Some(1.5), Some(2.0)]);
    assert_eq!(strings(&out, "d"), [Some(" inf".to_string()), Some("x".to_string())]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_file_whose_header_differs_from_the_first_files_is_named_not_read_by_position() {
    // Dask refuses a file whose columns differ from the dataset's; reading it by position
    // would put y's values under x.
    let dir = temp_dir("headers");
    write(&dir, "a.csv", b"x,y\n1,2\n");
    let mut big = String::from("y,x\n");
    for i in 0..200 {
        big.push_str(&format!("{i},{}\n", i + 1000));
    }
    for (name, text) in [("swapped", big.as_str()), ("renamed", "x,z\n3,4\n"), ("wider", "x,y,w\n3,4,5\n")] {
        let sub = dir.join(name);
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::copy(dir.join("a.csv"), sub.join("a.csv")).unwrap();
        let bad = write(&sub, "b.csv", text.as_bytes());
        for blocksize in [None, Some(300)] {
            let df = csv(&format!("{}/*.csv", sub.display()), blocksize).unwrap();
            assert_eq!(names(&df), ["x", "y"]);
            for result in [compute(&df).map(|_| ()), len(&df).map(|_| ())] {
                let message = task_message(result.unwrap_err());
                assert!(message.contains(&bad) && message.contains("header"), "{name}: {message}");
            }
            assert_eq!(ints(&head(&df, 1).unwrap(), "y"), [Some(2)]);
        }
    }
    // Headers that agree once made unique (a.1 for the second a) read, blank lines and all.
    let same = dir.join("same");
    std::fs::create_dir_all(&same).unwrap();
    write(&same, "a.csv", b"k,k\n1,2\n");
    write(&same, "b.csv", b"\xef\xbb\xbf\nk,\"k\"\r\n3,4\r\n");
    let df = csv(&format!("{}/*.csv", same.display()), None).unwrap();
    assert_eq!(names(&df), ["k", "k.1"]);
    assert_eq!(ints(&compute(&df).unwrap(), "k.1"), [Some(2), Some(4)]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Local files under `hostile://`, counting the bytes handed out by every kind of read.
#[derive(Default)]
struct CountingStorage {
    bytes: Arc<AtomicUsize>,
}

const SCHEME: &str = "hostile://";

struct CountingReader {
    inner: Box<dyn std::io::Read + Send>,
    bytes: Arc<AtomicUsize>,
}

impl std::io::Read for CountingReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(out)?;
        self.bytes.fetch_add(n, Ordering::SeqCst);
        Ok(n)
    }
}

impl Storage for CountingStorage {
    fn list(&self, pattern: &str) -> Result<Vec<String>, StorageError> {
        let local = LocalStorage.list(pattern.trim_start_matches(SCHEME))?;
        Ok(local.into_iter().map(|p| format!("{SCHEME}{p}")).collect())
    }
    fn size(&self, path: &str) -> Result<u64, StorageError> {
        LocalStorage.size(path.trim_start_matches(SCHEME))
    }
    fn read_range(&self, path: &str, range: std::ops::Range<u64>) -> Result<Vec<u8>, StorageError> {
        let bytes = LocalStorage.read_range(path.trim_start_matches(SCHEME), range)?;
        self.bytes.fetch_add(bytes.len(), Ordering::SeqCst);
        Ok(bytes)
    }
    fn open(&self, path: &str) -> Result<Box<dyn std::io::Read + Send>, StorageError> {
        let inner = LocalStorage.open(path.trim_start_matches(SCHEME))?;
        Ok(Box::new(CountingReader { inner, bytes: self.bytes.clone() }))
    }
    fn write(&self, path: &str, bytes: &[u8]) -> Result<(), StorageError> {
        LocalStorage.write(path.trim_start_matches(SCHEME), bytes)
    }
    fn delete(&self, path: &str) -> Result<(), StorageError> {
        LocalStorage.delete(path.trim_start_matches(SCHEME))
    }
}

#[test]
fn the_schema_of_a_big_gzip_file_is_inferred_from_its_start_only() {
    let storage = Arc::new(CountingStorage::default());
    register_storage("hostile", storage.clone());
    let dir = temp_dir("gzip-sample");
    // Numbers that compress poorly, so the compressed file is several times the sample.
    let mut text = String::from("a,b,c\n");
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..150_000 {
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % 1_000_000_007
        };
        text.push_str(&format!("{},{},{}\n", next(), next(), next()));
    }
    let compressed = gzip(text.as_bytes());
    let local = write(&dir, "big.csv.gz", &compressed);
    let path = format!("{SCHEME}{local}");
    let df = csv(&path, None).unwrap();
    let planning = storage.bytes.swap(0, Ordering::SeqCst);
    assert!(planning < compressed.len() / 2, "read {planning} of {} compressed bytes to plan", compressed.len());
    assert_eq!(len(&df).unwrap(), 150_000);
    assert_eq!(storage.bytes.load(Ordering::SeqCst), compressed.len());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_file_of_the_other_format_is_an_error_naming_it() {
    let dir = temp_dir("swapped-formats");
    let data = simple(&[1, 2]);
    write_parquet(&dir.join("data.parquet"), std::slice::from_ref(&data), data.schema(), None);
    let parquet = dir.join("data.parquet").to_string_lossy().into_owned();
    let err = csv(&parquet, None).unwrap_err().to_string();
    assert!(err.contains(&parquet), "{err}");
    let gz = write(&dir, "data.csv.gz", &gzip(b"a,b\n1,2\n"));
    parquet_error(read_parquet(&gz), &gz);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_parquet_column_of_only_nulls_reads_counts_and_round_trips() {
    // pyarrow writes an all-None object column as type null; pandas reads it as all missing.
    let dir = temp_dir("pq-null");
    let data = batch(vec![
        ("nothing", Arc::new(arrow::array::NullArray::new(3)) as ArrayRef),
        ("id", Arc::new(Int64Array::from(vec![1, 2, 3]))),
    ]);
    write_parquet(&dir.join("n.parquet"), std::slice::from_ref(&data), data.schema(), None);
    let df = read_parquet(&dir.to_string_lossy()).unwrap();
    assert_eq!(types(&df), [DataType::Null, DataType::Int64]);
    assert_eq!(len(&df).unwrap(), 3);
    assert_eq!(head(&df, 2).unwrap().num_rows(), 2);
    let missing = df.filter(&df.col("nothing").isna()).unwrap();
    assert_eq!(len(&missing).unwrap(), 3);
    let out = dir.join("out").to_string_lossy().into_owned();
    df.to_parquet(&out).compute_on(&scheduler()).unwrap();
    assert_eq!(compute(&read_parquet(&out).unwrap()).unwrap(), compute(&df).unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
}
