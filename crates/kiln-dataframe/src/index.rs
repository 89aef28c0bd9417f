//! The index and order across partitions: `set_index` (divisions from sampled quantiles, a
//! range shuffle, a sort within partitions), `sort_values`, `reset_index`, `loc` (pruning
//! partitions by divisions), `repartition`, and the distinct-value operations built on the
//! shuffle (`drop_duplicates`, `nunique`, `value_counts`).
//!
//! Like Dask, `set_index` and `sort_values` compute their divisions when called (a sample of
//! every partition, on the scheduler given), so the frame they return knows its divisions
//! before anything else runs.

use std::cmp::Ordering;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use kiln_graph::{Collection, ComputeError, Graph, GraphBuilder, GraphError, Scheduler, TaskId, Value, unique_token};

use crate::error::{DataFrameError, Result};
use crate::frame::DataFrame;
use crate::groupby::Agg;
use crate::lower::{Terminal, lower_frame};
use crate::plan::{Divisions, Frame, Source, Step, Steps};
use crate::reduce::Length;
use crate::scalar::Scalar;
use crate::series::Series;
use crate::shuffle::DEFAULT_MAX_BRANCH;
use crate::sort::{SerdeBatch, divisions_from_samples};

/// Values sampled per partition to choose divisions.
const SAMPLES_PER_PARTITION: usize = 128;

/// Each partition's batch from a terminal step (samples, bounds), computed eagerly.
struct Gather {
    frame: Arc<Frame>,
    terminal: Terminal,
}

impl Collection for Gather {
    type Output = Vec<RecordBatch>;

    fn add_to(&self, builder: &mut GraphBuilder) -> std::result::Result<Vec<TaskId>, GraphError> {
        let needed = match &self.terminal {
            Terminal::Sample(c, _) | Terminal::Bounds(c) => Some(vec![c.clone()]),
            _ => None,
        };
        let terminal = self.terminal.clone();
        lower_frame(&self.frame, needed, &move |_| terminal.clone(), builder)
    }

    fn output_count(&self) -> usize {
        self.frame.source.npartitions()
    }

    fn assemble(
        &self,
        graph: &Graph,
        outputs: &[TaskId],
        values: Vec<Value>,
    ) -> std::result::Result<Vec<RecordBatch>, ComputeError> {
        outputs
            .iter()
            .zip(values)
            .map(|(id, v)| {
                v.downcast_ref::<RecordBatch>().cloned().map_err(|m| ComputeError::ResultType {
                    key: graph.key(*id).clone(),
                    expected: m.expected,
                    found: m.found,
                })
            })
            .collect()
    }
}

fn gather(frame: &Arc<Frame>, terminal: Terminal, what: &str, scheduler: &dyn Scheduler) -> Result<Vec<RecordBatch>> {
    Gather { frame: frame.clone(), terminal }.compute_on(scheduler).map_err(|e| DataFrameError::compute(what, e))
}

fn scalars(array: &ArrayRef) -> Result<Vec<Scalar>> {
    (0..array.len()).map(|i| Scalar::from_array(array.as_ref(), i)).collect()
}

/// `a` against `b`, compared as `a`'s type (`None` when they cannot be compared).
pub(crate) fn compare(a: &Scalar, b: &Scalar) -> Option<Ordering> {
    if a.is_null() || b.is_null() {
        return None;
    }
    let (x, y) = (a.to_array(), b.to_array());
    let y = if x.data_type() == y.data_type() { y } else { arrow::compute::cast(&y, x.data_type()).ok()? };
    let converter = arrow::row::RowConverter::new(vec![arrow::row::SortField::new(x.data_type().clone())]).ok()?;
    let rx = converter.convert_columns(&[x]).ok()?;
    let ry = converter.convert_columns(&[y]).ok()?;
    Some(rx.row(0).cmp(&ry.row(0)))
}

