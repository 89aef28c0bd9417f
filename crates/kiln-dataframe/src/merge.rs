//! `shuffle`, `merge` and `join`: the operations that move rows between partitions by key, and
//! the planner's choice of how (see [`DataFrame::merge`]).

use std::sync::Arc;

use arrow::datatypes::{Field, Schema};
use kiln_graph::unique_token;

use crate::error::{DataFrameError, Result};
use crate::frame::DataFrame;
use crate::join::{How, MergeSpec, OutColumn, plan_merge};
use crate::lower::{SerdeSchema, partitioned_by};
use crate::plan::{Divisions, Frame, MergeStrategy, Partitioning, Source, Steps};
use crate::shuffle::{DEFAULT_MAX_BRANCH, hash_type};

/// A side with at most this many partitions, and at most half as many as the other side, is
/// broadcast (its hash table built once and probed by every partition of the other side)
/// instead of shuffling both sides.
pub const BROADCAST_MAX_PARTITIONS: usize = 8;

/// A side estimated at most this many decoded bytes, and at most half the other side's, is
/// broadcast too, whatever its partition count (after a filter and a narrow projection a
/// table of many files is often small).
pub const BROADCAST_MAX_BYTES: u64 = 256 << 20;

/// How to merge: the keys, which rows to keep, the suffixes (pandas' `merge` arguments).
///
/// ```
/// use kiln_dataframe::{How, MergeOptions};
/// let inner = MergeOptions::on(["carrier"]);
/// let left = MergeOptions::left_right(["origin"], ["faa"]).how(How::Left).suffixes("_flight", "_airport");
/// # let _ = (inner, left);
/// ```
#[derive(Debug, Clone)]
pub struct MergeOptions {
    how: How,
    left_on: Vec<String>,
    right_on: Vec<String>,
    suffixes: (String, String),
    npartitions: Option<usize>,
    max_branch: usize,
    broadcast: Option<bool>,
}

impl MergeOptions {
    /// Keys with the same names on both sides (pandas' `on=`), an inner merge.
    pub fn on<S: Into<String>>(keys: impl IntoIterator<Item = S>) -> MergeOptions {
        let keys: Vec<String> = keys.into_iter().map(Into::into).collect();
        MergeOptions::left_right(keys.clone(), keys)
    }

    /// Keys named differently on each side (pandas' `left_on=`, `right_on=`), an inner merge.
    pub fn left_right<L: Into<String>, R: Into<String>>(
        left_on: impl IntoIterator<Item = L>,
        right_on: impl IntoIterator<Item = R>,
    ) -> MergeOptions {
        MergeOptions {
            how: How::Inner,
            left_on: left_on.into_iter().map(Into::into).collect(),
            right_on: right_on.into_iter().map(Into::into).collect(),
            suffixes: ("_x".into(), "_y".into()),
            npartitions: None,
            max_branch: DEFAULT_MAX_BRANCH,
            broadcast: None,
        }
    }

    /// Which rows to keep (default [`How::Inner`]).
    pub fn how(mut self, how: How) -> MergeOptions {
        self.how = how;
        self
    }

    /// The suffixes of columns other than shared keys that both sides have (default `_x`,
    /// `_y`).
    pub fn suffixes(mut self, left: &str, right: &str) -> MergeOptions {
        self.suffixes = (left.to_string(), right.to_string());
        self
    }

    /// The number of partitions of a hash-shuffled merge (default: the larger side's).
    pub fn npartitions(mut self, npartitions: usize) -> MergeOptions {
        self.npartitions = Some(npartitions.max(1));
        self
    }

    /// At most this many pieces per split when shuffling (default 32).
    pub fn max_branch(mut self, max_branch: usize) -> MergeOptions {
        self.max_branch = max_branch.max(2);
        self
    }

    /// `Some(true)` broadcasts the side `how` allows (the right side for inner, left, semi and
    /// anti; the left side for right) whatever its size; `Some(false)` never broadcasts a side
    /// of more than one partition; `None` (default) lets the planner decide.
    pub fn broadcast(mut self, broadcast: Option<bool>) -> MergeOptions {
        self.broadcast = broadcast;
        self
    }
}

