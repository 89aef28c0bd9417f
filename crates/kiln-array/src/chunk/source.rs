//! Cheap sources: blocks generated from their index alone (`ones`, `arange`, `random`, ...).
//!
//! Because a block can be regenerated from a few numbers, such blocks are never held in memory
//! between consumers: every consumer regenerates what it reads (Dask's "recompute cheap
//! sources"). Random numbers are counter-based (see [`Source::generate`]): each element depends
//! only on the seed and its position, so an array has the same values under any chunking.

use std::mem::MaybeUninit;

use crate::block::{Block, DType, Scalar};
use ndarray::{ArrayD, IxDyn};

/// What a source generates.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Source {
    /// Every element equal to a value (`ones`, `zeros`, `full`).
    Full(Scalar),
    /// `start + i * step` along a 1-d array (`arange`, `linspace`).
    Ramp {
        /// Value at index 0.
        start: f64,
        /// Increment per index.
        step: f64,
    },
    /// Ones on the `k`-th diagonal of a 2-d array (`eye`).
    Eye {
        /// Diagonal offset (positive: above the main diagonal).
        k: i64,
    },
    /// Random numbers.
    Random {
        /// The array's seed.
        seed: u64,
        /// The distribution.
        dist: Dist,
    },
}

/// Random distributions.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Dist {
    /// Uniform on `[low, high)`.
    Uniform {
        /// Lower bound (inclusive).
        low: f64,
        /// Upper bound (exclusive).
        high: f64,
    },
    /// Normal with a mean and a standard deviation.
    Normal {
        /// The mean.
        mean: f64,
        /// The standard deviation.
        std: f64,
    },
    /// Uniform integers on `[low, high)`.
    Integers {
        /// Lower bound (inclusive).
        low: i64,
        /// Upper bound (exclusive).
        high: i64,
    },
}

/// SplitMix64's finalizer: a strong 64-bit mixing function.
#[inline(always)]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// SplitMix64's increment (the golden ratio in 64 bits).
const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// The random bits of element `position` (flat, C order) of an array with key `key`.
///
/// kiln's random arrays are counter-based: element `g` is SplitMix64 evaluated at counter
/// `key + g * GAMMA`. A value depends only on the seed and the element's position, so every
/// chunking of an array gives the same numbers, a block is generated without any state from
/// other blocks, and the loop has no dependency chain (it pipelines and runs at about a
/// nanosecond per number). SplitMix64 passes BigCrush; sequences of different seeds are shifted
/// copies of one another, at offsets far beyond any array's size.
#[inline(always)]
fn bits(key: u64, position: u64) -> u64 {
    mix(key.wrapping_add(position.wrapping_mul(GAMMA)))
}

/// The key of a seed and a sub-stream (normal deviates use two streams).
fn key(seed: u64, sub: u64) -> u64 {
    mix(mix(seed ^ 0x6a09_e667_f3bc_c909).wrapping_add(sub.wrapping_mul(GAMMA)))
}

/// Uniform `f64` in `[0, 1)` from the top 52 bits, built from the bit pattern (vectorizes:
/// there is no vector u64-to-f64 conversion before AVX-512).
#[inline(always)]
fn unit(bits: u64) -> f64 {
    f64::from_bits(0x3ff0_0000_0000_0000 | (bits >> 12)) - 1.0
}

/// Fills `lane` with uniform numbers for counters `base + j * inc` (the counters of elements
/// `g0 + j * step` are `key + (g0 + j * step) * GAMMA`).
#[inline(always)]
fn uniform_lane_body(base: u64, inc: u64, lane: &mut [MaybeUninit<f64>], low: f64, width: f64) {
    // An additive counter (not `base + j * inc`): vectorized, it needs no 64-bit multiply,
    // which AVX2 lacks and emulates with three.
    let mut counter = base;
    for x in lane.iter_mut() {
        x.write(low + width * unit(mix(counter)));
        counter = counter.wrapping_add(inc);
    }
}

/// The uniform fill loop compiled for AVX2 (about 2.5x faster here), used when the CPU has it.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn uniform_lane_avx2(base: u64, inc: u64, lane: &mut [MaybeUninit<f64>], low: f64, width: f64) {
    uniform_lane_body(base, inc, lane, low, width);
}

fn uniform_lane(base: u64, inc: u64, lane: &mut [MaybeUninit<f64>], low: f64, width: f64) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        unsafe { uniform_lane_avx2(base, inc, lane, low, width) };
        return;
    }
    uniform_lane_body(base, inc, lane, low, width);
}

