//! Reductions as trees: a partial result per input block (fused with the block's elementwise
//! work), combined `split_every` at a time, then finalized. Mean and variance carry
//! (count, mean, M2) and combine with Chan's parallel formula, which stays accurate where
//! summing squares would not.

use std::sync::Arc;

use kiln_graph::kernel::{Portable, PortableKernel};
use kiln_graph::{GraphError, Kernel, Key, TaskError, TaskId, Tokenizer, Value};
use ndarray::{ArrayD, Axis, CowArray, Ix2, IxDyn, Zip};

use crate::array::Array;
use crate::block::{Block, DType, Element};
use crate::chunks::block_indices;
use crate::error::{ArrayError, normalize_axis};
use crate::node::{BlockFinish, ExprKernel, Finish, Layer, Lowering, Node, Op, TaskInputs};

/// Default fan-in of reduction trees.
pub const DEFAULT_SPLIT_EVERY: usize = 16;

/// What a reduction computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ReduceOp {
    /// Sum.
    Sum,
    /// Product.
    Prod,
    /// Minimum.
    Min,
    /// Maximum.
    Max,
    /// Any element true (non-zero).
    Any,
    /// All elements true (non-zero).
    All,
    /// Arithmetic mean.
    Mean,
    /// Variance (with `ddof`).
    Var,
    /// Standard deviation (with `ddof`).
    Std,
    /// Index of the minimum.
    ArgMin,
    /// Index of the maximum.
    ArgMax,
}

/// Options of a reduction (Dask's keyword arguments).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Reduce {
    /// Axes to reduce; `None` reduces all.
    pub axes: Option<Vec<isize>>,
    /// Keep reduced axes with length 1.
    pub keepdims: bool,
    /// Fan-in of the combining tree.
    pub split_every: usize,
    /// Delta degrees of freedom for `var`/`std`.
    pub ddof: f64,
    /// Skip NaNs (the `nan*` functions).
    pub skipna: bool,
}

impl Default for Reduce {
    fn default() -> Self {
        Reduce { axes: None, keepdims: false, split_every: DEFAULT_SPLIT_EVERY, ddof: 0.0, skipna: false }
    }
}

impl Reduce {
    /// Reduce along these axes.
    pub fn axes(axes: impl IntoIterator<Item = isize>) -> Self {
        Reduce { axes: Some(axes.into_iter().collect()), ..Default::default() }
    }
    /// Reduce along one axis.
    pub fn axis(axis: isize) -> Self {
        Self::axes([axis])
    }
    /// Keep reduced axes as length 1.
    pub fn keepdims(mut self, keep: bool) -> Self {
        self.keepdims = keep;
        self
    }
    /// Sets the tree fan-in (at least 2).
    pub fn split_every(mut self, n: usize) -> Self {
        self.split_every = n.max(2);
        self
    }
    /// Sets `ddof` for `var`/`std`.
    pub fn ddof(mut self, ddof: f64) -> Self {
        self.ddof = ddof;
        self
    }
    /// Skips NaNs.
    pub fn skipna(mut self, skip: bool) -> Self {
        self.skipna = skip;
        self
    }
}

/// The partial result of a reduction over some blocks.
#[derive(Debug, Clone)]
pub(crate) enum Partial {
    /// An accumulator block (sum, product, min, max, any, all).
    Acc(Block),
    /// Count, mean and sum of squared deviations, per kept position.
    Moments { n: ArrayD<f64>, mean: ArrayD<f64>, m2: ArrayD<f64> },
    /// Best value so far and its flat index over the reduced axes (-1: none yet).
    Arg { val: ArrayD<f64>, idx: ArrayD<i64> },
}

fn out_dtype(op: ReduceOp, input: DType) -> DType {
    match op {
        ReduceOp::Sum | ReduceOp::Prod => input.sum_dtype(),
        ReduceOp::Min | ReduceOp::Max => input,
        ReduceOp::Any | ReduceOp::All => DType::Bool,
        ReduceOp::Mean | ReduceOp::Var | ReduceOp::Std => input.float_dtype(),
        ReduceOp::ArgMin | ReduceOp::ArgMax => DType::I64,
    }
}

impl<T: Element> Array<T> {
    /// A reduction with options, giving an array of `U` (see the typed shortcuts).
    pub(crate) fn reduce<U: Element>(&self, op: ReduceOp, opts: &Reduce) -> Array<U> {
        match reduction(&self.node, op, opts) {
            Ok(node) => Array::from_node(node),
            Err(e) => Array::invalid(e),
        }
    }

