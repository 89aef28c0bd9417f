//! `groupby(...).agg(...)`: keys (columns or series of the frame) and named aggregations,
//! computed from partial aggregates (see [`crate::agg`]) combined by a tree (one output
//! partition, sorted by the keys) or, with `split_out > 1`, shuffled by key into that many
//! partitions (each sorted by the keys). The keys are ordinary columns (pandas'
//! `as_index=False`).

use std::sync::Arc;

use arrow::datatypes::{Field, Schema};
use kiln_graph::unique_token;

use crate::agg::{AggFunc, AggItem, AggSpec};
use crate::error::{DataFrameError, Result};
use crate::expr::Expr;
use crate::frame::DataFrame;
use crate::lower::SerdeSchema;
use crate::plan::{AggStrategy, Divisions, Frame, Partitioning, Source, Steps};
use crate::series::Series;

/// How many partial results one combine task merges (Dask's `split_every`).
pub const DEFAULT_SPLIT_EVERY: usize = 8;

/// A group-by key: a column by name, or a series of the frame (`df.col("ts").dt().hour()`),
/// whose output column takes the series' name.
#[derive(Clone)]
pub enum GroupKey {
    /// A column.
    Column(String),
    /// A series of the same frame.
    Series(Series),
}

impl From<&str> for GroupKey {
    fn from(name: &str) -> Self {
        GroupKey::Column(name.to_string())
    }
}

impl From<String> for GroupKey {
    fn from(name: String) -> Self {
        GroupKey::Column(name)
    }
}

impl From<&Series> for GroupKey {
    fn from(s: &Series) -> Self {
        GroupKey::Series(s.clone())
    }
}

impl From<Series> for GroupKey {
    fn from(s: Series) -> Self {
        GroupKey::Series(s)
    }
}

/// What an aggregation reads.
#[derive(Clone)]
enum AggInput {
    Column(String),
    Series(Series),
    Rows,
}

/// One named aggregation (pandas' named aggregation `total=("value", "sum")` is
/// `Agg::sum("value").alias("total")`). Without an alias the output is named after the column
/// (`size` for [`Agg::size`]).
#[derive(Clone)]
pub struct Agg {
    func: AggFunc,
    input: AggInput,
    alias: Option<String>,
}

impl Agg {
    pub(crate) fn func(&self) -> AggFunc {
        self.func
    }

    fn column(func: AggFunc, column: &str) -> Agg {
        Agg { func, input: AggInput::Column(column.to_string()), alias: None }
    }

    /// `func` of a series of the frame.
    pub fn of(func: AggFunc, series: &Series) -> Agg {
        Agg { func, input: AggInput::Series(series.clone()), alias: None }
    }

    /// The sum of a column.
    pub fn sum(column: &str) -> Agg {
        Agg::column(AggFunc::Sum, column)
    }
    /// The count of present values of a column.
    pub fn count(column: &str) -> Agg {
        Agg::column(AggFunc::Count, column)
    }
    /// The mean of a column.
    pub fn mean(column: &str) -> Agg {
        Agg::column(AggFunc::Mean, column)
    }
    /// The minimum of a column.
    pub fn min(column: &str) -> Agg {
        Agg::column(AggFunc::Min, column)
    }
    /// The maximum of a column.
    pub fn max(column: &str) -> Agg {
        Agg::column(AggFunc::Max, column)
    }
    /// The sample variance of a column (`ddof = 1`).
    pub fn var(column: &str) -> Agg {
        Agg::column(AggFunc::Var { ddof: 1 }, column)
    }
    /// The sample standard deviation of a column (`ddof = 1`).
    pub fn std(column: &str) -> Agg {
        Agg::column(AggFunc::Std { ddof: 1 }, column)
    }
    /// The first present value of a column in row order (pandas' `first()`).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use arrow::array::{Float64Array, Int64Array, RecordBatch};
    /// use kiln_dataframe::{Agg, DataFrame};
    /// use kiln_graph::Collection;
    ///
    /// let batch = RecordBatch::try_from_iter([
    ///     ("k", Arc::new(Int64Array::from(vec![1, 1, 2, 1])) as _),
    ///     ("x", Arc::new(Float64Array::from(vec![None, Some(2.0), Some(f64::NAN), Some(2.0)])) as _),
    /// ])
    /// .unwrap();
    /// let df = DataFrame::from_batch(batch, 3).unwrap();
    /// let out = df
    ///     .groupby(["k"])
    ///     .unwrap()
    ///     .agg([Agg::first("x").alias("first"), Agg::last("x").alias("last"), Agg::nunique("x").alias("n")])
    ///     .unwrap()
    ///     .compute_on(&kiln_local::LocalScheduler::new())
    ///     .unwrap();
    /// assert_eq!(out.column(1).as_ref(), &Float64Array::from(vec![Some(2.0), None]));
    /// assert_eq!(out.column(3).as_ref(), &Int64Array::from(vec![1, 0]));
    /// ```
    pub fn first(column: &str) -> Agg {
        Agg::column(AggFunc::First, column)
    }
    /// The last present value of a column in row order (pandas' `last()`).
    pub fn last(column: &str) -> Agg {
        Agg::column(AggFunc::Last, column)
    }
    /// The number of distinct present values of a column (pandas' `nunique()`; NaN is not
    /// counted). Each group's distinct values travel through the reduction, so this suits
    /// moderate cardinality.
    pub fn nunique(column: &str) -> Agg {
        Agg::column(AggFunc::Nunique, column)
    }
    /// The number of rows of each group.
    pub fn size() -> Agg {
        Agg { func: AggFunc::Size, input: AggInput::Rows, alias: None }
    }

