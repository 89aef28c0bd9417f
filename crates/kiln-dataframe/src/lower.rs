//! Lowering plans to tasks: the portable kernels (one per partition, fusing the read and every
//! row-wise step; the tree of a group-by), the Arrow IPC codec that carries partitions between
//! processes, and the registration of both.
//!
//! Kernel ids are stable: `kiln.dataframe.partition`, `kiln.dataframe.groupby.combine`,
//! `kiln.dataframe.groupby.finalize`, `kiln.dataframe.shuffle.split`,
//! `kiln.dataframe.shuffle.select`, `kiln.dataframe.concat`, `kiln.dataframe.merge.join`,
//! `kiln.dataframe.shuffle.range-split`, `kiln.dataframe.slice-rows`, `kiln.dataframe.range-take`,
//! `kiln.dataframe.index-bounds`, `kiln.dataframe.resample`, `kiln.dataframe.window.carry`,
//! `kiln.dataframe.window`; never reuse or rename
//! one.

use std::any::TypeId;
use std::io::Cursor;
use std::sync::{Arc, Once};

use arrow::array::RecordBatch;
use arrow::datatypes::{Field, Schema, SchemaRef};
use kiln_graph::codec::ValueCodec;
use kiln_graph::kernel::{Portable, PortableKernel, input};
use kiln_graph::shuffle::{ShuffleKernels, SplitStage, staged_shuffle};
use kiln_graph::{
    Arg, CodecError, CodecRegistry, Encoded, GraphBuilder, GraphError, Kernel, KernelRegistry, Key, TaskError, TaskId,
    Tokenizer, Value,
};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::agg::{self, AggSpec};
use crate::error::{DataFrameError, Result};
use crate::io::{
    CsvBlock, CsvOptions, concat_pieces, read_csv_part, read_parquet_file, write_csv_file, write_parquet_file,
};
use crate::join::{BuildKernel, How, JoinKernel, JoinTable, JoinTableCodec, MergeSpec, Side};
use crate::plan::{AggStrategy, Frame, MergeStrategy, Source, Step};
use crate::shuffle::{BatchShuffle, ConcatKernel, PiecesCodec, SelectKernel, SplitKernel};
use crate::sort::{RangeShuffle, RangeSplitKernel};

/// The ids of the dataframe's portable kernels.
pub const KERNEL_IDS: [&str; 15] = [
    crate::timeseries::RangeTakeKernel::ID,
    crate::timeseries::IndexBoundsKernel::ID,
    crate::timeseries::ResampleKernel::ID,
    crate::timeseries::CarryKernel::ID,
    crate::timeseries::WindowKernel::ID,
    RangeSplitKernel::ID,
    RowSliceKernel::ID,
    PartitionKernel::ID,
    CombineKernel::ID,
    FinalizeKernel::ID,
    SplitKernel::ID,
    SelectKernel::ID,
    ConcatKernel::ID,
    JoinKernel::ID,
    BuildKernel::ID,
];

/// The codec tag of a partition (an Arrow IPC stream of one record batch).
pub const BATCH_CODEC_TAG: &str = "kiln.dataframe.batch";

/// A schema in kernel parameters: its Arrow IPC encoding, so every Arrow type travels.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SerdeSchema(pub(crate) SchemaRef);

impl Serialize for SerdeSchema {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let mut bytes = Vec::new();
        let mut writer =
            arrow::ipc::writer::StreamWriter::try_new(&mut bytes, &self.0).map_err(serde::ser::Error::custom)?;
        writer.finish().map_err(serde::ser::Error::custom)?;
        drop(writer);
        serializer.serialize_bytes(&bytes)
    }
}

impl<'de> Deserialize<'de> for SerdeSchema {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let bytes: Vec<u8> = serde::de::Deserialize::deserialize(deserializer)?;
        let reader =
            arrow::ipc::reader::StreamReader::try_new(Cursor::new(bytes), None).map_err(serde::de::Error::custom)?;
        Ok(SerdeSchema(reader.schema()))
    }
}

/// How a partition task gets its rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum ReadSpec {
    Csv {
        path: String,
        /// The byte range read, `None` for the whole file.
        block: Option<CsvBlock>,
        schema: SerdeSchema,
        projection: Option<Vec<usize>>,
        options: CsvOptions,
    },
    Parquet {
        path: String,
        schema: SerdeSchema,
        projection: Option<Vec<String>>,
        /// Row groups whose statistics rule this predicate out are not read.
        prune: Option<crate::expr::Expr>,
        /// Only this row group is read (a partition per row group).
        row_group: Option<usize>,
    },
    /// The task's one input (an in-memory batch, or another stage's result), projected.
    Input { projection: Option<Vec<String>> },
}

/// What a partition task returns after its steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum Terminal {
    /// The partition itself.
    Batch,
    /// Its first rows only.
    Head(usize),
    /// Its partial aggregation states.
    Partial(AggSpec),
    /// Written to this Parquet file; returns the rows written (`u64`).
    WriteParquet(String),
    /// Written to this CSV file (gzipped when it ends in `.gz`); returns the rows written.
    WriteCsv(String),
    /// Up to this many evenly spaced values of a column, with weights (for divisions).
    Sample(String, usize),
    /// The first and last value of a column, checked to be sorted (for `sorted=true`).
    Bounds(String),
    /// The number of rows (`u64`), for arrays made of the partitions.
    Length,
}

/// Reads one partition, applies the fused row-wise steps, then the terminal step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct PartitionKernel {
    read: ReadSpec,
    steps: Vec<Step>,
    /// A broadcast merge fused after `steps`: its table is the task's last input.
    probe: Option<ProbeStep>,
    terminal: Terminal,
}

/// A broadcast merge fused into the partition tasks of the side that probes: after that side's
/// own steps its rows are joined with the other side's [`JoinTable`], then the merged frame's
/// steps (`after`) run, all in the one task, so the probing side is never materialized on its
/// own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ProbeStep {
    spec: MergeSpec,
    /// The side the table holds.
    table: Side,
    after: Vec<Step>,
}

impl ProbeStep {
    /// Whether probing each piece of the partition alone gives what probing it whole would, for
    /// this terminal. Pieces joined in turn keep the probing side's row order, which is pandas'
    /// order except for an inner merge probing a table of the left side (ordered by left row):
    /// then only a partial aggregation, which ignores order, may take the pieces.
    fn streams(&self, terminal: &Terminal) -> bool {
        !(self.table == Side::Left && self.spec.how == How::Inner) || matches!(terminal, Terminal::Partial(_))
    }
}

