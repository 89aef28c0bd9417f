//! The operations added after `tests/pandas_golden.rs` against pandas' answers (the
//! `newer_cases` of `tests/fixtures/make_fixtures.py`, in `tests/fixtures/expected.json`):
//! string methods, `round`, `dt.date` and `dt.floor`, group-by `first`/`last`/`nunique`/`any`/
//! `all`, Series `first`/`last`/`any`/`all`/`unique`, `quantile`, `describe`,
//! `nlargest`/`nsmallest` and joins on the index.
//! Each runs on the trips read as 1, 3 and 7 CSV files, as 1, 3 and 7 Parquet files, as 3
//! gzipped CSV files, as byte blocks of one file and as 3 in-memory partitions; the notes table
//! (free text, the joins' right side) in 1, 3 and 7 partitions from its CSV and its Parquet file.
//! Beside the values, each column's kind (int, float, bool, str, datetime, date) is pandas'.

use arrow::array::{Array, ArrayRef, RecordBatch};
use arrow::datatypes::DataType;
use kiln_dataframe::{Agg, AggFunc, CsvOptions, DataFrame, How, Scalar, read_csv, read_parquet};
use kiln_graph::Collection;
use serde_json::Value as Json;

mod golden;
use golden::{close, expected, layouts, path, scheduler};

/// The notes table from its CSV and its Parquet file, in 1, 3 and 7 partitions.
fn notes_layouts() -> Vec<(String, DataFrame)> {
    let sched = scheduler();
    let from_csv = read_csv(&path("tables/notes.csv"), &CsvOptions::default()).unwrap().compute_on(&sched).unwrap();
    let from_parquet = read_parquet(&path("tables/notes.parquet")).unwrap().compute_on(&sched).unwrap();
    let mut out = Vec::new();
    for (source, whole) in [("csv", from_csv), ("parquet", from_parquet)] {
        for n in [1, 3, 7] {
            out.push((format!("notes {source}/{n}"), DataFrame::from_batch(whole.clone(), n).unwrap()));
        }
    }
    out
}

fn scalar_matches(actual: &Scalar, expected: &Json) -> bool {
    match (actual, expected) {
        (Scalar::Null, Json::Null) => true,
        (Scalar::Float(a), Json::Null) => a.is_nan(),
        (Scalar::Bool(a), Json::Bool(b)) => a == b,
        (Scalar::Str(a), Json::String(b)) => a == b,
        (Scalar::Int(a), Json::Number(b)) => b.as_i64() == Some(*a) || b.as_f64().is_some_and(|b| close(*a as f64, b)),
        (Scalar::TimestampNs(a), Json::Number(b)) => b.as_i64() == Some(*a),
        (Scalar::Float(a), Json::Number(b)) => b.as_f64().is_some_and(|b| close(*a, b)),
        _ => false,
    }
}

fn assert_scalar(context: &str, actual: &Scalar, expected: &Json) {
    assert!(scalar_matches(actual, expected), "{context}: kiln gave {actual:?}, pandas {expected}");
}

fn assert_float(context: &str, actual: f64, expected: &Json) {
    assert_scalar(context, &Scalar::Float(actual), expected);
}

/// The kind of an Arrow type, as the fixture names pandas' dtypes.
fn kind(data_type: &DataType) -> &'static str {
    match data_type {
        DataType::Boolean => "bool",
        t if t.is_integer() => "int",
        t if t.is_floating() => "float",
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "str",
        DataType::Dictionary(_, v) if matches!(v.as_ref(), DataType::Utf8 | DataType::LargeUtf8) => "str",
        DataType::Timestamp(_, _) => "datetime",
        DataType::Date32 | DataType::Date64 => "date",
        _ => "other",
    }
}

