//! Merge and shuffle against naive single-batch implementations on random data: keys with
//! missing values (which match each other, as in pandas), an `int64` key on the left and an
//! `int32` key on the right, duplicate keys on both sides, random partitionings and every
//! strategy (the planner's choice, forced shuffles with small `max_branch`, broadcasts). Rows
//! are compared as sorted multisets.

use std::sync::Arc;

use arrow::array::{Float64Array, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use std::collections::BTreeMap;

use kiln_dataframe::{Agg, DataFrame, How, MergeOptions, Scalar, read_parquet};
use kiln_graph::Collection;
use kiln_local::LocalScheduler;
use proptest::prelude::*;

mod scratch;
use scratch::ScratchDir;

#[derive(Debug, Clone)]
struct Side {
    k: Option<i64>,
    s: Option<String>,
    v: Option<f64>,
}

fn side() -> impl Strategy<Value = Side> {
    (
        prop::option::weighted(0.85, 0i64..5),
        prop::option::weighted(0.85, prop::sample::select(vec!["a", "b"])),
        prop::option::weighted(0.9, -10.0f64..10.0),
    )
        .prop_map(|(k, s, v)| Side { k, s: s.map(str::to_string), v })
}

fn left_batch(rows: &[Side]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, true),
        Field::new("s", DataType::Utf8, true),
        Field::new("lv", DataType::Float64, true),
        Field::new("id", DataType::Int64, true),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(rows.iter().map(|r| r.k).collect::<Int64Array>()),
            Arc::new(rows.iter().map(|r| r.s.clone()).collect::<StringArray>()),
            Arc::new(rows.iter().map(|r| r.v).collect::<Float64Array>()),
            Arc::new((0..rows.len() as i64).collect::<Int64Array>()),
        ],
    )
    .unwrap()
}

fn right_batch(rows: &[Side]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int32, true),
        Field::new("s", DataType::Utf8, true),
        Field::new("rv", DataType::Float64, true),
        Field::new("rid", DataType::Int64, true),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(rows.iter().map(|r| r.k.map(|k| k as i32)).collect::<Int32Array>()),
            Arc::new(rows.iter().map(|r| r.s.clone()).collect::<StringArray>()),
            Arc::new(rows.iter().map(|r| r.v).collect::<Float64Array>()),
            Arc::new((0..rows.len() as i64).collect::<Int64Array>()),
        ],
    )
    .unwrap()
}

fn rows_in_order(batch: &RecordBatch) -> Vec<String> {
    (0..batch.num_rows())
        .map(|row| {
            let values: Vec<Scalar> =
                batch.columns().iter().map(|c| Scalar::from_array(c.as_ref(), row).unwrap()).collect();
            format!("{values:?}")
        })
        .collect()
}

/// `batch` written as `n` Parquet files (nearly equal runs of rows), read back; the files
/// last as long as the returned directory.
fn parquet_frame(batch: &RecordBatch, n: usize) -> (DataFrame, ScratchDir) {
    let dir = ScratchDir::new("merge-props");
    DataFrame::from_batch(batch.clone(), n)
        .unwrap()
        .to_parquet(&dir.text())
        .compute_on(&LocalScheduler::new())
        .unwrap();
    (read_parquet(&dir.text()).unwrap(), dir)
}

fn rows_of(batch: &RecordBatch) -> Vec<String> {
    let mut out: Vec<String> = (0..batch.num_rows())
        .map(|row| {
            let values: Vec<Scalar> =
                batch.columns().iter().map(|c| Scalar::from_array(c.as_ref(), row).unwrap()).collect();
            format!("{values:?}")
        })
        .collect();
    out.sort();
    out
}

fn opt<T: Into<Scalar>>(v: Option<T>) -> Scalar {
    v.map_or(Scalar::Null, Into::into)
}

/// The merge computed row by row (a nested loop): output columns in pandas' order.
fn naive(left: &[Side], right: &[Side], how: How, two_keys: bool) -> Vec<String> {
    let mut out: Vec<String> = naive_rows(left, right, how, two_keys).iter().map(|r| format!("{r:?}")).collect();
    out.sort();
    out
}