/// One operation of a partition task: a row-wise step, or a probe of a join table.
enum Op<'a> {
    Step(&'a Step),
    Probe(&'a ProbeStep, &'a JoinTable),
}

impl Op<'_> {
    /// Whether the operation may run on each piece of a partition separately.
    fn streams(&self, terminal: &Terminal) -> bool {
        match self {
            Op::Step(step) => matches!(step, Step::Project(_) | Step::Filter(_)),
            Op::Probe(probe, _) => probe.streams(terminal),
        }
    }
}

fn task_error(error: DataFrameError) -> TaskError {
    TaskError::Failed(error.to_string())
}

impl PortableKernel for PartitionKernel {
    const ID: &'static str = "kiln.dataframe.partition";

    fn name(&self) -> &str {
        match (&self.read, &self.terminal) {
            (_, Terminal::Partial(_)) => "groupby-partial",
            (_, Terminal::WriteParquet(_)) => "to-parquet",
            (_, Terminal::WriteCsv(_)) => "to-csv",
            (_, Terminal::Sample(..)) => "sample",
            (_, Terminal::Bounds(_)) => "check-sorted",
            (_, Terminal::Length) => "partition-length",
            (ReadSpec::Csv { .. }, _) => "read-csv",
            (ReadSpec::Parquet { .. }, _) => "read-parquet",
            (ReadSpec::Input { .. }, _) => "partition",
        }
    }

    fn call(&self, inputs: &[Value]) -> std::result::Result<Value, TaskError> {
        let table = match &self.probe {
            Some(probe) => {
                let last = inputs.len().checked_sub(1).ok_or_else(|| TaskError::Failed("no join table".into()))?;
                Some((probe, input::<JoinTable>(inputs, last)?))
            }
            None => None,
        };
        let mut ops: Vec<Op> = self.steps.iter().map(Op::Step).collect();
        if let Some((probe, table)) = table {
            ops.push(Op::Probe(probe, table));
            ops.extend(probe.after.iter().map(Op::Step));
        }
        let batch = match &self.read {
            ReadSpec::Csv { path, block, schema, projection, options } => {
                match block {
                    Some(b) => kiln_graph::memory::check_alloc(path, b.end.saturating_sub(b.start))?,
                    None => check_file_fits(path)?,
                }
                read_csv_part(path, block.as_ref(), &schema.0, projection.as_deref(), options).map_err(task_error)?
            }
            ReadSpec::Parquet { path, schema, projection, prune, row_group } => {
                // A partition of one row group need not fit the whole file.
                match row_group {
                    None => check_file_fits(path)?,
                    Some(group) => check_row_group_fits(path, *group)?,
                }
                // The leading row-wise steps (and a probe) run on each piece as it is decoded;
                // when they are all the steps and a partial aggregation ends the task, it runs
                // on each piece too and the pieces' states are combined, so the rows are never
                // joined.
                let rowwise = ops.iter().take_while(|op| op.streams(&self.terminal)).count();
                let (head, rest) = ops.split_at(rowwise);
                if let (Terminal::Partial(spec), true) = (&self.terminal, rest.is_empty()) {
                    let as_dictionary = grouped_only(spec, head);
                    let partials = read_parquet_file(
                        path,
                        &schema.0,
                        projection.as_deref(),
                        prune.as_ref(),
                        *row_group,
                        &as_dictionary,
                        &|b| partial_after(spec, b, head),
                    )
                    .map_err(task_error)?;
                    let state = match partials.as_slice() {
                        [one] => one.clone(),
                        many => agg::combine(spec, &many.iter().collect::<Vec<_>>()).map_err(task_error)?,
                    };
                    return Ok(Value::new(state));
                }
                let pieces =
                    read_parquet_file(path, &schema.0, projection.as_deref(), prune.as_ref(), *row_group, &[], &|b| {
                        apply_ops(b, head)
                    })
                    .map_err(task_error)?;
                let batch = concat_pieces(path, pieces).map_err(task_error)?;
                return self.finish_after(batch, rest);
            }
            ReadSpec::Input { projection } => {
                let batch = input::<RecordBatch>(inputs, 0)?;
                match projection {
                    Some(names) => project_by_name(batch, names).map_err(task_error)?,
                    None => batch.clone(),
                }
            }
        };
        if let Terminal::Partial(spec) = &self.terminal {
            return Ok(Value::new(partial_after(spec, batch, &ops).map_err(task_error)?));
        }
        self.finish_after(batch, &ops)
    }
}

/// The columns that a partial aggregation reads only as whole group keys, and that the steps
/// before it (`ops`, filters and projections that pass them through) do not read: they may
/// arrive dictionary-encoded, since grouping numbers a dictionary's values and the partial
/// state holds the keys in their own type again.
fn grouped_only(spec: &AggSpec, ops: &[Op]) -> Vec<String> {
    let mut other = Vec::new();
    for agg in &spec.aggs {
        agg.input.columns_into(&mut other);
    }
    let mut keys = Vec::new();
    for (_, key) in &spec.keys {
        match key {
            crate::expr::Expr::Column(c) => keys.push(c.clone()),
            e => e.columns_into(&mut other),
        }
    }
    for op in ops {
        match op {
            Op::Step(Step::Filter(predicate)) => predicate.columns_into(&mut other),
            Op::Step(Step::Project(columns)) => {
                for (name, e) in columns {
                    match e {
                        crate::expr::Expr::Column(c) if c == name => {}
                        e => e.columns_into(&mut other),
                    }
                }
            }
            // Any other step (or a join) may compare or copy the column as its own type.
            _ => return Vec::new(),
        }
    }
    keys.retain(|k| !other.contains(k));
    keys
}

/// Below this share of kept rows a filter copies them before a partial aggregation; above it
/// the aggregation reads through the filter's mask: copying nearly every row of every column
/// costs more than evaluating the aggregated expressions on the few rows left out.
const MASKED_AGG_MIN_KEPT: f64 = 0.5;