    /// Sum of all elements (int64 for integers and bools).
    pub fn sum(&self) -> Array<T::Sum> {
        self.reduce(ReduceOp::Sum, &Reduce::default())
    }
    /// Sum with options (axes, keepdims, split_every, skipna).
    pub fn sum_with(&self, opts: &Reduce) -> Array<T::Sum> {
        self.reduce(ReduceOp::Sum, opts)
    }
    /// Sum along one axis.
    pub fn sum_axis(&self, axis: isize) -> Array<T::Sum> {
        self.reduce(ReduceOp::Sum, &Reduce::axis(axis))
    }
    /// Sum ignoring NaNs.
    pub fn nansum(&self) -> Array<T::Sum> {
        self.reduce(ReduceOp::Sum, &Reduce::default().skipna(true))
    }
    /// Product of all elements.
    pub fn prod(&self) -> Array<T::Sum> {
        self.reduce(ReduceOp::Prod, &Reduce::default())
    }
    /// Product with options.
    pub fn prod_with(&self, opts: &Reduce) -> Array<T::Sum> {
        self.reduce(ReduceOp::Prod, opts)
    }
    /// Minimum (NaN if any element is NaN).
    pub fn min(&self) -> Array<T> {
        self.reduce(ReduceOp::Min, &Reduce::default())
    }
    /// Minimum with options (`skipna` for `nanmin`).
    pub fn min_with(&self, opts: &Reduce) -> Array<T> {
        self.reduce(ReduceOp::Min, opts)
    }
    /// Minimum along one axis.
    pub fn min_axis(&self, axis: isize) -> Array<T> {
        self.reduce(ReduceOp::Min, &Reduce::axis(axis))
    }
    /// Maximum (NaN if any element is NaN).
    pub fn max(&self) -> Array<T> {
        self.reduce(ReduceOp::Max, &Reduce::default())
    }
    /// Maximum with options.
    pub fn max_with(&self, opts: &Reduce) -> Array<T> {
        self.reduce(ReduceOp::Max, opts)
    }
    /// Maximum along one axis.
    pub fn max_axis(&self, axis: isize) -> Array<T> {
        self.reduce(ReduceOp::Max, &Reduce::axis(axis))
    }
    /// Minimum ignoring NaNs.
    pub fn nanmin(&self) -> Array<T> {
        self.reduce(ReduceOp::Min, &Reduce::default().skipna(true))
    }
    /// Maximum ignoring NaNs.
    pub fn nanmax(&self) -> Array<T> {
        self.reduce(ReduceOp::Max, &Reduce::default().skipna(true))
    }
    /// Whether any element is non-zero.
    pub fn any(&self) -> Array<bool> {
        self.reduce(ReduceOp::Any, &Reduce::default())
    }
    /// `any` with options.
    pub fn any_with(&self, opts: &Reduce) -> Array<bool> {
        self.reduce(ReduceOp::Any, opts)
    }
    /// Whether all elements are non-zero.
    pub fn all(&self) -> Array<bool> {
        self.reduce(ReduceOp::All, &Reduce::default())
    }
    /// `all` with options.
    pub fn all_with(&self, opts: &Reduce) -> Array<bool> {
        self.reduce(ReduceOp::All, opts)
    }
    /// Mean of all elements.
    pub fn mean(&self) -> Array<T::Float> {
        self.reduce(ReduceOp::Mean, &Reduce::default())
    }
    /// Mean with options.
    pub fn mean_with(&self, opts: &Reduce) -> Array<T::Float> {
        self.reduce(ReduceOp::Mean, opts)
    }
    /// Mean along one axis (`x.mean(axis=0)`).
    pub fn mean_axis(&self, axis: isize) -> Array<T::Float> {
        self.reduce(ReduceOp::Mean, &Reduce::axis(axis))
    }
    /// Mean ignoring NaNs.
    pub fn nanmean(&self) -> Array<T::Float> {
        self.reduce(ReduceOp::Mean, &Reduce::default().skipna(true))
    }
    /// Variance (ddof 0).
    pub fn var(&self) -> Array<T::Float> {
        self.reduce(ReduceOp::Var, &Reduce::default())
    }
    /// Variance with options (`ddof`, axes, ...).
    pub fn var_with(&self, opts: &Reduce) -> Array<T::Float> {
        self.reduce(ReduceOp::Var, opts)
    }
    /// Standard deviation (ddof 0).
    pub fn std(&self) -> Array<T::Float> {
        self.reduce(ReduceOp::Std, &Reduce::default())
    }
    /// Standard deviation with options.
    pub fn std_with(&self, opts: &Reduce) -> Array<T::Float> {
        self.reduce(ReduceOp::Std, opts)
    }
    /// Standard deviation ignoring NaNs.
    pub fn nanstd(&self) -> Array<T::Float> {
        self.reduce(ReduceOp::Std, &Reduce::default().skipna(true))
    }
    /// Variance ignoring NaNs.
    pub fn nanvar(&self) -> Array<T::Float> {
        self.reduce(ReduceOp::Var, &Reduce::default().skipna(true))
    }
    /// Flat index (C order) of the first minimum; NaN counts as the minimum, as in NumPy.
    pub fn argmin(&self) -> Array<i64> {
        self.reduce(ReduceOp::ArgMin, &Reduce::default())
    }
    /// Index of the first maximum along one axis (or flat with `None`).
    pub fn argmax_axis(&self, axis: Option<isize>) -> Array<i64> {
        self.reduce(ReduceOp::ArgMax, &Reduce { axes: axis.map(|a| vec![a]), ..Default::default() })
    }
    /// Index of the first minimum along one axis (or flat with `None`).
    pub fn argmin_axis(&self, axis: Option<isize>) -> Array<i64> {
        self.reduce(ReduceOp::ArgMin, &Reduce { axes: axis.map(|a| vec![a]), ..Default::default() })
    }
    /// Flat index (C order) of the first maximum.
    pub fn argmax(&self) -> Array<i64> {
        self.reduce(ReduceOp::ArgMax, &Reduce::default())
    }
    /// `argmin` ignoring NaNs (an all-NaN slice is an error, as in NumPy).
    pub fn nanargmin(&self) -> Array<i64> {
        self.reduce(ReduceOp::ArgMin, &Reduce::default().skipna(true))
    }
    /// `argmax` ignoring NaNs.
    pub fn nanargmax(&self) -> Array<i64> {
        self.reduce(ReduceOp::ArgMax, &Reduce::default().skipna(true))
    }
}

