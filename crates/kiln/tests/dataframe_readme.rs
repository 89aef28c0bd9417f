//! The README's dataframe example, on files this test writes: `kiln::dataframe` through the
//! facade, `compute()` on the default scheduler, `to_parquet` writing `part.N.parquet`.
#![cfg(feature = "dataframe")]

use arrow::array::AsArray;
use arrow::datatypes::{Float64Type, Int32Type};
use kiln::dataframe::arrow;
use kiln::dataframe::{Agg, CsvOptions, Scalar, read_csv};
use kiln::prelude::*;

#[test]
fn readme_dataframe_example_runs() {
    let dir = std::env::temp_dir().join(format!("kiln-readme-df-{}", std::process::id()));
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        data.join("2015-01-01.csv"),
        "timestamp,value,passenger_count,trip_distance\n2015-01-01 00:10:00,1.0,1,2.0\n2015-01-01 01:20:00,3.0,3,4.0\n",
    )
    .unwrap();
    std::fs::write(
        data.join("2015-01-02.csv"),
        "timestamp,value,passenger_count,trip_distance\n2015-01-02 00:30:00,5.0,4,8.0\n2015-01-02 02:00:00,7.0,,1.0\n",
    )
    .unwrap();

    let df = read_csv(&format!("{}/2015-*-*.csv", data.display()), &CsvOptions::default().parse_dates(["timestamp"]))
        .unwrap();
    assert!(df.to_string().starts_with("kiln DataFrame: npartitions=2, divisions unknown"));
    let hourly = df.groupby([df.col("timestamp").dt().hour()]).unwrap().agg([Agg::mean("value")]).unwrap();
    let table = hourly.compute().unwrap();
    assert_eq!(table.column(0).as_primitive::<Int32Type>().values(), &[0, 1, 2]);
    assert_eq!(table.column(1).as_primitive::<Float64Type>().values(), &[3.0, 3.0, 7.0]);
    let busy = df.filter(&df.col("passenger_count").ge(3)).unwrap();
    assert_eq!(busy.col("trip_distance").mean().compute().unwrap(), Scalar::Float(6.0));
    let out = dir.join("out");
    let rows = df.select(&["timestamp", "value"]).unwrap().to_parquet(&out.to_string_lossy()).compute().unwrap();
    assert_eq!(rows, 4);
    assert!(out.join("part.0.parquet").is_file() && out.join("part.1.parquet").is_file());
    assert!(hourly.explain().contains("columns [timestamp, value]"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The README's Dask-to-kiln rows for merges, shuffles, `split_out`, `set_index`, `loc` and
/// `sort_values`, through the facade, on the default scheduler.
#[test]
fn readme_merge_shuffle_and_index_rows_run() {
    use kiln::dataframe::arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
    use kiln::dataframe::{DataFrame, How, MergeOptions};
    use std::sync::Arc;

    let a = RecordBatch::try_from_iter([
        ("k", Arc::new(Int64Array::from(vec![3, 1, 2, 1, 5, 4])) as _),
        ("x", Arc::new(Float64Array::from(vec![30.0, 10.0, 20.0, 11.0, 50.0, 40.0])) as _),
    ])
    .unwrap();
    let b = RecordBatch::try_from_iter([
        ("k", Arc::new(Int64Array::from(vec![1, 2, 9])) as _),
        ("name", Arc::new(StringArray::from(vec!["one", "two", "nine"])) as _),
    ])
    .unwrap();
    let (a, b) = (DataFrame::from_batch(a, 3).unwrap(), DataFrame::from_batch(b, 2).unwrap());
    let merged = a.merge(&b, &MergeOptions::on(["k"]).how(How::Left)).unwrap();
    let out = merged.compute().unwrap();
    assert_eq!(out.num_rows(), 6);
    assert_eq!(out.column(2).null_count(), 3);

    let shuffled = a.shuffle(&["k"], 8).unwrap();
    assert_eq!(shuffled.npartitions(), 8);
    let sums = shuffled.groupby(["k"]).unwrap().split_out(4).agg([Agg::sum("x")]).unwrap();
    assert_eq!(sums.compute().unwrap().num_rows(), 5);

    let scheduler = kiln::LocalScheduler::new();
    let indexed = a.set_index("k", &scheduler).unwrap();
    assert!(indexed.known_divisions());
    let some = indexed.loc(Some(Scalar::Int(2)), Some(Scalar::Int(4))).unwrap().compute().unwrap();
    assert_eq!(some.column(0).as_primitive::<kiln::dataframe::arrow::datatypes::Int64Type>().values(), &[2, 3, 4]);
    let sorted = a.sort_values("x", false, &scheduler).unwrap().compute().unwrap();
    assert_eq!(sorted.column(1).as_primitive::<Float64Type>().values(), &[10.0, 11.0, 20.0, 30.0, 40.0, 50.0]);
    let joined = indexed.join(&b.set_index("k", &scheduler).unwrap(), How::Inner).unwrap();
    assert_eq!(joined.compute().unwrap().num_rows(), 3);
}
