//! Row-group pruning by Parquet statistics: the part of a frame's leading filters that compares
//! source columns with literals (`col op value`, `between`, `isin`, `&`, `|`), pushed into the
//! reader, which skips the row groups whose min/max statistics prove that no row can match.
//!
//! Pruning only skips whole row groups: the filters still run on the rows read, so a statistic
//! that is missing, unreliable or not understood means "read the group", never a wrong answer.
//! The comparisons on statistics are the frame's own expressions evaluated on arrays of
//! per-group minimums and maximums (in the frame's column types), so literals are cast and
//! compared exactly as they are on the rows.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Float64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use parquet::arrow::arrow_reader::ArrowReaderMetadata;
use parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use parquet::basic::Type as PhysicalType;

use crate::expr::{BinaryOp, Expr};
use crate::plan::Step;
use crate::scalar::Scalar;

/// The predicate on source columns that a Parquet reader may prune row groups with, from the
/// frame's steps (oldest first), or `None` when none applies.
///
/// Filters are pushed while every step before them keeps or drops rows one by one (projections,
/// filters, sorts and `loc` ranges): skipping a row group then only removes rows the filter
/// drops anyway. A `drop_duplicates` or a `map_partitions` ends the walk (which row is first depends on the rows
/// before it), and so does any expression that can fail on a row's values (`astype`, integer
/// `%`): the rows of a skipped group must not be needed to raise its error.
pub(crate) fn pushed_predicate(steps: &[Step], source: &Schema) -> Option<Expr> {
    // Each visible column name → the source column it passes through unchanged, if any.
    let mut names: HashMap<String, Option<String>> =
        source.fields().iter().map(|f| (f.name().clone(), Some(f.name().clone()))).collect();
    let mut terms: Vec<Expr> = Vec::new();
    for step in steps {
        match step {
            Step::Project(columns) => {
                if columns.iter().any(|(_, e)| e.fails_on_values()) {
                    break;
                }
                names = columns
                    .iter()
                    .map(|(name, e)| {
                        let origin = match unaliased(e) {
                            Expr::Column(c) => names.get(c).cloned().flatten(),
                            _ => None,
                        };
                        (name.clone(), origin)
                    })
                    .collect();
            }
            Step::Filter(predicate) => {
                if predicate.fails_on_values() {
                    break;
                }
                terms.extend(prunable(predicate, &names));
            }
            Step::Sort(_) | Step::Range { .. } => {}
            // A user function may drop, add or change rows any way it likes.
            Step::DropDuplicates(_) | Step::Map { .. } => break,
        }
    }
    terms.into_iter().reduce(|a, b| Expr::Binary { op: BinaryOp::And, left: Box::new(a), right: Box::new(b) })
}

fn unaliased(e: &Expr) -> &Expr {
    match e {
        Expr::Alias { expr, .. } => unaliased(expr),
        e => e,
    }
}

/// The source column a visible column reads, when it passes one through unchanged.
fn source_column(e: &Expr, names: &HashMap<String, Option<String>>) -> Option<String> {
    match unaliased(e) {
        Expr::Column(c) => names.get(c).cloned().flatten(),
        _ => None,
    }
}

/// The part of `predicate` that statistics can decide, over source columns: every row the
/// predicate keeps satisfies it.
fn prunable(predicate: &Expr, names: &HashMap<String, Option<String>>) -> Option<Expr> {
    let literal = |e: &Expr| match unaliased(e) {
        Expr::Literal(v) if !v.is_null() => Some(v.clone()),
        _ => None,
    };
    match unaliased(predicate) {
        Expr::Binary { op: BinaryOp::And, left, right } => match (prunable(left, names), prunable(right, names)) {
            (Some(l), Some(r)) => Some(Expr::Binary { op: BinaryOp::And, left: Box::new(l), right: Box::new(r) }),
            (one, other) => one.or(other),
        },
        Expr::Binary { op: BinaryOp::Or, left, right } => {
            let (l, r) = (prunable(left, names)?, prunable(right, names)?);
            Some(Expr::Binary { op: BinaryOp::Or, left: Box::new(l), right: Box::new(r) })
        }
        Expr::Binary { op, left, right } => {
            let (column, value, op) = match (source_column(left, names), literal(right)) {
                (Some(c), Some(v)) => (c, v, *op),
                _ => (source_column(right, names)?, literal(left)?, op.flipped()?),
            };
            matches!(op, BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge | BinaryOp::Eq).then(|| {
                Expr::Binary { op, left: Box::new(Expr::Column(column)), right: Box::new(Expr::Literal(value)) }
            })
        }
        Expr::Between { expr, low, high } if !low.is_null() && !high.is_null() => Some(Expr::Between {
            expr: Box::new(Expr::Column(source_column(expr, names)?)),
            low: low.clone(),
            high: high.clone(),
        }),
        Expr::IsIn { expr, values } => Some(Expr::IsIn {
            expr: Box::new(Expr::Column(source_column(expr, names)?)),
            values: values.iter().filter(|v| !v.is_null()).cloned().collect(),
        }),
        _ => None,
    }
}