/// Builds the node of a reduction.
pub(crate) fn reduction(input: &Arc<Node>, op: ReduceOp, opts: &Reduce) -> Result<Arc<Node>, ArrayError> {
    if let Some(e) = input.error() {
        return Err(e.clone());
    }
    let ndim = input.shape.len();
    let mut axes: Vec<usize> = match &opts.axes {
        None => (0..ndim).collect(),
        Some(a) => a.iter().map(|&x| normalize_axis(x, ndim)).collect::<Result<_, _>>()?,
    };
    axes.sort_unstable();
    if axes.windows(2).any(|w| w[0] == w[1]) {
        return Err(ArrayError::Invalid(format!("duplicate value in axes {:?}", opts.axes)));
    }
    if matches!(op, ReduceOp::ArgMin | ReduceOp::ArgMax) && !(axes.len() == 1 || axes.len() == ndim) {
        return Err(ArrayError::Invalid("argmin/argmax reduce one axis or all of them".into()));
    }
    let reduced_size: usize = axes.iter().map(|&a| input.shape[a]).product();
    if reduced_size == 0 && matches!(op, ReduceOp::Min | ReduceOp::Max | ReduceOp::ArgMin | ReduceOp::ArgMax) {
        return Err(ArrayError::Invalid(format!(
            "zero-size array to reduction operation {op:?}, which has no identity"
        )));
    }
    let dtype = out_dtype(op, input.dtype);
    let (mut shape, mut chunks) = (Vec::new(), Vec::new());
    for a in 0..ndim {
        if axes.contains(&a) {
            if opts.keepdims {
                shape.push(1);
                chunks.push(vec![1]);
            }
        } else {
            shape.push(input.shape[a]);
            chunks.push(input.chunks[a].clone());
        }
    }
    let prefix = format!("{op:?}").to_ascii_lowercase();
    let prefix = if opts.skipna { format!("nan{prefix}") } else { prefix };
    let name = Tokenizer::new()
        .add(prefix.as_str())
        .add(&*input.name)
        .add(&axes)
        .add(&opts.keepdims)
        .add(&opts.split_every)
        .add(&opts.ddof)
        .key(&prefix);
    let base: Arc<str> = name.shared_name().clone();
    let layer = Reduction {
        input: input.clone(),
        op,
        axes,
        keepdims: opts.keepdims,
        split_every: opts.split_every.max(2),
        ddof: opts.ddof,
        skipna: opts.skipna,
        partial_name: format!("{base}-partial").into(),
        combine_name: format!("{base}-combine").into(),
        label: prefix,
    };
    Ok(Arc::new(Node { name: base, shape, chunks, dtype, op: Op::Materialized(Arc::new(layer)) }))
}

struct Reduction {
    input: Arc<Node>,
    op: ReduceOp,
    axes: Vec<usize>,
    keepdims: bool,
    split_every: usize,
    ddof: f64,
    skipna: bool,
    partial_name: Arc<str>,
    combine_name: Arc<str>,
    label: String,
}

