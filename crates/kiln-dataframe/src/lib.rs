//! kiln's dataframe: a table split into partitions (Apache Arrow record batches), with the
//! pandas/Dask API, computed as task graphs on any kiln scheduler.
//!
//! A [`DataFrame`] is a logical plan (a source of partitions, then row-wise steps), a schema,
//! a number of partitions and, optionally, divisions of an index column. Operations check
//! themselves against the schema when they are built, so a missing column or a type mismatch
//! is a typed [`DataFrameError`] before anything runs. Computing optimizes the plan (only the
//! columns used are read; every row-wise step of a partition runs in one task) and lowers it to
//! tasks whose kernels are portable, so the same plan runs on the local scheduler and on a
//! cluster, where partitions travel as Arrow IPC.
//!
//! | Dask | kiln |
//! |---|---|
//! | `dd.read_csv("data/*.csv", parse_dates=["ts"])` | `read_csv("data/*.csv", &CsvOptions::default().parse_dates(["ts"]))?` |
//! | `dd.read_csv("big.csv", blocksize=2**26)` | `read_csv("big.csv", &CsvOptions::default().blocksize(Some(1 << 26)))?` |
//! | `dd.read_parquet("dir", columns=["a"])` | `read_parquet("dir")?.select(&["a"])?` |
//! | `df[df.a > 1]` | `df.filter(&df.col("a").gt(1))?` |
//! | `df.assign(c=df.a * 2)` | `df.assign("c", &(df.col("a") * 2))?` |
//! | `df.groupby(df.ts.dt.hour).value.mean()` | `df.groupby([df.col("ts").dt().hour()])?.agg([Agg::mean("value")])?` |
//! | `df.passengers.mean().compute()` | `df.col("passengers").mean().compute_on(&scheduler)?` |
//! | `len(df)` | `df.len().compute_on(&scheduler)?` |
//! | `df.trip_distance.resample('h').mean()` | `df.col("trip_distance").resample("h")?.mean()?` |
//! | `df.rolling('2h').sum()` / `df.shift(1)` | `df.rolling("2h")?.sum()?` / `df.shift(1)?` |
//! | `df.to_parquet("out")` | `df.to_parquet("out").compute_on(&scheduler)?` |
//!
//! ```
//! use std::sync::Arc;
//! use arrow::array::{Float64Array, Int64Array, RecordBatch};
//! use arrow::datatypes::{DataType, Field, Schema};
//! use kiln_dataframe::{Agg, DataFrame};
//! use kiln_graph::Collection;
//!
//! let schema = Arc::new(Schema::new(vec![
//!     Field::new("key", DataType::Int64, true),
//!     Field::new("value", DataType::Float64, true),
//! ]));
//! let batch = RecordBatch::try_new(schema, vec![
//!     Arc::new(Int64Array::from(vec![1, 2, 1, 2, 1])),
//!     Arc::new(Float64Array::from(vec![1.0, 10.0, 3.0, 30.0, 5.0])),
//! ]).unwrap();
//! let df = DataFrame::from_batch(batch, 3).unwrap();
//! let means = df.groupby(["key"]).unwrap().agg([Agg::mean("value"), Agg::size()]).unwrap();
//! let out = means.compute_on(&kiln_local::LocalScheduler::new()).unwrap();
//! let value = out.column(1).as_any().downcast_ref::<Float64Array>().unwrap();
//! assert_eq!(value.values(), &[3.0, 20.0]);
//! ```
//!
//! Modules: [`frame`] (the collection and readers), [`series`], [`expr`] (row-wise
//! expressions), [`groupby`], [`agg`] (the aggregation kernels), [`reduce`] (the collections a
//! computation returns), [`io`] (CSV/Parquet), [`storage`] (where files live), [`lower`]
//! (kernels, codec, registration), [`timeseries`] (resample, rolling, shift, diff,
//! repartition to divisions).
#![deny(missing_docs)]

pub mod agg;
#[cfg(feature = "array")]
pub mod array;
#[cfg(feature = "bag")]
pub mod bag;
mod csv_read;
pub mod error;
pub mod expr;
pub mod frame;
pub mod groupby;
pub mod index;
pub mod io;
pub mod join;
pub mod lower;
pub mod map;
pub mod merge;
mod plan;
mod prune;
pub mod quantile;
pub mod reduce;
pub mod scalar;
pub mod series;
pub mod shuffle;
pub mod sort;
pub mod storage;
pub mod timeseries;

pub use agg::AggFunc;
pub use error::DataFrameError;
pub use expr::{BinaryOp, DateField, Expr, Pattern, StrOp, TimeOp};
pub use frame::{DataFrame, read_csv, read_parquet, read_parquet_split_row_groups};
pub use groupby::{Agg, GroupBy, GroupKey, auto_split_out};
pub use io::{CsvOptions, DEFAULT_BLOCKSIZE, PANDAS_NA_VALUES};
pub use join::How;
pub use lower::{ensure_registered, register_portable};
pub use map::{PartitionFn, PartitionLengths, register_map_partitions};
pub use merge::MergeOptions;
pub use plan::Divisions;
pub use quantile::{QUANTILE_SAMPLES, Quantiles};
pub use reduce::{Extremes, Head, Length, Partitions, Reduction, ToCsv, ToParquet, Unique};
pub use scalar::{DType, Scalar};
pub use series::{DateTimeFields, Operand, Series, StringMethods};
pub use timeseries::{Resample, Rolling, Window};

/// Re-exported so users name the same Arrow types as the partitions.
pub use arrow;
