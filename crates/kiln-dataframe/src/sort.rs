//! Ordering within and across partitions: the per-partition steps (`sort`, `drop_duplicates`,
//! an index range), samples for divisions, and range partitioning — the split kernel that sends
//! a row to the partition whose division interval holds its value, for
//! [`kiln_graph::shuffle::staged_shuffle`].
//!
//! Values are compared through their `arrow-row` encoding with missing values last (pandas'
//! `na_position="last"`), after NaN is made missing, so every orderable type takes one path.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, UInt32Array};
use arrow::compute::{SortColumn, SortOptions, cast, lexsort_to_indices, take_record_batch};
use arrow::datatypes::{Field, Schema};
use arrow::row::{RowConverter, Rows, SortField};
use hashbrown::HashSet;
use kiln_graph::kernel::{Portable, PortableKernel, input};
use kiln_graph::shuffle::{ShuffleKernels, SplitStage};
use kiln_graph::{Kernel, TaskError, Value};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{DataFrameError, Result};
use crate::lower::{decode_batch, encode_batch};
use crate::scalar::Scalar;
use crate::shuffle::{
    ConcatKernel, Pieces, SelectKernel, hash_type, key_columns, key_rows, normalize_floats, split_rows,
};

fn fail(context: &str) -> impl Fn(arrow::error::ArrowError) -> DataFrameError + '_ {
    move |e| DataFrameError::compute(context, e)
}

fn column(batch: &RecordBatch, name: &str) -> Result<ArrayRef> {
    batch.column_by_name(name).cloned().ok_or_else(|| DataFrameError::ColumnNotFound {
        column: name.to_string(),
        available: batch.schema().fields().iter().map(|f| f.name().clone()).collect(),
    })
}

/// The rows sorted by `by` (`true`: descending), missing values last, ties in input order.
pub(crate) fn sort_batch(batch: &RecordBatch, by: &[(String, bool)]) -> Result<RecordBatch> {
    if batch.num_rows() <= 1 {
        return Ok(batch.clone());
    }
    let order = sort_order(batch, by)?;
    take_record_batch(batch, &order).map_err(fail("sorting"))
}

/// The row numbers of `batch` in [`sort_batch`]'s order.
pub(crate) fn sort_order(batch: &RecordBatch, by: &[(String, bool)]) -> Result<UInt32Array> {
    let mut columns = Vec::with_capacity(by.len() + 1);
    for (name, descending) in by {
        columns.push(SortColumn {
            values: normalize_floats(column(batch, name)?),
            options: Some(SortOptions { descending: *descending, nulls_first: false }),
        });
    }
    // The row number last makes the sort stable.
    columns.push(SortColumn {
        values: Arc::new(UInt32Array::from_iter_values(0..batch.num_rows() as u32)),
        options: None,
    });
    lexsort_to_indices(&columns, None).map_err(fail("sorting"))
}

fn keys_schema(batch: &RecordBatch, subset: &[String]) -> Result<Schema> {
    let fields = subset
        .iter()
        .map(|name| Ok(Field::new(name, hash_type(column(batch, name)?.data_type()), true)))
        .collect::<Result<Vec<_>>>()?;
    Ok(Schema::new(fields))
}

/// The first row of each distinct combination of `subset`'s values (missing equal to missing,
/// as pandas' `drop_duplicates`), in input order.
pub(crate) fn drop_duplicates(batch: &RecordBatch, subset: &[String]) -> Result<RecordBatch> {
    let rows = key_rows(&key_columns(batch, &keys_schema(batch, subset)?)?)?;
    let mut seen: HashSet<&[u8], rustc_hash::FxBuildHasher> = HashSet::with_hasher(Default::default());
    let keep: BooleanArray = rows.iter().map(|row| Some(seen.insert(row.data()))).collect();
    arrow::compute::filter_record_batch(batch, &keep).map_err(fail("drop_duplicates"))
}