fn keys_schema<S: AsRef<str>>(frame: &Frame, on: &[S]) -> Result<Arc<Schema>> {
    let mut fields = Vec::with_capacity(on.len());
    for name in on {
        let field = frame.schema.field_with_name(name.as_ref()).map_err(|_| DataFrameError::ColumnNotFound {
            column: name.as_ref().to_string(),
            available: frame.schema.fields().iter().map(|f| f.name().clone()).collect(),
        })?;
        fields.push(Field::new(field.name(), hash_type(field.data_type()), true));
    }
    Ok(Arc::new(Schema::new(fields)))
}

fn derived(source: Source, schema: arrow::datatypes::SchemaRef, partitioning: Option<Partitioning>) -> DataFrame {
    DataFrame {
        frame: Arc::new(Frame {
            source: Arc::new(source),
            token: unique_token(),
            steps: Steps::default(),
            schema,
            divisions: Divisions::Unknown,
            index: None,
            partitioning,
        }),
    }
}

/// The planner's choice of merge strategy (stated in `docs/ARCHITECTURE.md`).
fn choose(left: &Frame, right: &Frame, spec: &MergeSpec, options: &MergeOptions) -> MergeStrategy {
    let (nl, nr) = (left.source.npartitions(), right.source.npartitions());
    let how = spec.how;
    let right_ok = matches!(how, How::Inner | How::Left | How::Semi | How::Anti);
    let left_ok = matches!(how, How::Inner | How::Right);
    let left_parted = partitioned_by(left, &spec.left_keys.0, nl);
    let right_parted = partitioned_by(right, &spec.right_keys.0, nr);
    let shuffle = |npartitions: usize| MergeStrategy::Shuffle { npartitions, max_branch: options.max_branch };
    if let Some(n) = options.npartitions {
        if (nl == 1 && nr == 1 && n == 1) || (left_parted && right_parted && nl == n && nr == n) {
            return MergeStrategy::Blockwise;
        }
        return shuffle(n);
    }
    if (nl == 1 && nr == 1) || (left_parted && right_parted && nl == nr) {
        return MergeStrategy::Blockwise;
    }
    if nr == 1 && right_ok {
        return MergeStrategy::BroadcastRight;
    }
    if nl == 1 && left_ok {
        return MergeStrategy::BroadcastLeft;
    }
    let small = |n: usize, other: usize| n <= BROADCAST_MAX_PARTITIONS && 2 * n <= other;
    let (bl, br) = (left.estimated_bytes(), right.estimated_bytes());
    let small_bytes = |side: Option<u64>, other: Option<u64>| matches!((side, other), (Some(s), Some(o)) if s <= BROADCAST_MAX_BYTES && s.saturating_mul(2) <= o);
    let right_small = right_ok && (small(nr, nl) || small_bytes(br, bl));
    let left_small = left_ok && (small(nl, nr) || small_bytes(bl, br));
    match options.broadcast {
        Some(true) if right_ok => return MergeStrategy::BroadcastRight,
        Some(true) if left_ok => return MergeStrategy::BroadcastLeft,
        // Both could be: the one estimated smaller (the right when unknown).
        None if right_small && left_small => {
            return match (bl, br) {
                (Some(l), Some(r)) if l < r => MergeStrategy::BroadcastLeft,
                _ => MergeStrategy::BroadcastRight,
            };
        }
        None if right_small => return MergeStrategy::BroadcastRight,
        None if left_small => return MergeStrategy::BroadcastLeft,
        _ => {}
    }
    // A side already partitioned by its keys keeps its partitions.
    shuffle(if left_parted {
        nl
    } else if right_parted {
        nr
    } else {
        nl.max(nr)
    })
}

