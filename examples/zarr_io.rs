//! Writes an array to a Zarr store, reads it back lazily and computes on it; the store can be
//! opened by zarr-python too (`zarr.open_array(path)`).
//!
//! Run: `cargo run --release --example zarr_io -- [store-dir] [--read-only]` (with
//! `--read-only`, only reads an existing store of f64, e.g. one written by zarr-python).

use kiln::array::ChunkSpec;
use kiln::array::random::RandomState;
use kiln::array::zarr::from_zarr;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "example.zarr".into());
    let read_only = std::env::args().any(|a| a == "--read-only");
    let chunks = if read_only {
        None
    } else {
        let x = RandomState::new(7).normal(10.0, 2.0, &[4000, 3000], [1000, 1000]);
        let blocks = kiln::compute(&x.to_zarr(&dir)?)?;
        println!("wrote {blocks} blocks of {x} to {dir}");
        Some(ChunkSpec::PerAxis(vec![500, 3000]))
    };
    let y = from_zarr::<f64>(&dir, chunks)?;
    println!("read back as {y}");
    let (mean, std) = kiln::compute(&(y.mean().scalar(), y.std().scalar()))?;
    println!("mean {mean:.4}, std {std:.4}");
    if !read_only {
        println!("(the data were drawn with mean 10 and standard deviation 2)");
    }
    Ok(())
}
