//! Scalars (literals in expressions, results of reductions) and the types `astype` casts to.

use std::fmt;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int64Array, NullArray, StringArray, TimestampNanosecondArray,
};
use arrow::datatypes::{DataType, TimeUnit};
use serde::{Deserialize, Serialize};

use crate::error::{DataFrameError, Result};

/// One value: a literal in an expression, or the result of a reduction.
///
/// Integers of every width are `Int`, floats are `Float`, timestamps are nanoseconds since the
/// epoch (pandas' `datetime64[ns]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Scalar {
    /// A missing value (pandas' `NaN`/`NA`/`NaT`).
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// A timestamp in nanoseconds since the epoch, without a time zone.
    TimestampNs(i64),
}

impl Scalar {
    /// The value as a float, when it is a number (`None` for null, strings and timestamps).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Scalar::Int(v) => Some(*v as f64),
            Scalar::Float(v) => Some(*v),
            Scalar::Bool(v) => Some(f64::from(u8::from(*v))),
            _ => None,
        }
    }

    /// The value as an integer, when it is one.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Scalar::Int(v) => Some(*v),
            _ => None,
        }
    }

    /// Whether this is [`Scalar::Null`].
    pub fn is_null(&self) -> bool {
        matches!(self, Scalar::Null)
    }

    /// The Arrow type of the literal.
    pub fn data_type(&self) -> DataType {
        match self {
            Scalar::Null => DataType::Null,
            Scalar::Bool(_) => DataType::Boolean,
            Scalar::Int(_) => DataType::Int64,
            Scalar::Float(_) => DataType::Float64,
            Scalar::Str(_) => DataType::Utf8,
            Scalar::TimestampNs(_) => DataType::Timestamp(TimeUnit::Nanosecond, None),
        }
    }

    /// A one-element array holding the value.
    pub fn to_array(&self) -> ArrayRef {
        match self {
            Scalar::Null => Arc::new(NullArray::new(1)),
            Scalar::Bool(v) => Arc::new(BooleanArray::from(vec![*v])),
            Scalar::Int(v) => Arc::new(Int64Array::from(vec![*v])),
            Scalar::Float(v) => Arc::new(Float64Array::from(vec![*v])),
            Scalar::Str(v) => Arc::new(StringArray::from(vec![v.as_str()])),
            Scalar::TimestampNs(v) => Arc::new(TimestampNanosecondArray::from(vec![*v])),
        }
    }

    /// The value at `row` of `array` (integers widened to `i64`, floats to `f64`, timestamps to
    /// nanoseconds).
    ///
    /// # Errors
    /// [`DataFrameError::InvalidArgument`] for a row out of range or a type with no scalar form.
    pub fn from_array(array: &dyn Array, row: usize) -> Result<Scalar> {
        use arrow::compute::cast;
        if row >= array.len() {
            return Err(DataFrameError::InvalidArgument(format!("row {row} of an array of {} values", array.len())));
        }
        if array.is_null(row) {
            return Ok(Scalar::Null);
        }
        let one = array.slice(row, 1);
        let widen = |to: &DataType| cast(&one, to).map_err(|e| DataFrameError::compute("reading a scalar", e));
        Ok(match array.data_type() {
            DataType::Boolean => Scalar::Bool(one.as_any().downcast_ref::<BooleanArray>().is_some_and(|a| a.value(0))),
            t if t.is_integer() => {
                let wide = widen(&DataType::Int64)?;
                Scalar::Int(wide.as_any().downcast_ref::<Int64Array>().map_or(0, |a| a.value(0)))
            }
            t if t.is_floating() => {
                let wide = widen(&DataType::Float64)?;
                Scalar::Float(wide.as_any().downcast_ref::<Float64Array>().map_or(f64::NAN, |a| a.value(0)))
            }
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                let wide = widen(&DataType::Utf8)?;
                Scalar::Str(
                    wide.as_any().downcast_ref::<StringArray>().map_or(String::new(), |a| a.value(0).to_string()),
                )
            }
            DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64 => {
                let wide = widen(&DataType::Timestamp(TimeUnit::Nanosecond, None))?;
                Scalar::TimestampNs(wide.as_any().downcast_ref::<TimestampNanosecondArray>().map_or(0, |a| a.value(0)))
            }
            other => {
                return Err(DataFrameError::InvalidArgument(format!("values of type {other} have no scalar form")));
            }
        })
    }
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Null => write!(f, "null"),
            Scalar::Bool(v) => write!(f, "{v}"),
            Scalar::Int(v) => write!(f, "{v}"),
            Scalar::Float(v) => write!(f, "{v:?}"),
            Scalar::Str(v) => write!(f, "{v:?}"),
            Scalar::TimestampNs(v) => write!(f, "timestamp({v} ns)"),
        }
    }
}

macro_rules! scalar_from {
    ($($t:ty => $variant:ident as $as:ty),* $(,)?) => {$(
        impl From<$t> for Scalar {
            fn from(v: $t) -> Self {
                Scalar::$variant(<$as>::from(v))
            }
        }
    )*};
}
scalar_from!(i64 => Int as i64, i32 => Int as i64, u32 => Int as i64, f64 => Float as f64, f32 => Float as f64,
             bool => Bool as bool, String => Str as String);

impl From<&str> for Scalar {
    fn from(v: &str) -> Self {
        Scalar::Str(v.to_string())
    }
}

/// The types `astype` converts to (pandas' dtype names in [`DType::parse`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DType {
    /// `bool`
    Bool,
    /// `int32`
    Int32,
    /// `int64`
    Int64,
    /// `float32`
    Float32,
    /// `float64`
    Float64,
    /// `str` / `string`
    Utf8,
    /// `datetime64[ns]`
    TimestampNs,
    /// `date32` (days)
    Date,
}

impl DType {
    /// The Arrow type.
    pub fn arrow(self) -> DataType {
        match self {
            DType::Bool => DataType::Boolean,
            DType::Int32 => DataType::Int32,
            DType::Int64 => DataType::Int64,
            DType::Float32 => DataType::Float32,
            DType::Float64 => DataType::Float64,
            DType::Utf8 => DataType::Utf8,
            DType::TimestampNs => DataType::Timestamp(TimeUnit::Nanosecond, None),
            DType::Date => DataType::Date32,
        }
    }

    /// The type a pandas dtype name stands for: `"int64"`, `"float64"`, `"str"`,
    /// `"datetime64[ns]"`, ...
    ///
    /// # Errors
    /// [`DataFrameError::InvalidArgument`] naming the unknown dtype.
    pub fn parse(name: &str) -> Result<DType> {
        Ok(match name {
            "bool" | "boolean" => DType::Bool,
            "int32" | "i32" => DType::Int32,
            "int64" | "int" | "i64" => DType::Int64,
            "float32" | "f32" => DType::Float32,
            "float64" | "float" | "f64" => DType::Float64,
            "str" | "string" | "object" | "utf8" => DType::Utf8,
            "datetime64[ns]" | "datetime64" | "timestamp" => DType::TimestampNs,
            "date" | "date32" => DType::Date,
            other => {
                return Err(DataFrameError::InvalidArgument(format!(
                    "unknown dtype {other:?}; known: bool, int32, int64, float32, float64, str, datetime64[ns], date"
                )));
            }
        })
    }
}