impl Layer for Reduction {
    fn lower_block(&self, node: &Node, idx: &[usize], lw: &mut Lowering<'_>) -> Result<TaskId, GraphError> {
        let ndim = self.input.shape.len();
        // Input block index pattern: kept axes fixed by `idx`, reduced axes enumerated.
        let mut kept_idx = Vec::with_capacity(ndim);
        let mut out_axis = 0;
        for a in 0..ndim {
            if self.axes.contains(&a) {
                if self.keepdims {
                    out_axis += 1;
                }
                kept_idx.push(None);
            } else {
                kept_idx.push(Some(idx[out_axis]));
                out_axis += 1;
            }
        }
        let reduced_blocks: Vec<usize> = self.axes.iter().map(|&a| self.input.chunks[a].len()).collect();
        let mut level: Vec<TaskId> = Vec::new();
        for combo in block_indices(&reduced_blocks) {
            let mut in_idx = Vec::with_capacity(ndim);
            let mut r = combo.iter();
            for k in &kept_idx {
                in_idx.push(match k {
                    Some(i) => *i,
                    None => *r.next().expect("one entry per reduced axis"),
                });
            }
            level.push(self.partial_task(&in_idx, lw)?);
        }
        let idx32: Vec<u32> = idx.iter().map(|&i| i as u32).collect();
        let mut depth = 0u32;
        while level.len() > self.split_every {
            let combine: Arc<dyn Kernel> = Arc::new(Portable(Combine { reduction: self.params(), finalize: None }));
            level = level
                .chunks(self.split_every)
                .enumerate()
                .map(|(g, group)| {
                    let mut key_idx = idx32.clone();
                    key_idx.extend([depth, g as u32]);
                    let key = Key::from_shared(&self.combine_name, &key_idx);
                    lw.builder.add(key, combine.clone(), group.iter().map(|&t| kiln_graph::Arg::Task(t)))
                })
                .collect::<Result<_, _>>()?;
            depth += 1;
        }
        let finalize: Arc<dyn Kernel> = Arc::new(Portable(Combine {
            reduction: self.params(),
            finalize: Some((node.block_shape(idx), node.dtype)),
        }));
        lw.builder.add(node.key(idx), finalize, level.into_iter().map(kiln_graph::Arg::Task))
    }

    fn inputs(&self) -> Vec<Arc<Node>> {
        vec![self.input.clone()]
    }
}

/// The parameters kernels need.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Params {
    op: ReduceOp,
    axes: Vec<usize>,
    ddof: f64,
    skipna: bool,
    /// Full lengths of the reduced axes (to compute flat indices for argmin/argmax).
    reduced_shape: Vec<usize>,
}

impl Reduction {
    fn params(&self) -> Params {
        Params {
            op: self.op,
            axes: self.axes.clone(),
            ddof: self.ddof,
            skipna: self.skipna,
            reduced_shape: self.axes.iter().map(|&a| self.input.shape[a]).collect(),
        }
    }

    fn partial_task(&self, in_idx: &[usize], lw: &mut Lowering<'_>) -> Result<TaskId, GraphError> {
        let key = Key::from_shared(&self.partial_name, &in_idx.iter().map(|&i| i as u32).collect::<Vec<_>>());
        if let Some(id) = lw.builder.id_of(&key) {
            return Ok(id);
        }
        let mut inputs = TaskInputs::default();
        let expr = lw.expr(&self.input, in_idx, &mut inputs)?;
        let offset = self.input.block_offset(in_idx);
        let kernel: Arc<dyn Kernel> = Arc::new(ExprKernel {
            name: format!("{}-partial", self.label),
            exprs: vec![expr],
            finish: Finish::builtin(PartialOf {
                params: self.params(),
                reduced_offset: self.axes.iter().map(|&a| offset[a]).collect(),
            }),
        });
        lw.builder.add(key, kernel, inputs.into_args())
    }
}

/// First step: a block to its partial.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct PartialOf {
    params: Params,
    reduced_offset: Vec<usize>,
}

impl BlockFinish for PartialOf {
    fn finish(&self, blocks: Vec<Block>) -> Result<Value, TaskError> {
        let block = blocks.into_iter().next().ok_or_else(|| TaskError::msg("no block"))?;
        Ok(Value::new(partial(&self.params, block, &self.reduced_offset)?))
    }

    fn finish_lanes(&self, program: &crate::lanes::LaneProgram<'_>) -> Option<Result<Value, TaskError>> {
        lane_partial(&self.params, program).map(|p| Ok(Value::new(p)))
    }
}

