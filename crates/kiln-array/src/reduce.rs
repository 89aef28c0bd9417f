//! Reductions of arrays (`sum`, `mean`, `std`, `argmax`, ...) and their options ([`Reduce`]).
//! The tree of tasks is built by `lower::reduce`; the block math is in `chunk::reduce`.

use crate::array::Array;
use crate::block::Element;
use crate::chunk::reduce::ReduceOp;
use crate::lower::reduce::reduction;

pub use crate::lower::reduce::Reduce;

impl<T: Element> Array<T> {
    /// A reduction with options, giving an array of `U` (see the typed shortcuts).
    pub(crate) fn reduce<U: Element>(&self, op: ReduceOp, opts: &Reduce) -> Array<U> {
        match reduction(&self.node, op, opts) {
            Ok(node) => Array::from_node(node),
            Err(e) => Array::invalid(e),
        }
    }

    /// Sum of all elements (int64 for integers and bools).
    pub fn sum(&self) -> Array<T::Sum> {
        self.reduce(ReduceOp::Sum, &Reduce::default())
    }
    /// Sum with options (axes, keepdims, split_every, skipna).
    pub fn sum_with(&self, opts: &Reduce) -> Array<T::Sum> {
        self.reduce(ReduceOp::Sum, opts)
    }
    /// Sum along one axis.
    pub fn sum_axis(&self, axis: isize) -> Array<T::Sum> {
        self.reduce(ReduceOp::Sum, &Reduce::axis(axis))
    }
    /// Sum ignoring NaNs.
    pub fn nansum(&self) -> Array<T::Sum> {
        self.reduce(ReduceOp::Sum, &Reduce::default().skipna(true))
    }
    /// Product of all elements.
    pub fn prod(&self) -> Array<T::Sum> {
        self.reduce(ReduceOp::Prod, &Reduce::default())
    }
    /// Product with options.
    pub fn prod_with(&self, opts: &Reduce) -> Array<T::Sum> {
        self.reduce(ReduceOp::Prod, opts)
    }
    /// Minimum (NaN if any element is NaN).
    pub fn min(&self) -> Array<T> {
        self.reduce(ReduceOp::Min, &Reduce::default())
    }
    /// Minimum with options (`skipna` for `nanmin`).
    pub fn min_with(&self, opts: &Reduce) -> Array<T> {
        self.reduce(ReduceOp::Min, opts)
    }
    /// Minimum along one axis.
    pub fn min_axis(&self, axis: isize) -> Array<T> {
        self.reduce(ReduceOp::Min, &Reduce::axis(axis))
    }
    /// Maximum (NaN if any element is NaN).
    pub fn max(&self) -> Array<T> {
        self.reduce(ReduceOp::Max, &Reduce::default())
    }
    /// Maximum with options.
    pub fn max_with(&self, opts: &Reduce) -> Array<T> {
        self.reduce(ReduceOp::Max, opts)
    }
    /// Maximum along one axis.
    pub fn max_axis(&self, axis: isize) -> Array<T> {
        self.reduce(ReduceOp::Max, &Reduce::axis(axis))
    }
    /// Minimum ignoring NaNs.
    pub fn nanmin(&self) -> Array<T> {
        self.reduce(ReduceOp::Min, &Reduce::default().skipna(true))
    }
    /// Maximum ignoring NaNs.
    pub fn nanmax(&self) -> Array<T> {
        self.reduce(ReduceOp::Max, &Reduce::default().skipna(true))
    }
    /// Whether any element is non-zero.
    pub fn any(&self) -> Array<bool> {
        self.reduce(ReduceOp::Any, &Reduce::default())
    }
    /// `any` with options.
    pub fn any_with(&self, opts: &Reduce) -> Array<bool> {
        self.reduce(ReduceOp::Any, opts)
    }
    /// Whether all elements are non-zero.
    pub fn all(&self) -> Array<bool> {
        self.reduce(ReduceOp::All, &Reduce::default())
    }
    /// `all` with options.
    pub fn all_with(&self, opts: &Reduce) -> Array<bool> {
        self.reduce(ReduceOp::All, opts)
    }
    /// Mean of all elements.
    pub fn mean(&self) -> Array<T::Float> {
        self.reduce(ReduceOp::Mean, &Reduce::default())
    }
    /// Mean with options.
    pub fn mean_with(&self, opts: &Reduce) -> Array<T::Float> {
        self.reduce(ReduceOp::Mean, opts)
    }
    /// Mean along one axis (`x.mean(axis=0)`).
    pub fn mean_axis(&self, axis: isize) -> Array<T::Float> {
        self.reduce(ReduceOp::Mean, &Reduce::axis(axis))
    }
    /// Mean ignoring NaNs.
    pub fn nanmean(&self) -> Array<T::Float> {
        self.reduce(ReduceOp::Mean, &Reduce::default().skipna(true))
    }
    /// Variance (ddof 0).
    pub fn var(&self) -> Array<T::Float> {
        self.reduce(ReduceOp::Var, &Reduce::default())
    }
    /// Variance with options (`ddof`, axes, ...).
    pub fn var_with(&self, opts: &Reduce) -> Array<T::Float> {
        self.reduce(ReduceOp::Var, opts)
    }
    /// Standard deviation (ddof 0).
    pub fn std(&self) -> Array<T::Float> {
        self.reduce(ReduceOp::Std, &Reduce::default())
    }
    /// Standard deviation with options.
    pub fn std_with(&self, opts: &Reduce) -> Array<T::Float> {
        self.reduce(ReduceOp::Std, opts)
    }
    /// Standard deviation ignoring NaNs.
    pub fn nanstd(&self) -> Array<T::Float> {
        self.reduce(ReduceOp::Std, &Reduce::default().skipna(true))
    }
    /// Variance ignoring NaNs.
    pub fn nanvar(&self) -> Array<T::Float> {
        self.reduce(ReduceOp::Var, &Reduce::default().skipna(true))
    }
    /// Flat index (C order) of the first minimum; NaN counts as the minimum, as in NumPy.
    pub fn argmin(&self) -> Array<i64> {
        self.reduce(ReduceOp::ArgMin, &Reduce::default())
    }
    /// Index of the first maximum along one axis (or flat with `None`).
    pub fn argmax_axis(&self, axis: Option<isize>) -> Array<i64> {
        self.reduce(ReduceOp::ArgMax, &Reduce { axes: axis.map(|a| vec![a]), ..Default::default() })
    }
    /// Index of the first minimum along one axis (or flat with `None`).
    pub fn argmin_axis(&self, axis: Option<isize>) -> Array<i64> {
        self.reduce(ReduceOp::ArgMin, &Reduce { axes: axis.map(|a| vec![a]), ..Default::default() })
    }
    /// Flat index (C order) of the first maximum.
    pub fn argmax(&self) -> Array<i64> {
        self.reduce(ReduceOp::ArgMax, &Reduce::default())
    }
    /// `argmin` ignoring NaNs (an all-NaN slice is an error, as in NumPy).
    pub fn nanargmin(&self) -> Array<i64> {
        self.reduce(ReduceOp::ArgMin, &Reduce::default().skipna(true))
    }
    /// `argmax` ignoring NaNs.
    pub fn nanargmax(&self) -> Array<i64> {
        self.reduce(ReduceOp::ArgMax, &Reduce::default().skipna(true))
    }
}
