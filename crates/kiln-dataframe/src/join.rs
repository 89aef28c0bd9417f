//! The hash join of two partitions, with pandas' `merge` semantics:
//!
//! - keys are compared after casting both sides to a common type (integers of any width meet
//!   as `int64`, an integer and a float as `float64`), row-encoded with `arrow-row`;
//! - **missing keys match missing keys** (and NaN is missing), as pandas merges them — unlike
//!   SQL, where a null never matches;
//! - rows come out in pandas' order for one partition: `inner`, `left`, `semi`, `anti` in the
//!   left rows' order (each left row's matches in the right rows' order), `right` in the right
//!   rows' order, `outer` sorted by the key (missing keys last), ties in left-then-right order;
//! - a key column shared by name (`on`) appears once, filled from whichever side has the row;
//!   other columns present on both sides get the suffixes (`_x`, `_y` by default);
//! - `semi` and `anti` return the left columns only (the left rows with, or without, a match;
//!   pandas' `left_anti` adds the right columns, all missing).
//!
//! The build side is hashed into a table of row indices (`hashbrown`, keys as encoded bytes);
//! the other side probes it in order.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, UInt32Array};
use arrow::compute::{cast, take};
use arrow::datatypes::{DataType, Field, Schema};
use hashbrown::HashMap;
use kiln_graph::TaskError;
use kiln_graph::Value;
use kiln_graph::kernel::{PortableKernel, input};
use serde::{Deserialize, Serialize};

use crate::error::{DataFrameError, Result};
use crate::lower::SerdeSchema;
use crate::shuffle::{key_columns, key_rows};

/// Which rows a merge keeps (pandas' `how`, plus `semi` and `anti`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum How {
    /// Rows whose key is on both sides.
    Inner,
    /// Every left row, with its matches or missing values.
    Left,
    /// Every right row, with its matches or missing values.
    Right,
    /// Every row of both sides.
    Outer,
    /// The left rows that have a match (left columns only).
    Semi,
    /// The left rows that have no match (left columns only).
    Anti,
}

impl How {
    /// The name used in `explain` and errors.
    pub fn name(self) -> &'static str {
        match self {
            How::Inner => "inner",
            How::Left => "left",
            How::Right => "right",
            How::Outer => "outer",
            How::Semi => "semi",
            How::Anti => "anti",
        }
    }
}

/// Where an output column of a merge comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum OutColumn {
    /// A left column (by name).
    Left(String),
    /// A right column (by name).
    Right(String),
    /// A key shared by name: key number `i`, from the left row when there is one, else the
    /// right row.
    Key(usize),
}

/// Everything a join task needs: the keys on each side (names, and the common types they are
/// compared as), and the output columns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct MergeSpec {
    pub(crate) how: How,
    /// The left keys, with the common types.
    pub(crate) left_keys: SerdeSchema,
    /// The right keys, with the common types.
    pub(crate) right_keys: SerdeSchema,
    pub(crate) columns: Vec<OutColumn>,
    pub(crate) output: SerdeSchema,
}

/// The type both sides' keys are compared as, or `None` when they cannot be compared.
pub(crate) fn common_key_type(left: &DataType, right: &DataType) -> Option<DataType> {
    let string = |t: &DataType| matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
    if left == right {
        Some(crate::shuffle::hash_type(left))
    } else if left.is_integer() && right.is_integer() {
        Some(DataType::Int64)
    } else if (left.is_integer() || left.is_floating()) && (right.is_integer() || right.is_floating()) {
        Some(DataType::Float64)
    } else if string(left) && string(right) {
        Some(DataType::Utf8)
    } else {
        None
    }
}

fn fail(context: &str) -> impl Fn(arrow::error::ArrowError) -> DataFrameError + '_ {
    move |e| DataFrameError::compute(context, e)
}

/// Matched row pairs: `left[i]`, `right[i]` (`None`: no row on that side).
struct Pairs {
    left: Vec<Option<u32>>,
    right: Vec<Option<u32>>,
}

/// The build side of a hash join: the rows of each distinct key, in row order, laid end to
/// end in one array (one allocation, not one per key).
struct Table<'a> {
    groups: HashMap<&'a [u8], u32, rustc_hash::FxBuildHasher>,
    /// Group `g`'s rows are `rows[offsets[g]..offsets[g + 1]]`.
    offsets: Vec<u32>,
    rows: Vec<u32>,
}

