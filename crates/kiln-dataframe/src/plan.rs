//! The logical plan: a source of partitions followed by row-wise steps, and the optimizer that
//! prepares it for lowering (projection pushdown into the reader, pruning of unused columns,
//! fusion of every row-wise step into the partition's one task).
//!
//! Row-wise steps are a persistent list shared between frames (each operation adds one node),
//! walked and dropped iteratively, so a chain of 100,000 operations builds, lowers and drops on
//! a small stack.

use std::fmt::Write as _;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use serde::{Deserialize, Serialize};

use crate::agg::AggSpec;
use crate::expr::Expr;
use crate::io::{CsvOptions, CsvPart};
use crate::join::MergeSpec;
use crate::lower::SerdeSchema;
use crate::scalar::Scalar;
use crate::sort::SerdeBatch;

/// One row-wise step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum Step {
    /// The output columns, exactly, each an expression of the input (select, assign, rename
    /// and drop are all projections).
    Project(Vec<(String, Expr)>),
    /// Keeps the rows where the predicate is true (missing counts as false).
    Filter(Expr),
    /// Sorts the partition's rows by columns (`true`: descending), missing values last,
    /// stable.
    Sort(Vec<(String, bool)>),
    /// Keeps the first row of each distinct value of these columns (missing equal to missing).
    DropDuplicates(Vec<String>),
    /// Keeps the rows whose `column` lies in `[low, high]` (either end optional), compared as
    /// the index is sorted.
    Range { column: String, low: Option<Scalar>, high: Option<Scalar> },
    /// A user function registered under `id` (`map_partitions`), returning `meta`'s columns.
    Map { id: String, meta: SerdeSchema },
}

impl Step {
    fn describe(&self) -> String {
        match self {
            Step::Project(columns) => {
                let list: Vec<String> = columns
                    .iter()
                    .map(|(name, e)| match e {
                        Expr::Column(c) if c == name => name.clone(),
                        e => format!("{name} := {e}"),
                    })
                    .collect();
                format!("project [{}]", list.join(", "))
            }
            Step::Filter(e) => format!("filter {e}"),
            Step::Sort(by) => {
                let by: Vec<String> =
                    by.iter().map(|(c, desc)| if *desc { format!("{c} desc") } else { c.clone() }).collect();
                format!("sort within partition by [{}]", by.join(", "))
            }
            Step::DropDuplicates(subset) => format!("drop duplicates of [{}] within partition", subset.join(", ")),
            Step::Range { column, low, high } => {
                let end = |v: &Option<Scalar>| v.as_ref().map_or(String::new(), ToString::to_string);
                format!("loc {column} in [{}, {}]", end(low), end(high))
            }
            Step::Map { id, .. } => format!("map_partitions {id}"),
        }
    }
}

/// A persistent list of steps, newest first.
#[derive(Clone, Default)]
pub(crate) struct Steps(Option<Arc<StepNode>>);

pub(crate) struct StepNode {
    step: Step,
    prev: Steps,
    len: usize,
}

impl Drop for StepNode {
    fn drop(&mut self) {
        // Unlink iteratively: a recursive drop of a long chain would overflow the stack.
        let mut next = self.prev.0.take();
        while let Some(node) = next {
            match Arc::try_unwrap(node) {
                Ok(mut node) => next = node.prev.0.take(),
                Err(_) => break,
            }
        }
    }
}

impl Steps {
    pub(crate) fn push(&self, step: Step) -> Steps {
        Steps(Some(Arc::new(StepNode { step, prev: self.clone(), len: self.len() + 1 })))
    }

    pub(crate) fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |n| n.len)
    }

    fn same_node(&self, other: &Steps) -> bool {
        match (&self.0, &other.0) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// The steps, oldest first.
    pub(crate) fn to_vec(&self) -> Vec<Step> {
        let mut out = Vec::with_capacity(self.len());
        let mut node = self.0.as_deref();
        while let Some(n) = node {
            out.push(n.step.clone());
            node = n.prev.0.as_deref();
        }
        out.reverse();
        out
    }
}

