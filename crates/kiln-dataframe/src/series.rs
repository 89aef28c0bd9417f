//! `Series`: one column of a frame as an expression over it (`df.col("a") + 1`). Operations
//! build a new expression, typed against the frame's schema at once; an invalid one is carried
//! by the series and reported by every use (`check`, `filter`, `assign`, computing).

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::DataType;

use crate::agg::AggFunc;
use crate::error::{DataFrameError, Result};
use crate::expr::{BinaryOp, DateField, Expr, MAX_EXPR_DEPTH, Pattern, StrOp, TimeOp};
use crate::plan::Frame;
use crate::reduce::Reduction;
use crate::scalar::{DType, Scalar};

/// A column of a frame, computed lazily (Dask's `dask.dataframe.Series`).
///
/// ```
/// use std::sync::Arc;
/// use arrow::array::{Float64Array, RecordBatch};
/// use arrow::datatypes::{DataType, Field, Schema};
/// use kiln_dataframe::{DataFrame, Scalar};
/// use kiln_graph::Collection;
///
/// let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Float64, true)]));
/// let x = Float64Array::from(vec![Some(1.0), None, Some(3.0)]);
/// let df = DataFrame::from_batch(RecordBatch::try_new(schema, vec![Arc::new(x)]).unwrap(), 2).unwrap();
/// let mean = (df.col("x") * 2.0).mean();
/// assert_eq!(mean.compute_on(&kiln_local::LocalScheduler::new()).unwrap(), Scalar::Float(4.0));
/// assert!(df.col("nope").check().is_err());
/// ```
#[derive(Clone)]
pub struct Series {
    pub(crate) frame: Arc<Frame>,
    pub(crate) expr: Expr,
    pub(crate) dtype: Result<DataType>,
}

/// The right-hand side of a series operation: another series of the same frame, or a scalar.
#[derive(Clone)]
pub enum Operand {
    /// A series.
    Series(Series),
    /// A literal.
    Scalar(Scalar),
}

impl From<&Series> for Operand {
    fn from(s: &Series) -> Self {
        Operand::Series(s.clone())
    }
}

impl From<Series> for Operand {
    fn from(s: Series) -> Self {
        Operand::Series(s)
    }
}

macro_rules! operand_from_scalar {
    ($($t:ty),*) => {$(
        impl From<$t> for Operand {
            fn from(v: $t) -> Self {
                Operand::Scalar(Scalar::from(v))
            }
        }
    )*};
}
operand_from_scalar!(i64, i32, u32, f64, f32, bool, &str, String, Scalar);

impl Series {
    pub(crate) fn new(frame: Arc<Frame>, expr: Expr) -> Series {
        let depth = expr.depth();
        let dtype = if depth > MAX_EXPR_DEPTH {
            Err(DataFrameError::ExpressionTooDeep { depth, limit: MAX_EXPR_DEPTH })
        } else {
            expr.data_type(&frame.schema)
        };
        Series { frame, expr, dtype }
    }

    fn failed(frame: Arc<Frame>, expr: Expr, error: DataFrameError) -> Series {
        Series { frame, expr, dtype: Err(error) }
    }

    /// Ok when the series is valid; otherwise the error it carries (a missing column, a type
    /// mismatch, ...), the same that using it reports.
    ///
    /// # Errors
    /// The carried error.
    pub fn check(&self) -> Result<()> {
        self.dtype.as_ref().map(|_| ()).map_err(Clone::clone)
    }

    /// The type of the values.
    ///
    /// # Errors
    /// The carried error.
    pub fn dtype(&self) -> Result<DataType> {
        self.dtype.clone()
    }

    /// The series' name: the column it was derived from, or the one given by [`Series::rename`].
    pub fn name(&self) -> String {
        self.expr.output_name()
    }

    /// The expression the series computes.
    pub fn expr(&self) -> &Expr {
        &self.expr
    }

