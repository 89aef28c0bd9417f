//! Arrays to frames and back (Dask's `dd.from_dask_array` and `df.to_dask_array`), with the
//! `array` feature.
//!
//! Each row block of an array becomes one partition, and each partition one row block, so the
//! conversion is one task per partition and never gathers the data. kiln arrays know their
//! chunk sizes, so a frame becomes an array only once its partitions' lengths are known:
//! [`DataFrame::to_array`] computes them first (Dask's `lengths=True`),
//! [`DataFrame::to_array_with_lengths`] takes them from the caller.

use std::sync::Arc;

use arrow::array::{Array as _, ArrayRef, AsArray, BooleanArray, Int64Array, PrimitiveArray, RecordBatch};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{
    ArrowPrimitiveType, DataType, Field, Float32Type, Float64Type, Int32Type, Int64Type, Schema, SchemaRef,
};
use kiln_array::{Array, Block, BlockTasks, DType, Element, from_block_tasks};
use kiln_graph::kernel::{Portable, PortableKernel, input};
use kiln_graph::{Arg, Collection, GraphBuilder, GraphError, Key, Scheduler, TaskError, TaskId, Value};
use ndarray::{ArrayD, Axis, IxDyn};
use serde::{Deserialize, Serialize};

use crate::error::{DataFrameError, Result};
use crate::frame::DataFrame;
use crate::lower::{SerdeSchema, Terminal, lower_frame};
use crate::plan::{Divisions, ExternalPartitions, Frame, Source, Step, Steps};
use crate::scalar::Scalar;
use crate::series::Series;

/// The Arrow type of a column holding an array's elements.
fn arrow_type(dtype: DType) -> DataType {
    match dtype {
        DType::Bool => DataType::Boolean,
        DType::I32 => DataType::Int32,
        DType::I64 => DataType::Int64,
        DType::F32 => DataType::Float32,
        DType::F64 => DataType::Float64,
    }
}

impl DataFrame {
    /// A frame whose columns are the columns of a 2-d array, or whose one column is a 1-d
    /// array (Dask's `dd.from_dask_array(x, columns=...)`): one partition per row block, the
    /// columns typed as the elements are (`float64`, `int64`, `int32`, `bool`). NaN stays NaN,
    /// which the frame's operations treat as missing, as pandas does.
    ///
    /// An array chunked along its columns is rechunked to whole rows first. Nothing is
    /// computed here.
    ///
    /// ```
    /// use kiln_dataframe::DataFrame;
    /// use kiln_graph::Collection;
    /// let x = kiln_array::arange::<f64>(0.0, 12.0, 1.0, 4).reshape(&[6, 2]).rechunk(vec![2, 2]);
    /// let df = DataFrame::from_array(&x, &["a", "b"]).unwrap();
    /// assert_eq!(df.npartitions(), 3);
    /// let total = df.col("b").sum().compute_on(&kiln_local::LocalScheduler::new()).unwrap();
    /// assert_eq!(total, kiln_dataframe::Scalar::Float(1.0 + 3.0 + 5.0 + 7.0 + 9.0 + 11.0));
    /// ```
    ///
    /// # Errors
    /// [`DataFrameError::InvalidArgument`] when the array carries an error, is not 1-d or 2-d,
    /// or `columns` does not name each of its columns once.
    pub fn from_array<T: Element, S: AsRef<str>>(array: &Array<T>, columns: &[S]) -> Result<DataFrame> {
        array_frame(array, columns, None)
    }

    /// As [`DataFrame::from_array`], with a first column `index` holding each row's position
    /// (`int64`, from 0) and made the frame's index, with known divisions: the first position
    /// of each partition, then the last row's (Dask's default index of `from_dask_array`). So
    /// `loc` on positions reads only the partitions it needs.
    ///
    /// ```
    /// use kiln_dataframe::{DataFrame, Divisions, Scalar};
    /// let x = kiln_array::ones::<i64>(&[10], 4);
    /// let df = DataFrame::from_array_with_index(&x, &["one"], "row").unwrap();
    /// assert_eq!(df.divisions(), &Divisions::Known(vec![Scalar::Int(0), Scalar::Int(4), Scalar::Int(8), Scalar::Int(9)]));
    /// ```
    ///
    /// # Errors
    /// As [`DataFrame::from_array`]; also when `index` is one of `columns`.
    pub fn from_array_with_index<T: Element, S: AsRef<str>>(
        array: &Array<T>,
        columns: &[S],
        index: &str,
    ) -> Result<DataFrame> {
        array_frame(array, columns, Some(index))
    }

