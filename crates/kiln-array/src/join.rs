//! Joining arrays: `concatenate` and `stack`. Both are lazy (each output block is a block of
//! one input), so nothing is copied until the blocks are used.

use std::sync::Arc;

use kiln_graph::Tokenizer;

use crate::array::Array;
use crate::block::Element;
use crate::chunks::Chunks;
use crate::error::{ArrayError, normalize_axis};
use crate::lower::node::{Node, Op};

/// Joins arrays along an existing axis (NumPy's `concatenate`). The output keeps every input's
/// blocks, so nothing is copied until the blocks are used.
///
/// ```
/// use kiln_array::{concatenate, ones, zeros};
/// let x = concatenate(&[ones::<f64>(&[2, 3], 2), zeros::<f64>(&[4, 3], 2)], 0);
/// assert_eq!(x.shape(), &[6, 3]);
/// ```
pub fn concatenate<T: Element>(arrays: &[Array<T>], axis: isize) -> Array<T> {
    let Some(first) = arrays.first() else {
        return Array::invalid(ArrayError::Invalid("need at least one array to concatenate".into()));
    };
    if let Some(e) = arrays.iter().find_map(|a| a.error()) {
        return Array::invalid(e.clone());
    }
    let ndim = first.ndim();
    let axis = match normalize_axis(axis, ndim) {
        Ok(a) => a,
        Err(e) => return Array::invalid(e),
    };
    // All other axes must agree in length; their chunks are unified by rechunking.
    let mut nodes = Vec::with_capacity(arrays.len());
    for a in arrays {
        if a.ndim() != ndim {
            return Array::invalid(ArrayError::Shape(format!(
                "all the input arrays must have the same number of dimensions, got {} and {}",
                ndim,
                a.ndim()
            )));
        }
        for d in (0..ndim).filter(|&d| d != axis) {
            if a.shape()[d] != first.shape()[d] {
                return Array::invalid(ArrayError::Shape(format!(
                    "all the input array dimensions except for the concatenation axis must match exactly, \
                     but along dimension {d} the arrays have sizes {} and {}",
                    first.shape()[d],
                    a.shape()[d]
                )));
            }
        }
        let target: Chunks =
            (0..ndim).map(|d| if d == axis { a.chunks()[d].clone() } else { first.chunks()[d].clone() }).collect();
        let node = if &target != a.chunks() { crate::lower::rechunk::rechunk(&a.node, target) } else { a.node.clone() };
        nodes.push(node);
    }
    let mut shape = first.shape().to_vec();
    shape[axis] = nodes.iter().map(|n| n.shape[axis]).sum();
    let mut chunks = first.chunks().clone();
    chunks[axis] = nodes.iter().flat_map(|n| n.chunks[axis].iter().copied()).filter(|&c| c > 0).collect();
    if chunks[axis].is_empty() {
        chunks[axis] = vec![0];
    }
    // Empty inputs contribute no blocks.
    let nodes: Vec<Arc<Node>> = nodes.into_iter().filter(|n| n.shape[axis] > 0).collect();
    if nodes.is_empty() {
        return first.clone();
    }
    let mut tokens = Tokenizer::new();
    tokens.feed("concatenate").feed(&axis);
    for n in &nodes {
        tokens.feed(&*n.name);
    }
    let name = tokens.key("concatenate");
    Array::from_node(Arc::new(Node {
        name: name.shared_name().clone(),
        shape,
        chunks,
        dtype: T::DTYPE,
        op: Op::Concat(nodes, axis),
    }))
}

/// Joins arrays along a new axis (NumPy's `stack`).
pub fn stack<T: Element>(arrays: &[Array<T>], axis: isize) -> Array<T> {
    let Some(first) = arrays.first() else {
        return Array::invalid(ArrayError::Invalid("need at least one array to stack".into()));
    };
    if arrays.iter().any(|a| a.shape() != first.shape()) {
        return Array::invalid(ArrayError::Shape("all input arrays must have the same shape".into()));
    }
    let expanded: Vec<Array<T>> = arrays.iter().map(|a| a.expand_dims(axis)).collect();
    concatenate(&expanded, axis)
}