/// Fills `out` with the uniform numbers of flat positions `g, g + step, ...` of the array of
/// `seed` (what [`Source::generate`] puts there), for lane-wise evaluation.
pub(crate) fn uniform_into(seed: u64, low: f64, high: f64, g: u64, step: u64, out: &mut [f64]) {
    let k = key(seed, 0);
    // SAFETY: `MaybeUninit<f64>` has the layout of `f64`, and the fill only writes initialized
    // values, so the slice stays fully initialized.
    let lane = unsafe { &mut *(out as *mut [f64] as *mut [MaybeUninit<f64>]) };
    uniform_lane(k.wrapping_add(g.wrapping_mul(GAMMA)), step.wrapping_mul(GAMMA), lane, low, high - low);
}

impl Source {
    /// Generates the block of `shape` whose first element sits at `offset` in an array of
    /// `array_shape`.
    pub fn generate(&self, dtype: DType, shape: &[usize], offset: &[usize], array_shape: &[usize]) -> Block {
        let identity: Vec<usize> = (0..shape.len()).collect();
        self.generate_permuted(dtype, shape, offset, array_shape, &identity)
    }

    /// Generates block (`shape`, `offset`) with its axes permuted by `axes` (the block of the
    /// transposed array), directly in C order: a random block's transpose costs no more than
    /// the block.
    pub fn generate_permuted(
        &self,
        dtype: DType,
        shape: &[usize],
        offset: &[usize],
        array_shape: &[usize],
        axes: &[usize],
    ) -> Block {
        let out_shape: Vec<usize> = axes.iter().map(|&a| shape[a]).collect();
        let block = match self {
            Source::Full(v) => return Block::full(&out_shape, v.cast(dtype)),
            Source::Ramp { start, step } => {
                let first = offset.first().copied().unwrap_or(0);
                Block::F64(ArrayD::from_shape_fn(IxDyn(shape), |i| start + (first + i[0]) as f64 * step))
            }
            Source::Eye { k } => {
                let (r0, c0) = (offset[0] as i64, offset[1] as i64);
                Block::F64(ArrayD::from_shape_fn(IxDyn(shape), |i| {
                    ((c0 + i[1] as i64) - (r0 + i[0] as i64) == *k) as u8 as f64
                }))
            }
            Source::Random { seed, dist } => {
                return random_block(*seed, *dist, dtype, shape, offset, array_shape, axes);
            }
        };
        let permuted = crate::with_block!(block, a => {
            crate::block::Element::into_block(a.permuted_axes(IxDyn(axes)).as_standard_layout().into_owned())
        });
        permuted.cast(dtype)
    }
}