/// The encoding of `values` and of `bounds` (cast to the values' type) by one converter, so
/// their rows compare.
pub(crate) fn comparable(values: &ArrayRef, bounds: &ArrayRef) -> Result<(Rows, Rows)> {
    let values = normalize_floats(values.clone());
    let bounds = if bounds.data_type() == values.data_type() {
        bounds.clone()
    } else {
        cast(bounds, values.data_type()).map_err(fail("comparing with the divisions"))?
    };
    let options = SortOptions { descending: false, nulls_first: false };
    let converter = RowConverter::new(vec![SortField::new_with_options(values.data_type().clone(), options)])
        .map_err(fail("comparing with the divisions"))?;
    let v = converter.convert_columns(&[values]).map_err(fail("comparing with the divisions"))?;
    let b = converter.convert_columns(&[normalize_floats(bounds)]).map_err(fail("comparing with the divisions"))?;
    Ok((v, b))
}

/// The rows whose `name` lies in `[low, high]` (pandas' `loc[low:high]`, both ends included).
pub(crate) fn range(
    batch: &RecordBatch,
    name: &str,
    low: Option<&Scalar>,
    high: Option<&Scalar>,
) -> Result<RecordBatch> {
    let values = column(batch, name)?;
    let bound = |s: Option<&Scalar>| {
        s.map(Scalar::to_array).unwrap_or_else(|| arrow::array::new_null_array(values.data_type(), 1))
    };
    let bounds = arrow::compute::concat(&[bound(low).as_ref(), bound(high).as_ref()]).map_err(fail("loc"))?;
    let (v, b) = comparable(&values, &bounds)?;
    let keep: BooleanArray = (0..v.num_rows())
        .map(|i| {
            let row = v.row(i);
            let present = values.is_valid(i);
            Some(present && (low.is_none() || row >= b.row(0)) && (high.is_none() || row <= b.row(1)))
        })
        .collect();
    arrow::compute::filter_record_batch(batch, &keep).map_err(fail("loc"))
}

/// Up to `count` evenly spaced values of the sorted present values of `name`, always the
/// smallest and the largest, with the number of rows each stands for (`weight`).
pub(crate) fn sample(batch: &RecordBatch, name: &str, count: usize) -> Result<RecordBatch> {
    let values = normalize_floats(column(batch, name)?);
    let present = arrow::compute::is_not_null(&values).map_err(fail("sampling"))?;
    let values = arrow::compute::filter(&values, &present).map_err(fail("sampling"))?;
    let order = arrow::compute::sort_to_indices(&values, None, None).map_err(fail("sampling"))?;
    let n = values.len();
    let picks: Vec<u32> = if n <= count.max(2) {
        (0..n as u32).collect()
    } else {
        let k = count.max(2);
        (0..k).map(|i| order.value(i * (n - 1) / (k - 1))).collect()
    };
    let (picks, weight): (UInt32Array, Vec<f64>) = if n <= count.max(2) {
        (order.clone(), vec![1.0; n])
    } else {
        let k = picks.len();
        (UInt32Array::from(picks), vec![n as f64 / k as f64; k])
    };
    let sampled = arrow::compute::take(&values, &picks, None).map_err(fail("sampling"))?;
    RecordBatch::try_from_iter([
        ("value", sampled),
        ("weight", Arc::new(arrow::array::Float64Array::from(weight)) as ArrayRef),
    ])
    .map_err(fail("sampling"))
}

/// The first and last value of `name`, after checking the rows are sorted by it with none
/// missing (`set_index(sorted=true)` trusts the order and checks it here).
pub(crate) fn bounds(batch: &RecordBatch, name: &str) -> Result<RecordBatch> {
    let values = column(batch, name)?;
    if values.null_count() > 0 {
        return Err(DataFrameError::InvalidArgument(format!("index {name:?} has missing values")));
    }
    let converter =
        RowConverter::new(vec![SortField::new(values.data_type().clone())]).map_err(fail("checking order"))?;
    let rows = converter.convert_columns(std::slice::from_ref(&values)).map_err(fail("checking order"))?;
    if let Some(r) = (1..rows.num_rows()).find(|&r| rows.row(r) < rows.row(r - 1)) {
        return Err(DataFrameError::InvalidArgument(format!(
            "set_index({name:?}, sorted=true): the rows are not sorted (row {r} is smaller than the row before it)"
        )));
    }
    let picks = if values.is_empty() {
        UInt32Array::from(Vec::<u32>::new())
    } else {
        UInt32Array::from(vec![0, values.len() as u32 - 1])
    };
    let ends = arrow::compute::take(&values, &picks, None).map_err(fail("checking order"))?;
    RecordBatch::try_from_iter([("value", ends)]).map_err(fail("checking order"))
}