    /// The same values under another name.
    pub fn rename(&self, name: &str) -> Series {
        let inner = match &self.expr {
            Expr::Alias { expr, .. } => (**expr).clone(),
            e => e.clone(),
        };
        self.derive(Expr::Alias { expr: Box::new(inner), name: name.to_string() })
    }

    /// This series' expression for use in `frame` (this series' frame, or one derived from it
    /// by projections keeping the columns it reads), checked.
    pub(crate) fn expr_for(&self, frame: &Arc<Frame>, operation: &str) -> Result<Expr> {
        self.check()?;
        if !frame.accepts(&self.frame, &self.expr) {
            return Err(DataFrameError::NotAligned {
                operation: operation.to_string(),
                what: format!("series {}", self.name()),
            });
        }
        Ok(self.expr.clone())
    }

    /// A series of the same frame computing `expr`; an error already carried wins.
    fn derive(&self, expr: Expr) -> Series {
        match &self.dtype {
            Err(e) => Series::failed(self.frame.clone(), expr, e.clone()),
            Ok(_) => Series::new(self.frame.clone(), expr),
        }
    }

    /// `self op other`. Of two series of related frames (one derived from the other by
    /// projections), the result belongs to the derived one.
    pub fn binary(&self, op: BinaryOp, other: impl Into<Operand>) -> Series {
        let operation = format!("{op:?}");
        let (frame, left, right) = match other.into() {
            Operand::Scalar(v) => (self.frame.clone(), Ok(self.expr.clone()), Ok(Expr::Literal(v))),
            Operand::Series(s) if s.frame.accepts(&self.frame, &self.expr) => {
                (s.frame.clone(), self.expr_for(&s.frame, &operation), s.expr_for(&s.frame, &operation))
            }
            Operand::Series(s) => {
                (self.frame.clone(), self.expr_for(&self.frame, &operation), s.expr_for(&self.frame, &operation))
            }
        };
        match (left, right) {
            (Ok(left), Ok(right)) => {
                Series::new(frame, Expr::Binary { op, left: Box::new(left), right: Box::new(right) })
            }
            (Err(e), _) | (_, Err(e)) => Series::failed(frame, self.expr.clone(), e),
        }
    }

    /// `self == other` (missing values compare unequal).
    pub fn eq(&self, other: impl Into<Operand>) -> Series {
        self.binary(BinaryOp::Eq, other)
    }
    /// `self != other` (true where either side is missing, as in pandas).
    pub fn ne(&self, other: impl Into<Operand>) -> Series {
        self.binary(BinaryOp::Ne, other)
    }
    /// `self < other`.
    pub fn lt(&self, other: impl Into<Operand>) -> Series {
        self.binary(BinaryOp::Lt, other)
    }
    /// `self <= other`.
    pub fn le(&self, other: impl Into<Operand>) -> Series {
        self.binary(BinaryOp::Le, other)
    }
    /// `self > other`.
    pub fn gt(&self, other: impl Into<Operand>) -> Series {
        self.binary(BinaryOp::Gt, other)
    }
    /// `self >= other`.
    pub fn ge(&self, other: impl Into<Operand>) -> Series {
        self.binary(BinaryOp::Ge, other)
    }

    /// Whether each value is missing (pandas' `isna`).
    pub fn isna(&self) -> Series {
        self.derive(Expr::IsNull(Box::new(self.expr.clone())))
    }

    /// Whether each value is present (pandas' `notna`).
    pub fn notna(&self) -> Series {
        self.derive(Expr::IsNotNull(Box::new(self.expr.clone())))
    }

    /// Missing values replaced by `value`; an integer series filled with a float becomes float.
    pub fn fillna(&self, value: impl Into<Scalar>) -> Series {
        self.derive(Expr::FillNull { expr: Box::new(self.expr.clone()), value: value.into() })
    }

