//! Dense linear algebra on blocks: block matrix products, the pieces of TSQR and the SVD built
//! on it, and one step of a blocked Cholesky factorization. Small factorizations run on faer.
//!
//! The graph builders in `lower::matmul` and `lower::decomp` decide which blocks meet; the
//! functions here only see the blocks.

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatMut, MatRef, Par};
use ndarray::{Array1, Array2, ArrayD, Ix2, IxDyn, s};

use crate::block::{Block, DType};
use crate::chunk::ChunkError;

fn to_mat(a: &Array2<f64>) -> Mat<f64> {
    Mat::from_fn(a.nrows(), a.ncols(), |i, j| a[[i, j]])
}

fn to_nd(m: faer::MatRef<'_, f64>) -> Array2<f64> {
    Array2::from_shape_fn((m.nrows(), m.ncols()), |(i, j)| m[(i, j)])
}

/// (Q, R) of one row block.
pub(crate) struct LocalQr {
    pub(crate) q: Array2<f64>,
    pub(crate) r: Array2<f64>,
}

/// The QR of the stacked R factors, and where each block's rows start in it.
pub(crate) struct StackedQr {
    pub(crate) q2: Array2<f64>,
    pub(crate) r: Array2<f64>,
    pub(crate) offsets: Vec<usize>,
}

/// The SVD of the final R: R = U_R diag(S) Vt.
pub(crate) struct CoreSvd {
    pub(crate) u: Array2<f64>,
    pub(crate) s: Array1<f64>,
    pub(crate) vt: Array2<f64>,
}

/// Which output of the stacked QR or of the core SVD a task extracts. Travels by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Part {
    R,
    S,
    Vt,
}

crate::wire::by_name!(Part { R => "r", S => "s", Vt => "vt" });

fn f64_matrix(block: Block) -> Result<Array2<f64>, ChunkError> {
    let Block::F64(a) = block.cast(DType::F64) else { unreachable!("cast to f64") };
    a.into_dimensionality::<Ix2>().map_err(|e| ChunkError::msg(format!("qr block: {e}")))
}

/// The thin QR of one row block.
pub(crate) fn local_qr(block: Block) -> Result<LocalQr, ChunkError> {
    let a = f64_matrix(block)?;
    if a.iter().any(|v| !v.is_finite()) {
        return Err(ChunkError::msg("qr/svd input contains NaN or infinity"));
    }
    let qr = to_mat(&a).qr();
    Ok(LocalQr { q: to_nd(qr.compute_thin_Q().as_ref()), r: to_nd(qr.thin_R()) })
}

/// The QR of the row blocks' R factors stacked on top of each other.
pub(crate) fn stacked_qr(locals: &[&LocalQr]) -> StackedQr {
    let n = locals.first().map_or(0, |l| l.r.ncols());
    let mut offsets = Vec::with_capacity(locals.len());
    let total: usize = locals.iter().map(|l| l.r.nrows()).sum();
    let mut stacked = Array2::<f64>::zeros((total, n));
    let mut at = 0;
    for l in locals {
        offsets.push(at);
        stacked.slice_mut(s![at..at + l.r.nrows(), ..]).assign(&l.r);
        at += l.r.nrows();
    }
    let qr = to_mat(&stacked).qr();
    StackedQr { q2: to_nd(qr.compute_thin_Q().as_ref()), r: to_nd(qr.thin_R()), offsets }
}

/// Q block `index` = Q_i @ Q2[rows of block i], then @ U_R when `core` is given (the SVD's U).
pub(crate) fn q_block(
    index: usize,
    local: &LocalQr,
    stacked: &StackedQr,
    core: Option<&CoreSvd>,
) -> Result<Block, ChunkError> {
    // Checked, not indexed: the index may come from another process.
    let off = *stacked.offsets.get(index).ok_or_else(|| ChunkError::msg("tsqr q: block index out of range"))?;
    if off + local.q.ncols() > stacked.q2.nrows() {
        return Err(ChunkError::msg("tsqr q: the stacked factor does not cover the block"));
    }
    let q = local.q.dot(&stacked.q2.slice(s![off..off + local.q.ncols(), ..]));
    let q = match core {
        Some(core) => q.dot(&core.u),
        None => q,
    };
    Ok(Block::F64(q.into_dyn()))
}

/// The SVD of the stacked QR's R factor.
pub(crate) fn core_svd(stacked: &StackedQr) -> Result<CoreSvd, ChunkError> {
    let svd = to_mat(&stacked.r).thin_svd().map_err(|e| ChunkError::msg(format!("svd did not converge: {e:?}")))?;
    let s = Array1::from_iter((0..svd.S().column_vector().nrows()).map(|i| svd.S().column_vector()[i]));
    Ok(CoreSvd { u: to_nd(svd.U()), s, vt: to_nd(svd.V()).reversed_axes() })
}

