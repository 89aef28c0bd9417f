//! The hash join of two partitions, with pandas' `merge` semantics:
//!
//! - keys are compared after casting both sides to a common type (integers of any width meet
//!   as `int64`, an integer and a float as `float64`), row-encoded with `arrow-row` (one integer
//!   key is compared as itself);
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
//! The build side is hashed into a [`JoinTable`] of row indices (`hashbrown`; a single integer
//! key as its value, compared inline, other keys as encoded bytes); the other side looks up
//! the groups of all its keys in one pass, then pairs rows in order. The table owns its rows, so a broadcast merge
//! builds it once (`kiln.dataframe.merge.build`) and each partition of the other side probes
//! it inside its own partition task, piece by piece as the partition is read.

use std::any::TypeId;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch, UInt32Array};
use arrow::buffer::BooleanBuffer;
use arrow::compute::{cast, take};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use arrow::row::Rows;
use hashbrown::HashTable;
use kiln_graph::codec::ValueCodec;
use kiln_graph::kernel::{PortableKernel, input};
use kiln_graph::{CodecError, Encoded, TaskError, Value};
use serde::{Deserialize, Serialize};

use crate::error::{DataFrameError, Result};
use crate::lower::{SerdeSchema, decode_batch, encode_batch};
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

/// The side of a merge whose rows a [`JoinTable`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Side {
    Left,
    Right,
}

fn hash_key(bytes: &[u8]) -> u64 {
    use std::hash::BuildHasher;
    rustc_hash::FxBuildHasher.hash_one(bytes)
}

/// Spreads every bit of an integer key over the low bits (the table's bucket) and the top
/// seven (its tag): keys that differ only in high bits, or are all multiples of a power of two,
/// still land apart.
fn hash_int(key: i64) -> u64 {
    let mut h = key as u64;
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

/// A group id meaning "no group": the probed key is not in the table.
const NO_GROUP: u32 = u32::MAX;

/// One side's join keys in the form the hash table compares: a single 64-bit integer key as the
/// values themselves (hashed and compared inline, no row encoding), any other keys
/// row-encoded. Both sides of a merge have the same key types, so they have the same form.
enum Keys {
    Int64(Int64Array),
    Encoded(Rows),
}

impl Keys {
    fn of(columns: &[ArrayRef]) -> Result<Keys> {
        match columns {
            [one] if one.data_type() == &DataType::Int64 => Ok(Keys::Int64(one.as_primitive::<Int64Type>().clone())),
            _ => Ok(Keys::Encoded(key_rows(columns)?)),
        }
    }

    fn len(&self) -> usize {
        match self {
            Keys::Int64(values) => values.len(),
            Keys::Encoded(rows) => rows.num_rows(),
        }
    }

    /// Memory held beyond the key columns (an integer key shares their buffer).
    fn extra_size(&self) -> usize {
        match self {
            Keys::Int64(_) => 0,
            Keys::Encoded(rows) => rows.size(),
        }
    }

    /// Orders key `i` of `self` against key `j` of `other` as pandas sorts an outer merge: by
    /// value, missing keys last (the row encoding orders the same way).
    fn cmp(&self, i: usize, other: &Keys, j: usize) -> std::cmp::Ordering {
        match (self, other) {
            (Keys::Int64(a), Keys::Int64(b)) => {
                let value = |k: &Int64Array, i: usize| k.is_valid(i).then(|| k.value(i));
                match (value(a, i), value(b, j)) {
                    (Some(x), Some(y)) => x.cmp(&y),
                    (x, y) => y.is_some().cmp(&x.is_some()),
                }
            }
            (Keys::Encoded(a), Keys::Encoded(b)) => a.row(i).cmp(&b.row(j)),
            // `JoinTable::groups_of` refuses mixed forms before any pair is made.
            _ => std::cmp::Ordering::Equal,
        }
    }
}

/// One bit per integer between a table's smallest and largest key, set for its keys. Most
/// probes of a selective join miss (TPC-H Q3 probes 3 M line items against 150 k orders), and
/// a bit in a cache-sized array answers a miss in one load, where the hash table hashes and
/// reads a control group. Built only when the range is at most 64 bits per key, so it never
/// takes more memory than the table's entries.
struct KeyBitmap {
    min: i64,
    /// Bits in the range: `max - min + 1`.
    len: u64,
    words: Vec<u64>,
}

impl KeyBitmap {
    fn of(keys: &Int64Array, distinct: usize) -> Option<KeyBitmap> {
        let (min, max) = (arrow::compute::min(keys)?, arrow::compute::max(keys)?);
        let len = (max as i128 - min as i128 + 1) as u128;
        if len > 64 * distinct.max(1) as u128 {
            return None;
        }
        let len = len as u64;
        let mut words = vec![0u64; len.div_ceil(64) as usize];
        for key in keys.iter().flatten() {
            let bit = key.wrapping_sub(min) as u64;
            words[(bit / 64) as usize] |= 1 << (bit % 64);
        }
        Some(KeyBitmap { min, len, words })
    }

    /// False when `key` is surely not in the table.
    fn may_hold(&self, key: i64) -> bool {
        let bit = key.wrapping_sub(self.min) as u64;
        bit < self.len && self.words[(bit / 64) as usize] & (1 << (bit % 64)) != 0
    }
}

/// The hash index of a [`JoinTable`]'s distinct keys, by the form of its [`Keys`].
enum KeyIndex {
    /// Each distinct integer key beside its group id; missing keys are one group of their own
    /// (pandas matches missing with missing). `present` answers most misses before hashing.
    Int64 { groups: HashTable<(i64, u32)>, missing: Option<u32>, present: Option<KeyBitmap> },
    /// Group ids beside their first row, found by the hash of the encoded key and compared by
    /// that row's key (the row kept here saves a probe two dependent loads).
    Encoded { groups: HashTable<(u32, u32)> },
}

/// The build side of a hash join: one side's rows (the columns the merge reads), its keys cast
/// to the merge's common types, and the rows of each distinct key, in row order, laid end to
/// end (one allocation, not one per key). It owns everything, so a broadcast merge builds it
/// once, in one task, and every partition of the other side probes the same value.
pub(crate) struct JoinTable {
    batch: RecordBatch,
    key_schema: SchemaRef,
    keys: Vec<ArrayRef>,
    key_form: Keys,
    index: KeyIndex,
    /// Group `g`'s rows are `members[offsets[g]..offsets[g + 1]]`, in row order.
    offsets: Vec<u32>,
    members: Vec<u32>,
}

impl std::fmt::Debug for JoinTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinTable")
            .field("rows", &self.batch.num_rows())
            .field("keys", &(self.offsets.len() - 1))
            .finish()
    }
}

