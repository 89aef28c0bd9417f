#![cfg(feature = "netcdf")]
//! NetCDF files written by netCDF4-python (NetCDF-4 chunked and compressed, packed integers,
//! fill values, classic format, many files) read by kiln, decoded as xarray decodes them, and
//! the seeds' climatology (seasonal means over many files) checked against NumPy. Fixtures and
//! expected values come from `tests/fixtures/netcdf/make_netcdf_fixtures.py`.

use std::path::{Path, PathBuf};

use kiln_array::ArrayError;
use kiln_array::netcdf::{open_mfdataset, open_netcdf};
use kiln_array::npy::read_npy_as;
use kiln_graph::Collection;
use kiln_local::{LocalScheduler, Progress};
use ndarray::ArrayD;

fn sched() -> LocalScheduler {
    LocalScheduler::threads(2).with_progress(Progress::Never)
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/netcdf").join(name)
}

fn expected(name: &str) -> ArrayD<f64> {
    read_npy_as(fixture(name)).unwrap()
}

/// Equal within `tol` element by element, NaN only where NaN is expected.
fn close(got: &ArrayD<f64>, want: &ArrayD<f64>, tol: f64) -> bool {
    got.shape() == want.shape()
        && got.iter().zip(want.iter()).all(|(g, w)| (g.is_nan() && w.is_nan()) || (g - w).abs() <= tol)
}

fn years() -> Vec<PathBuf> {
    (2000..=2002).map(|y| fixture(&format!("tas_{y}.nc"))).collect()
}

#[test]
fn one_file_decodes_fill_values_and_packed_integers_like_xarray() {
    let ds = open_netcdf(fixture("tas_2001.nc")).unwrap();
    let names: Vec<&str> = ds.names().collect();
    assert_eq!(names, ["lat", "lon", "pr", "tas", "time"]);
    let tas = ds.variable("tas").unwrap();
    assert_eq!(tas.dims(), ["time", "lat", "lon"]);
    assert_eq!(tas.shape(), &[12, 4, 5]);
    assert_eq!(tas.attribute("units"), Some("K"));
    assert_eq!(tas.coord("lat").unwrap().values.as_slice(), &[60.0, 30.0, 0.0, -30.0]);
    let got = tas.data().compute_on(&sched()).unwrap();
    // Stored as f32: equal to the f32 values widened.
    assert!(close(&got, &expected("tas_2001_tas.npy"), 0.0), "{got:?}");
    assert_eq!(got.iter().filter(|v| v.is_nan()).count(), 1, "the one _FillValue point is NaN");
    let pr = ds.variable("pr").unwrap().data().compute_on(&sched()).unwrap();
    assert!(close(&pr, &expected("tas_2001_pr.npy"), 1e-9), "{pr:?}");
    assert!(pr[[2, 0, 0]].is_nan(), "missing_value decodes to NaN");
}

#[test]
fn many_files_concatenate_along_time_with_any_blocks() {
    let want: Vec<ArrayD<f64>> = (2000..=2002).map(|y| expected(&format!("tas_{y}_tas.npy"))).collect();
    let views: Vec<_> = want.iter().map(|a| a.view()).collect();
    let want = ndarray::concatenate(ndarray::Axis(0), &views).unwrap();
    // A glob takes the files sorted and concatenates along the unlimited dimension.
    let ds = open_netcdf(fixture("tas_200*.nc")).unwrap();
    assert_eq!(ds.files().len(), 3);
    let tas = ds.variable("tas").unwrap();
    assert_eq!(tas.shape(), &[36, 4, 5]);
    assert_eq!(tas.coord("time").unwrap().values.len(), 36);
    assert!(close(&tas.data().compute_on(&sched()).unwrap(), &want, 0.0));
    // Other blocks, the same values.
    let ds = open_mfdataset(&years(), "time", &[("time", 5), ("lat", 3), ("lon", 2)]).unwrap();
    let tas = ds.variable("tas").unwrap();
    // Blocks never span files: 12 steps per file in blocks of 5 are 5 + 5 + 2, three per file.
    assert_eq!(tas.data().numblocks(), vec![9, 2, 3]);
    assert!(close(&tas.data().compute_on(&sched()).unwrap(), &want, 0.0));
    // The time coordinate variable itself is concatenated too.
    let time = ds.variable("time").unwrap().data().compute_on(&sched()).unwrap();
    assert_eq!(time.len(), 36);
}