/// The partial aggregation of a partition after its row-wise steps. Trailing filters become
/// one mask the aggregation reads through, when they keep most rows and neither they nor the
/// aggregation can fail on the values of rows the filter would drop.
fn partial_after(spec: &AggSpec, batch: RecordBatch, ops: &[Op]) -> Result<RecordBatch> {
    let filters = ops.iter().rev().take_while(|op| matches!(op, Op::Step(Step::Filter(_)))).count();
    let (before, trailing) = ops.split_at(ops.len() - filters);
    let values_safe = trailing.iter().skip(1).all(|op| !matches!(op, Op::Step(Step::Filter(p)) if p.fails_on_values()))
        && spec.keys.iter().all(|(_, e)| !e.fails_on_values())
        && spec.aggs.iter().all(|a| !a.input.fails_on_values());
    if filters == 0 || !values_safe {
        return agg::partial(spec, &apply_ops(batch, ops)?);
    }
    let batch = apply_ops(batch, before)?;
    let mut mask: Option<arrow::array::BooleanArray> = None;
    for op in trailing {
        let Op::Step(Step::Filter(predicate)) = op else { continue };
        let next = filter_mask(&batch, predicate)?;
        mask = Some(match mask {
            None => next,
            Some(m) => {
                arrow::compute::and(&m, &next).map_err(|e| DataFrameError::compute(format!("filter {predicate}"), e))?
            }
        });
    }
    let Some(mask) = mask else { return agg::partial(spec, &batch) };
    let kept = mask.true_count();
    if batch.num_rows() == 0 || (kept as f64) < MASKED_AGG_MIN_KEPT * batch.num_rows() as f64 {
        let filtered =
            arrow::compute::filter_record_batch(&batch, &mask).map_err(|e| DataFrameError::compute("filter", e))?;
        return agg::partial(spec, &filtered);
    }
    agg::partial_masked(spec, &batch, Some(&mask))
}

/// A filter's predicate on a partition, checked to be boolean, missing values made false.
fn filter_mask(batch: &RecordBatch, predicate: &crate::expr::Expr) -> Result<arrow::array::BooleanArray> {
    let mask = predicate.evaluate(batch)?;
    let mask =
        mask.as_any().downcast_ref::<arrow::array::BooleanArray>().ok_or_else(|| DataFrameError::TypeMismatch {
            operation: "filter".into(),
            expression: predicate.to_string(),
            found: mask.data_type().clone(),
            expected: "a boolean is needed".into(),
        })?;
    Ok(match arrow::array::Array::null_count(mask) {
        0 => mask.clone(),
        _ => arrow::compute::prep_null_mask_filter(mask),
    })
}

impl PartitionKernel {
    /// `ops` on the partition, then the terminal step.
    fn finish_after(&self, batch: RecordBatch, ops: &[Op]) -> std::result::Result<Value, TaskError> {
        if let (Terminal::WriteParquet(path), [before @ .., Op::Step(Step::Sort(by))]) = (&self.terminal, ops) {
            // A sorted partition (`set_index`, `sort_values`) is written in order, a slice at a
            // time, rather than sorted whole and then written.
            let batch = apply_ops(batch, before).map_err(task_error)?;
            let order = crate::sort::sort_order(&batch, by).map_err(task_error)?;
            return Ok(Value::new(write_parquet_file(path, &batch, Some(&order)).map_err(task_error)?));
        }
        self.finish(apply_ops(batch, ops).map_err(task_error)?)
    }

    /// The terminal step on the partition after its steps.
    fn finish(&self, batch: RecordBatch) -> std::result::Result<Value, TaskError> {
        Ok(match &self.terminal {
            Terminal::Batch => Value::new(batch),
            Terminal::Head(n) => Value::new(batch.slice(0, (*n).min(batch.num_rows()))),
            Terminal::Sample(column, count) => {
                Value::new(crate::sort::sample(&batch, column, *count).map_err(task_error)?)
            }
            Terminal::Bounds(column) => Value::new(crate::sort::bounds(&batch, column).map_err(task_error)?),
            Terminal::Partial(spec) => Value::new(agg::partial(spec, &batch).map_err(task_error)?),
            Terminal::WriteParquet(path) => Value::new(write_parquet_file(path, &batch, None).map_err(task_error)?),
            Terminal::WriteCsv(path) => Value::new(write_csv_file(path, &batch).map_err(task_error)?),
            Terminal::Length => Value::new(batch.num_rows() as u64),
        })
    }
}

/// A file about to be read whole must fit in the executor's memory budget.
fn check_file_fits(path: &str) -> std::result::Result<(), TaskError> {
    let size = crate::storage::storage_for(path).and_then(|s| s.size(path)).map_err(|e| task_error(e.into()))?;
    kiln_graph::memory::check_alloc(path, size)?;
    Ok(())
}

/// A row group about to be read must fit in the executor's memory budget (its column chunks'
/// stored bytes, as [`check_file_fits`] counts a file's). A group the file does not have is
/// left to the read, which names it.
fn check_row_group_fits(path: &str, group: usize) -> std::result::Result<(), TaskError> {
    let size = crate::io::parquet_row_group_bytes(path, group).map_err(task_error)?;
    kiln_graph::memory::check_alloc(&format!("{path} row group {group}"), size)?;
    Ok(())
}

