//! The seeds' climatology (`xarray.open_mfdataset('all/your/data/*.nc')`, then a mean over time
//! per season): a generated multi-file NetCDF data set of monthly near-surface temperatures, one
//! file per year, opened as one variable concatenated along time; the winter (DJF) and summer
//! (JJA) means and their difference, written as PNG heat maps with latitude/longitude axes, a
//! title and a colour bar in kelvin.
//!
//! The data are synthetic but shaped like the real thing: a pole-to-equator gradient, a seasonal
//! cycle of opposite sign in the two hemispheres that grows toward the poles, a zonal wave and
//! weather noise.
//!
//! Run: `cargo run --release --features netcdf --example climatology -- [out-dir] [years] [degrees]`
//! (default: `climatology`, 3 years, a 2.5° grid; `1` gives a 181 x 360 grid).

use std::f64::consts::PI;

use kiln::array::netcdf::{Variable, open_netcdf, write_netcdf};
use kiln::array::random::RandomState;
use kiln::array::{Array, linspace};
use kiln::plot::{HeatMap, Palette, WriteArrayPng};
use kiln::prelude::*;

/// Days from 2000-01-01 to `year`-`month`-15 (proleptic Gregorian).
fn days_since_2000(year: i64, month: u32) -> f64 {
    let days_from_civil = |y: i64, m: u32, d: u32| {
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (i64::from(m) + 9) % 12;
        let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
        era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy
    };
    (days_from_civil(year, month, 15) - days_from_civil(2000, 1, 1)) as f64
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out = std::path::PathBuf::from(args.next().unwrap_or_else(|| "climatology".into()));
    let years: i64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(3);
    let degrees: f64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(2.5);
    if years < 1 || !(degrees > 0.0 && degrees <= 30.0) {
        return Err("years must be at least 1 and the grid spacing in (0, 30] degrees".into());
    }
    let nlat = (180.0 / degrees).round() as usize + 1;
    let nlon = (360.0 / degrees).round() as usize;
    std::fs::create_dir_all(&out)?;
    let lats: Vec<f64> = (0..nlat).map(|i| -90.0 + 180.0 * i as f64 / (nlat - 1) as f64).collect();
    let lons: Vec<f64> = (0..nlon).map(|i| 360.0 * i as f64 / nlon as f64).collect();

    // One file per year, written through kiln's own NetCDF writer.
    for (n, year) in (2000..2000 + years).enumerate() {
        let month = linspace(0.0, 11.0, 12, 12).expand_dims(1).expand_dims(2);
        let lat = (linspace(-90.0, 90.0, nlat, nlat) * (PI / 180.0)).expand_dims(0).expand_dims(2);
        let lon = (linspace(0.0, lons[nlon - 1], nlon, nlon) * (PI / 180.0)).expand_dims(0).expand_dims(0);
        // Coldest in the north in January, in the south in July.
        let cycle = &(&(&month + -0.5) * (2.0 * PI / 12.0)).cos() * &(&lat.sin() * -14.0);
        let gradient = &(&lat.sin().pow(2.0) * -40.0) + 300.0;
        let wave = &(&lon * 2.0).cos() * &(&lat.cos() * 3.0);
        let noise = RandomState::new(1000 + n as u64).normal(0.0, 1.5, &[12, nlat, nlon], [12, nlat, nlon]);
        let tas: Array<f64> = &(&(&gradient + &cycle) + &wave) + &noise;
        let times: Vec<f64> = (1..=12).map(|m| days_since_2000(year, m)).collect();
        let variable = Variable::new("tas", &["time", "lat", "lon"], tas)?
            .with_coord("time", times, Some("days since 2000-01-01"), Some("standard"))?
            .with_coord("lat", lats.clone(), Some("degrees_north"), None)?
            .with_coord("lon", lons.clone(), Some("degrees_east"), None)?
            .with_attribute("units", "K")
            .with_attribute("long_name", "near-surface air temperature");
        let path = out.join(format!("tas_{year}.nc"));
        write_netcdf(&path, &[&variable])?.compute()?;
    }
    println!("wrote {years} files of 12 x {nlat} x {nlon} monthly temperatures to {}", out.display());

    // The seeds' part: open all files as one variable, mean over time per season.
    let dataset = open_netcdf(out.join("tas_*.nc"))?;
    let tas = dataset.variable("tas")?;
    println!("tas: {:?} over {:?}, from {} files", tas.shape(), tas.dims(), dataset.files().len());
    let djf = tas.sel_time("time", |t| matches!(t.month, 12 | 1 | 2))?.mean("time")?;
    let jja = tas.sel_time("time", |t| (6..=8).contains(&t.month))?.mean("time")?;
    let difference = djf.data() - jja.data();
    let (djf, jja, difference) = kiln::compute(&(djf.data().clone(), jja.data().clone(), difference))?;

    let map = |title: &str| {
        HeatMap::new(title, "K").x_axis("longitude (°E)", lons[0], lons[nlon - 1]).y_axis(
            "latitude (°N)",
            lats[0],
            lats[nlat - 1],
        )
    };
    // Both seasons on one colour scale, so the two maps compare at a glance.
    let (lo, hi) = djf.iter().chain(jja.iter()).fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    let span = format!("{years} year{}", if years == 1 { "" } else { "s" });
    for (name, season, field) in [("djf", "December-February", &djf), ("jja", "June-August", &jja)] {
        let path = out.join(format!("tas_{name}_mean.png"));
        map(&format!("Mean temperature, {season}, {span}")).limits(lo, hi).write_array_png(&path, field)?;
        println!("wrote {}", path.display());
    }
    let path = out.join("tas_djf_minus_jja.png");
    map(&format!("Temperature, DJF minus JJA, {span}"))
        .palette(Palette::Diverging)
        .write_array_png(&path, &difference)?;
    let (dlo, dhi) = difference.iter().fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    println!("DJF minus JJA: from {dlo:.1} to {dhi:.1} K; wrote {}", path.display());
    Ok(())
}