/// Partials computed from streamed lanes: sums, means and variances over all axes, and sums
/// and means over axes that leave the last one (e.g. `mean(axis=0)`).
fn lane_partial(p: &Params, program: &crate::lanes::LaneProgram<'_>) -> Option<Partial> {
    let shape = program.shape().to_vec();
    let ndim = shape.len();
    if p.skipna || ndim == 0 {
        return None;
    }
    let all = p.axes.len() == ndim;
    let keep: Vec<usize> = (0..ndim).map(|a| if p.axes.contains(&a) { 1 } else { shape[a] }).collect();
    match p.op {
        ReduceOp::Sum | ReduceOp::Mean | ReduceOp::Var | ReduceOp::Std if all => {
            let (mut n, mut mean, mut m2) = (0.0f64, 0.0f64, 0.0f64);
            let (mut total, want_m2) = (0.0f64, matches!(p.op, ReduceOp::Var | ReduceOp::Std));
            program.for_each_lane(|_, _, lane| {
                let (len, sum) = lane_sum(lane, false);
                if p.op == ReduceOp::Sum {
                    total += sum;
                    return;
                }
                let nb = len as f64;
                let mb = sum / nb;
                let qb = if want_m2 { lane_m2(lane, mb, false) } else { 0.0 };
                // Chan et al.: merge this lane's (count, mean, M2) into the running one.
                let t = n + nb;
                let delta = mb - mean;
                mean += delta * nb / t;
                m2 += qb + delta * delta * n * nb / t;
                n = t;
            });
            let one = |v: f64| ArrayD::from_elem(IxDyn(&keep), v);
            Some(if p.op == ReduceOp::Sum {
                Partial::Acc(Block::F64(one(total)))
            } else {
                Partial::Moments { n: one(n), mean: one(mean), m2: one(m2) }
            })
        }
        ReduceOp::Sum | ReduceOp::Mean if !p.axes.contains(&(ndim - 1)) => {
            let width = shape[ndim - 1];
            let mut acc = ArrayD::<f64>::zeros(IxDyn(&keep));
            let lead = &shape[..ndim - 1];
            let slots = acc.as_slice_mut().expect("a fresh array is contiguous");
            program.for_each_lane(|lane_no, start, lane| {
                // Unravel the lane number, drop reduced axes, ravel into the accumulator.
                let (mut rem, mut row, mut scale) = (lane_no, 0usize, 1usize);
                for d in (0..lead.len()).rev() {
                    let i = rem % lead[d];
                    rem /= lead[d];
                    if !p.axes.contains(&d) {
                        row += i * scale;
                        scale *= lead[d];
                    }
                }
                let dst = &mut slots[row * width + start..row * width + start + lane.len()];
                dst.iter_mut().zip(lane).for_each(|(a, &x)| *a += x);
            });
            if p.op == ReduceOp::Sum {
                return Some(Partial::Acc(Block::F64(acc)));
            }
            let count: usize = p.axes.iter().map(|&a| shape[a]).product();
            let mean = acc.mapv(|s| s / count as f64);
            Some(Partial::Moments {
                n: ArrayD::from_elem(mean.raw_dim(), count as f64),
                m2: ArrayD::zeros(mean.raw_dim()),
                mean,
            })
        }
        _ => None,
    }
}

/// Puts the reduced axes last and returns (keepdims shape, lanes as a K x R matrix). A view
/// when the block is already laid out that way (e.g. reducing all axes of a C-order block).
fn lanes<'a, T: Clone>(a: &'a ArrayD<T>, axes: &[usize]) -> (Vec<usize>, CowArray<'a, T, Ix2>) {
    let ndim = a.ndim();
    let kept: Vec<usize> = (0..ndim).filter(|x| !axes.contains(x)).collect();
    let order: Vec<usize> = kept.iter().chain(axes.iter()).copied().collect();
    let k: usize = kept.iter().map(|&x| a.shape()[x]).product();
    let r: usize = axes.iter().map(|&x| a.shape()[x]).product();
    let keep_shape: Vec<usize> = (0..ndim).map(|x| if axes.contains(&x) { 1 } else { a.shape()[x] }).collect();
    let permuted = a.view().permuted_axes(IxDyn(&order));
    let m: CowArray<'a, T, Ix2> = if permuted.is_standard_layout() {
        CowArray::from(permuted.into_shape_with_order((k, r)).expect("standard layout reshapes"))
    } else {
        let owned = permuted.as_standard_layout().into_owned();
        CowArray::from(owned.into_shape_with_order((k, r)).expect("element count is unchanged"))
    };
    (keep_shape, m)
}

/// Sum of a lane with several accumulators (vectorizes; plain folds do not).
fn lane_sum(xs: &[f64], skipna: bool) -> (usize, f64) {
    if !skipna {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            return (xs.len(), unsafe { sum_avx2(xs) });
        }
        return (xs.len(), sum_body(xs));
    }
    xs.iter().filter(|x| !x.is_nan()).fold((0, 0.0), |(n, s), &x| (n + 1, s + x))
}

