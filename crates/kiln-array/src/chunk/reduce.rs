//! Reduction math on blocks: a block's partial result, partials combined, the final block.
//!
//! Reductions run as trees (see `lower::reduce`); this module is what every node of the tree
//! computes, on plain blocks. Mean and variance carry (count, mean, M2) and combine with Chan's
//! parallel formula, which stays accurate where summing squares would not.

use ndarray::{ArrayD, Axis, CowArray, Ix2, IxDyn, Zip};

use crate::block::{Block, DType, Element};
use crate::chunk::ChunkError;

/// What a reduction computes. Travels by name (see `crate::wire`), so reordering the
/// variants never changes what a sent task means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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

crate::wire::by_name!(ReduceOp {
    Sum => "sum",
    Prod => "prod",
    Min => "min",
    Max => "max",
    Any => "any",
    All => "all",
    Mean => "mean",
    Var => "var",
    Std => "std",
    ArgMin => "argmin",
    ArgMax => "argmax",
});

impl ReduceOp {
    /// The dtype of the result of this reduction over `input` elements.
    pub fn out_dtype(self, input: DType) -> DType {
        match self {
            ReduceOp::Sum | ReduceOp::Prod => input.sum_dtype(),
            ReduceOp::Min | ReduceOp::Max => input,
            ReduceOp::Any | ReduceOp::All => DType::Bool,
            ReduceOp::Mean | ReduceOp::Var | ReduceOp::Std => input.float_dtype(),
            ReduceOp::ArgMin | ReduceOp::ArgMax => DType::I64,
        }
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

/// What every step of one reduction needs to know.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct ReduceParams {
    pub(crate) op: ReduceOp,
    pub(crate) axes: Vec<usize>,
    pub(crate) ddof: f64,
    pub(crate) skipna: bool,
    /// Full lengths of the reduced axes (to compute flat indices for argmin/argmax).
    pub(crate) reduced_shape: Vec<usize>,
}

/// Partials computed from streamed lanes: sums, means and variances over all axes, and sums
/// and means over axes that leave the last one (e.g. `mean(axis=0)`).
pub(crate) fn lane_partial(p: &ReduceParams, program: &crate::chunk::lanes::LaneProgram<'_>) -> Option<Partial> {
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

pub(crate) fn partial(p: &ReduceParams, block: Block, reduced_offset: &[usize]) -> Result<Partial, ChunkError> {
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

pub(crate) fn combine(p: &ReduceParams, parts: &[&Partial]) -> Result<Partial, ChunkError> {
    let mut iter = parts.iter();
    let mut acc = (*iter.next().ok_or_else(|| ChunkError::msg("combine of nothing"))?).clone();
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
                    // Ties (equal values, or NaN against NaN) go to the first flat index, as in NumPy.
                    let tie = vb == *va || (vb.is_nan() && va.is_nan());
                    if *ia < 0 || better(vb, *va, want_max) || (tie && ib < *ia) {
                        *va = vb;
                        *ia = ib;
                    }
                });
                Partial::Arg { val, idx }
            }
            _ => return Err(ChunkError::msg("reduction partials of different kinds")),
        };
    }
    Ok(acc)
}

fn combine_acc(p: &ReduceParams, a: Block, b: &Block) -> Result<Block, ChunkError> {
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
                _ => return Err(ChunkError::msg("bad accumulator")),
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
        _ => return Err(ChunkError::msg("reduction partials differ in dtype")),
    })
}

pub(crate) fn finalize(p: &ReduceParams, part: Partial, shape: &[usize], dtype: DType) -> Result<Block, ChunkError> {
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
                return Err(ChunkError::msg("All-NaN slice encountered"));
            }
            Block::I64(idx)
        }
    };
    let block = block.cast(dtype);
    Ok(crate::with_block!(block, a => {
        // A partial folded from a transposed block can be in Fortran order; reshape in C order.
        let a = if a.is_standard_layout() { a } else { a.as_standard_layout().into_owned() };
        let a = a.into_shape_with_order(IxDyn(shape)).map_err(|e| ChunkError::msg(format!("reduction output: {e}")))?;
        Element::into_block(a)
    }))
}
