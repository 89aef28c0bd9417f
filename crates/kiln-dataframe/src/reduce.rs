//! The collections that compute something other than a whole frame: reductions to one value,
//! the length, the first rows, files written; and the `Collection` impls of `DataFrame` and
//! `Series`.

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::SchemaRef;
use kiln_graph::{Collection, ComputeError, Graph, GraphBuilder, GraphError, TaskId, Value};

use crate::agg::AggFunc;
use crate::error::{DataFrameError, Result};
use crate::frame::DataFrame;
use crate::groupby::{Agg, DEFAULT_SPLIT_EVERY, GroupBy};
use crate::lower::{Terminal, lower_frame};
use crate::plan::Step;
use crate::scalar::Scalar;
use crate::series::Series;

fn invalid(e: &DataFrameError) -> GraphError {
    GraphError::invalid("dataframe", e.clone())
}

fn result_error(graph: &Graph, id: TaskId, expected: &'static str, found: &'static str) -> ComputeError {
    ComputeError::ResultType { key: graph.key(id).clone(), expected, found }
}

pub(crate) fn batch_of<'a>(
    graph: &Graph,
    id: TaskId,
    value: &'a Value,
) -> std::result::Result<&'a RecordBatch, ComputeError> {
    value.downcast_ref::<RecordBatch>().map_err(|m| result_error(graph, id, m.expected, m.found))
}

/// The rows every partition's write task reports, summed (`to_csv`, `to_parquet`).
fn rows_written(graph: &Graph, outputs: &[TaskId], values: &[Value]) -> std::result::Result<u64, ComputeError> {
    let mut total = 0;
    for (id, value) in outputs.iter().zip(values) {
        total += value.downcast_ref::<u64>().map_err(|m| result_error(graph, *id, m.expected, m.found))?;
    }
    Ok(total)
}

/// Partitions concatenated into one batch with the frame's schema.
fn concat(
    schema: &SchemaRef,
    graph: &Graph,
    outputs: &[TaskId],
    values: &[Value],
) -> std::result::Result<RecordBatch, ComputeError> {
    let mut parts = Vec::with_capacity(values.len());
    for (id, value) in outputs.iter().zip(values) {
        let batch = batch_of(graph, *id, value)?;
        parts.push(RecordBatch::try_new(schema.clone(), batch.columns().to_vec()).map_err(|e| {
            ComputeError::InvalidCollection {
                collection: "dataframe",
                cause: kiln_graph::error::SharedError::new(DataFrameError::compute(
                    format!("partition {}", graph.key(*id)),
                    e,
                )),
            }
        })?);
    }
    arrow::compute::concat_batches(schema, &parts).map_err(|e| ComputeError::InvalidCollection {
        collection: "dataframe",
        cause: kiln_graph::error::SharedError::new(DataFrameError::compute("concatenating partitions", e)),
    })
}

impl Collection for DataFrame {
    type Output = RecordBatch;

    fn add_to(&self, builder: &mut GraphBuilder) -> std::result::Result<Vec<TaskId>, GraphError> {
        lower_frame(&self.frame, None, &|_| Terminal::Batch, builder)
    }

    fn output_count(&self) -> usize {
        self.npartitions()
    }

    fn assemble(
        &self,
        graph: &Graph,
        outputs: &[TaskId],
        values: Vec<Value>,
    ) -> std::result::Result<RecordBatch, ComputeError> {
        concat(&self.frame.schema, graph, outputs, &values)
    }
}

impl Series {
    /// The series as a one-column frame.
    ///
    /// # Errors
    /// The error the series carries.
    pub fn to_frame(&self) -> Result<DataFrame> {
        self.check()?;
        let frame = DataFrame { frame: self.frame.clone() };
        let name = self.name();
        let dtype = self.dtype()?;
        let schema =
            std::sync::Arc::new(arrow::datatypes::Schema::new(vec![arrow::datatypes::Field::new(&name, dtype, true)]));
        Ok(frame.with_step(Step::Project(vec![(name, self.expr.clone())]), schema))
    }
}

impl Collection for Series {
    type Output = ArrayRef;

    fn add_to(&self, builder: &mut GraphBuilder) -> std::result::Result<Vec<TaskId>, GraphError> {
        self.to_frame().map_err(|e| invalid(&e))?.add_to(builder)
    }

