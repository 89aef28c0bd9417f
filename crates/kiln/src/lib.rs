//! # kiln: Dask, rebuilt in Rust
//!
//! kiln runs computations written as ordinary Rust as graphs of small tasks, in parallel and
//! with little memory. This crate is the front door: it re-exports the pieces and wires the
//! defaults (`compute()` runs on the local threaded scheduler unless another default is set).
//!
//! | Dask | kiln |
//! |---|---|
//! | `da.ones((15,), chunks=(5,))` | `kiln::array::ones::<f64>(&[15], 5)` |
//! | `da.random.default_rng(0).random((n, n), chunks=(c, c))` | `kiln::array::random::RandomState::new(0).random(&[n, n], [c, c])` |
//! | `(x + x.T - x.mean(axis=0)).std()` | `(&x + &x.t() - &x.mean_axis(0)).std()` |
//! | `x[::4, 2, 1:-1]` | `x.slice(&idx![..;4, 2, 1..-1])` |
//! | `x.sum(axis=0, keepdims=True)` | `x.sum_with(&Reduce::axis(0).keepdims(true))` |
//! | `float(y.compute())` | `y.scalar().compute()` |
//! | `db.read_text("logs/*.json.gz").map(json.loads)` | `kiln::bag::read_json("logs/*.json.gz")?` (schemaless `Json` records; `read_json_lines::<T>` for a typed struct) |
//! | `b.filter(lambda d: d["name"] == "Alice").count()` | `b.filter(\|d\| d["name"] == "Alice").count()` |
//! | `b.pluck("name").frequencies().topk(10, key=1)` | `b.pluck("name").frequencies().topk(10, \|(_, n)\| *n)` |
//! | `b.foldby(key, binop, 0, add)`, `b.groupby(key)` | `b.foldby(key, binop, 0, \|a, b\| a + b, 0)`, `b.groupby(key)` |
//! | `dask.delayed(f)(x, y)` | `kiln::delayed::func2("f", f).call(x, y)` |
//! | `dask.delayed(data)` | `kiln::delayed::value(data)` |
//! | `dd.read_csv("d/*.csv").groupby("k").v.mean()` | `kiln::dataframe::read_csv("d/*.csv", &Default::default())?.groupby(["k"])?.agg([Agg::mean("v")])?` |
//! | `x.compute()` | `x.compute()` (with `use kiln::prelude::*`) |
//! | `dask.compute(a, b)` | `kiln::compute(&(a, b))` |
//! | `x.visualize("g.svg")` | `x.visualize("g.svg")` |
//! | `dask.config.set(scheduler="synchronous")` | `kiln::set_default_scheduler(Arc::new(LocalScheduler::synchronous()))` |
//!
//! ```
//! use kiln::prelude::*;
//! let x = kiln::array::random::RandomState::new(0).random(&[2000, 2000], [500, 500]);
//! let y = (&x + &x.t() - &x.mean_axis(0)).std();
//! let value = y.scalar().compute().unwrap();
//! assert!((value - 0.408).abs() < 0.01);
//!
//! let inc = kiln::delayed::func1("inc", |x: &i64| x + 1);
//! let add = kiln::delayed::func2("add", |a: &i64, b: &i64| a + b);
//! let total = add.call(inc.call(1), inc.call(2));
//! assert_eq!(total.compute().unwrap(), 5);
//! ```
#![deny(missing_docs)]

use std::sync::Arc;

pub use kiln_graph as graph;
pub use kiln_graph::{Collection, ComputeError, Key, Scheduler, Value};
pub use kiln_local as local;
pub use kiln_local::LocalScheduler;

pub mod visualize;

/// Chunked n-dimensional arrays (Dask's `dask.array`).
pub mod array {
    pub use kiln_array::*;
}

/// Parallel lists of Rust values and JSON records (Dask's `dask.bag`).
pub mod bag {
    pub use kiln_bag::*;
    /// `Bag::to_dataframe` (and `to_dataframe_inferred` for JSON records), and
    /// `register_bag_record` for running it on a cluster with records of a user type.
    #[cfg(feature = "dataframe")]
    pub use kiln_dataframe::bag::{
        DEFAULT_INFER_SAMPLE, JsonRecord, JsonToDataFrame, ToDataFrame, register_bag_record,
    };
}

/// Lazy function calls (Dask's `dask.delayed`).
pub mod delayed {
    pub use kiln_delayed::*;
}

/// Partitioned Arrow tables with the pandas/Dask API (Dask's `dask.dataframe`).
#[cfg(feature = "dataframe")]
pub mod dataframe {
    pub use kiln_dataframe::*;
}

/// The distributed runtime (Dask's `dask.distributed`): `Client`, `LocalCluster`, futures, and
/// the scheduler and worker that `kiln scheduler` / `kiln worker` run.
#[cfg(feature = "distributed")]
pub mod distributed {
    pub use kiln_distributed::*;
}

/// Where data lives (Dask's fsspec role): the storage trait every reader and writer goes
/// through, local files built in, and with the default `s3`/`gcs`/`azure`/`http` features the
/// object stores, which [`register_builtins`] installs (`kiln worker` calls it; programs reading
/// `s3://` URLs call it once at start).
pub mod storage {
    /// The object-store implementation (`s3://`, `gs://`, `az://`, `http(s)://`).
    #[cfg(any(feature = "s3", feature = "gcs", feature = "azure", feature = "http"))]
    pub use kiln_object_store as object_store;
    pub use kiln_storage::*;
}

