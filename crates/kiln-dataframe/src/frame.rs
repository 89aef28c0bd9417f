//! `DataFrame`: the user-facing collection, its constructors (readers, in-memory batches) and
//! its row-wise operations. Each operation checks its arguments against the schema and adds one
//! step to the plan; nothing is read or computed until the frame is computed.

use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, RecordBatch};
use arrow::datatypes::{Field, Schema, SchemaRef};
use kiln_graph::unique_token;

use crate::error::{DataFrameError, Result};
use crate::expr::Expr;
use crate::groupby::{Agg, GroupBy, GroupKey};
use crate::io::{
    CsvOptions, csv_parts, infer_csv_schema, list_files, list_parquet_files, parquet_schema, plain_schema,
};
use crate::plan::{Divisions, Frame, Source, Step, Steps};
use crate::scalar::Scalar;
use crate::series::Series;

/// A lazily computed table split into partitions (Arrow record batches), like Dask's
/// `dask.dataframe.DataFrame`.
///
/// ```
/// use std::sync::Arc;
/// use arrow::array::{Int64Array, RecordBatch};
/// use arrow::datatypes::{DataType, Field, Schema};
/// use kiln_dataframe::DataFrame;
/// use kiln_graph::Collection;
///
/// let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)]));
/// let batch = RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![1, 2, 3, 4]))]).unwrap();
/// let df = DataFrame::from_batch(batch, 2).unwrap();
/// let big = df.filter(&df.col("x").gt(2)).unwrap();
/// let out = big.compute_on(&kiln_local::LocalScheduler::new()).unwrap();
/// assert_eq!(out.num_rows(), 2);
/// ```
#[derive(Clone)]
pub struct DataFrame {
    pub(crate) frame: Arc<Frame>,
}

/// Reads a CSV dataset: the files matched by `pattern` (a glob, a directory or a file; `.gz`
/// files are decompressed), one partition per file or, for files larger than
/// `options.blocksize` (64 MB by default, as in Dask), per block of about that many bytes
/// split at line ends. The schema is inferred from the first file's first
/// `options.sample_rows` rows, with `options.dtypes` and `options.parse_dates` applied.
///
/// ```
/// use kiln_dataframe::{read_csv, CsvOptions};
/// use kiln_graph::Collection;
/// let dir = std::env::temp_dir().join(format!("kiln-read-csv-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let path = dir.join("x.csv");
/// std::fs::write(&path, "x,y\n1,a\n2,b\n3,c\n4,d\n").unwrap();
/// let path = path.to_string_lossy();
/// assert_eq!(read_csv(&path, &CsvOptions::default()).unwrap().npartitions(), 1);
/// let split = read_csv(&path, &CsvOptions::default().blocksize(Some(8))).unwrap();
/// assert_eq!(split.npartitions(), 2); // 20 bytes: 2 blocks of 10, each from a line start
/// assert_eq!(split.compute_on(&kiln_local::LocalScheduler::new()).unwrap().num_rows(), 4);
/// std::fs::remove_dir_all(&dir).unwrap();
/// ```
///
/// # Errors
/// [`DataFrameError::NoFiles`] when nothing matches, [`DataFrameError::Csv`] naming the file
/// when the sample cannot be parsed or the first file is empty (pandas' `EmptyDataError`),
/// [`DataFrameError::ColumnNotFound`] for an override naming no column, a storage error when
/// a file's size cannot be read for splitting.
pub fn read_csv(pattern: &str, options: &CsvOptions) -> Result<DataFrame> {
    let files = list_files(pattern)?;
    let schema = infer_csv_schema(&files, options)?;
    let parts = csv_parts(&files, options)?;
    Ok(DataFrame::from_source(Source::Csv { files, parts, schema, options: options.clone() }))
}

/// Reads a Parquet dataset: one partition per file matched by `pattern` (a glob, a directory
/// or a file), skipping names that start with `_` or `.` (`_SUCCESS`, checksum files) as
/// pyarrow does. Only the columns the computation uses are read (`select` right after reading
/// is Dask's `columns=`).
///
/// # Errors
/// [`DataFrameError::NoFiles`] when nothing matches, [`DataFrameError::Parquet`] naming a file
/// that is not Parquet.
pub fn read_parquet(pattern: &str) -> Result<DataFrame> {
    let files = list_parquet_files(pattern)?;
    let (schema, column_bytes) = parquet_schema(&files[0])?;
    Ok(DataFrame::from_source(Source::Parquet { files, row_groups: None, schema, column_bytes }))
}

