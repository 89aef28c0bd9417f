//! Lowering plans to tasks: the portable kernels (one per partition, fusing the read and every
//! row-wise step; the tree of a group-by), the Arrow IPC codec that carries partitions between
//! processes, and the registration of both.
//!
//! Kernel ids are stable: `kiln.dataframe.partition`, `kiln.dataframe.groupby.combine`,
//! `kiln.dataframe.groupby.finalize`; never reuse or rename one.

use std::any::TypeId;
use std::io::Cursor;
use std::sync::{Arc, Once};

use arrow::array::RecordBatch;
use arrow::datatypes::{Field, Schema, SchemaRef};
use kiln_graph::codec::ValueCodec;
use kiln_graph::kernel::{Portable, PortableKernel, input};
use kiln_graph::{
    Arg, CodecError, CodecRegistry, Encoded, GraphBuilder, GraphError, Kernel, KernelRegistry, Key, TaskError, TaskId,
    Tokenizer, Value,
};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::agg::{self, AggSpec};
use crate::error::{DataFrameError, Result};
use crate::io::{CsvOptions, read_csv_file, read_parquet_file, write_parquet_file};
use crate::plan::{Frame, Source, Step};

/// The ids of the dataframe's portable kernels.
pub const KERNEL_IDS: [&str; 3] = [PartitionKernel::ID, CombineKernel::ID, FinalizeKernel::ID];

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
        schema: SerdeSchema,
        projection: Option<Vec<usize>>,
        options: CsvOptions,
    },
    Parquet {
        path: String,
        schema: SerdeSchema,
        projection: Option<Vec<String>>,
    },
    /// The task's one input (an in-memory batch, or another stage's result), projected.
    Input {
        projection: Option<Vec<String>>,
    },
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
}

/// Reads one partition, applies the fused row-wise steps, then the terminal step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct PartitionKernel {
    read: ReadSpec,
    steps: Vec<Step>,
    terminal: Terminal,
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
            (ReadSpec::Csv { .. }, _) => "read-csv",
            (ReadSpec::Parquet { .. }, _) => "read-parquet",
            (ReadSpec::Input { .. }, _) => "partition",
        }
    }

    fn call(&self, inputs: &[Value]) -> std::result::Result<Value, TaskError> {
        let batch = match &self.read {
            ReadSpec::Csv { path, schema, projection, options } => {
                check_file_fits(path)?;
                read_csv_file(path, &schema.0, projection.as_deref(), options).map_err(task_error)?
            }
            ReadSpec::Parquet { path, schema, projection } => {
                check_file_fits(path)?;
                read_parquet_file(path, &schema.0, projection.as_deref()).map_err(task_error)?
            }
            ReadSpec::Input { projection } => {
                let batch = input::<RecordBatch>(inputs, 0)?;
                match projection {
                    Some(names) => project_by_name(batch, names).map_err(task_error)?,
                    None => batch.clone(),
                }
            }
        };
        let batch = apply_steps(batch, &self.steps).map_err(task_error)?;
        Ok(match &self.terminal {
            Terminal::Batch => Value::new(batch),
            Terminal::Head(n) => Value::new(batch.slice(0, (*n).min(batch.num_rows()))),
            Terminal::Partial(spec) => Value::new(agg::partial(spec, &batch).map_err(task_error)?),
            Terminal::WriteParquet(path) => Value::new(write_parquet_file(path, &batch).map_err(task_error)?),
        })
    }
}

/// A file about to be read whole must fit in the executor's memory budget.
fn check_file_fits(path: &str) -> std::result::Result<(), TaskError> {
    let size = crate::storage::storage_for(path).and_then(|s| s.size(path)).map_err(task_error)?;
    kiln_graph::memory::check_alloc(path, size)?;
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
                let mask = predicate.evaluate(&batch)?;
                let mask = mask.as_any().downcast_ref::<arrow::array::BooleanArray>().ok_or_else(|| {
                    DataFrameError::TypeMismatch {
                        operation: "filter".into(),
                        expression: predicate.to_string(),
                        found: mask.data_type().clone(),
                        expected: "a boolean is needed".into(),
                    }
                })?;
                arrow::compute::filter_record_batch(&batch, mask)
                    .map_err(|e| DataFrameError::compute(format!("filter {predicate}"), e))?
            }
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
        let malformed =
            |e: arrow::error::ArrowError| CodecError::Malformed { tag: BATCH_CODEC_TAG.into(), message: e.to_string() };
        let mut frame = Vec::new();
        let mut writer = arrow::ipc::writer::StreamWriter::try_new(&mut frame, &batch.schema()).map_err(malformed)?;
        writer.write(batch).map_err(malformed)?;
        writer.finish().map_err(malformed)?;
        drop(writer);
        Ok(Encoded { tag: BATCH_CODEC_TAG.into(), header: Vec::new(), frames: vec![frame] })
    }
    fn decode(&self, encoded: &Encoded) -> std::result::Result<Value, CodecError> {
        let malformed = |message: String| CodecError::Malformed { tag: BATCH_CODEC_TAG.into(), message };
        let [frame] = encoded.frames.as_slice() else {
            return Err(malformed(format!("expected 1 frame, got {}", encoded.frames.len())));
        };
        let mut reader = arrow::ipc::reader::StreamReader::try_new(Cursor::new(frame.as_slice()), None)
            .map_err(|e| malformed(e.to_string()))?;
        let batch = match reader.next() {
            Some(batch) => batch.map_err(|e| malformed(e.to_string()))?,
            None => RecordBatch::new_empty(reader.schema()),
        };
        Ok(Value::new(batch))
    }
    fn nbytes(&self, value: &Value) -> Option<usize> {
        value.downcast_ref::<RecordBatch>().ok().map(RecordBatch::get_array_memory_size)
    }
}

