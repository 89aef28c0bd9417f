//! tpchgen's raw Parquet files (decimal128 money, string_view text, date32 days, non-nullable
//! fields carrying `PARQUET:field_id` metadata) read as they are: values intact, text usable as
//! a filter and a group key, decimals usable after `astype(float64)`. The files are written
//! here in that layout, a few rows per file, the way `tpchgen-cli parquet --parts=N` lays
//! out `lineitem`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{Array, AsArray, Date32Array, Decimal128Array, Int64Array, RecordBatch, StringViewArray};
use arrow::datatypes::{DataType, Date32Type, Decimal128Type, Field, Float64Type, Schema, SchemaRef};
use kiln_dataframe::{Agg, AggFunc, DType, read_parquet};
use kiln_graph::Collection;
use kiln_local::LocalScheduler;

/// One lineitem-like row: order key, price in cents, return flag, ship date (days).
type Row = (i64, i128, &'static str, i32);

const PARTS: [&[Row]; 3] = [
    &[(1, 1_739_604, "N", 9_500), (1, 2_101_999, "R", 9_501), (2, 5, "A", 9_600)],
    &[(3, 100_000, "N", 9_700), (3, 12_345_678_901_234, "R", 9_800)],
    &[(4, 99, "A", 10_000), (5, 1, "N", 10_001), (5, 50_050, "R", 10_002), (6, 7, "N", 10_003)],
];

fn field(name: &str, data_type: DataType, id: usize) -> Field {
    Field::new(name, data_type, false).with_metadata(HashMap::from([("PARQUET:field_id".to_string(), id.to_string())]))
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        field("l_orderkey", DataType::Int64, 1),
        field("l_extendedprice", DataType::Decimal128(15, 2), 2),
        field("l_returnflag", DataType::Utf8View, 3),
        field("l_shipdate", DataType::Date32, 4),
    ]))
}

fn write_parts(dir: &PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    for (i, rows) in PARTS.iter().enumerate() {
        let batch = RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(
                    Decimal128Array::from_iter_values(rows.iter().map(|r| r.1))
                        .with_precision_and_scale(15, 2)
                        .unwrap(),
                ),
                Arc::new(StringViewArray::from_iter_values(rows.iter().map(|r| r.2))),
                Arc::new(Date32Array::from_iter_values(rows.iter().map(|r| r.3))),
            ],
        )
        .unwrap();
        let file = std::fs::File::create(dir.join(format!("lineitem.{}.parquet", i + 1))).unwrap();
        let mut writer = parquet::arrow::ArrowWriter::try_new(file, schema(), None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
    }
}

fn all_rows() -> Vec<Row> {
    PARTS.iter().flat_map(|p| p.iter().copied()).collect()
}

#[test]
fn tpchgen_decimal_and_string_view_columns_read_intact() {
    let dir = std::env::temp_dir().join(format!("kiln-df-tpchgen-{}", std::process::id()));
    write_parts(&dir);
    let scheduler = LocalScheduler::threads(2);
    let pattern = format!("{}/*.parquet", dir.display());
    let df = read_parquet(&pattern).unwrap();
    assert_eq!(df.npartitions(), 3);
    let types: Vec<DataType> = df.schema().fields().iter().map(|f| f.data_type().clone()).collect();
    assert_eq!(types, [DataType::Int64, DataType::Decimal128(15, 2), DataType::Utf8View, DataType::Date32]);

    // Every value as written, in file order.
    let out = df.compute_on(&scheduler).unwrap();
    let expected = all_rows();
    assert_eq!(out.num_rows(), expected.len());
    let keys = out.column(0).as_primitive::<arrow::datatypes::Int64Type>();
    let prices = out.column(1).as_primitive::<Decimal128Type>();
    let flags = out.column(2).as_string_view();
    let dates = out.column(3).as_primitive::<Date32Type>();
    for (i, row) in expected.iter().enumerate() {
        assert_eq!((keys.value(i), prices.value(i), flags.value(i), dates.value(i)), *row, "row {i}");
    }
    assert_eq!(prices.precision(), 15);
    assert_eq!(prices.scale(), 2);

    // A filter on the text and the date, a projection, as Q1 starts.
    let kept = df.filter(&(df.col("l_returnflag").eq("R") & df.col("l_shipdate").le("1997-01-01"))).unwrap();
    let kept = kept.select(&["l_orderkey", "l_extendedprice"]).unwrap().compute_on(&scheduler).unwrap();
    let expected_kept: Vec<(i64, i128)> =
        expected.iter().filter(|r| r.2 == "R" && r.3 <= 9_862).map(|r| (r.0, r.1)).collect();
    let got: Vec<(i64, i128)> = (0..kept.num_rows())
        .map(|i| {
            (
                kept.column(0).as_primitive::<arrow::datatypes::Int64Type>().value(i),
                kept.column(1).as_primitive::<Decimal128Type>().value(i),
            )
        })
        .collect();
    assert_eq!(got, expected_kept);

    // The text as a group key and the money, cast to float64, summed per group.
    let price = df.col("l_extendedprice").astype(DType::Float64);
    let sums = df
        .groupby(["l_returnflag"])
        .unwrap()
        .agg([Agg::of(AggFunc::Sum, &price).alias("revenue"), Agg::size()])
        .unwrap()
        .compute_on(&scheduler)
        .unwrap();
    let mut want: Vec<(String, f64, i64)> = Vec::new();
    for flag in ["A", "N", "R"] {
        let rows: Vec<&Row> = expected.iter().filter(|r| r.2 == flag).collect();
        want.push((flag.to_string(), rows.iter().map(|r| r.1 as f64 / 100.0).sum(), rows.len() as i64));
    }
    let flag_text = |i: usize| -> String {
        let column = sums.column(0);
        match column.data_type() {
            DataType::Utf8View => column.as_string_view().value(i).to_string(),
            _ => column.as_string::<i32>().value(i).to_string(),
        }
    };
    let got: Vec<(String, f64, i64)> = (0..sums.num_rows())
        .map(|i| {
            (
                flag_text(i),
                sums.column(1).as_primitive::<Float64Type>().value(i),
                sums.column(2).as_primitive::<arrow::datatypes::Int64Type>().value(i),
            )
        })
        .collect();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.0, w.0);
        assert!((g.1 - w.1).abs() <= 1e-6 * w.1.abs().max(1.0), "{g:?} vs {w:?}");
        assert_eq!(g.2, w.2);
    }
    assert!(sums.column(0).null_count() == 0);
    std::fs::remove_dir_all(&dir).unwrap();
}
