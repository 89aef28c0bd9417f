//! Row-wise expressions: a small tree of column references, literals and operations, typed
//! against a schema when built and evaluated on one partition with Arrow's compute kernels.
//!
//! Semantics follow pandas where Arrow differs: `/` is true division (floats), integer and
//! float operands meet as `float64`, two integer types meet as `int64`, a comparison with a
//! missing value is `false` (`true` for `!=`), as NaN compares in pandas, and a float NaN is a
//! missing value (`isna` is true for it, `fillna` replaces it).
//!
//! An expression is a tree, so its walks are recursive; building one deeper than
//! [`MAX_EXPR_DEPTH`] fails ([`DataFrameError::ExpressionTooDeep`]), which bounds them.

use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch, StringBuilder, UInt32Array};
use arrow::compute::kernels::{cmp, numeric, zip::zip};
use arrow::compute::{
    CastOptions, and_kleene, can_cast_types, cast_with_options, is_not_null, is_null, not, or_kleene,
};
use arrow::datatypes::{DataType, Schema};
use serde::{Deserialize, Serialize};

use crate::error::{DataFrameError, Result};
use crate::scalar::{DType, Scalar};

/// How deep an expression may nest (operations inside operations).
pub const MAX_EXPR_DEPTH: usize = 256;

/// A binary operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BinaryOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/` (true division: always `float64`)
    Div,
    /// `%`
    Rem,
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `&` (boolean and)
    And,
    /// `|` (boolean or)
    Or,
}

impl BinaryOp {
    fn symbol(self) -> &'static str {
        match self {
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
            BinaryOp::Rem => "%",
            BinaryOp::Eq => "==",
            BinaryOp::Ne => "!=",
            BinaryOp::Lt => "<",
            BinaryOp::Le => "<=",
            BinaryOp::Gt => ">",
            BinaryOp::Ge => ">=",
            BinaryOp::And => "&",
            BinaryOp::Or => "|",
        }
    }

    fn is_arithmetic(self) -> bool {
        matches!(self, BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div | BinaryOp::Rem)
    }

    fn is_comparison(self) -> bool {
        matches!(self, BinaryOp::Eq | BinaryOp::Ne | BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge)
    }

    /// The comparison with its sides swapped (`a < b` is `b > a`); `None` for arithmetic and
    /// boolean operators.
    pub(crate) fn flipped(self) -> Option<BinaryOp> {
        Some(match self {
            BinaryOp::Eq | BinaryOp::Ne => self,
            BinaryOp::Lt => BinaryOp::Gt,
            BinaryOp::Le => BinaryOp::Ge,
            BinaryOp::Gt => BinaryOp::Lt,
            BinaryOp::Ge => BinaryOp::Le,
            _ => return None,
        })
    }
}

/// A field of a date or timestamp (pandas' `.dt` accessors).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DateField {
    /// `.dt.year`
    Year,
    /// `.dt.month` (1-12)
    Month,
    /// `.dt.day` (1-31)
    Day,
    /// `.dt.hour`
    Hour,
    /// `.dt.minute`
    Minute,
    /// `.dt.second`
    Second,
    /// `.dt.dayofweek` (Monday = 0)
    DayOfWeek,
}

impl DateField {
    fn name(self) -> &'static str {
        match self {
            DateField::Year => "year",
            DateField::Month => "month",
            DateField::Day => "day",
            DateField::Hour => "hour",
            DateField::Minute => "minute",
            DateField::Second => "second",
            DateField::DayOfWeek => "dayofweek",
        }
    }

    fn part(self) -> arrow::compute::DatePart {
        use arrow::compute::DatePart;
        match self {
            DateField::Year => DatePart::Year,
            DateField::Month => DatePart::Month,
            DateField::Day => DatePart::Day,
            DateField::Hour => DatePart::Hour,
            DateField::Minute => DatePart::Minute,
            DateField::Second => DatePart::Second,
            DateField::DayOfWeek => DatePart::DayOfWeekMonday0,
        }
    }
}

/// A string operation (pandas' `.str` accessor). `Contains` and `Replace` take literal text
/// (pandas' `regex=False`); `ContainsRegex` and `ReplaceRegex` regular expressions (pandas'
/// default, `regex=True`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StrOp {
    /// `.str.contains(pat, regex=False)`: whether the text holds `pat`.
    Contains(String),
    /// `.str.startswith(prefix)`.
    StartsWith(String),
    /// `.str.endswith(suffix)`.
    EndsWith(String),
    /// `.str.lower()` (Unicode lower case, with a word-final sigma as Python writes it).
    Lower,
    /// `.str.upper()` (Unicode upper case: `"ß"` becomes `"SS"`, as in Python).
    Upper,
    /// `.str.len()`: the number of characters (Unicode scalar values, as Python counts).
    Len,
    /// `.str.replace(pat, repl, regex=False)`: every occurrence of `pat` replaced.
    Replace {
        /// The text replaced.
        pat: String,
        /// Its replacement.
        repl: String,
    },
    /// `.str.strip()`: leading and trailing whitespace removed (Python's whitespace).
    Strip,
    /// `.str.contains(pat)` (`regex=True`): whether the pattern matches anywhere in the text
    /// (Python's `re.search`).
    ContainsRegex(Pattern),
    /// `.str.replace(pat, repl)` (`regex=True`): every match replaced by `repl`, written with
    /// Python's template syntax (`\1`, `\g<name>`, `\n`; `$` is literal).
    ReplaceRegex {
        /// The regular expression.
        pat: Pattern,
        /// The replacement template, as Python's `re.sub` reads it.
        repl: String,
    },
}

/// A regular expression of the `.str` accessor, compiled when built (or decoded on a worker),
/// so one partition's task compiles it once and every row and piece shares it. (arrow-string's
/// `regexp_is_match_scalar` compiles its pattern on every call, once per 64K-row piece, and
/// arrow has no replace kernel, so kiln loops over the values itself.)
///
/// The syntax is the `regex` crate's, which agrees with Python's `re` for classes, anchors,
/// alternation, repetition, groups (`(?P<name>...)`), flags (`(?i)`) and Unicode (`\w`, `\d`
/// are Unicode-aware in both); it has no lookaround and no backreferences inside a pattern, which
/// are refused when built. `$` matches only at the very end (Python's also before a final `\n`).
#[derive(Clone)]
pub struct Pattern(regex::Regex);

impl Pattern {
    /// The pattern compiled.
    ///
    /// # Errors
    /// [`DataFrameError::InvalidArgument`] with the compiler's message when `pattern` is not a
    /// valid regular expression (or is too large).
    pub fn new(pattern: &str) -> Result<Pattern> {
        Pattern::compile(pattern).map_err(|message| {
            DataFrameError::InvalidArgument(format!("invalid regular expression {pattern:?}: {message}"))
        })
    }