    /// The values converted to `dtype`; a value that does not convert fails the computation
    /// (pandas raises too). Missing values stay missing, NaN included, since kiln's integer
    /// columns hold missing values as pandas' nullable `Int64` does: `[1.0, NaN]` as `Int64`
    /// is `[1, <NA>]`, as `astype("Int64")` gives (NumPy's `int64` raises instead).
    pub fn astype(&self, dtype: DType) -> Series {
        self.derive(Expr::Cast { expr: Box::new(self.expr.clone()), to: dtype })
    }

    /// Absolute values.
    pub fn abs(&self) -> Series {
        self.derive(Expr::Abs(Box::new(self.expr.clone())))
    }

    /// Whether each value is within `[low, high]` (pandas' `between`, both ends included).
    pub fn between(&self, low: impl Into<Scalar>, high: impl Into<Scalar>) -> Series {
        self.derive(Expr::Between { expr: Box::new(self.expr.clone()), low: low.into(), high: high.into() })
    }

    /// Values limited to `[lower, upper]` (pandas' `clip`; `None` leaves that side open).
    pub fn clip(&self, lower: Option<Scalar>, upper: Option<Scalar>) -> Series {
        self.derive(Expr::Clip { expr: Box::new(self.expr.clone()), lower, upper })
    }

    /// Whether each value is one of `values`; a missing value (NaN included) is when `values`
    /// holds one (`Scalar::Null` or NaN), as in pandas.
    pub fn isin<V: Into<Scalar>>(&self, values: impl IntoIterator<Item = V>) -> Series {
        self.derive(Expr::IsIn {
            expr: Box::new(self.expr.clone()),
            values: values.into_iter().map(Into::into).collect(),
        })
    }

