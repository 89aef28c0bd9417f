//! Cheap sources: blocks generated from their index alone (`ones`, `arange`, `random`, ...).
//!
//! Because a block can be regenerated from a few numbers, such blocks are never held in memory
//! between consumers: every consumer regenerates what it reads (Dask's "recompute cheap
//! sources"). Random blocks draw from an independent Xoshiro256++ stream per block, seeded from
//! the array's seed and the block's position, so any chunking of the computation that reads the
//! same block sees the same numbers.

use ndarray::{ArrayD, IxDyn};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::block::{Block, DType, Scalar};

/// What a source generates.
#[derive(Debug, Clone, PartialEq)]
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
#[derive(Debug, Clone, Copy, PartialEq)]
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

/// SplitMix64's finalizer: decorrelates (seed, stream) pairs before seeding.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The generator of one block's stream.
pub fn block_rng(seed: u64, stream: u64) -> Xoshiro256PlusPlus {
    Xoshiro256PlusPlus::seed_from_u64(mix(seed ^ mix(stream.wrapping_add(0x9e37_79b9_7f4a_7c15))))
}

/// Uniform `f64` in `[0, 1)` from the top 53 bits.
#[inline]
fn unit(bits: u64) -> f64 {
    (bits >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

impl Source {
    /// Generates the block of `shape` whose first element sits at `offset` in the array;
    /// `stream` is the block's position in C order (independent random stream per block).
    pub fn generate(&self, dtype: DType, shape: &[usize], offset: &[usize], stream: u64) -> Block {
        match self {
            Source::Full(v) => Block::full(shape, v.cast(dtype)),
            Source::Ramp { start, step } => {
                let first = offset.first().copied().unwrap_or(0);
                let values = ArrayD::from_shape_fn(IxDyn(shape), |i| start + (first + i[0]) as f64 * step);
                Block::F64(values).cast(dtype)
            }
            Source::Eye { k } => {
                let (r0, c0) = (offset[0] as i64, offset[1] as i64);
                let values = ArrayD::from_shape_fn(IxDyn(shape), |i| {
                    ((c0 + i[1] as i64) - (r0 + i[0] as i64) == *k) as u8 as f64
                });
                Block::F64(values).cast(dtype)
            }
            Source::Random { seed, dist } => random_block(*seed, stream, *dist, dtype, shape),
        }
    }
}

fn random_block(seed: u64, stream: u64, dist: Dist, dtype: DType, shape: &[usize]) -> Block {
    use rand::Rng;
    let mut rng = block_rng(seed, stream);
    let n: usize = shape.iter().product();
    let block = match dist {
        Dist::Uniform { low, high } => {
            let width = high - low;
            let mut v = Vec::with_capacity(n);
            v.extend((0..n).map(|_| low + width * unit(rng.next_u64())));
            Block::F64(ArrayD::from_shape_vec(IxDyn(shape), v).expect("length matches shape"))
        }
        Dist::Normal { mean, std } => {
            let mut v = Vec::with_capacity(n);
            v.extend((0..n).map(|_| {
                let z: f64 = StandardNormal.sample(&mut rng);
                mean + std * z
            }));
            Block::F64(ArrayD::from_shape_vec(IxDyn(shape), v).expect("length matches shape"))
        }
        Dist::Integers { low, high } => {
            let span = (high - low) as u64;
            let mut v = Vec::with_capacity(n);
            // Lemire's multiply-shift: unbiased enough for span << 2^64 and branch-free.
            v.extend((0..n).map(|_| low + ((rng.next_u64() as u128 * span as u128) >> 64) as i64));
            return Block::I64(ArrayD::from_shape_vec(IxDyn(shape), v).expect("length matches shape")).cast(dtype);
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
        let a = src.generate(DType::F64, &[4, 4], &[0, 0], 0);
        let b = src.generate(DType::F64, &[4, 4], &[0, 0], 0);
        let c = src.generate(DType::F64, &[4, 4], &[0, 4], 1);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn uniform_and_normal_moments() {
        let u = Source::Random { seed: 1, dist: Dist::Uniform { low: 2.0, high: 4.0 } };
        let Block::F64(u) = u.generate(DType::F64, &[100_000], &[0], 7) else { panic!() };
        assert!(u.iter().all(|&x| (2.0..4.0).contains(&x)));
        assert!((u.mean().unwrap() - 3.0).abs() < 0.01);
        let n = Source::Random { seed: 1, dist: Dist::Normal { mean: 1.0, std: 2.0 } };
        let Block::F64(n) = n.generate(DType::F64, &[100_000], &[0], 7) else { panic!() };
        assert!((n.mean().unwrap() - 1.0).abs() < 0.03);
        assert!((n.std(0.0) - 2.0).abs() < 0.03);
    }

    #[test]
    fn integers_stay_in_range() {
        let s = Source::Random { seed: 3, dist: Dist::Integers { low: -5, high: 5 } };
        let Block::I64(v) = s.generate(DType::I64, &[10_000], &[0], 0) else { panic!() };
        assert!(v.iter().all(|&x| (-5..5).contains(&x)));
        assert!(v.iter().any(|&x| x == -5) && v.iter().any(|&x| x == 4));
    }

    #[test]
    fn ramp_and_eye_use_offsets() {
        let r = Source::Ramp { start: 1.0, step: 0.5 }.generate(DType::F64, &[3], &[4], 0);
        assert_eq!(r, Block::F64(ArrayD::from_shape_vec(IxDyn(&[3]), vec![3.0, 3.5, 4.0]).unwrap()));
        let e = Source::Eye { k: 0 }.generate(DType::I64, &[2, 2], &[2, 2], 0);
        assert_eq!(e, Block::I64(ArrayD::from_shape_vec(IxDyn(&[2, 2]), vec![1, 0, 0, 1]).unwrap()));
    }
}