    pub(crate) fn compile(pattern: &str) -> std::result::Result<Pattern, String> {
        regex::Regex::new(pattern).map(Pattern).map_err(|e| e.to_string())
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Pattern) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Pattern {}

impl std::hash::Hash for Pattern {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

// On the wire a pattern is its text; decoding compiles it (a task decoded once per partition).
impl Serialize for Pattern {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Pattern, D::Error> {
        let text = String::deserialize(deserializer)?;
        Pattern::compile(&text).map_err(serde::de::Error::custom)
    }
}

/// One piece of a replacement template: text, or the text of a group (empty when the group
/// did not take part in the match, as in Python 3.5+).
#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    Group(usize),
}

/// `repl` read as Python's `re.sub` reads a template (`sre_parse.parse_template`): `\1` to
/// `\99` and `\g<1>`/`\g<name>` are groups, `\0` and three octal digits are characters,
/// `\n`, `\t`, `\\` ... are escapes, a backslash before an unknown ASCII letter is an error and
/// before anything else stays as written. A group the pattern does not have is an error.
fn parse_template(repl: &str, regex: &regex::Regex) -> std::result::Result<Vec<Piece>, String> {
    let groups = regex.captures_len() - 1;
    let mut pieces = Vec::new();
    let mut text = String::new();
    let group = |pieces: &mut Vec<Piece>, text: &mut String, index: usize| {
        if index > groups {
            return Err(format!("invalid group reference {index} (the pattern has {groups} group(s))"));
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(std::mem::take(text)));
        }
        pieces.push(Piece::Group(index));
        Ok(())
    };
    let mut chars = repl.chars().peekable();
    let octal = |c: char| ('0'..='7').contains(&c);
    while let Some(c) = chars.next() {
        if c != '\\' {
            text.push(c);
            continue;
        }
        let Some(e) = chars.next() else { return Err("bad escape (end of template)".into()) };
        match e {
            'g' => {
                if chars.next() != Some('<') {
                    return Err("missing < after \\g".into());
                }
                let mut name = String::new();
                loop {
                    match chars.next() {
                        Some('>') => break,
                        Some(c) => name.push(c),
                        None => return Err(format!("missing > after \\g<{name}")),
                    }
                }
                let index = if !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()) {
                    name.parse::<usize>().unwrap_or(usize::MAX)
                } else {
                    regex
                        .capture_names()
                        .position(|n| n == Some(name.as_str()))
                        .ok_or_else(|| format!("unknown group name {name:?}"))?
                };
                group(&mut pieces, &mut text, index)?;
            }
            '0' => {
                let mut code = 0u32;
                for _ in 0..2 {
                    match chars.peek() {
                        Some(&d) if octal(d) => {
                            code = code * 8 + d.to_digit(8).unwrap_or(0);
                            chars.next();
                        }
                        _ => break,
                    }
                }
                text.push(char::from_u32(code).unwrap_or('\0'));
            }
            '1'..='9' => {
                let mut digits = String::from(e);
                if let Some(&d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    chars.next();
                    let third = chars.peek().copied().filter(|&t| octal(e) && octal(d) && octal(t));
                    if let Some(t) = third {
                        chars.next();
                        let code = [e, d, t].iter().fold(0u32, |n, c| n * 8 + c.to_digit(8).unwrap_or(0));
                        if code > 0o377 {
                            return Err(format!("octal escape value \\{e}{d}{t} outside of range 0-0o377"));
                        }
                        text.push(char::from_u32(code).unwrap_or('\0'));
                        continue;
                    }
                    digits.push(d);
                }
                group(&mut pieces, &mut text, digits.parse().unwrap_or(usize::MAX))?;
            }
            'a' => text.push('\u{7}'),
            'b' => text.push('\u{8}'),
            'f' => text.push('\u{c}'),
            'n' => text.push('\n'),
            'r' => text.push('\r'),
            't' => text.push('\t'),
            'v' => text.push('\u{b}'),
            '\\' => text.push('\\'),
            e if e.is_ascii_alphabetic() => return Err(format!("bad escape \\{e}")),
            e => {
                text.push('\\');
                text.push(e);
            }
        }
    }
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    Ok(pieces)
}

/// `v` with every match of `regex` replaced as Python's `re.sub` does (3.7+): an empty match
/// right after a non-empty one is replaced too (`a*` turns `"baa"` into `"-b--"`), and after
/// an empty match the search moves on one character. (Python would first try a non-empty
/// match at the same place, which differs only for patterns that prefer the empty match
/// there, like `a??`.)
fn replace_python(regex: &regex::Regex, template: &[Piece], v: &str, out: &mut String) {
    let mut copied = 0;
    let mut at = 0;
    while at <= v.len() {
        let Some(caps) = regex.captures_at(v, at) else { break };
        let Some(m) = caps.get(0) else { break };
        out.push_str(&v[copied..m.start()]);
        for piece in template {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Group(i) => out.push_str(caps.get(*i).map_or("", |g| g.as_str())),
            }
        }
        copied = m.end();
        at = if m.is_empty() {
            match v[m.end()..].chars().next() {
                Some(c) => m.end() + c.len_utf8(),
                None => break,
            }
        } else {
            m.end()
        };
    }
    out.push_str(&v[copied..]);
}

impl StrOp {
    fn name(&self) -> &'static str {
        match self {
            StrOp::Contains(_) => "contains",
            StrOp::StartsWith(_) => "startswith",
            StrOp::EndsWith(_) => "endswith",
            StrOp::Lower => "lower",
            StrOp::Upper => "upper",
            StrOp::Len => "len",
            StrOp::Replace { .. } => "replace",
            StrOp::Strip => "strip",
            StrOp::ContainsRegex(_) => "contains_regex",
            StrOp::ReplaceRegex { .. } => "replace_regex",
        }
    }

    /// The type of the result: a mask, a count or text.
    fn output(&self) -> DataType {
        match self {
            StrOp::Contains(_) | StrOp::StartsWith(_) | StrOp::EndsWith(_) | StrOp::ContainsRegex(_) => {
                DataType::Boolean
            }
            StrOp::Len => DataType::Int64,
            StrOp::Lower | StrOp::Upper | StrOp::Replace { .. } | StrOp::Strip | StrOp::ReplaceRegex { .. } => {
                DataType::Utf8
            }
        }
    }

    /// The operation on text values (already `Utf8`); missing stays missing.
    fn apply(&self, strings: &Datum) -> std::result::Result<ArrayRef, arrow::error::ArrowError> {
        use arrow::compute::kernels::comparison::{contains, ends_with, starts_with};
        let pattern = |p: &str| Datum { array: Scalar::Str(p.to_string()).to_array(), scalar: true };
        let values = strings.array.as_string::<i32>();
        Ok(match self {
            StrOp::Contains(p) => Arc::new(contains(&strings.datum(), &pattern(p).datum())?),
            StrOp::StartsWith(p) => Arc::new(starts_with(&strings.datum(), &pattern(p).datum())?),
            StrOp::EndsWith(p) => Arc::new(ends_with(&strings.datum(), &pattern(p).datum())?),
            // Arrow's `length` counts bytes; pandas counts characters.
            StrOp::Len => Arc::new(values.iter().map(|v| v.map(|v| v.chars().count() as i64)).collect::<Int64Array>()),
            StrOp::Lower => map_strings(values, |v, out| {
                if v.is_ascii() {
                    out.push_str(v);
                    out.make_ascii_lowercase();
                } else {
                    // `str::to_lowercase`, not per character: it writes a word-final sigma
                    // as Python does.
                    out.push_str(&v.to_lowercase());
                }
            }),
            StrOp::Upper => map_strings(values, |v, out| {
                if v.is_ascii() {
                    out.push_str(v);
                    out.make_ascii_uppercase();
                } else {
                    out.push_str(&v.to_uppercase());
                }
            }),
            StrOp::Replace { pat, repl } => map_strings(values, |v, out| {
                // As `str::replace` (and Python): an empty pattern matches between characters.
                let mut last = 0;
                for (at, found) in v.match_indices(pat.as_str()) {
                    out.push_str(&v[last..at]);
                    out.push_str(repl);
                    last = at + found.len();
                }
                out.push_str(&v[last..]);
            }),
            // Python's `str.isspace` also counts the separators U+001C..U+001F, which Unicode's
            // White_Space (Rust's `char::is_whitespace`) does not.
            StrOp::Strip => map_strings(values, |v, out| {
                out.push_str(v.trim_matches(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)));
            }),
            StrOp::ContainsRegex(p) => {
                Arc::new(values.iter().map(|v| v.map(|v| p.0.is_match(v))).collect::<BooleanArray>())
            }
            StrOp::ReplaceRegex { pat, repl } => {
                // Checked when the expression was typed; parsing is cheap next to the rows.
                let template = parse_template(repl, &pat.0).map_err(arrow::error::ArrowError::InvalidArgumentError)?;
                map_strings(values, |v, out| replace_python(&pat.0, &template, v, out))
            }
        })
    }
}

/// A new string array with `f` applied to every present value (`f` writes into a cleared
/// buffer reused across rows); missing values stay missing.
fn map_strings(values: &arrow::array::StringArray, f: impl Fn(&str, &mut String)) -> ArrayRef {
    let mut builder = StringBuilder::with_capacity(values.len(), values.value_data().len());
    let mut out = String::new();
    for v in values {
        match v {
            Some(v) => {
                out.clear();
                f(v, &mut out);
                builder.append_value(&out);
            }
            None => builder.append_null(),
        }
    }
    Arc::new(builder.finish())
}