    /// Date and time fields of a timestamp or date series (pandas' `.dt`).
    pub fn dt(&self) -> DateTimeFields<'_> {
        DateTimeFields { series: self }
    }

    /// String operations of a string series (pandas' `.str`): on `Utf8`, `LargeUtf8`,
    /// `Utf8View` and dictionary-encoded strings; any other type is an error naming the column.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use arrow::array::{AsArray, RecordBatch, StringArray};
    /// use arrow::datatypes::{DataType, Field, Schema};
    /// use kiln_dataframe::DataFrame;
    /// use kiln_graph::Collection;
    ///
    /// let schema = Arc::new(Schema::new(vec![Field::new("name", DataType::Utf8, true)]));
    /// let names = StringArray::from(vec![Some(" Ada "), None, Some("Grace")]);
    /// let df = DataFrame::from_batch(RecordBatch::try_new(schema, vec![Arc::new(names)]).unwrap(), 2).unwrap();
    /// let clean = df.col("name").str().strip().str().lower();
    /// let out = df.assign("clean", &clean).unwrap().compute_on(&kiln_local::LocalScheduler::new()).unwrap();
    /// let clean: Vec<Option<&str>> = out.column(1).as_string::<i32>().iter().collect();
    /// assert_eq!(clean, [Some("ada"), None, Some("grace")]);
    /// // Missing text gives a missing mask value, which a filter drops.
    /// let g = df.filter(&df.col("name").str().contains("a")).unwrap();
    /// assert_eq!(g.compute_on(&kiln_local::LocalScheduler::new()).unwrap().num_rows(), 2);
    /// assert!(df.col("name").str().len().gt(1).check().is_ok());
    /// ```
    pub fn str(&self) -> StringMethods<'_> {
        StringMethods { series: self }
    }

    /// Values rounded to `decimals` places, halves to even, as pandas (`np.round`) does: the
    /// value is scaled by `10^decimals`, rounded to an integer and scaled back, so `0.125`
    /// rounds to `0.12` and `2.675` to `2.68`. Integers are unchanged for `decimals >= 0` and
    /// rounded to tens, hundreds, ... (halves to even) for negative `decimals`; an integer result
    /// that does not fit the column's type fails the computation (NumPy wraps around).
    pub fn round(&self, decimals: i32) -> Series {
        self.derive(Expr::Round { expr: Box::new(self.expr.clone()), decimals })
    }

    fn reduce(&self, func: AggFunc) -> Reduction {
        Reduction::of(self, func)
    }

    /// The sum, skipping missing values (0 when there are none).
    pub fn sum(&self) -> Reduction {
        self.reduce(AggFunc::Sum)
    }
    /// How many values are present.
    pub fn count(&self) -> Reduction {
        self.reduce(AggFunc::Count)
    }
    /// The mean of the present values.
    pub fn mean(&self) -> Reduction {
        self.reduce(AggFunc::Mean)
    }
    /// The smallest present value.
    pub fn min(&self) -> Reduction {
        self.reduce(AggFunc::Min)
    }
    /// The largest present value.
    pub fn max(&self) -> Reduction {
        self.reduce(AggFunc::Max)
    }
    /// The sample variance (`ddof = 1`, pandas' default).
    pub fn var(&self) -> Reduction {
        self.reduce(AggFunc::Var { ddof: 1 })
    }
    /// The variance with `ddof` delta degrees of freedom.
    pub fn var_ddof(&self, ddof: u32) -> Reduction {
        self.reduce(AggFunc::Var { ddof })
    }
    /// The sample standard deviation (`ddof = 1`).
    pub fn std(&self) -> Reduction {
        self.reduce(AggFunc::Std { ddof: 1 })
    }
    /// The standard deviation with `ddof` delta degrees of freedom.
    pub fn std_ddof(&self, ddof: u32) -> Reduction {
        self.reduce(AggFunc::Std { ddof })
    }
    /// The first present value in row order (missing when there is none).
    pub fn first(&self) -> Reduction {
        self.reduce(AggFunc::First)
    }
    /// The last present value in row order (missing when there is none).
    pub fn last(&self) -> Reduction {
        self.reduce(AggFunc::Last)
    }
    /// Whether any present value is true (pandas' `any()`, `skipna=True`: false for none).
    pub fn any(&self) -> Reduction {
        self.reduce(AggFunc::Any)
    }
    /// Whether every present value is true (pandas' `all()`, `skipna=True`: true for none).
    pub fn all(&self) -> Reduction {
        self.reduce(AggFunc::All)
    }
    /// The distinct values in order of first appearance (pandas' `unique()`): missing values
    /// appear once, as the first of them (null or NaN); `-0.0` and `0.0` are one value. The
    /// distinct values of each partition travel through a reduction tree, so this suits
    /// moderate cardinality.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use arrow::array::{Int64Array, RecordBatch};
    /// use kiln_dataframe::DataFrame;
    /// use kiln_graph::Collection;
    ///
    /// let batch = RecordBatch::try_from_iter([(
    ///     "k",
    ///     Arc::new(Int64Array::from(vec![Some(3), None, Some(1), Some(3), None])) as _,
    /// )])
    /// .unwrap();
    /// let df = DataFrame::from_batch(batch, 3).unwrap();
    /// let unique = df.col("k").unique().compute_on(&kiln_local::LocalScheduler::new()).unwrap();
    /// assert_eq!(unique.as_ref(), &Int64Array::from(vec![Some(3), None, Some(1)]));
    /// ```
    pub fn unique(&self) -> crate::reduce::Unique {
        crate::reduce::Unique::of(self)
    }
}

/// The `.dt` accessor of a series: fields of its dates or timestamps (as `int32`), their dates
/// and their floors.
pub struct DateTimeFields<'a> {
    series: &'a Series,
}

