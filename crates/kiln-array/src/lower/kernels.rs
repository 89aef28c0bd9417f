//! The kernels of array tasks: thin wrappers that take a task's input values, call the block
//! math in [`crate::chunk`], and return the task's value.
//!
//! Most array tasks are an [`ExprKernel`]: evaluate block expressions (the fused elementwise,
//! slice and transpose work), then optionally a *finish* step (a reduction's partial, a matrix
//! product, assembling pieces, ...). The rest are [`PortableKernel`]s over earlier tasks'
//! values (combining partials, TSQR steps, carries).
//!
//! Every built-in kernel is portable and has a stable string id, listed once in
//! [`builtin_kernels!`] below: that table registers the factories ([`register_builtin_kernels`])
//! and lists the ids ([`BUILTIN_KERNEL_IDS`]). An expression kernel's id names its finish step
//! (`kiln.array.reduce.partial`, ...), so the id, not an enum index, says what a task does.

use std::sync::Arc;
#[cfg(any(feature = "zarr", feature = "hdf5", feature = "netcdf"))]
use std::{path::PathBuf, sync::OnceLock};

use kiln_graph::kernel::{PortableKernel, input};
use kiln_graph::{Kernel, KernelRegistry, KernelSpec, TaskError, Value};

use crate::block::{Block, DType, check_block, check_block_bytes};
use crate::chunk::ChunkError;
use crate::chunk::expr::Expr;
use crate::chunk::lanes::LaneProgram;
use crate::chunk::linalg::{CoreSvd, LocalQr, Part, StackedQr};
use crate::chunk::reduce::{Partial, ReduceParams};
use crate::chunk::{linalg, reduce, scan, select};

impl From<ChunkError> for TaskError {
    fn from(e: ChunkError) -> TaskError {
        TaskError::Failed(e.0)
    }
}

/// Post-processing of evaluated blocks inside one task (e.g. a reduction's first step).
pub trait BlockFinish: Send + Sync {
    /// Produces the task's value from its evaluated blocks.
    ///
    /// # Errors
    /// Data errors, as messages.
    fn finish(&self, blocks: Vec<Block>) -> Result<Value, TaskError>;

    /// Produces the task's value by consuming the lanes of its single expression, without the
    /// block ever being materialized; `None` when this finish cannot.
    fn finish_lanes(&self, _program: &LaneProgram<'_>) -> Option<Result<Value, TaskError>> {
        None
    }
}

/// The single evaluated block of a finish step that takes one.
fn single(blocks: Vec<Block>) -> Result<Block, TaskError> {
    blocks.into_iter().next().ok_or_else(|| TaskError::msg("no block"))
}

/// First step of a reduction: a block to its partial.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct PartialOf {
    pub(crate) params: ReduceParams,
    pub(crate) reduced_offset: Vec<usize>,
}

impl BlockFinish for PartialOf {
    fn finish(&self, blocks: Vec<Block>) -> Result<Value, TaskError> {
        Ok(Value::new(reduce::partial(&self.params, single(blocks)?, &self.reduced_offset)?))
    }

    #[inline]
    fn finish_lanes(&self, program: &LaneProgram<'_>) -> Option<Result<Value, TaskError>> {
        reduce::lane_partial(&self.params, program).map(|p| Ok(Value::new(p)))
    }
}

/// `sum_p A_p @ B_p` over the first and second halves of the evaluated blocks.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct Products {
    pub(crate) shape: Vec<usize>,
    pub(crate) dtype: DType,
}

impl BlockFinish for Products {
    fn finish(&self, blocks: Vec<Block>) -> Result<Value, TaskError> {
        check_block(&self.shape, self.dtype)?;
        Ok(Value::new(linalg::products(blocks, &self.shape, self.dtype)?))
    }
}

/// Copies each evaluated piece into its place in the output block.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct Assemble {
    pub(crate) shape: Vec<usize>,
    /// Where each piece starts in the output block.
    pub(crate) places: Vec<Vec<usize>>,
}

impl BlockFinish for Assemble {
    fn finish(&self, blocks: Vec<Block>) -> Result<Value, TaskError> {
        if let Some(first) = blocks.first() {
            check_block(&self.shape, first.dtype())?;
        }
        Ok(Value::new(select::assemble(blocks, &self.shape, &self.places)?))
    }
}

/// One block of a blocked Cholesky factorization.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct CholeskyBlock {
    pub(crate) diagonal: bool,
    pub(crate) previous: usize,
}

impl BlockFinish for CholeskyBlock {
    fn finish(&self, blocks: Vec<Block>) -> Result<Value, TaskError> {
        Ok(Value::new(linalg::cholesky_block(blocks, self.diagonal, self.previous)?))
    }
}

/// The QR of one row block (TSQR's first step).
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct LocalQrOf;

impl BlockFinish for LocalQrOf {
    fn finish(&self, blocks: Vec<Block>) -> Result<Value, TaskError> {
        Ok(Value::new(linalg::local_qr(single(blocks)?)?))
    }
}

/// A block's own cumulative sum or product.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct LocalScan {
    pub(crate) axis: usize,
    pub(crate) product: bool,
    pub(crate) dtype: DType,
}

impl BlockFinish for LocalScan {
    fn finish(&self, blocks: Vec<Block>) -> Result<Value, TaskError> {
        Ok(Value::new(scan::local_scan(single(blocks)?, self.axis, self.product, self.dtype)?))
    }
}

/// How many elements of a mask block are true.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct CountTrue {
    pub(crate) ndim: usize,
}

impl BlockFinish for CountTrue {
    fn finish(&self, blocks: Vec<Block>) -> Result<Value, TaskError> {
        Ok(Value::new(select::count_true(&single(blocks)?, self.ndim)?))
    }
}

/// The elements of the first block where the second (a mask) is true.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct Pick;

