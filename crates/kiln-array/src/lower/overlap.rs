//! `map_overlap` lowered: each output block's task gathers its block plus a halo of its
//! neighbors' elements (or boundary values), applies the user function, and trims the halo.

use std::sync::Arc;

use kiln_graph::{GraphError, Kernel, TaskError, TaskId, Value};
use ndarray::{Axis, Slice};

use crate::block::{Block, DType, Element, Scalar};
use crate::chunk::expr::Expr;
use crate::chunk::source::Source;
use crate::chunks::offsets;
use crate::lower::kernels::{Assemble, BlockFinish, ExprKernel, Finish};
use crate::lower::map_blocks::BlockFn;
use crate::lower::node::{Layer, Lowering, Node, TaskInputs};

/// What lies beyond the array's edges.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Boundary {
    /// Nothing: blocks at the edge get a shorter halo on that side.
    None,
    /// The array wraps around.
    Periodic,
    /// The array mirrored at its edge, edge element included (NumPy's `pad(mode="symmetric")`,
    /// Dask's `"reflect"`).
    Reflect,
    /// A constant value.
    Constant(f64),
}

pub(crate) struct Overlap<T, U> {
    pub(crate) input: Arc<Node>,
    pub(crate) depth: Vec<usize>,
    pub(crate) boundary: Boundary,
    pub(crate) f: Arc<BlockFn<T, U>>,
    pub(crate) name: String,
}

/// A run of the extended range along one axis: from input block `Some(b)` at `positions`
/// (local to the block), or constant (`None`) for `len` elements.
pub(crate) enum Run {
    Block(usize, Vec<usize>),
    Constant(usize),
}

impl Run {
    fn len(&self) -> usize {
        match self {
            Run::Block(_, p) => p.len(),
            Run::Constant(n) => *n,
        }
    }
}

/// The source position of extended position `p` (may be outside `0..n`), per the boundary.
fn source_position(p: isize, n: usize, boundary: Boundary) -> Option<usize> {
    let n = n as isize;
    if (0..n).contains(&p) {
        return Some(p as usize);
    }
    match boundary {
        Boundary::Periodic => Some(p.rem_euclid(n) as usize),
        Boundary::Reflect => Some(if p < 0 { (-p - 1) as usize } else { (2 * n - p - 1) as usize }),
        Boundary::Constant(_) | Boundary::None => None,
    }
}

impl<T: Element, U: Element> Layer for Overlap<T, U> {
    fn lower_block(&self, node: &Node, idx: &[usize], lw: &mut Lowering<'_>) -> Result<TaskId, GraphError> {
        let ndim = idx.len();
        let (start, shape) = (node.block_offset(idx), node.block_shape(idx));
        let mut per_axis: Vec<Vec<Run>> = Vec::with_capacity(ndim);
        let mut before = Vec::with_capacity(ndim);
        for axis in 0..ndim {
            let n = node.shape[axis];
            let d = self.depth[axis] as isize;
            let (lo, hi) = (start[axis] as isize, (start[axis] + shape[axis]) as isize);
            let (lo, hi) = if self.boundary == Boundary::None {
                ((lo - d).max(0), (hi + d).min(n as isize))
            } else {
                (lo - d, hi + d)
            };
            before.push((start[axis] as isize - lo) as usize);
            let offs = offsets(&self.input.chunks[axis]);
            let mut runs: Vec<Run> = Vec::new();
            for p in lo..hi {
                let src = source_position(p, n, self.boundary);
                match (src, runs.last_mut()) {
                    (None, Some(Run::Constant(len))) => *len += 1,
                    (None, _) => runs.push(Run::Constant(1)),
                    (Some(s), last) => {
                        let b = offs.partition_point(|&o| o <= s) - 1;
                        match last {
                            Some(Run::Block(lb, positions)) if *lb == b => positions.push(s - offs[b]),
                            _ => runs.push(Run::Block(b, vec![s - offs[b]])),
                        }
                    }
                }
            }
            per_axis.push(runs);
        }
        let mut inputs = TaskInputs::default();
        let (mut exprs, mut places) = (Vec::new(), Vec::new());
        let ext_shape: Vec<usize> = per_axis.iter().map(|r| r.iter().map(Run::len).sum()).collect();
        for combo in crate::chunks::block_indices(&per_axis.iter().map(Vec::len).collect::<Vec<_>>()) {
            let runs: Vec<&Run> = combo.iter().enumerate().map(|(a, &k)| &per_axis[a][k]).collect();
            let place: Vec<usize> =
                combo.iter().enumerate().map(|(a, &k)| per_axis[a][..k].iter().map(Run::len).sum()).collect();
            let piece_shape: Vec<usize> = runs.iter().map(|r| r.len()).collect();
            let expr = if runs.iter().any(|r| matches!(r, Run::Constant(_))) {
                let Boundary::Constant(v) = self.boundary else {
                    unreachable!("constant runs need a constant boundary")
                };
                Expr::Gen {
                    source: Source::Full(Scalar::F64(v)),
                    dtype: self.input.dtype,
                    shape: piece_shape.clone(),
                    offset: vec![0; ndim],
                    array_shape: piece_shape,
                }
            } else {
                let in_idx: Vec<usize> = runs.iter().map(|r| if let Run::Block(b, _) = r { *b } else { 0 }).collect();
                let mut e = lw.expr(&self.input, &in_idx, &mut inputs)?;
                for (axis, r) in runs.iter().enumerate() {
                    if let Run::Block(_, positions) = r {
                        e = Expr::Take(axis, positions.clone(), Box::new(e));
                    }
                }
                e
            };
            exprs.push(expr);
            places.push(place);
        }
        let kernel: Arc<dyn Kernel> = Arc::new(ExprKernel {
            name: self.name.clone(),
            exprs,
            finish: Finish::custom(Arc::new(ApplyTrimmed::<T, U> {
                assemble: Assemble { shape: ext_shape, places },
                f: self.f.clone(),
                before,
                shape,
            })),
        });
        lw.add(node.key(idx), kernel, inputs.into_args())
    }
}

pub(crate) struct ApplyTrimmed<T, U> {
    pub(crate) assemble: Assemble,
    pub(crate) f: Arc<BlockFn<T, U>>,
    pub(crate) before: Vec<usize>,
    pub(crate) shape: Vec<usize>,
}

impl<T: Element, U: Element> BlockFinish for ApplyTrimmed<T, U> {
    fn finish(&self, blocks: Vec<Block>) -> Result<Value, TaskError> {
        let extended = crate::chunk::select::assemble(blocks, &self.assemble.shape, &self.assemble.places)?;
        let found: DType = extended.dtype();
        let typed = T::from_block(extended)
            .ok_or_else(|| TaskError::msg(format!("block of {found}, expected {}", T::DTYPE)))?;
        let out = (self.f)(&typed);
        if out.shape() != typed.shape() {
            return Err(TaskError::msg(format!(
                "map_overlap function returned shape {:?} for an extended block of shape {:?}",
                out.shape(),
                typed.shape()
            )));
        }
        let mut out = out;
        for (axis, (&b, &n)) in self.before.iter().zip(&self.shape).enumerate() {
            out.slice_axis_inplace(Axis(axis), Slice::from(b..b + n));
        }
        Ok(Value::new(U::into_block(out.as_standard_layout().into_owned())))
    }
}