/// An operation of the `.dt` accessor that gives dates or timestamps.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TimeOp {
    /// `.dt.date`: the calendar date, as `date32` (the local date of a timestamp with a time
    /// zone, as pandas gives).
    Date,
    /// `.dt.floor(freq)`: rounded down to a multiple of a fixed frequency (`"s"`, `"15min"`,
    /// `"h"`, `"2D"`, ...) counted from the epoch, as pandas does; in local wall time for
    /// timestamps with a fixed-offset zone (named zones are refused).
    Floor(String),
}

/// `x` rounded to `decimals` places exactly as NumPy's `np.round` (which pandas calls) does it:
/// scaled by a power of ten, rounded half to even, scaled back. Doing the same two float
/// operations (not a correctly rounded decimal rounding) is what gives pandas' `0.12` for
/// `0.125` and `2.68` for `2.675`.
fn round_float<F>(x: F, decimals: i32, scale: impl Fn(f64) -> F) -> F
where
    F: Copy + std::ops::Mul<Output = F> + std::ops::Div<Output = F> + RoundTiesEven,
{
    let f = scale(power_of_ten(decimals.unsigned_abs()));
    if decimals >= 0 { (x * f).round_ties_even() / f } else { (x / f).round_ties_even() * f }
}

/// NumPy's `power_of_ten`: exact up to `1e8`, then repeated multiplication (stopped once it is
/// infinite, where pandas' answer is NaN).
fn power_of_ten(n: u32) -> f64 {
    const SMALL: [f64; 9] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8];
    if let Some(&p) = SMALL.get(n as usize) {
        return p;
    }
    let mut p: f64 = 1e9;
    for _ in 9..n {
        if p.is_infinite() {
            break;
        }
        p *= 10.0;
    }
    p
}

trait RoundTiesEven {
    fn round_ties_even(self) -> Self;
}

impl RoundTiesEven for f64 {
    fn round_ties_even(self) -> Self {
        f64::round_ties_even(self)
    }
}

impl RoundTiesEven for f32 {
    fn round_ties_even(self) -> Self {
        f32::round_ties_even(self)
    }
}

/// An integer rounded to `10^-decimals` (`decimals < 0`), halves to even, in exact integer
/// arithmetic (NumPy goes through floats, which agrees below 2^52).
fn round_integer(x: i128, decimals: i32) -> i128 {
    let digits = decimals.unsigned_abs();
    // Every 64-bit integer is below half of 10^20 in magnitude: it rounds to zero.
    if digits > 20 {
        return 0;
    }
    let f = 10i128.pow(digits);
    let (q, r) = (x.div_euclid(f), x.rem_euclid(f));
    let up = 2 * r > f || (2 * r == f && q % 2 != 0);
    (q + i128::from(up)) * f
}

fn round_ints<T>(array: &ArrayRef, decimals: i32) -> std::result::Result<ArrayRef, arrow::error::ArrowError>
where
    T: arrow::datatypes::ArrowPrimitiveType,
    T::Native: Into<i128> + TryFrom<i128>,
{
    let rounded = array.as_primitive::<T>().try_unary::<_, T, arrow::error::ArrowError>(|x| {
        let r = round_integer(x.into(), decimals);
        T::Native::try_from(r)
            .map_err(|_| arrow::error::ArrowError::ComputeError(format!("{r} does not fit {}", T::DATA_TYPE)))
    })?;
    Ok(Arc::new(rounded))
}

/// `round(decimals)` of a column of numbers: floats as NumPy rounds them, integers unchanged
/// for `decimals >= 0`.
fn round_array(array: &ArrayRef, decimals: i32) -> std::result::Result<ArrayRef, arrow::error::ArrowError> {
    use arrow::datatypes::{
        Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type, UInt32Type,
        UInt64Type,
    };
    let t = array.data_type();
    if t.is_integer() && decimals >= 0 {
        return Ok(array.clone());
    }
    Ok(match t {
        DataType::Float64 => {
            Arc::new(array.as_primitive::<Float64Type>().unary::<_, Float64Type>(|x| round_float(x, decimals, |f| f)))
        }
        // NumPy rounds float32 in float32, the scale converted to float32 too.
        DataType::Float32 => Arc::new(
            array.as_primitive::<Float32Type>().unary::<_, Float32Type>(|x| round_float(x, decimals, |f| f as f32)),
        ),
        DataType::Float16 => {
            let wide = arrow::compute::cast(array, &DataType::Float32)?;
            arrow::compute::cast(&round_array(&wide, decimals)?, &DataType::Float16)?
        }
        DataType::Int8 => round_ints::<Int8Type>(array, decimals)?,
        DataType::Int16 => round_ints::<Int16Type>(array, decimals)?,
        DataType::Int32 => round_ints::<Int32Type>(array, decimals)?,
        DataType::Int64 => round_ints::<Int64Type>(array, decimals)?,
        DataType::UInt8 => round_ints::<UInt8Type>(array, decimals)?,
        DataType::UInt16 => round_ints::<UInt16Type>(array, decimals)?,
        DataType::UInt32 => round_ints::<UInt32Type>(array, decimals)?,
        DataType::UInt64 => round_ints::<UInt64Type>(array, decimals)?,
        other => {
            return Err(arrow::error::ArrowError::InvalidArgumentError(format!("round needs numbers, not {other}")));
        }
    })
}

/// Timestamps rounded down to multiples of `step` of their unit, counted from the epoch of
/// the wall clock `offset` units ahead of UTC (0 without a time zone), as pandas floors a
/// zoned timestamp's local time; a result outside the representable timestamps fails (pandas
/// raises `OutOfBoundsDatetime`).
fn floor_timestamps<T: arrow::datatypes::ArrowTimestampType>(
    array: &ArrayRef,
    step: i64,
    offset: i64,
) -> std::result::Result<ArrayRef, arrow::error::ArrowError> {
    let array = array.as_primitive::<T>();
    let floored = array.try_unary::<_, T, arrow::error::ArrowError>(|t| {
        t.checked_add(offset)
            .and_then(|local| local.div_euclid(step).checked_mul(step))
            .and_then(|local| local.checked_sub(offset))
            .ok_or_else(|| {
                arrow::error::ArrowError::ComputeError(format!("the floor of {t} is out of the timestamps' range"))
            })
    })?;
    Ok(Arc::new(floored.with_timezone_opt(array.timezone())))
}

/// The offset from UTC, in seconds, of a time zone that is one: `UTC` (`Etc/UTC`, `Z`) or
/// `+05:30`, `-0300`, `+09` as Arrow writes offsets. A named zone (`Europe/Berlin`) is `None`:
/// its offset changes over the year and reading it needs the tz database, which kiln is not
/// built with (arrow's `chrono-tz` feature).
fn fixed_offset_seconds(tz: &str) -> Option<i64> {
    if tz.eq_ignore_ascii_case("utc") || tz.eq_ignore_ascii_case("etc/utc") || tz == "Z" {
        return Some(0);
    }
    let (sign, rest) = match tz.as_bytes().first()? {
        b'+' => (1, &tz[1..]),
        b'-' => (-1, &tz[1..]),
        _ => return None,
    };
    let digits: String = match rest.len() {
        5 if rest.as_bytes()[2] == b':' => rest.chars().filter(|&c| c != ':').collect(),
        4 => rest.to_string(),
        2 => format!("{rest}00"),
        _ => return None,
    };
    if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (hours, minutes) = (digits[..2].parse::<i64>().ok()?, digits[2..].parse::<i64>().ok()?);
    (hours < 24 && minutes < 60).then_some(sign * (hours * 3600 + minutes * 60))
}