/// Sum of squared deviations from `mean` of a lane, with several accumulators.
fn lane_m2(xs: &[f64], mean: f64, skipna: bool) -> f64 {
    if !skipna {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { m2_avx2(xs, mean) };
        }
        return m2_body(xs, mean);
    }
    xs.iter().filter(|x| !x.is_nan()).map(|x| (x - mean) * (x - mean)).sum()
}

/// The lane loops compiled for AVX2 (twice the vector width of baseline x86-64).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn sum_avx2(xs: &[f64]) -> f64 {
    sum_body(xs)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn m2_avx2(xs: &[f64], mean: f64) -> f64 {
    m2_body(xs, mean)
}

#[inline(always)]
fn sum_body(xs: &[f64]) -> f64 {
    let mut acc = [0.0f64; 16];
    let chunks = xs.chunks_exact(16);
    let tail: f64 = chunks.remainder().iter().sum();
    for c in chunks {
        for i in 0..16 {
            acc[i] += c[i];
        }
    }
    acc.iter().sum::<f64>() + tail
}

#[inline(always)]
fn m2_body(xs: &[f64], mean: f64) -> f64 {
    let mut acc = [0.0f64; 16];
    let chunks = xs.chunks_exact(16);
    let tail: f64 = chunks.remainder().iter().map(|x| (x - mean) * (x - mean)).sum();
    for c in chunks {
        for i in 0..16 {
            let d = c[i] - mean;
            acc[i] += d * d;
        }
    }
    acc.iter().sum::<f64>() + tail
}

fn to_f64(block: Block) -> ArrayD<f64> {
    match block.cast(DType::F64) {
        Block::F64(a) => a,
        _ => unreachable!("cast to f64 gives f64"),
    }
}

fn partial(p: &Params, block: Block, reduced_offset: &[usize]) -> Result<Partial, TaskError> {
    Ok(match p.op {
        ReduceOp::Sum | ReduceOp::Prod => {
            let sum_dtype = block.dtype().sum_dtype();
            let acc = block.cast(sum_dtype);
            let is_sum = p.op == ReduceOp::Sum;
            macro_rules! fold {
                ($a:expr) => {{
                    let mut a = $a;
                    if p.skipna {
                        a = skip_nan(a, is_sum);
                    }
                    for &axis in p.axes.iter().rev() {
                        a = if is_sum { a.sum_axis(Axis(axis)) } else { a.product_axis(Axis(axis)) };
                        a.insert_axis_inplace(Axis(axis));
                    }
                    Element::into_block(a)
                }};
            }
            Partial::Acc(match acc {
                Block::F64(a) => fold!(a),
                Block::F32(a) => fold!(a),
                Block::I64(a) => fold!(a),
                Block::I32(a) => fold!(a),
                Block::Bool(_) => unreachable!("sum and prod accumulate bools as int64"),
            })
        }
        ReduceOp::Min | ReduceOp::Max => {
            let want_max = p.op == ReduceOp::Max;
            Partial::Acc(crate::with_block!(block, a => {
                let (keep, m) = lanes(&a, &p.axes);
                let out: Vec<_> = m
                    .rows()
                    .into_iter()
                    .map(|row| {
                        let mut it = row.iter().copied();
                        let first = it.next().expect("reductions with no identity reject empty axes");
                        it.fold(first, |acc, x| extreme(acc, x, want_max, p.skipna))
                    })
                    .collect();
                Element::into_block(ArrayD::from_shape_vec(IxDyn(&keep), out).expect("one value per lane"))
            }))
        }
        ReduceOp::Any | ReduceOp::All => {
            let truth = match block {
                Block::Bool(a) => a,
                other => match other.cast(DType::F64) {
                    Block::F64(a) => a.mapv(|x| x != 0.0),
                    _ => unreachable!(),
                },
            };
            let (keep, m) = lanes(&truth, &p.axes);
            let out: Vec<bool> = m
                .rows()
                .into_iter()
                .map(|row| if p.op == ReduceOp::Any { row.iter().any(|&x| x) } else { row.iter().all(|&x| x) })
                .collect();
            Partial::Acc(Block::Bool(ArrayD::from_shape_vec(IxDyn(&keep), out).expect("one value per lane")))
        }
        ReduceOp::Mean if !p.skipna => {
            // Sums along axes add whole rows at a time (vectorized), whatever the axes.
            let mut sum = to_f64(block);
            let mut count = 1usize;
            for &axis in p.axes.iter().rev() {
                count *= sum.shape()[axis];
                sum = sum.sum_axis(Axis(axis));
                sum.insert_axis_inplace(Axis(axis));
            }
            let mean = if count > 0 { sum.mapv(|s| s / count as f64) } else { sum };
            Partial::Moments {
                n: ArrayD::from_elem(mean.raw_dim(), count as f64),
                m2: ArrayD::zeros(mean.raw_dim()),
                mean,
            }
        }
        ReduceOp::Mean | ReduceOp::Var | ReduceOp::Std => {
            let a = to_f64(block);
            let (keep, m) = lanes(&a, &p.axes);
            let want_m2 = p.op != ReduceOp::Mean;
            let (mut ns, mut means, mut m2s) = (Vec::new(), Vec::new(), Vec::new());
            for row in m.rows() {
                let lane = row.to_slice();
                let owned;
                let xs: &[f64] = match lane {
                    Some(xs) => xs,
                    None => {
                        owned = row.to_vec();
                        &owned
                    }
                };
                let (n, sum) = lane_sum(xs, p.skipna);
                let mean = if n > 0 { sum / n as f64 } else { 0.0 };
                let m2 = if want_m2 { lane_m2(xs, mean, p.skipna) } else { 0.0 };
                ns.push(n as f64);
                means.push(mean);
                m2s.push(m2);
            }
            let mk = |v: Vec<f64>| ArrayD::from_shape_vec(IxDyn(&keep), v).expect("one value per lane");
            Partial::Moments { n: mk(ns), mean: mk(means), m2: mk(m2s) }
        }
        ReduceOp::ArgMin | ReduceOp::ArgMax => {
            let a = to_f64(block);
            let reduced_block: Vec<usize> = p.axes.iter().map(|&x| a.shape()[x]).collect();
            let (keep, m) = lanes(&a, &p.axes);
            let want_max = p.op == ReduceOp::ArgMax;
            let (mut vals, mut idxs) = (Vec::new(), Vec::new());
            for row in m.rows() {
                let (mut best_v, mut best_i) = (f64::NAN, -1i64);
                for (local, &x) in row.iter().enumerate() {
                    if p.skipna && x.is_nan() {
                        continue;
                    }
                    if best_i < 0 || better(x, best_v, want_max) {
                        best_v = x;
                        best_i = global_flat(local, &reduced_block, reduced_offset, &p.reduced_shape);
                    }
                }
                vals.push(best_v);
                idxs.push(best_i);
            }
            Partial::Arg {
                val: ArrayD::from_shape_vec(IxDyn(&keep), vals).expect("one value per lane"),
                idx: ArrayD::from_shape_vec(IxDyn(&keep), idxs).expect("one value per lane"),
            }
        }
    })
}