impl BlockFinish for Pick {
    fn finish(&self, blocks: Vec<Block>) -> Result<Value, TaskError> {
        let mut it = blocks.into_iter();
        let (Some(values), Some(mask)) = (it.next(), it.next()) else {
            return Err(TaskError::msg("boolean selection needs a value block and a bool mask block"));
        };
        Ok(Value::new(select::pick(values, &mask)?))
    }
}

/// Writes the evaluated block to its region of a Zarr store.
#[cfg(feature = "zarr")]
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct StoreRegion {
    pub(crate) path: PathBuf,
    #[serde(skip)]
    pub(crate) array: OnceLock<Arc<crate::chunk::zarr::ZarrArray>>,
    pub(crate) offset: Vec<u64>,
    pub(crate) ndim: usize,
}

#[cfg(feature = "zarr")]
impl BlockFinish for StoreRegion {
    fn finish(&self, blocks: Vec<Block>) -> Result<Value, TaskError> {
        let block = single(blocks)?;
        let array = crate::chunk::zarr::opened(&self.array, &self.path)?;
        Ok(Value::new(crate::chunk::zarr::write_region(array, &self.path, &self.offset, self.ndim, block)?))
    }
}

/// Writes the evaluated block to its hyperslab of an HDF5 dataset.
#[cfg(feature = "hdf5")]
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct StoreHdf5Region {
    pub(crate) path: PathBuf,
    pub(crate) dataset: String,
    pub(crate) offset: Vec<u64>,
    pub(crate) ndim: usize,
}

#[cfg(feature = "hdf5")]
impl BlockFinish for StoreHdf5Region {
    fn finish(&self, blocks: Vec<Block>) -> Result<Value, TaskError> {
        let block = single(blocks)?;
        Ok(Value::new(crate::chunk::hdf5::write_region(&self.path, &self.dataset, &self.offset, self.ndim, block)?))
    }
}

/// Writes the evaluated block to its hyperslab of a NetCDF variable.
#[cfg(feature = "netcdf")]
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct StoreNetcdfRegion {
    pub(crate) path: PathBuf,
    pub(crate) variable: String,
    pub(crate) offset: Vec<u64>,
    pub(crate) ndim: usize,
}

#[cfg(feature = "netcdf")]
impl BlockFinish for StoreNetcdfRegion {
    fn finish(&self, blocks: Vec<Block>) -> Result<Value, TaskError> {
        let block = single(blocks)?;
        Ok(Value::new(crate::chunk::netcdf::write_region(&self.path, &self.variable, &self.offset, self.ndim, block)?))
    }
}

/// Combines reduction partials; with `finalize`, also produces the output block (shape, dtype).
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct Combine {
    pub(crate) reduction: ReduceParams,
    pub(crate) finalize: Option<(Vec<usize>, DType)>,
}

impl PortableKernel for Combine {
    const ID: &'static str = "kiln.array.reduce.combine";
    fn name(&self) -> &str {
        if self.finalize.is_some() { "reduce-aggregate" } else { "reduce-combine" }
    }

    fn call(&self, inputs: &[Value]) -> Result<Value, TaskError> {
        let partials: Vec<&Partial> = inputs
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.downcast_ref::<Partial>().map_err(|m| TaskError::TypeMismatch {
                    position: i,
                    expected: "reduction partial",
                    found: m.found,
                })
            })
            .collect::<Result<_, _>>()?;
        let combined = reduce::combine(&self.reduction, &partials)?;
        match &self.finalize {
            None => Ok(Value::new(combined)),
            Some((shape, dtype)) => Ok(Value::new(reduce::finalize(&self.reduction, combined, shape, *dtype)?)),
        }
    }
}

/// Sums blocks of one shape and dtype (the sum tree over matrix product partials).
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct AddBlocks;

impl PortableKernel for AddBlocks {
    const ID: &'static str = "kiln.array.linalg.add-blocks";
    fn name(&self) -> &str {
        "sum-blocks"
    }
    fn call(&self, inputs: &[Value]) -> Result<Value, TaskError> {
        Ok(Value::new(linalg::add_blocks(&input_blocks(inputs)?)?))
    }
}

/// The carry a cumulative block passes on: its last slab plus the carry it received.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct Carry {
    pub(crate) axis: usize,
    pub(crate) product: bool,
}

impl PortableKernel for Carry {
    const ID: &'static str = "kiln.array.scan.carry";
    fn name(&self) -> &str {
        "cumulative-carry"
    }
    fn call(&self, inputs: &[Value]) -> Result<Value, TaskError> {
        let blocks = input_blocks(inputs)?;
        let local = blocks.first().ok_or_else(|| TaskError::msg("cumulative carry: missing block"))?;
        Ok(Value::new(scan::carry(local, blocks.get(1).copied(), self.axis, self.product)?))
    }
}

/// A local scan with the carry of the blocks before it applied.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct ApplyCarry {
    pub(crate) axis: usize,
    pub(crate) product: bool,
}

impl PortableKernel for ApplyCarry {
    const ID: &'static str = "kiln.array.scan.apply-carry";
    fn name(&self) -> &str {
        "cumulative-apply"
    }
    fn call(&self, inputs: &[Value]) -> Result<Value, TaskError> {
        let blocks = input_blocks(inputs)?;
        let [local, carry] = blocks.as_slice() else {
            return Err(TaskError::msg("cumulative apply: needs a block and a carry"));
        };
        Ok(Value::new(scan::apply_carry(local, carry, self.axis, self.product)?))
    }
}

/// TSQR's second step: the QR of the stacked R factors.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct StackQr;

