//! Rechunking: the same array cut into different blocks.
//!
//! Each output block is assembled from the pieces of the input blocks it overlaps. When an
//! output block would gather from very many input blocks (an all-to-all change such as rows to
//! columns), the rechunk is staged through an intermediate chunking so that no task holds more
//! than a bounded number of input blocks at once.

use std::sync::Arc;

use kiln_graph::{GraphError, Kernel, TaskId, Tokenizer};

use crate::chunk::expr::AxisSlice;
use crate::chunks::{Chunks, offsets};
use crate::lower::kernels::{Assemble, ExprKernel, Finish};
use crate::lower::node::{Layer, Lowering, Node, Op, TaskInputs, kernel_name};

/// Most input blocks one output block may gather before the rechunk is staged.
const MAX_GATHER: usize = 64;

/// `node` rechunked to `chunks` (which must cover the same shape).
pub fn rechunk(node: &Arc<Node>, chunks: Chunks) -> Arc<Node> {
    if chunks == node.chunks {
        return node.clone();
    }
    // Stage: if one output block would read too many input blocks, go through a chunking that
    // is, per axis, the finer of the two (each piece then reads few, and is read by few).
    let gather: usize = node
        .chunks
        .iter()
        .zip(&chunks)
        .map(|(old, new)| {
            let oo = offsets(old);
            new.iter()
                .scan(0usize, |start, &n| {
                    let (lo, hi) = (*start, *start + n);
                    *start = hi;
                    Some(oo.windows(2).filter(|w| w[0] < hi && w[1] > lo).count())
                })
                .max()
                .unwrap_or(1)
        })
        .product();
    let source = if gather > MAX_GATHER {
        let middle: Chunks = node
            .chunks
            .iter()
            .zip(&chunks)
            .map(|(old, new)| if old.len() >= new.len() { old.clone() } else { new.clone() })
            .collect();
        if middle != node.chunks && middle != chunks { rechunk(node, middle) } else { node.clone() }
    } else {
        node.clone()
    };
    let name = Tokenizer::new()
        .add("rechunk")
        .add(&*source.name)
        .add(&chunks.iter().flatten().copied().collect::<Vec<usize>>())
        .key("rechunk");
    Arc::new(Node {
        name: name.shared_name().clone(),
        shape: source.shape.clone(),
        chunks,
        dtype: source.dtype,
        op: Op::Materialized(Arc::new(Rechunk { input: source })),
    })
}

pub(crate) struct Rechunk {
    pub(crate) input: Arc<Node>,
}

impl Layer for Rechunk {
    fn lower_block(&self, node: &Node, idx: &[usize], lw: &mut Lowering<'_>) -> Result<TaskId, GraphError> {
        let out_off = node.block_offset(idx);
        let out_shape = node.block_shape(idx);
        // Per axis: the input blocks overlapping the output block, with the overlap.
        let per_axis: Vec<Vec<(usize, AxisSlice, usize)>> = (0..node.shape.len())
            .map(|axis| {
                let io = offsets(&self.input.chunks[axis]);
                let (lo, hi) = (out_off[axis], out_off[axis] + out_shape[axis]);
                io.windows(2)
                    .enumerate()
                    .filter(|(_, w)| (w[0] < hi && w[1] > lo) || (lo == hi && w[0] == lo))
                    .map(|(b, w)| {
                        let start = lo.max(w[0]);
                        let end = hi.min(w[1]);
                        (b, AxisSlice { start: start - w[0], len: end - start, step: 1 }, start - lo)
                    })
                    .collect()
            })
            .collect();
        let mut inputs = TaskInputs::default();
        let mut exprs = Vec::new();
        let mut places = Vec::new();
        for combo in crate::chunks::block_indices(&per_axis.iter().map(Vec::len).collect::<Vec<_>>()) {
            let in_idx: Vec<usize> = combo.iter().enumerate().map(|(a, &k)| per_axis[a][k].0).collect();
            let slices: Vec<AxisSlice> = combo.iter().enumerate().map(|(a, &k)| per_axis[a][k].1).collect();
            let place: Vec<usize> = combo.iter().enumerate().map(|(a, &k)| per_axis[a][k].2).collect();
            let input_block = self.input.block_shape(&in_idx);
            let whole = slices.iter().zip(&input_block).all(|(s, &n)| s.start == 0 && s.len == n);
            let e = lw.expr(&self.input, &in_idx, &mut inputs)?;
            exprs.push(if whole { e } else { crate::chunk::expr::Expr::Slice(slices, Box::new(e)) });
            places.push(place);
        }
        let kernel: Arc<dyn Kernel> = Arc::new(ExprKernel {
            name: kernel_name(node),
            exprs,
            finish: Finish::builtin(Assemble { shape: out_shape, places }),
        });
        lw.add(node.key(idx), kernel, inputs.into_args())
    }
}
