//! Hash partitioning of record batches, and the portable kernels that instantiate
//! [`kiln_graph::shuffle`]'s staged shuffle for them.
//!
//! A row's output partition is `xxh3(row-encoded key) % n_out`. Keys are first cast to the
//! shuffle's key types (so an `int32` key on one side of a merge and an `int64` key on the other
//! land in the same partition) and normalized as pandas compares them: a float NaN is a missing
//! value and `-0.0` is `0.0`. The row encoding (`arrow-row`) gives one byte string per row for
//! any number and type of key columns; xxh3 is seeded by nothing process-specific, so every
//! worker agrees on where a row goes.
//!
//! | kernel | in | out |
//! |---|---|---|
//! | `kiln.dataframe.shuffle.split` | a batch | `Pieces`: the batch's rows split by one digit of their output partition, order kept |
//! | `kiln.dataframe.shuffle.select` | `Pieces` | one piece (a batch) |
//! | `kiln.dataframe.concat` | batches | one batch |

use std::any::TypeId;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, RecordBatch, UInt32Array};
use arrow::compute::{cast, concat_batches, take_record_batch};
use arrow::datatypes::{DataType, Float32Type, Float64Type, Schema};
use arrow::row::{RowConverter, Rows, SortField};
use kiln_graph::codec::ValueCodec;
use kiln_graph::kernel::{Portable, PortableKernel, input};
use kiln_graph::shuffle::{ShuffleKernels, SplitStage};
use kiln_graph::{CodecError, Encoded, Kernel, TaskError, Value};
use serde::{Deserialize, Serialize};

use crate::error::{DataFrameError, Result};
use crate::lower::{SerdeSchema, decode_batch, encode_batch};

/// The codec tag of a split's result (one Arrow IPC stream per piece).
pub const PIECES_CODEC_TAG: &str = "kiln.dataframe.pieces";

/// How many pieces a split of a shuffle makes at most (Dask's `max_branch`).
pub const DEFAULT_MAX_BRANCH: usize = 32;

fn fail(context: &str) -> impl Fn(arrow::error::ArrowError) -> DataFrameError + '_ {
    move |e| DataFrameError::compute(context, e)
}

/// The type a key is hashed and compared as: every integer as `int64`, every float as
/// `float64`, every string as `utf8`, so equal values of different widths meet.
pub(crate) fn hash_type(t: &DataType) -> DataType {
    match t {
        t if t.is_integer() => DataType::Int64,
        t if t.is_floating() => DataType::Float64,
        DataType::LargeUtf8 | DataType::Utf8View => DataType::Utf8,
        t => t.clone(),
    }
}

/// The key columns of `batch` named by `keys` (the fields of the key schema), cast to its types,
/// NaN turned into a missing value and `-0.0` into `0.0`.
pub(crate) fn key_columns(batch: &RecordBatch, keys: &Schema) -> Result<Vec<ArrayRef>> {
    keys.fields()
        .iter()
        .map(|field| {
            let column = batch.column_by_name(field.name()).ok_or_else(|| DataFrameError::ColumnNotFound {
                column: field.name().clone(),
                available: batch.schema().fields().iter().map(|f| f.name().clone()).collect(),
            })?;
            let column = if column.data_type() == field.data_type() {
                column.clone()
            } else {
                cast(column, field.data_type()).map_err(fail("casting a key"))?
            };
            Ok(normalize_floats(column))
        })
        .collect()
}

pub(crate) fn normalize_floats(column: ArrayRef) -> ArrayRef {
    let normalized: Option<Float64Array> = match column.data_type() {
        DataType::Float64 => Some(
            column.as_primitive::<Float64Type>().iter().map(|v| v.filter(|x| !x.is_nan()).map(|x| x + 0.0)).collect(),
        ),
        DataType::Float32 => {
            let floats = column.as_primitive::<Float32Type>();
            let out: arrow::array::Float32Array =
                floats.iter().map(|v| v.filter(|x| !x.is_nan()).map(|x| x + 0.0)).collect();
            return Arc::new(out);
        }
        _ => None,
    };
    match normalized {
        Some(array) => Arc::new(array),
        None => column,
    }
}

/// The key columns row-encoded: equal keys (nulls equal to nulls, as pandas merges them) give
/// equal bytes.
pub(crate) fn key_rows(keys: &[ArrayRef]) -> Result<Rows> {
    // Missing keys sort last, so encoded keys order as pandas sorts an outer merge.
    let options = arrow::compute::SortOptions { descending: false, nulls_first: false };
    let converter =
        RowConverter::new(keys.iter().map(|k| SortField::new_with_options(k.data_type().clone(), options)).collect())
            .map_err(fail("encoding keys"))?;
    converter.convert_columns(keys).map_err(fail("encoding keys"))
}