    /// Names the output column.
    pub fn alias(mut self, name: &str) -> Agg {
        self.alias = Some(name.to_string());
        self
    }
}

/// How many output partitions a group-by gets when `split_out` is not given, dask-expr's
/// rule: one per 15 input partitions for one key, and for `k > 1` keys (more keys, more
/// groups) `ceil(npartitions * (k - 1) / 10)`. One output partition means the tree reduction;
/// more mean the shuffle.
pub fn auto_split_out(npartitions: usize, nkeys: usize) -> usize {
    match nkeys {
        0 => 1,
        1 => npartitions.div_ceil(15),
        k => (npartitions * (k - 1)).div_ceil(10),
    }
    .max(1)
}

/// A grouping of a frame's rows, waiting for its aggregations.
pub struct GroupBy {
    frame: Arc<Frame>,
    keys: Vec<(String, Expr)>,
    split_every: usize,
    split_out: Option<usize>,
    max_branch: usize,
    first_seen_order: bool,
}

impl GroupBy {
    pub(crate) fn new(frame: Arc<Frame>, keys: Vec<GroupKey>) -> Result<GroupBy> {
        let mut named = Vec::with_capacity(keys.len());
        for key in keys {
            let (name, expr) = match key {
                GroupKey::Column(c) => (c.clone(), Expr::Column(c)),
                GroupKey::Series(s) => (s.name(), s.expr_for(&frame, "groupby")?),
            };
            expr.data_type(&frame.schema)?;
            if named.iter().any(|(n, _): &(String, Expr)| *n == name) {
                return Err(DataFrameError::InvalidArgument(format!("group key {name:?} appears twice; rename one")));
            }
            named.push((name, expr));
        }
        Ok(GroupBy {
            frame,
            keys: named,
            split_every: DEFAULT_SPLIT_EVERY,
            split_out: None,
            max_branch: crate::shuffle::DEFAULT_MAX_BRANCH,
            first_seen_order: false,
        })
    }

    /// Spreads the groups over `split_out` output partitions by a hash of the keys (Dask's
    /// `split_out`): partial aggregates are shuffled and each output partition combines and
    /// finalizes its own groups, so no task holds every group. `1` is the tree reduction.
    /// The result is sorted by key within each partition, not across them. Without this call
    /// [`auto_split_out`] decides; either way an input already hash-partitioned by the keys
    /// (after a shuffle on them) is aggregated partition by partition without moving data.
    pub fn split_out(mut self, split_out: usize) -> GroupBy {
        self.split_out = Some(split_out.max(1));
        self
    }

    /// At most this many pieces per split in the shuffle of `split_out` (default 32).
    pub fn max_branch(mut self, max_branch: usize) -> GroupBy {
        self.max_branch = max_branch.max(2);
        self
    }

    /// The strategy and the result's partitioning.
    fn strategy(&self, output: &Schema) -> (AggStrategy, Option<Partitioning>) {
        if self.keys.is_empty() || self.first_seen_order {
            return (AggStrategy::Tree { split_every: self.split_every }, None);
        }
        let plain = |k: &str| self.keys.iter().any(|(n, e)| n == k && matches!(e, Expr::Column(c) if c == k));
        if let Some(p) = &self.frame.partitioning
            && p.keys.fields().iter().all(|k| plain(k.name()))
        {
            return (AggStrategy::Blockwise, Some(p.clone()));
        }
        let split_out =
            self.split_out.unwrap_or_else(|| auto_split_out(self.frame.source.npartitions(), self.keys.len()));
        if split_out <= 1 {
            return (AggStrategy::Tree { split_every: self.split_every }, None);
        }
        let keys = Arc::new(Schema::new(output.fields()[..self.keys.len()].to_vec()));
        (
            AggStrategy::Shuffle { split_out, max_branch: self.max_branch },
            Some(Partitioning { keys, npartitions: split_out }),
        )
    }

