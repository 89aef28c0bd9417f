//! Grouped aggregation on partitions: hash grouping (one or two string or integer keys numbered
//! directly; other keys row-encoded with `arrow-row`, so any number and type of key columns hash
//! as bytes), per-group partial states, their combination
//! and the final values. A global reduction is a group-by without keys: one group, present
//! even when there are no rows, so `sum` of nothing is 0 and `mean` of nothing is missing.
//!
//! Partial states are record batches (key columns, then each aggregation's state columns), so
//! they travel between processes with the same codec as partitions:
//!
//! | function | state columns |
//! |---|---|
//! | `size`, `count` | rows / non-missing values (`int64`) |
//! | `sum` | the sum (`int64` for integers and booleans, `float64` for floats) |
//! | `min`, `max` | the best value so far (the input's type) |
//! | `mean` | count, sum of the present values |
//! | `var`, `std` | count, mean, sum of squared deviations (Chan et al.'s parallel form) |
//! | `first`, `last` | the first / last present value so far (the input's type) |
//! | `nunique` | the distinct present values so far (a list; its length is the result) |
//! | `unique` | the distinct values so far in order of first appearance, missing ones as one (a list) |
//! | `any`, `all` | whether any / all present values so far are true (`boolean`) |
//!
//! `first` and `last` rely on every combine taking its partial states in row order (partition
//! order, which the tree and the shuffle's concatenation keep), so the first present value of
//! the concatenated states is the group's first. The `nunique` state holds every distinct value
//! of a group, so it suits groups of moderate cardinality: a column of millions of distinct
//! values per group moves all of them to the combining task.
//!
//! A partial aggregation can run through a filter's mask ([`partial_masked`]): rows the mask
//! does not keep belong to no group, so a filter that keeps most rows need not copy them.
//!
//! Missing values (nulls, and NaN in floats) are skipped, as pandas does with `skipna=True`;
//! rows whose key is missing are dropped (`dropna=True`).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, RecordBatch, UInt32Array};
use arrow::buffer::BooleanBuffer;
use arrow::compute::{SortColumn, cast, concat_batches, lexsort_to_indices, take};
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, SchemaRef};
use arrow::row::{RowConverter, SortField};
use hashbrown::HashMap;
use serde::{Deserialize, Serialize};

use crate::error::{DataFrameError, Result};
use crate::expr::Expr;

/// An aggregation function of a group-by or reduction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AggFunc {
    /// The sum of the values (0 for none).
    Sum,
    /// How many values are not missing.
    Count,
    /// The mean (missing for no values).
    Mean,
    /// The smallest value.
    Min,
    /// The largest value.
    Max,
    /// The variance with `ddof` delta degrees of freedom (pandas' default is 1).
    Var {
        /// Delta degrees of freedom: the divisor is `n - ddof`.
        ddof: u32,
    },
    /// The standard deviation with `ddof` delta degrees of freedom.
    Std {
        /// Delta degrees of freedom: the divisor is `n - ddof`.
        ddof: u32,
    },
    /// How many rows the group has, missing values included.
    Size,
    /// The first present value in row order (pandas' `first()`: missing values skipped).
    First,
    /// The last present value in row order (pandas' `last()`).
    Last,
    /// How many distinct present values (pandas' `nunique()`: NaN is not counted, `-0.0`
    /// equals `0.0`).
    Nunique,
    /// The distinct values in order of first appearance, as a list (pandas' `unique()`):
    /// missing values (null and NaN alike) appear once, as the first of them; `-0.0` equals
    /// `0.0`, the first of them kept.
    Unique,
    /// Whether any present value is true (false for none; booleans only).
    Any,
    /// Whether every present value is true (true for none; booleans only).
    All,
}

impl AggFunc {
    /// The pandas name of the function.
    pub fn name(self) -> &'static str {
        match self {
            AggFunc::Sum => "sum",
            AggFunc::Count => "count",
            AggFunc::Mean => "mean",
            AggFunc::Min => "min",
            AggFunc::Max => "max",
            AggFunc::Var { .. } => "var",
            AggFunc::Std { .. } => "std",
            AggFunc::Size => "size",
            AggFunc::First => "first",
            AggFunc::Last => "last",
            AggFunc::Nunique => "nunique",
            AggFunc::Unique => "unique",
            AggFunc::Any => "any",
            AggFunc::All => "all",
        }
    }

    fn state_width(self) -> usize {
        match self {
            AggFunc::Var { .. } | AggFunc::Std { .. } => 4,
            AggFunc::Mean => 2,
            _ => 1,
        }
    }

    /// The type of the result for an input of type `input`, or `None` when the function does
    /// not apply to it.
    pub fn output_type(self, input: &DataType) -> Option<DataType> {
        let numeric = input.is_integer() || input.is_floating() || *input == DataType::Boolean;
        match self {
            AggFunc::Size | AggFunc::Count => Some(DataType::Int64),
            AggFunc::Sum if input.is_floating() => Some(DataType::Float64),
            AggFunc::Sum if numeric => Some(DataType::Int64),
            AggFunc::Mean | AggFunc::Var { .. } | AggFunc::Std { .. } if numeric => Some(DataType::Float64),
            AggFunc::Min | AggFunc::Max | AggFunc::First | AggFunc::Last if numeric || orderable(input) => {
                Some(input.clone())
            }
            AggFunc::Nunique if numeric || orderable(input) => Some(DataType::Int64),
            AggFunc::Unique if numeric || orderable(input) => {
                Some(DataType::List(Arc::new(Field::new_list_field(input.clone(), true))))
            }
            AggFunc::Any | AggFunc::All if *input == DataType::Boolean => Some(DataType::Boolean),
            _ => None,
        }
    }
}

fn orderable(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Timestamp(_, _)
            | DataType::Date32
            | DataType::Date64
            | DataType::Duration(_)
    )
}

/// One output column of an aggregation: a function of an expression, under a name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct AggItem {
    pub(crate) name: String,
    pub(crate) func: AggFunc,
    pub(crate) input: Expr,
}

/// What a group-by computes: keys (named expressions), aggregations, and the output schema
/// (keys then aggregations) that every stage agrees on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct AggSpec {
    pub(crate) keys: Vec<(String, Expr)>,
    pub(crate) aggs: Vec<AggItem>,
    pub(crate) output: crate::lower::SerdeSchema,
    /// Groups in order of their first row instead of sorted by key (pandas' `sort=False`;
    /// right through a tree, whose combines take the partials in partition order).
    #[serde(default)]
    pub(crate) first_seen_order: bool,
}

impl AggSpec {
    /// The input columns the keys and aggregations read.
    pub(crate) fn columns_read(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (_, e) in &self.keys {
            e.columns_into(&mut out);
        }
        for a in &self.aggs {
            a.input.columns_into(&mut out);
        }
        out
    }
}