/// A row-wise expression over a frame's columns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Expr {
    /// A column by name.
    Column(String),
    /// A literal, broadcast to every row.
    Literal(Scalar),
    /// `left op right`.
    Binary {
        /// The operation.
        op: BinaryOp,
        /// The left operand.
        left: Box<Expr>,
        /// The right operand.
        right: Box<Expr>,
    },
    /// Boolean negation (`~`).
    Not(Box<Expr>),
    /// Arithmetic negation.
    Neg(Box<Expr>),
    /// Absolute value.
    Abs(Box<Expr>),
    /// `isna()`.
    IsNull(Box<Expr>),
    /// `notna()`.
    IsNotNull(Box<Expr>),
    /// `fillna(value)`.
    FillNull {
        /// The expression whose missing values are replaced.
        expr: Box<Expr>,
        /// The replacement.
        value: Scalar,
    },
    /// `astype(dtype)`; values that do not convert fail the partition (pandas raises too).
    Cast {
        /// The expression converted.
        expr: Box<Expr>,
        /// The target type.
        to: DType,
    },
    /// `between(low, high)`, both ends included (pandas' default).
    Between {
        /// The expression tested.
        expr: Box<Expr>,
        /// The lower bound.
        low: Scalar,
        /// The upper bound.
        high: Scalar,
    },
    /// `clip(lower, upper)`: values below `lower` become `lower`, above `upper` become `upper`
    /// (either bound optional); missing values stay missing.
    Clip {
        /// The expression clipped.
        expr: Box<Expr>,
        /// The lower bound.
        lower: Option<Scalar>,
        /// The upper bound.
        upper: Option<Scalar>,
    },
    /// `isin(values)`; a missing value is in the list when the list holds one.
    IsIn {
        /// The expression tested.
        expr: Box<Expr>,
        /// The values.
        values: Vec<Scalar>,
    },
    /// A date or timestamp field (`.dt.hour`).
    DatePart {
        /// The date or timestamp expression.
        expr: Box<Expr>,
        /// The field.
        field: DateField,
    },
    /// A string operation (`.str.lower()`); missing values give missing results.
    Str {
        /// The string expression.
        expr: Box<Expr>,
        /// The operation.
        op: StrOp,
    },
    /// `round(decimals)` of numbers (pandas' `round`, halves to even).
    Round {
        /// The numeric expression.
        expr: Box<Expr>,
        /// Decimal places; negative rounds to tens, hundreds, ...
        decimals: i32,
    },
    /// A date or timestamp operation of `.dt` (`.dt.date`, `.dt.floor("h")`).
    Time {
        /// The date or timestamp expression.
        expr: Box<Expr>,
        /// The operation.
        op: TimeOp,
    },
    /// The same values under another name.
    Alias {
        /// The expression.
        expr: Box<Expr>,
        /// Its name.
        name: String,
    },
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Column(name) => write!(f, "{name}"),
            Expr::Literal(v) => write!(f, "{v}"),
            Expr::Binary { op, left, right } => write!(f, "({left} {} {right})", op.symbol()),
            Expr::Not(e) => write!(f, "~{e}"),
            Expr::Neg(e) => write!(f, "-{e}"),
            Expr::Abs(e) => write!(f, "abs({e})"),
            Expr::IsNull(e) => write!(f, "isna({e})"),
            Expr::IsNotNull(e) => write!(f, "notna({e})"),
            Expr::FillNull { expr, value } => write!(f, "fillna({expr}, {value})"),
            Expr::Cast { expr, to } => write!(f, "astype({expr}, {to:?})"),
            Expr::Between { expr, low, high } => write!(f, "between({expr}, {low}, {high})"),
            Expr::Clip { expr, lower, upper } => {
                let bound = |b: &Option<Scalar>| b.as_ref().map_or("None".to_string(), ToString::to_string);
                write!(f, "clip({expr}, {}, {})", bound(lower), bound(upper))
            }
            Expr::IsIn { expr, values } => {
                let list: Vec<String> = values.iter().map(ToString::to_string).collect();
                write!(f, "isin({expr}, [{}])", list.join(", "))
            }
            Expr::DatePart { expr, field } => write!(f, "{expr}.dt.{}", field.name()),
            Expr::Str { expr, op } => match op {
                StrOp::Contains(p) | StrOp::StartsWith(p) | StrOp::EndsWith(p) => {
                    write!(f, "{expr}.str.{}({p:?})", op.name())
                }
                StrOp::Replace { pat, repl } => write!(f, "{expr}.str.replace({pat:?}, {repl:?})"),
                StrOp::ContainsRegex(p) => write!(f, "{expr}.str.contains_regex({p:?})"),
                StrOp::ReplaceRegex { pat, repl } => write!(f, "{expr}.str.replace_regex({pat:?}, {repl:?})"),
                _ => write!(f, "{expr}.str.{}()", op.name()),
            },
            Expr::Round { expr, decimals } => write!(f, "round({expr}, {decimals})"),
            Expr::Time { expr, op: TimeOp::Date } => write!(f, "{expr}.dt.date"),
            Expr::Time { expr, op: TimeOp::Floor(freq) } => write!(f, "{expr}.dt.floor({freq:?})"),
            Expr::Alias { expr, name } => write!(f, "{expr} as {name}"),
        }
    }
}

fn type_error(operation: &str, expr: &Expr, found: &DataType, expected: &str) -> DataFrameError {
    DataFrameError::TypeMismatch {
        operation: operation.to_string(),
        expression: expr.to_string(),
        found: found.clone(),
        expected: expected.to_string(),
    }
}

fn is_numeric(t: &DataType) -> bool {
    t.is_integer() || t.is_floating()
}