    /// The frame as a 2-d array of `T` with one column per frame column, in order (Dask's
    /// `df.to_dask_array(lengths=True)`): the partitions' lengths are computed on `scheduler`
    /// first (unless the plan knows them: in-memory batches or an array's row blocks, with only
    /// row-keeping steps since), then each partition becomes one row block when the array is
    /// computed.
    ///
    /// Numbers and booleans convert as NumPy's `astype` does (`float64` to `int64` truncates);
    /// a missing value becomes NaN in a float array and fails its task, naming the column, in
    /// an integer or boolean array (`fillna` first, as pandas' `to_numpy` needs too).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use kiln_dataframe::DataFrame;
    /// use kiln_dataframe::arrow::array::{Float64Array, Int64Array, RecordBatch};
    /// use kiln_graph::Collection;
    /// let batch = RecordBatch::try_from_iter([
    ///     ("a", Arc::new(Int64Array::from(vec![1, 2, 3])) as _),
    ///     ("b", Arc::new(Float64Array::from(vec![Some(0.5), None, Some(2.5)])) as _),
    /// ])
    /// .unwrap();
    /// let local = kiln_local::LocalScheduler::new();
    /// let x = DataFrame::from_batch(batch, 2).unwrap().to_array::<f64>(&local).unwrap();
    /// assert_eq!(x.shape(), &[3, 2]);
    /// let values = x.compute_on(&local).unwrap();
    /// assert_eq!(values[[2, 0]], 3.0);
    /// assert!(values[[1, 1]].is_nan());
    /// ```
    ///
    /// # Errors
    /// [`DataFrameError::TypeMismatch`] naming a column that is not a number or a boolean;
    /// [`DataFrameError::Compute`] when computing the lengths fails.
    pub fn to_array<T: Element>(&self, scheduler: &dyn Scheduler) -> Result<Array<T>> {
        check_array_columns(self, T::DTYPE)?;
        self.to_array_with_lengths(&lengths_of(self, scheduler)?)
    }

    /// As [`DataFrame::to_array`], with the partitions' lengths given (Dask's
    /// `to_dask_array(lengths=[...])`), so nothing is computed here. A partition whose length
    /// differs fails its task when the array is computed, naming it.
    ///
    /// # Errors
    /// As [`DataFrame::to_array`]; [`DataFrameError::InvalidArgument`] when `lengths` does not
    /// have one entry per partition.
    pub fn to_array_with_lengths<T: Element>(&self, lengths: &[usize]) -> Result<Array<T>> {
        check_array_columns(self, T::DTYPE)?;
        frame_array(self, lengths, false)
    }
}

impl Series {
    /// The series as a 1-d array of `T` (Dask's `series.to_dask_array(lengths=True)`); as
    /// [`DataFrame::to_array`] otherwise.
    ///
    /// # Errors
    /// As [`DataFrame::to_array`], and the error the series carries.
    pub fn to_array<T: Element>(&self, scheduler: &dyn Scheduler) -> Result<Array<T>> {
        let frame = self.to_frame()?;
        check_array_columns(&frame, T::DTYPE)?;
        let lengths = lengths_of(&frame, scheduler)?;
        frame_array(&frame, &lengths, true)
    }

    /// The series as a 1-d array of `T`, with the partitions' lengths given; as
    /// [`DataFrame::to_array_with_lengths`] otherwise.
    ///
    /// # Errors
    /// As [`DataFrame::to_array_with_lengths`], and the error the series carries.
    pub fn to_array_with_lengths<T: Element>(&self, lengths: &[usize]) -> Result<Array<T>> {
        let frame = self.to_frame()?;
        check_array_columns(&frame, T::DTYPE)?;
        frame_array(&frame, lengths, true)
    }
}