/// Where a frame's partitions come from.
pub(crate) enum Source {
    /// One partition per CSV file, or per block of one (`parts`, in file order).
    Csv { files: Vec<String>, parts: Vec<CsvPart>, schema: SchemaRef, options: CsvOptions },
    /// One partition per Parquet file, or per row group of one (`row_groups`: each partition's
    /// file index and row group, in file order); `column_bytes` is the decoded size of each
    /// column of the first file (the planner's size estimate).
    Parquet { files: Vec<String>, row_groups: Option<Vec<(usize, usize)>>, schema: SchemaRef, column_bytes: Vec<u64> },
    /// Batches held in memory, one per partition.
    Batches { partitions: Vec<RecordBatch>, schema: SchemaRef },
    /// The result of a group-by of another frame.
    Aggregate { input: Arc<Frame>, spec: AggSpec, strategy: AggStrategy },
    /// Another frame's rows moved to partition `hash(keys) % npartitions`.
    Shuffle { input: Arc<Frame>, keys: SerdeSchema, npartitions: usize, max_branch: usize },
    /// Two frames merged on keys.
    Merge { left: Arc<Frame>, right: Arc<Frame>, spec: MergeSpec, strategy: MergeStrategy },
    /// Another frame's rows moved to the partition whose divisions hold their `column` value:
    /// partition `i` gets `[b[i-1], b[i])` of the interior `boundaries` `b` (one column).
    RangeShuffle { input: Arc<Frame>, column: String, boundaries: SerdeBatch, missing_first: bool, max_branch: usize },
    /// Another frame (sorted by its index, divisions known) aggregated per bucket of time.
    Resample { input: Arc<Frame>, spec: crate::timeseries::ResampleSpec },
    /// Another frame (sorted by its index, divisions known) with a window, shift or diff of
    /// each row, borrowing rows across partition boundaries.
    Window { input: Arc<Frame>, spec: crate::timeseries::WindowSpec },
    /// Another frame's rows moved to new divisions of its index.
    RepartitionDivisions { input: Arc<Frame>, divisions: Vec<Scalar> },
    /// Some of another frame's partitions, in this order (the others are never computed).
    Subset { input: Arc<Frame>, partitions: Vec<usize> },
    /// Another frame's partitions concatenated in runs of neighbours, or split by rows, into
    /// `npartitions`.
    Repartition { input: Arc<Frame>, npartitions: usize },
    /// Partitions computed by another collection's tasks (a bag's records converted, or
    /// `from_delayed` batches).
    External { parts: Arc<dyn ExternalPartitions>, schema: SchemaRef },
}

/// Another collection's partitions as batches: one task per partition, whose value is a
/// `RecordBatch` of the frame's schema.
pub(crate) trait ExternalPartitions: Send + Sync {
    /// How many partitions (tasks) [`ExternalPartitions::add_to`] adds.
    fn npartitions(&self) -> usize;
    /// Adds the tasks and returns them in partition order.
    fn add_to(&self, builder: &mut kiln_graph::GraphBuilder)
    -> Result<Vec<kiln_graph::TaskId>, kiln_graph::GraphError>;
    /// The source's task label and its name in `explain`.
    fn label(&self) -> (&'static str, &'static str) {
        ("from-bag", "from_bag")
    }
    /// Each partition's number of rows, when known without computing (an array's chunks).
    #[cfg_attr(not(feature = "array"), allow(dead_code))]
    fn lengths(&self) -> Option<Vec<usize>> {
        None
    }
}

/// How a group-by combines its partial aggregations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AggStrategy {
    /// A tree: `split_every` partials per combine task, one output partition.
    Tree { split_every: usize },
    /// Partials shuffled by key into `split_out` partitions, each finalized alone.
    Shuffle { split_out: usize, max_branch: usize },
    /// The input is already partitioned by (a subset of) the keys: each partition is
    /// aggregated and finalized alone, no data moves.
    Blockwise,
}

/// How a merge pairs partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MergeStrategy {
    /// Partition `i` with partition `i`: both sides are hash-partitioned alike on their keys.
    Blockwise,
    /// Every left partition with the whole right side (one partition, or concatenated).
    BroadcastRight,
    /// Every right partition with the whole left side.
    BroadcastLeft,
    /// Both sides shuffled by key into `npartitions` (a side already partitioned so is not
    /// moved), then partition `i` with partition `i`.
    Shuffle { npartitions: usize, max_branch: usize },
}

/// How rows are spread over partitions by a hash of key columns (after a shuffle): rows with
/// equal keys (compared as `keys`' types) share a partition.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Partitioning {
    /// The key columns, with the types they were hashed as.
    pub(crate) keys: SchemaRef,
    pub(crate) npartitions: usize,
}