    fn output_count(&self) -> usize {
        self.frame.source.npartitions()
    }

    fn assemble(
        &self,
        graph: &Graph,
        outputs: &[TaskId],
        values: Vec<Value>,
    ) -> std::result::Result<ArrayRef, ComputeError> {
        let frame = self.to_frame().map_err(|e| ComputeError::InvalidCollection {
            collection: "dataframe",
            cause: kiln_graph::error::SharedError::new(e),
        })?;
        Ok(frame.assemble(graph, outputs, values)?.column(0).clone())
    }
}

/// A reduction of a series to one value (`df.col("x").sum()`), computed as a tree.
#[derive(Clone)]
pub struct Reduction {
    series: Series,
    func: AggFunc,
    frame: Result<DataFrame>,
}

impl Reduction {
    pub(crate) fn of(series: &Series, func: AggFunc) -> Reduction {
        Reduction::with_split_every(series, func, DEFAULT_SPLIT_EVERY)
    }

    fn with_split_every(series: &Series, func: AggFunc, split_every: usize) -> Reduction {
        let frame = series.check().and_then(|()| {
            let group = GroupBy::new(series.frame.clone(), Vec::new())?.split_every(split_every);
            group.agg([Agg::of(func, series).alias("value")])
        });
        Reduction { series: series.clone(), func, frame }
    }

    /// The same reduction combining `split_every` partial results per task (default 8).
    pub fn split_every(&self, split_every: usize) -> Reduction {
        Reduction::with_split_every(&self.series, self.func, split_every)
    }

    /// Ok when the reduction is valid, else its error (a sum of strings, ...).
    ///
    /// # Errors
    /// The carried error.
    pub fn check(&self) -> Result<()> {
        self.frame.as_ref().map(|_| ()).map_err(Clone::clone)
    }

    /// The one-row frame holding the value (to combine with other frames' plans).
    ///
    /// # Errors
    /// The carried error.
    pub fn to_frame(&self) -> Result<DataFrame> {
        self.frame.clone()
    }
}

impl Collection for Reduction {
    type Output = Scalar;

    fn add_to(&self, builder: &mut GraphBuilder) -> std::result::Result<Vec<TaskId>, GraphError> {
        self.frame.as_ref().map_err(invalid)?.add_to(builder)
    }

    fn output_count(&self) -> usize {
        1
    }

    fn assemble(
        &self,
        graph: &Graph,
        outputs: &[TaskId],
        values: Vec<Value>,
    ) -> std::result::Result<Scalar, ComputeError> {
        let (Some(id), Some(value)) = (outputs.first(), values.first()) else {
            return Err(ComputeError::Internal("a reduction produced no value".into()));
        };
        let batch = batch_of(graph, *id, value)?;
        Scalar::from_array(batch.column(0).as_ref(), 0).map_err(|e| ComputeError::InvalidCollection {
            collection: "dataframe",
            cause: kiln_graph::error::SharedError::new(e),
        })
    }
}

/// The distinct values of a series in order of first appearance ([`Series::unique`]),
/// computed as a tree of `unique` partial states.
#[derive(Clone)]
pub struct Unique {
    frame: Result<DataFrame>,
}

impl Unique {
    pub(crate) fn of(series: &Series) -> Unique {
        Unique { frame: Reduction::of(series, AggFunc::Unique).frame }
    }

    /// Ok when the series is valid and its values can be compared, else the error.
    ///
    /// # Errors
    /// The carried error.
    pub fn check(&self) -> Result<()> {
        self.frame.as_ref().map(|_| ()).map_err(Clone::clone)
    }
}

impl Collection for Unique {
    type Output = ArrayRef;

    fn add_to(&self, builder: &mut GraphBuilder) -> std::result::Result<Vec<TaskId>, GraphError> {
        self.frame.as_ref().map_err(invalid)?.add_to(builder)
    }

    fn output_count(&self) -> usize {
        1
    }

    fn assemble(
        &self,
        graph: &Graph,
        outputs: &[TaskId],
        values: Vec<Value>,
    ) -> std::result::Result<ArrayRef, ComputeError> {
        let (Some(id), Some(value)) = (outputs.first(), values.first()) else {
            return Err(ComputeError::Internal("unique produced no value".into()));
        };
        let batch = batch_of(graph, *id, value)?;
        match arrow::array::AsArray::as_list_opt::<i32>(batch.column(0).as_ref()) {
            Some(lists) if arrow::array::Array::len(lists) == 1 => Ok(lists.value(0)),
            _ => Err(ComputeError::Internal("unique produced no list of values".into())),
        }
    }
}