fn array_frame<T: Element, S: AsRef<str>>(array: &Array<T>, columns: &[S], index: Option<&str>) -> Result<DataFrame> {
    if let Some(e) = array.error() {
        return Err(DataFrameError::InvalidArgument(format!("from_array: the array is invalid: {e}")));
    }
    let columns: Vec<String> = columns.iter().map(|c| c.as_ref().to_string()).collect();
    let width = match array.shape() {
        [_] => 1,
        [_, width] => *width,
        shape => {
            return Err(DataFrameError::InvalidArgument(format!(
                "from_array: a frame is made of a 1-d or 2-d array, not one of shape {shape:?}"
            )));
        }
    };
    if columns.len() != width {
        return Err(DataFrameError::InvalidArgument(format!(
            "from_array: the array has {width} columns but {} names were given: {columns:?}",
            columns.len()
        )));
    }
    let mut names: Vec<&str> = index.into_iter().chain(columns.iter().map(String::as_str)).collect();
    names.sort_unstable();
    if let Some(pair) = names.windows(2).find(|pair| pair[0] == pair[1]) {
        return Err(DataFrameError::InvalidArgument(format!(
            "from_array: the column name {:?} is given twice; a frame's columns need distinct names",
            pair[0]
        )));
    }
    // Whole rows per block: one block per partition.
    let array = match array.chunks().as_slice() {
        [rows, cols] if cols.len() > 1 => array.rechunk(vec![rows.clone(), vec![width]]),
        _ => array.clone(),
    };
    let rows = array.chunks()[0].clone();
    let mut fields = Vec::with_capacity(width + 1);
    if let Some(index) = index {
        fields.push(Field::new(index, DataType::Int64, true));
    }
    fields.extend(columns.iter().map(|c| Field::new(c, arrow_type(T::DTYPE), true)));
    let schema: SchemaRef = Arc::new(Schema::new(fields));
    let offsets: Vec<u64> = rows.iter().scan(0u64, |at, &n| Some(std::mem::replace(at, *at + n as u64))).collect();
    let parts = ArrayPartitions {
        array,
        schema: schema.clone(),
        index: index.is_some(),
        offsets,
        token: kiln_graph::unique_token(),
    };
    let frame = DataFrame::from_source(Source::External { parts: Arc::new(parts), schema: schema.clone() });
    let Some(index) = index else {
        return Ok(frame);
    };
    // Divisions are the first position of each partition and the last row's; an empty row
    // block has no first position, and then nothing is claimed.
    let total: usize = rows.iter().sum();
    let divisions = if rows.contains(&0) {
        Divisions::Unknown
    } else {
        let mut bounds: Vec<Scalar> =
            rows.iter().scan(0i64, |at, &n| Some(Scalar::Int(std::mem::replace(at, *at + n as i64)))).collect();
        bounds.push(Scalar::Int(total as i64 - 1));
        Divisions::Known(bounds)
    };
    Ok(DataFrame {
        frame: Arc::new(Frame {
            source: frame.frame.source.clone(),
            token: frame.frame.token,
            steps: Steps::default(),
            schema,
            divisions,
            index: Some(index.to_string()),
            partitioning: None,
        }),
    })
}

/// The row blocks of an array (whole rows each) as partitions.
struct ArrayPartitions<T> {
    array: Array<T>,
    schema: SchemaRef,
    index: bool,
    /// The position of each block's first row.
    offsets: Vec<u64>,
    token: u128,
}

impl<T: Element> ExternalPartitions for ArrayPartitions<T> {
    fn npartitions(&self) -> usize {
        self.offsets.len()
    }

    fn add_to(&self, builder: &mut GraphBuilder) -> std::result::Result<Vec<TaskId>, GraphError> {
        crate::ensure_registered();
        let blocks = self.array.add_to(builder)?;
        let name: Arc<str> = format!("from-array-{:032x}", self.token).into();
        blocks
            .into_iter()
            .zip(&self.offsets)
            .enumerate()
            .map(|(i, (block, &offset))| {
                let kernel = BlockToBatch { schema: SerdeSchema(self.schema.clone()), index: self.index, offset };
                builder.add(Key::from_shared(&name, &[i as u32]), Arc::new(Portable(kernel)), [Arg::Task(block)])
            })
            .collect()
    }

    fn label(&self) -> (&'static str, &'static str) {
        ("from-array", "from_array")
    }