/// Calls `fill(first_position, position_step, lane)` for every last-axis lane of the block
/// permuted by `axes`, in C order of the permuted block.
fn for_each_lane<T>(
    out: &mut [T],
    shape: &[usize],
    offset: &[usize],
    array_shape: &[usize],
    axes: &[usize],
    mut fill: impl FnMut(u64, u64, &mut [T]),
) {
    let ndim = shape.len();
    if ndim == 0 {
        fill(0, 1, out);
        return;
    }
    // Flat-index stride of each original axis.
    let mut stride = vec![1u64; ndim];
    for d in (0..ndim - 1).rev() {
        stride[d] = stride[d + 1] * array_shape[d + 1] as u64;
    }
    let out_shape: Vec<usize> = axes.iter().map(|&a| shape[a]).collect();
    let width = out_shape[ndim - 1];
    if width == 0 {
        return;
    }
    let lane_axis = axes[ndim - 1];
    let base: u64 = offset.iter().zip(&stride).map(|(&o, &s)| o as u64 * s).sum();
    let mut idx = vec![0usize; ndim - 1];
    for lane in out.chunks_exact_mut(width) {
        let g = base + idx.iter().zip(axes).map(|(&i, &a)| i as u64 * stride[a]).sum::<u64>();
        fill(g, stride[lane_axis], lane);
        for d in (0..ndim - 1).rev() {
            idx[d] += 1;
            if idx[d] < out_shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

/// A vector of `n` elements written by `fill` without zeroing first.
fn filled<T>(n: usize, fill: impl FnOnce(&mut [MaybeUninit<T>])) -> Vec<T> {
    let mut v: Vec<T> = Vec::with_capacity(n);
    fill(&mut v.spare_capacity_mut()[..n]);
    // SAFETY: every caller's `fill` writes all `n` elements (one write per element of every
    // lane, and the lanes tile the block).
    unsafe { v.set_len(n) };
    v
}

fn random_block(
    seed: u64,
    dist: Dist,
    dtype: DType,
    shape: &[usize],
    offset: &[usize],
    array_shape: &[usize],
    axes: &[usize],
) -> Block {
    let n: usize = shape.iter().product();
    let out_shape: Vec<usize> = axes.iter().map(|&a| shape[a]).collect();
    let block = match dist {
        Dist::Uniform { low, high } => {
            let (k, width) = (key(seed, 0), high - low);
            let v = filled(n, |out| {
                for_each_lane(out, shape, offset, array_shape, axes, |g, step, lane| {
                    uniform_lane(k.wrapping_add(g.wrapping_mul(GAMMA)), step.wrapping_mul(GAMMA), lane, low, width)
                })
            });
            Block::F64(ArrayD::from_shape_vec(IxDyn(&out_shape), v).expect("length matches shape"))
        }
        Dist::Normal { mean, std } => {
            // Box-Muller on two independent uniforms per element.
            let (k1, k2) = (key(seed, 1), key(seed, 2));
            let v = filled(n, |out| {
                for_each_lane(out, shape, offset, array_shape, axes, |g, step, lane| {
                    for (j, x) in lane.iter_mut().enumerate() {
                        let p = g + j as u64 * step;
                        let u1 = 1.0 - unit(bits(k1, p)); // (0, 1]: the logarithm is finite
                        let u2 = unit(bits(k2, p));
                        x.write(mean + std * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos());
                    }
                })
            });
            Block::F64(ArrayD::from_shape_vec(IxDyn(&out_shape), v).expect("length matches shape"))
        }
        Dist::Integers { low, high } => {
            let (k, span) = (key(seed, 3), (high - low) as u64);
            let v = filled(n, |out| {
                for_each_lane(out, shape, offset, array_shape, axes, |g, step, lane| {
                    for (j, x) in lane.iter_mut().enumerate() {
                        // Lemire's multiply-shift maps 64 random bits onto the span.
                        x.write(low + ((bits(k, g + j as u64 * step) as u128 * span as u128) >> 64) as i64);
                    }
                })
            });
            Block::I64(ArrayD::from_shape_vec(IxDyn(&out_shape), v).expect("length matches shape"))
        }
    };
    block.cast(dtype)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let src = Source::Random { seed: 42, dist: Dist::Uniform { low: 0.0, high: 1.0 } };
        let a = src.generate(DType::F64, &[4, 4], &[0, 0], &[8, 8]);
        let b = src.generate(DType::F64, &[4, 4], &[0, 0], &[8, 8]);
        let c = src.generate(DType::F64, &[4, 4], &[0, 4], &[8, 8]);
        assert_eq!(a, b);
        assert_ne!(a, c);
        // The same elements under another chunking.
        let whole = src.generate(DType::F64, &[8, 8], &[0, 0], &[8, 8]);
        let Block::F64(w) = whole else { panic!() };
        let Block::F64(c) = c else { panic!() };
        assert_eq!(w.slice(ndarray::s![0..4, 4..8]).to_owned().into_dyn(), c);
    }

    #[test]
    fn uniform_and_normal_moments() {
        let u = Source::Random { seed: 1, dist: Dist::Uniform { low: 2.0, high: 4.0 } };
        let Block::F64(u) = u.generate(DType::F64, &[100_000], &[0], &[100_000]) else { panic!() };
        assert!(u.iter().all(|&x| (2.0..4.0).contains(&x)));
        assert!((u.mean().unwrap() - 3.0).abs() < 0.01);
        let n = Source::Random { seed: 1, dist: Dist::Normal { mean: 1.0, std: 2.0 } };
        let Block::F64(n) = n.generate(DType::F64, &[100_000], &[0], &[100_000]) else { panic!() };
        assert!((n.mean().unwrap() - 1.0).abs() < 0.03);
        assert!((n.std(0.0) - 2.0).abs() < 0.03);
    }

    #[test]
    fn integers_stay_in_range() {
        let s = Source::Random { seed: 3, dist: Dist::Integers { low: -5, high: 5 } };
        let Block::I64(v) = s.generate(DType::I64, &[10_000], &[0], &[10_000]) else { panic!() };
        assert!(v.iter().all(|&x| (-5..5).contains(&x)));
        assert!(v.iter().any(|&x| x == -5) && v.iter().any(|&x| x == 4));
    }

    #[test]
    fn ramp_and_eye_use_offsets() {
        let r = Source::Ramp { start: 1.0, step: 0.5 }.generate(DType::F64, &[3], &[4], &[7]);
        assert_eq!(r, Block::F64(ArrayD::from_shape_vec(IxDyn(&[3]), vec![3.0, 3.5, 4.0]).unwrap()));
        let e = Source::Eye { k: 0 }.generate(DType::I64, &[2, 2], &[2, 2], &[4, 4]);
        assert_eq!(e, Block::I64(ArrayD::from_shape_vec(IxDyn(&[2, 2]), vec![1, 0, 0, 1]).unwrap()));
    }
}