impl DateTimeFields<'_> {
    fn field(&self, field: DateField) -> Series {
        self.series.derive(Expr::DatePart { expr: Box::new(self.series.expr.clone()), field })
    }
    /// The year.
    pub fn year(&self) -> Series {
        self.field(DateField::Year)
    }
    /// The month, 1 to 12.
    pub fn month(&self) -> Series {
        self.field(DateField::Month)
    }
    /// The day of the month, 1 to 31.
    pub fn day(&self) -> Series {
        self.field(DateField::Day)
    }
    /// The hour, 0 to 23.
    pub fn hour(&self) -> Series {
        self.field(DateField::Hour)
    }
    /// The minute, 0 to 59.
    pub fn minute(&self) -> Series {
        self.field(DateField::Minute)
    }
    /// The second, 0 to 59.
    pub fn second(&self) -> Series {
        self.field(DateField::Second)
    }
    /// The day of the week, Monday = 0 to Sunday = 6.
    pub fn dayofweek(&self) -> Series {
        self.field(DateField::DayOfWeek)
    }
    /// The calendar date as `date32` (pandas' `.dt.date`; the local date when the timestamps
    /// have a time zone).
    pub fn date(&self) -> Series {
        self.series.derive(Expr::Time { expr: Box::new(self.series.expr.clone()), op: TimeOp::Date })
    }
    /// Timestamps rounded down to a fixed frequency counted from the epoch (pandas'
    /// `.dt.floor`): a positive multiple of `"s"`, `"min"`, `"h"` or `"D"` (`"15min"`, `"2D"`).
    /// Another frequency is a [`DataFrameError::UnknownFrequency`] naming the column.
    ///
    /// A timestamp with a time zone is floored in its local wall time, as pandas does, so
    /// `"h"` in `+05:30` gives the half hours of UTC and `"D"` local midnight; the zone is kept.
    /// That is done for UTC and fixed offsets (`"+05:30"`, `"-0300"`). A named zone
    /// (`"Europe/Berlin"`, `"Asia/Kolkata"`) is a [`DataFrameError::TypeMismatch`] naming the
    /// column and the zone: its offsets change with daylight saving time and need the tz
    /// database, which kiln is not built with (arrow's `chrono-tz` feature).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use arrow::array::{AsArray, RecordBatch, TimestampSecondArray};
    /// use arrow::datatypes::{DataType, Field, Schema, TimeUnit, TimestampSecondType};
    /// use kiln_dataframe::DataFrame;
    /// use kiln_graph::Collection;
    ///
    /// let t = DataType::Timestamp(TimeUnit::Second, None);
    /// let schema = Arc::new(Schema::new(vec![Field::new("ts", t, true)]));
    /// // 2024-03-10 13:47:59 and 1969-12-31 23:59:59.
    /// let ts = TimestampSecondArray::from(vec![Some(1_710_078_479), None, Some(-1)]);
    /// let df = DataFrame::from_batch(RecordBatch::try_new(schema, vec![Arc::new(ts)]).unwrap(), 2).unwrap();
    /// let hour = df.assign("hour", &df.col("ts").dt().floor("h")).unwrap();
    /// let out = hour.compute_on(&kiln_local::LocalScheduler::new()).unwrap();
    /// let floored: Vec<Option<i64>> = out.column(1).as_primitive::<TimestampSecondType>().iter().collect();
    /// assert_eq!(floored, [Some(1_710_075_600), None, Some(-3600)]);
    /// assert!(df.col("ts").dt().floor("M").check().is_err());
    /// ```
    pub fn floor(&self, freq: &str) -> Series {
        self.series.derive(Expr::Time { expr: Box::new(self.series.expr.clone()), op: TimeOp::Floor(freq.to_string()) })
    }
}

/// The `.str` accessor of a series: string operations, missing values giving missing results
/// (so a filter drops them). pandas 3's default `str` dtype answers `false` for a missing
/// value instead: `fillna(false)` on the mask gives that.
pub struct StringMethods<'a> {
    series: &'a Series,
}