/// Each row's output partition: `xxh3(key row) % n_out`.
pub(crate) fn destinations(batch: &RecordBatch, keys: &Schema, n_out: u32) -> Result<Vec<u32>> {
    let n_out = u64::from(n_out.max(1));
    if keys.fields().is_empty() {
        return Ok(vec![0; batch.num_rows()]);
    }
    let rows = key_rows(&key_columns(batch, keys)?)?;
    Ok(rows.iter().map(|row| (xxhash_rust::xxh3::xxh3_64(row.data()) % n_out) as u32).collect())
}

/// The rows of `batch` whose `piece_of` is `j`, for each `j < pieces`, in their order.
pub(crate) fn split_rows(
    batch: &RecordBatch,
    pieces: usize,
    piece_of: impl Fn(usize) -> usize,
) -> Result<Vec<RecordBatch>> {
    let mut indices: Vec<Vec<u32>> = vec![Vec::new(); pieces];
    for row in 0..batch.num_rows() {
        let piece = piece_of(row);
        let slot = indices
            .get_mut(piece)
            .ok_or_else(|| DataFrameError::compute("splitting", format!("piece {piece} of {pieces}")))?;
        slot.push(row as u32);
    }
    indices
        .into_iter()
        .map(|rows| {
            if rows.len() == batch.num_rows() {
                Ok(batch.clone())
            } else {
                take_record_batch(batch, &UInt32Array::from(rows)).map_err(fail("splitting"))
            }
        })
        .collect()
}

/// A split's result: its pieces, in piece order.
#[derive(Debug, Clone)]
pub struct Pieces(pub Vec<RecordBatch>);

/// Splits a partition by one digit of its rows' output partitions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SplitKernel {
    /// The key columns by name, with the types they are hashed as.
    pub(crate) keys: SerdeSchema,
    pub(crate) stage: SplitStage,
}

fn task_error(e: DataFrameError) -> TaskError {
    TaskError::Failed(e.to_string())
}

impl PortableKernel for SplitKernel {
    const ID: &'static str = "kiln.dataframe.shuffle.split";
    fn name(&self) -> &str {
        "shuffle-split"
    }
    fn call(&self, inputs: &[Value]) -> std::result::Result<Value, TaskError> {
        let batch = input::<RecordBatch>(inputs, 0)?;
        let destinations = destinations(batch, &self.keys.0, self.stage.npartitions_out).map_err(task_error)?;
        let pieces = split_rows(batch, self.stage.base as usize, |row| self.stage.piece(destinations[row]) as usize)
            .map_err(task_error)?;
        Ok(Value::new(Pieces(pieces)))
    }
}

/// One piece of a split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SelectKernel {
    pub(crate) piece: u32,
}

impl PortableKernel for SelectKernel {
    const ID: &'static str = "kiln.dataframe.shuffle.select";
    fn name(&self) -> &str {
        "shuffle-select"
    }
    fn call(&self, inputs: &[Value]) -> std::result::Result<Value, TaskError> {
        let pieces = input::<Pieces>(inputs, 0)?;
        let piece = pieces.0.get(self.piece as usize).ok_or_else(|| {
            TaskError::Failed(format!("a split has {} pieces; piece {} was asked for", pieces.0.len(), self.piece))
        })?;
        Ok(Value::new(piece.clone()))
    }
}

/// Batches of one schema concatenated, in input order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ConcatKernel;

impl PortableKernel for ConcatKernel {
    const ID: &'static str = "kiln.dataframe.concat";
    fn name(&self) -> &str {
        "concat"
    }
    fn call(&self, inputs: &[Value]) -> std::result::Result<Value, TaskError> {
        let batches: Vec<RecordBatch> = (0..inputs.len())
            .map(|i| input::<RecordBatch>(inputs, i).cloned())
            .collect::<std::result::Result<_, _>>()?;
        Ok(Value::new(concat(&batches).map_err(task_error)?))
    }
}

/// Batches concatenated (one batch is returned as is).
pub(crate) fn concat(batches: &[RecordBatch]) -> Result<RecordBatch> {
    match batches {
        [] => Err(DataFrameError::compute("concatenating", "no batches")),
        [one] => Ok(one.clone()),
        [first, ..] => concat_batches(&first.schema(), batches).map_err(fail("concatenating")),
    }
}

/// The dataframe's shuffle kernels for [`kiln_graph::shuffle::staged_shuffle`]: rows go to
/// `xxh3(keys) % n_out`.
pub(crate) struct BatchShuffle {
    pub(crate) keys: SerdeSchema,
}

impl ShuffleKernels for BatchShuffle {
    fn split(&self, stage: SplitStage) -> Arc<dyn Kernel> {
        Arc::new(Portable(SplitKernel { keys: self.keys.clone(), stage }))
    }
    fn select(&self, piece: u32) -> Arc<dyn Kernel> {
        Arc::new(Portable(SelectKernel { piece }))
    }
    fn concat(&self) -> Arc<dyn Kernel> {
        Arc::new(Portable(ConcatKernel))
    }
}