/// One column's statistics per row group, as the frame's type: a bound is missing (null) where
/// the footer has none, or none that can be trusted.
struct ColumnStats {
    field: Arc<Field>,
    mins: ArrayRef,
    maxes: ArrayRef,
    /// Whether the footer says every row of the group is missing.
    all_null: Vec<bool>,
}

/// Statistics of one file's row groups, read from its footer as needed.
struct FileStats<'a> {
    metadata: &'a ArrowReaderMetadata,
    frame: &'a Schema,
    columns: HashMap<String, Option<ColumnStats>>,
}

impl FileStats<'_> {
    fn groups(&self) -> usize {
        self.metadata.metadata().num_row_groups()
    }

    fn column(&mut self, name: &str) -> Option<&ColumnStats> {
        if !self.columns.contains_key(name) {
            let stats = column_stats(self.metadata, self.frame, name);
            self.columns.insert(name.to_string(), stats);
        }
        self.columns.get(name).and_then(Option::as_ref)
    }
}

/// The row groups of a file that `predicate` (from [`pushed_predicate`]) may keep rows of;
/// `frame` is the frame's schema of the file. A group whose statistics decide nothing is kept.
pub(crate) fn row_groups_to_read(metadata: &ArrowReaderMetadata, frame: &Schema, predicate: &Expr) -> Vec<bool> {
    let mut stats = FileStats { metadata, frame, columns: HashMap::new() };
    may_match(predicate, &mut stats)
}

fn may_match(predicate: &Expr, stats: &mut FileStats) -> Vec<bool> {
    let n = stats.groups();
    let every = vec![true; n];
    let combine = |a: Vec<bool>, b: Vec<bool>, f: fn(bool, bool) -> bool| -> Vec<bool> {
        a.into_iter().zip(b).map(|(x, y)| f(x, y)).collect()
    };
    match predicate {
        Expr::Binary { op: BinaryOp::And, left, right } => {
            let l = may_match(left, stats);
            combine(l, may_match(right, stats), |x, y| x && y)
        }
        Expr::Binary { op: BinaryOp::Or, left, right } => {
            let l = may_match(left, stats);
            combine(l, may_match(right, stats), |x, y| x || y)
        }
        Expr::Binary { op, left, right } => match (left.as_ref(), right.as_ref()) {
            (Expr::Column(c), Expr::Literal(v)) => match stats.column(c) {
                Some(s) => compare(s, *op, v).unwrap_or(every),
                None => every,
            },
            _ => every,
        },
        Expr::Between { expr, low, high } => {
            let Expr::Column(c) = expr.as_ref() else { return every };
            let Some(s) = stats.column(c) else { return every };
            let decided = || {
                let above = holds(s, BinaryOp::Ge, low, &s.maxes)?;
                let below = holds(s, BinaryOp::Le, high, &s.mins)?;
                Some(live(s, above.into_iter().zip(below).map(|(x, y)| x && y).collect()))
            };
            decided().unwrap_or(every)
        }
        Expr::IsIn { expr, values } => {
            let Expr::Column(c) = expr.as_ref() else { return every };
            let Some(s) = stats.column(c) else { return every };
            // No value (or only missing ones) matches no row.
            let mut any = vec![false; n];
            for v in values {
                let Some(equal) = compare(s, BinaryOp::Eq, v) else { return every };
                any = any.into_iter().zip(equal).map(|(x, y)| x || y).collect();
            }
            any
        }
        _ => every,
    }
}