/// `n + 1` divisions spread evenly over the old ones (each old partition gets its share of
/// the new ones, cut at evenly spaced values), repeats dropped; `None` for divisions that are
/// not all integers, floats or timestamps of one kind.
fn interpolated(old: &[Scalar], n: usize) -> Option<Vec<Scalar>> {
    let m = old.len().checked_sub(1).filter(|&m| m > 0)?;
    let values: Vec<f64> = old
        .iter()
        .map(|d| match d {
            Scalar::Int(v) | Scalar::TimestampNs(v) => Some(*v as f64),
            Scalar::Float(v) => Some(*v),
            _ => None,
        })
        .collect::<Option<_>>()?;
    let make = |v: f64| -> Option<Scalar> {
        match &old[0] {
            Scalar::Int(_) => Some(Scalar::Int(v.round() as i64)),
            Scalar::TimestampNs(_) => Some(Scalar::TimestampNs(v.round() as i64)),
            Scalar::Float(_) => Some(Scalar::Float(v)),
            _ => None,
        }
    };
    if old.iter().any(|d| std::mem::discriminant(d) != std::mem::discriminant(&old[0])) {
        return None;
    }
    let mut out: Vec<Scalar> = Vec::with_capacity(n + 1);
    for k in 0..=n {
        let position = (k * m) as f64 / n as f64;
        let i = (position.floor() as usize).min(m - 1);
        let fraction = position - i as f64;
        let value = if k == n { values[m] } else { values[i] + fraction * (values[i + 1] - values[i]) };
        let scalar = if k == 0 {
            old[0].clone()
        } else if k == n {
            old[m].clone()
        } else {
            make(value)?
        };
        if out.last().is_none_or(|last| compare(last, &scalar) == Some(Ordering::Less)) {
            out.push(scalar);
        }
    }
    (out.len() >= 2).then_some(out)
}

impl DataFrame {
    fn with_source(&self, source: Source, divisions: Divisions, index: Option<String>) -> DataFrame {
        DataFrame {
            frame: Arc::new(Frame {
                source: Arc::new(source),
                token: unique_token(),
                steps: Steps::default(),
                schema: self.frame.schema.clone(),
                divisions,
                index,
                partitioning: None,
            }),
        }
    }

    fn check_column(&self, column: &str) -> Result<()> {
        crate::expr::Expr::Column(column.to_string()).data_type(&self.frame.schema).map(|_| ())
    }

    /// Sorts the frame by `column` across partitions and makes it the index, with known
    /// divisions (Dask's `set_index`): a sample of every partition (computed now, on
    /// `scheduler`) gives `npartitions + 1` divisions at even quantiles, a range shuffle sends
    /// each row to its division's partition, and each partition is sorted. Repeated values can
    /// leave fewer partitions; missing index values go to the end of the last partition.
    ///
    /// # Errors
    /// [`DataFrameError::ColumnNotFound`]; a [`DataFrameError::Compute`] naming the failure of
    /// the sampling computation.
    pub fn set_index(&self, column: &str, scheduler: &dyn Scheduler) -> Result<DataFrame> {
        self.check_column(column)?;
        let sorted = self.range_sorted(column, false, scheduler)?;
        let divisions = match &sorted.frame.source.as_ref() {
            Source::RangeShuffle { .. } => sorted.frame.divisions.clone(),
            _ => Divisions::Unknown,
        };
        let frame = Frame {
            source: sorted.frame.source.clone(),
            token: sorted.frame.token,
            steps: sorted.frame.steps.clone(),
            schema: sorted.frame.schema.clone(),
            divisions,
            index: Some(column.to_string()),
            partitioning: None,
        };
        Ok(DataFrame { frame: Arc::new(frame) })
    }

    /// Makes `column` the index of a frame already sorted by it (Dask's `set_index(...,
    /// sorted=True)`): no data moves; each partition's first and last value (computed now, on
    /// `scheduler`) give the divisions, and the order is checked — within each partition, and
    /// across partitions. Empty partitions are dropped.
    ///
    /// # Errors
    /// [`DataFrameError::ColumnNotFound`]; a [`DataFrameError::Compute`] naming the partition
    /// that is not sorted or has a missing index value; [`DataFrameError::InvalidArgument`] when
    /// a partition starts before the previous one ends, or every partition is empty.
    pub fn set_index_sorted(&self, column: &str, scheduler: &dyn Scheduler) -> Result<DataFrame> {
        self.check_column(column)?;
        if let Some(known) = self.divisions_from_statistics(column) {
            return Ok(known);
        }
        let bounds = gather(&self.frame, Terminal::Bounds(column.to_string()), "set_index(sorted=true)", scheduler)?;
        let mut kept = Vec::new();
        let mut divisions: Vec<Scalar> = Vec::new();
        let mut last: Option<Scalar> = None;
        for (i, b) in bounds.iter().enumerate() {
            if b.num_rows() == 0 {
                continue;
            }
            let ends = scalars(b.column(0))?;
            if let Some(prev) = &last
                && compare(&ends[0], prev) == Some(Ordering::Less)
            {
                return Err(DataFrameError::InvalidArgument(format!(
                    "set_index({column:?}, sorted=true): partition {i} starts at {} before the previous one ends at {prev}",
                    ends[0]
                )));
            }
            kept.push(i);
            divisions.push(ends[0].clone());
            last = Some(ends[1].clone());
        }
        let Some(last) = last else {
            return Err(DataFrameError::InvalidArgument(format!(
                "set_index({column:?}, sorted=true): the frame has no rows"
            )));
        };
        divisions.push(last);
        Ok(self.indexed_by_sorted(column, kept, divisions))
    }