/// The flat (C order) index over the full reduced axes of local lane position `local`.
fn global_flat(local: usize, block_shape: &[usize], offset: &[usize], full: &[usize]) -> i64 {
    let mut rem = local;
    let mut coords = vec![0usize; block_shape.len()];
    for d in (0..block_shape.len()).rev() {
        coords[d] = rem % block_shape[d];
        rem /= block_shape[d];
    }
    coords.iter().zip(offset).zip(full).fold(0i64, |acc, ((&c, &o), &n)| acc * n as i64 + (c + o) as i64)
}

/// Whether `x` beats `best` (NaN beats everything, as in NumPy's argmin/argmax).
fn better(x: f64, best: f64, want_max: bool) -> bool {
    if best.is_nan() {
        return false;
    }
    if x.is_nan() {
        return true;
    }
    if want_max { x > best } else { x < best }
}

fn extreme<T: PartialOrd + Copy>(acc: T, x: T, want_max: bool, skipna: bool) -> T {
    #[allow(clippy::eq_op)]
    let nan = |v: T| v != v;
    if nan(acc) {
        return if skipna { x } else { acc };
    }
    if nan(x) {
        return if skipna { acc } else { x };
    }
    if (want_max && x > acc) || (!want_max && x < acc) { x } else { acc }
}

fn skip_nan<T: Copy + PartialEq + 'static>(mut a: ArrayD<T>, is_sum: bool) -> ArrayD<T> {
    use std::any::Any;
    // Only floats have NaNs; for them, replace by the identity of the operation.
    if let Some(f) = (&mut a as &mut dyn Any).downcast_mut::<ArrayD<f64>>() {
        f.mapv_inplace(|x| if x.is_nan() { if is_sum { 0.0 } else { 1.0 } } else { x });
    } else if let Some(f) = (&mut a as &mut dyn Any).downcast_mut::<ArrayD<f32>>() {
        f.mapv_inplace(|x| if x.is_nan() { if is_sum { 0.0 } else { 1.0 } } else { x });
    }
    a
}

/// Combines partials; with `finalize`, also produces the output block (shape, dtype).
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct Combine {
    reduction: Params,
    finalize: Option<(Vec<usize>, DType)>,
}