impl PortableKernel for StackQr {
    const ID: &'static str = "kiln.array.linalg.tsqr-stack";
    fn name(&self) -> &str {
        "tsqr-stack"
    }
    fn call(&self, inputs: &[Value]) -> Result<Value, TaskError> {
        let locals: Vec<&LocalQr> = inputs
            .iter()
            .map(|v| v.downcast_ref::<LocalQr>().map_err(|m| TaskError::msg(format!("tsqr stack got {}", m.found))))
            .collect::<Result<_, _>>()?;
        Ok(Value::new(linalg::stacked_qr(&locals)))
    }
}

/// Q block `index` of a TSQR (times U_R for the SVD's U, when a third input is given).
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct QBlock {
    pub(crate) index: usize,
}

impl PortableKernel for QBlock {
    const ID: &'static str = "kiln.array.linalg.tsqr-q";
    fn name(&self) -> &str {
        "tsqr-q"
    }
    fn call(&self, inputs: &[Value]) -> Result<Value, TaskError> {
        let local = input::<LocalQr>(inputs, 0)?;
        let stacked = input::<StackedQr>(inputs, 1)?;
        let core = match inputs.get(2) {
            Some(core) => {
                Some(core.downcast_ref::<CoreSvd>().map_err(|m| TaskError::msg(format!("svd u got {}", m.found)))?)
            }
            None => None,
        };
        Ok(Value::new(linalg::q_block(self.index, local, stacked, core)?))
    }
}

/// One output (R, S or Vt) of the stacked QR or the core SVD, as a block.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct PartOf(pub(crate) Part);

impl PortableKernel for PartOf {
    const ID: &'static str = "kiln.array.linalg.decomp-part";
    fn name(&self) -> &str {
        match self.0 {
            Part::R => "tsqr-r",
            Part::S => "svd-s",
            Part::Vt => "svd-vt",
        }
    }
    fn call(&self, inputs: &[Value]) -> Result<Value, TaskError> {
        let block = match self.0 {
            Part::R => input::<StackedQr>(inputs, 0)?.r.clone().into_dyn(),
            Part::S => input::<CoreSvd>(inputs, 0)?.s.clone().into_dyn(),
            Part::Vt => input::<CoreSvd>(inputs, 0)?.vt.clone().into_dyn(),
        };
        Ok(Value::new(Block::F64(block)))
    }
}

/// The SVD of the stacked QR's R factor.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct CoreSvdOf;

impl PortableKernel for CoreSvdOf {
    const ID: &'static str = "kiln.array.linalg.svd-core";
    fn name(&self) -> &str {
        "svd-core"
    }
    fn call(&self, inputs: &[Value]) -> Result<Value, TaskError> {
        Ok(Value::new(linalg::core_svd(input::<StackedQr>(inputs, 0)?)?))
    }
}

/// Reads one block's region of a Zarr store.
#[cfg(feature = "zarr")]
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct ReadRegion {
    pub(crate) path: PathBuf,
    #[serde(skip)]
    pub(crate) array: OnceLock<Arc<crate::chunk::zarr::ZarrArray>>,
    pub(crate) ranges: Vec<std::ops::Range<u64>>,
    pub(crate) dtype: DType,
}

#[cfg(feature = "zarr")]
impl PortableKernel for ReadRegion {
    const ID: &'static str = "kiln.array.zarr.read";
    fn name(&self) -> &str {
        "from-zarr"
    }
    fn call(&self, _inputs: &[Value]) -> Result<Value, TaskError> {
        let shape: Vec<usize> = self.ranges.iter().map(|r| (r.end - r.start) as usize).collect();
        check_block(&shape, self.dtype)?;
        let array = crate::chunk::zarr::opened(&self.array, &self.path)?;
        Ok(Value::new(crate::chunk::zarr::read_region(array, &self.path, &self.ranges, self.dtype)?))
    }
    fn reread_bytes(&self) -> Option<u64> {
        let shape: Vec<usize> = self.ranges.iter().map(|r| (r.end - r.start) as usize).collect();
        Some(crate::block::block_bytes(&shape, self.dtype))
    }
}

/// Reads one block's hyperslab of an HDF5 dataset.
#[cfg(feature = "hdf5")]
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct ReadHdf5Region {
    pub(crate) path: PathBuf,
    pub(crate) dataset: String,
    #[serde(skip)]
    pub(crate) handle: OnceLock<Arc<hdf5::Dataset>>,
    pub(crate) ranges: Vec<std::ops::Range<u64>>,
    pub(crate) dtype: DType,
    /// Where the block's bytes lie, when they can be read without the library.
    pub(crate) raw: Option<crate::chunk::hdf5::RawPlan>,
    #[serde(skip)]
    pub(crate) raw_file: OnceLock<Arc<std::fs::File>>,
}

#[cfg(feature = "hdf5")]
impl PortableKernel for ReadHdf5Region {
    const ID: &'static str = "kiln.array.hdf5.read";
    fn name(&self) -> &str {
        "from-hdf5"
    }
    fn call(&self, _inputs: &[Value]) -> Result<Value, TaskError> {
        let shape: Vec<usize> = self.ranges.iter().map(|r| (r.end - r.start) as usize).collect();
        check_block(&shape, self.dtype)?;
        if let Some(plan) = &self.raw {
            let file = match self.raw_file.get() {
                Some(file) => file,
                None => {
                    let file = std::fs::File::open(&self.path)
                        .map_err(|e| TaskError::Failed(format!("opening hdf5 file {}: {e}", self.path.display())))?;
                    self.raw_file.get_or_init(|| Arc::new(file))
                }
            };
            return Ok(Value::new(crate::chunk::hdf5::read_raw(
                file,
                &self.path,
                &self.dataset,
                plan,
                &self.ranges,
                self.dtype,
            )?));
        }
        let ds = crate::chunk::hdf5::opened(&self.handle, &self.path, &self.dataset)?;
        Ok(Value::new(crate::chunk::hdf5::read_region(ds, &self.path, &self.dataset, &self.ranges, self.dtype)?))
    }
    fn reread_bytes(&self) -> Option<u64> {
        let shape: Vec<usize> = self.ranges.iter().map(|r| (r.end - r.start) as usize).collect();
        Some(crate::block::block_bytes(&shape, self.dtype))
    }
}