fn is_string(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

/// Text a string operation reads: any string layout, dictionary-encoded strings, or a column
/// with no values at all (`Null`, all missing).
fn is_text(t: &DataType) -> bool {
    match t {
        DataType::Dictionary(_, values) => is_string(values),
        t => is_string(t) || *t == DataType::Null,
    }
}

fn is_temporal(t: &DataType) -> bool {
    matches!(t, DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64)
}

/// The type two numbers meet as: the same type when equal, `float64` when either is a float,
/// `int64` otherwise (pandas' promotion for the common cases).
fn numeric_common(left: &DataType, right: &DataType) -> DataType {
    if left == right {
        left.clone()
    } else if left.is_floating() || right.is_floating() {
        DataType::Float64
    } else {
        DataType::Int64
    }
}

/// The types the operands of a comparison (or `isin`/`between`/`fillna`) are cast to before
/// the kernel runs, or `None` when they cannot meet.
fn comparable(left: &DataType, right: &DataType) -> Option<DataType> {
    match (left, right) {
        (l, r) if l == r => Some(l.clone()),
        (DataType::Null, other) | (other, DataType::Null) => Some(other.clone()),
        (l, r) if is_numeric(l) && is_numeric(r) => Some(numeric_common(l, r)),
        (l, r) if is_string(l) && is_string(r) => Some(DataType::Utf8),
        // A timestamp column against a string literal ("2015-01-01"): the string is parsed.
        (t, s) | (s, t) if is_temporal(t) && is_string(s) => Some(t.clone()),
        (l, r) if is_temporal(l) && is_temporal(r) => {
            Some(DataType::Timestamp(arrow::datatypes::TimeUnit::Nanosecond, None))
        }
        _ => None,
    }
}

impl Expr {
    /// A column reference.
    pub fn col(name: impl Into<String>) -> Expr {
        Expr::Column(name.into())
    }

    /// A literal.
    pub fn lit(value: impl Into<Scalar>) -> Expr {
        Expr::Literal(value.into())
    }

    /// How deep the expression nests (a column or literal is 1).
    pub fn depth(&self) -> usize {
        1 + self.children().map(Expr::depth).max().unwrap_or(0)
    }

    fn children(&self) -> impl Iterator<Item = &Expr> {
        let (a, b): (Option<&Expr>, Option<&Expr>) = match self {
            Expr::Column(_) | Expr::Literal(_) => (None, None),
            Expr::Binary { left, right, .. } => (Some(left), Some(right)),
            Expr::Not(e) | Expr::Neg(e) | Expr::Abs(e) | Expr::IsNull(e) | Expr::IsNotNull(e) => (Some(e), None),
            Expr::FillNull { expr, .. }
            | Expr::Cast { expr, .. }
            | Expr::Between { expr, .. }
            | Expr::Clip { expr, .. }
            | Expr::IsIn { expr, .. }
            | Expr::DatePart { expr, .. }
            | Expr::Str { expr, .. }
            | Expr::Round { expr, .. }
            | Expr::Time { expr, .. }
            | Expr::Alias { expr, .. } => (Some(expr), None),
        };
        a.into_iter().chain(b)
    }

    /// The name a column computed from this expression gets: an alias, else the first column it
    /// reads (pandas keeps a series' name through its operations), else `"literal"`.
    pub fn output_name(&self) -> String {
        match self {
            Expr::Alias { name, .. } | Expr::Column(name) => name.clone(),
            Expr::Literal(_) => "literal".to_string(),
            _ => self.children().map(Expr::output_name).find(|n| n != "literal").unwrap_or_else(|| "literal".into()),
        }
    }

    /// Adds the columns the expression reads to `out` (without duplicates).
    pub fn columns_into(&self, out: &mut Vec<String>) {
        if let Expr::Column(name) = self
            && !out.contains(name)
        {
            out.push(name.clone());
        }
        for child in self.children() {
            child.columns_into(out);
        }
    }

    /// Whether evaluating the expression can fail because of the values in some row (an
    /// integer `%` by zero, an `astype` that does not convert), not only because of types. Such
    /// an expression must only see the rows a filter kept, so it is never evaluated through a
    /// filter's mask.
    pub(crate) fn fails_on_values(&self) -> bool {
        match self {
            // Rounding integers to tens can overflow; a floor or a date can leave the range.
            Expr::Binary { op: BinaryOp::Rem, .. } | Expr::Cast { .. } | Expr::Time { .. } => true,
            Expr::Round { decimals, .. } if *decimals < 0 => true,
            e => e.children().any(Expr::fails_on_values),
        }
    }

    /// The type of the expression's values over `schema`, checking every column exists and
    /// every operation accepts its operands' types.
    ///
    /// # Errors
    /// [`DataFrameError::ColumnNotFound`], [`DataFrameError::TypeMismatch`] naming the operand.
    pub fn data_type(&self, schema: &Schema) -> Result<DataType> {
        Ok(match self {
            Expr::Column(name) => match schema.field_with_name(name) {
                Ok(field) => field.data_type().clone(),
                Err(_) => {
                    return Err(DataFrameError::ColumnNotFound {
                        column: name.clone(),
                        available: schema.fields().iter().map(|f| f.name().clone()).collect(),
                    });
                }
            },
            Expr::Literal(v) => v.data_type(),
            Expr::Binary { op, left, right } => {
                let (lt, rt) = (left.data_type(schema)?, right.data_type(schema)?);
                let operation = op.symbol();
                if op.is_arithmetic() {
                    for (e, t) in [(left, &lt), (right, &rt)] {
                        if !is_numeric(t) && *t != DataType::Null {
                            return Err(type_error(operation, e, t, "a number is needed"));
                        }
                    }
                    match (op, &lt, &rt) {
                        (BinaryOp::Div, _, _) => DataType::Float64,
                        (_, DataType::Null, t) | (_, t, DataType::Null) => t.clone(),
                        _ => numeric_common(&lt, &rt),
                    }
                } else if op.is_comparison() {
                    if comparable(&lt, &rt).is_none() {
                        return Err(type_error(
                            operation,
                            right,
                            &rt,
                            &format!("it cannot be compared with {left} of type {lt}"),
                        ));
                    }
                    DataType::Boolean
                } else {
                    for (e, t) in [(left, &lt), (right, &rt)] {
                        if *t != DataType::Boolean {
                            return Err(type_error(operation, e, t, "a boolean is needed"));
                        }
                    }
                    DataType::Boolean
                }
            }
            Expr::Not(e) => {
                let t = e.data_type(schema)?;
                if t != DataType::Boolean {
                    return Err(type_error("~", e, &t, "a boolean is needed"));
                }
                t
            }
            Expr::Neg(e) | Expr::Abs(e) => {
                let t = e.data_type(schema)?;
                if !is_numeric(&t) {
                    return Err(type_error(
                        if matches!(self, Expr::Neg(_)) { "-" } else { "abs" },
                        e,
                        &t,
                        "a number is needed",
                    ));
                }
                t
            }
            Expr::IsNull(e) | Expr::IsNotNull(e) => {
                e.data_type(schema)?;
                DataType::Boolean
            }
            Expr::FillNull { expr, value } => {
                let t = expr.data_type(schema)?;
                let vt = value.data_type();
                match comparable(&t, &vt) {
                    Some(_) if is_numeric(&t) && is_numeric(&vt) => numeric_common(&t, &vt),
                    Some(_) => t,
                    None => {
                        return Err(type_error("fillna", expr, &t, &format!("the fill value {value} does not fit it")));
                    }
                }
            }
            Expr::Cast { expr, to } => {
                let t = expr.data_type(schema)?;
                if !can_cast_types(&t, &to.arrow()) {
                    return Err(type_error("astype", expr, &t, &format!("it cannot be converted to {}", to.arrow())));
                }
                to.arrow()
            }
            Expr::Between { expr, low, high } => {
                let t = expr.data_type(schema)?;
                for bound in [low, high] {
                    if comparable(&t, &bound.data_type()).is_none() {
                        return Err(type_error("between", expr, &t, &format!("it cannot be compared with {bound}")));
                    }
                }
                DataType::Boolean
            }
            Expr::Clip { expr, lower, upper } => {
                let mut t = expr.data_type(schema)?;
                if !is_numeric(&t) {
                    return Err(type_error("clip", expr, &t, "a number is needed"));
                }
                for bound in [lower, upper].into_iter().flatten() {
                    let bt = bound.data_type();
                    if !is_numeric(&bt) {
                        return Err(type_error("clip", expr, &t, &format!("the bound {bound} is not a number")));
                    }
                    t = numeric_common(&t, &bt);
                }
                t
            }
            Expr::IsIn { expr, values } => {
                let t = expr.data_type(schema)?;
                if let Some(bad) = values.iter().find(|v| comparable(&t, &v.data_type()).is_none()) {
                    return Err(type_error("isin", expr, &t, &format!("it cannot be compared with {bad}")));
                }
                DataType::Boolean
            }
            Expr::DatePart { expr, field } => {
                let t = expr.data_type(schema)?;
                if !is_temporal(&t) {
                    return Err(type_error(
                        &format!(".dt.{}", field.name()),
                        expr,
                        &t,
                        "a date or timestamp is needed",
                    ));
                }
                DataType::Int32
            }
            Expr::Str { expr, op } => {
                let t = expr.data_type(schema)?;
                if !is_text(&t) {
                    return Err(type_error(&format!(".str.{}", op.name()), expr, &t, "a string is needed"));
                }
                if let StrOp::ReplaceRegex { pat, repl } = op {
                    parse_template(repl, &pat.0).map_err(|message| DataFrameError::InvalidPattern {
                        operation: ".str.replace_regex".into(),
                        expression: expr.to_string(),
                        pattern: repl.clone(),
                        message: format!("replacement: {message}"),
                    })?;
                }
                op.output()
            }
            Expr::Round { expr, .. } => {
                let t = expr.data_type(schema)?;
                if !is_numeric(&t) {
                    return Err(type_error("round", expr, &t, "a number is needed"));
                }
                t
            }
            Expr::Time { expr, op } => {
                let t = expr.data_type(schema)?;
                time_output(expr, op, &t)?
            }
            Expr::Alias { expr, .. } => expr.data_type(schema)?,
        })
    }

    /// Evaluates the expression on one partition: one value per row.
    ///
    /// # Errors
    /// [`DataFrameError::Compute`] when a kernel fails (a cast of a value that does not parse,
    /// an integer division by zero, ...), or the errors of [`Expr::data_type`] for an
    /// expression that does not fit the batch.
    pub fn evaluate(&self, batch: &RecordBatch) -> Result<ArrayRef> {
        let value = self.eval(batch)?;
        if value.scalar { broadcast(&value.array, batch.num_rows()) } else { Ok(value.array) }
    }

    fn eval(&self, batch: &RecordBatch) -> Result<Datum> {
        let fail = |e: arrow::error::ArrowError| DataFrameError::compute(self.to_string(), e);
        Ok(match self {
            Expr::Column(name) => match batch.column_by_name(name) {
                Some(array) => Datum::array(array.clone()),
                None => {
                    return Err(DataFrameError::ColumnNotFound {
                        column: name.clone(),
                        available: batch.schema().fields().iter().map(|f| f.name().clone()).collect(),
                    });
                }
            },
            Expr::Literal(v) => Datum { array: v.to_array(), scalar: true },
            Expr::Binary { op, left, right } => {
                let (l, r) = (left.eval(batch)?, right.eval(batch)?);
                let scalar = l.scalar && r.scalar;
                let (lt, rt) = (l.array.data_type().clone(), r.array.data_type().clone());
                let array: ArrayRef = if op.is_arithmetic() {
                    let target = if *op == BinaryOp::Div {
                        DataType::Float64
                    } else {
                        comparable(&lt, &rt).unwrap_or(DataType::Float64)
                    };
                    let (l, r) = (l.cast(&target)?, r.cast(&target)?);
                    match op {
                        BinaryOp::Add => numeric::add_wrapping(&l.datum(), &r.datum()),
                        BinaryOp::Sub => numeric::sub_wrapping(&l.datum(), &r.datum()),
                        BinaryOp::Mul => numeric::mul_wrapping(&l.datum(), &r.datum()),
                        BinaryOp::Div => numeric::div(&l.datum(), &r.datum()),
                        _ => numeric::rem(&l.datum(), &r.datum()),
                    }
                    .map_err(fail)?
                } else if op.is_comparison() {
                    let target =
                        comparable(&lt, &rt).ok_or_else(|| type_error(op.symbol(), right, &rt, "not comparable"))?;
                    let (l, r) = (l.cast(&target)?, r.cast(&target)?);
                    if let Some(mask) = compare_column_to_scalar(&l, *op, &r) {
                        return Ok(Datum { array: Arc::new(fill_missing(&mask, *op == BinaryOp::Ne)), scalar: false });
                    }
                    let (l, r) = (l.nan_as_null()?, r.nan_as_null()?);
                    let (ld, rd) = (l.datum(), r.datum());
                    let result = match op {
                        BinaryOp::Eq => cmp::eq(&ld, &rd),
                        BinaryOp::Ne => cmp::neq(&ld, &rd),
                        BinaryOp::Lt => cmp::lt(&ld, &rd),
                        BinaryOp::Le => cmp::lt_eq(&ld, &rd),
                        BinaryOp::Gt => cmp::gt(&ld, &rd),
                        _ => cmp::gt_eq(&ld, &rd),
                    }
                    .map_err(fail)?;
                    Arc::new(fill_missing(&result, *op == BinaryOp::Ne))
                } else {
                    let (lb, rb) = (l.expand(batch.num_rows())?, r.expand(batch.num_rows())?);
                    let (lb, rb) = (as_bool(&lb, left)?, as_bool(&rb, right)?);
                    Arc::new(if *op == BinaryOp::And { and_kleene(lb, rb) } else { or_kleene(lb, rb) }.map_err(fail)?)
                };
                Datum { array, scalar }
            }
            Expr::Not(e) => {
                let v = e.eval(batch)?;
                Datum { array: Arc::new(not(as_bool(&v.array, e)?).map_err(fail)?), scalar: v.scalar }
            }
            Expr::Neg(e) => {
                let v = e.eval(batch)?;
                Datum { array: numeric::neg_wrapping(&v.array).map_err(fail)?, scalar: v.scalar }
            }
            Expr::Abs(e) => {
                let v = e.eval(batch)?;
                let zero = Datum { array: Scalar::Int(0).to_array(), scalar: true }.cast(v.array.data_type())?;
                let negative = cmp::lt(&v.array, &zero.datum()).map_err(fail)?;
                let negated = numeric::neg_wrapping(&v.array).map_err(fail)?;
                Datum { array: zip(&negative, &negated, &v.array).map_err(fail)?, scalar: v.scalar }
            }
            Expr::IsNull(e) | Expr::IsNotNull(e) => {
                let v = e.eval(batch)?.nan_as_null()?;
                let nulls = if matches!(self, Expr::IsNull(_)) { is_null(&v.array) } else { is_not_null(&v.array) };
                Datum { array: Arc::new(nulls.map_err(fail)?), scalar: v.scalar }
            }
            Expr::FillNull { expr, value } => {
                let v = expr.eval(batch)?.nan_as_null()?;
                let target = match comparable(v.array.data_type(), &value.data_type()) {
                    Some(_) if is_numeric(v.array.data_type()) && is_numeric(&value.data_type()) => {
                        numeric_common(v.array.data_type(), &value.data_type())
                    }
                    _ => v.array.data_type().clone(),
                };
                let present = is_not_null(&v.array).map_err(fail)?;
                let v = v.cast(&target)?;
                let fill = Datum { array: value.to_array(), scalar: true }.cast(&target)?;
                Datum { array: zip(&present, &v.datum(), &fill.datum()).map_err(fail)?, scalar: v.scalar }
            }
            Expr::Cast { expr, to } => expr.eval(batch)?.cast(&to.arrow())?,
            Expr::Between { expr, low, high } => {
                if let Some(mask) = between_scalars(&expr.eval(batch)?, low, high)? {
                    return Ok(Datum { array: Arc::new(mask), scalar: false });
                }
                let low =
                    Expr::Binary { op: BinaryOp::Ge, left: expr.clone(), right: Box::new(Expr::Literal(low.clone())) };
                let high =
                    Expr::Binary { op: BinaryOp::Le, left: expr.clone(), right: Box::new(Expr::Literal(high.clone())) };
                Expr::Binary { op: BinaryOp::And, left: Box::new(low), right: Box::new(high) }.eval(batch)?
            }
            Expr::Clip { expr, lower, upper } => {
                let v = expr.eval(batch)?;
                let mut target = v.array.data_type().clone();
                for bound in [lower, upper].into_iter().flatten() {
                    target = numeric_common(&target, &bound.data_type());
                }
                let mut v = v.cast(&target)?;
                for (bound, below) in [(lower, true), (upper, false)] {
                    let Some(bound) = bound else { continue };
                    let b = Datum { array: bound.to_array(), scalar: true }.cast(&target)?;
                    // A missing (or NaN) value compares as missing, and `zip` keeps it.
                    let values = v.clone().nan_as_null()?;
                    let outside =
                        if below { cmp::lt(&values.datum(), &b.datum()) } else { cmp::gt(&values.datum(), &b.datum()) }
                            .map_err(fail)?;
                    v = Datum { array: zip(&outside, &b.datum(), &v.datum()).map_err(fail)?, scalar: v.scalar };
                }
                v
            }
            Expr::IsIn { expr, values } => {
                let v = expr.eval(batch)?.nan_as_null()?;
                let missing = |value: &&Scalar| value.is_null() || matches!(value, Scalar::Float(f) if f.is_nan());
                // pandas matches a missing value when the list holds one (NaN or None).
                let mut found = match values.iter().any(|value| missing(&value)) {
                    true => arrow::compute::is_null(&v.array).map_err(fail)?,
                    false => BooleanArray::from(vec![false; v.array.len()]),
                };
                for value in values.iter().filter(|value| !missing(value)) {
                    let target = comparable(v.array.data_type(), &value.data_type())
                        .ok_or_else(|| type_error("isin", expr, v.array.data_type(), "not comparable"))?;
                    let (l, r) = (v.cast(&target)?, Datum { array: value.to_array(), scalar: true }.cast(&target)?);
                    let equal = fill_missing(&cmp::eq(&l.datum(), &r.datum()).map_err(fail)?, false);
                    found = arrow::compute::or(&found, &equal).map_err(fail)?;
                }
                Datum { array: Arc::new(found), scalar: v.scalar }
            }
            Expr::DatePart { expr, field } => {
                let v = expr.eval(batch)?;
                Datum { array: arrow::compute::date_part(&v.array, field.part()).map_err(fail)?, scalar: v.scalar }
            }
            Expr::Str { expr, op } => {
                let v = expr.eval(batch)?;
                if !is_text(v.array.data_type()) {
                    return Err(type_error(
                        &format!(".str.{}", op.name()),
                        expr,
                        v.array.data_type(),
                        "a string is needed",
                    ));
                }
                // Large, view and dictionary strings become plain `Utf8`, which every
                // operation below reads.
                let strings = v.cast(&DataType::Utf8)?;
                Datum { array: op.apply(&strings).map_err(fail)?, scalar: v.scalar }
            }
            Expr::Round { expr, decimals } => {
                let v = expr.eval(batch)?;
                if !is_numeric(v.array.data_type()) {
                    return Err(type_error("round", expr, v.array.data_type(), "a number is needed"));
                }
                Datum { array: round_array(&v.array, *decimals).map_err(fail)?, scalar: v.scalar }
            }
            Expr::Time { expr, op } => {
                let v = expr.eval(batch)?;
                let output = time_output(expr, op, v.array.data_type())?;
                match op {
                    TimeOp::Date => v.cast(&output)?,
                    TimeOp::Floor(freq) => {
                        use arrow::datatypes::{
                            TimeUnit, TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
                            TimestampSecondType,
                        };
                        let step = crate::timeseries::fixed_step_ns(freq, &format!("{expr}.dt.floor"))?;
                        // `time_output` accepted the zone, so it is a fixed offset.
                        let offset = match &output {
                            DataType::Timestamp(_, Some(tz)) => fixed_offset_seconds(tz).unwrap_or(0),
                            _ => 0,
                        };
                        // Every fixed frequency and every offset is whole seconds, so whole
                        // units of any unit.
                        let array = match output {
                            DataType::Timestamp(TimeUnit::Second, _) => {
                                floor_timestamps::<TimestampSecondType>(&v.array, step / 1_000_000_000, offset)
                            }
                            DataType::Timestamp(TimeUnit::Millisecond, _) => {
                                floor_timestamps::<TimestampMillisecondType>(&v.array, step / 1_000_000, offset * 1_000)
                            }
                            DataType::Timestamp(TimeUnit::Microsecond, _) => {
                                floor_timestamps::<TimestampMicrosecondType>(&v.array, step / 1_000, offset * 1_000_000)
                            }
                            _ => floor_timestamps::<TimestampNanosecondType>(&v.array, step, offset * 1_000_000_000),
                        }
                        .map_err(fail)?;
                        Datum { array, scalar: v.scalar }
                    }
                }
            }
            Expr::Alias { expr, .. } => expr.eval(batch)?,
        })
    }
}

/// The type `.dt.date` or `.dt.floor` gives for `expr` of type `t`, checking the operand (and
/// the frequency).
fn time_output(expr: &Expr, op: &TimeOp, t: &DataType) -> Result<DataType> {
    match op {
        TimeOp::Date => {
            if !is_temporal(t) {
                return Err(type_error(".dt.date", expr, t, "a date or timestamp is needed"));
            }
            Ok(DataType::Date32)
        }
        TimeOp::Floor(freq) => {
            match t {
                DataType::Timestamp(_, None) => {}
                // pandas floors the local wall time: with a fixed offset that is the UTC time
                // shifted by it. A named zone's offset changes (daylight saving time), and
                // pandas' errors for floors that land in a transition depend on the tz
                // database; refused rather than answered differently.
                DataType::Timestamp(_, Some(tz)) if fixed_offset_seconds(tz).is_some() => {}
                DataType::Timestamp(_, Some(tz)) => {
                    return Err(type_error(
                        ".dt.floor",
                        expr,
                        t,
                        &format!(
                            "the time zone {tz:?} is not UTC or a fixed offset (\"+05:30\"); a named zone's \
                             offsets need the tz database, which kiln is not built with"
                        ),
                    ));
                }
                _ => return Err(type_error(".dt.floor", expr, t, "a timestamp is needed")),
            }
            crate::timeseries::fixed_step_ns(freq, &format!("{expr}.dt.floor"))?;
            Ok(t.clone())
        }
    }
}

/// An intermediate value: a full column, or a literal of length one that kernels broadcast.
#[derive(Clone)]
struct Datum {
    array: ArrayRef,
    scalar: bool,
}

impl Datum {
    fn array(array: ArrayRef) -> Datum {
        Datum { array, scalar: false }
    }

    fn datum(&self) -> DatumRef<'_> {
        DatumRef(self)
    }

    fn cast(&self, to: &DataType) -> Result<Datum> {
        if self.array.data_type() == to {
            return Ok(Datum { array: self.array.clone(), scalar: self.scalar });
        }
        let options = CastOptions { safe: false, ..Default::default() };
        let array = cast_with_options(&self.array, to, &options)
            .map_err(|e| DataFrameError::compute(format!("converting {} to {to}", self.array.data_type()), e))?;
        Ok(Datum { array, scalar: self.scalar })
    }

    /// NaN made missing: pandas treats NaN as a missing value (comparisons false, `isna`
    /// true, filled by `fillna`), while Arrow orders NaN above every number.
    fn nan_as_null(self) -> Result<Datum> {
        use arrow::datatypes::{Float32Type, Float64Type};
        // Where the values are NaN, or `None` when none is (the common case, found by a scan
        // of the values alone). A missing slot's value is whatever it holds: marking it
        // changes nothing, as it is missing already.
        fn nans<T: Copy>(values: &[T], is_nan: impl Fn(T) -> bool) -> Option<BooleanArray> {
            // Blocks folded without early exit, so the scan vectorizes.
            if !values.chunks(256).any(|block| block.iter().fold(false, |any, &v| any | is_nan(v))) {
                return None;
            }
            Some(BooleanArray::new(
                arrow::buffer::BooleanBuffer::collect_bool(values.len(), |i| is_nan(values[i])),
                None,
            ))
        }
        let nan = match self.array.data_type() {
            DataType::Float64 => nans(self.array.as_primitive::<Float64Type>().values(), f64::is_nan),
            DataType::Float32 => nans(self.array.as_primitive::<Float32Type>().values(), f32::is_nan),
            _ => return Ok(self),
        };
        let Some(nan) = nan else {
            return Ok(self);
        };
        let array = arrow::compute::nullif(&self.array, &nan)
            .map_err(|e| DataFrameError::compute("treating NaN as missing", e))?;
        Ok(Datum { array, scalar: self.scalar })
    }

    fn expand(&self, rows: usize) -> Result<ArrayRef> {
        if self.scalar { broadcast(&self.array, rows) } else { Ok(self.array.clone()) }
    }
}