impl PortableKernel for Combine {
    const ID: &'static str = "kiln.array.reduce-combine";
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
        let combined = combine(&self.reduction, &partials)?;
        match &self.finalize {
            None => Ok(Value::new(combined)),
            Some((shape, dtype)) => Ok(Value::new(finalize(&self.reduction, combined, shape, *dtype)?)),
        }
    }
}

fn combine(p: &Params, parts: &[&Partial]) -> Result<Partial, TaskError> {
    let mut iter = parts.iter();
    let mut acc = (*iter.next().ok_or_else(|| TaskError::msg("combine of nothing"))?).clone();
    for part in iter {
        acc = match (acc, part) {
            (Partial::Acc(a), Partial::Acc(b)) => Partial::Acc(combine_acc(p, a, b)?),
            (Partial::Moments { n, mean, m2 }, Partial::Moments { n: nb, mean: mb, m2: m2b }) => {
                let (mut n, mut mean, mut m2) = (n, mean, m2);
                Zip::from(&mut n).and(&mut mean).and(&mut m2).and(nb).and(mb).and(m2b).for_each(
                    |na, ma, qa, &nb, &mb, &qb| {
                        let total = *na + nb;
                        if nb == 0.0 {
                            return;
                        }
                        let delta = mb - *ma;
                        *ma += delta * nb / total;
                        *qa += qb + delta * delta * *na * nb / total;
                        *na = total;
                    },
                );
                Partial::Moments { n, mean, m2 }
            }
            (Partial::Arg { val, idx }, Partial::Arg { val: vb, idx: ib }) => {
                let want_max = p.op == ReduceOp::ArgMax;
                let (mut val, mut idx) = (val, idx);
                Zip::from(&mut val).and(&mut idx).and(vb).and(ib).for_each(|va, ia, &vb, &ib| {
                    if ib < 0 {
                        return;
                    }
                    if *ia < 0 || better(vb, *va, want_max) || (vb == *va && ib < *ia) {
                        *va = vb;
                        *ia = ib;
                    }
                });
                Partial::Arg { val, idx }
            }
            _ => return Err(TaskError::msg("reduction partials of different kinds")),
        };
    }
    Ok(acc)
}

fn combine_acc(p: &Params, a: Block, b: &Block) -> Result<Block, TaskError> {
    macro_rules! num {
        ($a:expr, $b:expr) => {{
            let mut a = $a;
            match p.op {
                ReduceOp::Sum => a += $b,
                ReduceOp::Prod => a *= $b,
                ReduceOp::Min | ReduceOp::Max => {
                    let want_max = p.op == ReduceOp::Max;
                    Zip::from(&mut a).and($b).for_each(|x, &y| *x = extreme(*x, y, want_max, p.skipna));
                }
                _ => return Err(TaskError::msg("bad accumulator")),
            }
            a
        }};
    }
    Ok(match (a, b) {
        (Block::F64(a), Block::F64(b)) => Block::F64(num!(a, b)),
        (Block::F32(a), Block::F32(b)) => Block::F32(num!(a, b)),
        (Block::I64(a), Block::I64(b)) => Block::I64(num!(a, b)),
        (Block::I32(a), Block::I32(b)) => Block::I32(num!(a, b)),
        (Block::Bool(mut a), Block::Bool(b)) => {
            let any = matches!(p.op, ReduceOp::Any | ReduceOp::Max);
            Zip::from(&mut a).and(b).for_each(|x, &y| *x = if any { *x || y } else { *x && y });
            Block::Bool(a)
        }
        _ => return Err(TaskError::msg("reduction partials differ in dtype")),
    })
}

fn finalize(p: &Params, part: Partial, shape: &[usize], dtype: DType) -> Result<Block, TaskError> {
    let block = match part {
        Partial::Acc(b) => b,
        Partial::Moments { n, mean, m2 } => Block::F64(match p.op {
            ReduceOp::Mean => Zip::from(&mean).and(&n).map_collect(|&m, &n| if n > 0.0 { m } else { f64::NAN }),
            _ => {
                let var = Zip::from(&m2).and(&n).map_collect(|&q, &n| {
                    if n == 0.0 {
                        return f64::NAN;
                    }
                    q / (n - p.ddof).max(0.0)
                });
                if p.op == ReduceOp::Std { var.mapv(f64::sqrt) } else { var }
            }
        }),
        Partial::Arg { idx, .. } => {
            if idx.iter().any(|&i| i < 0) {
                return Err(TaskError::msg("All-NaN slice encountered"));
            }
            Block::I64(idx)
        }
    };
    let block = block.cast(dtype);
    Ok(crate::with_block!(block, a => {
        let a = a.into_shape_with_order(IxDyn(shape)).map_err(|e| TaskError::msg(format!("reduction output: {e}")))?;
        Element::into_block(a)
    }))
}