/// The number of rows of a frame (`len(df)`), counted per partition and summed as a tree.
#[derive(Clone)]
pub struct Length {
    frame: Result<DataFrame>,
}

impl Length {
    pub(crate) fn failed(error: DataFrameError) -> Length {
        Length { frame: Err(error) }
    }
}

impl Collection for Length {
    type Output = usize;

    fn add_to(&self, builder: &mut GraphBuilder) -> std::result::Result<Vec<TaskId>, GraphError> {
        self.frame.as_ref().map_err(invalid)?.add_to(builder)
    }

    fn output_count(&self) -> usize {
        1
    }

    fn assemble(
        &self,
        graph: &Graph,
        outputs: &[TaskId],
        values: Vec<Value>,
    ) -> std::result::Result<usize, ComputeError> {
        let (Some(id), Some(value)) = (outputs.first(), values.first()) else {
            return Err(ComputeError::Internal("len produced no value".into()));
        };
        let batch = batch_of(graph, *id, value)?;
        match Scalar::from_array(batch.column(0).as_ref(), 0) {
            Ok(Scalar::Int(n)) => Ok(usize::try_from(n).unwrap_or(0)),
            _ => Err(ComputeError::Internal("len produced a non-integer".into())),
        }
    }
}

/// The first rows of a frame, reading only its first partitions (Dask's `head`).
#[derive(Clone)]
pub struct Head {
    frame: DataFrame,
    n: usize,
    npartitions: usize,
}

impl Collection for Head {
    type Output = RecordBatch;

    fn add_to(&self, builder: &mut GraphBuilder) -> std::result::Result<Vec<TaskId>, GraphError> {
        let n = self.n;
        let all = lower_frame(&self.frame.frame, None, &|_| Terminal::Head(n), builder)?;
        // Every partition's task is described; only the first ones are outputs, and culling
        // drops the others before anything runs.
        Ok(all.into_iter().take(self.npartitions).collect())
    }

    fn output_count(&self) -> usize {
        self.npartitions
    }

    fn assemble(
        &self,
        graph: &Graph,
        outputs: &[TaskId],
        values: Vec<Value>,
    ) -> std::result::Result<RecordBatch, ComputeError> {
        let all = concat(&self.frame.frame.schema, graph, outputs, &values)?;
        let total = self.frame.npartitions();
        if all.num_rows() < self.n && self.npartitions < total {
            // Dask warns here too: the rows may exist in partitions that were not read.
            tracing::warn!(
                "head: {} rows requested, only {} in the first {} of {total} partitions; head_from(n, npartitions) reads more",
                self.n,
                all.num_rows(),
                self.npartitions
            );
        }
        Ok(all.slice(0, self.n.min(all.num_rows())))
    }
}

/// The `n` rows with the largest or smallest values of a column (see
/// [`DataFrame::nlargest`]): each partition's own `n` best rows, then the best `n` of those.
#[derive(Clone)]
pub struct Extremes {
    /// The frame sorted by `column` within each partition, missing values and NaN last.
    sorted: DataFrame,
    n: usize,
    column: String,
    descending: bool,
}

impl Collection for Extremes {
    type Output = RecordBatch;

    fn add_to(&self, builder: &mut GraphBuilder) -> std::result::Result<Vec<TaskId>, GraphError> {
        let n = self.n;
        lower_frame(&self.sorted.frame, None, &|_| Terminal::Head(n), builder)
    }

    fn output_count(&self) -> usize {
        self.sorted.npartitions()
    }

    fn assemble(
        &self,
        graph: &Graph,
        outputs: &[TaskId],
        values: Vec<Value>,
    ) -> std::result::Result<RecordBatch, ComputeError> {
        // Partitions in order and a stable sort: of equal values, the earliest rows are kept
        // (pandas' `keep="first"`), and the missing rows that fill up to `n` come in row order.
        let all = concat(&self.sorted.frame.schema, graph, outputs, &values)?;
        let sorted = crate::sort::sort_batch(&all, &[(self.column.clone(), self.descending)]).map_err(|e| {
            ComputeError::InvalidCollection { collection: "dataframe", cause: kiln_graph::error::SharedError::new(e) }
        })?;
        Ok(sorted.slice(0, self.n.min(sorted.num_rows())))
    }
}