/// Registers the dataframe's kernels and the partition codec in these registries (harmless to
/// repeat).
pub fn register_portable(kernels: &KernelRegistry, codecs: &CodecRegistry) {
    kernels.register::<PartitionKernel>();
    kernels.register::<CombineKernel>();
    kernels.register::<FinalizeKernel>();
    codecs.register(BatchCodec);
}

/// Registers the dataframe's kernels and codec in the process-wide registries, once. Lowering
/// calls it; worker programs call it (through `kiln::register_builtins`) at start-up.
pub fn ensure_registered() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| register_portable(KernelRegistry::global(), CodecRegistry::global()));
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

/// Adds the tasks of every partition of `frame` (reading only the `needed` columns, `None`
/// for all), each ending with `terminal(i)`, and returns them in partition order.
pub(crate) fn lower_frame(
    frame: &Frame,
    needed: Option<Vec<String>>,
    terminal: &dyn Fn(usize) -> Terminal,
    builder: &mut GraphBuilder,
) -> Result<Vec<TaskId>, GraphError> {
    ensure_registered();
    let optimized = frame.optimize(needed);
    let source_schema = frame.source.schema();
    let label = match terminal(0) {
        Terminal::Partial(_) => "groupby-partial",
        Terminal::WriteParquet(_) => "to-parquet",
        Terminal::Head(_) => "head",
        Terminal::Batch => frame.source.label(),
    };
    let name = stage_name(label, frame.token, &(&optimized.projection, &optimized.steps, terminal(0)))?;
    let mut ids = Vec::with_capacity(frame.source.npartitions());
    let mut add = |i: usize, read: ReadSpec, args: Vec<Arg>, builder: &mut GraphBuilder| -> Result<(), GraphError> {
        let k = kernel(PartitionKernel { read, steps: optimized.steps.clone(), terminal: terminal(i) });
        ids.push(builder.add(Key::from_shared(&name, &[i as u32]), k, args)?);
        Ok(())
    };
    match frame.source.as_ref() {
        Source::Csv { files, options, .. } => {
            let projection = optimized
                .projection
                .as_ref()
                .map(|names| names.iter().filter_map(|n| source_schema.index_of(n).ok()).collect::<Vec<usize>>());
            for (i, path) in files.iter().enumerate() {
                let read = ReadSpec::Csv {
                    path: path.clone(),
                    schema: SerdeSchema(source_schema.clone()),
                    projection: projection.clone(),
                    options: options.clone(),
                };
                add(i, read, Vec::new(), builder)?;
            }
        }
        Source::Parquet { files, .. } => {
            for (i, path) in files.iter().enumerate() {
                let read = ReadSpec::Parquet {
                    path: path.clone(),
                    schema: SerdeSchema(source_schema.clone()),
                    projection: optimized.projection.clone(),
                };
                add(i, read, Vec::new(), builder)?;
            }
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
        }
        Source::Aggregate { input, spec, split_every } => {
            let root = lower_aggregate(input, spec, *split_every, builder)?;
            if optimized.steps.is_empty() && optimized.projection.is_none() && terminal(0) == Terminal::Batch {
                return Ok(vec![root]);
            }
            add(0, ReadSpec::Input { projection: optimized.projection.clone() }, vec![Arg::Task(root)], builder)?;
        }
    }
    Ok(ids)
}

/// A tree reduction: partial states per partition (fused with the partition's read and steps),
/// combined `split_every` at a time, then finalized in one task; returns the root.
pub(crate) fn lower_aggregate(
    input: &Frame,
    spec: &AggSpec,
    split_every: usize,
    builder: &mut GraphBuilder,
) -> Result<TaskId, GraphError> {
    let needed = spec.columns_read();
    let partial = Terminal::Partial(spec.clone());
    let mut level = lower_frame(input, Some(needed), &|_| partial.clone(), builder)?;
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
    let finalize_name = stage_name("groupby", input.token, &(spec, &input.steps.to_vec()))?;
    let args: Vec<Arg> = level.iter().map(|&id| Arg::Task(id)).collect();
    builder.add(Key::from_shared(&finalize_name, &[]), kernel(FinalizeKernel { spec: spec.clone() }), args)
}