/// Reads one block's hyperslab of a NetCDF variable, decoded by the CF conventions.
#[cfg(feature = "netcdf")]
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct ReadNetcdfRegion {
    pub(crate) path: PathBuf,
    pub(crate) variable: String,
    #[serde(skip)]
    pub(crate) file: OnceLock<Arc<netcdf::File>>,
    pub(crate) ranges: Vec<std::ops::Range<u64>>,
    pub(crate) decode: crate::chunk::netcdf::CfDecode,
}

#[cfg(feature = "netcdf")]
impl PortableKernel for ReadNetcdfRegion {
    const ID: &'static str = "kiln.array.netcdf.read";
    fn name(&self) -> &str {
        "open-netcdf"
    }
    fn call(&self, _inputs: &[Value]) -> Result<Value, TaskError> {
        let shape: Vec<usize> = self.ranges.iter().map(|r| (r.end - r.start) as usize).collect();
        check_block(&shape, DType::F64)?;
        let file = crate::chunk::netcdf::opened(&self.file, &self.path)?;
        Ok(Value::new(crate::chunk::netcdf::read_region(file, &self.path, &self.variable, &self.ranges, &self.decode)?))
    }
    fn reread_bytes(&self) -> Option<u64> {
        let shape: Vec<usize> = self.ranges.iter().map(|r| (r.end - r.start) as usize).collect();
        Some(crate::block::block_bytes(&shape, DType::F64))
    }
}

/// Passes on a block another collection computed (see [`crate::from_block_tasks`]) after
/// checking it has the element type and shape the array declared, so a wrong block fails its
/// own task, named, instead of corrupting a consumer's arithmetic.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct CheckBlock {
    pub(crate) label: String,
    pub(crate) index: Vec<usize>,
    pub(crate) shape: Vec<usize>,
    pub(crate) dtype: DType,
}

impl PortableKernel for CheckBlock {
    const ID: &'static str = "kiln.array.check-block";
    fn name(&self) -> &str {
        &self.label
    }
    fn call(&self, inputs: &[Value]) -> Result<Value, TaskError> {
        let block = input::<Block>(inputs, 0)?;
        if block.shape() != self.shape.as_slice() || block.dtype() != self.dtype {
            return Err(TaskError::Failed(format!(
                "{}: block {:?} is a {:?} {} block; the array declared {:?} {}",
                self.label,
                self.index,
                block.shape(),
                block.dtype(),
                self.shape,
                self.dtype
            )));
        }
        Ok(inputs[0].clone())
    }
}

/// Reads one block's `.npy` file (a directory of `.npy` blocks).
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct ReadNpyBlock {
    pub(crate) path: std::path::PathBuf,
    pub(crate) shape: Vec<usize>,
    pub(crate) dtype: DType,
}

impl PortableKernel for ReadNpyBlock {
    const ID: &'static str = "kiln.array.npy.read";
    fn name(&self) -> &str {
        "from-npy"
    }
    fn call(&self, _inputs: &[Value]) -> Result<Value, TaskError> {
        check_block(&self.shape, self.dtype)?;
        let block = crate::chunk::npy::read_npy(&self.path)?;
        // The file may have changed since the array was opened.
        if block.shape() != self.shape.as_slice() || block.dtype() != self.dtype {
            return Err(TaskError::Failed(format!(
                "{}: holds a {:?} {} block; the array was opened with {:?} {}",
                self.path.display(),
                block.shape(),
                block.dtype(),
                self.shape,
                self.dtype
            )));
        }
        Ok(Value::new(block))
    }
    fn reread_bytes(&self) -> Option<u64> {
        Some(crate::block::block_bytes(&self.shape, self.dtype))
    }
}

/// Writes the evaluated block as its own `.npy` file.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct WriteNpyBlock {
    pub(crate) path: std::path::PathBuf,
    pub(crate) ndim: usize,
}

impl BlockFinish for WriteNpyBlock {
    fn finish(&self, blocks: Vec<Block>) -> Result<Value, TaskError> {
        let block = single(blocks)?;
        crate::chunk::npy::write_block(&self.path, &block)?;
        Ok(Value::new(Block::Bool(ndarray::ArrayD::from_elem(ndarray::IxDyn(&vec![1; self.ndim]), true))))
    }
}

/// Borrows the [`Block`]s among a task's inputs.
///
/// # Errors
/// [`TaskError::TypeMismatch`] for an input that is not a block.
pub fn input_blocks(inputs: &[Value]) -> Result<Vec<&Block>, TaskError> {
    inputs
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.downcast_ref::<Block>()
                .or_else(|_| v.downcast_ref::<Arc<Block>>().map(|b| b.as_ref()))
                .map_err(|m| TaskError::TypeMismatch { position: i, expected: "kiln_array::Block", found: m.found })
        })
        .collect()
}

/// The block in C order: stored blocks are contiguous, so codecs and consumers see plain
/// buffers (a transposed result is copied once here).
pub fn standard_layout(block: Block) -> Block {
    crate::with_block!(block, a => {
        if a.is_standard_layout() {
            crate::block::Element::into_block(a)
        } else {
            crate::block::Element::into_block(a.as_standard_layout().into_owned())
        }
    })
}

/// Evaluates block expressions, then optionally post-processes the blocks.
///
/// Portable (its id names its finish step) unless the finish step is a user function.
pub struct ExprKernel {
    /// Display name.
    pub name: String,
    /// One expression per block the task needs.
    pub exprs: Vec<Expr>,
    /// What to do with the evaluated blocks.
    pub finish: Finish,
}