/// Rows assigned to groups: `ids[row]` is the row's group (`u32::MAX` for a dropped row),
/// `first_rows[g]` the first row of group `g`.
struct Groups {
    ids: Vec<u32>,
    first_rows: Vec<u32>,
}

impl Groups {
    fn len(&self) -> usize {
        self.first_rows.len()
    }
}

const DROPPED: u32 = u32::MAX;

fn fail(context: &str) -> impl Fn(arrow::error::ArrowError) -> DataFrameError + '_ {
    move |e| DataFrameError::compute(context, e)
}

/// Whether row `row` is kept: every row without a mask.
fn kept(keep: Option<&BooleanBuffer>, row: usize) -> bool {
    keep.is_none_or(|k| k.value(row))
}

/// Assigns rows to groups by their key values; without keys every row is in group 0, which
/// exists even when there are no rows. Rows `keep` does not keep are in no group (and make
/// none).
fn group_rows(keys: &[ArrayRef], num_rows: usize, keep: Option<&BooleanBuffer>) -> Result<Groups> {
    if keys.is_empty() {
        let ids = match keep {
            None => vec![0; num_rows],
            Some(k) => k.iter().map(|kept| if kept { 0 } else { DROPPED }).collect(),
        };
        return Ok(Groups { ids, first_rows: vec![0] });
    }
    if let Some(groups) = group_rows_by_ids(keys, keep) {
        return Ok(groups);
    }
    let fields = keys.iter().map(|k| SortField::new(k.data_type().clone())).collect();
    let converter = RowConverter::new(fields).map_err(fail("grouping keys"))?;
    // pandas groups -0.0 with 0.0, which the row encoding tells apart; a group still shows
    // its first row's key.
    let normalized: Vec<ArrayRef> = keys.iter().map(|k| crate::shuffle::normalize_floats(k.clone())).collect();
    let rows = converter.convert_columns(&normalized).map_err(fail("grouping keys"))?;
    // A NaN key is missing too, as in pandas.
    let present: Vec<Vec<bool>> = keys.iter().map(present).collect::<Result<_>>()?;
    let mut index: HashMap<&[u8], u32, rustc_hash::FxBuildHasher> = HashMap::with_hasher(Default::default());
    let mut ids = Vec::with_capacity(num_rows);
    let mut first_rows = Vec::new();
    for row in 0..num_rows {
        if !kept(keep, row) || present.iter().any(|p| !p[row]) {
            ids.push(DROPPED);
            continue;
        }
        let next = first_rows.len() as u32;
        let id = *index.entry(rows.row(row).data()).or_insert_with(|| {
            first_rows.push(row as u32);
            next
        });
        ids.push(id);
    }
    Ok(Groups { ids, first_rows })
}

/// Each row's key as a dense number (in order of first appearance) for a string or integer
/// key column, `DROPPED` where missing or not kept; `None` for other types.
fn dense_ids(key: &ArrayRef, keep: Option<&BooleanBuffer>) -> Option<Groups> {
    fn number<'a, K: std::hash::Hash + Eq + 'a>(
        values: impl Iterator<Item = Option<K>>,
        len: usize,
        keep: Option<&BooleanBuffer>,
    ) -> Groups {
        let mut index: HashMap<K, u32, rustc_hash::FxBuildHasher> = HashMap::with_hasher(Default::default());
        let mut ids = Vec::with_capacity(len);
        let mut first_rows = Vec::new();
        for (row, value) in values.enumerate() {
            ids.push(match value {
                None => DROPPED,
                Some(_) if !kept(keep, row) => DROPPED,
                Some(v) => {
                    let next = first_rows.len() as u32;
                    *index.entry(v).or_insert_with(|| {
                        first_rows.push(row as u32);
                        next
                    })
                }
            });
        }
        Groups { ids, first_rows }
    }
    let len = key.len();
    Some(match key.data_type() {
        DataType::Utf8 => number_string_array(key.as_string::<i32>(), keep),
        DataType::LargeUtf8 => number_string_array(key.as_string::<i64>(), keep),
        DataType::Utf8View => number_strings(key.as_string_view().iter().map(|s| s.map(str::as_bytes)), len, keep),
        DataType::Int64 => number(key.as_primitive::<Int64Type>().iter(), len, keep),
        DataType::Int32 => number(key.as_primitive::<arrow::datatypes::Int32Type>().iter(), len, keep),
        DataType::Date32 => number(key.as_primitive::<arrow::datatypes::Date32Type>().iter(), len, keep),
        DataType::Dictionary(index, _) if **index == DataType::Int32 => {
            number_dictionary(key.as_dictionary::<arrow::datatypes::Int32Type>(), keep)?
        }
        _ => return None,
    })
}

/// [`dense_ids`] for a dictionary-encoded key: its distinct values are numbered once (the
/// dictionary is small, and may repeat a value), then each row's group is two array loads.
/// Groups are numbered in the order of their first kept row, as for a plain key.
fn number_dictionary(
    key: &arrow::array::DictionaryArray<arrow::datatypes::Int32Type>,
    keep: Option<&BooleanBuffer>,
) -> Option<Groups> {
    if key.values().len() > key.len() {
        // A dictionary larger than the rows that use it (a key of many distinct values, read
        // in pieces): numbering it all would cost more than the rows' own values.
        let decoded = cast(key, key.values().data_type()).ok()?;
        return dense_ids(&decoded, keep);
    }
    let values = dense_ids(key.values(), None)?;
    let mut group_of_value = vec![DROPPED; values.len()];
    let nulls = key.keys().nulls().filter(|n| n.null_count() > 0);
    let mut ids = Vec::with_capacity(key.len());
    let mut first_rows = Vec::new();
    for (row, &index) in key.keys().values().iter().enumerate() {
        let value = match usize::try_from(index).ok().and_then(|i| values.ids.get(i)) {
            Some(&v) if v != DROPPED && kept(keep, row) && nulls.is_none_or(|n| n.is_valid(row)) => v,
            _ => {
                ids.push(DROPPED);
                continue;
            }
        };
        let group = &mut group_of_value[value as usize];
        if *group == DROPPED {
            *group = first_rows.len() as u32;
            first_rows.push(row as u32);
        }
        ids.push(*group);
    }
    Some(Groups { ids, first_rows })
}

/// Dense numbers for string keys. Group keys are mostly short codes (flags, states,
/// carriers): a string of up to 7 bytes is packed with its length into one `u64`, so hashing
/// and comparing it never touch its bytes again (or call `memcmp`); longer strings are hashed
/// as bytes. A row with the previous row's short key skips the table.
struct StringNumbering<'a> {
    short: HashMap<u64, u32, rustc_hash::FxBuildHasher>,
    long: HashMap<&'a [u8], u32, rustc_hash::FxBuildHasher>,
    ids: Vec<u32>,
    first_rows: Vec<u32>,
    /// The previous short key and its id (no short key packs to `u64::MAX`: its length byte
    /// is at most 7).
    last: (u64, u32),
}

