//! Cumulative sums and products on blocks: a block's own running total along an axis, the
//! carry a block receives from the blocks before it, and the carry applied.

use ndarray::{ArrayD, Axis, Slice};

use crate::block::{Block, DType, Element};
use crate::chunk::ChunkError;

macro_rules! numeric {
    ($block:expr, $a:ident => $body:expr) => {
        match $block {
            Block::F64($a) => Block::F64($body),
            Block::F32($a) => Block::F32($body),
            Block::I64($a) => Block::I64($body),
            Block::I32($a) => Block::I32($body),
            Block::Bool(_) => return Err(ChunkError::msg("cumulative operations accumulate bools as int64")),
        }
    };
}

/// The running sum (or product) of `block` along `axis`, in `dtype`.
pub(crate) fn local_scan(block: Block, axis: usize, product: bool, dtype: DType) -> Result<Block, ChunkError> {
    let block = block.cast(dtype);
    if axis >= block.shape().len() {
        return Err(ChunkError::msg("cumulative scan: axis out of range"));
    }
    let axis = Axis(axis);
    Ok(numeric!(block, a => {
        let mut a = a;
        if product {
            a.accumulate_axis_inplace(axis, |&prev, cur| *cur *= prev);
        } else {
            a.accumulate_axis_inplace(axis, |&prev, cur| *cur += prev);
        }
        a
    }))
}

fn last_slab<A: Clone>(a: &ArrayD<A>, axis: usize) -> ArrayD<A> {
    let n = a.shape()[axis];
    a.slice_axis(Axis(axis), Slice::from(n.saturating_sub(1)..n)).to_owned()
}

fn combine_blocks(x: &Block, y: &Block, product: bool) -> Result<Block, ChunkError> {
    Ok(match (x, y) {
        (Block::F64(a), Block::F64(b)) => Block::F64(if product { a * b } else { a + b }),
        (Block::F32(a), Block::F32(b)) => Block::F32(if product { a * b } else { a + b }),
        (Block::I64(a), Block::I64(b)) => Block::I64(if product { a * b } else { a + b }),
        (Block::I32(a), Block::I32(b)) => Block::I32(if product { a * b } else { a + b }),
        _ => return Err(ChunkError::msg("cumulative blocks differ in dtype")),
    })
}

/// The carry after a block: the last slab of its local scan, combined with the carry before it.
pub(crate) fn carry(local: &Block, previous: Option<&Block>, axis: usize, product: bool) -> Result<Block, ChunkError> {
    // The axis may come from another process: check it rather than index blindly.
    if axis >= local.shape().len() {
        return Err(ChunkError::msg("cumulative carry: axis out of range"));
    }
    let slab = crate::with_block!(local, a => Element::into_block(last_slab(a, axis)));
    match previous {
        Some(prev) => combine_blocks(&slab, prev, product),
        None => Ok(slab),
    }
}

/// A local scan with the carry of the blocks before it applied (the carry has length 1 along
/// `axis` and broadcasts).
pub(crate) fn apply_carry(local: &Block, carry: &Block, axis: usize, product: bool) -> Result<Block, ChunkError> {
    if axis >= local.shape().len() {
        return Err(ChunkError::msg("cumulative apply: axis out of range"));
    }
    if local.shape()[axis] == 0 {
        return Ok(local.clone());
    }
    combine_blocks(local, carry, product)
}