    fn lengths(&self) -> Option<Vec<usize>> {
        Some(self.array.chunks()[0].clone())
    }
}

/// Each partition's number of rows when the plan says it without computing: in-memory
/// batches or an array's row blocks, then only steps that keep every row (columns computed or
/// dropped, rows sorted within a partition).
fn known_lengths(frame: &Frame) -> Option<Vec<usize>> {
    let keeps_rows = frame.steps.to_vec().iter().all(|step| matches!(step, Step::Project(_) | Step::Sort(_)));
    if !keeps_rows {
        return None;
    }
    match frame.source.as_ref() {
        Source::Batches { partitions, .. } => Some(partitions.iter().map(RecordBatch::num_rows).collect()),
        Source::External { parts, .. } => parts.lengths(),
        _ => None,
    }
}

/// The partitions' lengths: from the plan when it knows them, else computed on `scheduler`.
fn lengths_of(frame: &DataFrame, scheduler: &dyn Scheduler) -> Result<Vec<usize>> {
    if let Some(lengths) = known_lengths(&frame.frame) {
        return Ok(lengths);
    }
    let lengths = frame
        .partition_lengths()
        .compute_on(scheduler)
        .map_err(|e| DataFrameError::compute("to_array: the partitions' lengths", e))?;
    Ok(lengths.into_iter().map(|n| n as usize).collect())
}

/// One row block of an array as a partition: its columns, after the rows' positions when the
/// frame has them as its index.
#[derive(Serialize, Deserialize)]
pub(crate) struct BlockToBatch {
    schema: SerdeSchema,
    index: bool,
    offset: u64,
}

impl PortableKernel for BlockToBatch {
    const ID: &'static str = "kiln.dataframe.from-array";

    fn name(&self) -> &str {
        "from-array"
    }

    fn call(&self, inputs: &[Value]) -> std::result::Result<Value, TaskError> {
        let block = input::<Block>(inputs, 0)?;
        let rows = block.shape().first().copied().unwrap_or(0);
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.0.fields().len());
        if self.index {
            let start = self.offset as i64;
            columns.push(Arc::new(Int64Array::from_iter_values(start..start + rows as i64)));
        }
        match block {
            Block::Bool(a) => columns.extend(lanes(a).map(|c| Arc::new(BooleanArray::from(c)) as ArrayRef)),
            Block::I32(a) => {
                columns.extend(lanes(a).map(|c| Arc::new(PrimitiveArray::<Int32Type>::from(c)) as ArrayRef))
            }
            Block::I64(a) => {
                columns.extend(lanes(a).map(|c| Arc::new(PrimitiveArray::<Int64Type>::from(c)) as ArrayRef))
            }
            Block::F32(a) => {
                columns.extend(lanes(a).map(|c| Arc::new(PrimitiveArray::<Float32Type>::from(c)) as ArrayRef))
            }
            Block::F64(a) => {
                columns.extend(lanes(a).map(|c| Arc::new(PrimitiveArray::<Float64Type>::from(c)) as ArrayRef))
            }
        }
        RecordBatch::try_new(self.schema.0.clone(), columns)
            .map(Value::new)
            .map_err(|e| TaskError::Failed(format!("from_array: block at row {}: {e}", self.offset)))
    }
}

/// The columns of a 1-d or 2-d block, each as a vector.
fn lanes<T: Copy>(block: &ArrayD<T>) -> impl Iterator<Item = Vec<T>> + '_ {
    let two_d = block.ndim() == 2;
    let width = if two_d { block.shape()[1] } else { 1 };
    (0..width).map(move |j| {
        if two_d { block.index_axis(Axis(1), j).iter().copied().collect() } else { block.iter().copied().collect() }
    })
}

/// Refuses, before anything runs, columns an array of `dtype` cannot hold.
fn check_array_columns(frame: &DataFrame, dtype: DType) -> Result<()> {
    let schema = frame.schema();
    if schema.fields().is_empty() {
        return Err(DataFrameError::InvalidArgument("to_array: the frame has no columns".into()));
    }
    for field in schema.fields() {
        let t = field.data_type();
        if !(t.is_integer() || t.is_floating() || *t == DataType::Boolean) {
            return Err(DataFrameError::TypeMismatch {
                operation: "to_array".into(),
                expression: field.name().clone(),
                found: t.clone(),
                expected: format!("a number or a boolean, to become {dtype} elements"),
            });
        }
    }
    Ok(())
}