/// The output's hash partitioning after a pairwise merge: by the left keys when each is an
/// output column holding the left row's key (or the shared key).
fn merged_partitioning(spec: &MergeSpec, npartitions: usize) -> Option<Partitioning> {
    let output = &spec.output.0;
    let mut fields = Vec::new();
    for (i, key) in spec.left_keys.0.fields().iter().enumerate() {
        let position = spec.columns.iter().position(|c| match c {
            OutColumn::Key(k) => *k == i,
            OutColumn::Left(name) => {
                name == key.name() && matches!(spec.how, How::Inner | How::Left | How::Semi | How::Anti)
            }
            OutColumn::Right(_) => false,
        })?;
        let field = output.field(position);
        if hash_type(field.data_type()) != *key.data_type() {
            return None;
        }
        fields.push(Field::new(field.name(), key.data_type().clone(), true));
    }
    Some(Partitioning { keys: Arc::new(Schema::new(fields)), npartitions })
}

impl DataFrame {
    /// The rows moved so that equal keys share a partition: row goes to partition
    /// `xxh3(keys) % npartitions` (Dask's `shuffle(on, npartitions)`), through the staged
    /// shuffle (at most 32 pieces per split; see [`DataFrame::shuffle_with`]). The result is
    /// *partitioned by* the keys: a group-by on them, or a merge on them with a frame
    /// partitioned alike, moves no more data. Shuffling a frame already partitioned so
    /// returns it unchanged. Row order within a partition follows the input partitions' order.
    ///
    /// # Errors
    /// [`DataFrameError::ColumnNotFound`] for a missing key; [`DataFrameError::InvalidArgument`]
    /// for no key or `npartitions == 0`.
    pub fn shuffle<S: AsRef<str>>(&self, on: &[S], npartitions: usize) -> Result<DataFrame> {
        self.shuffle_with(on, npartitions, DEFAULT_MAX_BRANCH)
    }

    /// [`DataFrame::shuffle`] splitting each partition into at most `max_branch` pieces per
    /// stage (stages = `ceil(log_max_branch(n))`).
    ///
    /// # Errors
    /// As [`DataFrame::shuffle`]; `max_branch < 2` is an invalid argument.
    pub fn shuffle_with<S: AsRef<str>>(&self, on: &[S], npartitions: usize, max_branch: usize) -> Result<DataFrame> {
        if on.is_empty() || npartitions == 0 || max_branch < 2 {
            return Err(DataFrameError::InvalidArgument(format!(
                "shuffle needs at least one key, npartitions >= 1 and max_branch >= 2 (got {} keys, {npartitions}, {max_branch})",
                on.len()
            )));
        }
        let keys = keys_schema(&self.frame, on)?;
        if partitioned_by(&self.frame, &keys, npartitions) {
            return Ok(self.clone());
        }
        let partitioning = Partitioning { keys: keys.clone(), npartitions };
        let source = Source::Shuffle { input: self.frame.clone(), keys: SerdeSchema(keys), npartitions, max_branch };
        Ok(derived(source, self.frame.schema.clone(), Some(partitioning)))
    }