/// A record batch in kernel parameters (Arrow IPC bytes).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SerdeBatch(pub(crate) RecordBatch);

impl Serialize for SerdeBatch {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&encode_batch(&self.0).map_err(serde::ser::Error::custom)?)
    }
}

impl<'de> Deserialize<'de> for SerdeBatch {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let bytes: Vec<u8> = serde::de::Deserialize::deserialize(deserializer)?;
        decode_batch(&bytes).map(SerdeBatch).map_err(serde::de::Error::custom)
    }
}

/// Each row's partition under `boundaries` (the `n - 1` interior divisions, sorted): the
/// number of boundaries at or below its value; a missing value goes to the last partition, or
/// to the first with `missing_first`.
pub(crate) fn range_destinations(
    batch: &RecordBatch,
    name: &str,
    boundaries: &ArrayRef,
    missing_first: bool,
) -> Result<Vec<u32>> {
    let values = column(batch, name)?;
    let (v, b) = comparable(&values, boundaries)?;
    let bounds: Vec<arrow::row::Row<'_>> = b.iter().collect();
    let valid = normalize_floats(values);
    Ok(v.iter()
        .enumerate()
        .map(
            |(i, row)| {
                if missing_first && valid.is_null(i) { 0 } else { bounds.partition_point(|bound| *bound <= row) as u32 }
            },
        )
        .collect())
}

/// Splits a partition by one digit of its rows' range partitions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct RangeSplitKernel {
    pub(crate) column: String,
    /// One column: the interior divisions.
    pub(crate) boundaries: SerdeBatch,
    pub(crate) missing_first: bool,
    pub(crate) stage: SplitStage,
}

impl PortableKernel for RangeSplitKernel {
    const ID: &'static str = "kiln.dataframe.shuffle.range-split";
    fn name(&self) -> &str {
        "range-split"
    }
    fn call(&self, inputs: &[Value]) -> std::result::Result<Value, TaskError> {
        let batch = input::<RecordBatch>(inputs, 0)?;
        let failed = |e: DataFrameError| TaskError::Failed(e.to_string());
        let bounds = self.boundaries.0.columns().first().ok_or_else(|| TaskError::Failed("no divisions".into()))?;
        let destinations = range_destinations(batch, &self.column, bounds, self.missing_first).map_err(failed)?;
        let pieces = split_rows(batch, self.stage.base as usize, |row| self.stage.piece(destinations[row]) as usize)
            .map_err(failed)?;
        Ok(Value::new(Pieces(pieces)))
    }
}

/// The range shuffle's kernels: rows go to the partition whose divisions hold their value.
pub(crate) struct RangeShuffle {
    pub(crate) column: String,
    pub(crate) boundaries: SerdeBatch,
    pub(crate) missing_first: bool,
}

impl ShuffleKernels for RangeShuffle {
    fn split(&self, stage: SplitStage) -> Arc<dyn Kernel> {
        Arc::new(Portable(RangeSplitKernel {
            column: self.column.clone(),
            boundaries: self.boundaries.clone(),
            missing_first: self.missing_first,
            stage,
        }))
    }
    fn select(&self, piece: u32) -> Arc<dyn Kernel> {
        Arc::new(Portable(SelectKernel { piece }))
    }
    fn concat(&self) -> Arc<dyn Kernel> {
        Arc::new(Portable(ConcatKernel))
    }
}