impl StringMethods<'_> {
    fn op(&self, op: StrOp) -> Series {
        self.series.derive(Expr::Str { expr: Box::new(self.series.expr.clone()), op })
    }
    /// Whether the text holds `pat`, a literal substring (pandas' `contains(pat, regex=False)`;
    /// [`StringMethods::contains_regex`] is pandas' default `regex=True`).
    pub fn contains(&self, pat: &str) -> Series {
        self.op(StrOp::Contains(pat.to_string()))
    }
    /// Whether the regular expression `pat` matches anywhere in the text: pandas'
    /// `str.contains(pat)` (its default `regex=True`, Python's `re.search`). The syntax is
    /// described at [`Pattern`]; use `(?i)` for pandas' `case=False`.
    ///
    /// An invalid pattern is a [`DataFrameError::InvalidPattern`] naming the column and the
    /// pattern, carried by the series (reported by `check`, before anything runs).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use arrow::array::{AsArray, RecordBatch, StringArray};
    /// use kiln_dataframe::DataFrame;
    /// use kiln_graph::Collection;
    ///
    /// let s = StringArray::from(vec![Some("Apple pie"), None, Some("banana"), Some("cherry 42")]);
    /// let batch = RecordBatch::try_from_iter([("s", Arc::new(s) as _)]).unwrap();
    /// let df = DataFrame::from_batch(batch, 2).unwrap();
    /// let mask = df.assign("m", &df.col("s").str().contains_regex(r"^[A-Z]|\d+$")).unwrap();
    /// let out = mask.compute_on(&kiln_local::LocalScheduler::new()).unwrap();
    /// let m: Vec<Option<bool>> = out.column(1).as_boolean().iter().collect();
    /// assert_eq!(m, [Some(true), None, Some(false), Some(true)]);
    /// assert!(df.col("s").str().contains_regex("(unclosed").check().is_err());
    /// ```
    pub fn contains_regex(&self, pat: &str) -> Series {
        match self.pattern("contains_regex", pat) {
            Ok(p) => self.op(StrOp::ContainsRegex(p)),
            Err(e) => Series::failed(self.series.frame.clone(), self.series.expr.clone(), e),
        }
    }
    /// Every match of the regular expression `pat` replaced by `repl`: pandas'
    /// `str.replace(pat, repl)` with `regex=True` (Python's `re.sub`). `repl` is written as
    /// pandas users write it, in Python's syntax: `\1` or `\g<1>` for a group, `\g<name>` for a
    /// named one (`(?P<name>...)`), `\g<0>` for the whole match, `\\` for a backslash; `$` is
    /// plain text. A group that did not take part in the match gives empty text; empty matches
    /// are replaced as Python 3.7+ does (`replace_regex("", "-")` turns `"ab"` into `"-a-b-"`,
    /// `"a*"` turns `"baa"` into `"-b--"`), except that after an empty match the search moves
    /// on one character where Python first tries a longer match at the same place, which only
    /// patterns preferring the empty match there notice (`"a??"`, `"|a"`).
    ///
    /// An invalid pattern, or a template naming a group the pattern lacks, is a
    /// [`DataFrameError::InvalidPattern`] naming the column, carried by the series.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use arrow::array::{AsArray, RecordBatch, StringArray};
    /// use kiln_dataframe::DataFrame;
    /// use kiln_graph::Collection;
    ///
    /// let s = StringArray::from(vec![Some("Apple pie"), None, Some("abc123")]);
    /// let batch = RecordBatch::try_from_iter([("s", Arc::new(s) as _)]).unwrap();
    /// let df = DataFrame::from_batch(batch, 2).unwrap();
    /// let swapped = df.col("s").str().replace_regex(r"(\w+) (?P<second>\w+)", r"\g<second> \1");
    /// let out = df.assign("t", &swapped).unwrap().compute_on(&kiln_local::LocalScheduler::new()).unwrap();
    /// let t: Vec<Option<&str>> = out.column(1).as_string::<i32>().iter().collect();
    /// assert_eq!(t, [Some("pie Apple"), None, Some("abc123")]);
    /// assert!(df.col("s").str().replace_regex("(a)", r"\2").check().is_err());
    /// ```
    pub fn replace_regex(&self, pat: &str, repl: &str) -> Series {
        match self.pattern("replace_regex", pat) {
            Ok(p) => self.op(StrOp::ReplaceRegex { pat: p, repl: repl.to_string() }),
            Err(e) => Series::failed(self.series.frame.clone(), self.series.expr.clone(), e),
        }
    }
    fn pattern(&self, operation: &str, pat: &str) -> Result<Pattern> {
        // The operand's own error comes first, as for every other operation.
        self.series.check()?;
        Pattern::compile(pat).map_err(|message| DataFrameError::InvalidPattern {
            operation: format!(".str.{operation}"),
            expression: self.series.expr.to_string(),
            pattern: pat.to_string(),
            message,
        })
    }
    /// Whether the text starts with `prefix`.
    pub fn startswith(&self, prefix: &str) -> Series {
        self.op(StrOp::StartsWith(prefix.to_string()))
    }
    /// Whether the text ends with `suffix`.
    pub fn endswith(&self, suffix: &str) -> Series {
        self.op(StrOp::EndsWith(suffix.to_string()))
    }
    /// The text in lower case (Unicode, as Python's `str.lower`).
    pub fn lower(&self) -> Series {
        self.op(StrOp::Lower)
    }
    /// The text in upper case (Unicode, as Python's `str.upper`: `"ß"` becomes `"SS"`).
    pub fn upper(&self) -> Series {
        self.op(StrOp::Upper)
    }
    /// The number of characters (not bytes), as `int64`; missing stays missing (pandas'
    /// nullable `Int64` result).
    pub fn len(&self) -> Series {
        self.op(StrOp::Len)
    }
    /// Every occurrence of `pat` (literal text) replaced by `repl` (pandas'
    /// `replace(pat, repl, regex=False)`).
    pub fn replace(&self, pat: &str, repl: &str) -> Series {
        self.op(StrOp::Replace { pat: pat.to_string(), repl: repl.to_string() })
    }
    /// The text without leading and trailing whitespace.
    pub fn strip(&self) -> Series {
        self.op(StrOp::Strip)
    }
}