/// PNG heat maps of computed 2-d arrays (a map of a field over latitude and longitude, a
/// correlation matrix), with axes, a title and a colour bar.
///
/// ```no_run
/// use kiln::plot::{HeatMap, Palette, WriteArrayPng};
/// use kiln::prelude::*;
/// let x = kiln::array::random::RandomState::new(0).random(&[180, 360], [90, 90]);
/// let field = (&x - &x.mean_axis(0)).compute().unwrap();
/// HeatMap::new("Anomaly", "K")
///     .x_axis("longitude (°E)", 0.0, 359.0)
///     .y_axis("latitude (°N)", -89.5, 89.5)
///     .palette(Palette::Diverging)
///     .write_array_png("anomaly.png", &field)
///     .unwrap();
/// ```
#[cfg(feature = "plot")]
pub mod plot {
    pub use kiln_dashboard::plot::*;

    /// Draws a computed array as it comes out of `compute()`, without flattening it by hand.
    pub trait WriteArrayPng {
        /// Writes `values` (2-d: rows along the y axis, columns along the x axis, in any memory
        /// layout) as a PNG file.
        ///
        /// # Errors
        /// An array that is not 2-d or is empty, and every error of [`HeatMap::write_png`].
        fn write_array_png(
            &self,
            path: impl AsRef<std::path::Path>,
            values: &ndarray::ArrayD<f64>,
        ) -> Result<(), PlotError>;

        /// Draws `values` (as [`WriteArrayPng::write_array_png`]) into an image in memory.
        ///
        /// # Errors
        /// As [`WriteArrayPng::write_array_png`], without the file.
        fn render_array(&self, values: &ndarray::ArrayD<f64>) -> Result<RgbImage, PlotError>;
    }

    impl WriteArrayPng for HeatMap {
        fn write_array_png(
            &self,
            path: impl AsRef<std::path::Path>,
            values: &ndarray::ArrayD<f64>,
        ) -> Result<(), PlotError> {
            let (flat, rows, cols) = grid(self, values)?;
            self.write_png(path, &flat, rows, cols)
        }

        fn render_array(&self, values: &ndarray::ArrayD<f64>) -> Result<RgbImage, PlotError> {
            let (flat, rows, cols) = grid(self, values)?;
            self.render(&flat, rows, cols)
        }
    }

    /// The values in row-major order, whatever the array's layout (a transposed result is a
    /// view with swapped strides).
    fn grid(map: &HeatMap, values: &ndarray::ArrayD<f64>) -> Result<(Vec<f64>, usize, usize), PlotError> {
        match values.shape() {
            &[rows, cols] => Ok((values.iter().copied().collect(), rows, cols)),
            shape => Err(PlotError::Layout {
                title: map.title().to_string(),
                reason: format!("a heat map draws a 2-d array, not one of shape {shape:?}"),
            }),
        }
    }
}

/// What most programs import: the `compute`/`visualize` methods on every collection.
pub mod prelude {
    pub use crate::visualize::Visualize;
    pub use crate::{Collection, Compute, LocalScheduler};
    pub use kiln_array::{Array, Idx, Reduce, idx};
    pub use kiln_bag::Bag;
    #[cfg(feature = "dataframe")]
    pub use kiln_dataframe::bag::{JsonToDataFrame, ToDataFrame};
    #[cfg(feature = "dataframe")]
    pub use kiln_dataframe::{Agg, DataFrame, Series};
    pub use kiln_delayed::Delayed;
}

/// Registers the portable kernels and value codecs of every collection (arrays, delayed, bags, and
/// dataframes with the `dataframe` feature) in the process-wide registries, so graphs received
/// from elsewhere can be rebuilt and their values decoded, and the object stores of the enabled
/// features for `s3://`, `gs://`, `az://` and `http(s)://` paths. Worker programs call it at
/// start-up; building a graph registers the kernels too, but not the stores.
pub fn register_builtins() {
    #[cfg(any(feature = "s3", feature = "gcs", feature = "azure", feature = "http"))]
    kiln_object_store::register();
    kiln_array::ensure_registered();
    kiln_delayed::ensure_registered();
    kiln_bag::portable::ensure_registered();
    #[cfg(feature = "dataframe")]
    kiln_dataframe::ensure_registered();
}

/// The scheduler `compute()` uses: the installed default, or a local threaded scheduler.
pub fn default_scheduler() -> Arc<dyn Scheduler> {
    kiln_graph::scheduler::default_scheduler().unwrap_or_else(|| Arc::new(LocalScheduler::new()))
}

/// Makes `scheduler` the default for `compute()` (Dask's `dask.config.set(scheduler=...)`),
/// returning the previous one.
pub fn set_default_scheduler(scheduler: Arc<dyn Scheduler>) -> Option<Arc<dyn Scheduler>> {
    kiln_graph::scheduler::set_default(scheduler)
}

/// Computes one collection, or a tuple or `Vec` of them sharing their common tasks, on the
/// default scheduler (Dask's `dask.compute(a, b)`).
///
/// # Errors
/// The first failing task, with its key and message.
pub fn compute<C: Collection + ?Sized>(collection: &C) -> Result<C::Output, ComputeError> {
    collection.compute_on(default_scheduler().as_ref())
}

/// `.compute()` on the default scheduler for every collection. To run on a given scheduler,
/// call [`Collection::compute_on`] (in the prelude too).
pub trait Compute: Collection {
    /// Runs the computation on the default scheduler and returns the result.
    ///
    /// # Errors
    /// The first failing task, with its key and message.
    fn compute(&self) -> Result<Self::Output, ComputeError> {
        compute(self)
    }
}

impl<C: Collection + ?Sized> Compute for C {}