fn frame_array<T: Element>(frame: &DataFrame, lengths: &[usize], one_d: bool) -> Result<Array<T>> {
    if lengths.len() != frame.npartitions() {
        return Err(DataFrameError::InvalidArgument(format!(
            "to_array: {} lengths given for a frame of {} partitions",
            lengths.len(),
            frame.npartitions()
        )));
    }
    // kiln arrays have no empty blocks: an empty partition (a filter left nothing) has no
    // block of its own, unless every partition is empty and one block of no rows stands for
    // them all. Its task still checks it is empty, with a neighbouring block's, so lengths
    // given wrong never lose rows silently.
    let mut blocks: Vec<FrameBlock> = Vec::new();
    let mut leading_empty = Vec::new();
    for (partition, &rows) in lengths.iter().enumerate() {
        match (rows, blocks.last_mut()) {
            (0, Some(block)) => block.empty.push(partition as u32),
            (0, None) => leading_empty.push(partition as u32),
            _ => blocks.push(FrameBlock { partition, rows, empty: Vec::new() }),
        }
    }
    match blocks.first_mut() {
        Some(first) => first.empty.extend(leading_empty),
        None => blocks.push(FrameBlock { partition: 0, rows: 0, empty: leading_empty.into_iter().skip(1).collect() }),
    }
    let mut chunks = vec![blocks.iter().map(|b| b.rows).collect::<Vec<usize>>()];
    if !one_d {
        chunks.push(vec![frame.columns().len()]);
    }
    let tasks = FrameBlocks { frame: frame.clone(), dtype: T::DTYPE, one_d, blocks };
    let array = from_block_tasks::<T>(Arc::new(tasks), chunks);
    match array.error() {
        Some(e) => Err(DataFrameError::InvalidArgument(format!("to_array: {e}"))),
        None => Ok(array),
    }
}

/// A frame's partitions as the row blocks of an array.
struct FrameBlocks {
    frame: DataFrame,
    dtype: DType,
    one_d: bool,
    blocks: Vec<FrameBlock>,
}

/// A partition that becomes a block, and the empty partitions its task checks.
struct FrameBlock {
    partition: usize,
    rows: usize,
    empty: Vec<u32>,
}

impl BlockTasks for FrameBlocks {
    fn add_to(&self, builder: &mut GraphBuilder) -> std::result::Result<Vec<TaskId>, GraphError> {
        let parts = lower_frame(&self.frame.frame, None, &|_| Terminal::Batch, builder)?;
        let name: Arc<str> = format!("to-array-{:032x}", self.frame.frame.token).into();
        self.blocks
            .iter()
            .map(|block| {
                let kernel = BatchToBlock {
                    dtype: self.dtype,
                    one_d: self.one_d,
                    partition: block.partition as u32,
                    rows: block.rows as u64,
                    empty: block.empty.clone(),
                };
                let key = Key::from_shared(&name, &[block.partition as u32]);
                let inputs = std::iter::once(block.partition)
                    .chain(block.empty.iter().map(|&p| p as usize))
                    .map(|p| Arg::Task(parts[p]));
                builder.add(key, Arc::new(Portable(kernel)), inputs)
            })
            .collect()
    }

    fn label(&self) -> &'static str {
        "from-frame"
    }
}

/// One partition as a row block of an array.
#[derive(Serialize, Deserialize)]
pub(crate) struct BatchToBlock {
    dtype: DType,
    one_d: bool,
    partition: u32,
    rows: u64,
    /// Partitions given as empty, whose batches follow this one's in the inputs.
    empty: Vec<u32>,
}

impl PortableKernel for BatchToBlock {
    const ID: &'static str = "kiln.dataframe.to-array";

    fn name(&self) -> &str {
        "to-array"
    }