/// `npartitions + 1` divisions from weighted samples: the smallest value, the values at each
/// `i / npartitions` of the total weight, the largest; repeated values collapse, so fewer
/// partitions come out when the column has few distinct values.
pub(crate) fn divisions_from_samples(samples: &[RecordBatch], npartitions: usize) -> Result<Option<ArrayRef>> {
    let nonempty: Vec<&RecordBatch> = samples.iter().filter(|b| b.num_rows() > 0).collect();
    let Some(first) = nonempty.first() else { return Ok(None) };
    let all = arrow::compute::concat_batches(&first.schema(), nonempty.iter().copied()).map_err(fail("divisions"))?;
    let values = all.column(0);
    let weights = all
        .column(1)
        .as_any()
        .downcast_ref::<arrow::array::Float64Array>()
        .ok_or_else(|| DataFrameError::compute("divisions", "weights are not float64"))?;
    let order = arrow::compute::sort_to_indices(values, None, None).map_err(fail("divisions"))?;
    let total: f64 = weights.values().iter().sum();
    let mut picks: Vec<u32> = vec![order.value(0)];
    let mut acc = 0.0;
    let mut next = 1usize;
    for i in 0..order.len() {
        acc += weights.value(order.value(i) as usize);
        while next < npartitions && acc >= total * next as f64 / npartitions as f64 {
            picks.push(order.value(i));
            next += 1;
        }
    }
    picks.push(order.value(order.len() - 1));
    let picked = arrow::compute::take(values, &UInt32Array::from(picks), None).map_err(fail("divisions"))?;
    // Collapse repeats (the row encoding compares every type).
    let converter = RowConverter::new(vec![SortField::new(picked.data_type().clone())]).map_err(fail("divisions"))?;
    let rows = converter.convert_columns(std::slice::from_ref(&picked)).map_err(fail("divisions"))?;
    let keep: Vec<u32> =
        (0..rows.num_rows()).filter(|&i| i == 0 || rows.row(i) != rows.row(i - 1)).map(|i| i as u32).collect();
    let mut keep = keep;
    if keep.len() == 1 {
        keep.push(keep[0]); // one distinct value: one partition [v, v]
    }
    Ok(Some(arrow::compute::take(&picked, &UInt32Array::from(keep), None).map_err(fail("divisions"))?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, Int64Array, StringArray};

    #[test]
    fn range_destinations_put_boundaries_in_the_upper_partition_and_missing_last() {
        let batch = RecordBatch::try_from_iter([(
            "x",
            Arc::new(Float64Array::from(vec![Some(0.0), Some(5.0), Some(9.9), Some(10.0), None, Some(f64::NAN)]))
                as ArrayRef,
        )])
        .unwrap();
        let bounds: ArrayRef = Arc::new(Int64Array::from(vec![5, 10]));
        assert_eq!(range_destinations(&batch, "x", &bounds, false).unwrap(), vec![0, 1, 1, 2, 2, 2]);
    }

    #[test]
    fn sort_is_stable_with_missing_values_last_either_way() {
        let batch = RecordBatch::try_from_iter([
            ("k", Arc::new(Int64Array::from(vec![Some(2), None, Some(1), Some(2)])) as ArrayRef),
            ("s", Arc::new(StringArray::from(vec!["a", "b", "c", "d"])) as ArrayRef),
        ])
        .unwrap();
        let up = sort_batch(&batch, &[("k".into(), false)]).unwrap();
        assert_eq!(up.column(1).as_ref(), &StringArray::from(vec!["c", "a", "d", "b"]) as &dyn Array);
        let down = sort_batch(&batch, &[("k".into(), true)]).unwrap();
        assert_eq!(down.column(1).as_ref(), &StringArray::from(vec!["a", "d", "c", "b"]) as &dyn Array);
    }

    #[test]
    fn divisions_split_the_weight_evenly_and_collapse_repeats() {
        let values: ArrayRef = Arc::new(Int64Array::from((0..100).collect::<Vec<i64>>()));
        let sample = RecordBatch::try_from_iter([
            ("v", values),
            ("weight", Arc::new(Float64Array::from(vec![1.0; 100])) as ArrayRef),
        ])
        .unwrap();
        let d = divisions_from_samples(&[sample], 4).unwrap().unwrap();
        assert_eq!(d.as_ref(), &Int64Array::from(vec![0, 24, 49, 74, 99]) as &dyn Array);
        let same: ArrayRef = Arc::new(Int64Array::from(vec![7; 10]));
        let sample = RecordBatch::try_from_iter([
            ("v", same),
            ("weight", Arc::new(Float64Array::from(vec![1.0; 10])) as ArrayRef),
        ])
        .unwrap();
        let d = divisions_from_samples(&[sample], 4).unwrap().unwrap();
        assert_eq!(d.as_ref(), &Int64Array::from(vec![7, 7]) as &dyn Array);
    }
}
