//! Merge and shuffle against naive single-batch implementations on random data: keys with
//! missing values (which match each other, as in pandas), an `int64` key on the left and an
//! `int32` key on the right, duplicate keys on both sides, random partitionings and every
//! strategy (the planner's choice, forced shuffles with small `max_branch`, broadcasts). Rows
//! are compared as sorted multisets.

use std::sync::Arc;

use arrow::array::{Float64Array, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use kiln_dataframe::{DataFrame, How, MergeOptions, Scalar};
use kiln_graph::Collection;
use kiln_local::LocalScheduler;
use proptest::prelude::*;

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

/// The merge computed row by row: output columns in pandas' order.
fn naive(left: &[Side], right: &[Side], how: How, two_keys: bool) -> Vec<String> {
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
    let mut out: Vec<String> = rows.iter().map(|r| format!("{r:?}")).collect();
    out.sort();
    out
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