impl<'a> StringNumbering<'a> {
    fn new(len: usize) -> Self {
        StringNumbering {
            short: HashMap::with_hasher(Default::default()),
            long: HashMap::with_hasher(Default::default()),
            ids: Vec::with_capacity(len),
            first_rows: Vec::new(),
            last: (u64::MAX, DROPPED),
        }
    }

    /// The bytes of a short key (at most 7) in the low bytes, its length in the top one: "a"
    /// and "a\0" differ.
    fn pack(text: &[u8]) -> u64 {
        text.iter().enumerate().fold((text.len() as u64) << 56, |w, (i, &b)| w | (u64::from(b) << (8 * i)))
    }

    fn push_short(&mut self, packed: u64, row: usize) {
        let id = if packed == self.last.0 {
            self.last.1
        } else {
            let next = self.first_rows.len() as u32;
            let first_rows = &mut self.first_rows;
            let id = *self.short.entry(packed).or_insert_with(|| {
                first_rows.push(row as u32);
                next
            });
            self.last = (packed, id);
            id
        };
        self.ids.push(id);
    }

    fn push_long(&mut self, text: &'a [u8], row: usize) {
        let next = self.first_rows.len() as u32;
        let first_rows = &mut self.first_rows;
        let id = *self.long.entry(text).or_insert_with(|| {
            first_rows.push(row as u32);
            next
        });
        self.ids.push(id);
    }

    fn finish(self) -> Groups {
        Groups { ids: self.ids, first_rows: self.first_rows }
    }
}

/// [`dense_ids`] for string keys given one by one (string views).
fn number_strings<'a>(
    values: impl Iterator<Item = Option<&'a [u8]>>,
    len: usize,
    keep: Option<&BooleanBuffer>,
) -> Groups {
    let mut numbering = StringNumbering::new(len);
    for (row, value) in values.enumerate() {
        match value {
            Some(text) if kept(keep, row) => {
                if text.len() <= 7 {
                    numbering.push_short(StringNumbering::pack(text), row);
                } else {
                    numbering.push_long(text, row);
                }
            }
            _ => numbering.ids.push(DROPPED),
        }
    }
    numbering.finish()
}

/// [`dense_ids`] for a string array, read through its offsets: a short key is one load of
/// the eight bytes where it starts, masked to its length.
fn number_string_array<O: arrow::array::OffsetSizeTrait>(
    array: &arrow::array::GenericStringArray<O>,
    keep: Option<&BooleanBuffer>,
) -> Groups {
    let (offsets, data) = (array.value_offsets(), array.value_data());
    let nulls = array.nulls().filter(|n| n.null_count() > 0);
    let mut numbering = StringNumbering::new(array.len());
    for (row, bounds) in offsets.windows(2).enumerate() {
        if nulls.is_some_and(|n| n.is_null(row)) || !kept(keep, row) {
            numbering.ids.push(DROPPED);
            continue;
        }
        let (start, end) = (bounds[0].as_usize(), bounds[1].as_usize());
        let len = end - start;
        if len <= 7 {
            let packed = match data.get(start..start + 8) {
                Some(eight) => {
                    let word = u64::from_le_bytes(eight.try_into().unwrap_or_default());
                    (word & ((1u64 << (8 * len)) - 1)) | ((len as u64) << 56)
                }
                None => StringNumbering::pack(&data[start..end]),
            };
            numbering.push_short(packed, row);
        } else {
            numbering.push_long(&data[start..end], row);
        }
    }
    numbering.finish()
}

/// Groups rows by one or two string or integer keys without row-encoding them: each key
/// column is numbered densely, and two numbers index a table of pairs when few are possible,
/// or else combine into one hashed `u64`. `None` for other keys.
fn group_rows_by_ids(keys: &[ArrayRef], keep: Option<&BooleanBuffer>) -> Option<Groups> {
    match keys {
        [one] => dense_ids(one, keep),
        [a, b] => {
            // Each column numbered over the kept rows only, so no number stands for a
            // combination no kept row has.
            let (a, b) = (dense_ids(a, keep)?, dense_ids(b, keep)?);
            let mut ids = Vec::with_capacity(a.ids.len());
            let mut first_rows = Vec::new();
            // Few pairs possible (flags by status, say): a table indexed by both numbers.
            if a.len().saturating_mul(b.len()) <= PAIR_TABLE {
                let mut table = vec![DROPPED; a.len() * b.len()];
                for (row, (&x, &y)) in a.ids.iter().zip(&b.ids).enumerate() {
                    if x == DROPPED || y == DROPPED {
                        ids.push(DROPPED);
                        continue;
                    }
                    let slot = &mut table[x as usize * b.len() + y as usize];
                    if *slot == DROPPED {
                        *slot = first_rows.len() as u32;
                        first_rows.push(row as u32);
                    }
                    ids.push(*slot);
                }
                return Some(Groups { ids, first_rows });
            }
            let mut index: HashMap<u64, u32, rustc_hash::FxBuildHasher> = HashMap::with_hasher(Default::default());
            for (row, (&x, &y)) in a.ids.iter().zip(&b.ids).enumerate() {
                if x == DROPPED || y == DROPPED {
                    ids.push(DROPPED);
                    continue;
                }
                let next = first_rows.len() as u32;
                ids.push(*index.entry((u64::from(x) << 32) | u64::from(y)).or_insert_with(|| {
                    first_rows.push(row as u32);
                    next
                }));
            }
            Some(Groups { ids, first_rows })
        }
        _ => None,
    }
}

/// The most pairs of two keys' numbers [`group_rows_by_ids`] numbers through a table instead of
/// a hash map (64 KiB of table).
const PAIR_TABLE: usize = 1 << 14;

/// Whether the value at each row counts: not null and, for floats, not NaN.
fn present(values: &ArrayRef) -> Result<Vec<bool>> {
    if values.data_type().is_floating() {
        let floats = cast(values, &DataType::Float64).map_err(fail("checking for NaN"))?;
        let floats = floats.as_primitive::<Float64Type>();
        Ok((0..floats.len()).map(|i| floats.is_valid(i) && !floats.value(i).is_nan()).collect())
    } else {
        Ok((0..values.len()).map(|i| values.is_valid(i)).collect())
    }
}

fn grouped_size(groups: &Groups) -> ArrayRef {
    let mut sizes = vec![0i64; groups.len()];
    for &g in groups.ids.iter().filter(|&&g| g != DROPPED) {
        sizes[g as usize] += 1;
    }
    Arc::new(Int64Array::from(sizes))
}