/// Which groups may hold a row with `column op value`.
fn compare(s: &ColumnStats, op: BinaryOp, value: &Scalar) -> Option<Vec<bool>> {
    let may = match op {
        BinaryOp::Lt | BinaryOp::Le => holds(s, op, value, &s.mins)?,
        BinaryOp::Gt | BinaryOp::Ge => holds(s, op, value, &s.maxes)?,
        BinaryOp::Eq => {
            let low = holds(s, BinaryOp::Le, value, &s.mins)?;
            let high = holds(s, BinaryOp::Ge, value, &s.maxes)?;
            low.into_iter().zip(high).map(|(a, b)| a && b).collect()
        }
        // `!=` keeps missing values and NaN (which float statistics leave out): not decided here.
        _ => return None,
    };
    Some(live(s, may))
}

/// Groups whose rows are all missing match no comparison.
fn live(s: &ColumnStats, may: Vec<bool>) -> Vec<bool> {
    may.into_iter().zip(&s.all_null).map(|(m, all_null)| m && !all_null).collect()
}

/// Per group: whether `bound op value` holds, or the bound is unknown (null).
fn holds(s: &ColumnStats, op: BinaryOp, value: &Scalar, bounds: &ArrayRef) -> Option<Vec<bool>> {
    let schema = Arc::new(Schema::new(vec![s.field.clone()]));
    let batch = RecordBatch::try_new(schema, vec![bounds.clone()]).ok()?;
    let test = Expr::Binary {
        op,
        left: Box::new(Expr::Column(s.field.name().clone())),
        right: Box::new(Expr::Literal(value.clone())),
    };
    let result = test.evaluate(&batch).ok()?;
    let result = result.as_boolean_opt()?;
    Some((0..bounds.len()).map(|i| bounds.is_null(i) || (result.is_valid(i) && result.value(i))).collect())
}

/// A column's usable statistics in one file, or `None` when the footer has none that can be
/// used (a nested or unknown column, a type the statistics do not convert to).
fn column_stats(metadata: &ArrowReaderMetadata, frame: &Schema, name: &str) -> Option<ColumnStats> {
    let frame_type = frame.field_with_name(name).ok()?.data_type().clone();
    let parquet = metadata.metadata();
    let file = parquet.file_metadata();
    let converter = StatisticsConverter::try_new(name, metadata.schema(), file.schema_descr())
        .ok()?
        .with_column_orders(file.column_orders().map(Vec::as_slice));
    let leaf = converter.parquet_column_index()?;
    let byte_array = matches!(
        file.schema_descr().column(leaf).physical_type(),
        PhysicalType::BYTE_ARRAY | PhysicalType::FIXED_LEN_BYTE_ARRAY
    );
    let groups = parquet.row_groups();
    let (mut min_ok, mut max_ok, mut all_null) = (Vec::new(), Vec::new(), Vec::new());
    for group in groups {
        let stats = group.column(leaf).statistics();
        // The deprecated min/max fields were compared as signed bytes by old writers, wrong
        // for text and unsigned integers: such bounds are not used.
        let trusted = stats.filter(|s| !s.is_min_max_deprecated());
        // A truncated minimum is a prefix of the true one, still a lower bound; a truncated
        // maximum is only an upper bound if the writer rounded it up, which is not promised.
        min_ok.push(trusted.is_some_and(|s| s.min_is_exact() || byte_array));
        max_ok.push(trusted.is_some_and(|s| s.max_is_exact() || !byte_array));
        all_null.push(
            stats
                .and_then(|s| s.null_count_opt())
                .is_some_and(|nulls| u64::try_from(group.num_rows()).is_ok_and(|rows| nulls == rows)),
        );
    }
    let bounds = |array: ArrayRef, ok: &[bool], is_min: bool| -> Option<ArrayRef> {
        let array = arrow::compute::cast(&array, &frame_type).ok()?;
        let untrusted = BooleanArray::from(ok.iter().map(|ok| !ok).collect::<Vec<_>>());
        let array = arrow::compute::nullif(&array, &untrusted).ok()?;
        if !frame_type.is_floating() {
            return Some(array);
        }
        // Float bounds as float64 (every float column meets a literal as float64), a NaN bound
        // unknown, and a zero bound of the sign that bounds both zeros (Parquet's rule: readers
        // must not trust the sign of a zero bound).
        let wide = arrow::compute::cast(&array, &DataType::Float64).ok()?;
        let wide = wide.as_primitive::<arrow::datatypes::Float64Type>();
        let fixed: Float64Array = wide
            .iter()
            .map(|v| match v {
                Some(v) if v.is_nan() => None,
                // A float pattern compares with `==`: it matches -0.0 too.
                Some(0.0) => Some(if is_min { -0.0 } else { 0.0 }),
                v => v,
            })
            .collect();
        Some(Arc::new(fixed))
    };
    let mins = bounds(converter.row_group_mins(groups.iter()).ok()?, &min_ok, true)?;
    let maxes = bounds(converter.row_group_maxes(groups.iter()).ok()?, &max_ok, false)?;
    let field = Arc::new(Field::new(name, mins.data_type().clone(), true));
    Some(ColumnStats { field, mins, maxes, all_null })
}

