//! Random arrays have no NumPy oracle (kiln's generator is its own), so they are checked by the
//! laws a generator must satisfy: the values do not depend on the chunking or on recomputation,
//! they stay in range, and their moments are within a few standard errors of the distribution's.

use kiln_array::random::{self, RandomState};
use kiln_array::{Array, ChunkSpec, Element};
use kiln_graph::Collection;
use kiln_local::{LocalScheduler, Progress};
use ndarray::ArrayD;

const N: usize = 20_000;

fn run<T: Element>(x: &Array<T>) -> ArrayD<T> {
    x.compute_on(&LocalScheduler::threads(2).with_progress(Progress::Never)).unwrap_or_else(|e| panic!("{x}: {e}"))
}

fn chunkings() -> Vec<ChunkSpec> {
    vec![ChunkSpec::from(N), ChunkSpec::from(333), ChunkSpec::Explicit(vec![vec![7000, 1, 12_999]])]
}

/// The same generator gives the same values under every chunking.
fn chunking_invariant<T: Element + PartialEq + std::fmt::Debug>(make: impl Fn(ChunkSpec) -> Array<T>) -> ArrayD<T> {
    let mut chunkings = chunkings().into_iter();
    let first = run(&make(chunkings.next().unwrap()));
    for chunks in chunkings {
        assert_eq!(run(&make(chunks.clone())), first, "chunks {chunks:?}");
    }
    first
}

fn mean_var(xs: &ArrayD<f64>) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.sum() / n;
    (mean, xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n)
}

#[test]
fn uniform_floats_are_in_range_with_the_uniform_moments_under_any_chunking() {
    let x = chunking_invariant(|c| RandomState::new(7).random(&[N], c));
    assert!(x.iter().all(|&v| (0.0..1.0).contains(&v)));
    let (mean, var) = mean_var(&x);
    // Standard errors: 0.29 / sqrt(N) = 0.002 for the mean, about 0.0005 for the variance.
    assert!((mean - 0.5).abs() < 0.01, "mean {mean}");
    assert!((var - 1.0 / 12.0).abs() < 0.003, "var {var}");
    let y = chunking_invariant(|c| RandomState::new(7).uniform(-2.0, 6.0, &[N], c));
    assert!(y.iter().all(|&v| (-2.0..6.0).contains(&v)));
    let (mean, var) = mean_var(&y);
    assert!((mean - 2.0).abs() < 0.08 && (var - 64.0 / 12.0).abs() < 0.2, "mean {mean}, var {var}");
}

#[test]
fn normal_floats_have_the_requested_mean_and_std_under_any_chunking() {
    let x = chunking_invariant(|c| RandomState::new(8).normal(2.0, 3.0, &[N], c));
    let (mean, var) = mean_var(&x);
    // Standard error of the mean: 3 / sqrt(N) = 0.021.
    assert!((mean - 2.0).abs() < 0.1, "mean {mean}");
    assert!((var.sqrt() - 3.0).abs() < 0.1, "std {}", var.sqrt());
    let within_one_sigma = x.iter().filter(|&&v| (v - 2.0).abs() < 3.0).count() as f64 / N as f64;
    assert!((within_one_sigma - 0.6827).abs() < 0.02, "{within_one_sigma}");
    assert!(run(&RandomState::new(8).normal(5.0, 0.0, &[10], 3)).iter().all(|&v| v == 5.0), "std 0 is the mean");
}

#[test]
fn integers_cover_the_half_open_range_evenly_under_any_chunking() {
    let x = chunking_invariant(|c| RandomState::new(9).integers(-3, 4, &[N], c));
    let mut counts = [0usize; 7];
    for &v in &x {
        assert!((-3..4).contains(&v), "{v} outside [-3, 4)");
        counts[(v + 3) as usize] += 1;
    }
    for (value, &count) in counts.iter().enumerate() {
        let share = count as f64 / N as f64;
        assert!((share - 1.0 / 7.0).abs() < 0.015, "value {}: share {share}", value as i64 - 3);
    }
}

#[test]
fn seeds_give_different_streams_and_the_same_seed_the_same_stream() {
    let a = run(&RandomState::new(1).random(&[1000], 100));
    assert_eq!(run(&RandomState::new(1).random(&[1000], 250)), a);
    let b = run(&RandomState::new(2).random(&[1000], 100));
    assert!(a.iter().zip(b.iter()).filter(|(x, y)| x == y).count() < 5, "seeds 1 and 2 agree");
    // Blocks are not copies of each other.
    assert_ne!(a.slice(ndarray::s![..100]), a.slice(ndarray::s![100..200]));
}

#[test]
fn from_entropy_differs_between_calls_but_each_array_is_consistent() {
    let (r1, r2) = (RandomState::from_entropy(), RandomState::from_entropy());
    let (x1, x2) = (r1.random(&[500, 4], [100, 4]), r2.random(&[500, 4], [100, 4]));
    let (a1, a2) = (run(&x1), run(&x2));
    assert!(a1.iter().zip(a2.iter()).filter(|(x, y)| x == y).count() < 5, "two entropy seeds agree");
    // Each array is the same when recomputed, rechunked, or generated again from its state.
    assert_eq!(run(&x1), a1);
    assert_eq!(run(&x1.rechunk([7, 3])), a1);
    assert_eq!(run(&r1.random(&[500, 4], ChunkSpec::Explicit(vec![vec![499, 1], vec![1, 3]]))), a1);
    assert!(run(&(&x1 - &x1.rechunk([33, 1]))).iter().all(|&d| d == 0.0), "one array, one set of values");
    // The free function draws a fresh seed per call.
    let (f1, f2) = (random::random(&[300], 64), random::random(&[300], 64));
    let (b1, b2) = (run(&f1), run(&f2));
    assert_ne!(b1, b2);
    assert_eq!(run(&f1.rechunk(100)), b1);
    assert!(b1.iter().all(|&v| (0.0..1.0).contains(&v)));
}