#[test]
fn times_decode_to_the_dates_netcdf4_python_gives() {
    let ds = open_netcdf(fixture("tas_200*.nc")).unwrap();
    let times = ds.variable("tas").unwrap().decode_times("time").unwrap();
    let months: ArrayD<i64> = read_npy_as(fixture("months.npy")).unwrap();
    let years: ArrayD<i64> = read_npy_as(fixture("years.npy")).unwrap();
    let got_months: Vec<i64> = times.iter().map(|t| i64::from(t.month)).collect();
    let got_years: Vec<i64> = times.iter().map(|t| t.year).collect();
    assert_eq!(got_months, months.iter().copied().collect::<Vec<_>>());
    assert_eq!(got_years, years.iter().copied().collect::<Vec<_>>());
    assert!(times.iter().all(|t| t.day == 15 && t.seconds == 0.0));
}

#[test]
fn seasonal_climatology_matches_numpy() {
    // The seeds' climatology: mean over time per season, and the difference of two seasons.
    let ds = open_netcdf(fixture("tas_200*.nc")).unwrap();
    let tas = ds.variable("tas").unwrap();
    let djf = tas.sel_time("time", |t| matches!(t.month, 12 | 1 | 2)).unwrap();
    assert_eq!(djf.shape(), &[9, 4, 5]);
    let djf = djf.mean("time").unwrap();
    assert_eq!(djf.dims(), ["lat", "lon"]);
    let jja = tas.sel_time("time", |t| (6..=8).contains(&t.month)).unwrap().mean("time").unwrap();
    let got_djf = djf.data().compute_on(&sched()).unwrap();
    let got_jja = jja.data().compute_on(&sched()).unwrap();
    assert!(close(&got_djf, &expected("tas_djf_mean.npy"), 1e-9), "{got_djf:?}");
    assert!(close(&got_jja, &expected("tas_jja_mean.npy"), 1e-9), "{got_jja:?}");
    let difference = (djf.data() - jja.data()).compute_on(&sched()).unwrap();
    let want = expected("tas_djf_mean.npy") - expected("tas_jja_mean.npy");
    assert!(close(&difference, &want, 1e-9));
}

#[test]
fn selection_by_coordinate_value_and_position() {
    let ds = open_netcdf(fixture("tas_2000.nc")).unwrap();
    let tas = ds.variable("tas").unwrap();
    let all = expected("tas_2000_tas.npy");
    // Latitudes run 60, 30, 0, -30: 0..=45 selects 30 and 0 (a descending coordinate).
    let band = tas.sel("lat", 0.0, 45.0).unwrap();
    assert_eq!(band.coord("lat").unwrap().values.as_slice(), &[30.0, 0.0]);
    let got = band.data().compute_on(&sched()).unwrap();
    let want = all.slice(ndarray::s![.., 1..3, ..]).to_owned().into_dyn();
    assert!(close(&got, &want, 0.0));
    let east = tas.sel_where("lon", |x| x > 100.0).unwrap();
    assert_eq!(east.shape(), &[12, 4, 3]);
    let first_quarter = tas.isel("time", 0..3).unwrap().max("time").unwrap();
    let got = first_quarter.data().compute_on(&sched()).unwrap();
    let want = all
        .slice(ndarray::s![0..3, .., ..])
        .fold_axis(ndarray::Axis(0), f64::NEG_INFINITY, |&a, &b| if b.is_nan() { a } else { a.max(b) });
    assert!(close(&got, &want.into_dyn(), 0.0));
    // Reductions skip the missing point, as xarray's do.
    let total = tas.sum("time").unwrap().data().compute_on(&sched()).unwrap();
    assert!(total.iter().all(|v| v.is_finite()));
}

#[test]
fn classic_format_files_read_too() {
    let ds = open_netcdf(fixture("classic.nc")).unwrap();
    let h = ds.variable("height").unwrap();
    assert_eq!(h.dims(), ["x", "y"]);
    assert!(close(&h.data().compute_on(&sched()).unwrap(), &expected("classic_height.npy"), 0.0));
    assert_eq!(h.coord("x").unwrap().values.as_slice(), &[0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0]);
    assert!(h.coord("y").is_none(), "y has no coordinate variable");
}