impl Source {
    pub(crate) fn npartitions(&self) -> usize {
        match self {
            Source::Csv { parts, .. } => parts.len(),
            Source::Parquet { files, row_groups, .. } => row_groups.as_ref().map_or(files.len(), Vec::len),
            Source::Batches { partitions, .. } => partitions.len(),
            Source::Aggregate { input, strategy, .. } => match strategy {
                AggStrategy::Tree { .. } => 1,
                AggStrategy::Shuffle { split_out, .. } => *split_out,
                AggStrategy::Blockwise => input.source.npartitions(),
            },
            Source::Shuffle { npartitions, .. } | Source::Repartition { npartitions, .. } => *npartitions,
            Source::RangeShuffle { boundaries, .. } => boundaries.0.num_rows() + 1,
            Source::Subset { partitions, .. } => partitions.len(),
            Source::External { parts, .. } => parts.npartitions(),
            Source::Resample { spec, .. } => spec.npartitions(),
            Source::Window { input, .. } => input.source.npartitions(),
            Source::RepartitionDivisions { divisions, .. } => divisions.len() - 1,
            Source::Merge { left, right, strategy, .. } => match strategy {
                MergeStrategy::Blockwise | MergeStrategy::BroadcastRight => left.source.npartitions(),
                MergeStrategy::BroadcastLeft => right.source.npartitions(),
                MergeStrategy::Shuffle { npartitions, .. } => *npartitions,
            },
        }
    }

    pub(crate) fn schema(&self) -> SchemaRef {
        match self {
            Source::Csv { schema, .. }
            | Source::Parquet { schema, .. }
            | Source::Batches { schema, .. }
            | Source::External { schema, .. } => schema.clone(),
            Source::Aggregate { spec, .. } => spec.output.0.clone(),
            Source::Shuffle { input, .. }
            | Source::RangeShuffle { input, .. }
            | Source::Subset { input, .. }
            | Source::Repartition { input, .. }
            | Source::RepartitionDivisions { input, .. } => input.schema.clone(),
            Source::Resample { spec, .. } => spec.agg.output.0.clone(),
            Source::Window { spec, .. } => spec.output.0.clone(),
            Source::Merge { spec, .. } => spec.output.0.clone(),
        }
    }

    /// A rough estimate of the decoded bytes of the source's partitions, reading only the
    /// `projection` columns of a file source, or `None` when nothing cheap tells: the first
    /// Parquet footer's column sizes times the number of files; in-memory batches' buffers; a
    /// merge's two sides together (a key join of a small side with a larger one is about as
    /// large as both); a shuffle's or repartition's input.
    pub(crate) fn estimated_bytes(&self, projection: Option<&[String]>) -> Option<u64> {
        let wanted = |name: &str| projection.is_none_or(|p| p.iter().any(|c| c == name));
        match self {
            Source::Parquet { files, schema, column_bytes, .. } => {
                let per_file: u64 = schema
                    .fields()
                    .iter()
                    .zip(column_bytes)
                    .filter(|(f, _)| wanted(f.name()))
                    .map(|(_, bytes)| *bytes)
                    .sum();
                Some(per_file.saturating_mul(files.len() as u64))
            }
            Source::Batches { partitions, .. } => Some(
                partitions
                    .iter()
                    .flat_map(|b| {
                        b.schema()
                            .fields()
                            .iter()
                            .zip(b.columns())
                            .map(|(f, c)| (wanted(f.name()), c.clone()))
                            .collect::<Vec<_>>()
                    })
                    .filter(|(w, _)| *w)
                    .map(|(_, c)| c.get_array_memory_size() as u64)
                    .sum(),
            ),
            Source::Merge { left, right, .. } => Some(left.estimated_bytes()?.saturating_add(right.estimated_bytes()?)),
            Source::Shuffle { input, .. } | Source::RangeShuffle { input, .. } | Source::Repartition { input, .. } => {
                input.estimated_bytes()
            }
            _ => None,
        }
    }

