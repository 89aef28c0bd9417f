//! Cumulative reductions along an axis: `cumsum`, `cumprod`. Lowered in `lower::cumulative`.

use std::sync::Arc;

use kiln_graph::Tokenizer;

use crate::array::Array;
use crate::block::Element;
use crate::error::normalize_axis;
use crate::lower::cumulative::Cumulative;
use crate::lower::node::{Node, Op};

impl<T: Element> Array<T> {
    /// Cumulative sum along an axis (NumPy's `cumsum`; int64 for integers and bools).
    pub fn cumsum(&self, axis: isize) -> Array<T::Sum> {
        self.cumulative(axis, false)
    }

    /// Cumulative product along an axis.
    pub fn cumprod(&self, axis: isize) -> Array<T::Sum> {
        self.cumulative(axis, true)
    }

    fn cumulative<U: Element>(&self, axis: isize, product: bool) -> Array<U> {
        if let Some(e) = self.error() {
            return Array::invalid(e.clone());
        }
        let axis = match normalize_axis(axis, self.ndim()) {
            Ok(a) => a,
            Err(e) => return Array::invalid(e),
        };
        let op = if product { "cumprod" } else { "cumsum" };
        let key = Tokenizer::new().add(op).add(&*self.node.name).add(&axis).key(op);
        let base = key.shared_name().clone();
        let layer = Cumulative {
            input: self.node.clone(),
            axis,
            product,
            dtype: U::DTYPE,
            local: format!("{base}-local").into(),
            carry: format!("{base}-carry").into(),
        };
        Array::from_node(Arc::new(Node {
            name: base,
            shape: self.shape().to_vec(),
            chunks: self.chunks().clone(),
            dtype: U::DTYPE,
            op: Op::Materialized(Arc::new(layer)),
        }))
    }
}