#[test]
fn bad_input_is_a_clear_error() {
    let text = |e: ArrayError| e.to_string();
    let missing = text(open_netcdf(fixture("nope.nc")).unwrap_err());
    assert!(missing.contains("nope.nc") && missing.contains("does not exist"), "{missing}");
    let garbage = text(open_netcdf(fixture("not_netcdf.nc")).unwrap_err());
    assert!(garbage.contains("not_netcdf.nc") && garbage.contains("NetCDF"), "{garbage}");
    let nothing = text(open_netcdf(fixture("nothing_*.nc")).unwrap_err());
    assert!(nothing.contains("matches no files"), "{nothing}");
    let ds = open_netcdf(fixture("tas_2000.nc")).unwrap();
    let unknown = text(ds.variable("psl").unwrap_err());
    assert!(unknown.contains("psl") && unknown.contains("tas"), "{unknown}");
    let tas = ds.variable("tas").unwrap();
    let no_dim = text(tas.mean("depth").unwrap_err());
    assert!(no_dim.contains("depth") && no_dim.contains("time"), "{no_dim}");
    assert!(tas.isel("time", 5..20).is_err());
    let not_time = text(tas.decode_times("lat").unwrap_err());
    assert!(not_time.contains("degrees_north"), "{not_time}");
    // Files whose time units differ are not silently concatenated.
    let mut paths = years();
    paths.push(fixture("other_units.nc"));
    let units = text(open_mfdataset(&paths, "time", &[]).unwrap_err());
    assert!(units.contains("other_units.nc") && units.contains("days since"), "{units}");
    assert!(matches!(open_mfdataset(&years(), "time", &[("lat", 0)]), Err(ArrayError::Invalid(_))));
    assert!(matches!(open_mfdataset::<PathBuf>(&[], "time", &[]), Err(ArrayError::Invalid(_))));
}

#[test]
fn kiln_writes_netcdf_that_reads_back_with_its_coordinates() {
    use kiln_array::netcdf::{Variable, write_netcdf};
    let dir = std::env::temp_dir().join(format!("kiln-netcdf-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Two years of a monthly field on a 3 x 4 grid, one file per year, blocks of 5 months.
    for year in 0..2 {
        let values = kiln_array::arange::<f64>(0.0, 144.0, 1.0, 48).reshape(&[12, 3, 4]) * 3.0 + year as f64 * 1000.0;
        let values = values.rechunk(kiln_array::ChunkSpec::PerAxis(vec![5, 3, 4]));
        let days: Vec<f64> = (0..12).map(|m| (year * 365 + m * 30 + 14) as f64).collect();
        let tas = Variable::new("tas", &["time", "lat", "lon"], values)
            .unwrap()
            .with_coord("time", days, Some("days since 2001-01-01"), Some("noleap"))
            .unwrap()
            .with_coord("lat", vec![-10.0, 0.0, 10.0], Some("degrees_north"), None)
            .unwrap()
            .with_attribute("units", "K");
        let path = dir.join(format!("year{year}.nc"));
        let written = write_netcdf(&path, &[&tas]).unwrap().compute_on(&sched()).unwrap();
        assert_eq!(written, 3); // blocks of 5 + 5 + 2 months
    }
    let ds = open_netcdf(dir.join("year*.nc")).unwrap();
    assert_eq!(ds.names().collect::<Vec<_>>(), ["lat", "tas", "time"]);
    let tas = ds.variable("tas").unwrap();
    assert_eq!(tas.shape(), &[24, 3, 4]);
    assert_eq!(tas.attribute("units"), Some("K"));
    assert_eq!(tas.coord("lat").unwrap().values.as_slice(), &[-10.0, 0.0, 10.0]);
    let got = tas.data().compute_on(&sched()).unwrap();
    assert_eq!(got[[13, 2, 3]], 1000.0 + (12 + 2 * 4 + 3) as f64 * 3.0);
    // The noleap calendar round-trips: day 365 + 14 of 2001 is 2002-01-15.
    let times = tas.decode_times("time").unwrap();
    assert_eq!((times[12].year, times[12].month, times[12].day), (2002, 1, 15));
    // A reduction written back is a file of its own.
    let mean = tas.mean("time").unwrap();
    write_netcdf(dir.join("mean.nc"), &[&mean]).unwrap().compute_on(&sched()).unwrap();
    let back = open_netcdf(dir.join("mean.nc")).unwrap();
    let m = back.variable("tas").unwrap();
    assert_eq!(m.dims(), ["lat", "lon"]);
    assert!(close(&m.data().compute_on(&sched()).unwrap(), &mean.data().compute_on(&sched()).unwrap(), 1e-12));
    // Bad input.
    let two_d = Variable::new("x", &["a", "b"], kiln_array::ones::<f64>(&[2, 3], 2)).unwrap();
    assert!(Variable::new("x", &["a"], kiln_array::ones::<f64>(&[2, 3], 2)).is_err());
    assert!(two_d.clone().with_coord("a", vec![1.0], None, None).is_err());
    let clash = Variable::new("y", &["a"], kiln_array::ones::<f64>(&[5], 2)).unwrap();
    assert!(write_netcdf(dir.join("clash.nc"), &[&two_d, &clash]).is_err());
    assert!(write_netcdf(dir.join("none.nc"), &[]).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}