/// [`read_parquet`] with one partition per row group instead of per file (Dask's
/// `split_row_groups=True`), for files of many large row groups: every footer is read now to
/// count them. A file without row groups still gives one (empty) partition, so its schema is
/// checked when read.
///
/// # Errors
/// Those of [`read_parquet`], and [`DataFrameError::Parquet`] naming a file whose footer does
/// not read.
pub fn read_parquet_split_row_groups(pattern: &str) -> Result<DataFrame> {
    let files = list_parquet_files(pattern)?;
    let (schema, column_bytes) = parquet_schema(&files[0])?;
    let mut row_groups = Vec::new();
    for (i, file) in files.iter().enumerate() {
        let groups = crate::io::parquet_row_groups(file)?;
        row_groups.extend((0..groups.max(1)).map(|g| (i, g)));
    }
    Ok(DataFrame::from_source(Source::Parquet { files, row_groups: Some(row_groups), schema, column_bytes }))
}

impl DataFrame {
    pub(crate) fn from_source(source: Source) -> DataFrame {
        let schema = source.schema();
        DataFrame {
            frame: Arc::new(Frame {
                source: Arc::new(source),
                token: unique_token(),
                steps: Steps::default(),
                schema,
                divisions: Divisions::Unknown,
                index: None,
                partitioning: None,
            }),
        }
    }

    /// A frame whose partitions are these batches (Dask's `from_delayed` of materialized
    /// pieces).
    ///
    /// # Errors
    /// [`DataFrameError::InvalidArgument`] for no batches, [`DataFrameError::SchemaMismatch`]
    /// when their schemas differ.
    pub fn from_batches(batches: Vec<RecordBatch>) -> Result<DataFrame> {
        let Some(first) = batches.first() else {
            return Err(DataFrameError::InvalidArgument("from_batches needs at least one batch".into()));
        };
        let schema = plain_schema(&first.schema());
        let mut partitions = Vec::with_capacity(batches.len());
        for (i, batch) in batches.iter().enumerate() {
            let this = plain_schema(&batch.schema());
            if this.fields() != schema.fields() {
                return Err(DataFrameError::SchemaMismatch {
                    path: format!("batch {i}"),
                    expected: schema.to_string(),
                    found: this.to_string(),
                });
            }
            partitions.push(
                RecordBatch::try_new(schema.clone(), batch.columns().to_vec())
                    .map_err(|e| DataFrameError::compute("from_batches", e))?,
            );
        }
        Ok(DataFrame::from_source(Source::Batches { partitions, schema }))
    }

    /// A frame of batches sorted by the column `index` (within and across batches, none
    /// empty, no missing index value), with its divisions known: each partition's first index
    /// value, then the last partition's last (Dask's `from_pandas(..., sort=True)`).
    ///
    /// # Errors
    /// As [`DataFrame::from_batches`]; [`DataFrameError::ColumnNotFound`] for a missing index
    /// column; [`DataFrameError::InvalidArgument`] naming the index and the partition when the
    /// rows are not sorted, a partition is empty or an index value is missing.
    pub fn from_sorted_batches(batches: Vec<RecordBatch>, index: &str) -> Result<DataFrame> {
        let df = DataFrame::from_batches(batches)?;
        Expr::Column(index.to_string()).data_type(&df.frame.schema)?;
        let Source::Batches { partitions, .. } = df.frame.source.as_ref() else {
            return Err(DataFrameError::InvalidArgument("from_sorted_batches: not an in-memory frame".into()));
        };
        let unsorted = |what: String| DataFrameError::InvalidArgument(format!("index {index:?}: {what}"));
        let mut divisions = Vec::with_capacity(partitions.len() + 1);
        let mut previous_last: Option<arrow::row::OwnedRow> = None;
        for (i, batch) in partitions.iter().enumerate() {
            let column =
                batch.column_by_name(index).cloned().ok_or_else(|| unsorted(format!("missing in partition {i}")))?;
            if column.is_empty() {
                return Err(unsorted(format!("partition {i} is empty")));
            }
            if column.null_count() > 0 {
                return Err(unsorted(format!("partition {i} has missing values")));
            }
            let converter = arrow::row::RowConverter::new(vec![arrow::row::SortField::new(column.data_type().clone())])
                .map_err(|e| DataFrameError::compute("from_sorted_batches", e))?;
            let rows = converter
                .convert_columns(std::slice::from_ref(&column))
                .map_err(|e| DataFrameError::compute("from_sorted_batches", e))?;
            if let Some(row) = (1..rows.num_rows()).find(|&r| rows.row(r) < rows.row(r - 1)) {
                return Err(unsorted(format!("partition {i} is not sorted at row {row}")));
            }
            if previous_last.as_ref().is_some_and(|last| rows.row(0) < last.row()) {
                return Err(unsorted(format!("partition {i} starts before partition {} ends", i - 1)));
            }
            previous_last = Some(rows.row(rows.num_rows() - 1).owned());
            divisions.push(Scalar::from_array(column.as_ref(), 0)?);
            if i + 1 == partitions.len() {
                divisions.push(Scalar::from_array(column.as_ref(), column.len() - 1)?);
            }
        }
        let frame = Frame {
            source: df.frame.source.clone(),
            token: df.frame.token,
            steps: Steps::default(),
            schema: df.frame.schema.clone(),
            divisions: Divisions::Known(divisions),
            index: Some(index.to_string()),
            partitioning: None,
        };
        Ok(DataFrame { frame: Arc::new(frame) })
    }