fn project_by_name(batch: &RecordBatch, names: &[String]) -> Result<RecordBatch> {
    let schema = batch.schema();
    let indices = names
        .iter()
        .map(|n| {
            schema.index_of(n).map_err(|_| DataFrameError::ColumnNotFound {
                column: n.clone(),
                available: schema.fields().iter().map(|f| f.name().clone()).collect(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    batch.project(&indices).map_err(|e| DataFrameError::compute("projecting columns", e))
}

/// Runs a partition task's operations on one partition (or one piece of it).
fn apply_ops(mut batch: RecordBatch, ops: &[Op]) -> Result<RecordBatch> {
    let mut at = 0;
    while at < ops.len() {
        if let (Op::Step(Step::Filter(predicate)), Some(probe_at)) = (&ops[at], probe_after_filter(ops, at))
            && let Op::Probe(probe, table) = &ops[probe_at]
        {
            // The probe skips the rows the filter drops, and copies only the matched rows.
            let mask = filter_mask(&batch, predicate)?;
            let picked = apply_ops(batch, &ops[at + 1..probe_at])?;
            batch = crate::join::probe(&probe.spec, probe.table, table, &picked, Some(mask.values()))?;
            at = probe_at + 1;
            continue;
        }
        batch = match &ops[at] {
            Op::Step(step) => apply_steps(batch, std::slice::from_ref(*step))?,
            Op::Probe(probe, table) => crate::join::probe(&probe.spec, probe.table, table, &batch, None)?,
        };
        at += 1;
    }
    Ok(batch)
}

/// When `ops[at]` is a filter whose rows go, through projections that only pick or rename
/// columns, straight into an inner or semi merge's probe: where that probe is. A filter there
/// need not copy the rows it keeps, since the merge copies its matches again.
fn probe_after_filter(ops: &[Op], at: usize) -> Option<usize> {
    let Op::Step(Step::Filter(_)) = ops.get(at)? else { return None };
    for (j, op) in ops.iter().enumerate().skip(at + 1) {
        match op {
            Op::Step(Step::Project(columns))
                if columns.iter().all(|(_, e)| matches!(e, crate::expr::Expr::Column(_))) => {}
            Op::Probe(probe, _) if matches!(probe.spec.how, How::Inner | How::Semi) => return Some(j),
            _ => return None,
        }
    }
    None
}

/// Runs the row-wise steps on one partition.
pub(crate) fn apply_steps(mut batch: RecordBatch, steps: &[Step]) -> Result<RecordBatch> {
    for step in steps {
        batch = match step {
            Step::Project(columns) => {
                let arrays = columns.iter().map(|(_, e)| e.evaluate(&batch)).collect::<Result<Vec<_>>>()?;
                let fields: Vec<Field> =
                    columns.iter().zip(&arrays).map(|((n, _), a)| Field::new(n, a.data_type().clone(), true)).collect();
                let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
                RecordBatch::try_new_with_options(Arc::new(Schema::new(fields)), arrays, &options)
                    .map_err(|e| DataFrameError::compute("projecting columns", e))?
            }
            Step::Filter(predicate) => {
                let mask = filter_mask(&batch, predicate)?;
                arrow::compute::filter_record_batch(&batch, &mask)
                    .map_err(|e| DataFrameError::compute(format!("filter {predicate}"), e))?
            }
            Step::Sort(by) => crate::sort::sort_batch(&batch, by)?,
            Step::DropDuplicates(subset) => crate::sort::drop_duplicates(&batch, subset)?,
            Step::Range { column, low, high } => crate::sort::range(&batch, column, low.as_ref(), high.as_ref())?,
            Step::Map { id, meta } => crate::map::apply(id, &meta.0, &batch)?,
        };
    }
    Ok(batch)
}

fn batches(inputs: &[Value]) -> std::result::Result<Vec<&RecordBatch>, TaskError> {
    (0..inputs.len()).map(|i| input::<RecordBatch>(inputs, i)).collect()
}

/// Merges partial aggregation states of several partitions (an inner node of the tree).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct CombineKernel {
    spec: AggSpec,
}

impl PortableKernel for CombineKernel {
    const ID: &'static str = "kiln.dataframe.groupby.combine";
    fn name(&self) -> &str {
        "groupby-combine"
    }
    fn call(&self, inputs: &[Value]) -> std::result::Result<Value, TaskError> {
        Ok(Value::new(agg::combine(&self.spec, &batches(inputs)?).map_err(task_error)?))
    }
}

/// Merges the last partial states and computes the aggregation's values (the tree's root).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct FinalizeKernel {
    spec: AggSpec,
}

impl PortableKernel for FinalizeKernel {
    const ID: &'static str = "kiln.dataframe.groupby.finalize";
    fn name(&self) -> &str {
        "groupby-finalize"
    }
    fn call(&self, inputs: &[Value]) -> std::result::Result<Value, TaskError> {
        Ok(Value::new(agg::finalize(&self.spec, &batches(inputs)?).map_err(task_error)?))
    }
}

/// A batch as an Arrow IPC stream.
pub(crate) fn encode_batch(batch: &RecordBatch) -> std::result::Result<Vec<u8>, arrow::error::ArrowError> {
    let mut frame = Vec::new();
    let mut writer = arrow::ipc::writer::StreamWriter::try_new(&mut frame, &batch.schema())?;
    writer.write(batch)?;
    writer.finish()?;
    drop(writer);
    Ok(frame)
}

/// A batch from an Arrow IPC stream (an empty one when the stream has no batch).
///
/// The frame comes from a peer and may be anything. arrow-ipc validates what it builds, but
/// panics on some lies in a message (a buffer said to run past the body's end): such a frame
/// is an error here like any other malformed one, not the end of the worker's thread.
pub(crate) fn decode_batch(frame: &[u8]) -> std::result::Result<RecordBatch, String> {
    let decode = || {
        let mut reader =
            arrow::ipc::reader::StreamReader::try_new(Cursor::new(frame), None).map_err(|e| e.to_string())?;
        match reader.next() {
            Some(batch) => batch.map_err(|e| e.to_string()),
            None => Ok(RecordBatch::new_empty(reader.schema())),
        }
    };
    std::panic::catch_unwind(decode).unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "the decoder gave up".to_string());
        Err(format!("corrupt Arrow IPC stream: {why}"))
    })
}

/// Record batches as an Arrow IPC stream in one frame; `nbytes` is the batch's buffer memory.
struct BatchCodec;

impl ValueCodec for BatchCodec {
    fn tag(&self) -> &str {
        BATCH_CODEC_TAG
    }
    fn value_type(&self) -> TypeId {
        TypeId::of::<RecordBatch>()
    }
    fn encode(&self, value: &Value) -> std::result::Result<Encoded, CodecError> {
        let batch = value.downcast_ref::<RecordBatch>().map_err(|_| CodecError::NoCodecForType(value.type_name()))?;
        let frame = encode_batch(batch)
            .map_err(|e| CodecError::Malformed { tag: BATCH_CODEC_TAG.into(), message: e.to_string() })?;
        Ok(Encoded { tag: BATCH_CODEC_TAG.into(), header: Vec::new(), frames: vec![frame.into()] })
    }
    fn decode(&self, encoded: &Encoded) -> std::result::Result<Value, CodecError> {
        let malformed = |message: String| CodecError::Malformed { tag: BATCH_CODEC_TAG.into(), message };
        let [frame] = encoded.frames.as_slice() else {
            return Err(malformed(format!("expected 1 frame, got {}", encoded.frames.len())));
        };
        Ok(Value::new(decode_batch(frame).map_err(malformed)?))
    }
    fn nbytes(&self, value: &Value) -> Option<usize> {
        value.downcast_ref::<RecordBatch>().ok().map(|b| retained_bytes(std::slice::from_ref(b)))
    }
}