    /// A short name used in task keys.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Source::Csv { .. } => "read-csv",
            Source::Parquet { .. } => "read-parquet",
            Source::Batches { .. } => "from-batches",
            Source::Aggregate { .. } => "groupby",
            Source::Shuffle { .. } => "shuffle",
            Source::RangeShuffle { .. } => "range-shuffle",
            Source::Subset { .. } => "partitions",
            Source::Repartition { .. } => "repartition",
            Source::RepartitionDivisions { .. } => "repartition-divisions",
            Source::Resample { .. } => "resample",
            Source::Window { .. } => "window",
            Source::Merge { .. } => "merge",
            Source::External { parts, .. } => parts.label().0,
        }
    }

    fn describe(&self, projection: Option<&[String]>) -> String {
        let columns = match projection {
            Some(p) => format!("columns [{}]", p.join(", ")),
            None => format!("all {} columns", self.schema().fields().len()),
        };
        match self {
            Source::Csv { files, parts, .. }
                if parts.iter().all(|p| p.block.is_none()) && parts.len() == files.len() =>
            {
                format!("read_csv {} file(s), {columns}", files.len())
            }
            Source::Csv { files, parts, .. } => {
                format!("read_csv {} file(s) in {} partition(s) by blocksize, {columns}", files.len(), parts.len())
            }
            Source::Parquet { files, row_groups: None, .. } => {
                format!("read_parquet {} file(s), {columns}", files.len())
            }
            Source::Parquet { files, row_groups: Some(groups), .. } => {
                format!(
                    "read_parquet {} file(s) in {} partition(s), one per row group, {columns}",
                    files.len(),
                    groups.len()
                )
            }
            Source::Batches { partitions, .. } => format!("from_batches {} partition(s), {columns}", partitions.len()),
            Source::External { parts, .. } => {
                format!("{} {} partition(s), {columns}", parts.label().1, parts.npartitions())
            }
            Source::Aggregate { spec, strategy, .. } => {
                let keys: Vec<&str> = spec.keys.iter().map(|(n, _)| n.as_str()).collect();
                let aggs: Vec<String> =
                    spec.aggs.iter().map(|a| format!("{} := {}({})", a.name, a.func.name(), a.input)).collect();
                let how = match strategy {
                    AggStrategy::Tree { split_every } => format!("tree, {split_every} partials per combine"),
                    AggStrategy::Shuffle { split_out, max_branch } => {
                        format!("shuffle of partials into {split_out} partitions (max_branch {max_branch})")
                    }
                    AggStrategy::Blockwise => "blockwise: input already partitioned by the keys".to_string(),
                };
                format!("groupby [{}] agg [{}] ({how}), {columns}", keys.join(", "), aggs.join(", "))
            }
            Source::Shuffle { keys, npartitions, max_branch, .. } => {
                format!(
                    "shuffle on [{}] into {npartitions} partitions (max_branch {max_branch}), {columns}",
                    key_names(&keys.0)
                )
            }
            Source::RangeShuffle { column, boundaries, max_branch, .. } => format!(
                "range shuffle on {column} into {} partitions (max_branch {max_branch}), {columns}",
                boundaries.0.num_rows() + 1
            ),
            Source::Subset { input, partitions } => {
                format!("partitions {partitions:?} of {}, {columns}", input.source.npartitions())
            }
            Source::Resample { spec, .. } => {
                format!("{} into {} bucket-aligned partitions, {columns}", spec.describe(), spec.npartitions())
            }
            Source::Window { spec, .. } => format!("{}, {columns}", spec.describe()),
            Source::RepartitionDivisions { input, divisions } => format!(
                "repartition {} partitions to divisions [{}], {columns}",
                input.source.npartitions(),
                divisions.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            ),
            Source::Repartition { input, npartitions } => {
                format!("repartition {} into {npartitions} partitions, {columns}", input.source.npartitions())
            }
            Source::Merge { left, right, spec, strategy } => {
                let estimate = |frame: &Frame| frame.estimated_bytes().map_or("size unknown".to_string(), human_bytes);
                let sizes = format!("estimated {} and {}", estimate(left), estimate(right));
                let how = match strategy {
                    MergeStrategy::Blockwise => "blockwise: both sides partitioned alike".to_string(),
                    MergeStrategy::BroadcastRight if right.source.npartitions() == 1 => {
                        "blockwise: the right side is one partition".to_string()
                    }
                    MergeStrategy::BroadcastLeft if left.source.npartitions() == 1 => {
                        "blockwise: the left side is one partition".to_string()
                    }
                    MergeStrategy::BroadcastRight => {
                        format!("broadcast of the right side, hash table built once; {sizes}")
                    }
                    MergeStrategy::BroadcastLeft => {
                        format!("broadcast of the left side, hash table built once; {sizes}")
                    }
                    MergeStrategy::Shuffle { npartitions, .. } => {
                        format!("hash shuffle of both sides into {npartitions} partitions; {sizes}")
                    }
                };
                format!(
                    "merge how={} on [{}] = [{}] ({how}), {columns}",
                    spec.how.name(),
                    key_names(&spec.left_keys.0),
                    key_names(&spec.right_keys.0)
                )
            }
        }
    }
}