    /// The partitions `kept` (those with rows, in order) with `column` as the index and
    /// `divisions` known, for a frame already sorted by it: nothing moves, and a subset source
    /// only when some partition is left out.
    fn indexed_by_sorted(&self, column: &str, kept: Vec<usize>, divisions: Vec<Scalar>) -> DataFrame {
        let base = if kept.len() == self.npartitions() {
            self.clone()
        } else {
            self.with_source(Source::Subset { input: self.frame.clone(), partitions: kept }, Divisions::Unknown, None)
        };
        let frame = Frame {
            source: base.frame.source.clone(),
            token: base.frame.token,
            steps: base.frame.steps.clone(),
            schema: base.frame.schema.clone(),
            divisions: Divisions::Known(divisions),
            index: Some(column.to_string()),
            partitioning: None,
        };
        DataFrame { frame: Arc::new(frame) }
    }

    /// [`DataFrame::set_index_sorted`] from Parquet footers alone (Dask's
    /// `calculate_divisions=True`), for a frame read from Parquet with no step but projections
    /// that pass `column` through: when every file's row groups give the column's exact
    /// minimum and maximum and say it has no missing value, and the files' ranges follow one
    /// another in file order, those ranges are the divisions and nothing is computed. As with
    /// Dask, the order within each file is the caller's promise (`sorted=true`), not checked.
    /// `None` when the footers do not tell or the ranges overlap: the caller scans instead.
    fn divisions_from_statistics(&self, column: &str) -> Option<DataFrame> {
        // One partition per file: a file's range is its partition's.
        let Source::Parquet { files, schema, row_groups: None, .. } = self.frame.source.as_ref() else {
            return None;
        };
        let passes_through = self.frame.steps.to_vec().iter().all(|step| match step {
            Step::Project(columns) => columns
                .iter()
                .any(|(name, e)| name == column && matches!(e, crate::expr::Expr::Column(c) if c == column)),
            _ => false,
        });
        if !passes_through {
            return None;
        }
        let mut kept = Vec::new();
        let mut divisions: Vec<Scalar> = Vec::new();
        let mut last: Option<Scalar> = None;
        for (i, path) in files.iter().enumerate() {
            let (low, high) = match crate::prune::file_bounds(path, schema, column) {
                crate::prune::FileBounds::Empty => continue,
                crate::prune::FileBounds::Range(low, high) => (low, high),
                crate::prune::FileBounds::Unknown => return None,
            };
            if let Some(prev) = &last
                && compare(&low, prev) != Some(Ordering::Greater)
                && compare(&low, prev) != Some(Ordering::Equal)
            {
                return None;
            }
            kept.push(i);
            divisions.push(low);
            last = Some(high);
        }
        divisions.push(last?);
        Some(self.indexed_by_sorted(column, kept, divisions))
    }

    /// The rows sorted by `column` across partitions (Dask's `sort_values`; missing values
    /// last, ties in input order): divisions from samples as in [`DataFrame::set_index`], a
    /// range shuffle, a sort within partitions, and for `descending` the partitions in reverse.
    ///
    /// # Errors
    /// As [`DataFrame::set_index`].
    pub fn sort_values(&self, column: &str, descending: bool, scheduler: &dyn Scheduler) -> Result<DataFrame> {
        self.check_column(column)?;
        let sorted = self.range_sorted(column, descending, scheduler)?;
        Ok(DataFrame {
            frame: Arc::new(Frame {
                source: sorted.frame.source.clone(),
                token: sorted.frame.token,
                steps: sorted.frame.steps.clone(),
                schema: sorted.frame.schema.clone(),
                divisions: Divisions::Unknown,
                index: self.frame.index.clone(),
                partitioning: None,
            }),
        })
    }