struct DatumRef<'a>(&'a Datum);

impl arrow::array::Datum for DatumRef<'_> {
    fn get(&self) -> (&dyn Array, bool) {
        (self.0.array.as_ref(), self.0.scalar)
    }
}

/// A one-value array repeated `rows` times.
fn broadcast(array: &ArrayRef, rows: usize) -> Result<ArrayRef> {
    let indices = UInt32Array::from(vec![0u32; rows]);
    arrow::compute::take(array, &indices, None).map_err(|e| DataFrameError::compute("broadcasting a literal", e))
}

/// `column op scalar` (or `scalar op column`) for a column of numbers or dates and a present
/// scalar of its type, in one pass over the values, missing where the column is; `None` for
/// anything else. NaN needs no mask: IEEE comparisons with NaN are false, and `!=` true, which
/// is what pandas gives once missing results are filled.
fn compare_column_to_scalar(left: &Datum, op: BinaryOp, right: &Datum) -> Option<BooleanArray> {
    use arrow::datatypes::{Date32Type, Date64Type, Float32Type, Float64Type, Int32Type, Int64Type};
    let (column, scalar, op) = match (left.scalar, right.scalar) {
        (false, true) => (&left.array, &right.array, op),
        (true, false) => (&right.array, &left.array, op.flipped()?),
        _ => return None,
    };
    if scalar.len() != 1 || scalar.is_null(0) || scalar.data_type() != column.data_type() {
        return None;
    }
    fn run<T: arrow::datatypes::ArrowPrimitiveType>(
        column: &ArrayRef,
        scalar: &ArrayRef,
        op: BinaryOp,
    ) -> Option<BooleanArray>
    where
        T::Native: PartialOrd,
    {
        let (column, s) = (column.as_primitive::<T>(), scalar.as_primitive::<T>().value(0));
        let v = column.values();
        let n = v.len();
        // One closure per operator, so each loop compiles to straight-line vector compares.
        let bits = match op {
            BinaryOp::Eq => arrow::buffer::BooleanBuffer::collect_bool(n, |i| v[i] == s),
            BinaryOp::Ne => arrow::buffer::BooleanBuffer::collect_bool(n, |i| v[i] != s),
            BinaryOp::Lt => arrow::buffer::BooleanBuffer::collect_bool(n, |i| v[i] < s),
            BinaryOp::Le => arrow::buffer::BooleanBuffer::collect_bool(n, |i| v[i] <= s),
            BinaryOp::Gt => arrow::buffer::BooleanBuffer::collect_bool(n, |i| v[i] > s),
            BinaryOp::Ge => arrow::buffer::BooleanBuffer::collect_bool(n, |i| v[i] >= s),
            _ => return None,
        };
        Some(BooleanArray::new(bits, column.nulls().cloned()))
    }
    match column.data_type() {
        DataType::Float64 => run::<Float64Type>(column, scalar, op),
        DataType::Float32 => run::<Float32Type>(column, scalar, op),
        DataType::Int64 => run::<Int64Type>(column, scalar, op),
        DataType::Int32 => run::<Int32Type>(column, scalar, op),
        DataType::Date32 => run::<Date32Type>(column, scalar, op),
        DataType::Date64 => run::<Date64Type>(column, scalar, op),
        _ => None,
    }
}