/// Bytes for people: `1.3 MB`, `84 MB`, `2.1 GB`.
fn human_bytes(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.1} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.1} kB", b / 1e3)
    } else {
        format!("{bytes} B")
    }
}

fn key_names(keys: &arrow::datatypes::Schema) -> String {
    keys.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ")
}

/// Whether a frame's partitions are known to be sorted by its index, with the boundaries.
#[derive(Debug, Clone, PartialEq)]
pub enum Divisions {
    /// Nothing is known about how rows are spread over partitions.
    Unknown,
    /// `npartitions + 1` sorted boundaries of the index column: partition `i` holds the index
    /// values in `[b[i], b[i+1])` (the last one including its upper end), as in Dask.
    Known(Vec<Scalar>),
}

/// A frame's logical plan and what is known about its output.
pub(crate) struct Frame {
    pub(crate) source: Arc<Source>,
    /// Distinguishes sources with equal descriptions (in-memory batches, re-read files).
    pub(crate) token: u128,
    pub(crate) steps: Steps,
    pub(crate) schema: SchemaRef,
    pub(crate) divisions: Divisions,
    pub(crate) index: Option<String>,
    /// Set when the partitions are hash-partitioned by key columns the frame still has.
    pub(crate) partitioning: Option<Partitioning>,
}

/// A frame prepared for lowering: the source read with a projection, the steps that remain.
pub(crate) struct Optimized {
    /// Source columns to read, in this order (`None`: all).
    pub(crate) projection: Option<Vec<String>>,
    pub(crate) steps: Vec<Step>,
    /// For a Parquet source: the part of the leading filters that row-group statistics can
    /// decide, over source columns ([`crate::prune::pushed_predicate`]).
    pub(crate) pushed: Option<Expr>,
}

/// The share of its rows a filter is assumed to keep when sizes are estimated: nothing is known
/// of a predicate's selectivity before it runs, and a half errs towards the larger side.
pub(crate) const FILTER_KEEPS: f64 = 0.5;

impl Frame {
    /// A rough estimate of the frame's decoded bytes ([`Source::estimated_bytes`] of the
    /// columns its steps read, halved by each filter), or `None` when unknown. The planner
    /// compares merge sides with it.
    pub(crate) fn estimated_bytes(&self) -> Option<u64> {
        let optimized = self.optimize(None);
        let source = self.source.estimated_bytes(optimized.projection.as_deref())?;
        let filters = optimized.steps.iter().filter(|s| matches!(s, Step::Filter(_) | Step::Range { .. })).count();
        Some((source as f64 * FILTER_KEEPS.powi(i32::try_from(filters).unwrap_or(i32::MAX))) as u64)
    }

    /// Pushes the columns needed downstream (`needed`: `None` for all of the frame's columns)
    /// into the reader, dropping projected columns nobody reads.
    pub(crate) fn optimize(&self, needed: Option<Vec<String>>) -> Optimized {
        let steps = self.steps.to_vec();
        let source_schema = &self.source.schema();
        let mut needed = needed;
        let mut kept = Vec::with_capacity(steps.len());
        for step in steps.into_iter().rev() {
            match step {
                Step::Project(columns) => {
                    let columns: Vec<(String, Expr)> = match &needed {
                        None => columns,
                        Some(wanted) => columns.into_iter().filter(|(name, _)| wanted.contains(name)).collect(),
                    };
                    let mut reads = Vec::new();
                    for (_, e) in &columns {
                        e.columns_into(&mut reads);
                    }
                    needed = Some(reads);
                    kept.push(Step::Project(columns));
                }
                Step::Filter(predicate) => {
                    if let Some(wanted) = &mut needed {
                        predicate.columns_into(wanted);
                    }
                    kept.push(Step::Filter(predicate));
                }
                // A user function may read any column it is given.
                step @ Step::Map { .. } => {
                    needed = None;
                    kept.push(step);
                }
                step => {
                    if let Some(wanted) = &mut needed {
                        let reads: Vec<&String> = match &step {
                            Step::Sort(by) => by.iter().map(|(c, _)| c).collect(),
                            Step::DropDuplicates(subset) => subset.iter().collect(),
                            Step::Range { column, .. } => vec![column],
                            _ => Vec::new(),
                        };
                        for c in reads {
                            if !wanted.contains(c) {
                                wanted.push(c.clone());
                            }
                        }
                    }
                    kept.push(step);
                }
            }
        }
        kept.reverse();
        let projection = needed.map(|wanted| {
            // Source order keeps reads sequential; an empty projection still needs one column
            // to carry the row count.
            let mut in_order: Vec<String> =
                source_schema.fields().iter().map(|f| f.name().clone()).filter(|n| wanted.contains(n)).collect();
            if in_order.is_empty() {
                in_order.extend(source_schema.fields().first().map(|f| f.name().clone()));
            }
            in_order
        });
        let projection = projection.filter(|p| p.len() < source_schema.fields().len());
        let pushed = match self.source.as_ref() {
            Source::Parquet { .. } => crate::prune::pushed_predicate(&kept, source_schema),
            _ => None,
        };
        Optimized { projection, steps: kept, pushed }
    }

