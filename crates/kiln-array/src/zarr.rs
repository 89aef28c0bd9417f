//! Zarr stores (the chunked, cloud-native format the seeds point to), read and written chunk by
//! chunk: every block of a Zarr-backed array is a task that reads only its region, and writing
//! stores each block from the task that computes it. Local filesystem stores, Zarr v2 and v3.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use kiln_graph::kernel::{Portable, PortableKernel};
use kiln_graph::{
    Collection, ComputeError, Graph, GraphBuilder, GraphError, Kernel, TaskError, TaskId, Tokenizer, Value,
};
use ndarray::ArrayD;
use zarrs::array::{ArrayBuilder, ArraySubset, data_type};
use zarrs::filesystem::FilesystemStore;

use crate::array::Array;
use crate::block::{Block, DType, Element};
use crate::chunks::{ChunkSpec, normalize, regular};
use crate::error::ArrayError;
use crate::node::{BlockFinish, ExprKernel, Finish, Layer, Lowering, Node, Op, TaskInputs};

type ZarrArray = zarrs::array::Array<FilesystemStore>;

fn io(path: &Path, e: impl std::fmt::Display) -> ArrayError {
    ArrayError::Io(format!("zarr store {}: {e}", path.display()))
}

fn zarr_type(dtype: DType) -> zarrs::array::DataType {
    match dtype {
        DType::Bool => data_type::bool(),
        DType::I32 => data_type::int32(),
        DType::I64 => data_type::int64(),
        DType::F32 => data_type::float32(),
        DType::F64 => data_type::float64(),
    }
}

fn open(path: &Path) -> Result<ZarrArray, ArrayError> {
    if !path.exists() {
        return Err(io(path, "does not exist"));
    }
    let store = Arc::new(FilesystemStore::new(path).map_err(|e| io(path, e))?);
    ZarrArray::open(store, "/").map_err(|e| io(path, e))
}

/// Opens the Zarr array at `path` (a directory) as a kiln array of `T`, chunked like the store
/// unless `chunks` says otherwise. Nothing is read until blocks are computed.
///
/// # Errors
/// [`ArrayError::Io`] naming the path when the store is missing or unreadable, or holds another
/// element type than `T`.
pub fn from_zarr<T: Element>(path: impl AsRef<Path>, chunks: Option<ChunkSpec>) -> Result<Array<T>, ArrayError> {
    let path = path.as_ref().to_path_buf();
    let array = open(&path)?;
    if array.data_type() != &zarr_type(T::DTYPE) {
        return Err(io(&path, format!("holds {}, not {}", array.data_type(), T::DTYPE)));
    }
    let shape: Vec<usize> = array.shape().iter().map(|&d| d as usize).collect();
    let chunks = match chunks {
        Some(spec) => normalize(&spec, &shape, T::DTYPE.itemsize())?,
        None => {
            let first = array.chunk_shape(&vec![0; shape.len()]).map_err(|e| io(&path, e))?;
            shape.iter().zip(first.iter()).map(|(&d, c)| regular(d, c.get() as usize)).collect()
        }
    };
    let name = Tokenizer::new()
        .add("from-zarr")
        .add(path.to_string_lossy().as_ref())
        .add(&crate::array::unique())
        .key("from-zarr");
    let layer = ZarrRead { path: path.clone(), array: Arc::new(array) };
    Ok(Array::from_node(Arc::new(Node {
        name: name.shared_name().clone(),
        shape,
        chunks,
        dtype: T::DTYPE,
        op: Op::Materialized(Arc::new(layer)),
    })))
}

struct ZarrRead {
    path: PathBuf,
    array: Arc<ZarrArray>,
}