    /// One batch split into `npartitions` partitions of nearly equal length (Dask's
    /// `from_pandas(df, npartitions=n)`).
    ///
    /// # Errors
    /// [`DataFrameError::InvalidArgument`] for `npartitions == 0`.
    pub fn from_batch(batch: RecordBatch, npartitions: usize) -> Result<DataFrame> {
        if npartitions == 0 {
            return Err(DataFrameError::InvalidArgument("npartitions must be at least 1".into()));
        }
        let rows = batch.num_rows();
        let pieces = (0..npartitions)
            .map(|i| {
                let (start, end) = (rows * i / npartitions, rows * (i + 1) / npartitions);
                batch.slice(start, end - start)
            })
            .collect();
        DataFrame::from_batches(pieces)
    }

    /// The output schema (every field nullable).
    pub fn schema(&self) -> SchemaRef {
        self.frame.schema.clone()
    }

    /// The column names, in order.
    pub fn columns(&self) -> Vec<String> {
        self.frame.schema.fields().iter().map(|f| f.name().clone()).collect()
    }

    /// How many partitions the frame has.
    pub fn npartitions(&self) -> usize {
        self.frame.source.npartitions()
    }

    /// What is known about the partitions' index boundaries.
    pub fn divisions(&self) -> &Divisions {
        &self.frame.divisions
    }

    /// Whether the divisions are known (Dask's `known_divisions`).
    pub fn known_divisions(&self) -> bool {
        matches!(self.frame.divisions, Divisions::Known(_))
    }

    /// The index column, if the frame has one.
    pub fn index(&self) -> Option<&str> {
        self.frame.index.as_deref()
    }

    /// How many row-wise steps the plan has after its source.
    pub fn plan_steps(&self) -> usize {
        self.frame.steps.len()
    }

    /// The column `name` as a series (pandas' `df["name"]` / `df.name`). A missing column gives
    /// a series carrying [`DataFrameError::ColumnNotFound`], reported by every use.
    pub fn col(&self, name: &str) -> Series {
        Series::new(self.frame.clone(), Expr::Column(name.to_string()))
    }