/// What a file's footer says of one column's values, for divisions.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum FileBounds {
    /// The file has no rows.
    Empty,
    /// Every value lies in `[min, max]`, both exact, and none is missing.
    Range(Scalar, Scalar),
    /// The footer does not say (missing, inexact or untrusted statistics, missing values or
    /// NaN that may be there, a file of another schema, a footer that does not read).
    Unknown,
}

/// The exact smallest and largest value of `column` in the Parquet file at `path`, from its
/// row groups' statistics, when every row group has them exactly and the column has no
/// missing value; `schema` is the dataset's frame schema, which the file must have.
pub(crate) fn file_bounds(path: &str, schema: &Schema, column: &str) -> FileBounds {
    let Ok((_, metadata)) = crate::io::parquet_footer(path) else { return FileBounds::Unknown };
    if crate::io::frame_schema(metadata.schema()).fields() != schema.fields() {
        return FileBounds::Unknown;
    }
    let parquet = metadata.metadata();
    if parquet.row_groups().iter().all(|g| g.num_rows() == 0) {
        return FileBounds::Empty;
    }
    let Some(stats) = column_stats(&metadata, schema, column) else { return FileBounds::Unknown };
    let Ok(leaf) = StatisticsConverter::try_new(column, metadata.schema(), parquet.file_metadata().schema_descr())
        .map(|c| c.parquet_column_index())
    else {
        return FileBounds::Unknown;
    };
    let Some(leaf) = leaf else { return FileBounds::Unknown };
    // Float statistics leave NaN out and may not say how many there are, and the sign of a
    // zero bound is not kept: float indexes are scanned.
    if schema.field_with_name(column).is_ok_and(|f| f.data_type().is_floating()) {
        return FileBounds::Unknown;
    }
    let mut bounds: Option<(Scalar, Scalar)> = None;
    for (i, group) in parquet.row_groups().iter().enumerate() {
        if group.num_rows() == 0 {
            continue;
        }
        let Some(s) = group.column(leaf).statistics() else { return FileBounds::Unknown };
        // Divisions are values of the index, so only exact bounds do; a missing value makes
        // `sorted=true` fail, which the scan reports.
        let exact = s.min_is_exact() && s.max_is_exact() && !s.is_min_max_deprecated();
        let no_missing = s.null_count_opt() == Some(0);
        if !exact || !no_missing || stats.mins.is_null(i) || stats.maxes.is_null(i) {
            return FileBounds::Unknown;
        }
        let (Ok(low), Ok(high)) =
            (Scalar::from_array(stats.mins.as_ref(), i), Scalar::from_array(stats.maxes.as_ref(), i))
        else {
            return FileBounds::Unknown;
        };
        bounds = Some(match bounds {
            None => (low, high),
            Some((lo, hi)) => {
                let (Some(a), Some(b)) = (crate::index::compare(&low, &lo), crate::index::compare(&high, &hi)) else {
                    return FileBounds::Unknown;
                };
                (if a.is_lt() { low } else { lo }, if b.is_gt() { high } else { hi })
            }
        });
    }
    match bounds {
        Some((low, high)) => FileBounds::Range(low, high),
        None => FileBounds::Empty,
    }
}