impl DataFrame {
    /// The `n` rows with the largest values of `column`, largest first (pandas'
    /// `nlargest(n, column)`, `keep="first"`): of equal values the earlier rows are chosen;
    /// missing values and NaN come only after every present value, so they are chosen only when
    /// `n` exceeds the present values, as pandas 3.1 adds them: last, in row order. Each
    /// partition sends only its own best `n` rows; the result is computed, like
    /// [`DataFrame::head`].
    ///
    /// ```
    /// use std::sync::Arc;
    /// use kiln_dataframe::DataFrame;
    /// use kiln_dataframe::arrow::array::{Float64Array, Int64Array, RecordBatch};
    /// use kiln_graph::Collection;
    /// let batch = RecordBatch::try_from_iter([
    ///     ("id", Arc::new(Int64Array::from(vec![0, 1, 2, 3, 4])) as _),
    ///     ("x", Arc::new(Float64Array::from(vec![Some(3.0), Some(f64::NAN), None, Some(7.0), Some(3.0)])) as _),
    /// ])
    /// .unwrap();
    /// let top = DataFrame::from_batch(batch, 3).unwrap().nlargest(2, "x").unwrap();
    /// let top = top.compute_on(&kiln_local::LocalScheduler::new()).unwrap();
    /// let ids = top.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
    /// assert_eq!(ids.values().to_vec(), vec![3, 0]);
    /// ```
    ///
    /// # Errors
    /// A missing column, or one that is not numeric or temporal (pandas refuses those too).
    pub fn nlargest(&self, n: usize, column: &str) -> Result<Extremes> {
        self.extremes(n, column, true)
    }

    /// The `n` rows with the smallest values of `column`, smallest first (pandas'
    /// `nsmallest(n, column)`); as [`DataFrame::nlargest`] otherwise.
    ///
    /// # Errors
    /// A missing column, or one that is not numeric or temporal.
    pub fn nsmallest(&self, n: usize, column: &str) -> Result<Extremes> {
        self.extremes(n, column, false)
    }

    fn extremes(&self, n: usize, column: &str, descending: bool) -> Result<Extremes> {
        let schema = self.schema();
        let field = schema
            .field_with_name(column)
            .map_err(|_| DataFrameError::ColumnNotFound { column: column.to_string(), available: self.columns() })?;
        let data_type = field.data_type();
        if !(data_type.is_numeric() || data_type.is_temporal()) {
            return Err(DataFrameError::InvalidArgument(format!(
                "{}: column {column:?} has type {data_type}; only numbers, dates and times can be ranked",
                if descending { "nlargest" } else { "nsmallest" }
            )));
        }
        // The sort puts missing values and NaN last in either direction, where pandas puts them:
        // a partition's first `n` rows are its best candidates, missing ones included.
        let sorted = self.with_step(Step::Sort(vec![(column.to_string(), descending)]), schema.clone());
        Ok(Extremes { sorted, n, column: column.to_string(), descending })
    }
}

impl Series {
    /// The `n` largest values, largest first, as a one-column frame (pandas'
    /// `Series.nlargest(n)`): ties in row order, missing values last once `n` exceeds the
    /// present ones, as pandas gives.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use kiln_dataframe::DataFrame;
    /// use kiln_dataframe::arrow::array::{AsArray, Float64Array, RecordBatch};
    /// use kiln_dataframe::arrow::datatypes::Float64Type;
    /// use kiln_graph::Collection;
    /// let x = Float64Array::from(vec![Some(3.0), Some(f64::NAN), Some(1.0), Some(7.0), Some(3.0)]);
    /// let df = DataFrame::from_batch(RecordBatch::try_from_iter([("x", Arc::new(x) as _)]).unwrap(), 2).unwrap();
    /// let top = df.col("x").nlargest(2).unwrap().compute_on(&kiln_local::LocalScheduler::new()).unwrap();
    /// // pandas: pd.Series([3, nan, 1, 7, 3]).nlargest(2) -> [7.0, 3.0]
    /// assert_eq!(top.column(0).as_primitive::<Float64Type>().values().to_vec(), vec![7.0, 3.0]);
    /// ```
    ///
    /// # Errors
    /// As [`DataFrame::nlargest`], and the error the series carries.
    pub fn nlargest(&self, n: usize) -> Result<Extremes> {
        self.to_frame()?.nlargest(n, &self.name())
    }