    /// A new frame: the same source with one more step, and the output schema it gives.
    pub(crate) fn with_step(&self, step: Step, schema: SchemaRef) -> DataFrame {
        let (index, divisions) = match (&self.frame.index, &step) {
            (None, _) => (None, Divisions::Unknown),
            // The index follows its values: kept under the name a column carries them to
            // (a rename), and with no divisions once a column of its name holds other values.
            (Some(index), Step::Project(columns)) => {
                let carried = |(name, e): &&(String, Expr)| matches!(e, Expr::Column(c) if c == index) && name == index;
                let moved = |(_, e): &&(String, Expr)| matches!(e, Expr::Column(c) if c == index);
                match columns.iter().find(carried).or_else(|| columns.iter().find(moved)) {
                    Some((name, _)) => (Some(name.clone()), self.frame.divisions.clone()),
                    None if columns.iter().any(|(name, _)| name == index) => (Some(index.clone()), Divisions::Unknown),
                    None => (None, Divisions::Unknown),
                }
            }
            // map_partitions is trusted to keep each row's index value in its partition.
            (Some(index), _) if schema.field_with_name(index).is_ok() => {
                (Some(index.clone()), self.frame.divisions.clone())
            }
            (Some(_), _) => (None, Divisions::Unknown),
        };
        // Hash partitioning survives a step that keeps every key column as it is.
        let partitioning = self.frame.partitioning.clone().filter(|p| match &step {
            Step::Filter(_) | Step::Sort(_) | Step::DropDuplicates(_) | Step::Range { .. } => true,
            Step::Map { .. } => false,
            Step::Project(columns) => p.keys.fields().iter().all(|k| {
                columns.iter().any(|(name, e)| name == k.name() && matches!(e, Expr::Column(c) if c == k.name()))
            }),
        });
        DataFrame {
            frame: Arc::new(Frame {
                source: self.frame.source.clone(),
                token: self.frame.token,
                steps: self.frame.steps.push(step),
                schema,
                divisions,
                index,
                partitioning,
            }),
        }
    }

    fn project(&self, columns: Vec<(String, Expr)>) -> Result<DataFrame> {
        if columns.is_empty() {
            return Err(DataFrameError::InvalidArgument("a frame needs at least one column".into()));
        }
        let mut fields = Vec::with_capacity(columns.len());
        for (i, (name, expr)) in columns.iter().enumerate() {
            if columns[..i].iter().any(|(other, _)| other == name) {
                return Err(DataFrameError::InvalidArgument(format!("column {name:?} appears twice")));
            }
            fields.push(Field::new(name, expr.data_type(&self.frame.schema)?, true));
        }
        Ok(self.with_step(Step::Project(columns), Arc::new(Schema::new(fields))))
    }

    fn check_columns<S: AsRef<str>>(&self, names: &[S]) -> Result<()> {
        for name in names {
            Expr::Column(name.as_ref().to_string()).data_type(&self.frame.schema)?;
        }
        Ok(())
    }

    /// These columns, in this order (pandas' `df[["a", "b"]]`).
    ///
    /// # Errors
    /// [`DataFrameError::ColumnNotFound`] naming the first missing column.
    pub fn select<S: AsRef<str>>(&self, names: &[S]) -> Result<DataFrame> {
        self.check_columns(names)?;
        self.project(names.iter().map(|n| (n.as_ref().to_string(), Expr::Column(n.as_ref().to_string()))).collect())
    }

