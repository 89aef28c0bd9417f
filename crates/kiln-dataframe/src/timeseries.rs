//! Time series on a sorted datetime index: `resample(rule).agg(...)`, `rolling(window)` by
//! count and by time span, `shift` and `diff`, and `repartition` to new divisions.
//!
//! All of them need the rows sorted by the index across partitions, which known divisions
//! promise. Resampling first moves rows so that partition boundaries fall on bucket
//! boundaries (a bucket never spans two partitions), then aggregates each partition alone and
//! fills the empty buckets of its range, as pandas does between the first and the last bucket.
//! Windows and shifts borrow rows from neighbouring partitions as Dask's `map_overlap` does:
//! a chain of small tasks carries the last rows (by count, or within the time span) of
//! everything before a partition, however many partitions that takes, so a window longer than
//! a partition still sees every row it covers.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, TimestampNanosecondArray, UInt32Array,
};
use arrow::compute::{cast, concat_batches, take};
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, TimeUnit};
use kiln_graph::kernel::{Portable, PortableKernel, input};
use kiln_graph::{Arg, GraphBuilder, GraphError, Kernel, Key, TaskError, TaskId, Value, unique_token};
use serde::{Deserialize, Serialize};

use crate::agg::{self, AggFunc, AggItem, AggSpec};
use crate::error::{DataFrameError, Result};
use crate::expr::Expr;
use crate::frame::DataFrame;
use crate::groupby::{Agg, resolve_aggs};
use crate::lower::{SerdeSchema, Terminal, lower_frame};
use crate::plan::{Divisions, Frame, Source, Steps};
use crate::scalar::Scalar;
use crate::series::Series;

const SECOND: i64 = 1_000_000_000;
const DAY: i64 = 86_400 * SECOND;

/// A fixed frequency: a multiple of s, min, h or D, or pandas' `W` (weeks ending on Sunday).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Rule {
    /// The bucket length in nanoseconds.
    step: i64,
    /// pandas' `W-SUN`: buckets are Monday to Sunday, labelled by the Sunday.
    weekly: bool,
}

impl Rule {
    /// Parses `rule` (`"h"`, `"15min"`, `"2D"`, `"W"`; pandas' older `T`, `H`, `S` too).
    fn parse(rule: &str, operation: &str, allow_weekly: bool) -> Result<Rule> {
        let unknown = || DataFrameError::UnknownFrequency {
            operation: operation.to_string(),
            rule: rule.to_string(),
            weekly: if allow_weekly { ", or W".to_string() } else { String::new() },
        };
        let text = rule.trim();
        let digits = text.chars().take_while(char::is_ascii_digit).count();
        let count: i64 = if digits == 0 { 1 } else { text[..digits].parse().map_err(|_| unknown())? };
        if count == 0 {
            return Err(unknown());
        }
        let unit = match &text[digits..] {
            "s" | "S" | "sec" => SECOND,
            "min" | "T" => 60 * SECOND,
            "h" | "H" => 3600 * SECOND,
            "D" | "d" => DAY,
            "W" | "W-SUN" if allow_weekly && count == 1 => return Ok(Rule { step: 7 * DAY, weekly: true }),
            _ => return Err(unknown()),
        };
        let step = count.checked_mul(unit).ok_or_else(unknown)?;
        Ok(Rule { step, weekly: false })
    }

    /// The start of the bucket holding `t`; buckets are counted from `origin` (pandas'
    /// `origin="start_day"`: midnight of the first day), weeks from a Monday.
    fn bucket(&self, t: i64, origin: i64) -> i64 {
        if self.weekly {
            let day = t.div_euclid(DAY);
            // 1970-01-01 was a Thursday: day 0 is weekday 3 counting from Monday.
            let weekday = (day + 3).rem_euclid(7);
            (day - weekday) * DAY
        } else {
            // In i128: dates centuries apart are further apart than i64 nanoseconds reach.
            let (t, origin, step) = (i128::from(t), i128::from(origin), i128::from(self.step));
            (origin + (t - origin).div_euclid(step) * step) as i64
        }
    }

    /// The label pandas gives the bucket starting at `start`.
    fn label(&self, start: i64) -> i64 {
        if self.weekly { start + 6 * DAY } else { start }
    }
}

/// The length in nanoseconds of a fixed frequency (a positive multiple of s, min, h or D),
/// which `.dt.floor` rounds down to.
///
/// # Errors
/// [`DataFrameError::UnknownFrequency`] naming `operation` for any other rule.
pub(crate) fn fixed_step_ns(rule: &str, operation: &str) -> Result<i64> {
    Ok(Rule::parse(rule, operation, false)?.step)
}