    /// The `n` smallest values, smallest first (pandas' `Series.nsmallest(n)`); as
    /// [`Series::nlargest`] otherwise.
    ///
    /// # Errors
    /// As [`DataFrame::nsmallest`], and the error the series carries.
    pub fn nsmallest(&self, n: usize) -> Result<Extremes> {
        self.to_frame()?.nsmallest(n, &self.name())
    }
}

/// Writing a frame as a directory of Parquet files, `part.0.parquet`, `part.1.parquet`, ...
/// (one per partition); computing it returns the rows written.
#[derive(Clone)]
pub struct ToParquet {
    frame: DataFrame,
    dir: String,
}

impl Collection for ToParquet {
    type Output = u64;

    fn add_to(&self, builder: &mut GraphBuilder) -> std::result::Result<Vec<TaskId>, GraphError> {
        let dir = self.dir.trim_end_matches('/').to_string();
        let stale = crate::io::unreplaced_parquet_files(&dir, self.frame.npartitions());
        if let Some(first) = stale.first() {
            return Err(invalid(&DataFrameError::InvalidArgument(format!(
                "to_parquet: {dir} already holds {first}{} that writing {} partition(s) would not replace, so \
                 reading the directory back would mix their rows in; remove them or write to another directory",
                match stale.len() {
                    1 => String::new(),
                    n => format!(" and {} more Parquet file(s)", n - 1),
                },
                self.frame.npartitions()
            ))));
        }
        lower_frame(&self.frame.frame, None, &|i| Terminal::WriteParquet(format!("{dir}/part.{i}.parquet")), builder)
    }

    fn output_count(&self) -> usize {
        self.frame.npartitions()
    }

    fn assemble(
        &self,
        graph: &Graph,
        outputs: &[TaskId],
        values: Vec<Value>,
    ) -> std::result::Result<u64, ComputeError> {
        rows_written(graph, outputs, &values)
    }
}

/// Writing a frame as CSV files, one per partition (see [`DataFrame::to_csv`]); computing it
/// returns the rows written.
#[derive(Clone)]
pub struct ToCsv {
    frame: DataFrame,
    pattern: String,
}

impl Collection for ToCsv {
    type Output = u64;

    fn add_to(&self, builder: &mut GraphBuilder) -> std::result::Result<Vec<TaskId>, GraphError> {
        let pattern = self.pattern.trim_end_matches('/').to_string();
        if pattern.matches('*').count() > 1 {
            return Err(invalid(&DataFrameError::InvalidArgument(format!(
                "to_csv: {pattern} has more than one '*'; one is replaced by the partition number"
            ))));
        }
        let stale = crate::io::unreplaced_csv_files(&pattern, self.frame.npartitions());
        if let Some(first) = stale.first() {
            return Err(invalid(&DataFrameError::InvalidArgument(format!(
                "to_csv: {first}{} already matches {pattern} and writing {} partition(s) would not replace it, so \
                 reading the files back would mix its rows in; remove it or write elsewhere",
                match stale.len() {
                    1 => String::new(),
                    n => format!(" and {} more file(s)", n - 1),
                },
                self.frame.npartitions()
            ))));
        }
        lower_frame(&self.frame.frame, None, &|i| Terminal::WriteCsv(crate::io::csv_output_path(&pattern, i)), builder)
    }

    fn output_count(&self) -> usize {
        self.frame.npartitions()
    }

    fn assemble(
        &self,
        graph: &Graph,
        outputs: &[TaskId],
        values: Vec<Value>,
    ) -> std::result::Result<u64, ComputeError> {
        rows_written(graph, outputs, &values)
    }
}