/// The memory `batches` keep alive: each allocation their buffers point into, counted once.
///
/// `RecordBatch::get_array_memory_size` counts each buffer's whole allocation once per array.
/// A batch decoded from an Arrow IPC stream (every value a worker fetches or reads back from
/// disk) has all its columns in one allocation, the message body, so that figure counted the
/// body once per column: 2.7 times what the shuffle's pieces held, which kept the worker's
/// held bytes far above its memory and made it refuse to read spilled inputs back.
pub(crate) fn retained_bytes(batches: &[RecordBatch]) -> usize {
    use rustc_hash::FxBuildHasher;
    fn add(data: &arrow::array::ArrayData, seen: &mut hashbrown::HashSet<usize, FxBuildHasher>, total: &mut usize) {
        let buffers = data.buffers().iter().chain(data.nulls().map(|n| n.buffer()));
        for buffer in buffers {
            // The allocation's start names it: slices of one allocation share it.
            if seen.insert(buffer.data_ptr().as_ptr() as usize) {
                *total += buffer.capacity();
            }
        }
        for child in data.child_data() {
            add(child, seen, total);
        }
    }
    let mut seen = hashbrown::HashSet::with_hasher(FxBuildHasher);
    let mut total = 0;
    for batch in batches {
        for column in batch.columns() {
            add(&column.to_data(), &mut seen, &mut total);
        }
    }
    total
}

/// Registers the dataframe's kernels and the partition codec in these registries (harmless to
/// repeat).
pub fn register_portable(kernels: &KernelRegistry, codecs: &CodecRegistry) {
    kernels.register::<PartitionKernel>();
    kernels.register::<CombineKernel>();
    kernels.register::<FinalizeKernel>();
    kernels.register::<SplitKernel>();
    kernels.register::<SelectKernel>();
    kernels.register::<ConcatKernel>();
    kernels.register::<JoinKernel>();
    kernels.register::<BuildKernel>();
    kernels.register::<RangeSplitKernel>();
    kernels.register::<RowSliceKernel>();
    kernels.register::<crate::map::CheckSchemaKernel>();
    kernels.register::<crate::timeseries::RangeTakeKernel>();
    kernels.register::<crate::timeseries::IndexBoundsKernel>();
    kernels.register::<crate::timeseries::ResampleKernel>();
    kernels.register::<crate::timeseries::CarryKernel>();
    kernels.register::<crate::timeseries::WindowKernel>();
    #[cfg(feature = "array")]
    crate::array::register(kernels);
    codecs.register(BatchCodec);
    codecs.register(PiecesCodec);
    codecs.register(JoinTableCodec);
}

/// Registers the dataframe's kernels and codec in the process-wide registries, once. Lowering
/// calls it; worker programs call it (through `kiln::register_builtins`) at start-up.
pub fn ensure_registered() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        register_portable(KernelRegistry::global(), CodecRegistry::global());
        // Bags of JSON records become frames on workers too.
        #[cfg(feature = "bag")]
        crate::bag::register_builtin_records();
    });
}

fn kernel<K: PortableKernel>(k: K) -> Arc<dyn Kernel> {
    Arc::new(Portable(k))
}

fn graph_error(e: DataFrameError) -> GraphError {
    GraphError::invalid("dataframe", e)
}

/// The name shared by a stage's tasks: `label-<token of the frame and the stage's parameters>`.
fn stage_name(label: &str, frame_token: u128, params: &impl Serialize) -> Result<Arc<str>, GraphError> {
    let bytes =
        postcard::to_allocvec(params).map_err(|e| graph_error(DataFrameError::compute("encoding a task", e)))?;
    let mut tokenizer = Tokenizer::new();
    tokenizer.bytes(&frame_token.to_le_bytes()).bytes(&bytes);
    Ok(format!("{label}-{}", tokenizer.finish()).into())
}

/// The hex token of a stage: the frame's token and the stage's parameters.
fn stage_token(frame_token: u128, params: &impl Serialize) -> Result<String, GraphError> {
    let bytes =
        postcard::to_allocvec(params).map_err(|e| graph_error(DataFrameError::compute("encoding a task", e)))?;
    let mut tokenizer = Tokenizer::new();
    tokenizer.bytes(&frame_token.to_le_bytes()).bytes(&bytes);
    Ok(tokenizer.finish())
}

/// Adds the tasks of every partition of `frame` (reading only the `needed` columns, `None`
/// for all), each ending with `terminal(i)`, and returns them in partition order.
pub(crate) fn lower_frame(
    frame: &Frame,
    needed: Option<Vec<String>>,
    terminal: &dyn Fn(usize) -> Terminal,
    builder: &mut GraphBuilder,
) -> Result<Vec<TaskId>, GraphError> {
    lower_frame_with(frame, needed, terminal, None, builder)
}

/// A broadcast merge to fuse into the partition tasks of the side that probes its table.
struct Tail {
    probe: ProbeStep,
    /// The task building the table.
    table: TaskId,
    /// The merged frame's token, which names the fused tasks.
    token: u128,
}