/// The store at `path`, opened on first use. Kernels travel by path (a worker sharing the
/// filesystem opens the same store); in the building process the cell is pre-filled with the
/// array already opened, so local runs never reopen it.
fn opened<'a>(cell: &'a OnceLock<Arc<ZarrArray>>, path: &Path) -> Result<&'a Arc<ZarrArray>, TaskError> {
    if let Some(array) = cell.get() {
        return Ok(array);
    }
    let array = open(path).map_err(|e| TaskError::msg(e.to_string()))?;
    Ok(cell.get_or_init(|| Arc::new(array)))
}

#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct ReadRegion {
    path: PathBuf,
    #[serde(skip)]
    array: OnceLock<Arc<ZarrArray>>,
    ranges: Vec<std::ops::Range<u64>>,
    dtype: DType,
}

impl PortableKernel for ReadRegion {
    const ID: &'static str = "kiln.array.zarr-read";
    fn name(&self) -> &str {
        "from-zarr"
    }
    fn call(&self, _inputs: &[Value]) -> Result<Value, TaskError> {
        let array = opened(&self.array, &self.path)?;
        let subset = ArraySubset::new_with_ranges(&self.ranges);
        let fail =
            |e: zarrs::array::ArrayError| TaskError::msg(format!("reading zarr store {}: {e}", self.path.display()));
        let block = match self.dtype {
            DType::Bool => Block::Bool(array.retrieve_array_subset::<ArrayD<bool>>(&subset).map_err(fail)?),
            DType::I32 => Block::I32(array.retrieve_array_subset::<ArrayD<i32>>(&subset).map_err(fail)?),
            DType::I64 => Block::I64(array.retrieve_array_subset::<ArrayD<i64>>(&subset).map_err(fail)?),
            DType::F32 => Block::F32(array.retrieve_array_subset::<ArrayD<f32>>(&subset).map_err(fail)?),
            DType::F64 => Block::F64(array.retrieve_array_subset::<ArrayD<f64>>(&subset).map_err(fail)?),
        };
        Ok(Value::new(block))
    }
}

impl Layer for ZarrRead {
    fn lower_block(&self, node: &Node, idx: &[usize], lw: &mut Lowering<'_>) -> Result<TaskId, GraphError> {
        let ranges =
            node.block_offset(idx).iter().zip(node.block_shape(idx)).map(|(&o, n)| o as u64..(o + n) as u64).collect();
        let kernel: Arc<dyn Kernel> = Arc::new(Portable(ReadRegion {
            path: self.path.clone(),
            array: OnceLock::from(self.array.clone()),
            ranges,
            dtype: node.dtype,
        }));
        lw.builder.add(node.key(idx), kernel, [])
    }

    fn inputs(&self) -> Vec<Arc<Node>> {
        Vec::new()
    }
}

/// A pending write of an array to a Zarr store; computing it writes every block (in parallel,
/// each from the task that computes it) and returns the number of blocks written.
pub struct ZarrWrite {
    writes: Array<bool>,
}

impl<T: Element> Array<T> {
    /// Prepares writing this array to a new Zarr v3 store at `path` (a directory, replaced if it
    /// holds a Zarr array), chunked like this array's first blocks; compute the result to write
    /// (Dask's `to_zarr(..., compute=False)`).
    ///
    /// # Errors
    /// [`ArrayError::Io`] when the store cannot be created; the construction error of `self`.
    pub fn to_zarr(&self, path: impl AsRef<Path>) -> Result<ZarrWrite, ArrayError> {
        self.check()?;
        let path = path.as_ref().to_path_buf();
        // Zarr chunk grids are regular: align the blocks on one.
        let chunk: Vec<usize> = self.chunksize().iter().map(|&c| c.max(1)).collect();
        let grid: Vec<Vec<usize>> = self.shape().iter().zip(&chunk).map(|(&d, &c)| regular(d, c)).collect();
        let source = if &grid != self.chunks() { self.rechunk(ChunkSpec::Explicit(grid)) } else { self.clone() };
        std::fs::create_dir_all(&path).map_err(|e| io(&path, e))?;
        let store = Arc::new(FilesystemStore::new(&path).map_err(|e| io(&path, e))?);
        let fill = zarrs::array::FillValue::from(vec![0u8; T::DTYPE.itemsize()]);
        let array = ArrayBuilder::new(
            self.shape().iter().map(|&d| d as u64).collect::<Vec<_>>(),
            chunk.iter().map(|&c| c as u64).collect::<Vec<_>>(),
            zarr_type(T::DTYPE),
            fill,
        )
        .build(store, "/")
        .map_err(|e| io(&path, e))?;
        array.store_metadata().map_err(|e| io(&path, e))?;
        let name =
            Tokenizer::new().add("to-zarr").add(source.name()).add(path.to_string_lossy().as_ref()).key("to-zarr");
        let layer = ZarrStore { input: source.node.clone(), path, array: Arc::new(array) };
        let nb: Vec<usize> = source.numblocks();
        Ok(ZarrWrite {
            writes: Array::from_node(Arc::new(Node {
                name: name.shared_name().clone(),
                shape: nb.clone(),
                chunks: nb.iter().map(|&n| vec![1; n.max(1)]).collect(),
                dtype: DType::Bool,
                op: Op::Materialized(Arc::new(layer)),
            })),
        })
    }
}