/// `between(column, low, high)` in one pass for a column of numbers or dates and present
/// bounds of its type (after the same casts the two comparisons would make); `None` for
/// anything else, which is then evaluated as `column >= low & column <= high`.
fn between_scalars(value: &Datum, low: &Scalar, high: &Scalar) -> Result<Option<BooleanArray>> {
    use arrow::datatypes::{Date32Type, Float64Type, Int32Type, Int64Type};
    if value.scalar || low.is_null() || high.is_null() {
        return Ok(None);
    }
    let t = value.array.data_type();
    let bound = |b: &Scalar| -> Result<Option<ArrayRef>> {
        let Some(target) = comparable(t, &b.data_type()) else { return Ok(None) };
        if &target != t {
            return Ok(None);
        }
        Ok(Some(Datum { array: b.to_array(), scalar: true }.cast(&target)?.array))
    };
    let (Some(lo), Some(hi)) = (bound(low)?, bound(high)?) else { return Ok(None) };
    if lo.is_null(0) || hi.is_null(0) {
        return Ok(None);
    }
    fn run<T: arrow::datatypes::ArrowPrimitiveType>(column: &ArrayRef, lo: &ArrayRef, hi: &ArrayRef) -> BooleanArray
    where
        T::Native: PartialOrd,
    {
        let (column, lo, hi) =
            (column.as_primitive::<T>(), lo.as_primitive::<T>().value(0), hi.as_primitive::<T>().value(0));
        let v = column.values();
        // `&`, not `&&`: no branch per value. NaN is outside every range.
        let bits = arrow::buffer::BooleanBuffer::collect_bool(v.len(), |i| (lo <= v[i]) & (v[i] <= hi));
        fill_missing(&BooleanArray::new(bits, column.nulls().cloned()), false)
    }
    let column = &value.array;
    Ok(match t {
        DataType::Float64 => Some(run::<Float64Type>(column, &lo, &hi)),
        DataType::Int64 => Some(run::<Int64Type>(column, &lo, &hi)),
        DataType::Int32 => Some(run::<Int32Type>(column, &lo, &hi)),
        DataType::Date32 => Some(run::<Date32Type>(column, &lo, &hi)),
        _ => None,
    })
}

