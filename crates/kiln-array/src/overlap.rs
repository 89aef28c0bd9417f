//! `map_overlap`: a function applied to every block extended by a halo of its neighbors'
//! elements (for stencils, filters, derivatives), then trimmed back to the block. Lowered in
//! `lower::overlap`.

use std::sync::Arc;

use ndarray::ArrayD;

use crate::array::Array;
use crate::block::Element;
use crate::error::ArrayError;
pub use crate::lower::overlap::Boundary;
use crate::lower::overlap::Overlap;

impl<T: Element> Array<T> {
    /// Applies `f` to every block extended by `depth[axis]` elements of its neighbors on each
    /// side (Dask's `map_overlap`); `f` must return the extended shape, and the halo is trimmed
    /// from its result. Runs on the local scheduler (a closure is not portable).
    ///
    /// ```
    /// use kiln_array::{from_array, overlap::Boundary};
    /// use kiln_graph::Collection;
    /// use kiln_local::LocalScheduler;
    /// use ndarray::{ArrayD, IxDyn, s};
    /// let x = from_array(ArrayD::from_shape_vec(IxDyn(&[6]), vec![0.0, 1.0, 4.0, 9.0, 16.0, 25.0]).unwrap(), 2);
    /// // A centered difference needs one neighbor on each side.
    /// let d = x.map_overlap(&[1], Boundary::Reflect, "diff", |b: &ArrayD<f64>| {
    ///     let mut out = b.clone();
    ///     for i in 1..b.len() - 1 { out[i] = (b[i + 1] - b[i - 1]) / 2.0; }
    ///     out
    /// });
    /// let got = d.compute_on(&LocalScheduler::new()).unwrap();
    /// assert_eq!(got.as_slice().unwrap(), &[0.5, 2.0, 4.0, 6.0, 8.0, 4.5]);
    /// ```
    pub fn map_overlap<U: Element>(
        &self,
        depth: &[usize],
        boundary: Boundary,
        name: &str,
        f: impl Fn(&ArrayD<T>) -> ArrayD<U> + Send + Sync + 'static,
    ) -> Array<U> {
        if let Some(e) = self.error() {
            return Array::invalid(e.clone());
        }
        if depth.len() != self.ndim() {
            return Array::invalid(ArrayError::Invalid(format!(
                "depth {depth:?} has {} entries for a {}-d array",
                depth.len(),
                self.ndim()
            )));
        }
        for (axis, (&d, c)) in depth.iter().zip(self.chunks()).enumerate() {
            let smallest = c.iter().copied().min().unwrap_or(0);
            if d > smallest && c.len() > 1 {
                return Array::invalid(ArrayError::Invalid(format!(
                    "depth {d} along axis {axis} exceeds the smallest chunk ({smallest}); rechunk first"
                )));
            }
            if d > self.shape()[axis] && boundary != Boundary::None {
                return Array::invalid(ArrayError::Invalid(format!(
                    "depth {d} exceeds axis {axis} of length {}",
                    self.shape()[axis]
                )));
            }
        }
        let key = crate::array::closure_key(name, &[self.name()]);
        let layer = Overlap::<T, U> {
            input: self.node.clone(),
            depth: depth.to_vec(),
            boundary,
            f: Arc::new(f),
            name: name.to_string(),
        };
        self.same_layout(&key, Arc::new(layer))
    }
}