/// [`Pieces`] as one Arrow IPC stream per piece; `nbytes` is the memory their buffers keep
/// alive, each allocation once.
pub(crate) struct PiecesCodec;

impl ValueCodec for PiecesCodec {
    fn tag(&self) -> &str {
        PIECES_CODEC_TAG
    }
    fn value_type(&self) -> TypeId {
        TypeId::of::<Pieces>()
    }
    fn encode(&self, value: &Value) -> std::result::Result<Encoded, CodecError> {
        let pieces = value.downcast_ref::<Pieces>().map_err(|_| CodecError::NoCodecForType(value.type_name()))?;
        let frames = pieces
            .0
            .iter()
            .map(|b| {
                encode_batch(b)
                    .map(kiln_graph::Frame::from)
                    .map_err(|e| CodecError::Malformed { tag: PIECES_CODEC_TAG.into(), message: e.to_string() })
            })
            .collect::<std::result::Result<_, _>>()?;
        Ok(Encoded { tag: PIECES_CODEC_TAG.into(), header: Vec::new(), frames })
    }
    fn decode(&self, encoded: &Encoded) -> std::result::Result<Value, CodecError> {
        let pieces = encoded
            .frames
            .iter()
            .map(|f| decode_batch(f).map_err(|message| CodecError::Malformed { tag: PIECES_CODEC_TAG.into(), message }))
            .collect::<std::result::Result<_, _>>()?;
        Ok(Value::new(Pieces(pieces)))
    }
    fn nbytes(&self, value: &Value) -> Option<usize> {
        value.downcast_ref::<Pieces>().ok().map(|p| crate::lower::retained_bytes(&p.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int32Array, Int64Array};
    use arrow::datatypes::Field;

    fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
        RecordBatch::try_from_iter(columns).unwrap()
    }

    #[test]
    fn equal_keys_of_different_integer_types_hash_alike_and_nan_is_missing() {
        let keys = Schema::new(vec![Field::new("k", DataType::Float64, true)]);
        let ints = batch(vec![("k", Arc::new(Int32Array::from(vec![Some(1), None, Some(0)])) as ArrayRef)]);
        let longs = batch(vec![("k", Arc::new(Int64Array::from(vec![Some(1), None, Some(0)])) as ArrayRef)]);
        let floats =
            batch(vec![("k", Arc::new(Float64Array::from(vec![Some(1.0), Some(f64::NAN), Some(-0.0)])) as ArrayRef)]);
        let a = destinations(&ints, &keys, 97).unwrap();
        assert_eq!(a, destinations(&longs, &keys, 97).unwrap());
        assert_eq!(a, destinations(&floats, &keys, 97).unwrap());
    }

    #[test]
    fn a_missing_key_column_is_named() {
        let keys = Schema::new(vec![Field::new("nope", DataType::Int64, true)]);
        let b = batch(vec![("k", Arc::new(Int64Array::from(vec![1])) as ArrayRef)]);
        let err = destinations(&b, &keys, 3).unwrap_err();
        assert!(err.to_string().contains("\"nope\""), "{err}");
    }

    #[test]
    fn a_decoded_batch_counts_its_one_allocation_once() {
        let column = |k: i64| Arc::new(Int64Array::from((0..10_000).map(|i| i * k).collect::<Vec<i64>>())) as ArrayRef;
        let b = batch(vec![("a", column(1)), ("b", column(2)), ("c", column(3)), ("d", column(4))]);
        let raw = 4 * 10_000 * 8;
        let decoded = decode_batch(&encode_batch(&b).unwrap()).unwrap();
        // Every column of a decoded batch lies in the message body: counted per column it is
        // four times the data.
        assert!(decoded.get_array_memory_size() >= 3 * raw, "{}", decoded.get_array_memory_size());
        let held = crate::lower::retained_bytes(std::slice::from_ref(&decoded));
        assert!((raw..raw + raw / 10).contains(&held), "{held} for {raw} bytes of data");
        // A slice keeps its parent alive: it counts the parent.
        assert_eq!(crate::lower::retained_bytes(&[b.slice(0, 10)]), crate::lower::retained_bytes(&[b]));
    }

    #[test]
    fn pieces_round_trip_through_the_codec() {
        let b = batch(vec![("k", Arc::new(Int64Array::from((0..10).collect::<Vec<i64>>())) as ArrayRef)]);
        let pieces = split_rows(&b, 3, |row| row % 3).unwrap();
        assert_eq!(pieces.iter().map(RecordBatch::num_rows).collect::<Vec<_>>(), [4, 3, 3]);
        let value = Value::new(Pieces(pieces.clone()));
        let encoded = PiecesCodec.encode(&value).unwrap();
        let back = PiecesCodec.decode(&encoded).unwrap();
        assert_eq!(back.downcast_ref::<Pieces>().unwrap().0, pieces);
        assert!(PiecesCodec.nbytes(&value).unwrap() >= 80);
    }
}
