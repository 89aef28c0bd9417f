//! The seeds' fine-grained example: call `f` or `g` on every pair, lazily, then compute all
//! results at once in parallel.
//!
//! ```python
//! f = dask.delayed(f); g = dask.delayed(g)
//! for a in A:
//!     for b in B:
//!         results[a, b] = f(a, b) if a < b else g(a, b)
//! results = dask.compute(results)
//! ```
//!
//! Run: `cargo run --release --example delayed_loops -- [graph.svg]`

use std::collections::BTreeMap;

use kiln::prelude::*;

fn f(a: &i64, b: &i64) -> i64 {
    // Stands in for real work: a few microseconds of arithmetic.
    (0..1000).fold(a * b, |acc, i| (acc * 31 + i) % 1_000_003)
}

fn g(a: &i64, b: &i64) -> i64 {
    (a - b).pow(2)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let f = kiln::delayed::func2("f", f);
    let g = kiln::delayed::func2("g", g);
    let (a_values, b_values) = (0..40i64, 0..40i64);

    let mut results = BTreeMap::new();
    for a in a_values.clone() {
        for b in b_values.clone() {
            results.insert((a, b), if a < b { f.call(a, b) } else { g.call(a, b) });
        }
    }
    let results = kiln::delayed::collect_map(results);
    if let Some(path) = std::env::args().nth(1) {
        // Draw a small version: the full one has 1,600 tasks.
        let mut small = BTreeMap::new();
        for a in 0..3i64 {
            for b in 0..3i64 {
                small.insert((a, b), if a < b { f.call(a, b) } else { g.call(a, b) });
            }
        }
        kiln::delayed::collect_map(small).visualize(&path)?;
        println!("wrote the graph of the 3 x 3 version to {path}");
    }

    let start = std::time::Instant::now();
    let computed = results.compute()?;
    println!("computed {} results in {:.1?}", computed.len(), start.elapsed());
    for ((a, b), v) in computed.iter().take(5) {
        println!("results[{a}, {b}] = {v}");
    }
    Ok(())
}