    /// Whether `expr`, written against `origin`, computes the same rows in this frame: this
    /// frame is `origin` plus projections that pass every column `expr` reads through unchanged
    /// (so `df.assign(a=..).assign(b=df.x)` works as in pandas), with no filter in between.
    pub(crate) fn accepts(self: &Arc<Frame>, origin: &Arc<Frame>, expr: &Expr) -> bool {
        if Arc::ptr_eq(self, origin) {
            return true;
        }
        if !Arc::ptr_eq(&self.source, &origin.source) || self.token != origin.token {
            return false;
        }
        let mut reads = Vec::new();
        expr.columns_into(&mut reads);
        let mut node = &self.steps;
        while !node.same_node(&origin.steps) {
            let Some(n) = node.0.as_deref() else { return false };
            match &n.step {
                Step::Filter(_) | Step::Sort(_) | Step::DropDuplicates(_) | Step::Range { .. } | Step::Map { .. } => {
                    return false;
                }
                Step::Project(columns) => {
                    let passes = |c: &String| {
                        columns.iter().any(|(name, e)| name == c && matches!(e, Expr::Column(src) if src == c))
                    };
                    if !reads.iter().all(passes) {
                        return false;
                    }
                }
            }
            node = &n.prev;
        }
        true
    }

    /// The plan as written and as it will run.
    pub(crate) fn explain(&self, needed: Option<Vec<String>>) -> String {
        let mut out = String::new();
        let npartitions = self.source.npartitions();
        let _ = writeln!(out, "logical plan ({npartitions} partitions):");
        let _ = writeln!(out, "  {}", self.source.describe(None));
        for step in self.steps.to_vec() {
            let _ = writeln!(out, "  {}", step.describe());
        }
        let optimized = self.optimize(needed);
        let _ = writeln!(out, "optimized plan (one task per partition, steps fused):");
        let _ = writeln!(out, "  {}", self.source.describe(optimized.projection.as_deref()));
        if let Some(pushed) = &optimized.pushed {
            let _ = writeln!(out, "    row groups read only where statistics allow {pushed}");
        }
        for step in &optimized.steps {
            let _ = writeln!(out, "  {}", step.describe());
        }
        let inputs: Vec<(String, &Frame, Option<Vec<String>>)> = match self.source.as_ref() {
            Source::Aggregate { input, spec, .. } => vec![(
                format!(
                    "group-by input ({} partitions, partial aggregation fused into each)",
                    input.source.npartitions()
                ),
                input,
                Some(spec.columns_read()),
            )],
            Source::Shuffle { input, .. }
            | Source::RangeShuffle { input, .. }
            | Source::Subset { input, .. }
            | Source::Repartition { input, .. }
            | Source::RepartitionDivisions { input, .. }
            | Source::Resample { input, .. }
            | Source::Window { input, .. } => {
                vec![(format!("input ({} partitions)", input.source.npartitions()), input, None)]
            }
            Source::Merge { left, right, spec, .. } => {
                let (l, r) = match &optimized.projection {
                    Some(wanted) => {
                        let (_, l, r) = spec.pruned(wanted);
                        (Some(l), Some(r))
                    }
                    None => (None, None),
                };
                vec![
                    (format!("merge left ({} partitions)", left.source.npartitions()), left, l),
                    (format!("merge right ({} partitions)", right.source.npartitions()), right, r),
                ]
            }
            _ => Vec::new(),
        };
        for (title, input, needed) in inputs {
            let _ = writeln!(out, "{title}:");
            for line in input.explain(needed).lines() {
                let _ = writeln!(out, "  {line}");
            }
        }
        out
    }
}