impl<'a> Table<'a> {
    fn build(keys: &'a arrow::row::Rows) -> Table<'a> {
        let mut groups: HashMap<&[u8], u32, rustc_hash::FxBuildHasher> =
            HashMap::with_capacity_and_hasher(keys.num_rows(), Default::default());
        let mut ids = Vec::with_capacity(keys.num_rows());
        let mut counts: Vec<u32> = Vec::new();
        for row in keys.iter() {
            let next = counts.len() as u32;
            let id = *groups.entry(row.data()).or_insert(next);
            if id == next {
                counts.push(0);
            }
            counts[id as usize] += 1;
            ids.push(id);
        }
        let mut offsets = Vec::with_capacity(counts.len() + 1);
        let mut total = 0u32;
        offsets.push(0);
        for c in &counts {
            total += c;
            offsets.push(total);
        }
        // A counting sort of the rows by group keeps each group's rows in row order.
        let mut fill: Vec<u32> = offsets[..counts.len()].to_vec();
        let mut rows = vec![0u32; ids.len()];
        for (row, &id) in ids.iter().enumerate() {
            rows[fill[id as usize] as usize] = row as u32;
            fill[id as usize] += 1;
        }
        Table { groups, offsets, rows }
    }

    fn get(&self, key: &[u8]) -> Option<&[u32]> {
        self.groups
            .get(key)
            .map(|&g| &self.rows[self.offsets[g as usize] as usize..self.offsets[g as usize + 1] as usize])
    }
}

/// An inner join that builds its table on the left (the smaller side) and probes with the
/// right, then orders the pairs as probing with the left would (by left row, then right row),
/// which is pandas' order.
fn inner_build_left(left_rows: &arrow::row::Rows, right_rows: &arrow::row::Rows) -> Pairs {
    let table = Table::build(left_rows);
    let mut pairs: Vec<u64> = Vec::new();
    for (r, row) in right_rows.iter().enumerate() {
        if let Some(ls) = table.get(row.data()) {
            pairs.extend(ls.iter().map(|&l| (u64::from(l) << 32) | r as u64));
        }
    }
    pairs.sort_unstable();
    Pairs {
        left: pairs.iter().map(|p| Some((p >> 32) as u32)).collect(),
        right: pairs.iter().map(|p| Some(*p as u32)).collect(),
    }
}

/// Joins two partitions.
pub(crate) fn hash_join(spec: &MergeSpec, left: &RecordBatch, right: &RecordBatch) -> Result<RecordBatch> {
    let left_keys = key_columns(left, &spec.left_keys.0)?;
    let right_keys = key_columns(right, &spec.right_keys.0)?;
    let left_rows = key_rows(&left_keys)?;
    let right_rows = key_rows(&right_keys)?;
    let mut pairs = Pairs { left: Vec::new(), right: Vec::new() };
    match spec.how {
        // The table is built on the smaller side: building costs more per row than probing.
        How::Inner if left.num_rows() < right.num_rows() => pairs = inner_build_left(&left_rows, &right_rows),
        How::Inner | How::Left | How::Outer | How::Semi | How::Anti => {
            let table = Table::build(&right_rows);
            let mut matched_right = vec![false; if spec.how == How::Outer { right.num_rows() } else { 0 }];
            for (l, row) in left_rows.iter().enumerate() {
                let matches = table.get(row.data());
                match spec.how {
                    How::Semi | How::Anti => {
                        if matches.is_some() == (spec.how == How::Semi) {
                            pairs.left.push(Some(l as u32));
                        }
                    }
                    _ => match matches {
                        Some(rs) => {
                            for &r in rs {
                                pairs.left.push(Some(l as u32));
                                pairs.right.push(Some(r));
                                if let Some(seen) = matched_right.get_mut(r as usize) {
                                    *seen = true;
                                }
                            }
                        }
                        None if spec.how != How::Inner => {
                            pairs.left.push(Some(l as u32));
                            pairs.right.push(None);
                        }
                        None => {}
                    },
                }
            }
            if spec.how == How::Outer {
                for (r, _) in matched_right.iter().enumerate().filter(|(_, seen)| !**seen) {
                    pairs.left.push(None);
                    pairs.right.push(Some(r as u32));
                }
                // pandas sorts an outer merge by the key, missing keys last; ties keep the order
                // above (a stable sort over the encoded keys, which order as the values do).
                let key_of = |i: usize| match (pairs.left[i], pairs.right[i]) {
                    (Some(l), _) => left_rows.row(l as usize),
                    (None, Some(r)) => right_rows.row(r as usize),
                    (None, None) => unreachable!("a pair has a row on one side at least"),
                };
                let mut order: Vec<usize> = (0..pairs.left.len()).collect();
                order.sort_by(|&a, &b| key_of(a).cmp(&key_of(b)));
                pairs = Pairs {
                    left: order.iter().map(|&i| pairs.left[i]).collect(),
                    right: order.iter().map(|&i| pairs.right[i]).collect(),
                };
            }
        }
        How::Right => {
            let table = Table::build(&left_rows);
            for (r, row) in right_rows.iter().enumerate() {
                match table.get(row.data()) {
                    Some(ls) => {
                        for &l in ls {
                            pairs.left.push(Some(l));
                            pairs.right.push(Some(r as u32));
                        }
                    }
                    None => {
                        pairs.left.push(None);
                        pairs.right.push(Some(r as u32));
                    }
                }
            }
        }
    }
    gather(spec, left, right, &left_keys, &right_keys, &pairs)
}

fn gather(
    spec: &MergeSpec,
    left: &RecordBatch,
    right: &RecordBatch,
    left_keys: &[ArrayRef],
    right_keys: &[ArrayRef],
    pairs: &Pairs,
) -> Result<RecordBatch> {
    let left_index = UInt32Array::from(pairs.left.clone());
    let right_index = UInt32Array::from(pairs.right.clone());
    let column = |batch: &RecordBatch, name: &str| {
        batch.column_by_name(name).cloned().ok_or_else(|| DataFrameError::ColumnNotFound {
            column: name.to_string(),
            available: batch.schema().fields().iter().map(|f| f.name().clone()).collect(),
        })
    };
    let output = &spec.output.0;
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(spec.columns.len());
    for (out, field) in spec.columns.iter().zip(output.fields()) {
        let array = match out {
            OutColumn::Left(name) => take(&column(left, name)?, &left_index, None).map_err(fail("merge"))?,
            OutColumn::Right(name) => take(&column(right, name)?, &right_index, None).map_err(fail("merge"))?,
            OutColumn::Key(i) => {
                let (Some(l), Some(r)) = (left_keys.get(*i), right_keys.get(*i)) else {
                    return Err(DataFrameError::compute("merge", format!("key {i} is out of range")));
                };
                let from_left = take(l, &left_index, None).map_err(fail("merge"))?;
                let from_right = take(r, &right_index, None).map_err(fail("merge"))?;
                let has_left: BooleanArray = pairs.left.iter().map(|l| Some(l.is_some())).collect();
                arrow::compute::kernels::zip::zip(&has_left, &from_left, &from_right).map_err(fail("merge"))?
            }
        };
        let array = if array.data_type() == field.data_type() {
            array
        } else {
            cast(&array, field.data_type()).map_err(fail("merge"))?
        };
        arrays.push(array);
    }
    let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(pairs.left.len()));
    RecordBatch::try_new_with_options(output.clone(), arrays, &options).map_err(fail("merge"))
}