macro_rules! arithmetic {
    ($($trait:ident $method:ident $op:ident),*) => {$(
        impl<T: Into<Operand>> std::ops::$trait<T> for &Series {
            type Output = Series;
            fn $method(self, rhs: T) -> Series {
                self.binary(BinaryOp::$op, rhs)
            }
        }
        impl<T: Into<Operand>> std::ops::$trait<T> for Series {
            type Output = Series;
            fn $method(self, rhs: T) -> Series {
                self.binary(BinaryOp::$op, rhs)
            }
        }
    )*};
}
arithmetic!(Add add Add, Sub sub Sub, Mul mul Mul, Div div Div, Rem rem Rem, BitAnd bitand And, BitOr bitor Or);

impl std::ops::Not for &Series {
    type Output = Series;
    fn not(self) -> Series {
        self.derive(Expr::Not(Box::new(self.expr.clone())))
    }
}

impl std::ops::Not for Series {
    type Output = Series;
    fn not(self) -> Series {
        !&self
    }
}

impl std::ops::Neg for &Series {
    type Output = Series;
    fn neg(self) -> Series {
        self.derive(Expr::Neg(Box::new(self.expr.clone())))
    }
}

impl std::ops::Neg for Series {
    type Output = Series;
    fn neg(self) -> Series {
        -&self
    }
}

impl fmt::Display for Series {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.dtype {
            Ok(t) => write!(
                f,
                "kiln Series {}: {t}, npartitions={} ({})",
                self.name(),
                self.frame.source.npartitions(),
                self.expr
            ),
            Err(e) => write!(f, "invalid kiln Series {}: {e}", self.expr),
        }
    }
}

impl fmt::Debug for Series {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