/// `S = A[i,k] - sum_j L[i,j] L[k,j]^T`, then `L[k,k] = chol(S)` on the diagonal or
/// `L[i,k] = S L[k,k]^-T` below it. `blocks` are `A[i,k]`, then `previous` pairs
/// `(L[i,j], L[k,j])`, then (below the diagonal) `L[k,k]`.
pub(crate) fn cholesky_block(blocks: Vec<Block>, diagonal: bool, previous: usize) -> Result<Block, ChunkError> {
    let mut blocks = blocks.into_iter().map(f64_matrix);
    let mut s = blocks.next().ok_or_else(|| ChunkError::msg("no block"))??;
    for _ in 0..previous {
        let (lij, lkj) = (
            blocks.next().ok_or_else(|| ChunkError::msg("missing block"))??,
            blocks.next().ok_or_else(|| ChunkError::msg("missing block"))??,
        );
        s -= &lij.dot(&lkj.t());
    }
    let out = if diagonal {
        let llt = to_mat(&s)
            .llt(faer::Side::Lower)
            .map_err(|_| ChunkError::msg("cholesky: the matrix is not positive definite"))?;
        to_nd(llt.L())
    } else {
        let lkk = to_mat(&blocks.next().ok_or_else(|| ChunkError::msg("missing diagonal block"))??);
        // X L^T = S  <=>  L X^T = S^T
        let mut rhs = to_mat(&s.t().to_owned());
        faer::linalg::triangular_solve::solve_lower_triangular_in_place(lkk.as_ref(), rhs.as_mut(), faer::Par::Seq);
        to_nd(rhs.as_ref()).reversed_axes()
    };
    Ok(Block::F64(out.as_standard_layout().into_owned().into_dyn()))
}

fn as2<T: Clone>(a: ArrayD<T>) -> Result<Array2<T>, ChunkError> {
    let a = if a.is_standard_layout() { a } else { a.as_standard_layout().into_owned() };
    a.into_dimensionality::<Ix2>().map_err(|e| ChunkError::msg(format!("matmul operand: {e}")))
}

macro_rules! faer_products {
    ($ty:ty, $variant:ident, $pairs:expr, $m:expr, $n:expr) => {{
        let mut out = vec![0 as $ty; $m * $n];
        for (p, (a, b)) in $pairs.into_iter().enumerate() {
            let (Block::$variant(a), Block::$variant(b)) = (a, b) else {
                return Err(ChunkError::msg("matmul operands differ in dtype"));
            };
            let (a, b) = (as2(a)?, as2(b)?);
            let (k, kb) = (a.ncols(), b.nrows());
            if a.nrows() != $m || b.ncols() != $n || k != kb {
                return Err(ChunkError::msg(format!("matmul blocks {:?} and {:?} do not fit", a.shape(), b.shape())));
            }
            let lhs = MatRef::from_row_major_slice(a.as_slice().expect("standard layout"), $m, k);
            let rhs = MatRef::from_row_major_slice(b.as_slice().expect("standard layout"), k, $n);
            let dst = MatMut::from_row_major_slice_mut(&mut out, $m, $n);
            let accum = if p == 0 { Accum::Replace } else { Accum::Add };
            matmul(dst, accum, lhs, rhs, 1.0 as $ty, Par::Seq);
        }
        Block::$variant(ArrayD::from_shape_vec(IxDyn(&[$m, $n]), out).expect("m * n elements"))
    }};
}

macro_rules! ndarray_products {
    ($ty:ty, $variant:ident, $pairs:expr, $m:expr, $n:expr) => {{
        let mut out = Array2::<$ty>::zeros(($m, $n));
        for (a, b) in $pairs {
            let (Block::$variant(a), Block::$variant(b)) = (a, b) else {
                return Err(ChunkError::msg("matmul operands differ in dtype"));
            };
            let (a, b) = (as2(a)?, as2(b)?);
            if a.ncols() != b.nrows() {
                return Err(ChunkError::msg(format!("matmul blocks {:?} and {:?} do not fit", a.shape(), b.shape())));
            }
            out = out + a.dot(&b);
        }
        Block::$variant(out.into_dyn())
    }};
}

/// `sum_p A_p @ B_p` where the first half of `blocks` are the `A_p` and the second half the
/// `B_p`; the result has `shape` (2-d) and `dtype`. Floats run on faer's GEMM, accumulating in
/// one buffer.
pub(crate) fn products(blocks: Vec<Block>, shape: &[usize], dtype: DType) -> Result<Block, ChunkError> {
    let half = blocks.len() / 2;
    let mut blocks = blocks;
    let rhs = blocks.split_off(half);
    let pairs: Vec<(Block, Block)> = blocks.into_iter().zip(rhs).collect();
    let &[m, n] = shape else {
        return Err(ChunkError::msg(format!("matmul output shape {shape:?} is not 2-d")));
    };
    Ok(match dtype {
        DType::F64 => faer_products!(f64, F64, pairs, m, n),
        DType::F32 => faer_products!(f32, F32, pairs, m, n),
        DType::I64 => ndarray_products!(i64, I64, pairs, m, n),
        DType::I32 => ndarray_products!(i32, I32, pairs, m, n),
        DType::Bool => return Err(ChunkError::msg("dot of bool blocks")),
    })
}

/// The elementwise sum of blocks of one shape and dtype.
pub(crate) fn add_blocks(blocks: &[&Block]) -> Result<Block, ChunkError> {
    let mut acc = (*blocks.first().ok_or_else(|| ChunkError::msg("nothing to add"))?).clone();
    for b in &blocks[1..] {
        acc = match (acc, *b) {
            (Block::F64(mut x), Block::F64(y)) => {
                x += y;
                Block::F64(x)
            }
            (Block::F32(mut x), Block::F32(y)) => {
                x += y;
                Block::F32(x)
            }
            (Block::I64(mut x), Block::I64(y)) => {
                x += y;
                Block::I64(x)
            }
            (Block::I32(mut x), Block::I32(y)) => {
                x += y;
                Block::I32(x)
            }
            _ => return Err(ChunkError::msg("cannot add these blocks")),
        };
    }
    Ok(acc)
}
