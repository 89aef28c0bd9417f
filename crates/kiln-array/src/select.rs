//! Selecting elements: `take` (integer indices along an axis) and `select_where` (a boolean
//! mask, NumPy's `x[mask]`). Lowered in `lower::select`.

use std::sync::Arc;

use kiln_graph::{Collection, Tokenizer};

use crate::array::Array;
use crate::block::{DType, Element};
use crate::chunks::{ChunkSpec, Chunks};
use crate::error::{ArrayError, normalize_axis};
use crate::lower::node::{Node, Op};
use crate::lower::select::{CountTrueLayer, MaskSelect, Take};

impl<T: Element> Array<T> {
    /// The elements at `indices` along `axis`, in that order (NumPy's `take`; negative indices
    /// count from the end, repeats are allowed). The output is chunked like the index list,
    /// in pieces of the input's chunk size.
    pub fn take(&self, indices: &[isize], axis: isize) -> Array<T> {
        if let Some(e) = self.error() {
            return Array::invalid(e.clone());
        }
        let axis = match normalize_axis(axis, self.ndim()) {
            Ok(a) => a,
            Err(e) => return Array::invalid(e),
        };
        let n = self.shape()[axis];
        let mut resolved = Vec::with_capacity(indices.len());
        for &i in indices {
            let r = if i < 0 { i + n as isize } else { i };
            if r < 0 || r >= n as isize {
                return Array::invalid(ArrayError::Index { index: i, axis, size: n });
            }
            resolved.push(r as usize);
        }
        let size = self.chunks()[axis].iter().copied().max().unwrap_or(1).max(1);
        let mut chunks = self.chunks().clone();
        chunks[axis] = crate::chunks::regular(resolved.len(), size);
        let mut shape = self.shape().to_vec();
        shape[axis] = resolved.len();
        let key = Tokenizer::new().add("take").add(&*self.node.name).add(&axis).add(&resolved).key("take");
        let layer = Take { input: self.node.clone(), axis, indices: resolved };
        Array::from_node(Arc::new(Node {
            name: key.shared_name().clone(),
            shape,
            chunks,
            dtype: T::DTYPE,
            op: Op::Materialized(Arc::new(layer)),
        }))
    }
}

impl<T: Element> Array<T> {
    /// The elements where `mask` is true, in C order, as a 1-d array (NumPy's `x[mask]`). Blocks
    /// are regrouped into whole rows first, so that block order is C order.
    ///
    /// The result's chunk sizes depend on the data, so this first computes how many elements
    /// each block selects (on `scheduler`), as Dask's `compute_chunk_sizes` does; the selection
    /// itself stays lazy.
    ///
    /// # Errors
    /// A construction error (e.g. shapes differ) or a failure while counting.
    pub fn select_where(
        &self,
        mask: &Array<bool>,
        scheduler: &dyn kiln_graph::Scheduler,
    ) -> Result<Array<T>, kiln_graph::ComputeError> {
        let fail = |e: ArrayError| kiln_graph::ComputeError::invalid("array", e);
        self.check().map_err(fail)?;
        mask.check().map_err(fail)?;
        if mask.shape() != self.shape() {
            return Err(fail(ArrayError::Shape(format!(
                "boolean index of shape {:?} does not match the array's shape {:?}",
                mask.shape(),
                self.shape()
            ))));
        }
        // Blocks of whole rows: then block order is C order, as NumPy's result requires.
        let mut rows: Chunks = self.shape().iter().map(|&d| vec![d]).collect();
        if let Some(first) = rows.first_mut() {
            *first = self.chunks()[0].clone();
        }
        let this = self.rechunk(ChunkSpec::Explicit(rows.clone()));
        let mask = mask.rechunk(ChunkSpec::Explicit(rows));
        let blocks = crate::chunks::block_indices(&this.numblocks());
        let counts_node = Arc::new(Node {
            name: Tokenizer::new().add("mask-counts").add(mask.name()).key("mask-counts").shared_name().clone(),
            shape: this.numblocks(),
            chunks: this.numblocks().iter().map(|&n| vec![1; n]).collect(),
            dtype: DType::I64,
            op: Op::Materialized(Arc::new(CountTrueLayer { mask: mask.node.clone() })),
        });
        let counts = Array::<i64>::from_node(counts_node).compute_on(scheduler)?;
        let mut pieces: Vec<(Vec<usize>, usize)> = Vec::new();
        for (idx, &c) in blocks.iter().zip(counts.iter()) {
            if c > 0 {
                pieces.push((idx.clone(), c as usize));
            }
        }
        let total: usize = pieces.iter().map(|(_, c)| c).sum();
        if total == 0 {
            return Ok(crate::array::zeros::<T>(&[0], ChunkSpec::Uniform(1)));
        }
        let name = Tokenizer::new().add("getitem-mask").add(this.name()).add(mask.name()).key("getitem-mask");
        Ok(Array::from_node(Arc::new(Node {
            name: name.shared_name().clone(),
            shape: vec![total],
            chunks: vec![pieces.iter().map(|(_, c)| *c).collect()],
            dtype: T::DTYPE,
            op: Op::Materialized(Arc::new(MaskSelect { input: this.node.clone(), mask: mask.node.clone(), pieces })),
        })))
    }
}
