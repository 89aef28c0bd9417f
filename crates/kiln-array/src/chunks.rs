//! Chunk arithmetic: how an array's shape is cut into blocks.
//!
//! Chunks are kept per axis as explicit sizes (`[[5, 5, 5], [10, 5]]`), like Dask's `chunks`,
//! so regular and irregular chunkings are handled by one code path.

use crate::error::ArrayError;

/// Default target size of one chunk for [`ChunkSpec::Auto`]: Dask's 128 MiB.
pub const AUTO_CHUNK_BYTES: usize = 128 * 1024 * 1024;

/// Chunk sizes along every axis.
pub type Chunks = Vec<Vec<usize>>;

/// How the user asks for chunks (Dask's `chunks=` argument).
#[derive(Debug, Clone, PartialEq)]
pub enum ChunkSpec {
    /// The same block size along every axis (`chunks=1000`).
    Uniform(usize),
    /// A block size per axis (`chunks=(1000, 500)`); `usize::MAX` means the whole axis (Dask's -1).
    PerAxis(Vec<usize>),
    /// Explicit sizes per axis (`chunks=((5, 5, 5), (10, 5))`).
    Explicit(Chunks),
    /// Square-ish chunks of at most `bytes` bytes each (Dask's `"auto"`).
    Auto {
        /// The byte target per chunk.
        bytes: usize,
    },
}

impl ChunkSpec {
    /// Dask's default `"auto"`: chunks of about 128 MiB.
    pub fn auto() -> Self {
        ChunkSpec::Auto { bytes: AUTO_CHUNK_BYTES }
    }
}

impl From<usize> for ChunkSpec {
    fn from(size: usize) -> Self {
        ChunkSpec::Uniform(size)
    }
}

impl<const N: usize> From<[usize; N]> for ChunkSpec {
    fn from(sizes: [usize; N]) -> Self {
        ChunkSpec::PerAxis(sizes.to_vec())
    }
}

impl From<&[usize]> for ChunkSpec {
    fn from(sizes: &[usize]) -> Self {
        ChunkSpec::PerAxis(sizes.to_vec())
    }
}

impl From<Vec<usize>> for ChunkSpec {
    fn from(sizes: Vec<usize>) -> Self {
        ChunkSpec::PerAxis(sizes)
    }
}

impl From<Chunks> for ChunkSpec {
    fn from(chunks: Chunks) -> Self {
        ChunkSpec::Explicit(chunks)
    }
}

/// Splits `len` into blocks of `size` (the last one shorter). A zero-length axis has one empty
/// block, as in Dask.
pub fn regular(len: usize, size: usize) -> Vec<usize> {
    if len == 0 {
        return vec![0];
    }
    let size = size.clamp(1, len);
    let mut out = vec![size; len / size];
    if !len.is_multiple_of(size) {
        out.push(len % size);
    }
    out
}

/// Turns a [`ChunkSpec`] into explicit chunks for `shape`.
///
/// # Errors
/// [`ArrayError::Chunks`] when explicit chunks do not add up to the shape, a block size is zero
/// for a non-empty axis, or the number of axes differs.
pub fn normalize(spec: &ChunkSpec, shape: &[usize], itemsize: usize) -> Result<Chunks, ArrayError> {
    let bad = |msg: String| ArrayError::Chunks(msg);
    // Sizes are computed in `usize`: a shape whose byte count does not fit would wrap around
    // (an array of 2**64 elements reporting 0 bytes).
    let fits = shape.contains(&0) || shape.iter().try_fold(itemsize.max(1), |n, &d| n.checked_mul(d)).is_some();
    if !fits {
        return Err(ArrayError::Shape(format!("an array of shape {shape:?} holds more than 2**64 bytes")));
    }
    match spec {
        ChunkSpec::Uniform(size) => {
            if *size == 0 && shape.iter().any(|&d| d > 0) {
                return Err(bad("chunk size must be positive".into()));
            }
            Ok(shape.iter().map(|&d| regular(d, *size)).collect())
        }
        ChunkSpec::PerAxis(sizes) => {
            if sizes.len() != shape.len() {
                return Err(bad(format!(
                    "chunks {:?} have {} axes but the shape {:?} has {}",
                    sizes,
                    sizes.len(),
                    shape,
                    shape.len()
                )));
            }
            shape
                .iter()
                .zip(sizes)
                .enumerate()
                .map(|(axis, (&d, &s))| {
                    if s == 0 && d > 0 {
                        Err(bad(format!("chunk size along axis {axis} must be positive")))
                    } else {
                        Ok(regular(d, s))
                    }
                })
                .collect()
        }
        ChunkSpec::Explicit(chunks) => {
            if chunks.len() != shape.len() {
                return Err(bad(format!(
                    "chunks have {} axes but the shape {:?} has {}",
                    chunks.len(),
                    shape,
                    shape.len()
                )));
            }
            for (axis, (c, &d)) in chunks.iter().zip(shape).enumerate() {
                let Some(total) = c.iter().try_fold(0usize, |t, &s| t.checked_add(s)) else {
                    return Err(bad(format!("chunks along axis {axis} add up to more than 2**64")));
                };
                if total != d {
                    return Err(bad(format!(
                        "chunks {c:?} along axis {axis} add up to {total}, but the axis has length {d}"
                    )));
                }
                if c.is_empty() || (d > 0 && c.contains(&0)) {
                    return Err(bad(format!("chunks {c:?} along axis {axis} contain an empty block")));
                }
            }
            Ok(chunks.clone())
        }
        ChunkSpec::Auto { bytes } => Ok(auto(shape, itemsize, *bytes)),
    }
}