fn grouped_count(values: &ArrayRef, groups: &Groups) -> Result<ArrayRef> {
    let present = present(values)?;
    let mut counts = vec![0i64; groups.len()];
    for (&g, _) in groups.ids.iter().zip(&present).filter(|(g, p)| **g != DROPPED && **p) {
        counts[g as usize] += 1;
    }
    Ok(Arc::new(Int64Array::from(counts)))
}

/// `add(group, value)` for every row in a group whose float value is present (not null, not
/// NaN); without nulls the values are walked alongside the group ids, with no test per row.
fn each_present_float(floats: &Float64Array, groups: &Groups, mut add: impl FnMut(usize, f64)) {
    let values = floats.values();
    match floats.nulls().filter(|n| n.null_count() > 0) {
        None => {
            for (&g, &x) in groups.ids.iter().zip(values.iter()) {
                if g != DROPPED && !x.is_nan() {
                    add(g as usize, x);
                }
            }
        }
        Some(nulls) => {
            for ((&g, &x), valid) in groups.ids.iter().zip(values.iter()).zip(nulls.iter()) {
                if g != DROPPED && valid && !x.is_nan() {
                    add(g as usize, x);
                }
            }
        }
    }
}

fn grouped_sum(values: &ArrayRef, groups: &Groups) -> Result<ArrayRef> {
    if values.data_type().is_floating() {
        let floats = cast(values, &DataType::Float64).map_err(fail("sum"))?;
        let mut sums = vec![0f64; groups.len()];
        each_present_float(floats.as_primitive::<Float64Type>(), groups, |g, x| sums[g] += x);
        Ok(Arc::new(Float64Array::from(sums)))
    } else {
        let ints = cast(values, &DataType::Int64).map_err(fail("sum"))?;
        let ints = ints.as_primitive::<Int64Type>();
        let mut sums = vec![0i64; groups.len()];
        for (row, &g) in groups.ids.iter().enumerate() {
            if g != DROPPED && ints.is_valid(row) {
                // pandas sums int64 with wrap-around too.
                sums[g as usize] = sums[g as usize].wrapping_add(ints.value(row));
            }
        }
        Ok(Arc::new(Int64Array::from(sums)))
    }
}

/// The smallest (or largest) present value of each group, in the input's type; missing for a
/// group without one. Values are compared through their row encoding, so every orderable type
/// takes one path.
fn grouped_best(values: &ArrayRef, groups: &Groups, largest: bool) -> Result<ArrayRef> {
    let present = present(values)?;
    let converter = RowConverter::new(vec![SortField::new(values.data_type().clone())]).map_err(fail("min/max"))?;
    let rows = converter.convert_columns(std::slice::from_ref(values)).map_err(fail("min/max"))?;
    let mut best: Vec<Option<u32>> = vec![None; groups.len()];
    for (row, &g) in groups.ids.iter().enumerate() {
        if g == DROPPED || !present[row] {
            continue;
        }
        let slot = &mut best[g as usize];
        let better = match *slot {
            None => true,
            Some(current) => {
                let ordering = rows.row(row).cmp(&rows.row(current as usize));
                if largest { ordering.is_gt() } else { ordering.is_lt() }
            }
        };
        if better {
            *slot = Some(row as u32);
        }
    }
    let indices = UInt32Array::from(best);
    take(values, &indices, None).map_err(fail("min/max"))
}

/// The first (or last) present value of each group in row order, in the input's type; missing
/// for a group without one. A partial state is such a column too, so combining is the same
/// pass over the states in partition order.
fn grouped_end(values: &ArrayRef, groups: &Groups, last: bool) -> Result<ArrayRef> {
    let present = present(values)?;
    let mut chosen: Vec<Option<u32>> = vec![None; groups.len()];
    for (row, &g) in groups.ids.iter().enumerate() {
        if g == DROPPED || !present[row] {
            continue;
        }
        let slot = &mut chosen[g as usize];
        if last || slot.is_none() {
            *slot = Some(row as u32);
        }
    }
    take(values, &UInt32Array::from(chosen), None).map_err(fail("first/last"))
}

/// Whether any (or, for `all`, every) present value of each group is true: the state and the
/// value of `any`/`all`, never missing (pandas' `skipna=True`).
fn grouped_truth(values: &ArrayRef, groups: &Groups, all: bool, name: &str) -> Result<ArrayRef> {
    let Some(bools) = values.as_boolean_opt() else {
        return Err(DataFrameError::compute(
            if all { "all" } else { "any" },
            format!("{name:?} is {}, expected booleans", values.data_type()),
        ));
    };
    let mut truth = vec![all; groups.len()];
    for (row, &g) in groups.ids.iter().enumerate() {
        if g != DROPPED && bools.is_valid(row) {
            let slot = &mut truth[g as usize];
            *slot = if all { *slot && bools.value(row) } else { *slot || bools.value(row) };
        }
    }
    Ok(Arc::new(BooleanArray::from(truth)))
}

/// The distinct values of each group as a list (in order of first appearance), the state of
/// `nunique` (present values only) and `unique` (with `keep_missing`: one missing value, the
/// first, null or NaN). Values are compared through their row encoding with `-0.0` made
/// `0.0`, as pandas does.
fn grouped_distinct(values: &ArrayRef, groups: &Groups, keep_missing: bool) -> Result<ArrayRef> {
    let present = present(values)?;
    let normalized = crate::shuffle::normalize_floats(values.clone());
    let converter = RowConverter::new(vec![SortField::new(normalized.data_type().clone())]).map_err(fail("nunique"))?;
    let rows = converter.convert_columns(std::slice::from_ref(&normalized)).map_err(fail("nunique"))?;
    let mut seen: hashbrown::HashSet<(u32, &[u8]), rustc_hash::FxBuildHasher> =
        hashbrown::HashSet::with_hasher(Default::default());
    let mut per_group: Vec<Vec<u32>> = vec![Vec::new(); groups.len()];
    let mut missing_seen = vec![false; groups.len()];
    for (row, &g) in groups.ids.iter().enumerate() {
        if g == DROPPED {
            continue;
        }
        let new = if present[row] {
            seen.insert((g, rows.row(row).data()))
        } else {
            keep_missing && !std::mem::replace(&mut missing_seen[g as usize], true)
        };
        if new {
            per_group[g as usize].push(row as u32);
        }
    }
    let mut offsets = Vec::with_capacity(groups.len() + 1);
    offsets.push(0i32);
    let mut indices = Vec::with_capacity(seen.len() + missing_seen.len());
    for rows in &per_group {
        indices.extend_from_slice(rows);
        let end = i32::try_from(indices.len())
            .map_err(|_| DataFrameError::compute("nunique", "more than 2^31 distinct values in one state"))?;
        offsets.push(end);
    }
    let items = take(values, &UInt32Array::from(indices), None).map_err(fail("nunique"))?;
    let field = Arc::new(Field::new_list_field(values.data_type().clone(), true));
    let list = arrow::array::ListArray::try_new(field, arrow::buffer::OffsetBuffer::new(offsets.into()), items, None)
        .map_err(fail("nunique"))?;
    Ok(Arc::new(list))
}