impl MergeSpec {
    /// The merge reduced to the output columns in `wanted` (the others are never built), and
    /// the columns it then reads from each side: the keys and the kept columns.
    pub(crate) fn pruned(&self, wanted: &[String]) -> (MergeSpec, Vec<String>, Vec<String>) {
        let names = |keys: &SerdeSchema| keys.0.fields().iter().map(|f| f.name().clone()).collect::<Vec<_>>();
        let (mut left, mut right) = (names(&self.left_keys), names(&self.right_keys));
        let mut columns = Vec::new();
        let mut fields = Vec::new();
        for (column, field) in self.columns.iter().zip(self.output.0.fields()) {
            if !wanted.contains(field.name()) {
                continue;
            }
            match column {
                OutColumn::Left(name) if !left.contains(name) => left.push(name.clone()),
                OutColumn::Right(name) if !right.contains(name) => right.push(name.clone()),
                _ => {}
            }
            columns.push(column.clone());
            fields.push(field.as_ref().clone());
        }
        let spec = MergeSpec { columns, output: SerdeSchema(Arc::new(Schema::new(fields))), ..self.clone() };
        (spec, left, right)
    }
}

/// The output columns and schema of a merge, or an error naming what does not fit.
pub(crate) fn plan_merge(
    how: How,
    left: &Schema,
    right: &Schema,
    left_on: &[String],
    right_on: &[String],
    suffixes: (&str, &str),
) -> Result<MergeSpec> {
    if left_on.is_empty() || left_on.len() != right_on.len() {
        return Err(DataFrameError::InvalidArgument(format!(
            "merge needs as many left keys as right keys, at least one (got {left_on:?} and {right_on:?})"
        )));
    }
    let find = |schema: &Schema, name: &str| {
        schema.field_with_name(name).map(|f| f.data_type().clone()).map_err(|_| DataFrameError::ColumnNotFound {
            column: name.to_string(),
            available: schema.fields().iter().map(|f| f.name().clone()).collect(),
        })
    };
    let mut left_keys = Vec::new();
    let mut right_keys = Vec::new();
    for (l, r) in left_on.iter().zip(right_on) {
        let (lt, rt) = (find(left, l)?, find(right, r)?);
        let common = common_key_type(&lt, &rt).ok_or_else(|| DataFrameError::TypeMismatch {
            operation: "merge".into(),
            expression: format!("left key {l:?} = right key {r:?}"),
            found: lt.clone(),
            expected: format!("a key comparable with the right key's type {rt}"),
        })?;
        left_keys.push(Field::new(l, common.clone(), true));
        right_keys.push(Field::new(r, common, true));
    }
    // Keys with one name on both sides are one column; other names on both sides get suffixes.
    let shared: Vec<usize> = (0..left_on.len()).filter(|&i| left_on[i] == right_on[i]).collect();
    let is_shared_left = |name: &str| shared.iter().any(|&i| left_on[i] == name);
    let is_shared_right = |name: &str| shared.iter().any(|&i| right_on[i] == name);
    let both =
        |name: &str| left.field_with_name(name).is_ok() && right.field_with_name(name).is_ok() && !is_shared_left(name);
    let mut columns = Vec::new();
    let mut fields = Vec::new();
    for f in left.fields() {
        let name = f.name();
        if let Some(i) = shared.iter().copied().find(|&i| left_on[i] == *name) {
            let common = left_keys[i].data_type().clone();
            let dtype = if matches!(how, How::Semi | How::Anti) { f.data_type().clone() } else { common };
            columns.push(if matches!(how, How::Semi | How::Anti) {
                OutColumn::Left(name.clone())
            } else {
                OutColumn::Key(i)
            });
            fields.push(Field::new(name, dtype, true));
        } else {
            let out = if both(name) && !matches!(how, How::Semi | How::Anti) {
                format!("{name}{}", suffixes.0)
            } else {
                name.clone()
            };
            columns.push(OutColumn::Left(name.clone()));
            fields.push(Field::new(out, f.data_type().clone(), true));
        }
    }
    if !matches!(how, How::Semi | How::Anti) {
        for f in right.fields() {
            let name = f.name();
            if is_shared_right(name) {
                continue;
            }
            let out = if both(name) { format!("{name}{}", suffixes.1) } else { name.clone() };
            columns.push(OutColumn::Right(name.clone()));
            fields.push(Field::new(out, f.data_type().clone(), true));
        }
    }
    for (i, f) in fields.iter().enumerate() {
        if fields[..i].iter().any(|g| g.name() == f.name()) {
            return Err(DataFrameError::InvalidArgument(format!(
                "merge would give two columns named {:?}; choose other suffixes",
                f.name()
            )));
        }
    }
    Ok(MergeSpec {
        how,
        left_keys: SerdeSchema(Arc::new(Schema::new(left_keys))),
        right_keys: SerdeSchema(Arc::new(Schema::new(right_keys))),
        columns,
        output: SerdeSchema(Arc::new(Schema::new(fields))),
    })
}

/// Joins its two inputs (a left and a right partition).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct JoinKernel {
    pub(crate) spec: MergeSpec,
}

impl PortableKernel for JoinKernel {
    const ID: &'static str = "kiln.dataframe.merge.join";
    fn name(&self) -> &str {
        "merge"
    }
    fn call(&self, inputs: &[Value]) -> std::result::Result<Value, TaskError> {
        let left = input::<RecordBatch>(inputs, 0)?;
        let right = input::<RecordBatch>(inputs, 1)?;
        hash_join(&self.spec, left, right).map(Value::new).map_err(|e| TaskError::Failed(e.to_string()))
    }
}
