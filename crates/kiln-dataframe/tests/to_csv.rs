//! `to_csv`: the text pandas writes (a header, missing values and NaN as empty fields, quoting
//! only where needed), one file per partition named by the pattern, gzip by extension, and
//! `read_csv` reading every partitioning back to the same rows.

use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, Date32Array, DictionaryArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampNanosecondArray,
};
use arrow::datatypes::Int32Type;
use kiln_dataframe::{CsvOptions, DataFrame, read_csv};
use kiln_graph::Collection;
use kiln_local::LocalScheduler;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-to-csv-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Four rows with a missing value, NaN and inf, quoting cases, timestamps before 1970 and
/// with a fraction, dates, booleans.
fn awkward() -> RecordBatch {
    let second = 1_000_000_000i64;
    RecordBatch::try_from_iter([
        ("id", Arc::new(Int64Array::from(vec![1, 2, 3, 4])) as ArrayRef),
        ("x", Arc::new(Float64Array::from(vec![Some(0.5), None, Some(f64::NAN), Some(f64::INFINITY)])) as ArrayRef),
        ("s", Arc::new(StringArray::from(vec![Some("a,b"), Some("say \"hi\""), None, Some("two\nlines")])) as ArrayRef),
        (
            "t",
            Arc::new(TimestampNanosecondArray::from(vec![
                Some(1_420_106_400 * second),
                Some(1_420_106_400 * second + second / 2),
                None,
                Some(-second),
            ])) as ArrayRef,
        ),
        ("d", Arc::new(Date32Array::from(vec![Some(16_466), Some(16_466), None, Some(-1)])) as ArrayRef),
        ("b", Arc::new(BooleanArray::from(vec![Some(true), Some(false), None, Some(true)])) as ArrayRef),
        ("f", Arc::new(Float64Array::from(vec![1.0, 1e20, -0.0, 123456.789])) as ArrayRef),
    ])
    .unwrap()
}