    /// Merges with `right` on keys (pandas' `merge`): a hash join per pair of partitions. The
    /// planner pairs partitions
    ///
    /// - **blockwise** when both sides are one partition, or both are hash-partitioned by
    ///   their keys into the same number of partitions (after [`DataFrame::shuffle`], a
    ///   `split_out` group-by or an earlier merge on those keys);
    /// - by **broadcast** when the side `how` allows to repeat (the right side for inner, left,
    ///   semi and anti; the left for inner and right) is one partition, or has at most
    ///   [`BROADCAST_MAX_PARTITIONS`] and at most half as many as the other side, or is
    ///   estimated (after its projection, each filter assumed to keep half its rows) at most
    ///   [`BROADCAST_MAX_BYTES`] and at most half the other side: one task builds its hash table
    ///   from all its partitions, and each partition task of the other side probes that one
    ///   table after its own steps (a Parquet partition piece by piece as it is read), with the
    ///   merged frame's steps fused after the probe;
    /// - by a **hash shuffle** of both sides otherwise (into the larger side's partition
    ///   count; a side already partitioned by its keys is not moved).
    ///
    /// `explain()` shows the choice. Semantics (missing keys match each other, row order,
    /// suffixes) are pandas', see [`crate::join`].
    ///
    /// ```
    /// use std::sync::Arc;
    /// use arrow::array::{Int64Array, RecordBatch, StringArray};
    /// use kiln_dataframe::{DataFrame, How, MergeOptions};
    /// use kiln_graph::Collection;
    ///
    /// let flights = RecordBatch::try_from_iter([
    ///     ("carrier", Arc::new(StringArray::from(vec!["UA", "AA", "UA", "B6"])) as _),
    ///     ("delay", Arc::new(Int64Array::from(vec![5, 10, -3, 7])) as _),
    /// ]).unwrap();
    /// let airlines = RecordBatch::try_from_iter([
    ///     ("carrier", Arc::new(StringArray::from(vec!["UA", "AA"])) as _),
    ///     ("name", Arc::new(StringArray::from(vec!["United", "American"])) as _),
    /// ]).unwrap();
    /// let flights = DataFrame::from_batch(flights, 2).unwrap();
    /// let airlines = DataFrame::from_batch(airlines, 1).unwrap();
    /// let named = flights.merge(&airlines, &MergeOptions::on(["carrier"]).how(How::Left)).unwrap();
    /// assert!(named.explain().contains("the right side is one partition"));
    /// let out = named.compute_on(&kiln_local::LocalScheduler::new()).unwrap();
    /// assert_eq!(out.num_rows(), 4);
    /// assert_eq!(out.column(2).null_count(), 1);
    /// ```
    ///
    /// # Errors
    /// [`DataFrameError::ColumnNotFound`] for a missing key; [`DataFrameError::TypeMismatch`]
    /// when a left key and its right key cannot be compared (a number and a string);
    /// [`DataFrameError::InvalidArgument`] for no keys, different numbers of keys, or suffixes
    /// that leave two columns with one name.
    pub fn merge(&self, right: &DataFrame, options: &MergeOptions) -> Result<DataFrame> {
        let spec = plan_merge(
            options.how,
            &self.frame.schema,
            &right.frame.schema,
            &options.left_on,
            &options.right_on,
            (&options.suffixes.0, &options.suffixes.1),
        )?;
        let strategy = choose(&self.frame, &right.frame, &spec, options);
        let schema = spec.output.0.clone();
        let partitioning = match strategy {
            MergeStrategy::Blockwise | MergeStrategy::Shuffle { .. } => {
                let n = match strategy {
                    MergeStrategy::Shuffle { npartitions, .. } => npartitions,
                    _ => self.npartitions(),
                };
                merged_partitioning(&spec, n)
            }
            _ => None,
        };
        let source = Source::Merge { left: self.frame.clone(), right: right.frame.clone(), spec, strategy };
        Ok(derived(source, schema, partitioning))
    }

    /// Joins with `right` on both frames' index columns (pandas' `join`, with `how`): a merge
    /// whose keys are the two indexes, kept as one column under the left index's name (both
    /// are kept only when the right frame has another column of that name).
    ///
    /// # Errors
    /// [`DataFrameError::InvalidArgument`] when either frame has no index; as
    /// [`DataFrame::merge`].
    pub fn join(&self, right: &DataFrame, how: How) -> Result<DataFrame> {
        let (Some(left_index), Some(right_index)) = (self.index(), right.index()) else {
            return Err(DataFrameError::InvalidArgument(
                "join matches rows on the index: both frames need one (set_index or from_sorted_batches)".into(),
            ));
        };
        // pandas keeps one index: the right one takes the left's name (when no other right
        // column has it), so the keys merge as one column, coalesced in an outer join.
        if left_index != right_index && !right.columns().iter().any(|c| c == left_index) {
            let renamed = right.rename(&[(right_index, left_index)])?;
            return self.merge(&renamed, &MergeOptions::on([left_index]).how(how));
        }
        self.merge(right, &MergeOptions::left_right([left_index], [right_index]).how(how))
    }
}