/// A `nunique` or `unique` state column as lists, or an error naming the aggregation (a state from
/// elsewhere may be malformed).
fn distinct_lists<'a>(state: &'a ArrayRef, name: &str) -> Result<&'a arrow::array::ListArray> {
    state.as_list_opt::<i32>().ok_or_else(|| {
        DataFrameError::compute(
            "combining partial aggregations",
            format!("the distinct values of {name:?} are {}, expected a list", state.data_type()),
        )
    })
}

/// Merges `nunique` or `unique` states: the states' values, each in its state's group, made
/// distinct again (the states come in partition order, so first appearances stay first).
fn combine_distinct(state: &ArrayRef, groups: &Groups, name: &str, keep_missing: bool) -> Result<ArrayRef> {
    let lists = distinct_lists(state, name)?;
    let offsets = lists.value_offsets();
    let first = offsets.first().copied().unwrap_or(0) as usize;
    let last = offsets.last().copied().unwrap_or(0) as usize;
    let mut ids = Vec::with_capacity(last - first);
    for (row, &g) in groups.ids.iter().enumerate() {
        let count = (offsets[row + 1] - offsets[row]) as usize;
        ids.extend(std::iter::repeat_n(g, count));
    }
    let flat = Groups { ids, first_rows: groups.first_rows.clone() };
    grouped_distinct(&lists.values().slice(first, last - first), &flat, keep_missing)
}

/// Count, shift, mean and sum of squared deviations of each group: Welford's update on each
/// value minus the group's first value (its *shift*). Values far from zero with a small spread
/// (timestamps as floats, 1e15 + i) keep their precision: the differences are exact, while a
/// mean held as such would round to the values' magnitude and spoil every combine after.
fn grouped_moments(values: &ArrayRef, groups: &Groups) -> Result<[ArrayRef; 4]> {
    let floats = cast(values, &DataType::Float64).map_err(fail("mean/var"))?;
    let floats = floats.as_primitive::<Float64Type>();
    let len = groups.len();
    let (mut n, mut shift, mut mean, mut m2) = (vec![0i64; len], vec![0f64; len], vec![0f64; len], vec![0f64; len]);
    for (row, &g) in groups.ids.iter().enumerate() {
        if g == DROPPED || floats.is_null(row) || floats.value(row).is_nan() {
            continue;
        }
        let (g, x) = (g as usize, floats.value(row));
        if n[g] == 0 {
            shift[g] = x;
        }
        let y = x - shift[g];
        n[g] += 1;
        let delta = y - mean[g];
        mean[g] += delta / n[g] as f64;
        m2[g] += delta * (y - mean[g]);
    }
    Ok([
        Arc::new(Int64Array::from(n)),
        Arc::new(Float64Array::from(shift)),
        Arc::new(Float64Array::from(mean)),
        Arc::new(Float64Array::from(m2)),
    ])
}

/// Count and sum of the present values of each group: the state of `mean`, which needs no
/// more (pandas divides the sum by the count too).
fn grouped_mean(values: &ArrayRef, groups: &Groups) -> Result<[ArrayRef; 2]> {
    let floats = cast(values, &DataType::Float64).map_err(fail("mean"))?;
    let (mut n, mut sum) = (vec![0i64; groups.len()], vec![0f64; groups.len()]);
    each_present_float(floats.as_primitive::<Float64Type>(), groups, |g, x| {
        n[g] += 1;
        sum[g] += x;
    });
    Ok([Arc::new(Int64Array::from(n)), Arc::new(Float64Array::from(sum))])
}

/// Merges (count, sum) states of `mean`: a sum of partial sums that is NaN (infinities of both
/// signs) stays NaN, as the one-pass mean would be.
fn combine_mean(states: &[ArrayRef], groups: &Groups) -> Result<[ArrayRef; 2]> {
    let [n_in, sum_in] = states else {
        return Err(DataFrameError::compute("combining mean", "expected two state columns"));
    };
    let (n_in, sum_in) = (n_in.as_primitive::<Int64Type>(), sum_in.as_primitive::<Float64Type>());
    let (mut n, mut sum) = (vec![0i64; groups.len()], vec![0f64; groups.len()]);
    for (row, &g) in groups.ids.iter().enumerate() {
        if g == DROPPED || n_in.is_null(row) || n_in.value(row) == 0 {
            continue;
        }
        n[g as usize] += n_in.value(row);
        sum[g as usize] += sum_in.value(row);
    }
    Ok([Arc::new(Int64Array::from(n)), Arc::new(Float64Array::from(sum))])
}

/// Merges (count, shift, mean, M2) states of the same group with Chan et al.'s pairwise
/// formula. The group keeps its first state's shift; another state's mean is moved onto it
/// through the difference of the shifts, which is exact for nearby values, so the difference
/// of the means is as precise as the values' spread allows.
fn combine_moments(states: &[ArrayRef], groups: &Groups) -> Result<[ArrayRef; 4]> {
    let [n_in, shift_in, mean_in, m2_in] = states else {
        return Err(DataFrameError::compute("combining var/std", "expected four state columns"));
    };
    let n_in = n_in.as_primitive::<Int64Type>();
    let (shift_in, mean_in, m2_in) = (
        shift_in.as_primitive::<Float64Type>(),
        mean_in.as_primitive::<Float64Type>(),
        m2_in.as_primitive::<Float64Type>(),
    );
    let len = groups.len();
    let (mut n, mut shift, mut mean, mut m2) = (vec![0i64; len], vec![0f64; len], vec![0f64; len], vec![0f64; len]);
    for (row, &g) in groups.ids.iter().enumerate() {
        let (g, nb) = (g as usize, n_in.value(row));
        if g == DROPPED as usize || nb == 0 {
            continue;
        }
        if n[g] == 0 {
            (n[g], shift[g], mean[g], m2[g]) = (nb, shift_in.value(row), mean_in.value(row), m2_in.value(row));
            continue;
        }
        let (na, total) = (n[g], n[g] + nb);
        let mean_b = (shift_in.value(row) - shift[g]) + mean_in.value(row);
        let delta = mean_b - mean[g];
        mean[g] += delta * nb as f64 / total as f64;
        m2[g] += m2_in.value(row) + delta * delta * (na as f64) * (nb as f64) / total as f64;
        n[g] = total;
    }
    Ok([
        Arc::new(Int64Array::from(n)),
        Arc::new(Float64Array::from(shift)),
        Arc::new(Float64Array::from(mean)),
        Arc::new(Float64Array::from(m2)),
    ])
}

