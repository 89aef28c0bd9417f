//! Bad input gives a typed error naming the column, file or row; nothing panics.

use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use kiln_dataframe::{Agg, CsvOptions, DType, DataFrame, DataFrameError, read_csv, read_parquet};
use kiln_graph::{Collection, ComputeError, TaskError};
use kiln_local::LocalScheduler;

fn fixture(rel: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(rel).to_string_lossy().into_owned()
}

fn frame() -> DataFrame {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("value", DataType::Float64, true),
        Field::new("name", DataType::Utf8, true),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(vec![1, 2, 3])),
            Arc::new(Float64Array::from(vec![Some(1.5), None, Some(3.0)])),
            Arc::new(StringArray::from(vec![Some("a"), Some("7"), None])),
        ],
    )
    .unwrap();
    DataFrame::from_batch(batch, 2).unwrap()
}

fn missing(err: &DataFrameError) -> &str {
    match err {
        DataFrameError::ColumnNotFound { column, available } => {
            assert_eq!(available, &["id", "value", "name"]);
            column
        }
        other => panic!("expected ColumnNotFound, got {other:?}"),
    }
}

/// The failing task's message, from a computation that must fail in a task.
fn task_message(err: ComputeError) -> String {
    match err {
        ComputeError::Task { error: TaskError::Failed(message), .. } => message,
        ComputeError::Task { error: TaskError::At { error, .. }, .. } => error.to_string(),
        other => panic!("expected a failed task, got {other:?}"),
    }
}

#[test]
fn a_missing_column_is_named_when_the_expression_is_built() {
    let df = frame();
    assert_eq!(missing(&df.col("nope").check().unwrap_err()), "nope");
    assert_eq!(missing(&(df.col("value") + df.col("nope")).check().unwrap_err()), "nope");
    assert_eq!(missing(&df.select(&["id", "nope"]).unwrap_err()), "nope");
    assert_eq!(missing(&df.drop(&["gone"]).unwrap_err()), "gone");
    assert_eq!(missing(&df.rename(&[("old", "new")]).unwrap_err()), "old");
    assert_eq!(missing(&df.groupby(["key"]).err().unwrap()), "key");
    assert_eq!(missing(&df.groupby(["id"]).unwrap().agg([Agg::sum("nope")]).unwrap_err()), "nope");
    assert_eq!(missing(&df.filter(&df.col("nope").gt(1)).unwrap_err()), "nope");
    // Computing a series that carries the error reports it as an invalid collection.
    match df.col("nope").compute_on(&LocalScheduler::new()).unwrap_err() {
        ComputeError::InvalidCollection { collection: "dataframe", cause } => {
            assert_eq!(missing(cause.downcast_ref::<DataFrameError>().unwrap()), "nope")
        }
        other => panic!("expected InvalidCollection, got {other:?}"),
    }
}

fn mismatch(err: DataFrameError) -> (String, String, DataType) {
    match err {
        DataFrameError::TypeMismatch { operation, expression, found, .. } => (operation, expression, found),
        other => panic!("expected TypeMismatch, got {other:?}"),
    }
}

#[test]
fn a_type_mismatch_names_the_operation_and_the_column() {
    let df = frame();
    assert_eq!(mismatch((df.col("name") + 1).check().unwrap_err()), ("+".into(), "name".into(), DataType::Utf8));
    assert_eq!(mismatch(df.col("name").sum().check().unwrap_err()), ("sum".into(), "name".into(), DataType::Utf8));
    assert_eq!(
        mismatch(df.col("value").dt().hour().check().unwrap_err()),
        (".dt.hour".into(), "value".into(), DataType::Float64)
    );
    assert_eq!(mismatch(df.col("value").gt("x").check().unwrap_err()).0, ">");
    assert_eq!(
        mismatch((df.col("value") & df.col("id").gt(1)).check().unwrap_err()),
        ("&".into(), "value".into(), DataType::Float64)
    );
    assert_eq!(
        mismatch(df.filter(&df.col("value")).unwrap_err()),
        ("filter".into(), "value".into(), DataType::Float64)
    );
    assert_eq!(mismatch(df.col("name").fillna(0).check().unwrap_err()).0, "fillna");
    assert_eq!(mismatch(df.col("name").clip(Some(0.into()), None).check().unwrap_err()).0, "clip");
    assert_eq!(mismatch(df.col("value").clip(None, Some("x".into())).check().unwrap_err()).0, "clip");
    assert_eq!(missing(&df.dropna_subset(&["nope"]).unwrap_err()), "nope");
    assert_eq!(mismatch(df.groupby(["id"]).unwrap().agg([Agg::mean("name")]).unwrap_err()).0, "mean");
    // The first error wins and is kept through later operations.
    assert_eq!(mismatch((df.col("name") * 2 + 1).abs().check().unwrap_err()).0, "*");
}

#[test]
fn a_value_that_does_not_convert_fails_its_partition_with_the_value() {
    let df = frame();
    let err = df.col("name").astype(DType::Int64).compute_on(&LocalScheduler::new()).unwrap_err();
    let message = task_message(err);
    assert!(message.contains("'a'") || message.contains("\"a\""), "{message}");
}