fn index_of(frame: &Frame, operation: &str) -> Result<(String, DataType, Vec<i64>)> {
    let Some(index) = frame.index.clone() else {
        return Err(DataFrameError::NeedsDivisions {
            operation: operation.into(),
            reason: "the frame has no index".into(),
        });
    };
    let dtype = frame.schema.field_with_name(&index).map(|f| f.data_type().clone()).map_err(|_| {
        DataFrameError::ColumnNotFound {
            column: index.clone(),
            available: frame.schema.fields().iter().map(|f| f.name().clone()).collect(),
        }
    })?;
    if !matches!(dtype, DataType::Timestamp(_, None)) {
        return Err(DataFrameError::TypeMismatch {
            operation: operation.into(),
            expression: format!("the index {index:?}"),
            found: dtype,
            expected: "a datetime index without a time zone is needed".into(),
        });
    }
    let Divisions::Known(divisions) = &frame.divisions else {
        return Err(DataFrameError::NeedsDivisions {
            operation: operation.into(),
            reason: format!("the divisions of the index {index:?} are unknown"),
        });
    };
    let divisions = divisions
        .iter()
        .map(|d| match d {
            Scalar::TimestampNs(t) => Ok(*t),
            other => Err(DataFrameError::InvalidArgument(format!(
                "{operation}: division {other} of the index {index:?} is not a timestamp"
            ))),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((index, dtype, divisions))
}

/// The index values as nanoseconds (`None` for missing).
fn index_ns(batch: &RecordBatch, index: &str) -> Result<Int64Array> {
    let column = batch.column_by_name(index).ok_or_else(|| DataFrameError::ColumnNotFound {
        column: index.to_string(),
        available: batch.schema().fields().iter().map(|f| f.name().clone()).collect(),
    })?;
    let ns = cast(column, &DataType::Timestamp(TimeUnit::Nanosecond, None))
        .and_then(|a| cast(&a, &DataType::Int64))
        .map_err(|e| DataFrameError::compute(format!("reading the index {index:?}"), e))?;
    Ok(ns.as_primitive::<Int64Type>().clone())
}

fn task_error(error: DataFrameError) -> TaskError {
    TaskError::Failed(error.to_string())
}

fn kernel<K: PortableKernel>(k: K) -> Arc<dyn Kernel> {
    Arc::new(Portable(k))
}

fn batches(inputs: &[Value]) -> std::result::Result<Vec<RecordBatch>, TaskError> {
    (0..inputs.len()).map(|i| input::<RecordBatch>(inputs, i).cloned()).collect()
}

fn concat(batches: &[RecordBatch]) -> Result<RecordBatch> {
    match batches {
        [] => Err(DataFrameError::compute("concatenating", "no batches")),
        [one] => Ok(one.clone()),
        [first, ..] => {
            concat_batches(&first.schema(), batches).map_err(|e| DataFrameError::compute("concatenating", e))
        }
    }
}

fn graph_error(e: DataFrameError) -> GraphError {
    GraphError::invalid("dataframe", e)
}

/// The name shared by a stage's tasks, from the token of the frame they compute.
fn stage(label: &str, token: u128) -> Arc<str> {
    format!("{label}-{token:032x}").into()
}

// ---------------------------------------------------------------------------------------------
// Moving rows to new divisions.

/// The rows of the inputs (concatenated) whose `column` lies in `[low, high)` (`[low, high]`
/// when `high_inclusive`), plus the rows missing it when `keep_missing`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct RangeTakeKernel {
    column: String,
    low: Scalar,
    high: Scalar,
    high_inclusive: bool,
    keep_missing: bool,
}

impl PortableKernel for RangeTakeKernel {
    const ID: &'static str = "kiln.dataframe.range-take";
    fn name(&self) -> &str {
        "repartition-divisions"
    }
    fn call(&self, inputs: &[Value]) -> std::result::Result<Value, TaskError> {
        let batch = concat(&batches(inputs)?).map_err(task_error)?;
        Ok(Value::new(self.take(&batch).map_err(task_error)?))
    }
}

impl RangeTakeKernel {
    fn take(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let values = batch.column_by_name(&self.column).cloned().ok_or_else(|| DataFrameError::ColumnNotFound {
            column: self.column.clone(),
            available: batch.schema().fields().iter().map(|f| f.name().clone()).collect(),
        })?;
        let bounds = arrow::compute::concat(&[self.low.to_array().as_ref(), self.high.to_array().as_ref()])
            .map_err(|e| DataFrameError::compute("repartition", e))?;
        let (rows, ends) = crate::sort::comparable(&values, &bounds)?;
        let keep: arrow::array::BooleanArray = (0..rows.num_rows())
            .map(|i| {
                if !values.is_valid(i) {
                    return Some(self.keep_missing);
                }
                let row = rows.row(i);
                let below = if self.high_inclusive { row <= ends.row(1) } else { row < ends.row(1) };
                Some(row >= ends.row(0) && below)
            })
            .collect();
        arrow::compute::filter_record_batch(batch, &keep).map_err(|e| DataFrameError::compute("repartition", e))
    }
}

/// For each new partition `[new[j], new[j+1])`, the old partitions whose rows can fall in it
/// (never none: an old partition the filter empties stands in, for the schema).
fn overlapping(old: &[Scalar], new: &[Scalar]) -> Vec<Vec<usize>> {
    use std::cmp::Ordering::{Greater, Less};
    let n_old = old.len() - 1;
    (0..new.len() - 1)
        .map(|j| {
            let (lo, hi) = (&new[j], &new[j + 1]);
            let hits: Vec<usize> = (0..n_old)
                .filter(|&i| {
                    crate::index::compare(&old[i], hi) != Some(Greater)
                        && crate::index::compare(&old[i + 1], lo) != Some(Less)
                })
                .collect();
            if hits.is_empty() { vec![j.min(n_old - 1)] } else { hits }
        })
        .collect()
}

/// Tasks holding the rows of `parts` (partitions of `old` divisions) moved to `new`
/// divisions; the last new partition includes its upper end and the rows missing an index
/// when `last_inclusive`.
fn move_to_divisions(
    parts: &[TaskId],
    column: &str,
    old: &[Scalar],
    new: &[Scalar],
    last_inclusive: bool,
    token: u128,
    builder: &mut GraphBuilder,
) -> std::result::Result<Vec<TaskId>, GraphError> {
    let name = stage("repartition-divisions", token);
    let sources = overlapping(old, new);
    let last = new.len() - 2;
    sources
        .into_iter()
        .enumerate()
        .map(|(j, from)| {
            let k = RangeTakeKernel {
                column: column.to_string(),
                low: new[j].clone(),
                high: new[j + 1].clone(),
                high_inclusive: last_inclusive && j == last,
                keep_missing: last_inclusive && j == last,
            };
            let args: Vec<Arg> = from.iter().map(|&i| Arg::Task(parts[i])).collect();
            builder.add(Key::from_shared(&name, &[j as u32]), kernel(k), args)
        })
        .collect()
}

/// A repartition to given divisions (see [`DataFrame::repartition_divisions`]).
pub(crate) fn lower_repartition_divisions(
    input: &Frame,
    new: &[Scalar],
    token: u128,
    builder: &mut GraphBuilder,
) -> std::result::Result<Vec<TaskId>, GraphError> {
    let (Some(index), Divisions::Known(old)) = (&input.index, &input.divisions) else {
        return Err(graph_error(DataFrameError::NeedsDivisions {
            operation: "repartition(divisions)".into(),
            reason: "the divisions are unknown".into(),
        }));
    };
    let parts = lower_frame(input, None, &|_| Terminal::Batch, builder)?;
    move_to_divisions(&parts, index, old, new, true, token, builder)
}

impl DataFrame {
    /// The same rows in partitions bounded by `divisions` (Dask's
    /// `repartition(divisions=...)`): partition `i` holds the index values in
    /// `[divisions[i], divisions[i+1])`, the last one including its upper end (and any rows
    /// missing an index). Each new partition is cut from the old partitions its range
    /// overlaps, so no shuffle is needed; empty partitions are kept.
    ///
    /// # Errors
    /// [`DataFrameError::NeedsDivisions`] without an index of known divisions;
    /// [`DataFrameError::InvalidArgument`] for fewer than two divisions, divisions not strictly
    /// increasing, not comparable with the index, or not covering the old ones.
    pub fn repartition_divisions(&self, divisions: Vec<Scalar>) -> Result<DataFrame> {
        use std::cmp::Ordering::{Greater, Less};
        let operation = "repartition(divisions)";
        let (Some(index), Divisions::Known(old)) = (&self.frame.index, &self.frame.divisions) else {
            return Err(DataFrameError::NeedsDivisions {
                operation: operation.into(),
                reason: "the frame has no index with known divisions".into(),
            });
        };
        let index_type = self
            .frame
            .schema
            .field_with_name(index)
            .map(|f| f.data_type().clone())
            .map_err(|_| DataFrameError::ColumnNotFound { column: index.clone(), available: self.columns() })?;
        if divisions.len() < 2 {
            return Err(DataFrameError::InvalidArgument(format!(
                "{operation}: at least two divisions are needed, got {}",
                divisions.len()
            )));
        }
        // Divisions are compared as the index's type: a timestamp index takes timestamps.
        let typed = divisions
            .iter()
            .map(|d| {
                let cast = cast(&d.to_array(), &index_type).ok().filter(|a| a.is_valid(0));
                cast.and_then(|a| Scalar::from_array(a.as_ref(), 0).ok()).ok_or_else(|| {
                    DataFrameError::InvalidArgument(format!(
                        "{operation}: division {d} cannot be compared with the index {index:?} of type {index_type}"
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if let Some(w) = typed.windows(2).find(|w| crate::index::compare(&w[0], &w[1]) != Some(Less)) {
            return Err(DataFrameError::InvalidArgument(format!(
                "{operation}: divisions must increase strictly, but {} is followed by {}",
                w[0], w[1]
            )));
        }
        let (first, last) = (&typed[0], &typed[typed.len() - 1]);
        if crate::index::compare(first, &old[0]) == Some(Greater)
            || crate::index::compare(last, &old[old.len() - 1]) == Some(Less)
        {
            return Err(DataFrameError::InvalidArgument(format!(
                "{operation}: the new divisions [{first}, {last}] do not cover the old ones [{}, {}]",
                old[0],
                old[old.len() - 1]
            )));
        }
        Ok(DataFrame {
            frame: Arc::new(Frame {
                source: Arc::new(Source::RepartitionDivisions { input: self.frame.clone(), divisions: typed.clone() }),
                token: unique_token(),
                steps: Steps::default(),
                schema: self.frame.schema.clone(),
                divisions: Divisions::Known(typed),
                index: Some(index.clone()),
                partitioning: None,
            }),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Resampling.

/// What a resample computes: the aggregation of each bucket (keyed by the index, replaced by
/// the bucket's start), which outputs are 0 rather than missing for an empty bucket, and the
/// bucket-aligned partition boundaries (`npartitions + 1` bucket starts).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ResampleSpec {
    pub(crate) index: String,
    rule: Rule,
    origin: i64,
    pub(crate) agg: AggSpec,
    zero_when_empty: Vec<bool>,
    pub(crate) boundaries: Vec<i64>,
    rule_text: String,
}

impl ResampleSpec {
    pub(crate) fn describe(&self) -> String {
        let aggs: Vec<String> =
            self.agg.aggs.iter().map(|a| format!("{} := {}({})", a.name, a.func.name(), a.input)).collect();
        format!("resample {} on {} agg [{}]", self.rule_text, self.index, aggs.join(", "))
    }

    pub(crate) fn npartitions(&self) -> usize {
        self.boundaries.len() - 1
    }
}

/// A resampling of a frame on its datetime index, waiting for its aggregations (pandas'
/// `df.resample(rule)`). Buckets are closed on the left and labelled by their start (`W`:
/// Monday to Sunday, labelled by the Sunday, as pandas' `W-SUN`).
pub struct Resample {
    frame: Arc<Frame>,
    rule: Rule,
    rule_text: String,
    index: String,
    divisions: Vec<i64>,
}

impl DataFrame {
    /// Groups the rows into buckets of the index by `rule`: a multiple of `s`, `min`, `h`, `D`
    /// (`"15min"`, `"2D"`), or `W`. Multiples that do not divide a day count from midnight of
    /// the first division's day, which is pandas' `origin="start_day"` when the first row is on
    /// that day; when it is on a later one (rows filtered away), computing fails saying so
    /// (set the index again), rather than give other buckets than pandas'.
    ///
    /// # Errors
    /// [`DataFrameError::UnknownFrequency`] for another rule; [`DataFrameError::NeedsDivisions`]
    /// without an index of known divisions; [`DataFrameError::TypeMismatch`] when the index is
    /// not a datetime (without a time zone).
    pub fn resample(&self, rule: &str) -> Result<Resample> {
        let parsed = Rule::parse(rule, "resample", true)?;
        let (index, _, divisions) = index_of(&self.frame, "resample")?;
        Ok(Resample { frame: self.frame.clone(), rule: parsed, rule_text: rule.to_string(), index, divisions })
    }
}

impl Resample {
    /// The aggregations of each bucket, one output column each after the index (named as the
    /// frame's index, holding the bucket labels), one row per bucket from the first row's
    /// bucket to the last row's: an empty bucket has 0 for `count`, `size` and `sum`, and
    /// missing values otherwise, as pandas gives. The result is indexed by the labels, with
    /// known divisions.
    ///
    /// # Errors
    /// As [`crate::GroupBy::agg`]; [`DataFrameError::InvalidArgument`] for an aggregation of
    /// the index itself.
    pub fn agg(&self, aggs: impl IntoIterator<Item = Agg>) -> Result<DataFrame> {
        let key_type = DataType::Timestamp(TimeUnit::Nanosecond, None);
        let mut fields = vec![Field::new(&self.index, key_type, true)];
        let items = resolve_aggs(&self.frame, aggs, &mut fields)?;
        if items.is_empty() {
            return Err(DataFrameError::InvalidArgument("resample agg needs at least one aggregation".into()));
        }
        for item in &items {
            let mut reads = Vec::new();
            item.input.columns_into(&mut reads);
            if reads.contains(&self.index) {
                return Err(DataFrameError::InvalidArgument(format!(
                    "resample: {} aggregates the index {:?}, which holds the buckets",
                    item.name, self.index
                )));
            }
        }
        let zero_when_empty =
            items.iter().map(|i| matches!(i.func, AggFunc::Sum | AggFunc::Count | AggFunc::Size)).collect();
        let output = Arc::new(Schema::new(fields));
        let spec = AggSpec {
            keys: vec![(self.index.clone(), Expr::Column(self.index.clone()))],
            aggs: items,
            output: SerdeSchema(output.clone()),
            first_seen_order: false,
        };
        let (first, last) = (self.divisions[0], self.divisions[self.divisions.len() - 1]);
        let origin = first.div_euclid(DAY) * DAY;
        let rule = self.rule;
        // Each old division moves down to its bucket's start, so a bucket never spans two
        // partitions; the end is the start of the bucket after the last row's.
        let mut boundaries: Vec<i64> =
            self.divisions[..self.divisions.len() - 1].iter().map(|&d| rule.bucket(d, origin)).collect();
        boundaries.dedup();
        // The end saturates: a bucket may reach past 2262 (pandas labels it all the same).
        let last_bucket = rule.bucket(last, origin);
        let end = last_bucket.saturating_add(rule.step);
        boundaries.push(end);
        let labels: Vec<Scalar> = boundaries[..boundaries.len() - 1]
            .iter()
            .map(|&b| Scalar::TimestampNs(rule.label(b)))
            .chain(std::iter::once(Scalar::TimestampNs(rule.label(last_bucket))))
            .collect();
        let spec = ResampleSpec {
            index: self.index.clone(),
            rule,
            origin,
            agg: spec,
            zero_when_empty,
            boundaries,
            rule_text: self.rule_text.clone(),
        };
        Ok(DataFrame {
            frame: Arc::new(Frame {
                source: Arc::new(Source::Resample { input: self.frame.clone(), spec }),
                token: unique_token(),
                steps: Steps::default(),
                schema: output,
                divisions: Divisions::Known(labels),
                index: Some(self.index.clone()),
                partitioning: None,
            }),
        })
    }

    fn every(&self, func: fn(&str) -> Agg) -> Result<DataFrame> {
        let aggs: Vec<Agg> =
            self.frame.schema.fields().iter().filter(|f| *f.name() != self.index).map(|f| func(f.name())).collect();
        self.agg(aggs)
    }

    /// The mean of every column but the index in each bucket (pandas' `.mean()`).
    ///
    /// # Errors
    /// As [`Resample::agg`] (a column that is not numeric is a type mismatch).
    pub fn mean(&self) -> Result<DataFrame> {
        self.every(Agg::mean)
    }
    /// The sum of every column but the index in each bucket (0 for an empty one).
    ///
    /// # Errors
    /// As [`Resample::agg`].
    pub fn sum(&self) -> Result<DataFrame> {
        self.every(Agg::sum)
    }
    /// The count of present values of every column but the index in each bucket.
    ///
    /// # Errors
    /// As [`Resample::agg`].
    pub fn count(&self) -> Result<DataFrame> {
        self.every(Agg::count)
    }
    /// The minimum of every column but the index in each bucket.
    ///
    /// # Errors
    /// As [`Resample::agg`].
    pub fn min(&self) -> Result<DataFrame> {
        self.every(Agg::min)
    }
    /// The maximum of every column but the index in each bucket.
    ///
    /// # Errors
    /// As [`Resample::agg`].
    pub fn max(&self) -> Result<DataFrame> {
        self.every(Agg::max)
    }
    /// The sample variance of every column but the index in each bucket.
    ///
    /// # Errors
    /// As [`Resample::agg`].
    pub fn var(&self) -> Result<DataFrame> {
        self.every(Agg::var)
    }
    /// The sample standard deviation of every column but the index in each bucket.
    ///
    /// # Errors
    /// As [`Resample::agg`].
    pub fn std(&self) -> Result<DataFrame> {
        self.every(Agg::std)
    }
    /// The number of rows in each bucket, in a column `size`.
    ///
    /// # Errors
    /// As [`Resample::agg`].
    pub fn size(&self) -> Result<DataFrame> {
        self.agg([Agg::size()])
    }
}

/// The smallest and largest present index value of the inputs (partitions, or earlier
/// results of this kernel): a batch of columns `low`, `high` (ns) with one row, or none when
/// no value is present.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct IndexBoundsKernel {
    /// The index column; `None` when the inputs are bounds already.
    column: Option<String>,
}

impl PortableKernel for IndexBoundsKernel {
    const ID: &'static str = "kiln.dataframe.index-bounds";
    fn name(&self) -> &str {
        "index-bounds"
    }
    fn call(&self, inputs: &[Value]) -> std::result::Result<Value, TaskError> {
        let (mut low, mut high) = (None::<i64>, None::<i64>);
        for batch in batches(inputs)? {
            let pairs: Vec<(i64, i64)> = match &self.column {
                Some(c) => index_ns(&batch, c).map_err(task_error)?.iter().flatten().map(|v| (v, v)).collect(),
                None => {
                    let lows = index_ns(&batch, "low").map_err(task_error)?;
                    let highs = index_ns(&batch, "high").map_err(task_error)?;
                    lows.iter().zip(highs.iter()).filter_map(|(l, h)| Some((l?, h?))).collect()
                }
            };
            for (l, h) in pairs {
                low = Some(low.map_or(l, |x| x.min(l)));
                high = Some(high.map_or(h, |x| x.max(h)));
            }
        }
        let out = RecordBatch::try_from_iter([
            ("low", Arc::new(Int64Array::from_iter(low)) as ArrayRef),
            ("high", Arc::new(Int64Array::from_iter(high)) as ArrayRef),
        ])
        .map_err(|e| task_error(DataFrameError::compute("index bounds", e)))?;
        Ok(Value::new(out))
    }
}

/// Aggregates one bucket-aligned partition (`[low, high)` of bucket starts) and fills its
/// empty buckets between the first and last buckets of the whole frame (input 1, from
/// [`IndexBoundsKernel`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ResampleKernel {
    spec: ResampleSpec,
    low: i64,
    high: i64,
}

impl PortableKernel for ResampleKernel {
    const ID: &'static str = "kiln.dataframe.resample";
    fn name(&self) -> &str {
        "resample"
    }
    fn call(&self, inputs: &[Value]) -> std::result::Result<Value, TaskError> {
        let batch = input::<RecordBatch>(inputs, 0)?;
        let bounds = input::<RecordBatch>(inputs, 1)?;
        Ok(Value::new(self.resample(batch, bounds).map_err(task_error)?))
    }
}

impl ResampleKernel {
    fn resample(&self, batch: &RecordBatch, bounds: &RecordBatch) -> Result<RecordBatch> {
        let spec = &self.spec;
        let output = spec.agg.output.0.clone();
        let (Some(first), Some(last)) =
            (index_ns(bounds, "low")?.iter().next().flatten(), index_ns(bounds, "high")?.iter().next().flatten())
        else {
            return Ok(RecordBatch::new_empty(output));
        };
        // pandas counts buckets from midnight of the first row's day, the partitions were cut
        // from the first division's. A rule that does not divide a day (7min, 2D) puts the
        // bucket edges elsewhere when the two days differ (rows filtered away after the
        // divisions were made), and a bucket would then span two partitions: refuse rather
        // than answer with other buckets than pandas'.
        let origin = first.div_euclid(DAY) * DAY;
        if !spec.rule.weekly && (origin - spec.origin).rem_euclid(spec.rule.step) != 0 {
            return Err(DataFrameError::InvalidArgument(format!(
                "resample({:?}): the first row is on a later day than the index's first division, and \
                 buckets of {:?} counted from that day (as pandas does) do not line up with the \
                 partitions; set the index again (set_index) after filtering, or use a rule that \
                 divides a day",
                spec.rule_text, spec.rule_text
            )));
        }
        let (first, last) = (spec.rule.bucket(first, spec.origin), spec.rule.bucket(last, spec.origin));
        // The index replaced by each row's bucket start: the group-by key.
        let ns = index_ns(batch, &spec.index)?;
        let buckets: TimestampNanosecondArray =
            ns.iter().map(|t| t.map(|t| spec.rule.bucket(t, spec.origin))).collect();
        let position = batch.schema().index_of(&spec.index).map_err(|e| DataFrameError::compute("resample", e))?;
        let mut columns = batch.columns().to_vec();
        columns[position] = Arc::new(buckets);
        let mut fields: Vec<Field> = batch.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
        fields[position] = Field::new(&spec.index, DataType::Timestamp(TimeUnit::Nanosecond, None), true);
        let keyed = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
            .map_err(|e| DataFrameError::compute("resample", e))?;
        let partial = agg::partial(&spec.agg, &keyed)?;
        let groups = agg::finalize(&spec.agg, &[&partial])?;
        let keys = index_ns(&groups, &spec.index)?;
        let row_of: HashMap<i64, u32> = keys.iter().enumerate().filter_map(|(row, k)| Some((k?, row as u32))).collect();
        // Every bucket of this partition's range that lies within the frame's.
        let start = first.max(self.low);
        let mut starts = Vec::new();
        let mut b = start;
        while b < self.high && b <= last {
            starts.push(b);
            let Some(next) = b.checked_add(spec.rule.step) else { break };
            b = next;
        }
        let rows = UInt32Array::from(starts.iter().map(|b| row_of.get(b).copied()).collect::<Vec<_>>());
        let labels: ArrayRef =
            Arc::new(TimestampNanosecondArray::from(starts.iter().map(|&b| spec.rule.label(b)).collect::<Vec<_>>()));
        let mut out = vec![labels];
        for (i, zero) in spec.zero_when_empty.iter().enumerate() {
            let taken = take(groups.column(i + 1), &rows, None).map_err(|e| DataFrameError::compute("resample", e))?;
            out.push(if *zero { fill_zero(taken)? } else { taken });
        }
        RecordBatch::try_new(output, out).map_err(|e| DataFrameError::compute("resample", e))
    }
}

/// Missing values replaced by 0 (an empty bucket's sum or count).
fn fill_zero(values: ArrayRef) -> Result<ArrayRef> {
    Ok(match values.data_type() {
        DataType::Int64 => {
            Arc::new(values.as_primitive::<Int64Type>().iter().map(|v| Some(v.unwrap_or(0))).collect::<Int64Array>())
        }
        DataType::Float64 => Arc::new(
            values.as_primitive::<Float64Type>().iter().map(|v| Some(v.unwrap_or(0.0))).collect::<Float64Array>(),
        ),
        other => return Err(DataFrameError::compute("resample", format!("no zero for type {other}"))),
    })
}

/// A resample's tasks: rows moved to bucket-aligned partitions, the frame's index bounds, one
/// aggregation per partition.
pub(crate) fn lower_resample(
    input: &Frame,
    spec: &ResampleSpec,
    token: u128,
    builder: &mut GraphBuilder,
) -> std::result::Result<Vec<TaskId>, GraphError> {
    let Divisions::Known(old) = &input.divisions else {
        return Err(graph_error(DataFrameError::NeedsDivisions {
            operation: "resample".into(),
            reason: "the divisions are unknown".into(),
        }));
    };
    let mut needed = spec.agg.columns_read();
    if !needed.contains(&spec.index) {
        needed.push(spec.index.clone());
    }
    let parts = lower_frame(input, Some(needed), &|_| Terminal::Batch, builder)?;
    let new: Vec<Scalar> = spec.boundaries.iter().map(|&b| Scalar::TimestampNs(b)).collect();
    let moved = move_to_divisions(&parts, &spec.index, old, &new, false, token, builder)?;
    let bounds_name = stage("index-bounds", token);
    let mut bounds = Vec::with_capacity(moved.len());
    for (j, &part) in moved.iter().enumerate() {
        let k = kernel(IndexBoundsKernel { column: Some(spec.index.clone()) });
        bounds.push(builder.add(Key::from_shared(&bounds_name, &[j as u32]), k, vec![Arg::Task(part)])?);
    }
    let all = builder.add(
        Key::from_shared(&bounds_name, &[]),
        kernel(IndexBoundsKernel { column: None }),
        bounds.iter().map(|&id| Arg::Task(id)).collect::<Vec<_>>(),
    )?;
    let name = stage("resample", token);
    moved
        .iter()
        .enumerate()
        .map(|(j, &part)| {
            let k = ResampleKernel { spec: spec.clone(), low: spec.boundaries[j], high: spec.boundaries[j + 1] };
            builder.add(Key::from_shared(&name, &[j as u32]), kernel(k), vec![Arg::Task(part), Arg::Task(all)])
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Windows, shift and diff.

/// A rolling window: a number of rows, or a time span of the index (`"2h"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Window {
    /// The row and the `n - 1` rows before it.
    Rows(usize),
    /// The rows whose index lies in `(t - span, t]` (pandas' `closed="right"`).
    Span(String),
}

impl From<usize> for Window {
    fn from(n: usize) -> Self {
        Window::Rows(n)
    }
}

impl From<&str> for Window {
    fn from(span: &str) -> Self {
        Window::Span(span.to_string())
    }
}

/// How many earlier rows a row's result reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Reach {
    Rows(u64),
    /// Nanoseconds of the index.
    Span(i64),
}

/// What a window step computes per row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum WindowOp {
    Rolling {
        reach: Reach,
        min_periods: u64,
        aggs: Vec<AggItem>,
        text: String,
    },
    /// `periods > 0`: the value `periods` rows before; `< 0`: after.
    Shift {
        periods: i64,
        columns: Vec<String>,
    },
    /// The value minus the one `periods` rows before (after, for `< 0`).
    Diff {
        periods: i64,
        columns: Vec<String>,
    },
}

/// A window step over a frame sorted by its index: the index, then one output column each.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct WindowSpec {
    pub(crate) index: String,
    pub(crate) op: WindowOp,
    /// The index, then the outputs.
    pub(crate) output: SerdeSchema,
}

impl WindowSpec {
    pub(crate) fn describe(&self) -> String {
        match &self.op {
            WindowOp::Rolling { aggs, text, .. } => {
                let aggs: Vec<String> =
                    aggs.iter().map(|a| format!("{} := {}({})", a.name, a.func.name(), a.input)).collect();
                format!("rolling {text} on {} agg [{}] (earlier rows borrowed)", self.index, aggs.join(", "))
            }
            WindowOp::Shift { periods, columns } => format!("shift {periods} of [{}]", columns.join(", ")),
            WindowOp::Diff { periods, columns } => format!("diff {periods} of [{}]", columns.join(", ")),
        }
    }

    fn columns_read(&self) -> Vec<String> {
        let mut out = vec![self.index.clone()];
        match &self.op {
            WindowOp::Rolling { aggs, .. } => aggs.iter().for_each(|a| a.input.columns_into(&mut out)),
            WindowOp::Shift { columns, .. } | WindowOp::Diff { columns, .. } => {
                out.extend(columns.iter().filter(|c| **c != self.index).cloned())
            }
        }
        out
    }

    /// The rows borrowed from before and after each partition.
    fn context(&self) -> (Option<Reach>, Option<u64>) {
        match &self.op {
            WindowOp::Rolling { reach: Reach::Rows(n), .. } => ((*n > 1).then(|| Reach::Rows(n - 1)), None),
            WindowOp::Rolling { reach, .. } => (Some(*reach), None),
            WindowOp::Shift { periods, .. } | WindowOp::Diff { periods, .. } => match *periods {
                0 => (None, None),
                p if p > 0 => (Some(Reach::Rows(p.unsigned_abs())), None),
                p => (None, Some(p.unsigned_abs())),
            },
        }
    }
}

/// Rolling aggregations of a frame, waiting for the functions (pandas' `df.rolling(window)`).
pub struct Rolling {
    frame: Arc<Frame>,
    index: String,
    window: Window,
    reach: Reach,
    min_periods: Option<usize>,
}

impl DataFrame {
    /// A rolling window over the rows sorted by the datetime index: `Window::Rows(n)` (from a
    /// `usize`) is the row and the `n - 1` before it, `Window::Span("2h")` (from a `&str`) the
    /// rows within that time before it. Rows come from as many earlier partitions as the window
    /// needs.
    ///
    /// # Errors
    /// [`DataFrameError::InvalidArgument`] for a window of 0 rows;
    /// [`DataFrameError::UnknownFrequency`] for a span that is not a multiple of s, min, h or D;
    /// [`DataFrameError::NeedsDivisions`] and [`DataFrameError::TypeMismatch`] as
    /// [`DataFrame::resample`].
    pub fn rolling(&self, window: impl Into<Window>) -> Result<Rolling> {
        let window = window.into();
        let reach = match &window {
            Window::Rows(0) => {
                return Err(DataFrameError::InvalidArgument("rolling: a window needs at least one row".into()));
            }
            Window::Rows(n) => Reach::Rows(*n as u64),
            Window::Span(span) => Reach::Span(Rule::parse(span, "rolling", false)?.step),
        };
        let (index, _, _) = index_of(&self.frame, "rolling")?;
        Ok(Rolling { frame: self.frame.clone(), index, window, reach, min_periods: None })
    }

    /// Every column but the index shifted by `periods` rows (pandas' `shift`): a row takes the
    /// value `periods` rows before it (after it, for a negative number), missing where there is
    /// none. Values cross partition boundaries.
    ///
    /// # Errors
    /// [`DataFrameError::NeedsDivisions`] and [`DataFrameError::TypeMismatch`] as
    /// [`DataFrame::resample`].
    pub fn shift(&self, periods: i64) -> Result<DataFrame> {
        let (index, _, _) = index_of(&self.frame, "shift")?;
        let columns: Vec<String> = self.columns().into_iter().filter(|c| *c != index).collect();
        let mut fields = vec![self.field(&index)?];
        for c in &columns {
            fields.push(self.field(c)?);
        }
        self.window_frame(index, WindowOp::Shift { periods, columns }, fields)
    }

    /// Every column but the index minus its value `periods` rows before (pandas' `diff`), as
    /// floats; missing where either value is.
    ///
    /// # Errors
    /// As [`DataFrame::shift`]; [`DataFrameError::TypeMismatch`] for a column that is not
    /// numeric.
    pub fn diff(&self, periods: i64) -> Result<DataFrame> {
        let (index, _, _) = index_of(&self.frame, "diff")?;
        let columns: Vec<String> = self.columns().into_iter().filter(|c| *c != index).collect();
        let mut fields = vec![self.field(&index)?];
        for c in &columns {
            let field = self.field(c)?;
            if !field.data_type().is_numeric() {
                return Err(DataFrameError::TypeMismatch {
                    operation: "diff".into(),
                    expression: c.clone(),
                    found: field.data_type().clone(),
                    expected: "numbers are needed".into(),
                });
            }
            fields.push(Field::new(c, DataType::Float64, true));
        }
        self.window_frame(index, WindowOp::Diff { periods, columns }, fields)
    }

    fn field(&self, name: &str) -> Result<Field> {
        self.frame
            .schema
            .field_with_name(name)
            .map(|f| f.clone().with_nullable(true))
            .map_err(|_| DataFrameError::ColumnNotFound { column: name.to_string(), available: self.columns() })
    }

    fn window_frame(&self, index: String, op: WindowOp, fields: Vec<Field>) -> Result<DataFrame> {
        let schema = Arc::new(Schema::new(fields));
        let spec = WindowSpec { index: index.clone(), op, output: SerdeSchema(schema.clone()) };
        Ok(DataFrame {
            frame: Arc::new(Frame {
                source: Arc::new(Source::Window { input: self.frame.clone(), spec }),
                token: unique_token(),
                steps: Steps::default(),
                schema,
                divisions: self.frame.divisions.clone(),
                index: Some(index),
                partitioning: None,
            }),
        })
    }
}

impl Rolling {
    /// The fewest present values a window needs for a result (the count of rows, for
    /// `count`); pandas' default is the window's length in rows, or 1 for a time span.
    pub fn min_periods(mut self, min_periods: usize) -> Rolling {
        self.min_periods = Some(min_periods);
        self
    }

    /// The aggregations over each row's window (`sum count mean min max var std`), one float
    /// column each after the index, one row per input row.
    ///
    /// # Errors
    /// As [`crate::GroupBy::agg`]; [`DataFrameError::InvalidArgument`] for `size`, for no
    /// aggregation, or for `min_periods` larger than a window of rows.
    pub fn agg(&self, aggs: impl IntoIterator<Item = Agg>) -> Result<DataFrame> {
        let aggs: Vec<Agg> = aggs.into_iter().collect();
        if aggs.iter().any(|a| a.func() == AggFunc::Size) {
            return Err(DataFrameError::InvalidArgument(
                "rolling: size is not a rolling aggregation; use count".into(),
            ));
        }
        if let Some(other) = aggs.iter().find(|a| {
            matches!(
                a.func(),
                AggFunc::First | AggFunc::Last | AggFunc::Nunique | AggFunc::Unique | AggFunc::Any | AggFunc::All
            )
        }) {
            return Err(DataFrameError::InvalidArgument(format!(
                "rolling: {} is not a rolling aggregation (sum count mean min max var std are)",
                other.func().name()
            )));
        }
        let index_field = self.frame.schema.field_with_name(&self.index).map(|f| f.clone().with_nullable(true));
        let mut fields = vec![index_field.map_err(|e| DataFrameError::compute("rolling", e))?];
        let items = resolve_aggs(&self.frame, aggs, &mut fields)?;
        if items.is_empty() {
            return Err(DataFrameError::InvalidArgument("rolling agg needs at least one aggregation".into()));
        }
        for field in fields.iter_mut().skip(1) {
            *field = Field::new(field.name(), DataType::Float64, true);
        }
        let default = match self.reach {
            Reach::Rows(n) => n as usize,
            Reach::Span(_) => 1,
        };
        let min_periods = self.min_periods.unwrap_or(default);
        if let Window::Rows(n) = self.window
            && min_periods > n
        {
            return Err(DataFrameError::InvalidArgument(format!(
                "rolling: min_periods {min_periods} must be at most the window of {n} rows"
            )));
        }
        let text = match &self.window {
            Window::Rows(n) => format!("{n} rows"),
            Window::Span(s) => s.clone(),
        };
        let op = WindowOp::Rolling { reach: self.reach, min_periods: min_periods as u64, aggs: items, text };
        DataFrame { frame: self.frame.clone() }.window_frame(self.index.clone(), op, fields)
    }

    fn every(&self, func: fn(&str) -> Agg) -> Result<DataFrame> {
        let aggs: Vec<Agg> =
            self.frame.schema.fields().iter().filter(|f| *f.name() != self.index).map(|f| func(f.name())).collect();
        self.agg(aggs)
    }

    /// The sum over each window of every column but the index.
    ///
    /// # Errors
    /// As [`Rolling::agg`].
    pub fn sum(&self) -> Result<DataFrame> {
        self.every(Agg::sum)
    }
    /// The mean over each window of every column but the index.
    ///
    /// # Errors
    /// As [`Rolling::agg`].
    pub fn mean(&self) -> Result<DataFrame> {
        self.every(Agg::mean)
    }
    /// The count of present values over each window of every column but the index.
    ///
    /// # Errors
    /// As [`Rolling::agg`].
    pub fn count(&self) -> Result<DataFrame> {
        self.every(Agg::count)
    }
    /// The minimum over each window of every column but the index.
    ///
    /// # Errors
    /// As [`Rolling::agg`].
    pub fn min(&self) -> Result<DataFrame> {
        self.every(Agg::min)
    }
    /// The maximum over each window of every column but the index.
    ///
    /// # Errors
    /// As [`Rolling::agg`].
    pub fn max(&self) -> Result<DataFrame> {
        self.every(Agg::max)
    }
    /// The sample variance over each window of every column but the index.
    ///
    /// # Errors
    /// As [`Rolling::agg`].
    pub fn var(&self) -> Result<DataFrame> {
        self.every(Agg::var)
    }
    /// The sample standard deviation over each window of every column but the index.
    ///
    /// # Errors
    /// As [`Rolling::agg`].
    pub fn std(&self) -> Result<DataFrame> {
        self.every(Agg::std)
    }
}

impl Series {
    /// This series beside the frame's index, as a frame (what a time-series operation of the
    /// series works on).
    fn with_index(&self, operation: &str) -> Result<DataFrame> {
        self.check()?;
        let Some(index) = self.frame.index.clone() else {
            return Err(DataFrameError::NeedsDivisions {
                operation: operation.into(),
                reason: "the frame has no index".into(),
            });
        };
        let name = self.name();
        if name == index {
            return Err(DataFrameError::InvalidArgument(format!(
                "{operation}: the series is the index {index:?} itself"
            )));
        }
        let frame = DataFrame { frame: self.frame.clone() };
        let index_type = frame.field(&index)?;
        let schema = Arc::new(Schema::new(vec![index_type, Field::new(&name, self.dtype()?, true)]));
        let step = crate::plan::Step::Project(vec![(index.clone(), Expr::Column(index)), (name, self.expr.clone())]);
        Ok(frame.with_step(step, schema))
    }

    /// The series resampled on the frame's datetime index (pandas' `s.resample(rule)`); see
    /// [`DataFrame::resample`].
    ///
    /// # Errors
    /// As [`DataFrame::resample`], and the error the series carries.
    pub fn resample(&self, rule: &str) -> Result<Resample> {
        self.with_index("resample")?.resample(rule)
    }

    /// A rolling window of the series on the frame's datetime index; see
    /// [`DataFrame::rolling`].
    ///
    /// # Errors
    /// As [`DataFrame::rolling`], and the error the series carries.
    pub fn rolling(&self, window: impl Into<Window>) -> Result<Rolling> {
        self.with_index("rolling")?.rolling(window)
    }

    /// The series shifted by `periods` rows, beside the index; see [`DataFrame::shift`].
    ///
    /// # Errors
    /// As [`DataFrame::shift`], and the error the series carries.
    pub fn shift(&self, periods: i64) -> Result<DataFrame> {
        self.with_index("shift")?.shift(periods)
    }

    /// The series minus its value `periods` rows before, beside the index; see
    /// [`DataFrame::diff`].
    ///
    /// # Errors
    /// As [`DataFrame::diff`], and the error the series carries.
    pub fn diff(&self, periods: i64) -> Result<DataFrame> {
        self.with_index("diff")?.diff(periods)
    }
}

/// The rows a neighbour needs from everything before (or after) it: the last (first) rows of
/// the previous carry (input 1, when given) and this partition (input 0) together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct CarryKernel {
    index: String,
    reach: Reach,
    /// Carry forward from the end (`true`) or backward from the start (`false`).
    tail: bool,
}

impl PortableKernel for CarryKernel {
    const ID: &'static str = "kiln.dataframe.window.carry";
    fn name(&self) -> &str {
        "window-overlap"
    }
    fn call(&self, inputs: &[Value]) -> std::result::Result<Value, TaskError> {
        let all = batches(inputs)?;
        let ordered: Vec<RecordBatch> = if self.tail { all.into_iter().rev().collect() } else { all };
        let batch = concat(&ordered).map_err(task_error)?;
        let n = batch.num_rows();
        Ok(Value::new(match (self.reach, self.tail) {
            (Reach::Rows(k), true) => batch.slice(n - n.min(k as usize), n.min(k as usize)),
            (Reach::Rows(k), false) => batch.slice(0, n.min(k as usize)),
            (Reach::Span(span), _) => {
                let ns = index_ns(&batch, &self.index).map_err(task_error)?;
                match ns.iter().flatten().last() {
                    None => batch.slice(0, 0),
                    Some(last) => {
                        // Later rows are at or after `last`: they reach back to `last - span`.
                        let from =
                            (0..n).find(|&i| ns.is_valid(i) && ns.value(i) > last.saturating_sub(span)).unwrap_or(n);
                        batch.slice(from, n - from)
                    }
                }
            }
        }))
    }
}

/// One partition's window results: input 0 is the partition, then the rows carried from
/// before it (when `before`), then those from after it (when `after`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct WindowKernel {
    spec: WindowSpec,
    before: bool,
    after: bool,
}

impl PortableKernel for WindowKernel {
    const ID: &'static str = "kiln.dataframe.window";
    fn name(&self) -> &str {
        match self.spec.op {
            WindowOp::Rolling { .. } => "rolling",
            WindowOp::Shift { .. } => "shift",
            WindowOp::Diff { .. } => "diff",
        }
    }
    fn call(&self, inputs: &[Value]) -> std::result::Result<Value, TaskError> {
        let part = input::<RecordBatch>(inputs, 0)?.clone();
        let mut next = 1;
        let mut pieces = Vec::with_capacity(3);
        let mut offset = 0;
        if self.before {
            let before = input::<RecordBatch>(inputs, next)?.clone();
            offset = before.num_rows();
            pieces.push(before);
            next += 1;
        }
        let count = part.num_rows();
        pieces.push(part);
        if self.after {
            pieces.push(input::<RecordBatch>(inputs, next)?.clone());
        }
        let all = concat(&pieces).map_err(task_error)?;
        Ok(Value::new(self.compute(&all, offset, count).map_err(task_error)?))
    }
}

fn floats(values: &ArrayRef, context: &str) -> Result<Vec<Option<f64>>> {
    let f = cast(values, &DataType::Float64).map_err(|e| DataFrameError::compute(context, e))?;
    Ok(f.as_primitive::<Float64Type>().iter().map(|v| v.filter(|x| !x.is_nan())).collect())
}

impl WindowKernel {
    /// The results for rows `offset..offset + count` of `all`.
    fn compute(&self, all: &RecordBatch, offset: usize, count: usize) -> Result<RecordBatch> {
        let index = all.column_by_name(&self.spec.index).ok_or_else(|| DataFrameError::ColumnNotFound {
            column: self.spec.index.clone(),
            available: all.schema().fields().iter().map(|f| f.name().clone()).collect(),
        })?;
        let mut out: Vec<ArrayRef> = vec![index.slice(offset, count)];
        match &self.spec.op {
            WindowOp::Shift { periods, columns } => {
                let rows = shifted_rows(all.num_rows(), offset, count, *periods);
                for c in columns {
                    let values = column(all, c)?;
                    out.push(take(&values, &rows, None).map_err(|e| DataFrameError::compute("shift", e))?);
                }
            }
            WindowOp::Diff { periods, columns } => {
                let rows = shifted_rows(all.num_rows(), offset, count, *periods);
                for c in columns {
                    let values = floats(&column(all, c)?, "diff")?;
                    let diffs: Float64Array = (0..count)
                        .map(|i| {
                            let other = rows.is_valid(i).then(|| values[rows.value(i) as usize]).flatten()?;
                            Some(values[offset + i]? - other)
                        })
                        .collect();
                    out.push(Arc::new(diffs));
                }
            }
            WindowOp::Rolling { reach, min_periods, aggs, .. } => {
                let starts = window_starts(all, &self.spec.index, *reach, offset, count)?;
                for item in aggs {
                    let values = floats(&item.input.evaluate(all)?, "rolling")?;
                    out.push(Arc::new(rolling(&values, &starts, offset, item.func, *min_periods as usize)));
                }
            }
        }
        RecordBatch::try_new(self.spec.output.0.clone(), out).map_err(|e| DataFrameError::compute("window", e))
    }
}

fn column(batch: &RecordBatch, name: &str) -> Result<ArrayRef> {
    batch.column_by_name(name).cloned().ok_or_else(|| DataFrameError::ColumnNotFound {
        column: name.to_string(),
        available: batch.schema().fields().iter().map(|f| f.name().clone()).collect(),
    })
}

/// For each output row, the row `periods` before it in `all` (missing outside).
fn shifted_rows(len: usize, offset: usize, count: usize, periods: i64) -> UInt32Array {
    (0..count)
        .map(|i| {
            // In i128: a shift by i64::MIN rows is no row, not an overflow.
            let source = (offset + i) as i128 - i128::from(periods);
            (0..len as i128).contains(&source).then_some(source as u32)
        })
        .collect()
}

/// The first row of each output row's window (`offset + i` is the row itself).
fn window_starts(all: &RecordBatch, index: &str, reach: Reach, offset: usize, count: usize) -> Result<Vec<usize>> {
    match reach {
        Reach::Rows(n) => Ok((offset..offset + count).map(|i| (i + 1).saturating_sub(n as usize)).collect()),
        Reach::Span(span) => {
            let ns = index_ns(all, index)?;
            if ns.null_count() > 0 {
                return Err(DataFrameError::InvalidArgument(format!(
                    "rolling over a time span: the index {index:?} has missing values"
                )));
            }
            let mut start = 0;
            Ok((offset..offset + count)
                .map(|i| {
                    let t = ns.value(i);
                    // Saturating: a span of centuries before a date before 1970 reaches past i64.
                    while start < i && ns.value(start) <= t.saturating_sub(span) {
                        start += 1;
                    }
                    start
                })
                .collect())
        }
    }
}

/// Kahan-compensated running sum, with values added and removed as the window slides.
#[derive(Default)]
struct RunningSum {
    sum: f64,
    compensation: f64,
}

impl RunningSum {
    fn add(&mut self, x: f64) {
        let y = x - self.compensation;
        let t = self.sum + y;
        self.compensation = (t - self.sum) - y;
        self.sum = t;
    }
}

/// `func` over the window `[starts[i], offset + i]` of each output row `i`, with `min_periods`
/// present values needed (rows, for `count`), as pandas' rolling aggregations.
fn rolling(values: &[Option<f64>], starts: &[usize], offset: usize, func: AggFunc, min_periods: usize) -> Float64Array {
    let mut sum = RunningSum::default();
    let (mut nobs, mut mean, mut ssqdm) = (0usize, 0f64, 0f64);
    let mut deque: std::collections::VecDeque<usize> = std::collections::VecDeque::new();
    let (mut lo, mut hi) = (starts.first().copied().unwrap_or(0), starts.first().copied().unwrap_or(0));
    let mut out = Vec::with_capacity(starts.len());
    let largest = func == AggFunc::Max;
    // As pandas: a window whose present values are all the latest repeated value has a
    // variance of exactly 0, not the rounding error the sliding update leaves.
    let (mut previous, mut repeated) = (None::<f64>, 0usize);
    for (i, &start) in starts.iter().enumerate() {
        let end = offset + i + 1;
        while hi < end {
            if let Some(x) = values[hi] {
                sum.add(x);
                nobs += 1;
                repeated = if previous == Some(x) { repeated + 1 } else { 1 };
                previous = Some(x);
                let delta = x - mean;
                mean += delta / nobs as f64;
                ssqdm += (nobs as f64 - 1.0) * delta * delta / nobs as f64;
                while deque.back().is_some_and(|&b| {
                    let v = values[b].unwrap_or(f64::NAN);
                    if largest { v <= x } else { v >= x }
                }) {
                    deque.pop_back();
                }
                deque.push_back(hi);
            }
            hi += 1;
        }
        while lo < start {
            if let Some(x) = values[lo] {
                sum.add(-x);
                nobs -= 1;
                if nobs > 0 {
                    let delta = x - mean;
                    mean -= delta / nobs as f64;
                    ssqdm -= (nobs as f64 + 1.0) * delta * delta / nobs as f64;
                } else {
                    (mean, ssqdm) = (0.0, 0.0);
                    sum = RunningSum::default();
                }
            }
            while deque.front().is_some_and(|&f| f <= lo) {
                deque.pop_front();
            }
            lo += 1;
        }
        let rows = end - start;
        let enough = nobs >= min_periods && nobs > 0;
        out.push(match func {
            AggFunc::Count => (rows >= min_periods).then_some(nobs as f64),
            AggFunc::Sum => (nobs >= min_periods).then_some(if nobs == 0 { 0.0 } else { sum.sum }),
            AggFunc::Mean => enough.then(|| sum.sum / nobs as f64),
            AggFunc::Min | AggFunc::Max => enough.then(|| deque.front().and_then(|&f| values[f])).flatten(),
            AggFunc::Var { ddof } | AggFunc::Std { ddof } => {
                let ddof = ddof as usize;
                (enough && nobs > ddof).then(|| {
                    let var = if nobs == 1 || repeated >= nobs { 0.0 } else { (ssqdm / (nobs - ddof) as f64).max(0.0) };
                    if matches!(func, AggFunc::Std { .. }) { var.sqrt() } else { var }
                })
            }
            // Rejected by `Rolling::agg` before any window runs.
            AggFunc::Size
            | AggFunc::First
            | AggFunc::Last
            | AggFunc::Nunique
            | AggFunc::Unique
            | AggFunc::Any
            | AggFunc::All => Some(rows as f64),
        });
    }
    Float64Array::from(out)
}

/// A window step's tasks: the input's partitions, chains carrying rows from before (and after)
/// each one, one window task per partition.
pub(crate) fn lower_window(
    input: &Frame,
    spec: &WindowSpec,
    token: u128,
    builder: &mut GraphBuilder,
) -> std::result::Result<Vec<TaskId>, GraphError> {
    let parts = lower_frame(input, Some(spec.columns_read()), &|_| Terminal::Batch, builder)?;
    let (before, after) = spec.context();
    let n = parts.len();
    let mut tails: Vec<Option<TaskId>> = vec![None; n];
    if let Some(reach) = before {
        let name = stage("window-tail", token);
        let mut previous: Option<TaskId> = None;
        for (j, &part) in parts.iter().enumerate().take(n.saturating_sub(1)) {
            let k = kernel(CarryKernel { index: spec.index.clone(), reach, tail: true });
            let mut args = vec![Arg::Task(part)];
            args.extend(previous.map(Arg::Task));
            let id = builder.add(Key::from_shared(&name, &[j as u32]), k, args)?;
            previous = Some(id);
            tails[j + 1] = Some(id);
        }
    }
    let mut heads: Vec<Option<TaskId>> = vec![None; n];
    if let Some(rows) = after {
        let name = stage("window-head", token);
        let mut next: Option<TaskId> = None;
        for j in (1..n).rev() {
            let k = kernel(CarryKernel { index: spec.index.clone(), reach: Reach::Rows(rows), tail: false });
            let mut args = vec![Arg::Task(parts[j])];
            args.extend(next.map(Arg::Task));
            let id = builder.add(Key::from_shared(&name, &[j as u32]), k, args)?;
            next = Some(id);
            heads[j - 1] = Some(id);
        }
    }
    let name = stage("window", token);
    (0..n)
        .map(|j| {
            let k = WindowKernel { spec: spec.clone(), before: tails[j].is_some(), after: heads[j].is_some() };
            let mut args = vec![Arg::Task(parts[j])];
            args.extend(tails[j].map(Arg::Task));
            args.extend(heads[j].map(Arg::Task));
            builder.add(Key::from_shared(&name, &[j as u32]), kernel(k), args)
        })
        .collect()
}