fn partial_schema(spec: &AggSpec, keys: &[ArrayRef], states: &[ArrayRef]) -> SchemaRef {
    let mut fields: Vec<Field> =
        spec.keys.iter().zip(keys).map(|((name, _), k)| Field::new(name, k.data_type().clone(), true)).collect();
    fields
        .extend(states.iter().enumerate().map(|(i, s)| Field::new(format!("state_{i}"), s.data_type().clone(), true)));
    Arc::new(Schema::new(fields))
}

/// Each group's key values, from its first row. A key read dictionary-encoded (see
/// `lower::grouped_only`) is decoded back to its values' type, the type of the frame's column.
fn take_keys(keys: &[ArrayRef], groups: &Groups) -> Result<Vec<ArrayRef>> {
    let first = UInt32Array::from(groups.first_rows.clone());
    keys.iter()
        .map(|k| {
            let taken = take(k, &first, None).map_err(fail("group keys"))?;
            match taken.data_type() {
                DataType::Dictionary(_, values) => cast(&taken, values).map_err(fail("group keys")),
                _ => Ok(taken),
            }
        })
        .collect()
}

/// The partial states of one partition.
pub(crate) fn partial(spec: &AggSpec, batch: &RecordBatch) -> Result<RecordBatch> {
    partial_masked(spec, batch, None)
}

/// The partial states of the rows of `batch` where `mask` is true (missing counts as false),
/// equal to [`partial`] of the filtered batch without copying the kept rows: keys and inputs
/// are evaluated on every row, and the rows left out join no group.
pub(crate) fn partial_masked(spec: &AggSpec, batch: &RecordBatch, mask: Option<&BooleanArray>) -> Result<RecordBatch> {
    let keep = mask.map(|m| match m.nulls() {
        Some(nulls) => m.values() & nulls.inner(),
        None => m.values().clone(),
    });
    if let Some(k) = &keep
        && k.len() != batch.num_rows()
    {
        return Err(DataFrameError::compute(
            "partial aggregation",
            format!("a mask of {} rows for {} rows", k.len(), batch.num_rows()),
        ));
    }
    let keys: Vec<ArrayRef> = spec.keys.iter().map(|(_, e)| e.evaluate(batch)).collect::<Result<_>>()?;
    let groups = group_rows(&keys, batch.num_rows(), keep.as_ref())?;
    let mut states: Vec<ArrayRef> = Vec::new();
    for agg in &spec.aggs {
        match agg.func {
            AggFunc::Size => states.push(grouped_size(&groups)),
            func => {
                let values = agg.input.evaluate(batch)?;
                match func {
                    AggFunc::Count => states.push(grouped_count(&values, &groups)?),
                    AggFunc::Sum => states.push(grouped_sum(&values, &groups)?),
                    AggFunc::Min | AggFunc::Max => states.push(grouped_best(&values, &groups, func == AggFunc::Max)?),
                    AggFunc::Mean => states.extend(grouped_mean(&values, &groups)?),
                    AggFunc::First | AggFunc::Last => {
                        states.push(grouped_end(&values, &groups, func == AggFunc::Last)?)
                    }
                    AggFunc::Nunique => states.push(grouped_distinct(&values, &groups, false)?),
                    AggFunc::Unique => states.push(grouped_distinct(&values, &groups, true)?),
                    AggFunc::Any | AggFunc::All => {
                        states.push(grouped_truth(&values, &groups, func == AggFunc::All, &agg.name)?)
                    }
                    _ => states.extend(grouped_moments(&values, &groups)?),
                }
            }
        }
    }
    let keys = take_keys(&keys, &groups)?;
    let schema = partial_schema(spec, &keys, &states);
    RecordBatch::try_new(schema, keys.into_iter().chain(states).collect()).map_err(fail("partial aggregation"))
}

/// Checks that a partial state (possibly received from another process) has the layout the
/// spec gives it, so the combine and finalize steps can index its columns.
fn check_layout(spec: &AggSpec, partial: &RecordBatch) -> Result<()> {
    let bad = |what: String| DataFrameError::compute("combining partial aggregations", what);
    let width: usize = spec.keys.len() + spec.aggs.iter().map(|a| a.func.state_width()).sum::<usize>();
    if partial.num_columns() != width {
        return Err(bad(format!("a partial state has {} columns, expected {width}", partial.num_columns())));
    }
    let mut column = spec.keys.len();
    for agg in &spec.aggs {
        let types: &[DataType] = match agg.func {
            AggFunc::Var { .. } | AggFunc::Std { .. } => {
                &[DataType::Int64, DataType::Float64, DataType::Float64, DataType::Float64]
            }
            AggFunc::Mean => &[DataType::Int64, DataType::Float64],
            AggFunc::Size | AggFunc::Count => &[DataType::Int64],
            _ => &[],
        };
        for (offset, expected) in types.iter().enumerate() {
            let found = partial.column(column + offset).data_type();
            if found != expected {
                return Err(bad(format!(
                    "state column {} of {} is {found}, expected {expected}",
                    column + offset,
                    agg.name
                )));
            }
        }
        column += agg.func.state_width();
    }
    Ok(())
}

/// Partial states of several partitions merged into one state per group.
pub(crate) fn combine(spec: &AggSpec, partials: &[&RecordBatch]) -> Result<RecordBatch> {
    let Some(first) = partials.first() else {
        return Err(DataFrameError::compute("combining partial aggregations", "no inputs"));
    };
    for partial in partials {
        check_layout(spec, partial)?;
    }
    let owned: Vec<RecordBatch> = partials.iter().map(|b| (*b).clone()).collect();
    let all = concat_batches(&first.schema(), &owned).map_err(fail("combining partial aggregations"))?;
    let nkeys = spec.keys.len();
    let keys: Vec<ArrayRef> = all.columns()[..nkeys].to_vec();
    let groups = group_rows(&keys, all.num_rows(), None)?;
    let mut states: Vec<ArrayRef> = Vec::new();
    let mut column = nkeys;
    for agg in &spec.aggs {
        let width = agg.func.state_width();
        let cols = all
            .columns()
            .get(column..column + width)
            .ok_or_else(|| DataFrameError::compute("combining", "missing state columns"))?;
        match agg.func {
            AggFunc::Size | AggFunc::Count | AggFunc::Sum => states.push(grouped_sum(&cols[0], &groups)?),
            AggFunc::Min | AggFunc::Max => states.push(grouped_best(&cols[0], &groups, agg.func == AggFunc::Max)?),
            AggFunc::Mean => states.extend(combine_mean(cols, &groups)?),
            AggFunc::First | AggFunc::Last => states.push(grouped_end(&cols[0], &groups, agg.func == AggFunc::Last)?),
            AggFunc::Nunique | AggFunc::Unique => {
                states.push(combine_distinct(&cols[0], &groups, &agg.name, agg.func == AggFunc::Unique)?)
            }
            AggFunc::Any | AggFunc::All => {
                states.push(grouped_truth(&cols[0], &groups, agg.func == AggFunc::All, &agg.name)?)
            }
            _ => states.extend(combine_moments(cols, &groups)?),
        }
        column += width;
    }
    let keys = take_keys(&keys, &groups)?;
    let schema = partial_schema(spec, &keys, &states);
    RecordBatch::try_new(schema, keys.into_iter().chain(states).collect())
        .map_err(fail("combining partial aggregations"))
}