/// The id of an [`ExprKernel`] without a finish step.
pub const EXPR_KERNEL_ID: &str = "kiln.array.expr";

/// What an [`ExprKernel`] does with its evaluated blocks: nothing (the task's value is its
/// single block), one of kiln's own steps (plain data, so the kernel is portable), or a user
/// function (local only).
pub struct Finish(FinishKind);

enum FinishKind {
    Block,
    Builtin(Builtin),
    Custom(Arc<dyn BlockFinish>),
}

impl Finish {
    /// The task's value is its single evaluated block.
    pub fn none() -> Finish {
        Finish(FinishKind::Block)
    }

    /// A user post-processing step; the kernel then runs in this process only.
    pub fn custom(f: Arc<dyn BlockFinish>) -> Finish {
        Finish(FinishKind::Custom(f))
    }

    pub(crate) fn builtin(b: impl Into<Builtin>) -> Finish {
        Finish(FinishKind::Builtin(b.into()))
    }

    #[inline]
    fn get(&self) -> Option<&dyn BlockFinish> {
        match &self.0 {
            FinishKind::Block => None,
            FinishKind::Builtin(b) => Some(b),
            FinishKind::Custom(f) => Some(f.as_ref()),
        }
    }
}

/// Why an expression kernel's parameters could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum ExprParamsError {
    /// The bytes are not this kernel's parameters.
    #[error("malformed parameters of {id}: {source}")]
    Malformed {
        /// The kernel id.
        id: &'static str,
        /// The decoder's error.
        #[source]
        source: postcard::Error,
    },
    /// The kernel has nothing to evaluate.
    #[error("an expression kernel needs at least one expression")]
    NoExpression,
    /// An expression nests deeper than any kiln builds (a forged frame): refused before its
    /// decoding could overflow the stack.
    #[error("parameters of {id}: {source}")]
    TooDeep {
        /// The kernel id.
        id: &'static str,
        /// The refusal.
        #[source]
        source: crate::chunk::expr::ExprDecodeError,
    },
}

/// [`ExprKernel`] parameters as written: borrowed, so making a spec copies nothing twice.
#[derive(serde::Serialize)]
struct ExprParamsRef<'a, F> {
    name: &'a str,
    exprs: &'a [Expr],
    finish: &'a F,
}

/// [`ExprKernel`] parameters as read; the same wire layout as [`ExprParamsRef`].
#[derive(serde::Deserialize)]
struct ExprParams<F> {
    name: String,
    exprs: Vec<Expr>,
    finish: F,
}

fn read_expr_params<F: serde::de::DeserializeOwned>(
    id: &'static str,
    params: &[u8],
) -> Result<ExprParams<F>, ExprParamsError> {
    use crate::chunk::expr::{ExprDecodeError, decode_with_exprs};
    let p: ExprParams<F> = decode_with_exprs(params).map_err(|e| match e {
        ExprDecodeError::Malformed(source) => ExprParamsError::Malformed { id, source },
        too_deep => ExprParamsError::TooDeep { id, source: too_deep },
    })?;
    if p.exprs.is_empty() {
        return Err(ExprParamsError::NoExpression);
    }
    Ok(p)
}

impl ExprKernel {
    /// Rebuilds a kernel without a finish step from its spec parameters.
    ///
    /// # Errors
    /// [`ExprParamsError`] for bytes that are not an expression kernel's parameters.
    pub fn from_params(params: &[u8]) -> Result<ExprKernel, ExprParamsError> {
        let p: ExprParams<()> = read_expr_params(EXPR_KERNEL_ID, params)?;
        Ok(ExprKernel { name: p.name, exprs: p.exprs, finish: Finish::none() })
    }
}

