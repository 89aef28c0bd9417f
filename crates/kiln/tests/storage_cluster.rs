#![cfg(all(feature = "hdf5", feature = "netcdf", feature = "distributed"))]
//! HDF5 datasets and NetCDF variables computed on a `LocalCluster`: the read kernels travel by
//! path and name (the workers open the files themselves) and give the local scheduler's answers.
//! The files are kiln-array's h5py / netCDF4-python fixtures.

use std::path::PathBuf;

use kiln::array::hdf5::from_hdf5;
use kiln::array::netcdf::open_netcdf;
use kiln::distributed::{LocalCluster, WorkerMode};
use kiln::{Collection, LocalScheduler};

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../kiln-array/tests/fixtures").join(rel)
}

#[test]
fn stored_scientific_arrays_compute_on_a_local_cluster() {
    kiln::register_builtins();
    let cluster = LocalCluster::builder().workers(2).threads_per_worker(1).mode(WorkerMode::Threads).start().unwrap();
    let client = cluster.client().unwrap();
    let local = LocalScheduler::new();

    let x =
        from_hdf5::<f64>(fixture("hdf5/mixed.h5"), "chunked_gzip", Some(kiln::array::ChunkSpec::PerAxis(vec![7, 5])))
            .unwrap();
    let y = (&x * 2.0 - &x.mean_axis(0)).nanmean();
    assert_eq!(y.scalar().compute_on(&client).unwrap().to_bits(), y.scalar().compute_on(&local).unwrap().to_bits());

    let ds = open_netcdf(fixture("netcdf/tas_200*.nc")).unwrap();
    let tas = ds.variable("tas").unwrap();
    let djf = tas.sel_time("time", |t| matches!(t.month, 12 | 1 | 2)).unwrap().mean("time").unwrap();
    let jja = tas.sel_time("time", |t| (6..=8).contains(&t.month)).unwrap().mean("time").unwrap();
    let diff = djf.data() - jja.data();
    assert_eq!(diff.compute_on(&client).unwrap(), diff.compute_on(&local).unwrap());
}
