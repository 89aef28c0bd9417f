//! Every operation against pandas' answer (`tests/fixtures/expected.json`, written by
//! `tests/fixtures/make_fixtures.py`), on the same data read as 1, 3 and 7 CSV files, as 1, 3
//! and 7 Parquet files, as 3 gzipped CSV files and as 3 in-memory partitions: every layout
//! must give pandas' answer. The data has missing values in numbers, strings and keys.

use arrow::array::{Array, RecordBatch};
use kiln_dataframe::{Agg, AggFunc, DType, DataFrame, Divisions, Scalar, read_csv, read_parquet};
use kiln_graph::Collection;
use serde_json::Value as Json;

mod golden;
use golden::{close, csv_options, expected, layouts, path, scheduler};

fn assert_scalar(context: &str, actual: &Scalar, expected: &Json) {
    let ok = match (actual, expected) {
        (Scalar::Null, Json::Null) => true,
        (Scalar::Float(a), Json::Null) => a.is_nan(),
        (Scalar::Bool(a), Json::Bool(b)) => a == b,
        (Scalar::Str(a), Json::String(b)) => a == b,
        (Scalar::Int(a), Json::Number(b)) => b.as_i64() == Some(*a) || b.as_f64().is_some_and(|b| close(*a as f64, b)),
        (Scalar::TimestampNs(a), Json::Number(b)) => b.as_i64() == Some(*a),
        (Scalar::Float(a), Json::Number(b)) => b.as_f64().is_some_and(|b| close(*a, b)),
        _ => false,
    };
    assert!(ok, "{context}: kiln gave {actual:?}, pandas {expected}");
}