/// The final values from merged partial states, sorted by the keys (pandas' `sort=True`).
pub(crate) fn finalize(spec: &AggSpec, partials: &[&RecordBatch]) -> Result<RecordBatch> {
    let merged = combine(spec, partials)?;
    let nkeys = spec.keys.len();
    let output = &spec.output.0;
    let mut columns: Vec<ArrayRef> = merged.columns()[..nkeys].to_vec();
    let mut column = nkeys;
    for agg in &spec.aggs {
        let cols = &merged.columns()[column..column + agg.func.state_width()];
        column += agg.func.state_width();
        let value: ArrayRef = match agg.func {
            AggFunc::Mean => {
                let (n, sum) = (cols[0].as_primitive::<Int64Type>(), cols[1].as_primitive::<Float64Type>());
                let values: Float64Array =
                    (0..n.len()).map(|i| (n.value(i) > 0).then(|| sum.value(i) / n.value(i) as f64)).collect();
                Arc::new(values)
            }
            AggFunc::Var { .. } | AggFunc::Std { .. } => {
                let n = cols[0].as_primitive::<Int64Type>();
                let m2 = cols[3].as_primitive::<Float64Type>();
                let values: Float64Array = (0..n.len())
                    .map(|i| {
                        let n = n.value(i);
                        match agg.func {
                            AggFunc::Var { ddof } => {
                                (n > i64::from(ddof)).then(|| m2.value(i) / (n - i64::from(ddof)) as f64)
                            }
                            AggFunc::Std { ddof } => {
                                (n > i64::from(ddof)).then(|| (m2.value(i) / (n - i64::from(ddof)) as f64).sqrt())
                            }
                            _ => None,
                        }
                    })
                    .collect();
                Arc::new(values)
            }
            AggFunc::Nunique => {
                let lists = distinct_lists(&cols[0], &agg.name)?;
                let counts: Int64Array = lists.offsets().windows(2).map(|w| i64::from(w[1] - w[0])).collect();
                Arc::new(counts)
            }
            _ => cols[0].clone(),
        };
        columns.push(value);
    }
    // Every stage kept the input's own types; the output schema fixes them (e.g. a sum of
    // int32 values is int64 in every partition, so this is a no-op in the common case).
    let columns: Vec<ArrayRef> = columns
        .into_iter()
        .zip(output.fields())
        .map(|(c, f)| if c.data_type() == f.data_type() { Ok(c) } else { cast(&c, f.data_type()) })
        .collect::<Result<_, _>>()
        .map_err(fail("finalizing aggregation"))?;
    let batch = RecordBatch::try_new(output.clone(), columns).map_err(fail("finalizing aggregation"))?;
    if nkeys == 0 || batch.num_rows() <= 1 || spec.first_seen_order {
        return Ok(batch);
    }
    let sort: Vec<SortColumn> =
        batch.columns()[..nkeys].iter().map(|c| SortColumn { values: c.clone(), options: None }).collect();
    let order = lexsort_to_indices(&sort, None).map_err(fail("sorting groups"))?;
    arrow::compute::take_record_batch(&batch, &order).map_err(fail("sorting groups"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dictionary_key_groups_as_its_decoded_values_do() {
        use arrow::array::{DictionaryArray, Int32Array, StringArray};
        // The dictionary repeats "b", holds a missing value and values no row uses; rows have
        // missing indices too.
        let values: ArrayRef =
            Arc::new(StringArray::from(vec![Some("b"), Some("a"), None, Some("b"), Some("zzzzzzzzz")]));
        let indices = Int32Array::from(vec![Some(3), Some(1), Some(0), None, Some(2), Some(1), Some(3), Some(4)]);
        let dictionary: ArrayRef = Arc::new(DictionaryArray::try_new(indices, values).unwrap());
        let decoded = cast(&dictionary, &DataType::Utf8).unwrap();
        let keep = BooleanBuffer::from(vec![true, true, true, true, true, false, true, true]);
        for keep in [None, Some(&keep)] {
            let want = group_rows(std::slice::from_ref(&decoded), 8, keep).unwrap();
            let got = group_rows(std::slice::from_ref(&dictionary), 8, keep).unwrap();
            assert_eq!((&got.ids, &got.first_rows), (&want.ids, &want.first_rows), "keep {keep:?}");
            let keys = take_keys(std::slice::from_ref(&dictionary), &got).unwrap();
            assert_eq!(keys[0].data_type(), &DataType::Utf8);
            assert_eq!(&keys[0], &take_keys(std::slice::from_ref(&decoded), &want).unwrap()[0]);
        }
        let groups = group_rows(std::slice::from_ref(&dictionary), 8, None).unwrap();
        assert_eq!(groups.ids, vec![0, 1, 0, DROPPED, DROPPED, 1, 0, 2]);
        // Fewer rows than dictionary values: the rows' values are numbered instead, alike.
        let few = dictionary.slice(5, 2);
        let groups = group_rows(&[few], 2, None).unwrap();
        assert_eq!((groups.ids, groups.first_rows), (vec![0, 1], vec![0, 1]));
    }

    #[test]
    fn groups_by_two_keys_and_drops_missing_keys() {
        let a: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), Some(1), None, Some(2), Some(1)]));
        let b: ArrayRef = Arc::new(arrow::array::StringArray::from(vec!["x", "y", "x", "x", "x"]));
        let groups = group_rows(&[a, b], 5, None).unwrap();
        assert_eq!(groups.ids, vec![0, 1, DROPPED, 2, 0]);
        assert_eq!(groups.first_rows, vec![0, 1, 3]);
        let nan: ArrayRef = Arc::new(Float64Array::from(vec![Some(f64::NAN), Some(1.0), None, Some(1.0)]));
        let groups = group_rows(&[nan], 4, None).unwrap();
        assert_eq!(groups.ids, vec![DROPPED, 0, DROPPED, 0]);
    }

    #[test]
    fn a_malformed_partial_state_is_an_error_not_a_panic() {
        let output = Arc::new(Schema::new(vec![Field::new("value", DataType::Float64, true)]));
        let spec = AggSpec {
            keys: Vec::new(),
            aggs: vec![AggItem {
                name: "value".into(),
                func: AggFunc::Var { ddof: 1 },
                input: Expr::Column("x".into()),
            }],
            output: crate::lower::SerdeSchema(output),
            first_seen_order: false,
        };
        let one_column = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, true)])),
            vec![Arc::new(Int64Array::from(vec![1]))],
        )
        .unwrap();
        let err = finalize(&spec, &[&one_column]).unwrap_err();
        assert!(err.to_string().contains("1 columns, expected 4"), "{err}");
        let floats: ArrayRef = Arc::new(Float64Array::from(vec![1.0]));
        let wrong_types = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("n", DataType::Float64, true),
                Field::new("shift", DataType::Float64, true),
                Field::new("mean", DataType::Float64, true),
                Field::new("m2", DataType::Float64, true),
            ])),
            vec![floats.clone(), floats.clone(), floats.clone(), floats],
        )
        .unwrap();
        let err = combine(&spec, &[&wrong_types]).unwrap_err();
        assert!(err.to_string().contains("is Float64, expected Int64"), "{err}");
    }

    fn spec_of(keys: &[&str], aggs: &[(AggFunc, &str)]) -> AggSpec {
        AggSpec {
            keys: keys.iter().map(|k| (k.to_string(), Expr::Column(k.to_string()))).collect(),
            aggs: aggs
                .iter()
                .enumerate()
                .map(|(i, (func, c))| AggItem {
                    name: format!("a{i}"),
                    func: *func,
                    input: Expr::Column(c.to_string()),
                })
                .collect(),
            // Only the partial states are compared here; the output schema is not read.
            output: crate::lower::SerdeSchema(Arc::new(Schema::empty())),
            first_seen_order: false,
        }
    }

    fn masked_input() -> RecordBatch {
        let key: ArrayRef = Arc::new(arrow::array::StringArray::from(vec![
            Some("a"),
            Some("b"),
            None,
            Some("a"),
            Some("c"),
            Some("b"),
        ]));
        let x: ArrayRef =
            Arc::new(Float64Array::from(vec![Some(1.0), None, Some(3.0), Some(f64::NAN), Some(5.0), Some(6.0)]));
        let i: ArrayRef = Arc::new(Int64Array::from(vec![Some(10), Some(20), None, Some(40), Some(50), None]));
        RecordBatch::try_from_iter([("k", key), ("x", x), ("i", i)]).unwrap()
    }

    /// Partial states through a mask must equal those of the filtered rows, group for group
    /// (NaN compared as equal).
    fn assert_masked_equals_filtered(spec: &AggSpec, batch: &RecordBatch, mask: &BooleanArray) {
        let masked = partial_masked(spec, batch, Some(mask)).unwrap();
        let filtered = partial(spec, &arrow::compute::filter_record_batch(batch, mask).unwrap()).unwrap();
        assert_eq!(masked.num_rows(), filtered.num_rows(), "{mask:?}");
        assert_eq!(masked.schema(), filtered.schema());
        for (m, f) in masked.columns().iter().zip(filtered.columns()) {
            let (m, f) = (format!("{m:?}"), format!("{f:?}"));
            assert_eq!(m, f, "{mask:?}");
        }
    }

    #[test]
    fn aggregation_through_a_mask_equals_aggregation_of_the_kept_rows() {
        let batch = masked_input();
        let all = [
            (AggFunc::Sum, "x"),
            (AggFunc::Mean, "x"),
            (AggFunc::Count, "x"),
            (AggFunc::Min, "x"),
            (AggFunc::Max, "i"),
            (AggFunc::Sum, "i"),
            (AggFunc::Var { ddof: 1 }, "x"),
            (AggFunc::Size, "x"),
        ];
        let masks = [
            // Missing in the mask, on rows whose values are missing or not.
            BooleanArray::from(vec![Some(true), None, Some(true), None, Some(false), Some(true)]),
            BooleanArray::from(vec![false; 6]),
            BooleanArray::from(vec![true; 6]),
            BooleanArray::from(vec![None; 6]),
        ];
        for keys in [&["k"][..], &[], &["k", "i"]] {
            let spec = spec_of(keys, &all);
            for mask in &masks {
                assert_masked_equals_filtered(&spec, &batch, mask);
            }
        }
        // No rows at all: no groups, or the one group of a reduction.
        let empty = batch.slice(0, 0);
        let none = BooleanArray::from(Vec::<bool>::new());
        assert_masked_equals_filtered(&spec_of(&["k"], &all), &empty, &none);
        assert_eq!(partial_masked(&spec_of(&[], &all), &empty, Some(&none)).unwrap().num_rows(), 1);
    }

    #[test]
    fn a_mask_of_the_wrong_length_is_an_error() {
        let err = partial_masked(
            &spec_of(&["k"], &[(AggFunc::Sum, "x")]),
            &masked_input(),
            Some(&BooleanArray::from(vec![true])),
        )
        .unwrap_err();
        assert!(err.to_string().contains("a mask of 1 rows for 6 rows"), "{err}");
    }

    #[test]
    fn chan_combine_equals_one_pass() {
        // Values far from zero with a small spread, in uneven pieces: the combined state must
        // give the one-pass M2 (the exact one here: 1e15 + i is representable).
        let raw: Vec<f64> = [1.0, 2.0, 4.0, 8.0, 16.0, 3.5, 7.25, 0.5].iter().map(|x| 1e15 + x).collect();
        let values: ArrayRef = Arc::new(Float64Array::from(raw.clone()));
        let one = |v: &ArrayRef| grouped_moments(v, &Groups { ids: vec![0; v.len()], first_rows: vec![0] }).unwrap();
        let [n, shift, mean, m2] = one(&values);
        let pieces: Vec<[ArrayRef; 4]> =
            [values.slice(0, 1), values.slice(1, 4), values.slice(5, 3)].iter().map(one).collect();
        let stacked: Vec<ArrayRef> = (0..4)
            .map(|i| arrow::compute::concat(&pieces.iter().map(|p| p[i].as_ref()).collect::<Vec<_>>()).unwrap())
            .collect();
        let [n2, shift2, mean2, m22] =
            combine_moments(&stacked, &Groups { ids: vec![0, 0, 0], first_rows: vec![0] }).unwrap();
        let f = |a: &ArrayRef| a.as_primitive::<Float64Type>().value(0);
        assert_eq!(n.as_primitive::<Int64Type>().value(0), n2.as_primitive::<Int64Type>().value(0));
        assert_eq!(f(&shift) + f(&mean), f(&shift2) + f(&mean2));
        let exact_mean = raw.iter().map(|x| x - 1e15).sum::<f64>() / 8.0;
        let exact_m2: f64 = raw.iter().map(|x| (x - 1e15 - exact_mean).powi(2)).sum();
        assert!((f(&m2) - exact_m2).abs() < 1e-9 * exact_m2, "{} vs {exact_m2}", f(&m2));
        assert!((f(&m22) - exact_m2).abs() < 1e-9 * exact_m2, "{} vs {exact_m2}", f(&m22));
    }
}
