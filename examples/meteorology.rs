//! The seeds' earth-science example: on a year of 6-hourly global temperatures
//! (time x lat x lon = 1464 x 721 x 1440, a 12 GB array that is never held in memory), the
//! day-night difference `x[::4].mean(axis=0) - x[2::4].mean(axis=0)`, written as a PNG heat map
//! with latitude/longitude axes, a title and a colour bar in kelvin.
//!
//! The data are synthetic but shaped like the real thing: a pole-to-equator gradient, a daily
//! cycle that follows local solar time and weakens toward the poles, and weather noise.
//!
//! Run: `cargo run --release --example meteorology -- [out.png] [time-steps]`

use std::f64::consts::PI;

use kiln::array::random::RandomState;
use kiln::array::{Array, linspace};
use kiln::plot::{HeatMap, Palette, WriteArrayPng};
use kiln::prelude::*;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out = args.next().unwrap_or_else(|| "day_minus_night.png".into());
    let steps: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(1464);
    let (nlat, nlon) = (721usize, 1440usize);

    // Coordinates as lazy 1-d arrays, broadcast to (time, lat, lon).
    let t = linspace(0.0, (steps - 1) as f64, steps, 16).expand_dims(1).expand_dims(2);
    let lat = (linspace(-90.0, 90.0, nlat, 361) * (PI / 180.0)).expand_dims(0).expand_dims(2);
    let lon = (linspace(0.0, 360.0 * (nlon - 1) as f64 / nlon as f64, nlon, 720) * (PI / 180.0))
        .expand_dims(0)
        .expand_dims(0);
    // Four steps a day: local solar hour angle = 2*pi*t/4 + lon.
    let hour_angle = &(&t * (PI / 2.0)) + &lon;
    let seasonal = &(&lat.sin().pow(2.0) * -30.0) + 15.0;
    let daily = &(&lat.cos() * 8.0) * &hour_angle.cos();
    let noise = RandomState::new(2018).normal(0.0, 2.0, &[steps, nlat, nlon], [16, 361, 720]);
    let x: Array<f64> = &(&seasonal + &daily) + &noise;
    println!("x = {x} ({:.1} GB)", x.nbytes() as f64 / 1e9);

    let day_minus_night = &x.slice(&idx![..;4]).mean_axis(0) - &x.slice(&idx![2..;4]).mean_axis(0);
    let start = std::time::Instant::now();
    let map = day_minus_night.compute()?;
    println!("computed the {:?} difference map in {:.1?}", map.shape(), start.elapsed());
    let (lo, hi) = map.iter().fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    println!("day minus night: from {lo:.2} to {hi:.2} K");

    HeatMap::new(&format!("Day minus night temperature, mean of {steps} six-hourly steps"), "K")
        .x_axis("longitude (°E)", 0.0, 360.0 * (nlon - 1) as f64 / nlon as f64)
        .y_axis("latitude (°N)", -90.0, 90.0)
        .palette(Palette::Diverging)
        .write_array_png(&out, &map)?;
    println!("wrote {out}");
    Ok(())
}