fn assert_frame(case: &str, label: &str, batch: &RecordBatch) {
    let expected = &expected()[case];
    let columns: Vec<String> =
        expected["columns"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect();
    let names: Vec<String> = batch.schema().fields().iter().map(|f| f.name().clone()).collect();
    assert_eq!(names, columns, "{case} on {label}: columns");
    for (i, name) in columns.iter().enumerate() {
        let values = expected["data"][name].as_array().unwrap();
        assert_eq!(batch.num_rows(), values.len(), "{case} on {label}: rows");
        for (row, value) in values.iter().enumerate() {
            let actual = Scalar::from_array(batch.column(i).as_ref(), row).unwrap();
            assert_scalar(&format!("{case} on {label}: column {name} row {row}"), &actual, value);
        }
    }
}

/// Runs `build` on every layout and compares the computed frame with pandas' `case`.
fn check_frame(case: &str, build: impl Fn(&DataFrame) -> DataFrame) {
    for (label, df) in layouts() {
        let out = build(&df).compute_on(&scheduler()).unwrap_or_else(|e| panic!("{case} on {label}: {e}"));
        assert_frame(case, &label, &out);
    }
}

#[test]
fn read_all_columns_and_types() {
    check_frame("read_all", |df| df.clone());
    let df = read_csv(&path("csv/3/*.csv"), &csv_options()).unwrap();
    let types: Vec<String> = df.schema().fields().iter().map(|f| f.data_type().to_string()).collect();
    assert_eq!(types, ["Int64", "Timestamp(ns)", "Float64", "Float64", "Float64", "Utf8"]);
}

#[test]
fn filter_on_a_comparison() {
    check_frame("filter_gt", |df| df.filter(&df.col("fare").gt(10)).unwrap());
}

#[test]
fn assign_arithmetic_with_true_division_and_modulo() {
    check_frame("assign_arith", |df| {
        let total = df.col("fare") + df.col("trip_distance") * 2;
        let ratio = df.col("fare") / df.col("passenger_count");
        let shifted = df.col("id") % 7 - 3;
        let df = df.assign("total", &total).unwrap();
        let df = df.assign("ratio", &ratio).unwrap();
        df.assign("shifted", &shifted).unwrap().select(&["id", "total", "ratio", "shifted"]).unwrap()
    });
}

#[test]
fn isna_notna_and_fillna() {
    check_frame("isna_fillna", |df| {
        let df2 = df.assign("pc_na", &df.col("passenger_count").isna()).unwrap();
        let df2 = df2.assign("dist_present", &df.col("trip_distance").notna()).unwrap();
        let df2 = df2.assign("dist_filled", &df.col("trip_distance").fillna(0.0)).unwrap();
        let df2 = df2.assign("vendor_filled", &df.col("vendor").fillna("Z")).unwrap();
        df2.select(&["id", "pc_na", "dist_present", "dist_filled", "vendor_filled"]).unwrap()
    });
}

#[test]
fn between_and_isin() {
    check_frame("between_isin", |df| {
        let mask = df.col("fare").between(5, 15) & df.col("vendor").isin(["A", "B"]);
        df.filter(&mask).unwrap().select(&["id", "fare", "vendor"]).unwrap()
    });
}

#[test]
fn boolean_logic_treats_missing_like_pandas() {
    check_frame("bool_logic", |df| {
        let mask = df.col("fare").gt(20) | !df.col("passenger_count").ge(2);
        df.filter(&mask).unwrap().select(&["id"]).unwrap()
    });
    check_frame("not_equal_with_missing", |df| df.filter(&df.col("vendor").ne("A")).unwrap().select(&["id"]).unwrap());
}

#[test]
fn abs_and_astype() {
    check_frame("abs_astype", |df| {
        let df2 = df.assign("dev", &(df.col("fare") - 15).abs()).unwrap();
        let df2 = df2.assign("fare_int", &df.col("fare").astype(DType::Int64)).unwrap();
        let df2 = df2.assign("id_float", &(df.col("id").astype(DType::parse("float64").unwrap()) / 4)).unwrap();
        df2.select(&["id", "dev", "fare_int", "id_float"]).unwrap()
    });
}

#[test]
fn datetime_fields() {
    check_frame("dt_fields", |df| {
        let ts = df.col("ts");
        let fields = [
            ("year", ts.dt().year()),
            ("month", ts.dt().month()),
            ("day", ts.dt().day()),
            ("hour", ts.dt().hour()),
            ("minute", ts.dt().minute()),
            ("dayofweek", ts.dt().dayofweek()),
        ];
        let mut out = df.clone();
        for (name, series) in &fields {
            out = out.assign(name, series).unwrap();
        }
        out.select(&fields.iter().map(|(n, _)| *n).collect::<Vec<_>>()).unwrap()
    });
}

#[test]
fn timestamps_compare_with_date_strings() {
    check_frame("filter_dates", |df| df.filter(&df.col("ts").ge("2015-01-05")).unwrap().select(&["id"]).unwrap());
}

#[test]
fn dropna_of_every_column_and_of_a_subset() {
    check_frame("dropna_all", DataFrame::dropna);
    check_frame("dropna_subset", |df| df.dropna_subset(&["trip_distance", "vendor"]).unwrap().select(&["id"]).unwrap());
}

#[test]
fn clip_with_both_or_one_bound() {
    check_frame("clip", |df| {
        let df2 = df.assign("fare_clipped", &df.col("fare").clip(Some(0.into()), Some(20.into()))).unwrap();
        let df2 = df2.assign("dist_clipped", &df.col("trip_distance").clip(Some(1.0.into()), None)).unwrap();
        let df2 = df2.assign("id_clipped", &df.col("id").clip(None, Some(100.5.into()))).unwrap();
        df2.select(&["id", "fare_clipped", "dist_clipped", "id_clipped"]).unwrap()
    });
}

#[test]
fn rename_and_drop() {
    check_frame("rename_drop", |df| df.rename(&[("fare", "price")]).unwrap().drop(&["vendor", "ts"]).unwrap());
}

#[test]
fn reductions_match_pandas_with_missing_values_skipped() {
    let expected = &expected()["reductions"];
    for (label, df) in layouts() {
        for column in ["fare", "trip_distance", "passenger_count", "id"] {
            let s = df.col(column);
            let cases = [
                ("sum", s.sum()),
                ("count", s.count()),
                ("mean", s.mean()),
                ("min", s.min()),
                ("max", s.max()),
                ("var", s.var()),
                ("std", s.std()),
                ("var0", s.var_ddof(0)),
                ("std0", s.std_ddof(0)),
            ];
            for (name, reduction) in cases {
                let value = reduction.compute_on(&scheduler()).unwrap();
                assert_scalar(&format!("{column}.{name}() on {label}"), &value, &expected[column][name]);
            }
        }
        for (name, reduction) in
            [("min", df.col("vendor").min()), ("max", df.col("vendor").max()), ("count", df.col("vendor").count())]
        {
            let value = reduction.compute_on(&scheduler()).unwrap();
            assert_scalar(&format!("vendor.{name}() on {label}"), &value, &expected["vendor"][name]);
        }
        for (name, reduction) in [("min", df.col("ts").min()), ("max", df.col("ts").max())] {
            let value = reduction.compute_on(&scheduler()).unwrap();
            assert_scalar(&format!("ts.{name}() on {label}"), &value, &expected["ts"][name]);
        }
    }
}

#[test]
fn reductions_of_no_rows() {
    let expected = &expected()["empty_reductions"];
    for (label, df) in layouts() {
        let none = df.filter(&df.col("fare").gt(1e9)).unwrap();
        let fare = none.col("fare");
        for (name, reduction) in
            [("sum", fare.sum()), ("count", fare.count()), ("mean", fare.mean()), ("max", fare.max())]
        {
            let value = reduction.compute_on(&scheduler()).unwrap();
            assert_scalar(&format!("empty {name} on {label}"), &value, &expected[name]);
        }
    }
}

#[test]
fn len_counts_rows_after_filters() {
    let expected = &expected()["len"];
    for (label, df) in layouts() {
        assert_eq!(df.len().compute_on(&scheduler()).unwrap() as u64, expected["all"].as_u64().unwrap(), "{label}");
        let long = df.filter(&df.col("trip_distance").gt(3)).unwrap();
        assert_eq!(
            long.len().compute_on(&scheduler()).unwrap() as u64,
            expected["filtered"].as_u64().unwrap(),
            "{label}"
        );
    }
}

#[test]
fn head_reads_the_first_rows() {
    for (label, df) in layouts() {
        let out = df.select(&["id", "fare"]).unwrap().head(5).compute_on(&scheduler()).unwrap();
        assert_frame("head", &label, &out);
    }
}

/// A group-by on every layout, with a reduction tree of fan-in 2 (several combine levels on 7
/// partitions) and the default 8.
fn check_groupby(case: &str, build: impl Fn(&DataFrame, (usize, usize)) -> DataFrame) {
    for config in [(2, 1), (8, 1)] {
        check_frame(case, |df| build(df, config));
    }
    // split_out: the groups spread over 3 or 7 partitions, each sorted; sorted whole here.
    for split_out in [3, 7] {
        for (label, df) in layouts() {
            let grouped = build(&df, (8, split_out));
            assert_eq!(grouped.npartitions(), split_out, "{case} on {label}");
            assert!(grouped.explain().contains(&format!("shuffle of partials into {split_out} partitions")));
            let out = grouped.compute_on(&scheduler()).unwrap_or_else(|e| panic!("{case} on {label}: {e}"));
            assert_frame(case, &format!("{label} split_out {split_out}"), &sorted_by_all(&out));
        }
    }
}

/// The rows sorted by every column in order, missing values last.
fn sorted_by_all(batch: &RecordBatch) -> RecordBatch {
    let options = arrow::compute::SortOptions { descending: false, nulls_first: false };
    let columns: Vec<arrow::compute::SortColumn> = batch
        .columns()
        .iter()
        .map(|c| arrow::compute::SortColumn { values: c.clone(), options: Some(options) })
        .collect();
    let order = arrow::compute::lexsort_to_indices(&columns, None).unwrap();
    arrow::compute::take_record_batch(batch, &order).unwrap()
}

#[test]
fn groupby_every_aggregation() {
    check_groupby("groupby_vendor", |df, config| {
        df.groupby(["vendor"])
            .unwrap()
            .split_every(config.0)
            .split_out(config.1)
            .agg([
                Agg::sum("trip_distance").alias("dist_sum"),
                Agg::count("trip_distance").alias("dist_count"),
                Agg::mean("trip_distance").alias("dist_mean"),
                Agg::min("trip_distance").alias("dist_min"),
                Agg::max("trip_distance").alias("dist_max"),
                Agg::var("trip_distance").alias("dist_var"),
                Agg::std("trip_distance").alias("dist_std"),
                Agg::sum("fare").alias("fare_sum"),
                Agg::size(),
                Agg::max("passenger_count").alias("pc_max"),
                Agg::sum("id").alias("id_sum"),
                Agg::min("ts").alias("ts_min"),
            ])
            .unwrap()
    });
}

#[test]
fn groupby_an_hour_of_a_timestamp() {
    check_groupby("groupby_hour_mean", |df, config| {
        df.groupby([df.col("ts").dt().hour()])
            .unwrap()
            .split_every(config.0)
            .split_out(config.1)
            .agg([Agg::mean("fare")])
            .unwrap()
    });
}

#[test]
fn groupby_two_keys_drops_missing_keys() {
    check_groupby("groupby_two_keys", |df, config| {
        df.groupby(["vendor", "passenger_count"])
            .unwrap()
            .split_every(config.0)
            .split_out(config.1)
            .agg([Agg::sum("fare").alias("fare_sum"), Agg::size().alias("n")])
            .unwrap()
    });
}

#[test]
fn groupby_after_a_filter() {
    check_groupby("groupby_after_filter", |df, config| {
        let long = df.filter(&df.col("trip_distance").gt(2)).unwrap();
        long.groupby(["passenger_count"])
            .unwrap()
            .split_every(config.0)
            .split_out(config.1)
            .agg([Agg::mean("fare").alias("fare_mean"), Agg::std("fare").alias("fare_std")])
            .unwrap()
    });
}

#[test]
fn groupby_an_assigned_expression() {
    check_groupby("groupby_expression_key", |df, config| {
        let df = df.assign("bucket", &(df.col("fare") / 10).astype(DType::Int64)).unwrap();
        df.groupby(["bucket"])
            .unwrap()
            .split_every(config.0)
            .split_out(config.1)
            .agg([
                Agg::mean("trip_distance").alias("dist_mean"),
                Agg::of(AggFunc::Count, &df.col("vendor")).alias("vendors"),
            ])
            .unwrap()
    });
}

// Aggregations after filters. A filter that keeps at least half of a piece's rows is not
// applied: the aggregation reads through its mask (rows left out join no group), so these
// cases cover both ways, partitions kept whole or dropped whole, and masks with missing values.

/// The aggregations of the masked cases (`adj` given as an expression, or assigned).
fn masked_aggs(df: &DataFrame, assigned: bool) -> Vec<Agg> {
    let adj = if assigned { df.col("adj") } else { (df.col("fare") - df.col("trip_distance")) * 2 };
    vec![
        Agg::sum("trip_distance").alias("dist_sum"),
        Agg::mean("trip_distance").alias("dist_mean"),
        Agg::count("trip_distance").alias("dist_count"),
        Agg::std("trip_distance").alias("dist_std"),
        Agg::max("passenger_count").alias("pc_max"),
        Agg::size().alias("n"),
        Agg::of(AggFunc::Sum, &adj).alias("adj_sum"),
        Agg::of(AggFunc::Mean, &adj).alias("adj_mean"),
    ]
}

fn grouped_by_vendor(df: &DataFrame, config: (usize, usize), assigned: bool) -> DataFrame {
    let aggs = masked_aggs(df, assigned);
    df.groupby(["vendor"]).unwrap().split_every(config.0).split_out(config.1).agg(aggs).unwrap()
}

#[test]
fn groupby_through_a_mask_that_keeps_most_rows() {
    check_groupby("groupby_masked", |df, config| {
        grouped_by_vendor(&df.filter(&df.col("fare").gt(4)).unwrap(), config, false)
    });
    // The expression assigned before the filter: a projection step, then the mask.
    check_groupby("groupby_masked", |df, config| {
        let df = df.assign("adj", &((df.col("fare") - df.col("trip_distance")) * 2)).unwrap();
        grouped_by_vendor(&df.filter(&df.col("fare").gt(4)).unwrap(), config, true)
    });
    // Two filters in a row are one mask.
    check_groupby("groupby_masked", |df, config| {
        let df = df.filter(&df.col("fare").gt(3)).unwrap();
        grouped_by_vendor(&df.filter(&df.col("fare").gt(4)).unwrap(), config, false)
    });
}

#[test]
fn groupby_after_a_filter_that_keeps_nothing() {
    check_groupby("groupby_masked_none", |df, config| {
        grouped_by_vendor(&df.filter(&df.col("fare").gt(1e9)).unwrap(), config, false)
    });
}

#[test]
fn groupby_after_a_filter_that_empties_whole_partitions() {
    check_groupby("groupby_masked_tail", |df, config| {
        grouped_by_vendor(&df.filter(&df.col("id").ge(100)).unwrap(), config, false)
    });
    // Partitions that hold no rows at all, beside ones the filter keeps whole.
    let whole = read_parquet(&path("parquet/1")).unwrap().compute_on(&scheduler()).unwrap();
    let tail = whole.slice(100, whole.num_rows() - 100);
    let parts = vec![whole.slice(0, 0), tail.slice(0, 70), whole.slice(0, 0), tail.slice(70, tail.num_rows() - 70)];
    let df = DataFrame::from_batches(parts).unwrap();
    let out = grouped_by_vendor(&df.filter(&df.col("fare").gt(-1e9)).unwrap(), (2, 1), false)
        .compute_on(&scheduler())
        .unwrap();
    assert_frame("groupby_masked_tail", "batches with empty partitions", &out);
}

#[test]
fn groupby_through_a_mask_with_missing_values() {
    // `flag`: fare > 4, missing where passenger_count is; a missing flag drops its row.
    let whole = read_parquet(&path("parquet/1")).unwrap().compute_on(&scheduler()).unwrap();
    let fare = whole.column_by_name("fare").unwrap().as_any().downcast_ref::<arrow::array::Float64Array>().unwrap();
    let pc = whole.column_by_name("passenger_count").unwrap();
    let flag: arrow::array::BooleanArray = (0..whole.num_rows())
        .map(|i| {
            (pc.is_valid(i) && !pc.as_any().downcast_ref::<arrow::array::Float64Array>().unwrap().value(i).is_nan())
                .then(|| fare.value(i) > 4.0)
        })
        .collect();
    assert!(flag.null_count() > 0 && flag.true_count() * 2 > whole.num_rows());
    let mut fields: Vec<arrow::datatypes::FieldRef> = whole.schema().fields().iter().cloned().collect();
    fields.push(std::sync::Arc::new(arrow::datatypes::Field::new("flag", arrow::datatypes::DataType::Boolean, true)));
    let mut columns = whole.columns().to_vec();
    columns.push(std::sync::Arc::new(flag));
    let flagged = RecordBatch::try_new(std::sync::Arc::new(arrow::datatypes::Schema::new(fields)), columns).unwrap();
    for n in [1, 3, 7] {
        let df = DataFrame::from_batch(flagged.clone(), n).unwrap();
        for config in [(2, 1), (8, 3)] {
            let out = grouped_by_vendor(&df.filter(&df.col("flag")).unwrap(), config, false)
                .compute_on(&scheduler())
                .unwrap();
            assert_frame("groupby_null_mask", &format!("batches/{n} {config:?}"), &sorted_by_all(&out));
        }
    }
}

#[test]
fn reductions_through_a_mask() {
    let expected = &expected()["reduce_masked"];
    for (label, df) in layouts() {
        let kept = df.filter(&df.col("fare").gt(4)).unwrap();
        let adj = (kept.col("fare") - kept.col("trip_distance")) * 2;
        let out = kept
            .agg([
                Agg::sum("trip_distance").alias("dist_sum"),
                Agg::mean("trip_distance").alias("dist_mean"),
                Agg::count("trip_distance").alias("dist_count"),
                Agg::of(AggFunc::Sum, &adj).alias("adj_sum"),
            ])
            .unwrap()
            .compute_on(&scheduler())
            .unwrap();
        assert_eq!(out.num_rows(), 1, "{label}");
        for name in ["dist_sum", "dist_mean", "dist_count", "adj_sum"] {
            let actual = Scalar::from_array(out.column_by_name(name).unwrap().as_ref(), 0).unwrap();
            assert_scalar(&format!("masked {name} on {label}"), &actual, &expected[name]);
        }
    }
}

// Time series: every layout indexed by `ts` (a range shuffle, so 1, 3 and 7 partitions with
// their own boundaries), plus one cut into 20 partitions of a dozen rows, so windows and
// shifts span several partitions.

fn indexed_layouts() -> Vec<(String, DataFrame)> {
    let sched = scheduler();
    let mut out: Vec<(String, DataFrame)> =
        layouts().into_iter().map(|(label, df)| (label, df.set_index("ts", &sched).unwrap())).collect();
    let base = out.iter().find(|(l, _)| l == "csv/7").unwrap().1.clone();
    let Divisions::Known(d) = base.divisions().clone() else { panic!("set_index gives divisions") };
    let (Scalar::TimestampNs(lo), Scalar::TimestampNs(hi)) = (&d[0], &d[d.len() - 1]) else { panic!("timestamps") };
    let divisions: Vec<Scalar> = (0..=20).map(|i| Scalar::TimestampNs(lo + (hi - lo) / 20 * i)).collect();
    let mut divisions = divisions;
    *divisions.last_mut().unwrap() = Scalar::TimestampNs(*hi);
    let small = base.repartition_divisions(divisions).unwrap();
    assert_eq!(small.npartitions(), 20);
    out.push(("csv/7 in 20 partitions".into(), small));
    out
}

fn check_indexed(case: &str, build: impl Fn(&DataFrame) -> DataFrame) {
    for (label, df) in indexed_layouts() {
        let out = build(&df).compute_on(&scheduler()).unwrap_or_else(|e| panic!("{case} on {label}: {e}"));
        assert_frame(case, &label, &out);
    }
}

#[test]
fn resample_an_hour_mean_of_a_series_as_the_seeds_do() {
    check_indexed("resample_h_mean", |df| df.col("trip_distance").resample("h").unwrap().mean().unwrap());
}

#[test]
fn resample_by_day_with_named_aggregations() {
    check_indexed("resample_D_agg", |df| {
        df.resample("D")
            .unwrap()
            .agg([
                Agg::sum("fare").alias("fare_sum"),
                Agg::count("trip_distance").alias("dist_count"),
                Agg::max("passenger_count").alias("pc_max"),
                Agg::std("trip_distance").alias("dist_std"),
                Agg::mean("trip_distance").alias("dist_mean"),
                Agg::size().alias("n"),
                Agg::min("id").alias("id_min"),
            ])
            .unwrap()
    });
}

#[test]
fn resample_multiples_of_minutes_days_and_weeks() {
    check_indexed("resample_15min_sum", |df| {
        df.select(&["ts", "fare", "trip_distance"]).unwrap().resample("15min").unwrap().sum().unwrap()
    });
    // 7 minutes do not divide a day: buckets count from midnight of the first day.
    check_indexed("resample_7min_count", |df| {
        df.select(&["ts", "trip_distance"]).unwrap().resample("7min").unwrap().count().unwrap()
    });
    check_indexed("resample_2D_var", |df| {
        df.select(&["ts", "fare", "trip_distance"]).unwrap().resample("2D").unwrap().var().unwrap()
    });
    check_indexed("resample_W_mean", |df| {
        df.select(&["ts", "fare", "passenger_count"]).unwrap().resample("W").unwrap().mean().unwrap()
    });
}

#[test]
fn resample_a_slice_by_seconds() {
    let bounds = &expected()["resample_slice_bounds"];
    let (lo, hi) = (bounds["low"].as_i64().unwrap(), bounds["high"].as_i64().unwrap());
    check_indexed("resample_10s_size_slice", |df| {
        let slice = df.loc(Some(Scalar::TimestampNs(lo)), Some(Scalar::TimestampNs(hi))).unwrap();
        slice.select(&["ts", "id"]).unwrap().resample("10s").unwrap().size().unwrap()
    });
}

fn rolled(df: &DataFrame) -> DataFrame {
    df.select(&["ts", "fare", "trip_distance", "passenger_count"]).unwrap()
}

#[test]
fn rolling_by_rows_within_and_across_partitions() {
    for w in [3usize, 50] {
        check_indexed(&format!("rolling_{w}_sum"), |df| rolled(df).rolling(w).unwrap().sum().unwrap());
        check_indexed(&format!("rolling_{w}_mean"), |df| rolled(df).rolling(w).unwrap().mean().unwrap());
        check_indexed(&format!("rolling_{w}_count"), |df| rolled(df).rolling(w).unwrap().count().unwrap());
        check_indexed(&format!("rolling_{w}_min"), |df| rolled(df).rolling(w).unwrap().min().unwrap());
        check_indexed(&format!("rolling_{w}_max"), |df| rolled(df).rolling(w).unwrap().max().unwrap());
        check_indexed(&format!("rolling_{w}_std"), |df| rolled(df).rolling(w).unwrap().std().unwrap());
    }
    check_indexed("rolling_5_minp1_var", |df| rolled(df).rolling(5).unwrap().min_periods(1).var().unwrap());
}

#[test]
fn rolling_by_time_span() {
    for span in ["2h", "3D"] {
        check_indexed(&format!("rolling_{span}_sum"), |df| rolled(df).rolling(span).unwrap().sum().unwrap());
        check_indexed(&format!("rolling_{span}_mean"), |df| rolled(df).rolling(span).unwrap().mean().unwrap());
        check_indexed(&format!("rolling_{span}_count"), |df| rolled(df).rolling(span).unwrap().count().unwrap());
        check_indexed(&format!("rolling_{span}_max"), |df| rolled(df).rolling(span).unwrap().max().unwrap());
        check_indexed(&format!("rolling_{span}_std"), |df| rolled(df).rolling(span).unwrap().std().unwrap());
    }
}

#[test]
fn shift_and_diff_forward_and_backward() {
    for n in [1i64, -2, 40, -75] {
        check_indexed(&format!("shift_{n}"), |df| {
            df.select(&["ts", "fare", "vendor", "id"]).unwrap().shift(n).unwrap()
        });
    }
    for n in [1i64, -3, 50] {
        check_indexed(&format!("diff_{n}"), |df| {
            df.select(&["ts", "fare", "trip_distance", "id"]).unwrap().diff(n).unwrap()
        });
    }
}

#[test]
fn repartition_to_divisions_and_to_more_partitions_keeps_the_index_divided() {
    let case = &expected()["repartition_divisions"];
    let divisions: Vec<Scalar> =
        case["divisions"].as_array().unwrap().iter().map(|d| Scalar::TimestampNs(d.as_i64().unwrap())).collect();
    let counts: Vec<usize> = case["counts"].as_array().unwrap().iter().map(|c| c.as_u64().unwrap() as usize).collect();
    for (label, df) in indexed_layouts() {
        let moved = df.repartition_divisions(divisions.clone()).unwrap();
        assert_eq!(moved.divisions(), &Divisions::Known(divisions.clone()), "{label}");
        let parts = moved.partitions().compute_on(&scheduler()).unwrap();
        let sizes: Vec<usize> = parts.iter().map(RecordBatch::num_rows).collect();
        assert_eq!(sizes, counts, "repartition(divisions) on {label}");
        assert_frame("sorted_by_ts", &label, &moved.compute_on(&scheduler()).unwrap());
        // More partitions than before: divisions stay known, and every partition's rows lie
        // within its own.
        let more = df.repartition(df.npartitions() * 2 + 1).unwrap();
        let Divisions::Known(d) = more.divisions().clone() else { panic!("{label}: repartition(n) lost divisions") };
        assert_eq!(d.len(), more.npartitions() + 1, "{label}");
        let parts = more.partitions().compute_on(&scheduler()).unwrap();
        for (i, part) in parts.iter().enumerate() {
            let ts = part.column_by_name("ts").unwrap();
            for row in 0..part.num_rows() {
                let Scalar::TimestampNs(t) = Scalar::from_array(ts.as_ref(), row).unwrap() else { panic!() };
                let (Scalar::TimestampNs(lo), Scalar::TimestampNs(hi)) = (&d[i], &d[i + 1]) else { panic!() };
                let last = i + 1 == parts.len();
                assert!(t >= *lo && (t < *hi || (last && t == *hi)), "{label}: partition {i} row {row}");
            }
        }
        assert_frame("sorted_by_ts", &label, &more.compute_on(&scheduler()).unwrap());
    }
}