/// [`lower_frame`], with a broadcast merge's probe (and the merged frame's steps) fused after
/// the frame's steps when `tail` is given.
fn lower_frame_with(
    frame: &Frame,
    needed: Option<Vec<String>>,
    terminal: &dyn Fn(usize) -> Terminal,
    tail: Option<&Tail>,
    builder: &mut GraphBuilder,
) -> Result<Vec<TaskId>, GraphError> {
    ensure_registered();
    let optimized = frame.optimize(needed.clone());
    let source_schema = frame.source.schema();
    let label = match terminal(0) {
        Terminal::Partial(_) => "groupby-partial",
        Terminal::WriteParquet(_) => "to-parquet",
        Terminal::WriteCsv(_) => "to-csv",
        Terminal::Head(_) => "head",
        Terminal::Sample(..) => "sample",
        Terminal::Bounds(_) => "check-sorted",
        Terminal::Length => "partition-length",
        Terminal::Batch if tail.is_some() => "merge",
        Terminal::Batch => frame.source.label(),
    };
    let fused = tail.map(|t| (&t.probe, t.token));
    let name = stage_name(label, frame.token, &(&optimized.projection, &optimized.steps, terminal(0), fused))?;
    let mut ids = Vec::with_capacity(frame.source.npartitions());
    let mut add =
        |i: usize, read: ReadSpec, mut args: Vec<Arg>, builder: &mut GraphBuilder| -> Result<(), GraphError> {
            let probe = tail.map(|t| t.probe.clone());
            if let Some(t) = tail {
                args.push(Arg::Task(t.table));
            }
            let k = kernel(PartitionKernel { read, steps: optimized.steps.clone(), probe, terminal: terminal(i) });
            ids.push(builder.add(Key::from_shared(&name, &[i as u32]), k, args)?);
            Ok(())
        };
    // Sources computed by other tasks: their partitions are the inputs of this frame's tasks.
    let computed: Vec<TaskId> = match frame.source.as_ref() {
        Source::Csv { parts, options, .. } => {
            let projection = optimized
                .projection
                .as_ref()
                .map(|names| names.iter().filter_map(|n| source_schema.index_of(n).ok()).collect::<Vec<usize>>());
            for (i, part) in parts.iter().enumerate() {
                let read = ReadSpec::Csv {
                    path: part.path.clone(),
                    block: part.block.clone(),
                    schema: SerdeSchema(source_schema.clone()),
                    projection: projection.clone(),
                    options: options.clone(),
                };
                add(i, read, Vec::new(), builder)?;
            }
            return Ok(ids);
        }
        Source::Parquet { files, row_groups, .. } => {
            let parts: Vec<(usize, Option<usize>)> = match row_groups {
                Some(groups) => groups.iter().map(|&(file, group)| (file, Some(group))).collect(),
                None => (0..files.len()).map(|file| (file, None)).collect(),
            };
            for (i, (file, row_group)) in parts.into_iter().enumerate() {
                let read = ReadSpec::Parquet {
                    path: files[file].clone(),
                    row_group,
                    schema: SerdeSchema(source_schema.clone()),
                    projection: optimized.projection.clone(),
                    prune: optimized.pushed.clone(),
                };
                add(i, read, Vec::new(), builder)?;
            }
            return Ok(ids);
        }
        Source::Batches { partitions, .. } => {
            for (i, batch) in partitions.iter().enumerate() {
                add(
                    i,
                    ReadSpec::Input { projection: optimized.projection.clone() },
                    vec![Arg::literal(batch.clone())],
                    builder,
                )?;
            }
            return Ok(ids);
        }
        Source::Aggregate { input, spec, strategy } => lower_aggregate(input, spec, *strategy, builder)?,
        Source::Shuffle { input, keys, npartitions, max_branch } => {
            // The input reads what is needed downstream plus the keys.
            let needed = optimized.projection.clone().map(|mut p| {
                for k in keys.0.fields() {
                    if !p.contains(k.name()) {
                        p.push(k.name().clone());
                    }
                }
                p
            });
            shuffle_frame(input, needed, keys, *npartitions, *max_branch, builder)?
        }
        Source::Merge { left, right, spec, strategy } => {
            // Only the columns used downstream are joined, and each side reads only its share.
            let (spec, needs) = match &optimized.projection {
                Some(wanted) => {
                    let (spec, l, r) = spec.pruned(wanted);
                    (spec, (Some(l), Some(r)))
                }
                None => (spec.clone(), (None, None)),
            };
            match strategy {
                // The merged frame's steps and terminal run in the probing tasks (unless those
                // already carry another merge's probe).
                MergeStrategy::BroadcastLeft | MergeStrategy::BroadcastRight if tail.is_none() => {
                    let fused = Fused { after: optimized.steps.clone(), terminal, token: frame.token };
                    return lower_broadcast(left, right, spec, needs, *strategy, fused, builder);
                }
                _ => lower_merge(left, right, &spec, needs, *strategy, builder)?,
            }
        }
        Source::RangeShuffle { input, column, boundaries, missing_first, max_branch } => {
            let needed = optimized.projection.clone().map(|mut p| {
                if !p.contains(column) {
                    p.push(column.clone());
                }
                p
            });
            let token = stage_token(input.token, &(&needed, &input.steps.to_vec(), column, boundaries, missing_first))?;
            let parts = lower_frame(input, needed, &|_| Terminal::Batch, builder)?;
            let kernels =
                RangeShuffle { column: column.clone(), boundaries: boundaries.clone(), missing_first: *missing_first };
            let n = boundaries.0.num_rows() + 1;
            staged_shuffle(builder, "range-shuffle", &token, &parts, n, *max_branch, &kernels)?
        }
        Source::Subset { input, partitions } => {
            let parts = lower_frame(input, optimized.projection.clone(), &|_| Terminal::Batch, builder)?;
            let projected = optimized.projection.is_some();
            let picked = partitions
                .iter()
                .map(|&p| {
                    parts
                        .get(p)
                        .copied()
                        .ok_or_else(|| graph_error(DataFrameError::InvalidArgument(format!("no partition {p}"))))
                })
                .collect::<Result<Vec<_>, _>>()?;
            if optimized.steps.is_empty() && terminal(0) == Terminal::Batch && tail.is_none() {
                return Ok(picked);
            }
            // The input already read only the projected columns.
            for (i, root) in picked.into_iter().enumerate() {
                let projection = if projected { None } else { optimized.projection.clone() };
                add(i, ReadSpec::Input { projection }, vec![Arg::Task(root)], builder)?;
            }
            return Ok(ids);
        }
        Source::Resample { input, spec } => crate::timeseries::lower_resample(input, spec, frame.token, builder)?,
        Source::Window { input, spec } => crate::timeseries::lower_window(input, spec, frame.token, builder)?,
        Source::RepartitionDivisions { input, divisions } => {
            crate::timeseries::lower_repartition_divisions(input, divisions, frame.token, builder)?
        }
        Source::Repartition { input, npartitions } => {
            let parts = lower_frame(input, None, &|_| Terminal::Batch, builder)?;
            repartition(input, &parts, *npartitions, builder)?
        }
        Source::External { parts, .. } => parts.add_to(builder)?,
    };
    if optimized.steps.is_empty() && optimized.projection.is_none() && terminal(0) == Terminal::Batch && tail.is_none()
    {
        return Ok(computed);
    }
    for (i, root) in computed.into_iter().enumerate() {
        add(i, ReadSpec::Input { projection: optimized.projection.clone() }, vec![Arg::Task(root)], builder)?;
    }
    Ok(ids)
}

/// `parts` as `n` partitions: runs of neighbours concatenated (`n` fewer), or each split by
/// rows into nearly equal pieces (`n` more).
fn repartition(
    input: &Frame,
    parts: &[TaskId],
    n: usize,
    builder: &mut GraphBuilder,
) -> Result<Vec<TaskId>, GraphError> {
    let name: Arc<str> =
        format!("repartition-{}", stage_token(input.token, &(&input.steps.to_vec(), n as u64))?).into();
    let m = parts.len();
    let mut out = Vec::with_capacity(n);
    if n <= m {
        for i in 0..n {
            let run = &parts[m * i / n..m * (i + 1) / n];
            out.push(match run {
                [one] => *one,
                _ => builder.add(
                    Key::from_shared(&name, &[i as u32]),
                    kernel(ConcatKernel),
                    run.iter().map(|&id| Arg::Task(id)).collect::<Vec<_>>(),
                )?,
            });
        }
    } else {
        for (j, &part) in parts.iter().enumerate() {
            let pieces = n * (j + 1) / m - n * j / m;
            for piece in 0..pieces {
                let key = Key::from_shared(&name, &[j as u32, piece as u32]);
                let k = kernel(RowSliceKernel { piece: piece as u32, pieces: pieces as u32 });
                out.push(builder.add(key, k, vec![Arg::Task(part)])?);
            }
        }
    }
    Ok(out)
}