impl JoinTable {
    /// Hashes `batch`'s rows by the key columns of `key_schema` (names and common types).
    pub(crate) fn build(batch: RecordBatch, key_schema: SchemaRef) -> Result<JoinTable> {
        let keys = key_columns(&batch, &key_schema)?;
        let key_form = Keys::of(&keys)?;
        let n = key_form.len();
        if u32::try_from(n).is_err() || n == NO_GROUP as usize {
            return Err(DataFrameError::compute("merge", format!("a join table of {n} rows is over 2^32 - 1")));
        }
        let mut distinct = 0u32;
        let mut new_group = || {
            distinct += 1;
            distinct - 1
        };
        let mut ids = Vec::with_capacity(n);
        let index = match &key_form {
            Keys::Int64(values) => {
                let mut groups: HashTable<(i64, u32)> = HashTable::with_capacity(n);
                let mut missing = None;
                for i in 0..n {
                    let id = if values.is_null(i) {
                        *missing.get_or_insert_with(&mut new_group)
                    } else {
                        let key = values.value(i);
                        let hash = hash_int(key);
                        match groups.find(hash, |&(k, _)| k == key) {
                            Some(&(_, g)) => g,
                            None => {
                                let g = new_group();
                                // Capacity for every row was reserved, so the hasher never runs.
                                groups.insert_unique(hash, (key, g), |&(k, _)| hash_int(k));
                                g
                            }
                        }
                    };
                    ids.push(id);
                }
                let present = KeyBitmap::of(values, groups.len());
                KeyIndex::Int64 { groups, missing, present }
            }
            Keys::Encoded(rows) => {
                let mut groups: HashTable<(u32, u32)> = HashTable::with_capacity(n);
                for (i, row) in rows.iter().enumerate() {
                    let bytes = row.data();
                    let hash = hash_key(bytes);
                    let id = match groups.find(hash, |&(_, w)| rows.row(w as usize).data() == bytes) {
                        Some(&(g, _)) => g,
                        None => {
                            let g = new_group();
                            groups.insert_unique(hash, (g, i as u32), |&(_, w)| hash_key(rows.row(w as usize).data()));
                            g
                        }
                    };
                    ids.push(id);
                }
                KeyIndex::Encoded { groups }
            }
        };
        let mut counts = vec![0u32; distinct as usize];
        for &id in &ids {
            counts[id as usize] += 1;
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
        let mut members = vec![0u32; ids.len()];
        for (row, &id) in ids.iter().enumerate() {
            members[fill[id as usize] as usize] = row as u32;
            fill[id as usize] += 1;
        }
        Ok(JoinTable { batch, key_schema, keys, key_form, index, offsets, members })
    }

    /// The group of each of `probe`'s keys, or [`NO_GROUP`], in one pass over them; with
    /// `keep`, only the kept rows are looked up (the others get [`NO_GROUP`]).
    fn groups_of(&self, probe: &Keys, keep: Option<&BooleanBuffer>) -> Result<Vec<u32>> {
        fn collect(n: usize, keep: Option<&BooleanBuffer>, lookup: impl Fn(usize) -> u32) -> Vec<u32> {
            match keep {
                None => (0..n).map(lookup).collect(),
                Some(keep) => {
                    let mut out = vec![NO_GROUP; n];
                    for i in keep.set_indices() {
                        out[i] = lookup(i);
                    }
                    out
                }
            }
        }
        if keep.is_some_and(|k| k.len() != probe.len()) {
            return Err(DataFrameError::compute("merge", "a row mask of another length than the rows probed"));
        }
        match (&self.index, probe) {
            (KeyIndex::Int64 { groups, missing, present }, Keys::Int64(keys)) => {
                let find = |key: i64| {
                    if present.as_ref().is_some_and(|p| !p.may_hold(key)) {
                        return NO_GROUP;
                    }
                    groups.find(hash_int(key), |&(k, _)| k == key).map_or(NO_GROUP, |&(_, g)| g)
                };
                let values = keys.values();
                Ok(match keys.nulls().filter(|n| n.null_count() > 0) {
                    None => collect(values.len(), keep, |i| find(values[i])),
                    Some(nulls) => collect(values.len(), keep, |i| {
                        if nulls.is_valid(i) { find(values[i]) } else { missing.unwrap_or(NO_GROUP) }
                    }),
                })
            }
            (KeyIndex::Encoded { groups }, Keys::Encoded(rows)) => {
                let Keys::Encoded(own) = &self.key_form else {
                    return Err(DataFrameError::compute("merge", "a join table's keys changed form"));
                };
                Ok(collect(rows.num_rows(), keep, |i| {
                    let key = rows.row(i);
                    let key = key.data();
                    groups
                        .find(hash_key(key), |&(_, w)| own.row(w as usize).data() == key)
                        .map_or(NO_GROUP, |&(g, _)| g)
                }))
            }
            _ => Err(DataFrameError::compute("merge", "the two sides' keys are not of the same types")),
        }
    }

    /// The rows (in row order) of group `g`, or `None` for [`NO_GROUP`].
    fn rows_of(&self, g: u32) -> Option<&[u32]> {
        (g != NO_GROUP).then(|| &self.members[self.offsets[g as usize] as usize..self.offsets[g as usize + 1] as usize])
    }

    /// Memory held: the rows, their keys and the index.
    pub(crate) fn nbytes(&self) -> usize {
        let index = match &self.index {
            KeyIndex::Int64 { groups, present, .. } => {
                16 * groups.capacity() + present.as_ref().map_or(0, |p| 8 * p.words.len())
            }
            KeyIndex::Encoded { groups } => 8 * groups.capacity(),
        };
        self.batch.get_array_memory_size()
            + self.keys.iter().map(|k| k.get_array_memory_size()).sum::<usize>()
            + self.key_form.extra_size()
            + index
            + 4 * (self.offsets.len() + self.members.len())
    }
}

/// Joins `other`, a partition of the side `table` does not hold, with `table` (pandas' order
/// for this pair of batches; see the module docs). A table of the right side serves every
/// `how` but `right`; a table of the left side serves `inner` and `right`, the only ones for
/// which left rows that match nothing here may be left out.
///
/// With `keep` (an `inner` or `semi` merge only), the rows of `other` it does not keep are
/// left out as a filter before the merge would leave them, without copying the kept rows
/// first: only the matched rows are copied, once.
pub(crate) fn probe(
    spec: &MergeSpec,
    side: Side,
    table: &JoinTable,
    other: &RecordBatch,
    keep: Option<&BooleanBuffer>,
) -> Result<RecordBatch> {
    if keep.is_some() && !matches!(spec.how, How::Inner | How::Semi) {
        return Err(DataFrameError::compute(
            "merge",
            format!("a {} merge cannot skip rows while probing: they would appear unmatched", spec.how.name()),
        ));
    }
    let other_schema = match side {
        Side::Right => &spec.left_keys.0,
        Side::Left => &spec.right_keys.0,
    };
    let other_keys = key_columns(other, other_schema)?;
    let other_form = Keys::of(&other_keys)?;
    let groups = table.groups_of(&other_form, keep)?;
    let mut pairs = Pairs { left: Vec::new(), right: Vec::new() };
    match (side, spec.how) {
        (Side::Right, How::Right) | (Side::Left, How::Left | How::Outer | How::Semi | How::Anti) => {
            return Err(DataFrameError::compute(
                "merge",
                format!("a {} merge cannot probe a table of the {side:?} side", spec.how.name()),
            ));
        }
        (Side::Left, How::Inner) => {
            // Probing with the right rows, then ordering the pairs as probing with the left
            // would (by left row, then right row), which is pandas' order.
            let mut found: Vec<u64> = Vec::new();
            for (r, &g) in groups.iter().enumerate() {
                if let Some(ls) = table.rows_of(g) {
                    found.extend(ls.iter().map(|&l| (u64::from(l) << 32) | r as u64));
                }
            }
            found.sort_unstable();
            pairs.left = found.iter().map(|p| Some((p >> 32) as u32)).collect();
            pairs.right = found.iter().map(|p| Some(*p as u32)).collect();
        }
        (Side::Left, How::Right) => {
            for (r, &g) in groups.iter().enumerate() {
                match table.rows_of(g) {
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
        (Side::Right, how) => {
            let mut matched_right = vec![false; if how == How::Outer { table.batch.num_rows() } else { 0 }];
            for (l, &g) in groups.iter().enumerate() {
                let matches = table.rows_of(g);
                match how {
                    How::Semi | How::Anti => {
                        if matches.is_some() == (how == How::Semi) {
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
                        None if how != How::Inner => {
                            pairs.left.push(Some(l as u32));
                            pairs.right.push(None);
                        }
                        None => {}
                    },
                }
            }
            if how == How::Outer {
                for (r, _) in matched_right.iter().enumerate().filter(|(_, seen)| !**seen) {
                    pairs.left.push(None);
                    pairs.right.push(Some(r as u32));
                }
                // pandas sorts an outer merge by the key, missing keys last; ties keep the order
                // above (a stable sort).
                let key_of = |i: usize| match (pairs.left[i], pairs.right[i]) {
                    (Some(l), _) => (&other_form, l as usize),
                    (None, Some(r)) => (&table.key_form, r as usize),
                    (None, None) => unreachable!("a pair has a row on one side at least"),
                };
                let mut order: Vec<usize> = (0..pairs.left.len()).collect();
                order.sort_by(|&a, &b| {
                    let ((ka, ia), (kb, ib)) = (key_of(a), key_of(b));
                    ka.cmp(ia, kb, ib)
                });
                pairs = Pairs {
                    left: order.iter().map(|&i| pairs.left[i]).collect(),
                    right: order.iter().map(|&i| pairs.right[i]).collect(),
                };
            }
        }
    }
    match side {
        Side::Right => gather(spec, other, &table.batch, &other_keys, &table.keys, &pairs),
        Side::Left => gather(spec, &table.batch, other, &table.keys, &other_keys, &pairs),
    }
}

/// Joins two partitions: the table is built on the right side, or on the left for a right
/// merge and for an inner merge whose left side is the smaller (building costs more per row
/// than probing).
pub(crate) fn hash_join(spec: &MergeSpec, left: &RecordBatch, right: &RecordBatch) -> Result<RecordBatch> {
    let build_left = match spec.how {
        How::Right => true,
        How::Inner => left.num_rows() < right.num_rows(),
        _ => false,
    };
    if build_left {
        let table = JoinTable::build(left.clone(), spec.left_keys.0.clone())?;
        probe(spec, Side::Left, &table, right, None)
    } else {
        let table = JoinTable::build(right.clone(), spec.right_keys.0.clone())?;
        probe(spec, Side::Right, &table, left, None)
    }
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
            // pandas keeps the left key's type where every output row has a left row; an
            // unmatched right row (right, outer) may need the common type.
            let dtype = match how {
                How::Inner | How::Left | How::Semi | How::Anti => f.data_type().clone(),
                How::Right | How::Outer => left_keys[i].data_type().clone(),
            };
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

/// Builds the [`JoinTable`] of one side of a broadcast merge from all its partitions (its
/// inputs, concatenated in order), once for every task that probes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct BuildKernel {
    pub(crate) keys: SerdeSchema,
}

impl PortableKernel for BuildKernel {
    const ID: &'static str = "kiln.dataframe.merge.build";
    fn name(&self) -> &str {
        "merge-build"
    }
    fn call(&self, inputs: &[Value]) -> std::result::Result<Value, TaskError> {
        let batches: Vec<RecordBatch> = (0..inputs.len())
            .map(|i| input::<RecordBatch>(inputs, i).cloned())
            .collect::<std::result::Result<_, _>>()?;
        let failed = |e: DataFrameError| TaskError::Failed(e.to_string());
        let batch = crate::shuffle::concat(&batches).map_err(failed)?;
        Ok(Value::new(JoinTable::build(batch, self.keys.0.clone()).map_err(failed)?))
    }
}

/// The codec tag of a [`JoinTable`]: its rows as an Arrow IPC stream and its key schema; the
/// receiving process hashes the rows again (cheaper than shipping the index, and the same).
pub const JOIN_TABLE_CODEC_TAG: &str = "kiln.dataframe.join-table";

/// Carries a [`JoinTable`] between processes.
pub(crate) struct JoinTableCodec;

impl ValueCodec for JoinTableCodec {
    fn tag(&self) -> &str {
        JOIN_TABLE_CODEC_TAG
    }
    fn value_type(&self) -> TypeId {
        TypeId::of::<JoinTable>()
    }
    fn encode(&self, value: &Value) -> std::result::Result<Encoded, CodecError> {
        let table = value.downcast_ref::<JoinTable>().map_err(|_| CodecError::NoCodecForType(value.type_name()))?;
        let malformed = |message: String| CodecError::Malformed { tag: JOIN_TABLE_CODEC_TAG.into(), message };
        let header =
            postcard::to_allocvec(&SerdeSchema(table.key_schema.clone())).map_err(|e| malformed(e.to_string()))?;
        let frame = encode_batch(&table.batch).map_err(|e| malformed(e.to_string()))?;
        Ok(Encoded { tag: JOIN_TABLE_CODEC_TAG.into(), header, frames: vec![frame.into()] })
    }
    fn decode(&self, encoded: &Encoded) -> std::result::Result<Value, CodecError> {
        let malformed = |message: String| CodecError::Malformed { tag: JOIN_TABLE_CODEC_TAG.into(), message };
        let [frame] = encoded.frames.as_slice() else {
            return Err(malformed(format!("expected 1 frame, got {}", encoded.frames.len())));
        };
        let keys: SerdeSchema = postcard::from_bytes(&encoded.header).map_err(|e| malformed(e.to_string()))?;
        let batch = decode_batch(frame).map_err(malformed)?;
        Ok(Value::new(JoinTable::build(batch, keys.0).map_err(|e| malformed(e.to_string()))?))
    }
    fn nbytes(&self, value: &Value) -> Option<usize> {
        value.downcast_ref::<JoinTable>().ok().map(JoinTable::nbytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_bitmap_rejects_only_keys_the_table_does_not_hold() {
        let keys = Int64Array::from(vec![Some(-5), None, Some(3), Some(-5), Some(60)]);
        let bitmap = KeyBitmap::of(&keys, 3).unwrap();
        for key in [i64::MIN, i64::MIN + 1, -6, -4, 0, 2, 4, 59, 61, i64::MAX, i64::MAX - 1] {
            assert!(!bitmap.may_hold(key), "{key}");
        }
        for key in [-5, 3, 60] {
            assert!(bitmap.may_hold(key), "{key}");
        }
        // A range wider than 64 bits per key gets no bitmap; the hash table answers alone.
        assert!(KeyBitmap::of(&Int64Array::from(vec![0, 1000]), 2).is_none());
        assert!(KeyBitmap::of(&Int64Array::from(vec![i64::MIN, i64::MAX]), 2).is_none());
        assert!(KeyBitmap::of(&Int64Array::from(vec![None::<i64>]), 1).is_none());
    }

    #[test]
    fn an_integer_key_table_finds_keys_at_both_ends_of_the_range() {
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, true)]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from(vec![Some(i64::MAX), Some(7), None, Some(i64::MIN), Some(7)]))],
        )
        .unwrap();
        let table = JoinTable::build(batch, schema).unwrap();
        let probe = Keys::Int64(Int64Array::from(vec![Some(7), Some(i64::MIN), Some(8), None, Some(i64::MAX)]));
        let groups = table.groups_of(&probe, None).unwrap();
        let rows: Vec<Option<Vec<u32>>> = groups.iter().map(|&g| table.rows_of(g).map(<[u32]>::to_vec)).collect();
        assert_eq!(rows, vec![Some(vec![1, 4]), Some(vec![3]), None, Some(vec![2]), Some(vec![0])]);
    }
}