#[test]
fn unknown_dtype_and_bad_arguments() {
    assert!(matches!(DType::parse("complex128"), Err(DataFrameError::InvalidArgument(m)) if m.contains("complex128")));
    assert!(matches!(DataFrame::from_batches(Vec::new()), Err(DataFrameError::InvalidArgument(_))));
    let df = frame();
    assert!(matches!(df.drop(&["id", "value", "name"]), Err(DataFrameError::InvalidArgument(_))));
    assert!(matches!(df.rename(&[("id", "value")]), Err(DataFrameError::InvalidArgument(m)) if m.contains("value")));
    let dup = df.groupby(["id"]).unwrap().agg([Agg::sum("value"), Agg::mean("value")]);
    assert!(matches!(dup, Err(DataFrameError::InvalidArgument(m)) if m.contains("alias")));
}

#[test]
fn series_of_another_frame_are_refused() {
    let df = frame();
    let filtered = df.filter(&df.col("id").gt(1)).unwrap();
    let err = filtered.filter(&df.col("value").gt(1.0)).unwrap_err();
    assert!(matches!(err, DataFrameError::NotAligned { ref what, .. } if what.contains("value")), "{err:?}");
    let other = frame();
    assert!(matches!((df.col("id") + other.col("id")).check(), Err(DataFrameError::NotAligned { .. })));
}

#[test]
fn too_deep_an_expression_is_refused() {
    let df = frame();
    let mut s = df.col("value");
    for _ in 0..300 {
        s = s + 1.0;
    }
    assert!(matches!(s.check(), Err(DataFrameError::ExpressionTooDeep { limit: 256, .. })));
}

#[test]
fn missing_files_are_named() {
    let pattern = fixture("no-such-dir/*.csv");
    assert_eq!(
        read_csv(&pattern, &CsvOptions::default()).err(),
        Some(DataFrameError::NoFiles { pattern: pattern.clone() })
    );
    let file = fixture("no-such.parquet");
    assert_eq!(read_parquet(&file).err(), Some(DataFrameError::NoFiles { pattern: file }));
    // A file that disappears between planning and computing fails its task, naming it.
    let dir = std::env::temp_dir().join(format!("kiln-df-vanish-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("a.csv");
    std::fs::write(&path, "x,y\n1,2\n").unwrap();
    let df = read_csv(&path.to_string_lossy(), &CsvOptions::default()).unwrap();
    std::fs::remove_file(&path).unwrap();
    let message = task_message(df.compute_on(&LocalScheduler::new()).unwrap_err());
    assert!(message.contains(&*path.to_string_lossy()), "{message}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_file_that_is_not_parquet_is_named() {
    let path = fixture("bad/not_parquet.parquet");
    match read_parquet(&path) {
        Err(DataFrameError::Parquet { path: p, message }) => {
            assert_eq!(p, path);
            assert!(!message.is_empty());
        }
        other => panic!("expected a Parquet error, got {:?}", other.map(|d| d.to_string())),
    }
}

#[test]
fn a_malformed_csv_row_names_the_file_and_the_line() {
    // The schema comes from the first two rows (value: float64); line 4 holds "oops".
    let path = fixture("bad/malformed.csv");
    let df = read_csv(&path, &CsvOptions::default().sample_rows(2)).unwrap();
    assert_eq!(df.schema().field(1).data_type(), &DataType::Float64);
    let message = task_message(df.compute_on(&LocalScheduler::new()).unwrap_err());
    assert!(message.contains(&path) && message.contains("oops") && message.contains("line"), "{message}");

    // A row with too many fields inside the sample fails `read_csv` itself.
    let ragged = fixture("bad/ragged.csv");
    match read_csv(&ragged, &CsvOptions::default()) {
        Err(DataFrameError::Csv { path, message }) => {
            assert!(path == ragged && message.contains("line 3"), "{message}")
        }
        other => panic!("expected a CSV error, got {:?}", other.map(|d| d.to_string())),
    }
}

#[test]
fn explicit_dtypes_override_inference_and_must_name_columns() {
    let path = fixture("bad/malformed.csv");
    let df = read_csv(&path, &CsvOptions::default().dtype("value", DType::Utf8).dtype("id", DType::Float64)).unwrap();
    let types: Vec<DataType> = df.schema().fields().iter().map(|f| f.data_type().clone()).collect();
    assert_eq!(types, [DataType::Float64, DataType::Utf8]);
    assert_eq!(df.compute_on(&LocalScheduler::new()).unwrap().num_rows(), 4);
    let err = read_csv(&path, &CsvOptions::default().parse_dates(["when"])).err().unwrap();
    assert!(matches!(err, DataFrameError::ColumnNotFound { ref column, .. } if column == "when"));
}

#[test]
fn parquet_files_with_different_schemas_are_named() {
    let dir = std::env::temp_dir().join(format!("kiln-df-schemas-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let a = frame();
    let b = a.assign("extra", &a.col("id")).unwrap();
    a.to_parquet(&dir.join("a").to_string_lossy()).compute_on(&LocalScheduler::new()).unwrap();
    b.to_parquet(&dir.join("b").to_string_lossy()).compute_on(&LocalScheduler::new()).unwrap();
    std::fs::rename(dir.join("b/part.0.parquet"), dir.join("a/part.9.parquet")).unwrap();
    let df = read_parquet(&dir.join("a").to_string_lossy()).unwrap();
    let message = task_message(df.compute_on(&LocalScheduler::new()).unwrap_err());
    assert!(message.contains("part.9.parquet") && message.contains("extra"), "{message}");
    std::fs::remove_dir_all(&dir).unwrap();
}
