//! Picking and placing elements of blocks: pieces assembled into one block (rechunks, `take`,
//! overlaps), elements selected by a boolean mask, and the count of true mask elements.

use ndarray::{ArrayD, IxDyn, SliceInfoElem};

use crate::block::{Block, DType, Element};
use crate::chunk::ChunkError;

/// A block of `shape` made of `pieces`, each copied in at its place (its start per axis).
pub(crate) fn assemble(blocks: Vec<Block>, shape: &[usize], places: &[Vec<usize>]) -> Result<Block, ChunkError> {
    if blocks.len() == 1 && blocks[0].shape() == shape {
        return Ok(blocks.into_iter().next().expect("one block"));
    }
    let dtype = blocks.first().map(Block::dtype).ok_or_else(|| ChunkError::msg("rechunk with no pieces"))?;
    macro_rules! assemble {
        ($variant:ident) => {{
            let mut out = ArrayD::default(IxDyn(shape));
            for (piece, at) in blocks.iter().zip(places) {
                let Block::$variant(p) = piece else {
                    return Err(ChunkError::msg("rechunk pieces differ in dtype"));
                };
                if at.len() != p.ndim() || at.iter().zip(p.shape()).zip(shape).any(|((&o, &n), &d)| o + n > d) {
                    return Err(ChunkError::msg("a piece does not fit in the assembled block"));
                }
                let info: Vec<SliceInfoElem> = at
                    .iter()
                    .zip(p.shape())
                    .map(|(&o, &n)| SliceInfoElem::Slice { start: o as isize, end: Some((o + n) as isize), step: 1 })
                    .collect();
                out.slice_mut(info.as_slice()).assign(p);
            }
            Block::$variant(out)
        }};
    }
    Ok(match dtype {
        DType::Bool => assemble!(Bool),
        DType::I32 => assemble!(I32),
        DType::I64 => assemble!(I64),
        DType::F32 => assemble!(F32),
        DType::F64 => assemble!(F64),
    })
}

/// How many elements of a bool block are true, as an int64 block of `ndim` length-1 axes.
pub(crate) fn count_true(mask: &Block, ndim: usize) -> Result<Block, ChunkError> {
    let Block::Bool(m) = mask else {
        return Err(ChunkError::msg("mask block is not bool"));
    };
    let n = m.iter().filter(|&&b| b).count() as i64;
    Ok(Block::I64(ArrayD::from_elem(IxDyn(&vec![1; ndim]), n)))
}

/// The elements of `values` where `mask` is true, in C order, as a 1-d block.
pub(crate) fn pick(values: Block, mask: &Block) -> Result<Block, ChunkError> {
    let Block::Bool(mask) = mask else {
        return Err(ChunkError::msg("boolean selection needs a bool mask block"));
    };
    if mask.shape() != values.shape() {
        return Err(ChunkError::msg("boolean selection: mask and values differ in shape"));
    }
    Ok(crate::with_block!(values, a => {
        let v: Vec<_> = a.iter().zip(mask.iter()).filter(|(_, m)| **m).map(|(x, _)| *x).collect();
        Element::into_block(ArrayD::from_shape_vec(IxDyn(&[v.len()]), v).expect("1-d"))
    }))
}
