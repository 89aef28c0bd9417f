//! The seeds' array examples, from `da.ones((15,), chunks=(5,))` to the headline
//! `(x + x.T - x.mean(axis=0)).std()`.
//!
//! Run: `cargo run --release --example array_seed -- [n] [graph-dir]` (n defaults to 20000;
//! with a directory, the small examples' graphs are drawn there as .svg, or .dot without
//! Graphviz).

use kiln::prelude::*;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(20_000);
    let graphs = args.next();

    let x = kiln::array::ones::<f64>(&[15], 5);
    println!("{x}");
    println!("x.sum() = {}", x.sum().scalar().compute()?);

    let x = kiln::array::ones::<f64>(&[15, 15], [5, 5]);
    let examples: Vec<(&str, kiln::array::Array<f64>)> = vec![
        ("sum_axis0", x.sum_axis(0)),
        ("x_plus_xT", &x + &x.t()),
        ("dot", x.dot(&(&x.t() + 1.0))),
        ("dot_minus_mean", &x.dot(&(&x.t() + 1.0)) - &x.mean()),
        ("dot_minus_mean_std", (&x.dot(&(&x.t() + 1.0)) - &x.mean()).std()),
    ];
    for (name, e) in &examples {
        let value = e.compute()?;
        println!("{name}: shape {:?}, first value {}", value.shape(), value.iter().next().copied().unwrap_or(f64::NAN));
        if let Some(dir) = &graphs {
            std::fs::create_dir_all(dir)?;
            let svg = format!("{dir}/{name}.svg");
            match e.visualize(&svg) {
                Ok(()) => println!("  drew {svg}"),
                Err(kiln::visualize::VisualizeError::GraphvizMissing(_)) => {
                    e.visualize(format!("{dir}/{name}.dot"))?;
                    println!("  wrote {dir}/{name}.dot (install graphviz for SVG)");
                }
                Err(err) => return Err(err.into()),
            }
        }
    }

    // linalg.svd(x + x.T - x.mean()) on a small random array.
    let r = kiln::array::random::RandomState::new(0).random(&[15, 15], [5, 5]);
    let (_u, s, _vt) = kiln::array::linalg::svd(&(&(&r + &r.t()) - &r.mean()));
    println!("singular values of x + x.T - x.mean(): {:.3}", s.compute()?);

    let start = std::time::Instant::now();
    let x = kiln::array::random::RandomState::new(42).random(&[n, n], [1000, 1000]);
    let y = (&x + &x.t() - &x.mean_axis(0)).std();
    let value = y.scalar().compute()?;
    println!("(x + x.T - x.mean(axis=0)).std() for n = {n}: {value:.6} in {:.2?}", start.elapsed());
    Ok(())
}