fn assert_values(context: &str, array: &dyn Array, values: &[Json]) {
    assert_eq!(array.len(), values.len(), "{context}: rows");
    for (row, value) in values.iter().enumerate() {
        let actual = Scalar::from_array(array, row).unwrap();
        assert_scalar(&format!("{context} row {row}"), &actual, value);
    }
}

/// The batch against pandas' frame `case`: column names, kinds and values, missing included.
fn assert_frame(case: &str, label: &str, batch: &RecordBatch) {
    let expected = &expected()[case];
    assert!(expected.is_object(), "no case {case} in expected.json");
    let columns: Vec<&str> = expected["columns"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    let names: Vec<String> = batch.schema().fields().iter().map(|f| f.name().clone()).collect();
    assert_eq!(names, columns, "{case} on {label}: columns");
    for (i, name) in columns.iter().enumerate() {
        let data_type = batch.schema().field(i).data_type().clone();
        assert_eq!(kind(&data_type), expected["kinds"][name], "{case} on {label}: column {name} has type {data_type}");
        let values = expected["data"][name].as_array().unwrap();
        assert_values(&format!("{case} on {label}: column {name}"), batch.column(i).as_ref(), values);
    }
}

/// The rows sorted by `columns` in order, missing values last.
fn sorted_by(batch: &RecordBatch, columns: &[&str]) -> RecordBatch {
    let options = arrow::compute::SortOptions { descending: false, nulls_first: false };
    let sort: Vec<arrow::compute::SortColumn> = columns
        .iter()
        .map(|c| arrow::compute::SortColumn {
            values: batch.column_by_name(c).unwrap().clone(),
            options: Some(options),
        })
        .collect();
    let order = arrow::compute::lexsort_to_indices(&sort, None).unwrap();
    arrow::compute::take_record_batch(batch, &order).unwrap()
}

fn sorted_by_all(batch: &RecordBatch) -> RecordBatch {
    let names: Vec<String> = batch.schema().fields().iter().map(|f| f.name().clone()).collect();
    sorted_by(batch, &names.iter().map(String::as_str).collect::<Vec<_>>())
}

fn compute(case: &str, label: &str, df: &DataFrame) -> RecordBatch {
    df.compute_on(&scheduler()).unwrap_or_else(|e| panic!("{case} on {label}: {e}"))
}

/// Runs `build` on every layout of `frames` and compares the computed frame with pandas' `case`.
fn check_on(frames: Vec<(String, DataFrame)>, case: &str, build: impl Fn(&DataFrame) -> DataFrame) {
    for (label, df) in frames {
        assert_frame(case, &label, &compute(case, &label, &build(&df)));
    }
}

/// `df` with the named series assigned, then only `keep` and those columns.
fn assigned(df: &DataFrame, keep: &[&str], series: Vec<(&str, kiln_dataframe::Series)>) -> DataFrame {
    let mut out = df.clone();
    for (name, s) in &series {
        out = out.assign(name, s).unwrap_or_else(|e| panic!("assign {name}: {e}"));
    }
    let columns: Vec<&str> = keep.iter().copied().chain(series.iter().map(|(n, _)| *n)).collect();
    out.select(&columns).unwrap()
}

// String methods. kiln's `.str` keeps a missing text missing (pandas' NA-backed `string`
// dtype, which the fixture uses); pandas 3's default `str` dtype answers false for it, which
// `fillna(false)` gives, as kiln documents.

fn vendor_string_ops(df: &DataFrame) -> DataFrame {
    let v = df.col("vendor");
    assigned(
        df,
        &["id"],
        vec![
            ("contains", v.str().contains("A")),
            ("startswith", v.str().startswith("B")),
            ("endswith", v.str().endswith("C")),
            ("lower", v.str().lower()),
            ("upper", v.str().upper()),
            ("len", v.str().len()),
            ("replace", v.str().replace("A", "alpha")),
            ("strip", v.str().strip()),
            ("contains_regex", v.str().contains_regex("^[AB]$")),
            ("replace_regex", v.str().replace_regex("([A-C])", r"<\1\1>")),
        ],
    )
}

#[test]
fn string_methods_of_a_column_with_missing_text() {
    check_on(layouts(), "str_vendor", vendor_string_ops);
}

#[test]
fn string_masks_filled_false_are_pandas_default_str_answers() {
    check_on(layouts(), "str_vendor_default_str", |df| {
        let v = df.col("vendor");
        assigned(
            df,
            &["id"],
            vec![
                ("contains", v.str().contains("A").fillna(false)),
                ("startswith", v.str().startswith("B").fillna(false)),
                ("endswith", v.str().endswith("C").fillna(false)),
                ("contains_regex", v.str().contains_regex("^[AB]$").fillna(false)),
            ],
        )
    });
}

#[test]
fn a_filter_on_a_string_mask_drops_missing_text() {
    check_on(layouts(), "str_vendor_filter", |df| {
        df.filter(&df.col("vendor").str().contains_regex("^[AB]$")).unwrap().select(&["id", "vendor"]).unwrap()
    });
}

#[test]
fn notes_table_reads_as_pandas_wrote_it() {
    check_on(notes_layouts(), "notes_read", DataFrame::clone);
}

#[test]
fn string_methods_of_free_text() {
    check_on(notes_layouts(), "str_notes", |df| {
        let s = df.col("note");
        let stripped = s.str().strip();
        assigned(
            df,
            &["id"],
            vec![
                ("contains", s.str().contains("ar")),
                ("contains_dot", s.str().contains(".")),
                ("startswith", s.str().startswith("ca")),
                ("endswith", s.str().endswith("d")),
                ("lower", s.str().lower()),
                ("upper", s.str().upper()),
                ("len", s.str().len()),
                ("replace", s.str().replace("-", "--")),
                ("strip", stripped.clone()),
                ("strip_len", stripped.str().len()),
                ("contains_regex", s.str().contains_regex(r"\d+|(?i:^card)")),
                ("contains_ci", s.str().contains_regex("(?i)night|WORLD")),
                ("replace_regex", s.str().replace_regex(r"(\w+) (?P<second>\w+)", r"\g<second> \1")),
                ("replace_digits", s.str().replace_regex(r"\d", "#")),
            ],
        )
    });
}

#[test]
fn round_halves_to_even_with_positive_and_negative_decimals() {
    check_on(layouts(), "round", |df| {
        assigned(
            df,
            &["id"],
            vec![
                ("fare_1", df.col("fare").round(1)),
                ("fare_0", df.col("fare").round(0)),
                ("fare_m1", df.col("fare").round(-1)),
                ("dist_2", df.col("trip_distance").round(2)),
                ("dist_1", df.col("trip_distance").round(1)),
                ("pc_0", df.col("passenger_count").round(0)),
                ("id_m1", df.col("id").round(-1)),
                ("id_m2", df.col("id").round(-2)),
                ("half", (df.col("id") / 8).round(2)),
                ("half_0", (df.col("id") / 2 + 0.5).round(0)),
            ],
        )
    });
}

#[test]
fn dt_date_and_floor_to_fixed_frequencies() {
    check_on(layouts(), "dt_date_floor", |df| {
        let ts = df.col("ts");
        let mut series = vec![("date", ts.dt().date())];
        for (name, freq) in [
            ("floor_s", "s"),
            ("floor_min", "min"),
            ("floor_7min", "7min"),
            ("floor_15min", "15min"),
            ("floor_h", "h"),
            ("floor_D", "D"),
            ("floor_2D", "2D"),
        ] {
            series.push((name, ts.dt().floor(freq)));
        }
        assigned(df, &["id"], series)
    });
}

/// A group-by on every layout with reduction trees of fan-in 2 and 8, and with its groups
/// spread over 3 and 7 partitions (sorted whole here).
fn check_groupby(case: &str, build: impl Fn(&DataFrame, (usize, usize)) -> DataFrame) {
    for config in [(2, 1), (8, 1)] {
        check_on(layouts(), case, |df| build(df, config));
    }
    for split_out in [3, 7] {
        for (label, df) in layouts() {
            let grouped = build(&df, (8, split_out));
            assert_eq!(grouped.npartitions(), split_out, "{case} on {label}");
            let out = compute(case, &label, &grouped);
            assert_frame(case, &format!("{label} split_out {split_out}"), &sorted_by_all(&out));
        }
    }
}

#[test]
fn groupby_first_last_and_nunique_skip_missing_values() {
    check_groupby("groupby_first_last_nunique", |df, (every, out)| {
        df.groupby(["vendor"])
            .unwrap()
            .split_every(every)
            .split_out(out)
            .agg([
                Agg::first("trip_distance").alias("dist_first"),
                Agg::last("trip_distance").alias("dist_last"),
                Agg::first("passenger_count").alias("pc_first"),
                Agg::last("passenger_count").alias("pc_last"),
                Agg::first("id").alias("id_first"),
                Agg::last("id").alias("id_last"),
                Agg::first("ts").alias("ts_first"),
                Agg::last("ts").alias("ts_last"),
                Agg::nunique("passenger_count").alias("pc_nunique"),
                Agg::nunique("trip_distance").alias("dist_nunique"),
                Agg::nunique("id").alias("id_nunique"),
            ])
            .unwrap()
    });
}

#[test]
fn groupby_first_last_and_nunique_of_text() {
    check_groupby("groupby_pc_vendor_first_last", |df, (every, out)| {
        df.groupby(["passenger_count"])
            .unwrap()
            .split_every(every)
            .split_out(out)
            .agg([
                Agg::first("vendor").alias("vendor_first"),
                Agg::last("vendor").alias("vendor_last"),
                Agg::nunique("vendor").alias("vendor_nunique"),
                Agg::size().alias("n"),
            ])
            .unwrap()
    });
}

#[test]
fn groupby_first_last_after_a_filter_that_empties_partitions() {
    check_groupby("groupby_first_last_filtered", |df, (every, out)| {
        df.filter(&df.col("id").ge(150))
            .unwrap()
            .groupby(["vendor"])
            .unwrap()
            .split_every(every)
            .split_out(out)
            .agg([
                Agg::first("trip_distance").alias("dist_first"),
                Agg::last("trip_distance").alias("dist_last"),
                Agg::nunique("passenger_count").alias("pc_nunique"),
            ])
            .unwrap()
    });
}

#[test]
fn groupby_first_last_through_a_mask_that_keeps_most_rows() {
    check_groupby("groupby_first_last_masked", |df, (every, out)| {
        df.filter(&df.col("fare").gt(4))
            .unwrap()
            .groupby(["vendor"])
            .unwrap()
            .split_every(every)
            .split_out(out)
            .agg([
                Agg::first("trip_distance").alias("dist_first"),
                Agg::last("trip_distance").alias("dist_last"),
                Agg::first("passenger_count").alias("pc_first"),
                Agg::last("passenger_count").alias("pc_last"),
                Agg::nunique("trip_distance").alias("dist_nunique"),
            ])
            .unwrap()
    });
}

#[test]
fn groupby_any_and_all_of_comparisons() {
    check_groupby("groupby_any_all", |df, (every, out)| {
        let pc_ge_1 = df.col("passenger_count").ge(1);
        df.groupby(["vendor"])
            .unwrap()
            .split_every(every)
            .split_out(out)
            .agg([
                Agg::of(AggFunc::Any, &df.col("fare").gt(25)).alias("fare_gt_25_any"),
                Agg::of(AggFunc::All, &df.col("fare").gt(0)).alias("fare_gt_0_all"),
                Agg::of(AggFunc::Any, &df.col("trip_distance").gt(9)).alias("dist_gt_9_any"),
                Agg::of(AggFunc::All, &pc_ge_1).alias("pc_ge_1_all"),
                Agg::of(AggFunc::Any, &pc_ge_1).alias("pc_ge_1_any"),
            ])
            .unwrap()
    });
}

#[test]
fn series_first_and_last_present_values() {
    let expected = &expected()["series_first_last"];
    for (label, df) in layouts() {
        let kept = df.filter(&df.col("fare").gt(4)).unwrap();
        let none = df.filter(&df.col("fare").gt(1e9)).unwrap();
        let mut cases = Vec::new();
        for column in ["trip_distance", "passenger_count", "vendor", "ts", "id"] {
            cases.push((format!("{column}_first"), df.col(column).first()));
            cases.push((format!("{column}_last"), df.col(column).last()));
        }
        for column in ["trip_distance", "vendor"] {
            cases.push((format!("kept_{column}_first"), kept.col(column).first()));
            cases.push((format!("kept_{column}_last"), kept.col(column).last()));
        }
        cases.push(("empty_first".into(), none.col("fare").first()));
        assert_eq!(cases.len(), expected.as_object().unwrap().len());
        for (name, reduction) in cases {
            let value = reduction.compute_on(&scheduler()).unwrap_or_else(|e| panic!("{name} on {label}: {e}"));
            assert_scalar(&format!("{name} on {label}"), &value, &expected[name.as_str()]);
        }
    }
}

#[test]
fn any_and_all_skip_missing_values() {
    let expected = &expected()["any_all"];
    for (label, df) in layouts() {
        let vendor_a = df.col("vendor").str().contains("A");
        let none = df.filter(&df.col("fare").gt(1e9)).unwrap();
        let only_a = df.filter(&df.col("vendor").eq("A")).unwrap();
        let cases = [
            ("fare_gt_25_any", df.col("fare").gt(25).any()),
            ("fare_gt_25_all", df.col("fare").gt(25).all()),
            ("fare_gt_m20_all", df.col("fare").gt(-20).all()),
            ("fare_gt_1e9_any", df.col("fare").gt(1e9).any()),
            ("dist_gt_0_all", df.col("trip_distance").gt(0).all()),
            ("dist_gt_0_any", df.col("trip_distance").gt(0).any()),
            ("vendor_a_any", vendor_a.any()),
            ("vendor_a_all", vendor_a.all()),
            ("vendor_present_all", vendor_a.notna().all()),
            ("vendor_a_after_filter_all", only_a.col("vendor").str().contains("A").all()),
            ("empty_any", none.col("fare").gt(0).any()),
            ("empty_all", none.col("fare").gt(0).all()),
        ];
        assert_eq!(cases.len(), expected.as_object().unwrap().len());
        for (name, reduction) in cases {
            let value = reduction.compute_on(&scheduler()).unwrap_or_else(|e| panic!("{name} on {label}: {e}"));
            assert_scalar(&format!("{name} on {label}"), &value, &expected[name]);
        }
    }
}

#[test]
fn unique_in_order_of_first_appearance_with_missing_once() {
    let expected = &expected()["unique"];
    for (label, df) in layouts() {
        let cases = [
            ("vendor", df.col("vendor")),
            ("passenger_count", df.col("passenger_count")),
            ("hour", df.col("ts").dt().hour()),
            ("dist_0", df.col("trip_distance").round(0)),
            ("fare_gt_10", df.col("fare").gt(10)),
        ];
        assert_eq!(cases.len(), expected.as_object().unwrap().len());
        for (name, series) in cases {
            let values: ArrayRef =
                series.unique().compute_on(&scheduler()).unwrap_or_else(|e| panic!("unique {name} on {label}: {e}"));
            assert_eq!(kind(values.data_type()), expected[name]["kind"], "unique {name} on {label}");
            assert_values(
                &format!("unique {name} on {label}"),
                values.as_ref(),
                expected[name]["values"].as_array().unwrap(),
            );
        }
    }
}

#[test]
fn quantiles_are_exact_on_small_partitions() {
    let expected = &expected()["quantile"];
    let qs: Vec<f64> = expected["qs"].as_array().unwrap().iter().map(|q| q.as_f64().unwrap()).collect();
    for (label, df) in layouts() {
        let none = df.filter(&df.col("fare").gt(1e9)).unwrap();
        let cases = [
            ("fare", df.col("fare")),
            ("trip_distance", df.col("trip_distance")),
            ("passenger_count", df.col("passenger_count")),
            ("id", df.col("id")),
            ("empty", none.col("fare")),
        ];
        for (name, series) in cases {
            let values = series.quantile(&qs).unwrap().compute_on(&scheduler()).unwrap();
            let wanted = expected[name].as_array().unwrap();
            assert_eq!(values.len(), wanted.len(), "{name} on {label}");
            for ((q, v), w) in qs.iter().zip(&values).zip(wanted) {
                assert_float(&format!("{name}.quantile({q}) on {label}"), *v, w);
            }
        }
    }
}

#[test]
fn describe_as_pandas() {
    let expected = &expected()["describe"];
    for (label, df) in layouts() {
        for column in ["fare", "trip_distance", "passenger_count", "id"] {
            let stats = df.col(column).describe(&scheduler()).unwrap();
            let names: Vec<&str> = stats.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(names, ["count", "mean", "std", "min", "25%", "50%", "75%", "max"], "{label}");
            assert_eq!(stats.len(), expected[column].as_object().unwrap().len());
            for (name, value) in &stats {
                assert_float(&format!("{column}.describe()[{name}] on {label}"), *value, &expected[column][name]);
            }
        }
    }
}

#[test]
fn nlargest_and_nsmallest_keep_pandas_order() {
    let cases: [(&str, bool, usize, &str); 8] = [
        ("nlargest_fare_10", true, 10, "fare"),
        ("nsmallest_fare_10", false, 10, "fare"),
        ("nlargest_pc_30", true, 30, "passenger_count"),
        ("nsmallest_pc_30", false, 30, "passenger_count"),
        ("nlargest_dist_230", true, 230, "trip_distance"),
        ("nsmallest_dist_230", false, 230, "trip_distance"),
        ("nlargest_ts_5", true, 5, "ts"),
        ("nsmallest_id_3", false, 3, "id"),
    ];
    for (label, df) in layouts() {
        for (case, largest, n, column) in cases {
            let extremes = if largest { df.nlargest(n, column) } else { df.nsmallest(n, column) };
            let out = extremes.unwrap().compute_on(&scheduler()).unwrap_or_else(|e| panic!("{case} on {label}: {e}"));
            assert_frame(case, &label, &out);
        }
        // Through a filter that keeps most rows.
        let kept = df.filter(&df.col("fare").gt(4)).unwrap();
        let out = kept.nlargest(10, "trip_distance").unwrap().compute_on(&scheduler()).unwrap();
        assert_frame("nlargest_masked_dist_10", &label, &out);
    }
}

#[test]
fn join_on_the_index_inner_left_and_outer() {
    let sched = scheduler();
    let notes = notes_layouts();
    for (label, df) in layouts() {
        let left = df.set_index("id", &sched).unwrap();
        for (notes_label, right) in &notes {
            let right = right.set_index("id", &sched).unwrap();
            for (how, name) in [(How::Inner, "inner"), (How::Left, "left"), (How::Outer, "outer")] {
                let case = format!("join_notes_{name}");
                let context = format!("{label} join {notes_label}");
                let joined = left.join(&right, how).unwrap_or_else(|e| panic!("{case} on {context}: {e}"));
                let out = compute(&case, &context, &joined);
                assert_frame(&case, &context, &sorted_by(&out, &["id", "rid"]));
            }
        }
    }
}