    /// Range shuffle by `column` and a sort within partitions; divisions (ascending) are
    /// carried on the frame for `set_index`.
    fn range_sorted(&self, column: &str, descending: bool, scheduler: &dyn Scheduler) -> Result<DataFrame> {
        let n = self.npartitions();
        let samples = gather(
            &self.frame,
            Terminal::Sample(column.to_string(), SAMPLES_PER_PARTITION),
            "sampling for divisions",
            scheduler,
        )?;
        let sort = Step::Sort(vec![(column.to_string(), descending)]);
        let Some(divisions) = divisions_from_samples(&samples, n)? else {
            // No present value anywhere: one partition holds every row.
            let one = self.repartition(1)?;
            return Ok(one.with_step(sort, self.frame.schema.clone()));
        };
        let interior = divisions.slice(1, divisions.len().saturating_sub(2));
        let boundaries = SerdeBatch(
            RecordBatch::try_from_iter([("boundary", interior)])
                .map_err(|e| DataFrameError::compute("divisions", e))?,
        );
        let source = Source::RangeShuffle {
            input: self.frame.clone(),
            column: column.to_string(),
            boundaries,
            missing_first: descending,
            max_branch: DEFAULT_MAX_BRANCH,
        };
        let known = Divisions::Known(scalars(&divisions)?);
        let mut shuffled = self.with_source(source, known, Some(column.to_string()));
        if descending {
            let count = shuffled.npartitions();
            shuffled = shuffled.with_source(
                Source::Subset { input: shuffled.frame.clone(), partitions: (0..count).rev().collect() },
                Divisions::Unknown,
                None,
            );
        }
        let sorted = shuffled.with_step(sort, self.frame.schema.clone());
        Ok(sorted)
    }

    /// The frame without an index (its column stays a column; divisions become unknown), as
    /// pandas' `reset_index()` after which the row labels are plain positions.
    pub fn reset_index(&self) -> DataFrame {
        DataFrame {
            frame: Arc::new(Frame {
                source: self.frame.source.clone(),
                token: self.frame.token,
                steps: self.frame.steps.clone(),
                schema: self.frame.schema.clone(),
                divisions: Divisions::Unknown,
                index: None,
                partitioning: self.frame.partitioning.clone(),
            }),
        }
    }

    /// The rows whose index lies in `[low, high]`, both ends included, either optional (pandas'
    /// `df.loc[low:high]`). With known divisions only the partitions that can hold such rows
    /// are computed; otherwise every partition is filtered. On a datetime index a date string
    /// names its whole period, as in pandas: `loc("2015-01-01", "2015-01-02")` ends at the
    /// second day's last instant, `"2015-01"` is the month.
    ///
    /// # Errors
    /// [`DataFrameError::InvalidArgument`] when the frame has no index;
    /// [`DataFrameError::TypeMismatch`] when a bound cannot be compared with the index.
    pub fn loc(&self, low: Option<Scalar>, high: Option<Scalar>) -> Result<DataFrame> {
        let Some(index) = self.frame.index.clone() else {
            return Err(DataFrameError::InvalidArgument("loc selects by the index: set one first (set_index)".into()));
        };
        let index_type = self
            .frame
            .schema
            .field_with_name(&index)
            .map(|f| f.data_type().clone())
            .map_err(|_| DataFrameError::ColumnNotFound { column: index.clone(), available: self.columns() })?;
        for bound in [&low, &high].into_iter().flatten() {
            let array = bound.to_array();
            // Numbers meet numbers, strings strings; a string may also name a date or time.
            let comparable = crate::join::common_key_type(array.data_type(), &index_type).is_some()
                || (array.data_type() == &arrow::datatypes::DataType::Utf8 && index_type.is_temporal());
            if !comparable {
                return Err(DataFrameError::TypeMismatch {
                    operation: "loc".into(),
                    expression: bound.to_string(),
                    found: array.data_type().clone(),
                    expected: format!("a bound comparable with the index {index:?} of type {index_type}"),
                });
            }
        }
        // pandas' partial string indexing: on a datetime index "2015-01-02" is the whole day,
        // "2015-01" the whole month, so a high bound reaches the end of its period.
        let (low, high) = match index_type {
            arrow::datatypes::DataType::Timestamp(_, None) => (
                low.map(|b| period_of(&b).map_or_else(|| instant(b), |(start, _)| Scalar::TimestampNs(start))),
                high.map(|b| period_of(&b).map_or_else(|| instant(b), |(_, end)| Scalar::TimestampNs(end))),
            ),
            _ => (low, high),
        };
        let step = Step::Range { column: index.clone(), low: low.clone(), high: high.clone() };
        let Divisions::Known(divisions) = &self.frame.divisions else {
            return Ok(self.with_step(step, self.frame.schema.clone()));
        };
        let n = self.npartitions();
        let typed = |s: &Scalar| {
            let a = s.to_array();
            arrow::compute::cast(&a, &index_type).ok().and_then(|a| Scalar::from_array(a.as_ref(), 0).ok())
        };
        let (low_t, high_t) = (low.as_ref().and_then(typed), high.as_ref().and_then(typed));
        let keep: Vec<usize> = (0..n)
            .filter(|&i| {
                let (start, end) = (&divisions[i], &divisions[i + 1]);
                let below_high = high_t.as_ref().is_none_or(|h| compare(start, h) != Some(Ordering::Greater));
                // A partition may hold its upper division too: divisions are each partition's
                // first value, so when one value runs on into the next partition (sorted data
                // cut anywhere, Parquet files split inside a run) both hold it.
                let above_low =
                    low_t.as_ref().is_none_or(|l| matches!(compare(end, l), Some(Ordering::Greater | Ordering::Equal)));
                below_high && above_low
            })
            .collect();
        let (partitions, divisions) = if keep.is_empty() {
            // Nothing can match: keep one partition, which the range filter empties.
            (vec![0], vec![divisions[0].clone(), divisions[1].clone()])
        } else {
            let mut d: Vec<Scalar> = keep.iter().map(|&i| divisions[i].clone()).collect();
            d.push(divisions[keep[keep.len() - 1] + 1].clone());
            (keep, d)
        };
        let pruned = self.with_source(
            Source::Subset { input: self.frame.clone(), partitions },
            Divisions::Known(divisions),
            Some(index),
        );
        Ok(pruned.with_step(step, self.frame.schema.clone()))
    }
}