/// Missing results replaced by `value`: pandas compares NaN as unequal to everything.
fn fill_missing(mask: &BooleanArray, value: bool) -> BooleanArray {
    match mask.nulls().filter(|n| n.null_count() > 0) {
        None => mask.clone(),
        // Word by word: kept where present, `value` where missing.
        Some(nulls) if value => BooleanArray::new(mask.values() | &!nulls.inner(), None),
        Some(nulls) => BooleanArray::new(mask.values() & nulls.inner(), None),
    }
}

fn as_bool<'a>(array: &'a ArrayRef, expr: &Expr) -> Result<&'a BooleanArray> {
    array
        .as_any()
        .downcast_ref::<BooleanArray>()
        .ok_or_else(|| type_error("boolean logic", expr, array.data_type(), "a boolean is needed"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Date32Array, Float64Array, Int64Array};
    use proptest::prelude::*;

    const OPS: [BinaryOp; 6] = [BinaryOp::Eq, BinaryOp::Ne, BinaryOp::Lt, BinaryOp::Le, BinaryOp::Gt, BinaryOp::Ge];

    /// pandas: a comparison with a missing value (or NaN) is false, but `!=` is true.
    fn naive(op: BinaryOp, a: Option<f64>, b: Option<f64>) -> bool {
        match (a.filter(|x| !x.is_nan()), b.filter(|x| !x.is_nan())) {
            (Some(a), Some(b)) => match op {
                BinaryOp::Eq => a == b,
                BinaryOp::Ne => a != b,
                BinaryOp::Lt => a < b,
                BinaryOp::Le => a <= b,
                BinaryOp::Gt => a > b,
                _ => a >= b,
            },
            _ => op == BinaryOp::Ne,
        }
    }

    fn value() -> impl Strategy<Value = Option<f64>> {
        prop::option::weighted(
            0.85,
            prop_oneof![4 => (-3i32..4).prop_map(f64::from), 1 => Just(f64::NAN), 1 => Just(-0.0)],
        )
    }

    fn batch(values: &[Option<f64>]) -> RecordBatch {
        let floats: ArrayRef = Arc::new(values.iter().copied().collect::<Float64Array>());
        let ints: ArrayRef =
            Arc::new(values.iter().map(|v| v.filter(|x| !x.is_nan()).map(|x| x as i64)).collect::<Int64Array>());
        let days: ArrayRef =
            Arc::new(values.iter().map(|v| v.filter(|x| !x.is_nan()).map(|x| x as i32)).collect::<Date32Array>());
        RecordBatch::try_from_iter([("f", floats), ("i", ints), ("d", days)]).unwrap()
    }

    fn bools(array: &ArrayRef) -> Vec<Option<bool>> {
        array.as_boolean().iter().collect()
    }

    proptest! {
        #[test]
        fn comparisons_with_a_scalar_follow_pandas(
            values in prop::collection::vec(value(), 0..150),
            scalar in value(),
            op in 0usize..6,
            scalar_on_left in any::<bool>(),
        ) {
            let op = OPS[op];
            let b = batch(&values);
            for column in ["f", "i", "d"] {
                let ints = column != "f";
                // Integer and date columns hold no NaN; their scalar is a present integer.
                let Some(s) = (if ints { scalar.filter(|x| !x.is_nan()) } else { scalar }) else { continue };
                let literal = if column == "d" {
                    Expr::Literal(Scalar::Str(format!("1970-01-{:02}", 10 + s as i64)))
                } else if ints {
                    Expr::Literal(Scalar::Int(s as i64))
                } else {
                    Expr::Literal(Scalar::Float(s))
                };
                // Dates are shifted by the literal's day 10: compare with the shifted value.
                let s = if column == "d" { s + 9.0 } else { s };
                let (left, right) = if scalar_on_left { (literal, Expr::col(column)) } else { (Expr::col(column), literal) };
                let expr = Expr::Binary { op, left: Box::new(left), right: Box::new(right) };
                let got = bools(&expr.evaluate(&b).unwrap());
                let want: Vec<Option<bool>> = values
                    .iter()
                    .map(|v| {
                        let v = if ints { v.filter(|x| !x.is_nan()).map(|x| x.trunc()) } else { *v };
                        Some(if scalar_on_left { naive(op, Some(s), v) } else { naive(op, v, Some(s)) })
                    })
                    .collect();
                prop_assert_eq!(got, want, "{} {:?} {}", column, op, s);
            }
        }

        #[test]
        fn between_follows_pandas(values in prop::collection::vec(value(), 0..150), low in value(), high in value()) {
            let b = batch(&values);
            for (column, int_bounds) in [("f", false), ("f", true), ("i", false), ("i", true)] {
                let scalar = |v: Option<f64>| match v {
                    Some(x) if int_bounds && !x.is_nan() => Scalar::Int(x as i64),
                    Some(x) => Scalar::Float(x),
                    None => Scalar::Null,
                };
                let expr = Expr::Between { expr: Box::new(Expr::col(column)), low: scalar(low), high: scalar(high) };
                let got = bools(&expr.evaluate(&b).unwrap());
                let want: Vec<Option<bool>> = values
                    .iter()
                    .map(|v| {
                        let v = if column == "i" { v.filter(|x| !x.is_nan()).map(|x| x.trunc()) } else { *v };
                        Some(naive(BinaryOp::Ge, v, low) && naive(BinaryOp::Le, v, high))
                    })
                    .collect();
                prop_assert_eq!(got, want, "{} low {:?} high {:?}", column, low, high);
            }
        }
    }
}