    fn call(&self, inputs: &[Value]) -> std::result::Result<Value, TaskError> {
        let batch = input::<RecordBatch>(inputs, 0)?;
        for (k, &partition) in self.empty.iter().enumerate() {
            let rows = input::<RecordBatch>(inputs, k + 1)?.num_rows();
            if rows != 0 {
                return Err(TaskError::Failed(format!(
                    "to_array: partition {partition} has {rows} rows, but the array was built for 0; \
                     compute the lengths again"
                )));
            }
        }
        if batch.num_rows() as u64 != self.rows {
            return Err(TaskError::Failed(format!(
                "to_array: partition {} has {} rows, but the array was built for {}; compute the lengths again",
                self.partition,
                batch.num_rows(),
                self.rows
            )));
        }
        let shape = if self.one_d { vec![batch.num_rows()] } else { vec![batch.num_rows(), batch.num_columns()] };
        kiln_array::check_block(&shape, self.dtype).map_err(|e| TaskError::Failed(e.to_string()))?;
        let block = match self.dtype {
            DType::F64 => Block::F64(self.gather::<Float64Type>(batch, &shape, Some(f64::NAN))?),
            DType::F32 => Block::F32(self.gather::<Float32Type>(batch, &shape, Some(f32::NAN))?),
            DType::I64 => Block::I64(self.gather::<Int64Type>(batch, &shape, None)?),
            DType::I32 => Block::I32(self.gather::<Int32Type>(batch, &shape, None)?),
            DType::Bool => Block::Bool(self.gather_bool(batch, &shape)?),
        };
        Ok(Value::new(block))
    }
}

impl BatchToBlock {
    /// Column `j` of `batch` cast to `to` as NumPy's `astype` would, refusing missing values
    /// unless the array can hold them (`missing_ok`).
    fn cast(
        &self,
        batch: &RecordBatch,
        j: usize,
        to: &DataType,
        missing_ok: bool,
    ) -> std::result::Result<ArrayRef, TaskError> {
        let name = batch.schema().field(j).name().clone();
        let column = batch.column(j);
        if column.null_count() > 0 && !missing_ok {
            return Err(TaskError::Failed(format!(
                "to_array: column {name:?} has missing values in partition {}, which an array of {} cannot hold; \
                 fill them first (fillna) or ask for a float array",
                self.partition, self.dtype
            )));
        }
        // `safe: false` makes a value the type cannot hold (NaN or 1e300 as int64) an error
        // instead of a silent null.
        let options = CastOptions { safe: false, ..Default::default() };
        cast_with_options(column, to, &options)
            .map_err(|e| TaskError::Failed(format!("to_array: column {name:?} in partition {}: {e}", self.partition)))
    }

    fn gather<A: ArrowPrimitiveType>(
        &self,
        batch: &RecordBatch,
        shape: &[usize],
        missing: Option<A::Native>,
    ) -> std::result::Result<ArrayD<A::Native>, TaskError> {
        let (rows, width) = (batch.num_rows(), batch.num_columns());
        let mut out = vec![A::Native::default(); rows * width];
        for j in 0..width {
            let column = self.cast(batch, j, &A::DATA_TYPE, missing.is_some())?;
            let column = column.as_primitive::<A>();
            let values = column.values();
            match (column.nulls(), missing) {
                (Some(nulls), Some(missing)) => {
                    for (i, v) in values.iter().enumerate() {
                        out[i * width + j] = if nulls.is_valid(i) { *v } else { missing };
                    }
                }
                _ => {
                    for (i, v) in values.iter().enumerate() {
                        out[i * width + j] = *v;
                    }
                }
            }
        }
        ArrayD::from_shape_vec(IxDyn(shape), out).map_err(|e| TaskError::Failed(format!("to_array: {e}")))
    }

    fn gather_bool(&self, batch: &RecordBatch, shape: &[usize]) -> std::result::Result<ArrayD<bool>, TaskError> {
        let (rows, width) = (batch.num_rows(), batch.num_columns());
        let mut out = vec![false; rows * width];
        for j in 0..width {
            let column = self.cast(batch, j, &DataType::Boolean, false)?;
            for (i, v) in column.as_boolean().values().iter().enumerate() {
                out[i * width + j] = v;
            }
        }
        ArrayD::from_shape_vec(IxDyn(shape), out).map_err(|e| TaskError::Failed(format!("to_array: {e}")))
    }
}

/// Registers the conversion kernels.
pub(crate) fn register(kernels: &kiln_graph::KernelRegistry) {
    kernels.register::<BlockToBatch>();
    kernels.register::<BatchToBlock>();
}