/// Declares every built-in kernel exactly once:
/// - `finishes`: the built-in finish steps of [`ExprKernel`], each with the id its expression
///   kernels travel under (the enum [`Builtin`] dispatches them statically, without a vtable);
/// - `portable`: the other kernels, by type (their ids are their `PortableKernel::ID`).
macro_rules! builtin_kernels {
    (
        finishes { $($(#[$fmeta:meta])* $variant:ident($fty:ty) = $fid:literal,)* }
        portable { $($(#[$pmeta:meta])* $pty:ty,)* }
    ) => {
        /// kiln's own finish steps, as data.
        pub(crate) enum Builtin {
            $($(#[$fmeta])* $variant($fty),)*
        }

        $($(#[$fmeta])* impl From<$fty> for Builtin {
            fn from(f: $fty) -> Builtin {
                Builtin::$variant(f)
            }
        })*

        impl Builtin {
            /// The id of expression kernels ending in this step.
            fn id(&self) -> &'static str {
                match self {
                    $($(#[$fmeta])* Builtin::$variant(_) => $fid,)*
                }
            }

            /// The kernel's parameters with this step.
            fn params(&self, name: &str, exprs: &[Expr]) -> Result<Vec<u8>, postcard::Error> {
                match self {
                    $($(#[$fmeta])* Builtin::$variant(finish) => postcard::to_allocvec(&ExprParamsRef { name, exprs, finish }),)*
                }
            }
        }

        impl BlockFinish for Builtin {
            fn finish(&self, blocks: Vec<Block>) -> Result<Value, TaskError> {
                match self {
                    $($(#[$fmeta])* Builtin::$variant(f) => f.finish(blocks),)*
                }
            }

            #[inline]
            fn finish_lanes(&self, program: &LaneProgram<'_>) -> Option<Result<Value, TaskError>> {
                match self {
                    $($(#[$fmeta])* Builtin::$variant(f) => f.finish_lanes(program),)*
                }
            }
        }

        /// Registers every built-in array kernel's factory in `registry`.
        pub(crate) fn register_builtin_kernels(registry: &KernelRegistry) {
            registry.register_factory(EXPR_KERNEL_ID, |params| {
                ExprKernel::from_params(params).map(|k| Arc::new(k) as Arc<dyn Kernel>).map_err(|e| e.to_string())
            });
            $($(#[$fmeta])* registry.register_factory($fid, |params| {
                let p: ExprParams<$fty> = read_expr_params($fid, params).map_err(|e| e.to_string())?;
                let kernel = ExprKernel { name: p.name, exprs: p.exprs, finish: Finish::builtin(p.finish) };
                Ok(Arc::new(kernel) as Arc<dyn Kernel>)
            });)*
            $($(#[$pmeta])* registry.register::<$pty>();)*
        }

        /// The id of every built-in array kernel ([`register_portable`](crate::register_portable)
        /// registers a factory for each).
        pub const BUILTIN_KERNEL_IDS: &[&str] = &[
            EXPR_KERNEL_ID,
            $($(#[$fmeta])* $fid,)*
            $($(#[$pmeta])* <$pty as PortableKernel>::ID,)*
        ];
    };
}

builtin_kernels! {
    finishes {
        Partial(PartialOf) = "kiln.array.reduce.partial",
        Products(Products) = "kiln.array.linalg.products",
        Cholesky(CholeskyBlock) = "kiln.array.linalg.cholesky-block",
        LocalQr(LocalQrOf) = "kiln.array.linalg.tsqr-local",
        Assemble(Assemble) = "kiln.array.select.assemble",
        Count(CountTrue) = "kiln.array.select.count",
        Pick(Pick) = "kiln.array.select.pick",
        LocalScan(LocalScan) = "kiln.array.scan.local",
        #[cfg(feature = "zarr")]
        Store(StoreRegion) = "kiln.array.zarr.store",
        #[cfg(feature = "hdf5")]
        StoreHdf5(StoreHdf5Region) = "kiln.array.hdf5.store",
        #[cfg(feature = "netcdf")]
        StoreNetcdf(StoreNetcdfRegion) = "kiln.array.netcdf.store",
        WriteNpy(WriteNpyBlock) = "kiln.array.npy.write",
    }
    portable {
        Combine,
        AddBlocks,
        Carry,
        ApplyCarry,
        StackQr,
        QBlock,
        PartOf,
        CoreSvdOf,
        ReadNpyBlock,
        CheckBlock,
        #[cfg(feature = "zarr")]
        ReadRegion,
        #[cfg(feature = "hdf5")]
        ReadHdf5Region,
        #[cfg(feature = "netcdf")]
        ReadNetcdfRegion,
    }
}

impl Kernel for ExprKernel {
    fn name(&self) -> &str {
        &self.name
    }

    fn call(&self, inputs: &[Value]) -> Result<Value, TaskError> {
        let blocks = input_blocks(inputs)?;
        // Blocks generated from sources are checked against the executor's memory budget before
        // anything is allocated (a walk of at most a fused expression's few nodes).
        if kiln_graph::memory::budget().is_some() {
            for expr in &self.exprs {
                check_block_bytes(expr.largest_generated())?;
            }
        }
        let finish = self.finish.get();
        // A bare input returned as is needs no evaluation; anything else that compiles runs
        // lane-wise, a bare input under a reduction too (its lanes are read in place, where the
        // block evaluator would copy the block first).
        if let [expr] = self.exprs.as_slice()
            && !(finish.is_none() && matches!(expr, Expr::Input(_)))
            && let Some(program) = LaneProgram::compile(expr, &blocks)
        {
            return match finish {
                // Written out whole, a transposed input is faster through the tiled block
                // evaluator (`array_kernels`: 1.6-1.7 ms against 1.8-2.1 ms per 1000² block).
                None if program.reads_inputs_across_rows() => {
                    drop(program);
                    let block = self.exprs[0].eval(&blocks).map_err(|e| TaskError::Failed(e.0))?;
                    Ok(Value::new(standard_layout(block)))
                }
                None => {
                    check_block(program.shape(), DType::F64)?;
                    Ok(Value::new(program.to_block()))
                }
                Some(f) => match f.finish_lanes(&program) {
                    Some(result) => result,
                    None => {
                        check_block(program.shape(), DType::F64)?;
                        f.finish(vec![program.to_block()])
                    }
                },
            };
        }
        let evaluated: Vec<Block> =
            self.exprs.iter().map(|e| e.eval(&blocks).map_err(|e| TaskError::Failed(e.0))).collect::<Result<_, _>>()?;
        match finish {
            Some(f) => f.finish(evaluated),
            None => Ok(Value::new(standard_layout(
                evaluated.into_iter().next().ok_or_else(|| TaskError::msg("no expression"))?,
            ))),
        }
    }

    fn spec(&self) -> Option<KernelSpec> {
        let (id, params) = match &self.finish.0 {
            FinishKind::Block => (
                EXPR_KERNEL_ID,
                postcard::to_allocvec(&ExprParamsRef { name: &self.name, exprs: &self.exprs, finish: &() }),
            ),
            FinishKind::Builtin(b) => (b.id(), b.params(&self.name, &self.exprs)),
            FinishKind::Custom(_) => return None,
        };
        params.ok().map(|params| KernelSpec { id: id.to_string(), params })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use kiln_graph::CodecRegistry;
    use kiln_graph::kernel::Portable;

    use super::*;
    use crate::block::Scalar;
    use crate::chunk::expr::{AxisSlice, BinaryOp, UnaryOp};
    use crate::chunk::reduce::ReduceOp;
    use crate::chunk::source::{Dist, Source};

    fn params() -> ReduceParams {
        ReduceParams { op: ReduceOp::Var, axes: vec![0, 2], ddof: 1.0, skipna: true, reduced_shape: vec![4, 6] }
    }

    fn expr() -> Expr {
        let generated = Expr::Gen {
            source: Source::Random { seed: 7, dist: Dist::Uniform { low: 0.0, high: 1.0 } },
            dtype: DType::F32,
            shape: vec![2, 3],
            offset: vec![0, 3],
            array_shape: vec![2, 6],
        };
        let sliced = Expr::Slice(vec![AxisSlice { start: 1, len: 2, step: 1 }], Box::new(Expr::Input(0)));
        Expr::Binary(BinaryOp::Pow, Box::new(Expr::Unary(UnaryOp::Sqrt, Box::new(generated))), Box::new(sliced))
    }

    fn with(finish: impl Into<Builtin>) -> Arc<dyn Kernel> {
        Arc::new(ExprKernel {
            name: "k".into(),
            exprs: vec![expr(), Expr::Scalar(Scalar::F64(2.0))],
            finish: Finish::builtin(finish),
        })
    }

    /// One instance of every built-in kernel.
    fn samples() -> Vec<Arc<dyn Kernel>> {
        let mut all: Vec<Arc<dyn Kernel>> = vec![
            Arc::new(ExprKernel { name: "plain".into(), exprs: vec![expr()], finish: Finish::none() }),
            with(PartialOf { params: params(), reduced_offset: vec![1, 2] }),
            with(Products { shape: vec![3, 4], dtype: DType::F64 }),
            with(CholeskyBlock { diagonal: false, previous: 2 }),
            with(LocalQrOf),
            with(Assemble { shape: vec![4, 4], places: vec![vec![0, 0], vec![2, 0]] }),
            with(CountTrue { ndim: 2 }),
            with(Pick),
            with(LocalScan { axis: 1, product: true, dtype: DType::I64 }),
            Arc::new(Portable(Combine { reduction: params(), finalize: Some((vec![3], DType::F64)) })),
            Arc::new(Portable(AddBlocks)),
            Arc::new(Portable(Carry { axis: 1, product: false })),
            Arc::new(Portable(ApplyCarry { axis: 0, product: true })),
            Arc::new(Portable(StackQr)),
            Arc::new(Portable(QBlock { index: 3 })),
            Arc::new(Portable(PartOf(Part::Vt))),
            Arc::new(Portable(CoreSvdOf)),
            Arc::new(Portable(ReadNpyBlock { path: "/tmp/x/0.1.npy".into(), shape: vec![2, 4], dtype: DType::F32 })),
            Arc::new(Portable(CheckBlock {
                label: "from-frame".into(),
                index: vec![1, 0],
                shape: vec![5, 3],
                dtype: DType::I64,
            })),
            with(WriteNpyBlock { path: "/tmp/x/0.1.npy".into(), ndim: 2 }),
        ];
        #[cfg(feature = "zarr")]
        {
            all.push(with(StoreRegion {
                path: "/tmp/x.zarr".into(),
                array: OnceLock::new(),
                offset: vec![0, 4],
                ndim: 2,
            }));
            all.push(Arc::new(Portable(ReadRegion {
                path: "/tmp/x.zarr".into(),
                array: OnceLock::new(),
                ranges: vec![0..2, 4..8],
                dtype: DType::I32,
            })));
        }
        #[cfg(feature = "hdf5")]
        {
            all.push(with(StoreHdf5Region {
                path: "/tmp/x.h5".into(),
                dataset: "g/x".into(),
                offset: vec![0, 4],
                ndim: 2,
            }));
            all.push(Arc::new(Portable(ReadHdf5Region {
                path: "/tmp/x.h5".into(),
                dataset: "g/x".into(),
                handle: OnceLock::new(),
                ranges: vec![0..2, 4..8],
                dtype: DType::F64,
                raw: Some(crate::chunk::hdf5::RawPlan::Chunked {
                    chunk: vec![2, 4],
                    pieces: vec![
                        (vec![0, 4], Some(crate::chunk::hdf5::StoredChunk { addr: 4096, size: 30, mask: 2 })),
                        (vec![2, 4], None),
                    ],
                    codecs: vec![crate::chunk::hdf5::Codec::Shuffle, crate::chunk::hdf5::Codec::Deflate],
                    fill: (-1.5f64).to_le_bytes().to_vec(),
                }),
                raw_file: OnceLock::new(),
            })));
        }
        #[cfg(feature = "netcdf")]
        all.push(with(StoreNetcdfRegion {
            path: "/tmp/x.nc".into(),
            variable: "tas".into(),
            offset: vec![0, 4],
            ndim: 2,
        }));
        #[cfg(feature = "netcdf")]
        all.push(Arc::new(Portable(ReadNetcdfRegion {
            path: "/tmp/x.nc".into(),
            variable: "tas".into(),
            file: OnceLock::new(),
            ranges: vec![0..2, 4..8],
            decode: crate::chunk::netcdf::CfDecode { missing: vec![-999.0], scale: Some(0.01), offset: Some(273.15) },
        })));
        all
    }

    #[test]
    fn builtin_kernel_ids_are_unique() {
        let unique: BTreeSet<&str> = BUILTIN_KERNEL_IDS.iter().copied().collect();
        assert_eq!(unique.len(), BUILTIN_KERNEL_IDS.len(), "{BUILTIN_KERNEL_IDS:?}");
        assert!(BUILTIN_KERNEL_IDS.iter().all(|id| id.starts_with("kiln.array.")));
    }

    #[test]
    fn every_builtin_kernel_round_trips_through_its_spec() {
        let (kernels, codecs) = (KernelRegistry::new(), CodecRegistry::with_builtins());
        crate::register_portable(&kernels, &codecs);
        let mut covered = BTreeSet::new();
        for kernel in samples() {
            let spec = kernel.spec().unwrap_or_else(|| panic!("{} has no spec", kernel.name()));
            let rebuilt = kernels.resolve(&spec).unwrap_or_else(|e| panic!("{}: {e}", spec.id));
            assert_eq!(rebuilt.spec().as_ref(), Some(&spec), "{} changed on the way", spec.id);
            assert_eq!(rebuilt.name(), kernel.name());
            covered.insert(spec.id);
        }
        // A kernel added to the table needs a sample here.
        let all: BTreeSet<String> = BUILTIN_KERNEL_IDS.iter().map(|s| s.to_string()).collect();
        assert_eq!(covered, all);
    }

    #[test]
    fn a_forged_expression_kernel_nested_a_million_deep_is_refused_with_a_clear_error() {
        let (kernels, codecs) = (KernelRegistry::new(), CodecRegistry::with_builtins());
        crate::register_portable(&kernels, &codecs);
        // name, one expression, no finish parameters: the layout of `ExprParams<()>`.
        let mut params = postcard::to_allocvec("forged").unwrap();
        params.push(1);
        params.extend(crate::chunk::expr::nested_bytes(1_000_000));
        let spec = KernelSpec { id: EXPR_KERNEL_ID.into(), params };
        // On a small stack, as a worker's runtime thread: the old decoder recursed per level.
        let message = std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(move || kernels.resolve(&spec).err().map(|e| e.to_string()))
            .unwrap()
            .join()
            .expect("decoding overflowed the stack")
            .expect("the forged kernel resolved");
        assert!(
            message.contains("kiln.array.expr") && message.contains("nests more than 64 operations deep"),
            "{message}"
        );
    }

    #[test]
    fn the_wire_form_of_expression_kernels_is_frozen() {
        // Parameters written by one build must mean the same to every other: operations travel
        // by name, and the structure's encoding is pinned here. If this fails, the wire format
        // changed: keep old encodings readable or change the kernel ids.
        let spec = with(PartialOf { params: params(), reduced_offset: vec![1, 2] }).spec().expect("portable");
        assert_eq!(spec.id, "kiln.array.reduce.partial");
        assert_eq!(spec.params, FROZEN_PARTIAL, "{:?}", spec.params);
    }

    /// One expression of every kind, over every source and scalar kind.
    fn every_expression() -> Vec<Expr> {
        let gen_of =
            |source| Expr::Gen { source, dtype: DType::F64, shape: vec![2], offset: vec![1], array_shape: vec![4] };
        let input = || Box::new(Expr::Input(1));
        vec![
            gen_of(Source::Full(Scalar::I32(-3))),
            gen_of(Source::Ramp { start: 0.5, step: 2.0 }),
            gen_of(Source::Eye { k: -1 }),
            gen_of(Source::Random { seed: 9, dist: Dist::Normal { mean: 1.0, std: 2.0 } }),
            Expr::Scalar(Scalar::Bool(true)),
            Expr::Scalar(Scalar::I64(5)),
            Expr::Scalar(Scalar::F32(1.5)),
            Expr::Unary(UnaryOp::IsNan, input()),
            Expr::Binary(BinaryOp::Ge, input(), input()),
            Expr::Where(input(), input(), input()),
            Expr::Cast(DType::Bool, input()),
            Expr::Transpose(vec![1, 0], input()),
            Expr::Slice(vec![AxisSlice { start: 3, len: 2, step: -1 }], input()),
            Expr::Reshape(vec![2, 1], input()),
            Expr::Take(0, vec![2, 0, 2], input()),
        ]
    }

    #[test]
    fn the_wire_form_of_every_expression_kind_is_frozen() {
        let kernel = ExprKernel { name: "all".into(), exprs: every_expression(), finish: Finish::none() };
        let spec = kernel.spec().expect("portable");
        assert_eq!(spec.id, EXPR_KERNEL_ID);
        assert_eq!(spec.params, FROZEN_EXPRESSIONS, "{:?}", spec.params);
    }

    /// The parameters of the kernel in `the_wire_form_of_every_expression_kind_is_frozen`.
    const FROZEN_EXPRESSIONS: &[u8] = &[
        3, 97, 108, 108, 15, 1, 0, 1, 5, 7, 102, 108, 111, 97, 116, 54, 52, 1, 2, 1, 1, 1, 4, 1, 1, 0, 0, 0, 0, 0, 0,
        224, 63, 0, 0, 0, 0, 0, 0, 0, 64, 7, 102, 108, 111, 97, 116, 54, 52, 1, 2, 1, 1, 1, 4, 1, 2, 1, 7, 102, 108,
        111, 97, 116, 54, 52, 1, 2, 1, 1, 1, 4, 1, 3, 9, 1, 0, 0, 0, 0, 0, 0, 240, 63, 0, 0, 0, 0, 0, 0, 0, 64, 7, 102,
        108, 111, 97, 116, 54, 52, 1, 2, 1, 1, 1, 4, 2, 0, 1, 2, 2, 10, 2, 3, 0, 0, 192, 63, 3, 6, 105, 115, 95, 110,
        97, 110, 0, 1, 4, 2, 103, 101, 0, 1, 0, 1, 5, 0, 1, 0, 1, 0, 1, 6, 4, 98, 111, 111, 108, 0, 1, 7, 2, 1, 0, 0,
        1, 8, 1, 3, 2, 1, 0, 1, 9, 2, 2, 1, 0, 1, 10, 0, 3, 2, 0, 2, 0, 1,
    ];

    /// The parameters of the kernel in `the_wire_form_of_expression_kernels_is_frozen`.
    const FROZEN_PARTIAL: &[u8] = &[
        1, 107, 2, 4, 3, 112, 111, 119, 3, 4, 115, 113, 114, 116, 1, 3, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        240, 63, 7, 102, 108, 111, 97, 116, 51, 50, 2, 2, 3, 2, 0, 3, 2, 2, 6, 8, 1, 1, 2, 2, 0, 0, 2, 4, 0, 0, 0, 0,
        0, 0, 0, 64, 3, 118, 97, 114, 2, 0, 2, 0, 0, 0, 0, 0, 0, 240, 63, 1, 2, 4, 6, 2, 1, 2,
    ];
}