/// Piece `piece` of `pieces` nearly equal runs of a partition's rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct RowSliceKernel {
    piece: u32,
    pieces: u32,
}

impl PortableKernel for RowSliceKernel {
    const ID: &'static str = "kiln.dataframe.slice-rows";
    fn name(&self) -> &str {
        "repartition-split"
    }
    fn call(&self, inputs: &[Value]) -> std::result::Result<Value, TaskError> {
        let batch = input::<RecordBatch>(inputs, 0)?;
        let (n, piece, pieces) = (batch.num_rows(), self.piece as usize, self.pieces.max(1) as usize);
        let (start, end) = (n * piece.min(pieces) / pieces, n * (piece + 1).min(pieces) / pieces);
        Ok(Value::new(batch.slice(start, end - start)))
    }
}

/// The partitions of `input` (its `needed` columns) shuffled by `keys` into `npartitions`.
fn shuffle_frame(
    input: &Frame,
    needed: Option<Vec<String>>,
    keys: &SerdeSchema,
    npartitions: usize,
    max_branch: usize,
    builder: &mut GraphBuilder,
) -> Result<Vec<TaskId>, GraphError> {
    let token = stage_token(input.token, &(&needed, &input.steps.to_vec(), keys, npartitions as u64))?;
    let parts = lower_frame(input, needed, &|_| Terminal::Batch, builder)?;
    staged_shuffle(builder, "shuffle", &token, &parts, npartitions, max_branch, &BatchShuffle { keys: keys.clone() })
}

/// A group-by's tasks: partial states per partition (fused with the partition's read and
/// steps), then a tree (one root), a shuffle of the partials and a finalize per output
/// partition, or a finalize per partition when the input is partitioned by the keys.
pub(crate) fn lower_aggregate(
    input: &Frame,
    spec: &AggSpec,
    strategy: AggStrategy,
    builder: &mut GraphBuilder,
) -> Result<Vec<TaskId>, GraphError> {
    let needed = spec.columns_read();
    let partial = Terminal::Partial(spec.clone());
    let mut level = lower_frame(input, Some(needed), &|_| partial.clone(), builder)?;
    let finalize_name = stage_name("groupby", input.token, &(spec, &input.steps.to_vec()))?;
    let finalize = kernel(FinalizeKernel { spec: spec.clone() });
    let per_partition = |parts: Vec<TaskId>, builder: &mut GraphBuilder| {
        parts
            .into_iter()
            .enumerate()
            .map(|(j, id)| {
                builder.add(Key::from_shared(&finalize_name, &[j as u32]), finalize.clone(), vec![Arg::Task(id)])
            })
            .collect::<Result<Vec<_>, _>>()
    };
    match strategy {
        AggStrategy::Blockwise => per_partition(level, builder),
        AggStrategy::Shuffle { split_out, max_branch } => {
            let keys = SerdeSchema(Arc::new(Schema::new(spec.output.0.fields()[..spec.keys.len()].to_vec())));
            let token = stage_token(input.token, &(spec, &input.steps.to_vec(), split_out as u64))?;
            let kernels = PartialShuffle { rows: BatchShuffle { keys }, spec: spec.clone() };
            let shuffled = staged_shuffle(builder, "groupby-shuffle", &token, &level, split_out, max_branch, &kernels)?;
            per_partition(shuffled, builder)
        }
        AggStrategy::Tree { split_every } => {
            let split_every = split_every.max(2);
            let combine_name = stage_name("groupby-combine", input.token, &(spec, &input.steps.to_vec()))?;
            let mut depth = 0u32;
            while level.len() > split_every {
                let mut next = Vec::with_capacity(level.len().div_ceil(split_every));
                for (j, chunk) in level.chunks(split_every).enumerate() {
                    let args: Vec<Arg> = chunk.iter().map(|&id| Arg::Task(id)).collect();
                    let key = Key::from_shared(&combine_name, &[depth, j as u32]);
                    next.push(builder.add(key, kernel(CombineKernel { spec: spec.clone() }), args)?);
                }
                level = next;
                depth += 1;
            }
            let args: Vec<Arg> = level.iter().map(|&id| Arg::Task(id)).collect();
            Ok(vec![builder.add(Key::from_shared(&finalize_name, &[]), finalize, args)?])
        }
    }
}

/// The shuffle of a split-out group-by's partial states: pieces meeting at a position are
/// combined, not concatenated, so each task holds at most the groups of its output partition
/// (a position's rows shrink to its distinct keys at every round) instead of every partial
/// row bound for it, which for many groups is most of the input over `split_out`.
struct PartialShuffle {
    rows: BatchShuffle,
    spec: AggSpec,
}

impl ShuffleKernels for PartialShuffle {
    fn split(&self, stage: SplitStage) -> Arc<dyn Kernel> {
        self.rows.split(stage)
    }
    fn select(&self, piece: u32) -> Arc<dyn Kernel> {
        self.rows.select(piece)
    }
    fn concat(&self) -> Arc<dyn Kernel> {
        kernel(CombineKernel { spec: self.spec.clone() })
    }
}

/// What a broadcast merge's probing tasks run after the probe.
struct Fused<'a> {
    /// The merged frame's steps.
    after: Vec<Step>,
    terminal: &'a dyn Fn(usize) -> Terminal,
    /// The merged frame's token.
    token: u128,
}