struct ZarrStore {
    input: Arc<Node>,
    path: PathBuf,
    array: Arc<ZarrArray>,
}

#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct StoreRegion {
    path: PathBuf,
    #[serde(skip)]
    array: OnceLock<Arc<ZarrArray>>,
    offset: Vec<u64>,
    ndim: usize,
}

impl BlockFinish for StoreRegion {
    fn finish(&self, blocks: Vec<Block>) -> Result<Value, TaskError> {
        let block = blocks.into_iter().next().ok_or_else(|| TaskError::msg("no block"))?;
        let array = opened(&self.array, &self.path)?;
        let ranges: Vec<std::ops::Range<u64>> =
            self.offset.iter().zip(block.shape()).map(|(&o, &n)| o..o + n as u64).collect();
        let fail =
            |e: zarrs::array::ArrayError| TaskError::msg(format!("writing zarr store {}: {e}", self.path.display()));
        crate::with_block!(block, a => {
            let a = if a.is_standard_layout() { a } else { a.as_standard_layout().into_owned() };
            array.store_array_subset(&ranges, a).map_err(fail)?
        });
        let marker = ArrayD::from_elem(ndarray::IxDyn(&vec![1; self.ndim]), true);
        Ok(Value::new(Block::Bool(marker)))
    }
}

impl Layer for ZarrStore {
    fn lower_block(&self, node: &Node, idx: &[usize], lw: &mut Lowering<'_>) -> Result<TaskId, GraphError> {
        let mut inputs = TaskInputs::default();
        let expr = lw.expr(&self.input, idx, &mut inputs)?;
        let finish = StoreRegion {
            path: self.path.clone(),
            array: OnceLock::from(self.array.clone()),
            offset: self.input.block_offset(idx).iter().map(|&o| o as u64).collect(),
            ndim: idx.len(),
        };
        let kernel: Arc<dyn Kernel> =
            Arc::new(ExprKernel { name: "to-zarr".into(), exprs: vec![expr], finish: Finish::builtin(finish) });
        lw.builder.add(node.key(idx), kernel, inputs.into_args())
    }

    fn inputs(&self) -> Vec<Arc<Node>> {
        vec![self.input.clone()]
    }
}

impl Collection for ZarrWrite {
    type Output = usize;

    fn add_to(&self, builder: &mut GraphBuilder) -> Result<Vec<TaskId>, GraphError> {
        self.writes.add_to(builder)
    }
    fn output_count(&self) -> usize {
        self.writes.output_count()
    }
    fn assemble(&self, graph: &Graph, outputs: &[TaskId], values: Vec<Value>) -> Result<usize, ComputeError> {
        Ok(self.writes.assemble(graph, outputs, values)?.iter().filter(|&&w| w).count())
    }
}