    /// One output partition whose groups come in the order of their first row, not sorted
    /// (pandas' `sort=False`): a tree, whatever the input's partitioning.
    pub(crate) fn first_seen_order(mut self) -> GroupBy {
        self.first_seen_order = true;
        self
    }

    /// Merges this many partial results per task of the reduction tree (default 8).
    pub fn split_every(mut self, split_every: usize) -> GroupBy {
        self.split_every = split_every.max(2);
        self
    }

    /// The aggregations, one output column each after the key columns; one row per group with
    /// a present key, sorted by the keys.
    ///
    /// # Errors
    /// [`DataFrameError::ColumnNotFound`] for a missing column, [`DataFrameError::TypeMismatch`]
    /// for a function that does not apply to the column's type (a sum of strings),
    /// [`DataFrameError::InvalidArgument`] for no aggregation or two outputs of one name.
    pub fn agg(&self, aggs: impl IntoIterator<Item = Agg>) -> Result<DataFrame> {
        let schema = &self.frame.schema;
        let mut fields: Vec<Field> = Vec::new();
        for (name, expr) in &self.keys {
            fields.push(Field::new(name, expr.data_type(schema)?, true));
        }
        let items = resolve_aggs(&self.frame, aggs, &mut fields)?;
        if items.is_empty() {
            return Err(DataFrameError::InvalidArgument("agg needs at least one aggregation".into()));
        }
        let output = Arc::new(Schema::new(fields));
        let spec = AggSpec {
            keys: self.keys.clone(),
            aggs: items,
            output: SerdeSchema(output.clone()),
            first_seen_order: self.first_seen_order,
        };
        let (strategy, partitioning) = self.strategy(&output);
        let source = Source::Aggregate { input: self.frame.clone(), spec, strategy };
        Ok(DataFrame {
            frame: Arc::new(Frame {
                source: Arc::new(source),
                token: unique_token(),
                steps: Steps::default(),
                schema: output,
                divisions: Divisions::Unknown,
                index: None,
                partitioning,
            }),
        })
    }

    /// The number of rows of each group, in a column `size` (pandas' `groupby(...).size()`).
    ///
    /// # Errors
    /// As [`GroupBy::agg`].
    pub fn size(&self) -> Result<DataFrame> {
        self.agg([Agg::size()])
    }
}

/// The aggregations checked against `frame`'s schema: each becomes an item and a field
/// appended to `fields` (which holds the columns before them, so a repeated name is caught).
pub(crate) fn resolve_aggs(
    frame: &Arc<Frame>,
    aggs: impl IntoIterator<Item = Agg>,
    fields: &mut Vec<Field>,
) -> Result<Vec<AggItem>> {
    let schema = &frame.schema;
    let mut items = Vec::new();
    for agg in aggs {
        let (input, default_name) = match &agg.input {
            AggInput::Column(c) => (Expr::Column(c.clone()), c.clone()),
            AggInput::Series(s) => (s.expr_for(frame, agg.func.name())?, s.name()),
            AggInput::Rows => (Expr::Literal(crate::Scalar::Int(1)), "size".to_string()),
        };
        let input_type = input.data_type(schema)?;
        let output_type = agg.func.output_type(&input_type).ok_or_else(|| DataFrameError::TypeMismatch {
            operation: agg.func.name().to_string(),
            expression: input.to_string(),
            found: input_type.clone(),
            expected: match agg.func {
                AggFunc::Min | AggFunc::Max | AggFunc::First | AggFunc::Last | AggFunc::Nunique | AggFunc::Unique => {
                    "numbers, strings, booleans or dates are needed".into()
                }
                AggFunc::Any | AggFunc::All => "booleans are needed".into(),
                _ => "numbers or booleans are needed".into(),
            },
        })?;
        let name = agg.alias.clone().unwrap_or(default_name);
        if fields.iter().any(|f| *f.name() == name) {
            return Err(DataFrameError::InvalidArgument(format!(
                "output column {name:?} appears twice; name the aggregations with .alias(...)"
            )));
        }
        fields.push(Field::new(&name, output_type, true));
        items.push(AggItem { name, func: agg.func, input });
    }
    Ok(items)
}