/// A string bound naming an instant as a timestamp, so both bounds of a range have one type;
/// anything else as it is.
fn instant(bound: Scalar) -> Scalar {
    match &bound {
        Scalar::Str(text) => arrow::compute::kernels::cast_utils::string_to_timestamp_nanos(text.trim())
            .map_or(bound, Scalar::TimestampNs),
        _ => bound,
    }
}

/// The first and last nanosecond of the period a date string names at its own precision
/// (pandas' partial string indexing): `"2015"`, `"2015-01"`, `"2015-01-02"`,
/// `"2015-01-02 03"`, `"2015-01-02 03:04"`, `"2015-01-02 03:04:05"` (or with a `T`). `None`
/// for anything else, which is compared as written.
fn period_of(bound: &Scalar) -> Option<(i64, i64)> {
    use arrow::compute::kernels::cast_utils::string_to_timestamp_nanos;
    let Scalar::Str(text) = bound else {
        return None;
    };
    let text = text.trim();
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let parse = |s: &str| string_to_timestamp_nanos(s).ok();
    let month_start = |year: i64, month: i64| parse(&format!("{year:04}-{month:02}-01"));
    let parts: Vec<&str> = text.splitn(3, '-').collect();
    match parts.as_slice() {
        [year] if year.len() == 4 && digits(year) => {
            let year: i64 = year.parse().ok()?;
            Some((month_start(year, 1)?, month_start(year + 1, 1)? - 1))
        }
        [year, month] if year.len() == 4 && month.len() == 2 && digits(year) && digits(month) => {
            let (year, month): (i64, i64) = (year.parse().ok()?, month.parse().ok()?);
            let (next_year, next_month) = if month == 12 { (year + 1, 1) } else { (year, month + 1) };
            Some((month_start(year, month)?, month_start(next_year, next_month)? - 1))
        }
        [_, _, rest] => {
            // The day, then optionally the time to hours, minutes or seconds; finer strings
            // (fractions of a second, zones) name an instant and are compared as written.
            let (day, time) = rest.split_once([' ', 'T']).map_or((*rest, None), |(d, t)| (d, Some(t)));
            if day.len() != 2 || !digits(day) {
                return None;
            }
            let date = &text[..text.len() - rest.len() + 2];
            const SECOND: i64 = 1_000_000_000;
            let (start, length) = match time.map(|t| t.split(':').collect::<Vec<_>>()).as_deref() {
                None => (parse(date)?, 86_400 * SECOND),
                Some([h]) if h.len() == 2 && digits(h) => (parse(&format!("{date} {h}:00:00"))?, 3_600 * SECOND),
                Some([h, m]) if [h, m].iter().all(|p| p.len() == 2 && digits(p)) => {
                    (parse(&format!("{date} {h}:{m}:00"))?, 60 * SECOND)
                }
                Some([h, m, sec]) if [h, m, sec].iter().all(|p| p.len() == 2 && digits(p)) => {
                    (parse(&format!("{date} {h}:{m}:{sec}"))?, SECOND)
                }
                _ => return None,
            };
            Some((start, start + length - 1))
        }
        _ => None,
    }
}