/// Square-ish blocks of at most `bytes` bytes: the same block length along every axis, found
/// by shrinking from the whole array (as Dask's `auto` does for unconstrained axes).
fn auto(shape: &[usize], itemsize: usize, bytes: usize) -> Chunks {
    let target_items = (bytes / itemsize.max(1)).max(1) as f64;
    let total: f64 = shape.iter().map(|&d| d.max(1) as f64).product();
    if total <= target_items || shape.is_empty() {
        return shape.iter().map(|&d| regular(d, d)).collect();
    }
    // Axes shorter than the ideal edge keep their full length; the rest share the budget.
    let mut fixed: Vec<bool> = vec![false; shape.len()];
    loop {
        let free = fixed.iter().filter(|f| !**f).count();
        let fixed_items: f64 = shape.iter().zip(&fixed).filter(|(_, f)| **f).map(|(&d, _)| d.max(1) as f64).product();
        let edge = (target_items / fixed_items).powf(1.0 / free.max(1) as f64);
        let mut changed = false;
        for (axis, &d) in shape.iter().enumerate() {
            if !fixed[axis] && (d as f64) <= edge {
                fixed[axis] = true;
                changed = true;
            }
        }
        if !changed || free == 0 {
            let edge = edge.floor().max(1.0) as usize;
            return shape.iter().zip(&fixed).map(|(&d, &f)| regular(d, if f { d } else { edge })).collect();
        }
    }
}

/// Start offsets of the blocks along one axis, plus the total at the end.
pub fn offsets(sizes: &[usize]) -> Vec<usize> {
    let mut out = Vec::with_capacity(sizes.len() + 1);
    let mut acc = 0;
    out.push(0);
    for s in sizes {
        acc += s;
        out.push(acc);
    }
    out
}

/// The number of blocks along each axis.
pub fn numblocks(chunks: &Chunks) -> Vec<usize> {
    chunks.iter().map(Vec::len).collect()
}

/// Every block index in C order.
pub fn block_indices(numblocks: &[usize]) -> Vec<Vec<usize>> {
    let total: usize = numblocks.iter().product();
    let mut out = Vec::with_capacity(total);
    let mut idx = vec![0usize; numblocks.len()];
    for _ in 0..total {
        out.push(idx.clone());
        for axis in (0..idx.len()).rev() {
            idx[axis] += 1;
            if idx[axis] < numblocks[axis] {
                break;
            }
            idx[axis] = 0;
        }
    }
    out
}

/// The shape of block `idx`.
pub fn block_shape(chunks: &Chunks, idx: &[usize]) -> Vec<usize> {
    chunks.iter().zip(idx).map(|(c, &i)| c[i]).collect()
}