impl DataFrame {
    /// Writes every partition as a CSV file when computed (Dask's `to_csv(..., index=False)`):
    /// `pattern`'s one `*` is replaced by the partition number (`out/trips-*.csv` gives
    /// `out/trips-0.csv`, ...), and a pattern without one is a directory of `0.part`,
    /// `1.part`, ...; a name ending in `.gz` is gzipped. Missing directories are made.
    /// The text is pandas': a header, missing values and NaN as empty fields, timestamps as
    /// `2015-01-31 10:00:00`; `read_csv` on the same pattern reads it back.
    ///
    /// Computing fails before anything is written when files already match the pattern that
    /// this write would not replace (from an earlier write of more partitions).
    ///
    /// ```
    /// use kiln_dataframe::{read_csv, CsvOptions, DataFrame};
    /// use kiln_dataframe::arrow::array::{Float64Array, Int64Array, RecordBatch};
    /// use kiln_graph::Collection;
    /// use std::sync::Arc;
    /// let dir = std::env::temp_dir().join(format!("kiln-to-csv-doc-{}", std::process::id()));
    /// let batch = RecordBatch::try_from_iter([
    ///     ("id", Arc::new(Int64Array::from(vec![1, 2, 3])) as _),
    ///     ("x", Arc::new(Float64Array::from(vec![Some(0.5), None, Some(f64::NAN)])) as _),
    /// ])
    /// .unwrap();
    /// let pattern = format!("{}/part-*.csv", dir.display());
    /// let local = kiln_local::LocalScheduler::new();
    /// let rows = DataFrame::from_batch(batch, 2).unwrap().to_csv(&pattern).compute_on(&local).unwrap();
    /// assert_eq!(rows, 3);
    /// // Row 3 is in the second file; its NaN is written as pandas writes it, as nothing.
    /// assert!(std::fs::read_to_string(dir.join("part-1.csv")).unwrap().ends_with("\n3,\n"));
    /// let back = read_csv(&format!("{}/part-*.csv", dir.display()), &CsvOptions::default()).unwrap();
    /// assert_eq!(back.compute_on(&local).unwrap().num_rows(), 3);
    /// std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    pub fn to_csv(&self, pattern: &str) -> ToCsv {
        ToCsv { frame: self.clone(), pattern: pattern.to_string() }
    }
}

impl DataFrame {
    /// The number of rows, as a collection (`len(df)` computes it).
    pub fn len(&self) -> Length {
        let first = self.columns().into_iter().next().unwrap_or_default();
        let frame = GroupBy::new(self.frame.clone(), Vec::new())
            .and_then(|g| g.agg([Agg::of(AggFunc::Size, &self.col(&first))]));
        Length { frame }
    }

    /// The first `n` rows, computing only the first partition (Dask's default; fewer rows
    /// come back when it is shorter, with a warning logged through `tracing`, as Dask warns).
    pub fn head(&self, n: usize) -> Head {
        self.head_from(n, 1)
    }

    /// The first `n` rows taken from the first `npartitions` partitions.
    pub fn head_from(&self, n: usize, npartitions: usize) -> Head {
        Head { frame: self.clone(), n, npartitions: npartitions.clamp(1, self.npartitions()) }
    }

    /// Writes every partition to `dir/part.N.parquet` when computed (the directory is made
    /// when missing).
    ///
    /// Computing fails before anything is written when `dir` already holds Parquet files that
    /// this write would not replace (`part.5.parquet` from an earlier write of more
    /// partitions): reading the directory back would mix their rows in.
    pub fn to_parquet(&self, dir: &str) -> ToParquet {
        ToParquet { frame: self.clone(), dir: dir.to_string() }
    }
}

/// A frame's partitions as separate batches (Dask's `to_delayed()` computed): what each
/// partition holds, e.g. after a shuffle.
#[derive(Clone)]
pub struct Partitions {
    frame: DataFrame,
}

impl Collection for Partitions {
    type Output = Vec<RecordBatch>;

    fn add_to(&self, builder: &mut GraphBuilder) -> std::result::Result<Vec<TaskId>, GraphError> {
        self.frame.add_to(builder)
    }

    fn output_count(&self) -> usize {
        self.frame.npartitions()
    }

    fn assemble(
        &self,
        graph: &Graph,
        outputs: &[TaskId],
        values: Vec<Value>,
    ) -> std::result::Result<Vec<RecordBatch>, ComputeError> {
        outputs
            .iter()
            .zip(&values)
            .map(|(id, value)| concat(&self.frame.frame.schema, graph, &[*id], std::slice::from_ref(value)))
            .collect()
    }
}

impl DataFrame {
    /// The partitions, computed as separate batches.
    pub fn partitions(&self) -> Partitions {
        Partitions { frame: self.clone() }
    }
}
