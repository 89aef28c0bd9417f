//! User functions on blocks: `map_blocks` (one array) and `blockwise` (two arrays, chunks
//! unified). Closures are not portable: these run on the local scheduler. Lowered in
//! `lower::map_blocks`.

use std::sync::Arc;

use ndarray::ArrayD;

use crate::array::Array;
use crate::block::Element;
use crate::chunks::{ChunkSpec, Chunks};
use crate::error::ArrayError;
use crate::lower::map_blocks::{Blockwise2, MapBlocks};
use crate::lower::node::{Node, Op};

impl<T: Element> Array<T> {
    /// Applies a function to every block (Dask's `map_blocks`). The function must return a
    /// block of the same shape; it runs on the local scheduler (a closure is not portable).
    ///
    /// ```
    /// use kiln_array::ones;
    /// use kiln_graph::Collection;
    /// use kiln_local::LocalScheduler;
    /// let x = ones::<f64>(&[4, 4], 2).map_blocks("double", |b: &ndarray::ArrayD<f64>| b * 2.0);
    /// assert_eq!(x.sum().scalar().compute_on(&LocalScheduler::new()).unwrap(), 32.0);
    /// ```
    pub fn map_blocks<U: Element>(
        &self,
        name: &str,
        f: impl Fn(&ArrayD<T>) -> ArrayD<U> + Send + Sync + 'static,
    ) -> Array<U> {
        if let Some(e) = self.error() {
            return Array::invalid(e.clone());
        }
        let key = crate::array::closure_key(name, &[&self.node.name]);
        let layer = MapBlocks::<T, U> { input: self.node.clone(), f: Arc::new(f), name: name.to_string() };
        self.same_layout(&key, Arc::new(layer))
    }
}

/// Applies `f` to the corresponding blocks of two arrays of one shape (Dask's `blockwise` with
/// matching indices); their chunks are unified first. `f` returns the block of the result,
/// which has the inputs' shape and chunks. Runs on the local scheduler (closures are not
/// portable).
pub fn blockwise<A: Element, B: Element, U: Element>(
    a: &Array<A>,
    b: &Array<B>,
    name: &str,
    f: impl Fn(&ArrayD<A>, &ArrayD<B>) -> ArrayD<U> + Send + Sync + 'static,
) -> Array<U> {
    if let Some(e) = a.error().or(b.error()) {
        return Array::invalid(e.clone());
    }
    if a.shape() != b.shape() {
        return Array::invalid(ArrayError::Shape(format!(
            "blockwise operands have shapes {:?} and {:?}",
            a.shape(),
            b.shape()
        )));
    }
    let chunks: Chunks =
        a.chunks().iter().zip(b.chunks()).map(|(x, y)| crate::chunks::common_refinement(x, y)).collect();
    let (a, b) = (a.rechunk(ChunkSpec::Explicit(chunks.clone())), b.rechunk(ChunkSpec::Explicit(chunks.clone())));
    let key = crate::array::closure_key(name, &[a.name(), b.name()]);
    let layer = Blockwise2::<A, B, U> { a: a.node.clone(), b: b.node.clone(), f: Arc::new(f), name: name.to_string() };
    Array::from_node(Arc::new(Node {
        name: key.shared_name().clone(),
        shape: a.shape().to_vec(),
        chunks,
        dtype: U::DTYPE,
        op: Op::Materialized(Arc::new(layer)),
    }))
}