/// A broadcast merge's tasks: one task builds the join table from every partition of the
/// broadcast side, and each partition task of the other side probes it after its own steps,
/// then runs the merged frame's steps and terminal (`fused`).
fn lower_broadcast(
    left: &Frame,
    right: &Frame,
    spec: MergeSpec,
    (left_needed, right_needed): (Option<Vec<String>>, Option<Vec<String>>),
    strategy: MergeStrategy,
    fused: Fused,
    builder: &mut GraphBuilder,
) -> Result<Vec<TaskId>, GraphError> {
    let (side, table_frame, table_needed, probe_frame, probe_needed, keys) = match strategy {
        MergeStrategy::BroadcastRight => (Side::Right, right, right_needed, left, left_needed, &spec.right_keys),
        _ => (Side::Left, left, left_needed, right, right_needed, &spec.left_keys),
    };
    let token = stage_token(
        left.token ^ right.token.rotate_left(1),
        &(&spec, &left.steps.to_vec(), &right.steps.to_vec(), &table_needed, side),
    )?;
    let parts = lower_frame(table_frame, table_needed, &|_| Terminal::Batch, builder)?;
    let table = builder.add(
        Key::from_shared(&format!("merge-build-{token}").into(), &[]),
        kernel(BuildKernel { keys: keys.clone() }),
        parts.iter().map(|&id| Arg::Task(id)).collect::<Vec<_>>(),
    )?;
    let tail = Tail { probe: ProbeStep { spec, table: side, after: fused.after }, table, token: fused.token };
    lower_frame_with(probe_frame, probe_needed, fused.terminal, Some(&tail), builder)
}

/// A merge's tasks: the two sides paired partition by partition (after a broadcast or a
/// shuffle as the strategy says), one hash join per pair.
fn lower_merge(
    left: &Frame,
    right: &Frame,
    spec: &MergeSpec,
    (left_needed, right_needed): (Option<Vec<String>>, Option<Vec<String>>),
    strategy: MergeStrategy,
    builder: &mut GraphBuilder,
) -> Result<Vec<TaskId>, GraphError> {
    if matches!(strategy, MergeStrategy::BroadcastRight | MergeStrategy::BroadcastLeft) {
        let fused = Fused { after: Vec::new(), terminal: &|_| Terminal::Batch, token: left.token ^ right.token };
        return lower_broadcast(left, right, spec.clone(), (left_needed, right_needed), strategy, fused, builder);
    }
    let token =
        stage_token(left.token ^ right.token.rotate_left(1), &(spec, &left.steps.to_vec(), &right.steps.to_vec()))?;
    let l = lower_frame(left, left_needed, &|_| Terminal::Batch, builder)?;
    let r = lower_frame(right, right_needed, &|_| Terminal::Batch, builder)?;
    let pairs: Vec<(TaskId, TaskId)> = match strategy {
        MergeStrategy::Blockwise if l.len() == r.len() => l.into_iter().zip(r).collect(),
        MergeStrategy::Blockwise => {
            return Err(graph_error(DataFrameError::compute(
                "merge",
                format!("blockwise merge of {} and {} partitions", l.len(), r.len()),
            )));
        }
        MergeStrategy::BroadcastRight | MergeStrategy::BroadcastLeft => {
            return Err(graph_error(DataFrameError::compute(
                "merge",
                "a broadcast merge reached the pairwise lowering",
            )));
        }
        MergeStrategy::Shuffle { npartitions, max_branch } => {
            let mut side = |frame: &Frame, parts: Vec<TaskId>, keys: &SerdeSchema, which: &str| {
                if partitioned_by(frame, &keys.0, npartitions) {
                    return Ok(parts);
                }
                let side_token = format!("{which}{token}");
                staged_shuffle(
                    builder,
                    "shuffle",
                    &side_token,
                    &parts,
                    npartitions,
                    max_branch,
                    &BatchShuffle { keys: keys.clone() },
                )
            };
            let l = side(left, l, &spec.left_keys, "l")?;
            let r = side(right, r, &spec.right_keys, "r")?;
            l.into_iter().zip(r).collect()
        }
    };
    let name: Arc<str> = format!("merge-{token}").into();
    let join = kernel(JoinKernel { spec: spec.clone() });
    pairs
        .into_iter()
        .enumerate()
        .map(|(i, (a, b))| {
            builder.add(Key::from_shared(&name, &[i as u32]), join.clone(), vec![Arg::Task(a), Arg::Task(b)])
        })
        .collect()
}

/// Whether `frame` is hash-partitioned by exactly these keys (names, types, order) into
/// `npartitions`.
pub(crate) fn partitioned_by(frame: &Frame, keys: &Schema, npartitions: usize) -> bool {
    frame.partitioning.as_ref().is_some_and(|p| {
        p.npartitions == npartitions
            && frame.source.npartitions() == npartitions
            && p.keys.fields().len() == keys.fields().len()
            && p.keys
                .fields()
                .iter()
                .zip(keys.fields())
                .all(|(a, b)| a.name() == b.name() && a.data_type() == b.data_type())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_graph::memory::{Budget, with_budget};

    #[test]
    fn a_row_group_partition_needs_room_for_its_group_not_the_whole_file() {
        let dir = std::env::temp_dir().join(format!("kiln-lower-row-group-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("big.parquet").to_string_lossy().to_string();
        let values: Vec<i64> = (0..40_000).map(|i| i * 7919 % 100_003).collect();
        let batch = RecordBatch::try_from_iter([(
            "v",
            Arc::new(arrow::array::Int64Array::from(values)) as arrow::array::ArrayRef,
        )])
        .unwrap();
        let props = parquet::file::properties::WriterProperties::builder()
            .set_max_row_group_row_count(Some(10_000))
            .set_dictionary_enabled(false)
            .build();
        let mut bytes = Vec::new();
        let mut writer = parquet::arrow::ArrowWriter::try_new(&mut bytes, batch.schema(), Some(props)).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        std::fs::write(&path, &bytes).unwrap();
        let file_size = bytes.len() as u64;
        let group_size = crate::io::parquet_row_group_bytes(&path, 1).unwrap();
        assert!(group_size > 0 && group_size * 3 < file_size, "{group_size} of {file_size}");

        let kernel = |row_group: Option<usize>| PartitionKernel {
            read: ReadSpec::Parquet {
                path: path.clone(),
                schema: SerdeSchema(crate::io::frame_schema(&batch.schema())),
                projection: None,
                prune: None,
                row_group,
            },
            steps: Vec::new(),
            probe: None,
            terminal: Terminal::Batch,
        };
        // Room for a group and a half, not for the file.
        let budget = Some(Budget::Limit { bytes: group_size * 3 / 2, of: "the test's limit" });
        let whole = with_budget(budget, || kernel(None).call(&[]));
        assert!(matches!(whole, Err(TaskError::TooLarge(_))), "{:?}", whole.err());
        let one = with_budget(budget, || kernel(Some(1)).call(&[])).unwrap();
        let one = one.downcast_ref::<RecordBatch>().unwrap();
        assert_eq!(one.num_rows(), 10_000);
        assert_eq!(
            one.column(0).as_any().downcast_ref::<arrow::array::Int64Array>().unwrap().value(0),
            10_000 * 7919 % 100_003
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
