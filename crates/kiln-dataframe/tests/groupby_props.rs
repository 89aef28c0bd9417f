//! Group-by against a naive single-batch implementation (a `BTreeMap` of the rows of each
//! group) on random data with missing keys and values, random partitionings, random tree
//! fan-ins and random `split_out` (the shuffle of partials, with a small `max_branch` so it
//! takes several stages): every plan must give the same groups with the same values.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use std::sync::atomic::{AtomicUsize, Ordering};

use kiln_dataframe::{Agg, DataFrame, Scalar, read_parquet};
use kiln_graph::Collection;
use kiln_local::LocalScheduler;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Row {
    k1: Option<i64>,
    k2: Option<String>,
    x: Option<f64>,
    n: Option<i64>,
}

fn row() -> impl Strategy<Value = Row> {
    (
        prop::option::weighted(0.9, 0i64..4),
        // Short codes and longer strings: the empty string, one that differs from another only
        // by a trailing NUL, 7 and 8 bytes (around the packed short keys), multi-byte text.
        prop::option::weighted(
            0.9,
            prop::sample::select(vec!["x", "y", "z", "", "a", "a\0", "seven77", "eight888", "a much longer key", "é"]),
        ),
        prop::option::weighted(0.8, -100.0f64..100.0),
        prop::option::weighted(0.8, -1000i64..1000),
    )
        .prop_map(|(k1, k2, x, n)| Row { k1, k2: k2.map(str::to_string), x, n })
}

fn batch(rows: &[Row]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("k1", DataType::Int64, true),
        Field::new("k2", DataType::Utf8, true),
        Field::new("x", DataType::Float64, true),
        Field::new("n", DataType::Int64, true),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(rows.iter().map(|r| r.k1).collect::<Int64Array>()),
            Arc::new(rows.iter().map(|r| r.k2.clone()).collect::<StringArray>()),
            Arc::new(rows.iter().map(|r| r.x).collect::<Float64Array>()),
            Arc::new(rows.iter().map(|r| r.n).collect::<Int64Array>()),
        ],
    )
    .unwrap()
}

/// What the naive implementation computes for one group, in output column order after keys.
fn naive_group(rows: &[&Row]) -> Vec<Scalar> {
    let xs: Vec<f64> = rows.iter().filter_map(|r| r.x).collect();
    let ns: Vec<i64> = rows.iter().filter_map(|r| r.n).collect();
    let count = xs.len() as f64;
    let mean = (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / count);
    let var = (xs.len() > 1).then(|| {
        let m = mean.unwrap_or(0.0);
        xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (count - 1.0)
    });
    let opt = |v: Option<f64>| v.map_or(Scalar::Null, Scalar::Float);
    vec![
        Scalar::Float(xs.iter().sum()),
        Scalar::Int(xs.len() as i64),
        opt(mean),
        opt(xs.iter().copied().reduce(f64::min)),
        opt(xs.iter().copied().reduce(f64::max)),
        opt(var),
        opt(var.map(f64::sqrt)),
        Scalar::Int(ns.iter().sum()),
        ns.iter().copied().min().map_or(Scalar::Null, Scalar::Int),
        Scalar::Int(rows.len() as i64),
    ]
}

