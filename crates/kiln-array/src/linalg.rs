//! Linear algebra (Dask's `da.linalg` and `dot`/`tensordot`): matrix products, QR and SVD of
//! tall-and-skinny arrays, randomized SVD, Cholesky. The task structure is built in
//! `lower::matmul` and `lower::decomp`; the block math is in `chunk::linalg`.

use crate::array::{Array, random::RandomState};
use crate::block::Element;
use crate::chunk::linalg::Part;
use crate::error::ArrayError;
use crate::lower::decomp::{Output, cholesky_node, output, prepare};
use crate::lower::matmul::matmul_node;

impl<T: Element> Array<T> {
    /// Matrix product with NumPy's `dot` rules for 1-d and 2-d operands: a 1-d left operand is
    /// a row, a 1-d right operand a column, and those axes are dropped from the result.
    pub fn dot(&self, other: &Array<T>) -> Array<T> {
        if let Some(e) = self.error().or(other.error()) {
            return Array::invalid(e.clone());
        }
        let (a, b) = (self.ndim(), other.ndim());
        if !(1..=2).contains(&a) || !(1..=2).contains(&b) {
            return Array::invalid(ArrayError::Shape(format!(
                "dot supports 1-d and 2-d operands, got {a}-d and {b}-d (use tensordot for more)"
            )));
        }
        let lhs = if a == 1 { self.expand_dims(0) } else { self.clone() };
        let rhs = if b == 1 { other.expand_dims(1) } else { other.clone() };
        let product = match matmul_node(&lhs.node, &rhs.node) {
            Ok(n) => Array::<T>::from_node(n),
            Err(e) => return Array::invalid(e),
        };
        match (a, b) {
            (1, 1) => product.squeeze(&[0, 1]),
            (1, _) => product.squeeze(&[0]),
            (_, 1) => product.squeeze(&[1]),
            _ => product,
        }
    }

    /// Matrix product of 2-d arrays (NumPy's `@`).
    pub fn matmul(&self, other: &Array<T>) -> Array<T> {
        if self.ndim() != 2 || other.ndim() != 2 {
            return Array::invalid(ArrayError::Shape(format!(
                "matmul of {}-d and {}-d arrays: kiln supports 2-d operands",
                self.ndim(),
                other.ndim()
            )));
        }
        self.dot(other)
    }
}

/// Sums products over pairs of axes (NumPy's `tensordot(a, b, axes=(a_axes, b_axes))`): the
/// contracted axes move to the end of `a` and the front of `b`, both reshape to matrices, and
/// the blocked matrix product does the work.
pub fn tensordot<T: Element>(a: &Array<T>, b: &Array<T>, a_axes: &[isize], b_axes: &[isize]) -> Array<T> {
    if let Some(e) = a.error().or(b.error()) {
        return Array::invalid(e.clone());
    }
    let resolve = |axes: &[isize], ndim: usize| -> Result<Vec<usize>, ArrayError> {
        axes.iter().map(|&x| crate::error::normalize_axis(x, ndim)).collect()
    };
    let (ca, cb) = match (resolve(a_axes, a.ndim()), resolve(b_axes, b.ndim())) {
        (Ok(x), Ok(y)) => (x, y),
        (Err(e), _) | (_, Err(e)) => return Array::invalid(e),
    };
    if ca.len() != cb.len() || ca.iter().zip(&cb).any(|(&i, &j)| a.shape()[i] != b.shape()[j]) {
        return Array::invalid(ArrayError::Shape(format!(
            "shape-mismatch for sum: axes {ca:?} of {:?} and {cb:?} of {:?}",
            a.shape(),
            b.shape()
        )));
    }
    let free_a: Vec<usize> = (0..a.ndim()).filter(|x| !ca.contains(x)).collect();
    let free_b: Vec<usize> = (0..b.ndim()).filter(|x| !cb.contains(x)).collect();
    let perm_a: Vec<isize> = free_a.iter().chain(&ca).map(|&x| x as isize).collect();
    let perm_b: Vec<isize> = cb.iter().chain(&free_b).map(|&x| x as isize).collect();
    let m: usize = free_a.iter().map(|&x| a.shape()[x]).product();
    let k: usize = ca.iter().map(|&x| a.shape()[x]).product();
    let n: usize = free_b.iter().map(|&x| b.shape()[x]).product();
    let lhs = a.transpose(&perm_a).reshape(&[m as isize, k as isize]);
    let rhs = b.transpose(&perm_b).reshape(&[k as isize, n as isize]);
    let out_shape: Vec<isize> =
        free_a.iter().map(|&x| a.shape()[x] as isize).chain(free_b.iter().map(|&x| b.shape()[x] as isize)).collect();
    lhs.dot(&rhs).reshape(&out_shape)
}