    /// The frame with column `name` set to `values` (replacing a column of that name, or
    /// appended), like pandas' `df.assign(name=values)`.
    ///
    /// # Errors
    /// The error `values` carries, or [`DataFrameError::NotAligned`] when it comes from
    /// another frame.
    pub fn assign(&self, name: &str, values: &Series) -> Result<DataFrame> {
        let expr = values.expr_for(&self.frame, "assign")?;
        let mut columns: Vec<(String, Expr)> =
            self.columns().into_iter().map(|c| (c.clone(), Expr::Column(c))).collect();
        match columns.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = expr,
            None => columns.push((name.to_string(), expr)),
        }
        self.project(columns)
    }

    /// The rows where `mask` is true (pandas' `df[mask]`); a missing mask value drops the row.
    ///
    /// # Errors
    /// The error `mask` carries, [`DataFrameError::TypeMismatch`] when it is not boolean,
    /// [`DataFrameError::NotAligned`] when it comes from another frame.
    pub fn filter(&self, mask: &Series) -> Result<DataFrame> {
        let expr = mask.expr_for(&self.frame, "filter")?;
        let dtype = expr.data_type(&self.frame.schema)?;
        if dtype != arrow::datatypes::DataType::Boolean {
            return Err(DataFrameError::TypeMismatch {
                operation: "filter".into(),
                expression: expr.to_string(),
                found: dtype,
                expected: "a boolean mask is needed".into(),
            });
        }
        Ok(self.with_step(Step::Filter(expr), self.frame.schema.clone()))
    }

    /// The frame with columns renamed, `(old, new)` pairs (pandas' `rename(columns=...)`).
    ///
    /// # Errors
    /// [`DataFrameError::ColumnNotFound`] for an old name that does not exist,
    /// [`DataFrameError::InvalidArgument`] when two columns end up with one name.
    pub fn rename(&self, pairs: &[(&str, &str)]) -> Result<DataFrame> {
        self.check_columns(&pairs.iter().map(|(old, _)| *old).collect::<Vec<_>>())?;
        let columns = self
            .columns()
            .into_iter()
            .map(|c| {
                let new = pairs.iter().find(|(old, _)| *old == c).map_or(c.clone(), |(_, new)| new.to_string());
                (new, Expr::Column(c))
            })
            .collect();
        self.project(columns)
    }

    /// The frame without these columns.
    ///
    /// # Errors
    /// [`DataFrameError::ColumnNotFound`] for a name that does not exist;
    /// [`DataFrameError::InvalidArgument`] when no column would be left.
    pub fn drop<S: AsRef<str>>(&self, names: &[S]) -> Result<DataFrame> {
        self.check_columns(names)?;
        let columns = self
            .columns()
            .into_iter()
            .filter(|c| !names.iter().any(|n| n.as_ref() == c))
            .map(|c| (c.clone(), Expr::Column(c)))
            .collect();
        self.project(columns)
    }

    /// The rows with no missing value (NaN included) in any column (pandas' `dropna()`).
    pub fn dropna(&self) -> DataFrame {
        let columns = self.columns();
        self.dropna_subset(&columns).unwrap_or_else(|_| self.clone())
    }

    /// The rows with no missing value in these columns (pandas' `dropna(subset=...)`).
    ///
    /// # Errors
    /// [`DataFrameError::ColumnNotFound`] for a missing column.
    pub fn dropna_subset<S: AsRef<str>>(&self, columns: &[S]) -> Result<DataFrame> {
        self.check_columns(columns)?;
        let present = columns
            .iter()
            .map(|c| Expr::IsNotNull(Box::new(Expr::Column(c.as_ref().to_string()))))
            .reduce(|a, b| Expr::Binary { op: crate::expr::BinaryOp::And, left: Box::new(a), right: Box::new(b) });
        match present {
            Some(predicate) => Ok(self.with_step(Step::Filter(predicate), self.frame.schema.clone())),
            None => Ok(self.clone()),
        }
    }

    /// Groups rows by columns or by series of this frame (`df.groupby(df.ts.dt().hour())`).
    ///
    /// # Errors
    /// [`DataFrameError::ColumnNotFound`] for a missing key column, the error a key series
    /// carries, [`DataFrameError::NotAligned`] for a series of another frame.
    pub fn groupby<K: Into<GroupKey>>(&self, keys: impl IntoIterator<Item = K>) -> Result<GroupBy> {
        GroupBy::new(self.frame.clone(), keys.into_iter().map(Into::into).collect())
    }

    /// Reductions of the whole frame: one row, one column per aggregation (pandas'
    /// `df.agg(...)` with named outputs).
    ///
    /// # Errors
    /// As [`GroupBy::agg`].
    pub fn agg(&self, aggs: impl IntoIterator<Item = Agg>) -> Result<DataFrame> {
        GroupBy::new(self.frame.clone(), Vec::new())?.agg(aggs)
    }

    /// The plan as written and as it will run: projections pushed into the reader, row-wise
    /// steps fused into one task per partition.
    pub fn explain(&self) -> String {
        self.frame.explain(None)
    }
}

impl fmt::Display for DataFrame {
    /// Like Dask's repr: structure only, nothing computed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let divisions = match &self.frame.divisions {
            Divisions::Unknown => "divisions unknown".to_string(),
            Divisions::Known(d) => {
                format!("divisions [{}]", d.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))
            }
        };
        writeln!(f, "kiln DataFrame: npartitions={}, {divisions}", self.npartitions())?;
        if let Some(index) = &self.frame.index {
            writeln!(f, "index: {index}")?;
        }
        let width = self.frame.schema.fields().iter().map(|c| c.name().len()).max().unwrap_or(0).max(6);
        writeln!(f, "{:width$}  dtype", "column")?;
        for field in self.frame.schema.fields() {
            writeln!(f, "{:width$}  {}", field.name(), field.data_type())?;
        }
        write!(f, "plan: {} then {} row-wise step(s)", self.frame.source.label(), self.frame.steps.len())
    }
}

impl fmt::Debug for DataFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