impl DataFrame {
    /// The same rows in `npartitions` partitions (Dask's `repartition(npartitions=n)`): fewer
    /// by concatenating runs of neighbouring partitions (known divisions stay known), more by
    /// cutting at divisions spread evenly by value when the index is divided by numbers or
    /// timestamps (divisions stay known; repeated values can leave fewer partitions), and
    /// otherwise by splitting each partition's rows into nearly equal pieces.
    ///
    /// # Errors
    /// [`DataFrameError::InvalidArgument`] for `npartitions == 0`.
    pub fn repartition(&self, npartitions: usize) -> Result<DataFrame> {
        if npartitions == 0 {
            return Err(DataFrameError::InvalidArgument("repartition needs npartitions >= 1".into()));
        }
        let m = self.npartitions();
        if npartitions == m {
            return Ok(self.clone());
        }
        let divisions = match &self.frame.divisions {
            Divisions::Known(d) if npartitions < m => {
                Divisions::Known((0..=npartitions).map(|i| d[m * i / npartitions].clone()).collect())
            }
            Divisions::Known(d) => match interpolated(d, npartitions) {
                // Numbers and timestamps split by value: each old partition is cut at
                // divisions between its own, so the index stays divided.
                Some(new) => return self.repartition_divisions(new),
                // One index value throughout (a one-row frame): nothing to cut between, and
                // splitting rows would lose the divisions time series need.
                None if d.first() == d.last() => return Ok(self.clone()),
                None => Divisions::Unknown,
            },
            _ => Divisions::Unknown,
        };
        let index = self.frame.index.clone();
        Ok(self.with_source(Source::Repartition { input: self.frame.clone(), npartitions }, divisions, index))
    }

    /// The rows without repeats of `subset`'s values (all columns for `None`), keeping each
    /// value's first row (pandas' `drop_duplicates(keep="first")`; missing equals missing):
    /// repeats are dropped within each partition, the rest shuffled by those columns (unless
    /// the frame is one partition or already partitioned by them) and dropped again.
    ///
    /// # Errors
    /// [`DataFrameError::ColumnNotFound`] for a missing column.
    pub fn drop_duplicates(&self, subset: Option<&[&str]>) -> Result<DataFrame> {
        let subset: Vec<String> = match subset {
            Some(s) => s.iter().map(|c| c.to_string()).collect(),
            None => self.columns(),
        };
        for c in &subset {
            self.check_column(c)?;
        }
        let step = Step::DropDuplicates(subset.clone());
        let local = self.with_step(step.clone(), self.frame.schema.clone());
        if self.npartitions() == 1 {
            return Ok(local);
        }
        let shuffled = local.shuffle(&subset, self.npartitions())?;
        Ok(shuffled.with_step(step, self.frame.schema.clone()))
    }
}

impl Series {
    /// The number of distinct present values (pandas' `nunique()`), computed as a group-by on
    /// the values (tree or shuffle, by the group-by's rule) and its length.
    pub fn nunique(&self) -> Length {
        let groups = self.to_frame().and_then(|f| {
            let name = self.name();
            f.groupby([name.as_str()])?.agg([Agg::size()])
        });
        match groups {
            Ok(g) => g.len(),
            Err(e) => Length::failed(e),
        }
    }

    /// Each distinct present value and how many rows have it, most frequent first, ties in
    /// the order the values first appear (pandas' `value_counts()`; columns
    /// `[name, "count"]`, one partition): a tree group-by keeping its groups in the order of
    /// their first rows, then a stable sort by count.
    ///
    /// # Errors
    /// The error the series carries.
    pub fn value_counts(&self) -> Result<DataFrame> {
        let name = self.name();
        let counts = self.to_frame()?.groupby([name.as_str()])?.first_seen_order().agg([Agg::size().alias("count")])?;
        let schema = counts.schema();
        Ok(counts.with_step(Step::Sort(vec![("count".into(), true)]), schema))
    }
}