/// QR decomposition of a tall-and-skinny array by TSQR: `a = q.dot(r)` with `q` (m x k)
/// orthonormal and chunked like `a`'s rows, `r` (k x n) upper triangular, `k = min(m, n)`.
/// `a` should be tall (each row block at least as tall as the array is wide is most efficient).
pub fn qr(a: &Array<f64>) -> (Array<f64>, Array<f64>) {
    match prepare(&a.node) {
        Ok(t) => {
            let (m, n) = (a.shape()[0], a.shape()[1]);
            let q = Array::from_node(output(&t, "q", vec![m, t.k], vec![a.chunks()[0].clone(), vec![t.k]], Output::Q));
            let r = Array::from_node(output(&t, "r", vec![t.k, n], vec![vec![t.k], vec![n]], Output::Part(Part::R)));
            (q, r)
        }
        Err(e) => (Array::invalid(e.clone()), Array::invalid(e)),
    }
}

/// Thin SVD of a tall-and-skinny array: `a = u.dot(diag(s)).dot(vt)`, singular values in
/// decreasing order (Dask's `da.linalg.svd`). For wide arrays it works on the transpose.
pub fn svd(a: &Array<f64>) -> (Array<f64>, Array<f64>, Array<f64>) {
    if a.ndim() == 2 && a.shape()[1] > a.shape()[0] && a.error().is_none() {
        let (u, s, vt) = svd(&a.t());
        return (vt.t(), s, u.t());
    }
    match prepare(&a.node) {
        Ok(t) => {
            let (m, n) = (a.shape()[0], a.shape()[1]);
            let k = t.k;
            let u = Array::from_node(output(&t, "u", vec![m, k], vec![a.chunks()[0].clone(), vec![k]], Output::U));
            let s = Array::from_node(output(&t, "s", vec![k], vec![vec![k]], Output::Part(Part::S)));
            let vt = Array::from_node(output(&t, "vt", vec![k, n], vec![vec![k], vec![n]], Output::Part(Part::Vt)));
            (u, s, vt)
        }
        Err(e) => (Array::invalid(e.clone()), Array::invalid(e.clone()), Array::invalid(e)),
    }
}

/// Randomized truncated SVD with `k` components (Dask's `svd_compressed`): project onto a
/// random subspace of `k + oversample` columns, refine with `power_iters` power iterations,
/// orthonormalize by TSQR, and take the exact SVD of the small projected matrix.
pub fn svd_compressed(
    a: &Array<f64>,
    k: usize,
    oversample: usize,
    power_iters: usize,
    seed: u64,
) -> (Array<f64>, Array<f64>, Array<f64>) {
    if let Err(e) = a.check() {
        return (Array::invalid(e.clone()), Array::invalid(e.clone()), Array::invalid(e.clone()));
    }
    if a.ndim() != 2 || k == 0 || k > a.shape()[0].min(a.shape()[1]) {
        let e = ArrayError::Invalid(format!(
            "svd_compressed needs a 2-d array and 0 < k <= min(shape), got k={k} for {:?}",
            a.shape()
        ));
        return (Array::invalid(e.clone()), Array::invalid(e.clone()), Array::invalid(e));
    }
    let n = a.shape()[1];
    let width = (k + oversample).min(a.shape()[0].min(n));
    let omega =
        RandomState::new(seed).normal(0.0, 1.0, &[n, width], [a.chunks()[1].iter().copied().max().unwrap_or(n), width]);
    let mut y = a.dot(&omega);
    for _ in 0..power_iters {
        let (q, _) = qr(&y);
        y = a.dot(&a.t().dot(&q));
    }
    let (q, _) = qr(&y);
    // B = Q^T A is small (width x n); its SVD gives A's through U = Q U_B.
    let b = q.t().dot(a);
    let (ub, s, vt) = svd(&b.rechunk(crate::ChunkSpec::Uniform(usize::MAX)));
    let u = q.dot(&ub);
    let kk = k as isize;
    (
        u.slice(&[crate::Idx::full(), crate::Idx::Slice { start: None, stop: Some(kk), step: 1 }]),
        s.slice(&[crate::Idx::Slice { start: None, stop: Some(kk), step: 1 }]),
        vt.slice(&[crate::Idx::Slice { start: None, stop: Some(kk), step: 1 }]),
    )
}

/// Blocked Cholesky factorization of a symmetric positive definite array: the lower-triangular
/// `l` with `a = l.dot(l.T)` (Dask's `da.linalg.cholesky(a, lower=True)`). Block `(i, k)`
/// depends on the blocks to its left in rows `i` and `k`: the diagonal blocks are factored with
/// faer's LLT, the blocks below them solved against the diagonal factor. Chunks are made square
/// (both axes cut like the first).
pub fn cholesky(a: &Array<f64>) -> Array<f64> {
    if let Err(e) = a.check() {
        return Array::invalid(e);
    }
    if a.ndim() != 2 || a.shape()[0] != a.shape()[1] {
        return Array::invalid(ArrayError::Shape(format!(
            "cholesky needs a square 2-d array, got shape {:?}",
            a.shape()
        )));
    }
    let cut = a.chunks()[0].clone();
    let a = if a.chunks()[1] != cut {
        a.rechunk(crate::ChunkSpec::Explicit(vec![cut.clone(), cut.clone()]))
    } else {
        a.clone()
    };
    Array::from_node(cholesky_node(&a.node, cut))
}
