//! Lane-wise evaluation of `f64` block expressions.
//!
//! Evaluating an expression block by block writes every intermediate to memory: for
//! `x + x.T - m` that is a few passes over 8 MB per block, and memory, not arithmetic, sets the
//! pace. Here the expression is evaluated one lane (a row along the last axis) at a time, with
//! every intermediate in a buffer of one lane that stays in L1 cache. Random sources are
//! generated straight into their lane (counter-based numbers need no state), and reductions
//! consume lanes as they are produced, so a fused reduction never materializes its block.
//!
//! Only `f64` expressions of sources, inputs, scalars and arithmetic qualify; anything else
//! uses the block evaluator.

use ndarray::{ArrayD, ArrayViewD, IxDyn};

use crate::block::{Block, DType, Scalar};
use crate::chunk::expr::{BinaryOp, Expr, UnaryOp};
use crate::chunk::source::{Dist, Source};

/// The longest piece of a lane evaluated at once: intermediates of this many values stay in
/// L1/L2 cache.
pub const SEGMENT: usize = 4096;

enum LaneNode<'a> {
    /// Uniform random numbers on `[low, high)`: `base` is the flat position of the block's
    /// first element, `stride` the flat stride of each array axis, `axes` the permutation the
    /// block is read through.
    Uniform {
        seed: u64,
        low: f64,
        high: f64,
        base: u64,
        stride: Vec<u64>,
        axes: Vec<usize>,
    },
    Const(f64),
    Input(ArrayViewD<'a, f64>),
    Unary(UnaryOp, usize),
    Binary(BinaryOp, usize, usize),
}

/// A compiled expression.
pub struct LaneProgram<'a> {
    nodes: Vec<(LaneNode<'a>, Vec<usize>)>,
    root: usize,
    shape: Vec<usize>,
}

#[derive(Clone, Copy)]
enum LaneVal {
    Buf(usize),
    Scalar(f64),
}

