//! CSV reads that keep some columns: what pandas' `read_csv(path, usecols=...)` gives, and the
//! same errors naming file and line when a kept column or a row's width is wrong.

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, Int64Type};
use kiln_dataframe::{CsvOptions, read_csv};
use kiln_graph::{Collection, ComputeError, TaskError};
use kiln_local::LocalScheduler;

mod scratch;
use scratch::ScratchDir;

/// `text` as the file `name` in a scratch directory; the path, and the directory that keeps
/// the file until dropped.
fn write(name: &str, text: &str) -> (String, ScratchDir) {
    let dir = ScratchDir::new("csv-projection");
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    (path.to_string_lossy().into_owned(), dir)
}

fn message(err: ComputeError) -> String {
    match err {
        ComputeError::Task { error: TaskError::Failed(message), .. } => message,
        ComputeError::Task { error: TaskError::At { error, .. }, .. } => error.to_string(),
        other => panic!("expected a failed task, got {other:?}"),
    }
}

fn ints(batch: &RecordBatch, column: &str) -> Vec<Option<i64>> {
    batch.column_by_name(column).unwrap().as_primitive::<Int64Type>().iter().collect()
}

// Inference sees the first two rows: a,b,c int64, d float64, e str.
const TEXT: &str = "a,b,c,d,e\n1,10,100,0.5,x\n2,20,200,1.5,y\nNA,30,oops,2.5,\"z,\"\"q\"\"\"\n4,NULL,400,n/a,w\n";

#[test]
fn kept_columns_in_any_order_match_pandas_usecols() {
    let (path, _dir) = write("order.csv", TEXT);
    let df = read_csv(&path, &CsvOptions::default().sample_rows(2)).unwrap();
    // pd.read_csv(path, usecols=["d", "b", "a"])[["d", "b", "a"]]: the bad `c` is never parsed.
    let batch = df.select(&["d", "b", "a"]).unwrap().compute_on(&LocalScheduler::new()).unwrap();
    let names: Vec<String> = batch.schema().fields().iter().map(|f| f.name().clone()).collect();
    assert_eq!(names, ["d", "b", "a"]);
    let d: Vec<Option<f64>> = batch.column(0).as_primitive::<Float64Type>().iter().collect();
    assert_eq!(d, [Some(0.5), Some(1.5), Some(2.5), None]);
    assert_eq!(ints(&batch, "b"), [Some(10), Some(20), Some(30), None]);
    assert_eq!(ints(&batch, "a"), [Some(1), Some(2), None, Some(4)]);
    let e = df.select(&["e"]).unwrap().compute_on(&LocalScheduler::new()).unwrap();
    let e: Vec<Option<&str>> = e.column(0).as_string::<i32>().iter().collect();
    assert_eq!(e, [Some("x"), Some("y"), Some("z,\"q\""), Some("w")]);
}

#[test]
fn a_bad_value_in_a_kept_column_names_the_file_line_and_value() {
    let (path, _dir) = write("bad.csv", TEXT);
    let df = read_csv(&path, &CsvOptions::default().sample_rows(2)).unwrap();
    let err = message(df.select(&["e", "c"]).unwrap().compute_on(&LocalScheduler::new()).unwrap_err());
    assert!(err.contains(&path) && err.contains("line 4") && err.contains("oops"), "{err}");
}

#[test]
fn a_ragged_row_past_the_sample_fails_even_when_its_extra_field_is_not_kept() {
    let (path, _dir) = write("ragged.csv", "a,b,c\n1,2,3\n4,5,6\n7,8,9,10\n");
    let df = read_csv(&path, &CsvOptions::default().sample_rows(2)).unwrap();
    let err = message(df.select(&["a"]).unwrap().compute_on(&LocalScheduler::new()).unwrap_err());
    assert!(err.contains(&path) && err.contains("line 4") && err.contains("found 4"), "{err}");
}