/// The merge's rows in pandas' order for one pair of partitions (inner, left, semi, anti: by
/// left row, then right row; right: by right row, then left row; outer: unordered).
fn naive_rows(left: &[Side], right: &[Side], how: How, two_keys: bool) -> Vec<Vec<Scalar>> {
    let matches = |l: &Side, r: &Side| l.k == r.k && (!two_keys || l.s == r.s);
    let mut rows: Vec<Vec<Scalar>> = Vec::new();
    let emit = |l: Option<(usize, &Side)>, r: Option<(usize, &Side)>, rows: &mut Vec<Vec<Scalar>>| {
        let k = l.map(|(_, l)| l.k).or(r.map(|(_, r)| r.k)).flatten();
        let mut row = vec![opt(k)];
        if two_keys {
            row.push(opt(l.map(|(_, l)| l.s.clone()).or(r.map(|(_, r)| r.s.clone())).flatten()));
        } else {
            row.push(opt(l.and_then(|(_, l)| l.s.clone())));
        }
        row.push(opt(l.and_then(|(_, l)| l.v)));
        row.push(opt(l.map(|(i, _)| i as i64)));
        if matches!(how, How::Semi | How::Anti) {
            rows.push(row);
            return;
        }
        if !two_keys {
            row.push(opt(r.and_then(|(_, r)| r.s.clone())));
        }
        row.push(opt(r.and_then(|(_, r)| r.v)));
        row.push(opt(r.map(|(i, _)| i as i64)));
        rows.push(row);
    };
    match how {
        How::Right => {
            for (j, r) in right.iter().enumerate() {
                let ls: Vec<usize> = (0..left.len()).filter(|&i| matches(&left[i], r)).collect();
                if ls.is_empty() {
                    emit(None, Some((j, r)), &mut rows);
                }
                for i in ls {
                    emit(Some((i, &left[i])), Some((j, r)), &mut rows);
                }
            }
        }
        _ => {
            let mut matched = vec![false; right.len()];
            for (i, l) in left.iter().enumerate() {
                let rs: Vec<usize> = (0..right.len()).filter(|&j| matches(l, &right[j])).collect();
                match how {
                    How::Semi if !rs.is_empty() => emit(Some((i, l)), None, &mut rows),
                    How::Anti if rs.is_empty() => emit(Some((i, l)), None, &mut rows),
                    How::Semi | How::Anti => {}
                    _ => {
                        if rs.is_empty() && how != How::Inner {
                            emit(Some((i, l)), None, &mut rows);
                        }
                        for j in rs {
                            matched[j] = true;
                            emit(Some((i, l)), Some((j, &right[j])), &mut rows);
                        }
                    }
                }
            }
            if how == How::Outer {
                for (j, r) in right.iter().enumerate().filter(|(j, _)| !matched[*j]) {
                    emit(None, Some((j, r)), &mut rows);
                }
            }
        }
    }
    rows
}