impl<'a> LaneProgram<'a> {
    /// Compiles `expr` over `inputs`, or `None` when it does not qualify.
    pub fn compile(expr: &Expr, inputs: &[&'a Block]) -> Option<LaneProgram<'a>> {
        let mut nodes = Vec::new();
        let root = compile(expr, inputs, &mut nodes)?;
        let shape = nodes[root].1.clone();
        Some(LaneProgram { nodes, root, shape })
    }

    /// The shape of the result.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Whether some input is read across its rows (a transposed input). Such lanes cost more
    /// than the block evaluator's tiled pass when the whole result is written out anyway; they
    /// pay off when a reduction consumes the lanes and the block is never written.
    pub fn reads_inputs_across_rows(&self) -> bool {
        self.nodes.iter().any(|(node, _)| match node {
            LaneNode::Input(a) => {
                // The lane's axis is not the input's fastest one: some other axis has a
                // smaller stride (a step-2 slice of rows still reads along them).
                let strides = a.strides();
                let (lane, others) = strides.split_last().map(|(l, o)| (l.unsigned_abs(), o)).unwrap_or((1, &[]));
                a.len() > 1 && others.iter().zip(a.shape()).any(|(s, &n)| n > 1 && s.unsigned_abs() < lane)
            }
            _ => false,
        })
    }

    /// Calls `f(lane_number, start, values)` for every lane of the result in C order, in
    /// segments of at most [`SEGMENT`] values (`start` is the segment's offset in the lane), so
    /// buffers stay in cache however long the last axis is.
    pub fn for_each_lane(&self, mut f: impl FnMut(usize, usize, &[f64])) {
        let ndim = self.shape.len();
        let width = self.shape.last().copied().unwrap_or(1);
        let lanes: usize = self.shape[..ndim.saturating_sub(1)].iter().product();
        if width == 0 || lanes == 0 {
            return;
        }
        let seg = width.min(SEGMENT);
        let mut bufs: Vec<Vec<f64>> = self.nodes.iter().map(|_| vec![0.0; seg]).collect();
        let mut out = vec![0.0; seg];
        let mut idx = vec![0usize; ndim.saturating_sub(1)];
        for lane in 0..lanes {
            for start in (0..width).step_by(seg) {
                let len = seg.min(width - start);
                if let Some(direct) = self.direct_lane(&idx, start, len) {
                    f(lane, start, direct);
                    continue;
                }
                match self.eval(self.root, &idx, start, len, &mut bufs) {
                    LaneVal::Buf(b) => f(lane, start, &bufs[b][..len]),
                    LaneVal::Scalar(v) => {
                        out[..len].iter_mut().for_each(|x| *x = v);
                        f(lane, start, &out[..len]);
                    }
                }
            }
            for d in (0..idx.len()).rev() {
                idx[d] += 1;
                if idx[d] < self.shape[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
    }

    /// The segment itself, without copying, when the program is just a contiguous input.
    fn direct_lane(&self, out_idx: &[usize], seg_start: usize, len: usize) -> Option<&[f64]> {
        let (LaneNode::Input(a), shape) = &self.nodes[self.root] else { return None };
        let k = shape.len();
        if k == 0 || shape != &self.shape || a.strides()[k - 1] != 1 {
            return None;
        }
        let start: isize = (0..k - 1).map(|d| out_idx[d] as isize * a.strides()[d]).sum::<isize>() + seg_start as isize;
        // SAFETY: the segment's elements are `start .. start + len` from the view's first
        // element, all inside the view (indices within its shape, unit stride).
        Some(unsafe { std::slice::from_raw_parts(a.as_ptr().offset(start), len) })
    }

    /// The whole result as a block.
    pub fn to_block(&self) -> Block {
        let mut data = Vec::with_capacity(self.shape.iter().product());
        self.for_each_lane(|_, _, seg| data.extend_from_slice(seg));
        Block::F64(ArrayD::from_shape_vec(IxDyn(&self.shape), data).expect("lanes tile the block"))
    }

    /// Evaluates node `n` for segment `seg_start .. seg_start + len` of the output lane at
    /// leading index `out_idx`.
    fn eval(&self, n: usize, out_idx: &[usize], seg_start: usize, len: usize, bufs: &mut [Vec<f64>]) -> LaneVal {
        let (node, shape) = &self.nodes[n];
        let out_ndim = out_idx.len() + 1;
        let k = shape.len();
        // This node's leading index under right-aligned broadcasting.
        let local = |d: usize| if shape[d] == 1 { 0 } else { out_idx[d + out_ndim - k] };
        // A node of width 1 along the last axis broadcasts one value over the lane.
        let (first, count) = if k == 0 || shape[k - 1] == 1 { (0, 1) } else { (seg_start, len) };
        match node {
            LaneNode::Const(v) => LaneVal::Scalar(*v),
            LaneNode::Uniform { seed, low, high, base, stride, axes } => {
                let mut g = *base;
                for d in 0..k.saturating_sub(1) {
                    g += local(d) as u64 * stride[axes[d]];
                }
                let step = if k == 0 { 1 } else { stride[axes[k - 1]] };
                let mut buf = std::mem::take(&mut bufs[n]);
                crate::chunk::source::uniform_into(
                    *seed,
                    *low,
                    *high,
                    g + first as u64 * step,
                    step,
                    &mut buf[..count],
                );
                bufs[n] = buf;
                self.widen(n, count, bufs)
            }
            LaneNode::Input(a) => {
                let mut buf = std::mem::take(&mut bufs[n]);
                if k == 0 {
                    buf[0] = a.iter().next().copied().unwrap_or(f64::NAN);
                } else {
                    let strides = a.strides();
                    let step = strides[k - 1];
                    let start: isize =
                        (0..k - 1).map(|d| local(d) as isize * strides[d]).sum::<isize>() + first as isize * step;
                    let ptr = a.as_ptr();
                    if step == 1 {
                        // SAFETY: as below, with unit stride: `count` elements from `start`.
                        let lane = unsafe { std::slice::from_raw_parts(ptr.offset(start), count) };
                        buf[..count].copy_from_slice(lane);
                        bufs[n] = buf;
                        return self.widen(n, count, bufs);
                    }
                    for (j, x) in buf[..count].iter_mut().enumerate() {
                        // SAFETY: every index is within the input's shape (`local(d) < shape[d]`,
                        // `first + j < shape[k - 1]`), so the offset stays inside its allocation.
                        *x = unsafe { *ptr.offset(start + j as isize * step) };
                    }
                }
                bufs[n] = buf;
                self.widen(n, count, bufs)
            }
            LaneNode::Unary(op, c) => {
                let v = self.eval(*c, out_idx, seg_start, len, bufs);
                let mut buf = std::mem::take(&mut bufs[n]);
                let r = match v {
                    LaneVal::Scalar(x) => LaneVal::Scalar(unary(*op, x)),
                    LaneVal::Buf(b) => {
                        for (o, &x) in buf[..len].iter_mut().zip(&bufs[b][..len]) {
                            *o = unary(*op, x);
                        }
                        LaneVal::Buf(n)
                    }
                };
                bufs[n] = buf;
                r
            }
            LaneNode::Binary(op, a, b) => {
                let (va, vb) =
                    (self.eval(*a, out_idx, seg_start, len, bufs), self.eval(*b, out_idx, seg_start, len, bufs));
                let mut buf = std::mem::take(&mut bufs[n]);
                let r = match (va, vb) {
                    (LaneVal::Scalar(x), LaneVal::Scalar(y)) => LaneVal::Scalar(apply(*op, x, y)),
                    (LaneVal::Buf(p), LaneVal::Scalar(y)) => {
                        binary_into(*op, &mut buf[..len], &bufs[p][..len], None, Some(y));
                        LaneVal::Buf(n)
                    }
                    (LaneVal::Scalar(x), LaneVal::Buf(q)) => {
                        binary_into_left_scalar(*op, &mut buf[..len], x, &bufs[q][..len]);
                        LaneVal::Buf(n)
                    }
                    (LaneVal::Buf(p), LaneVal::Buf(q)) => {
                        binary_into(*op, &mut buf[..len], &bufs[p][..len], Some(&bufs[q][..len]), None);
                        LaneVal::Buf(n)
                    }
                };
                bufs[n] = buf;
                r
            }
        }
    }

    /// A node of width 1 broadcasts as a scalar.
    fn widen(&self, n: usize, count: usize, bufs: &[Vec<f64>]) -> LaneVal {
        let (_, shape) = &self.nodes[n];
        if count == 1 && shape.last().is_none_or(|&w| w == 1) { LaneVal::Scalar(bufs[n][0]) } else { LaneVal::Buf(n) }
    }
}

/// Specializes the loop per operation so it vectorizes.
fn binary_into(op: BinaryOp, out: &mut [f64], a: &[f64], b: Option<&[f64]>, y: Option<f64>) {
    macro_rules! run {
        ($f:expr) => {{
            let f = $f;
            match (b, y) {
                (Some(b), _) => out.iter_mut().zip(a).zip(b).for_each(|((o, &x), &y)| *o = f(x, y)),
                (None, Some(y)) => out.iter_mut().zip(a).for_each(|(o, &x)| *o = f(x, y)),
                (None, None) => {}
            }
        }};
    }
    match op {
        BinaryOp::Add => run!(|x: f64, y: f64| x + y),
        BinaryOp::Sub => run!(|x: f64, y: f64| x - y),
        BinaryOp::Mul => run!(|x: f64, y: f64| x * y),
        BinaryOp::Div => run!(|x: f64, y: f64| x / y),
        other => run!(move |x: f64, y: f64| apply(other, x, y)),
    }
}

fn binary_into_left_scalar(op: BinaryOp, out: &mut [f64], x: f64, b: &[f64]) {
    out.iter_mut().zip(b).for_each(|(o, &y)| *o = apply(op, x, y));
}

fn apply(op: BinaryOp, x: f64, y: f64) -> f64 {
    match op {
        BinaryOp::Add => x + y,
        BinaryOp::Sub => x - y,
        BinaryOp::Mul => x * y,
        BinaryOp::Div => x / y,
        BinaryOp::Pow => x.powf(y),
        BinaryOp::Max => {
            if x.is_nan() || y.is_nan() {
                f64::NAN
            } else {
                x.max(y)
            }
        }
        _ => {
            if x.is_nan() || y.is_nan() {
                f64::NAN
            } else {
                x.min(y)
            }
        }
    }
}

fn unary(op: UnaryOp, x: f64) -> f64 {
    debug_assert!(!op.is_predicate(), "predicates are not compiled");
    crate::chunk::expr::float_unary(op, x)
}

fn broadcast(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let n = a.len().max(b.len());
    let get = |s: &[usize], i: usize| if i + s.len() >= n { s[i + s.len() - n] } else { 1 };
    (0..n)
        .map(|i| match (get(a, i), get(b, i)) {
            (x, y) if x == y => Some(x),
            (1, y) => Some(y),
            (x, 1) => Some(x),
            _ => None,
        })
        .collect()
}

/// The node of a uniform random source read through the axis permutation `axes`, with its
/// flat-position strides computed once (not per lane).
fn uniform<'a>(expr: &Expr, axes: Vec<usize>) -> Option<(LaneNode<'a>, Vec<usize>)> {
    let Expr::Gen {
        source: Source::Random { seed, dist: Dist::Uniform { low, high } },
        dtype: DType::F64,
        shape,
        offset,
        array_shape,
    } = expr
    else {
        return None;
    };
    let nd = array_shape.len();
    let mut stride = vec![1u64; nd];
    for d in (0..nd.saturating_sub(1)).rev() {
        stride[d] = stride[d + 1] * array_shape[d + 1] as u64;
    }
    let base = offset.iter().zip(&stride).map(|(&o, &s)| o as u64 * s).sum();
    let out_shape = axes.iter().map(|&a| shape[a]).collect();
    Some((LaneNode::Uniform { seed: *seed, low: *low, high: *high, base, stride, axes }, out_shape))
}

fn compile<'a>(expr: &Expr, inputs: &[&'a Block], nodes: &mut Vec<(LaneNode<'a>, Vec<usize>)>) -> Option<usize> {
    let (node, shape) = match expr {
        Expr::Gen { source: Source::Full(v), dtype: DType::F64, shape, .. } => {
            (LaneNode::Const(v.as_f64()), shape.clone())
        }
        Expr::Gen { shape, .. } => uniform(expr, (0..shape.len()).collect())?,
        // A transposed input is a view too: its lanes are strided reads of the input, whose
        // cache lines the next lanes reuse, instead of a transposed copy of the block.
        Expr::Transpose(axes, inner) => match inner.as_ref() {
            Expr::Input(k) => match inputs.get(*k)? {
                Block::F64(a) if axes.len() == a.ndim() => {
                    let view = a.view().permuted_axes(IxDyn(axes));
                    let shape = view.shape().to_vec();
                    (LaneNode::Input(view), shape)
                }
                _ => return None,
            },
            _ => uniform(inner, axes.clone())?,
        },
        Expr::Scalar(Scalar::F64(v)) => (LaneNode::Const(*v), vec![]),
        Expr::Input(k) => match inputs.get(*k)? {
            Block::F64(a) => (LaneNode::Input(a.view()), a.shape().to_vec()),
            _ => return None,
        },
        // A slice of an input is a view: lanes read the input in place (e.g. `from_array`).
        Expr::Slice(axes, inner) => match (inner.as_ref(), inputs) {
            (Expr::Input(k), inputs) => match inputs.get(*k)? {
                Block::F64(a) => {
                    let view = crate::chunk::expr::slice_view(a.view(), axes);
                    let shape = view.shape().to_vec();
                    (LaneNode::Input(view), shape)
                }
                _ => return None,
            },
            _ => return None,
        },
        Expr::Unary(op, a) if !op.is_predicate() => {
            let c = compile(a, inputs, nodes)?;
            let shape = nodes[c].1.clone();
            (LaneNode::Unary(*op, c), shape)
        }
        Expr::Binary(op, a, b) if !op.is_comparison() && !matches!(op, BinaryOp::And | BinaryOp::Or) => {
            let (ca, cb) = (compile(a, inputs, nodes)?, compile(b, inputs, nodes)?);
            let shape = broadcast(&nodes[ca].1, &nodes[cb].1)?;
            (LaneNode::Binary(*op, ca, cb), shape)
        }
        _ => return None,
    };
    nodes.push((node, shape));
    Some(nodes.len() - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::expr::AxisSlice;

    #[test]
    fn lanes_match_the_block_evaluator() {
        let uniform = |offset: Vec<usize>| Expr::Gen {
            source: Source::Random { seed: 9, dist: Dist::Uniform { low: 0.0, high: 1.0 } },
            dtype: DType::F64,
            shape: vec![3, 4],
            offset,
            array_shape: vec![8, 8],
        };
        let row = Block::F64(ArrayD::from_shape_vec(IxDyn(&[4]), vec![1.0, 2.0, 3.0, 4.0]).unwrap());
        let expr = Expr::Binary(
            BinaryOp::Sub,
            Box::new(Expr::Binary(
                BinaryOp::Mul,
                Box::new(uniform(vec![0, 4])),
                Box::new(Expr::Transpose(
                    vec![1, 0],
                    Box::new(Expr::Gen {
                        source: Source::Random { seed: 9, dist: Dist::Uniform { low: 0.0, high: 1.0 } },
                        dtype: DType::F64,
                        shape: vec![4, 3],
                        offset: vec![4, 0],
                        array_shape: vec![8, 8],
                    }),
                )),
            )),
            Box::new(Expr::Unary(UnaryOp::Sqrt, Box::new(Expr::Input(0)))),
        );
        let program = LaneProgram::compile(&expr, &[&row]).unwrap();
        assert_eq!(program.shape(), &[3, 4]);
        let (Block::F64(lanes), Block::F64(blocks)) = (program.to_block(), expr.eval(&[&row]).unwrap()) else {
            panic!()
        };
        for (x, y) in lanes.iter().zip(blocks.iter()) {
            assert!((x - y).abs() < 1e-15, "{x} vs {y}");
        }
    }

    #[test]
    fn transposed_inputs_are_read_in_place_and_match_the_block_evaluator() {
        let block = |rows: usize, cols: usize, k: f64| {
            Block::F64(ArrayD::from_shape_fn(IxDyn(&[rows, cols]), |d| k + (d[0] * cols + d[1]) as f64))
        };
        let (x, y, m) = (block(5, 7, 0.5), block(7, 5, 100.0), block(1, 7, -3.0));
        let t = |k| Box::new(Expr::Transpose(vec![1, 0], Box::new(Expr::Input(k))));
        let seed = Expr::Binary(
            BinaryOp::Sub,
            Box::new(Expr::Binary(BinaryOp::Add, Box::new(Expr::Input(0)), t(1))),
            Box::new(Expr::Input(2)),
        );
        let program = LaneProgram::compile(&seed, &[&x, &y, &m]).unwrap();
        assert!(program.reads_inputs_across_rows());
        assert_eq!(program.to_block(), seed.eval(&[&x, &y, &m]).unwrap());

        // Plain inputs and step slices along rows are read along their rows.
        let plain = Expr::Binary(BinaryOp::Add, Box::new(Expr::Input(0)), Box::new(Expr::Input(2)));
        assert!(!LaneProgram::compile(&plain, &[&x, &y, &m]).unwrap().reads_inputs_across_rows());
        let stepped = Expr::Slice(
            vec![AxisSlice { start: 0, len: 3, step: 2 }, AxisSlice { start: 6, len: 4, step: -2 }],
            Box::new(Expr::Input(0)),
        );
        let stepped = LaneProgram::compile(&stepped, &[&x]).unwrap();
        assert!(!stepped.reads_inputs_across_rows());
        // A single column, transposed, is one row: nothing is read across rows.
        let column = block(6, 1, 0.0);
        assert!(!LaneProgram::compile(&t(0), &[&column]).unwrap().reads_inputs_across_rows());
    }

    #[test]
    fn comparisons_do_not_compile() {
        let e = Expr::Binary(
            BinaryOp::Gt,
            Box::new(Expr::Scalar(Scalar::F64(1.0))),
            Box::new(Expr::Scalar(Scalar::F64(2.0))),
        );
        assert!(LaneProgram::compile(&e, &[]).is_none());
    }
}