#[test]
fn one_partition_is_the_text_pandas_writes() {
    let dir = temp_dir("text");
    let pattern = format!("{}/out-*.csv", dir.display());
    let rows =
        DataFrame::from_batch(awkward(), 1).unwrap().to_csv(&pattern).compute_on(&LocalScheduler::new()).unwrap();
    assert_eq!(rows, 4);
    let text = std::fs::read_to_string(dir.join("out-0.csv")).unwrap();
    // pandas 3.1 `to_csv(index=False)` of the same frame, but for two things said in
    // `to_csv`'s doc: a timestamp's fraction is written only when it has one (pandas gives
    // the whole column the longest), and booleans are `true`/`false` (pandas: `True`), which
    // pandas' and kiln's readers both take.
    let expected = "id,x,s,t,d,b,f\n\
                    1,0.5,\"a,b\",2015-01-01 10:00:00,2015-01-31,true,1.0\n\
                    2,,\"say \"\"hi\"\"\",2015-01-01 10:00:00.500,2015-01-31,false,1e20\n\
                    3,,,,,,-0.0\n\
                    4,inf,\"two\nlines\",1969-12-31 23:59:59,1969-12-31,true,123456.789\n";
    assert_eq!(text, expected);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn every_partitioning_reads_back_to_the_same_rows() {
    let local = LocalScheduler::new();
    let original = awkward();
    for n in [1, 3, 7] {
        let dir = temp_dir(&format!("round-{n}"));
        let frame = DataFrame::from_batch(original.clone(), n).unwrap();
        let written = frame.to_csv(&dir.to_string_lossy()).compute_on(&local).unwrap();
        assert_eq!(written, 4);
        let files = std::fs::read_dir(&dir).unwrap().count();
        assert_eq!(files, frame.npartitions(), "one file per partition");
        let options = CsvOptions::default().parse_dates(["t"]);
        let back = read_csv(&format!("{}/*.part", dir.display()), &options).unwrap().compute_on(&local).unwrap();
        assert_eq!(back.num_rows(), 4, "{n} partitions");
        let ids = back.column_by_name("id").unwrap().as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(ids.values().to_vec(), vec![1, 2, 3, 4]);
        let x = back.column_by_name("x").unwrap().as_any().downcast_ref::<Float64Array>().unwrap();
        assert_eq!((x.value(0), x.is_null(1), x.is_null(2), x.value(3)), (0.5, true, true, f64::INFINITY));
        let s = back.column_by_name("s").unwrap().as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!((s.value(0), s.value(1), s.is_null(2), s.value(3)), ("a,b", "say \"hi\"", true, "two\nlines"));
        let t = back.column_by_name("t").unwrap().as_any().downcast_ref::<TimestampNanosecondArray>().unwrap();
        let original_t = original.column(3).as_any().downcast_ref::<TimestampNanosecondArray>().unwrap();
        assert_eq!(t.iter().collect::<Vec<_>>(), original_t.iter().collect::<Vec<_>>());
        let f = back.column_by_name("f").unwrap().as_any().downcast_ref::<Float64Array>().unwrap();
        assert_eq!(f.values().to_vec(), vec![1.0, 1e20, -0.0, 123456.789]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn gzip_by_extension_and_dictionary_columns_as_values() {
    let local = LocalScheduler::new();
    let dir = temp_dir("gz");
    let keys: DictionaryArray<Int32Type> = vec![Some("x"), None, Some("yy")].into_iter().collect();
    let batch = RecordBatch::try_from_iter([("k", Arc::new(keys) as ArrayRef)]).unwrap();
    let pattern = format!("{}/k-*.csv.gz", dir.display());
    DataFrame::from_batch(batch, 2).unwrap().to_csv(&pattern).compute_on(&local).unwrap();
    let mut text = String::new();
    for i in 0..2 {
        let bytes = std::fs::read(dir.join(format!("k-{i}.csv.gz"))).unwrap();
        assert_eq!(&bytes[..2], &[0x1f, 0x8b], "gzip magic");
        let mut part = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut part).unwrap();
        text.push_str(&part);
    }
    // A row whose one field is missing is `""`, as pandas writes it: an empty line would be
    // skipped as blank by both readers.
    assert!(text.contains("\n\"\"\n"), "{text:?}");
    let back = read_csv(&pattern, &CsvOptions::default()).unwrap().compute_on(&local).unwrap();
    let k = back.column(0).as_any().downcast_ref::<StringArray>().unwrap();
    assert_eq!(k.iter().collect::<Vec<_>>(), vec![Some("x"), None, Some("yy")]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn files_a_write_would_not_replace_and_bad_targets_are_clear_errors() {
    let local = LocalScheduler::new();
    let dir = temp_dir("stale");
    let frame = |n| DataFrame::from_batch(awkward(), n).unwrap();
    let pattern = format!("{}/p-*.csv", dir.display());
    frame(3).to_csv(&pattern).compute_on(&local).unwrap();
    // Two partitions would leave p-2.csv, whose rows a read of the pattern would mix in.
    let err = frame(2).to_csv(&pattern).compute_on(&local).unwrap_err().to_string();
    assert!(err.contains("p-2.csv") && err.contains("would not replace"), "{err}");
    assert!(dir.join("p-2.csv").exists());
    // The same number again replaces every file.
    assert_eq!(frame(3).to_csv(&pattern).compute_on(&local).unwrap(), 4);
    let err = frame(1).to_csv(&format!("{}/a-*-*.csv", dir.display())).compute_on(&local).unwrap_err().to_string();
    assert!(err.contains("more than one '*'"), "{err}");
    // A file where the directory should be: the error names the path.
    let blocker = dir.join("blocker");
    std::fs::write(&blocker, "not a directory").unwrap();
    let err = frame(1).to_csv(&blocker.join("x-*.csv").to_string_lossy()).compute_on(&local).unwrap_err().to_string();
    assert!(err.contains("blocker"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