fn how() -> impl Strategy<Value = How> {
    prop::sample::select(vec![How::Inner, How::Left, How::Right, How::Outer, How::Semi, How::Anti])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn merge_equals_the_naive_one_under_every_strategy(
        left in prop::collection::vec(side(), 0..40),
        right in prop::collection::vec(side(), 1..25),
        nl in 1usize..6,
        nr in 1usize..6,
        how in how(),
        two_keys in any::<bool>(),
        strategy in 0u8..3,
        n in 1usize..7,
        max_branch in 2usize..4,
    ) {
        let l = DataFrame::from_batch(left_batch(&left), nl).unwrap();
        let r = DataFrame::from_batch(right_batch(&right), nr).unwrap();
        let keys: Vec<&str> = if two_keys { vec!["k", "s"] } else { vec!["k"] };
        let options = MergeOptions::on(keys).how(how);
        let options = match strategy {
            0 => options,
            1 => options.broadcast(Some(false)).npartitions(n).max_branch(max_branch),
            _ => options.broadcast(Some(true)),
        };
        let merged = l.merge(&r, &options).unwrap();
        let out = merged.compute_on(&LocalScheduler::threads(2)).unwrap();
        prop_assert_eq!(rows_of(&out), naive(&left, &right, how, two_keys), "{}", merged.explain());
    }

    #[test]
    fn a_broadcast_merge_read_from_parquet_with_steps_after_it_equals_the_naive_one(
        left in prop::collection::vec(side(), 0..40),
        right in prop::collection::vec(side(), 0..25),
        nl in 1usize..4,
        nr in 2usize..4,
        how in how(),
        two_keys in any::<bool>(),
        one_left in any::<bool>(),
        min_id in 0i64..8,
    ) {
        // One left partition makes an inner or right merge broadcast the left side; otherwise
        // the side `how` allows is forced.
        let (l, _left_files) = parquet_frame(&left_batch(&left), if one_left { 1 } else { nl });
        let (r, _right_files) = parquet_frame(&right_batch(&right), nr);
        let keys: Vec<&str> = if two_keys { vec!["k", "s"] } else { vec!["k"] };
        let options = MergeOptions::on(keys).how(how);
        let options = if one_left { options } else { options.broadcast(Some(true)) };
        let merged = l.merge(&r, &options).unwrap();
        let plan = merged.explain();
        if !one_left && how != How::Outer {
            // (An empty side is written as one file, which is broadcast as "one partition".)
            prop_assert!(plan.contains("hash table built once") || plan.contains("side is one partition"), "{}", plan);
        }
        if one_left && matches!(how, How::Inner | How::Right) {
            prop_assert!(plan.contains("the left side is one partition"), "{}", plan);
        }
        let scheduler = LocalScheduler::threads(2);
        let out = merged.compute_on(&scheduler).unwrap();
        prop_assert_eq!(rows_of(&out), naive(&left, &right, how, two_keys), "{}", plan);
        // A filter after the merge, then a group-by: both fused into the probing tasks.
        let kept = merged.filter(&merged.col("id").ge(min_id)).unwrap();
        let expected: Vec<Vec<Scalar>> = naive_rows(&left, &right, how, two_keys)
            .into_iter()
            .filter(|row| row[3].as_i64().is_some_and(|id| id >= min_id))
            .collect();
        let out = kept.compute_on(&scheduler).unwrap();
        let mut want: Vec<String> = expected.iter().map(|r| format!("{r:?}")).collect();
        want.sort();
        prop_assert_eq!(rows_of(&out), want);
        // A filter before the merge (then a selection of columns) drops the same rows as one
        // after it, for the merges where that holds; an inner or semi probe skips the dropped
        // rows itself instead of copying the kept ones.
        if matches!(how, How::Inner | How::Left | How::Semi | How::Anti) {
            let lf = l.filter(&l.col("id").ge(min_id)).unwrap().select(&["k", "s", "lv", "id"]).unwrap();
            let early = lf.merge(&r, &options).unwrap().compute_on(&scheduler).unwrap();
            prop_assert_eq!(rows_of(&early), rows_of(&kept.compute_on(&scheduler).unwrap()));
        }
        if how == How::Inner {
            let rf = r.filter(&r.col("rid").ge(min_id)).unwrap().select(&["k", "s", "rv", "rid"]).unwrap();
            let early = l.merge(&rf, &options).unwrap().compute_on(&scheduler).unwrap();
            let late = merged.filter(&merged.col("rid").ge(min_id)).unwrap().compute_on(&scheduler).unwrap();
            prop_assert_eq!(rows_of(&early), rows_of(&late));
        }
        let sizes = kept.groupby(["id"]).unwrap().agg([Agg::size().alias("n")]).unwrap();
        let out = sizes.compute_on(&scheduler).unwrap();
        let mut counts: BTreeMap<i64, i64> = BTreeMap::new();
        for row in &expected {
            *counts.entry(row[3].as_i64().unwrap()).or_default() += 1;
        }
        let got: BTreeMap<i64, i64> = (0..out.num_rows())
            .map(|i| {
                let id = Scalar::from_array(out.column(0).as_ref(), i).unwrap().as_i64().unwrap();
                let n = Scalar::from_array(out.column(1).as_ref(), i).unwrap().as_i64().unwrap();
                (id, n)
            })
            .collect();
        prop_assert_eq!(got, counts);
    }

    #[test]
    fn shuffle_keeps_every_row_and_sends_equal_keys_to_one_partition(
        rows in prop::collection::vec(side(), 0..60),
        nin in 1usize..8,
        nout in 1usize..9,
        max_branch in 2usize..5,
    ) {
        let batch = left_batch(&rows);
        let df = DataFrame::from_batch(batch.clone(), nin).unwrap();
        let shuffled = df.shuffle_with(&["k", "s"], nout, max_branch).unwrap();
        let parts = shuffled.partitions().compute_on(&LocalScheduler::threads(2)).unwrap();
        prop_assert_eq!(parts.len(), nout);
        let mut home = std::collections::HashMap::new();
        for (p, part) in parts.iter().enumerate() {
            for row in 0..part.num_rows() {
                let key = format!("{:?}", (Scalar::from_array(part.column(0).as_ref(), row).unwrap(), Scalar::from_array(part.column(1).as_ref(), row).unwrap()));
                prop_assert_eq!(*home.entry(key).or_insert(p), p);
            }
        }
        let all = arrow::compute::concat_batches(&batch.schema(), &parts).unwrap();
        prop_assert_eq!(rows_of(&all), rows_of(&batch));
        // An int32 frame with the same keys is partitioned the same way, so they can be
        // joined partition by partition.
        let narrow = DataFrame::from_batch(right_batch(&rows), nin.max(2) - 1).unwrap();
        let narrow_parts = narrow.shuffle_with(&["k", "s"], nout, max_branch).unwrap().partitions().compute_on(&LocalScheduler::new()).unwrap();
        for (p, part) in narrow_parts.iter().enumerate() {
            for row in 0..part.num_rows() {
                let key = format!("{:?}", (opt(Scalar::from_array(part.column(0).as_ref(), row).unwrap().as_i64()), Scalar::from_array(part.column(1).as_ref(), row).unwrap()));
                if let Some(&q) = home.get(&key) {
                    prop_assert_eq!(q, p);
                }
            }
        }
    }
}