fn same(a: &Scalar, b: &Scalar) -> bool {
    match (a, b) {
        (Scalar::Float(a), Scalar::Float(b)) => (a - b).abs() <= 1e-9 * 1f64.max(a.abs()).max(b.abs()),
        _ => a == b,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn partitioned_groupby_equals_the_naive_one(
        rows in prop::collection::vec(row(), 0..80),
        npartitions in 1usize..9,
        split_every in 2usize..5,
        which_keys in 0usize..3,
        split_out in 1usize..5,
        max_branch in 2usize..4,
    ) {
        let df = DataFrame::from_batch(batch(&rows), npartitions).unwrap();
        // An integer key, an integer and a string key, or a string key alone.
        let keys: Vec<&str> = [vec!["k1"], vec!["k1", "k2"], vec!["k2"]][which_keys].clone();
        let (uses_k1, uses_k2) = (which_keys < 2, which_keys > 0);
        let out = df
            .groupby(keys.clone())
            .unwrap()
            .split_every(split_every)
            .split_out(split_out)
            .max_branch(max_branch)
            .agg([
                Agg::sum("x"), Agg::count("x").alias("x_count"), Agg::mean("x").alias("x_mean"),
                Agg::min("x").alias("x_min"), Agg::max("x").alias("x_max"), Agg::var("x").alias("x_var"),
                Agg::std("x").alias("x_std"), Agg::sum("n"), Agg::min("n").alias("n_min"), Agg::size(),
            ])
            .unwrap()
            .compute_on(&LocalScheduler::threads(2))
            .unwrap();
        // With split_out > 1 each partition is sorted by the keys; the whole is sorted here.
        let order = arrow::compute::lexsort_to_indices(
            &out.columns()[..keys.len()]
                .iter()
                .map(|c| arrow::compute::SortColumn { values: c.clone(), options: None })
                .collect::<Vec<_>>(),
            None,
        )
        .unwrap();
        let out = arrow::compute::take_record_batch(&out, &order).unwrap();

        let mut groups: BTreeMap<(i64, String), Vec<&Row>> = BTreeMap::new();
        for r in &rows {
            let k1 = if uses_k1 { r.k1 } else { Some(0) };
            let k2 = if uses_k2 { r.k2.clone() } else { Some(String::new()) };
            if let (Some(k1), Some(k2)) = (k1, k2) {
                groups.entry((k1, k2)).or_default().push(r);
            }
        }
        prop_assert_eq!(out.num_rows(), groups.len());
        let first_value = keys.len();
        for (row, ((k1, k2), members)) in groups.iter().enumerate() {
            if uses_k1 {
                prop_assert_eq!(Scalar::from_array(out.column(0).as_ref(), row).unwrap(), Scalar::Int(*k1));
            }
            if uses_k2 {
                let at = usize::from(uses_k1);
                prop_assert_eq!(Scalar::from_array(out.column(at).as_ref(), row).unwrap(), Scalar::Str(k2.clone()));
            }
            for (i, want) in naive_group(members).iter().enumerate() {
                let got = Scalar::from_array(out.column(first_value + i).as_ref(), row).unwrap();
                prop_assert!(same(&got, want), "group {:?} column {}: got {:?}, want {:?}", (k1, k2), out.schema().field(first_value + i).name(), got, want);
            }
        }
    }

    #[test]
    fn a_groupby_of_parquet_files_with_dictionary_keys_equals_the_in_memory_one(
        rows in prop::collection::vec(row(), 0..120),
        files in 1usize..4,
        row_group in 1usize..40,
        dictionary_limit in prop::option::of(1usize..64),
        which_keys in 0usize..3,
        filter_on_key in any::<bool>(),
    ) {
        // Files of small row groups and pages; a small dictionary page limit makes the writer
        // fall back to plain pages part way through a column chunk.
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!("kiln-groupby-dict-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)));
        std::fs::create_dir_all(&dir).unwrap();
        let all = batch(&rows);
        let per_file = rows.len().div_ceil(files).max(1);
        for (i, start) in (0..rows.len().max(1)).step_by(per_file).enumerate() {
            let part = all.slice(start.min(rows.len()), per_file.min(rows.len() - start.min(rows.len())));
            let mut props = WriterProperties::builder().set_max_row_group_row_count(Some(row_group)).set_data_page_row_count_limit(7).set_write_batch_size(7);
            if let Some(limit) = dictionary_limit {
                props = props.set_dictionary_page_size_limit(limit);
            }
            let file = std::fs::File::create(dir.join(format!("part.{i}.parquet"))).unwrap();
            let mut writer = ArrowWriter::try_new(file, all.schema(), Some(props.build())).unwrap();
            writer.write(&part).unwrap();
            writer.close().unwrap();
        }
        let keys: Vec<&str> = [vec!["k2"], vec!["k1", "k2"], vec!["k2", "k1"]][which_keys].clone();
        let query = |df: DataFrame| {
            // A filter that reads the key keeps it from arriving dictionary-encoded; one that
            // does not leaves it so.
            let mask = if filter_on_key { df.col("k2").ne("x") } else { df.col("n").gt(-500i64) };
            let out = df.filter(&mask).unwrap().groupby(keys.clone()).unwrap()
                .agg([Agg::sum("x"), Agg::count("x").alias("x_count"), Agg::min("n").alias("n_min"), Agg::size()])
                .unwrap()
                .compute_on(&LocalScheduler::threads(2))
                .unwrap();
            let order = arrow::compute::lexsort_to_indices(
                &out.columns()[..keys.len()].iter().map(|c| arrow::compute::SortColumn { values: c.clone(), options: None }).collect::<Vec<_>>(),
                None,
            ).unwrap();
            arrow::compute::take_record_batch(&out, &order).unwrap()
        };
        let from_files = query(read_parquet(dir.to_str().unwrap()).unwrap());
        let in_memory = query(DataFrame::from_batch(all.clone(), 1).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
        prop_assert_eq!(from_files.schema(), in_memory.schema());
        prop_assert_eq!(from_files.num_rows(), in_memory.num_rows());
        for c in 0..from_files.num_columns() {
            for r in 0..from_files.num_rows() {
                let (got, want) = (Scalar::from_array(from_files.column(c).as_ref(), r).unwrap(), Scalar::from_array(in_memory.column(c).as_ref(), r).unwrap());
                prop_assert!(same(&got, &want), "row {} column {}: got {:?}, want {:?}", r, c, got, want);
            }
        }
    }

    #[test]
    fn reductions_do_not_depend_on_partitioning(rows in prop::collection::vec(row(), 0..60), a in 1usize..9, b in 1usize..9) {
        let x = batch(&rows);
        let (da, db) = (DataFrame::from_batch(x.clone(), a).unwrap(), DataFrame::from_batch(x, b).unwrap());
        for (ra, rb) in [(da.col("x").std(), db.col("x").std()), (da.col("n").sum(), db.col("n").sum()), (da.col("x").max(), db.col("x").max())] {
            let (va, vb) = (ra.compute_on(&LocalScheduler::new()).unwrap(), rb.compute_on(&LocalScheduler::new()).unwrap());
            prop_assert!(same(&va, &vb), "{:?} vs {:?}", va, vb);
        }
    }
}