/// The common refinement of two chunkings of one axis: every boundary of either.
pub fn common_refinement(a: &[usize], b: &[usize]) -> Vec<usize> {
    let (oa, ob) = (offsets(a), offsets(b));
    let mut cuts: Vec<usize> = oa.iter().chain(ob.iter()).copied().collect();
    cuts.sort_unstable();
    cuts.dedup();
    let out: Vec<usize> = cuts.windows(2).map(|w| w[1] - w[0]).collect();
    if out.is_empty() { vec![0] } else { out }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn regular_chunks_like_dask() {
        assert_eq!(regular(15, 5), vec![5, 5, 5]);
        assert_eq!(regular(12, 5), vec![5, 5, 2]);
        assert_eq!(regular(3, 10), vec![3]);
        assert_eq!(regular(0, 10), vec![0]);
    }

    #[test]
    fn explicit_chunks_must_cover_the_shape() {
        let err = normalize(&ChunkSpec::Explicit(vec![vec![5, 5]]), &[12], 8).unwrap_err();
        assert!(err.to_string().contains("add up to 10, but the axis has length 12"), "{err}");
        assert!(normalize(&ChunkSpec::PerAxis(vec![5]), &[10, 10], 8).is_err());
        assert!(normalize(&ChunkSpec::Uniform(0), &[10], 8).is_err());
    }

    #[test]
    fn auto_chunks_respect_the_byte_target() {
        let c = normalize(&ChunkSpec::auto(), &[100_000, 100_000], 8).unwrap();
        let biggest = c[0][0] * c[1][0] * 8;
        assert!(biggest <= AUTO_CHUNK_BYTES, "{biggest}");
        assert!(biggest > AUTO_CHUNK_BYTES / 2, "{biggest}");
        assert_eq!(c[0][0], c[1][0], "square-ish");
        // A short axis is kept whole.
        let c = normalize(&ChunkSpec::auto(), &[3, 100_000_000], 8).unwrap();
        assert_eq!(c[0], vec![3]);
        // Small arrays are one block.
        assert_eq!(normalize(&ChunkSpec::auto(), &[10, 10], 8).unwrap(), vec![vec![10], vec![10]]);
    }

    #[test]
    fn block_indices_in_c_order() {
        assert_eq!(block_indices(&[2, 2]), vec![vec![0, 0], vec![0, 1], vec![1, 0], vec![1, 1]]);
        assert_eq!(block_indices(&[]), vec![Vec::<usize>::new()]);
    }

    fn from_cuts(n: usize, cuts: &[usize]) -> Vec<usize> {
        let mut points: Vec<usize> = cuts.iter().copied().filter(|&c| c > 0 && c < n).collect();
        points.sort_unstable();
        points.dedup();
        points.insert(0, 0);
        points.push(n);
        points.windows(2).map(|w| w[1] - w[0]).collect()
    }

    proptest! {
        #[test]
        fn refinement_keeps_every_boundary(n in 1usize..40, ca in prop::collection::vec(0usize..40, 0..6), cb in prop::collection::vec(0usize..40, 0..6)) {
            let (a, b) = (from_cuts(n, &ca), from_cuts(n, &cb));
            let r = common_refinement(&a, &b);
            prop_assert_eq!(r.iter().sum::<usize>(), n);
            let or = offsets(&r);
            for o in offsets(&a).iter().chain(offsets(&b).iter()) {
                prop_assert!(or.contains(o));
            }
        }
    }
}

/// Blocks smaller than this are grown (by whole storage chunks) when the chunking is taken from
/// a file (HDF5, NetCDF-4): writers often choose chunks of a few kilobytes, and one task per such
/// chunk would cost more in scheduling than in reading.
pub(crate) const MIN_STORAGE_BLOCK_BYTES: usize = 4 << 20;

/// The default blocks for an array stored in chunks of `chunk`: whole storage chunks, doubled
/// along the leading axes first until a block holds at least [`MIN_STORAGE_BLOCK_BYTES`].
#[cfg_attr(not(any(feature = "hdf5", feature = "netcdf")), allow(dead_code))]
pub(crate) fn blocks_from_storage(shape: &[usize], chunk: &[usize], itemsize: usize) -> Vec<usize> {
    let mut block: Vec<usize> = chunk.iter().zip(shape).map(|(&c, &d)| c.clamp(1, d.max(1))).collect();
    let bytes = |b: &[usize]| b.iter().fold(itemsize, |n, &c| n.saturating_mul(c));
    for axis in 0..block.len() {
        while bytes(&block) < MIN_STORAGE_BLOCK_BYTES && block[axis] < shape[axis] {
            block[axis] = block[axis].saturating_mul(2).min(shape[axis]);
        }
    }
    block
}

#[cfg(test)]
mod storage_block_tests {
    use super::*;

    #[test]
    fn default_blocks_grow_small_storage_chunks_by_whole_chunks() {
        // 8 MB storage chunks are kept.
        assert_eq!(blocks_from_storage(&[20000, 20000], &[1000, 1000], 8), vec![1000, 1000]);
        // Small automatic chunks (here 64 KiB) grow along the first axis first.
        let b = blocks_from_storage(&[10000, 1000], &[64, 128], 8);
        assert_eq!(b[0] % 64, 0);
        assert!(b.iter().product::<usize>() * 8 >= MIN_STORAGE_BLOCK_BYTES, "{b:?}");
        // Never past the array.
        assert_eq!(blocks_from_storage(&[10, 10], &[4, 4], 8), vec![10, 10]);
    }
}