/// A side of `n` rows whose keys cycle through `0..modulo`, every `null_every`-th missing.
fn cycling(n: usize, modulo: i64, null_every: usize) -> Vec<Side> {
    (0..n)
        .map(|i| Side {
            k: if i % null_every == 0 { None } else { Some((i as i64 * 7919) % modulo) },
            s: Some(if i % 3 == 0 { "a" } else { "b" }.to_string()),
            v: Some(i as f64),
        })
        .collect()
}

#[test]
fn a_broadcast_merge_probed_piece_by_piece_keeps_pandas_order_in_every_partition() {
    // Two files of 70,000 rows: each is read (and probed) as a piece of 64Ki rows and one of
    // the rest, which must give the rows, in the order, that probing each file whole gives.
    let big = cycling(140_000, 600, 97);
    let small = cycling(150, 400, 13);
    let scheduler = LocalScheduler::threads(2);
    let (big_left, _left_files) = parquet_frame(&left_batch(&big), 2);
    let small_right = DataFrame::from_batch(right_batch(&small), 1).unwrap();
    for how in [How::Inner, How::Left, How::Semi, How::Anti] {
        for two_keys in [false, true] {
            let keys: Vec<&str> = if two_keys { vec!["k", "s"] } else { vec!["k"] };
            let merged = big_left.merge(&small_right, &MergeOptions::on(keys).how(how)).unwrap();
            assert!(merged.explain().contains("the right side is one partition"), "{}", merged.explain());
            let parts = merged.partitions().compute_on(&scheduler).unwrap();
            assert_eq!(parts.len(), 2);
            for (p, part) in parts.iter().enumerate() {
                let rows = &big[p * 70_000..(p + 1) * 70_000];
                let want: Vec<String> = naive_rows(rows, &small, how, two_keys)
                    .into_iter()
                    .map(|mut r| {
                        // The naive ids count from the start of the slice.
                        if let Some(id) = r[3].as_i64() {
                            r[3] = Scalar::from(id + (p * 70_000) as i64);
                        }
                        format!("{r:?}")
                    })
                    .collect();
                assert_eq!(rows_in_order(part), want, "{how:?}, two keys {two_keys}, partition {p}");
            }
        }
    }
    // The small side on the left: an inner merge (ordered by left row) and a right merge
    // (ordered by right row) probing the big right side.
    let small_left = DataFrame::from_batch(left_batch(&small), 1).unwrap();
    let (big_right, _right_files) = parquet_frame(&right_batch(&big), 2);
    for how in [How::Inner, How::Right] {
        let merged = small_left.merge(&big_right, &MergeOptions::on(["k"]).how(how)).unwrap();
        assert!(merged.explain().contains("the left side is one partition"), "{}", merged.explain());
        let parts = merged.partitions().compute_on(&scheduler).unwrap();
        for (p, part) in parts.iter().enumerate() {
            let rows = &big[p * 70_000..(p + 1) * 70_000];
            let want: Vec<String> = naive_rows(&small, rows, how, false)
                .into_iter()
                .map(|mut r| {
                    if let Some(rid) = r[6].as_i64() {
                        r[6] = Scalar::from(rid + (p * 70_000) as i64);
                    }
                    format!("{r:?}")
                })
                .collect();
            assert_eq!(rows_in_order(part), want, "{how:?}, partition {p}");
        }
    }
}
