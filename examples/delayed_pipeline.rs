//! The seeds' pipeline: a grid search where every combination of parameters runs `fit1`,
//! `fit2`, `fit3` on shared data, and `score` picks the best.
//!
//! ```python
//! for a in A:
//!     for b in B:
//!         for c in C:
//!             r1 = delayed(fit1)(x, a)
//!             r2 = delayed(fit2)(r1, b)
//!             r3 = delayed(fit3)(r2, c)
//!             results[a, b, c] = r3
//! best = delayed(score)(results)
//! result = best.compute()
//! ```
//!
//! Here the "model" is a ridge regression fitted on a subsample: `fit1` subsamples the data
//! (every `a`-th point), `fit2` fits with ridge penalty `b`, `fit3` measures the error on
//! held-out data after clipping predictions to `c`. The data is loaded once and shared.
//!
//! Run: `cargo run --release --example delayed_pipeline`

// Delayed functions receive their inputs by reference to the stored value, here a `Vec`.
#![allow(clippy::ptr_arg)]

use std::collections::BTreeMap;

use kiln::prelude::*;

/// Noisy samples of y = 3x + 2 on [0, 10].
fn load(n: &usize) -> Vec<(f64, f64)> {
    (0..*n)
        .map(|i| {
            let x = 10.0 * i as f64 / *n as f64;
            let noise = ((i as f64 * 12.9898).sin() * 43758.5453).fract() - 0.5;
            (x, 3.0 * x + 2.0 + noise)
        })
        .collect()
}

fn fit1(data: &Vec<(f64, f64)>, every: &usize) -> Vec<(f64, f64)> {
    data.iter().step_by(*every).copied().collect()
}

/// Ridge regression on (x, y): returns (slope, intercept).
fn fit2(sample: &Vec<(f64, f64)>, penalty: &f64) -> (f64, f64) {
    let n = sample.len() as f64;
    let (mx, my) = sample.iter().fold((0.0, 0.0), |(a, b), (x, y)| (a + x / n, b + y / n));
    let (sxy, sxx) = sample.iter().fold((0.0, 0.0), |(a, b), (x, y)| (a + (x - mx) * (y - my), b + (x - mx).powi(2)));
    let slope = sxy / (sxx + penalty);
    (slope, my - slope * mx)
}

/// Mean squared error on held-out points, predictions clipped to `cap`.
fn fit3(model: &(f64, f64), cap: &f64) -> f64 {
    let held_out = load(&997);
    let (slope, intercept) = *model;
    held_out.iter().map(|(x, y)| ((slope * x + intercept).min(*cap) - y).powi(2)).sum::<f64>() / held_out.len() as f64
}

type Params = (i64, i64, i64);

fn score(results: &BTreeMap<Params, f64>) -> (Params, f64) {
    results.iter().min_by(|a, b| a.1.total_cmp(b.1)).map(|(k, v)| (*k, *v)).expect("at least one result")
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (fit1, fit2, fit3) =
        (kiln::delayed::func2("fit1", fit1), kiln::delayed::func2("fit2", fit2), kiln::delayed::func2("fit3", fit3));
    let x = kiln::delayed::func1("load", load).call(100_000usize);

    let mut results = BTreeMap::new();
    for a in [1i64, 2, 5, 10] {
        for b in [0i64, 10, 1000] {
            for c in [20i64, 40] {
                let r1 = fit1.call(&x, a as usize);
                let r2 = fit2.call(r1, b as f64);
                let r3 = fit3.call(r2, c as f64);
                results.insert((a, b, c), r3);
            }
        }
    }
    let best = kiln::delayed::func1("score", score).call(kiln::delayed::collect_map(results));
    let start = std::time::Instant::now();
    let ((a, b, c), mse) = best.compute()?;
    println!("best parameters: every={a} penalty={b} cap={c} (held-out MSE {mse:.4}) in {:.1?}", start.elapsed());
    Ok(())
}
