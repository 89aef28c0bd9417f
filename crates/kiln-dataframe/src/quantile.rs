//! Quantiles of a series from weighted samples (Dask's approximate `quantile`), and
//! `describe` built on them.
//!
//! Each partition sends up to [`QUANTILE_SAMPLES`] evenly spaced values of its sorted present
//! values, each weighted by the rows it stands for (the sampling `set_index` uses for
//! divisions). A partition with no more values than that sends them all, so the answer is
//! then exact: pandas' linear interpolation between the two nearest ranks. Otherwise a
//! sample stands for at most `rows / QUANTILE_SAMPLES` of its partition's rows, which bounds
//! the rank error: the value returned lies between the true quantiles of ranks within the sum,
//! over partitions, of `rows_i / QUANTILE_SAMPLES` of the asked rank.

use arrow::array::{Array, Float64Array};
use arrow::datatypes::DataType;
use kiln_graph::{Collection, ComputeError, Graph, GraphBuilder, GraphError, Scheduler, TaskId, Value};

use crate::error::{DataFrameError, Result};
use crate::frame::DataFrame;
use crate::lower::{Terminal, lower_frame};
use crate::scalar::Scalar;
use crate::series::Series;

/// Values each partition sends for a quantile.
pub const QUANTILE_SAMPLES: usize = 1000;

/// The quantiles `qs` of a numeric series, as float64 (see [`Series::quantile`]).
#[derive(Clone)]
pub struct Quantiles {
    frame: DataFrame,
    column: String,
    qs: Vec<f64>,
}

impl Collection for Quantiles {
    type Output = Vec<f64>;

    fn add_to(&self, builder: &mut GraphBuilder) -> std::result::Result<Vec<TaskId>, GraphError> {
        let terminal = Terminal::Sample(self.column.clone(), QUANTILE_SAMPLES);
        lower_frame(&self.frame.frame, Some(vec![self.column.clone()]), &move |_| terminal.clone(), builder)
    }

    fn output_count(&self) -> usize {
        self.frame.npartitions()
    }

    fn assemble(
        &self,
        graph: &Graph,
        outputs: &[TaskId],
        values: Vec<Value>,
    ) -> std::result::Result<Vec<f64>, ComputeError> {
        let mut points: Vec<(f64, f64)> = Vec::new();
        for (id, value) in outputs.iter().zip(&values) {
            let sample = crate::reduce::batch_of(graph, *id, value)?;
            let as_f64 = arrow::compute::cast(sample.column(0), &DataType::Float64).map_err(|e| {
                ComputeError::InvalidCollection {
                    collection: "dataframe",
                    cause: kiln_graph::error::SharedError::new(DataFrameError::compute("quantile", e)),
                }
            })?;
            let xs = as_f64.as_any().downcast_ref::<Float64Array>().expect("cast to Float64");
            let ws = sample.column(1).as_any().downcast_ref::<Float64Array>().expect("sample weights are Float64");
            // NaN is missing for quantiles, as in pandas.
            points.extend(
                (0..xs.len()).filter(|&i| xs.is_valid(i) && !xs.value(i).is_nan()).map(|i| (xs.value(i), ws.value(i))),
            );
        }
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        Ok(self.qs.iter().map(|&q| weighted_quantile(&points, q)).collect())
    }
}

/// pandas' linear interpolation at rank `q * (n - 1)` over values standing for `weight` rows
/// each (all weights 1 is the exact case); NaN when there are none.
fn weighted_quantile(points: &[(f64, f64)], q: f64) -> f64 {
    let total: f64 = points.iter().map(|p| p.1).sum();
    if points.is_empty() || total <= 0.0 {
        return f64::NAN;
    }
    let rank = q * (total - 1.0);
    // Sample i covers ranks [start_i, start_i + w_i); its value sits at the first of them.
    let mut start = 0.0;
    for (i, &(x, w)) in points.iter().enumerate() {
        let next = start + w;
        if rank < next || i + 1 == points.len() {
            let Some(&(after, _)) = points.get(i + 1) else { return x };
            // Between this sample's rank and the next one's, linearly.
            let within = ((rank - start) / w).clamp(0.0, 1.0);
            return if within == 0.0 { x } else { x + (after - x) * within };
        }
        start = next;
    }
    points[points.len() - 1].0
}

impl Series {
    /// The quantiles `qs` (each in `[0, 1]`) of this numeric series as float64, missing values
    /// and NaN left out (pandas' `quantile`, linear interpolation): exact when no partition has
    /// more than [`QUANTILE_SAMPLES`] present values, approximate beyond (the bound is in the
    /// module's documentation). NaN for a series with no values.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use kiln_dataframe::DataFrame;
    /// use kiln_dataframe::arrow::array::{Float64Array, RecordBatch};
    /// use kiln_graph::Collection;
    /// let x = Float64Array::from(vec![Some(4.0), None, Some(1.0), Some(3.0), Some(2.0)]);
    /// let frame = DataFrame::from_batch(RecordBatch::try_from_iter([("x", Arc::new(x) as _)]).unwrap(), 2).unwrap();
    /// let q = frame.col("x").quantile(&[0.0, 0.5, 0.9]).unwrap();
    /// assert_eq!(q.compute_on(&kiln_local::LocalScheduler::new()).unwrap(), vec![1.0, 2.5, 3.7]);
    /// ```
    ///
    /// # Errors
    /// A `q` outside `[0, 1]`, a series that is not numeric, or the error the series carries.
    pub fn quantile(&self, qs: &[f64]) -> Result<Quantiles> {
        if let Some(q) = qs.iter().find(|q| !(0.0..=1.0).contains(*q)) {
            return Err(DataFrameError::InvalidArgument(format!("quantile {q} is not between 0 and 1")));
        }
        let dtype = self.dtype()?;
        if !dtype.is_numeric() {
            return Err(DataFrameError::InvalidArgument(format!(
                "quantile: {} has type {dtype}, not a number",
                self.name()
            )));
        }
        let frame = self.to_frame()?;
        Ok(Quantiles { column: self.name(), frame, qs: qs.to_vec() })
    }

    /// pandas' `describe()` of a numeric series: count, mean, std, min, 25%, 50%, 75%, max,
    /// as `(statistic, value)` pairs (the quartiles as [`Series::quantile`] computes them).
    ///
    /// # Errors
    /// A series that is not numeric, or a failing computation.
    pub fn describe(&self, scheduler: &dyn Scheduler) -> Result<Vec<(String, f64)>> {
        let failed = |e: ComputeError| DataFrameError::compute("describe", e);
        let quartiles = self.quantile(&[0.25, 0.5, 0.75])?.compute_on(scheduler).map_err(failed)?;
        let as_f64 = |s: Scalar| match s {
            Scalar::Int(v) => v as f64,
            Scalar::Float(v) => v,
            _ => f64::NAN,
        };
        let mut out = Vec::with_capacity(8);
        for (name, reduction) in [("count", self.count()), ("mean", self.mean()), ("std", self.std())] {
            out.push((name.to_string(), as_f64(reduction.compute_on(scheduler).map_err(failed)?)));
        }
        out.push(("min".to_string(), as_f64(self.min().compute_on(scheduler).map_err(failed)?)));
        for (name, q) in ["25%", "50%", "75%"].iter().zip(&quartiles) {
            out.push((name.to_string(), *q));
        }
        out.push(("max".to_string(), as_f64(self.max().compute_on(scheduler).map_err(failed)?)));
        Ok(out)
    }
}
