//! The dataframe's errors: what was wrong, named by column, file and row where known.

use arrow::datatypes::DataType;

/// Why a dataframe operation or a partition's computation failed.
///
/// Building an expression or an operation checks it against the schema, so a missing column
/// or a type mismatch is reported before anything runs; reading files reports the file (and
/// the line, when the reader tells it).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum DataFrameError {
    /// An expression or operation names a column the frame does not have.
    #[error("column {column:?} not found; the frame has columns {available:?}")]
    ColumnNotFound {
        /// The missing column.
        column: String,
        /// The columns that exist.
        available: Vec<String>,
    },
    /// An operation was applied to an expression of a type it does not accept.
    #[error("{operation} cannot be applied to {expression} of type {found}: {expected}")]
    TypeMismatch {
        /// The operation, e.g. `"+"` or `"sum"`.
        operation: String,
        /// The offending expression (a column name, or the expression as written).
        expression: String,
        /// The type it has.
        found: DataType,
        /// What the operation needs.
        expected: String,
    },
    /// Two series or a series and a frame that come from different frames were combined;
    /// rows cannot be aligned without an index (not supported yet).
    #[error("{operation}: {what} does not come from this frame (rows cannot be aligned across frames)")]
    NotAligned {
        /// The operation.
        operation: String,
        /// The foreign operand.
        what: String,
    },
    /// A regular expression (or a replacement template) of a `.str` operation is not valid;
    /// reported when the operation is built, before anything runs.
    #[error("{operation} on {expression}: invalid regular expression {pattern:?}: {message}")]
    InvalidPattern {
        /// The operation (`.str.contains_regex`, `.str.replace_regex`).
        operation: String,
        /// The column or expression it applies to.
        expression: String,
        /// The pattern (or template) as given.
        pattern: String,
        /// What is wrong with it.
        message: String,
    },
    /// An argument is out of range or inconsistent (duplicate output names, an empty list, ...).
    #[error("{0}")]
    InvalidArgument(String),
    /// An expression nests deeper than [`crate::expr::MAX_EXPR_DEPTH`] operations.
    #[error(
        "expression nests {depth} operations deep, more than the limit of {limit}; assign intermediate columns instead"
    )]
    ExpressionTooDeep {
        /// Its depth.
        depth: usize,
        /// The limit.
        limit: usize,
    },
    /// A glob matched no file, or a path does not exist.
    #[error("no files match {pattern:?}")]
    NoFiles {
        /// The pattern or path given.
        pattern: String,
    },
    /// Reading or writing a file failed at the storage level.
    #[error("{path}: {message}")]
    Io {
        /// The file.
        path: String,
        /// The system's message.
        message: String,
    },
    /// A CSV file could not be parsed (the message names the line where the reader tells it).
    #[error("CSV file {path}: {message}")]
    Csv {
        /// The file.
        path: String,
        /// The reader's message.
        message: String,
    },
    /// A file is not valid Parquet, or its data cannot be decoded.
    #[error("Parquet file {path}: {message}")]
    Parquet {
        /// The file.
        path: String,
        /// The reader's message.
        message: String,
    },
    /// Files of one dataset disagree on their schema.
    #[error("{path} has schema {found}, but the dataset's first file has {expected}")]
    SchemaMismatch {
        /// The file that differs.
        path: String,
        /// The first file's schema.
        expected: String,
        /// This file's schema.
        found: String,
    },
    /// A resampling rule or window span names no frequency kiln knows.
    #[error("unknown frequency {rule:?} in {operation}: expected a positive multiple of s, min, h or D{weekly}")]
    UnknownFrequency {
        /// The operation (`resample`, `rolling`).
        operation: String,
        /// The rule as given.
        rule: String,
        /// Extra accepted forms (`", or W"` where a week is accepted).
        weekly: String,
    },
    /// An operation that needs the rows sorted by the index across partitions was applied to a
    /// frame whose divisions are unknown.
    #[error(
        "{operation} needs a sorted index with known divisions, but {reason}; use set_index (or set_index_sorted) first"
    )]
    NeedsDivisions {
        /// The operation.
        operation: String,
        /// What is missing.
        reason: String,
    },
    /// Records of a bag do not fit the frame's schema, or no schema can be inferred from them
    /// (the message names the field).
    #[error("bag records to a frame: {message}")]
    Records {
        /// What did not fit, naming the field.
        message: String,
    },
    /// An Arrow kernel failed while computing (e.g. a cast of a value that does not parse).
    #[error("{context}: {message}")]
    Compute {
        /// What was being computed.
        context: String,
        /// Arrow's message.
        message: String,
    },
}

impl DataFrameError {
    /// A compute error from an Arrow error while doing `context`.
    pub(crate) fn compute(context: impl Into<String>, error: impl std::fmt::Display) -> Self {
        DataFrameError::Compute { context: context.into(), message: error.to_string() }
    }
}

impl From<kiln_storage::StorageError> for DataFrameError {
    fn from(error: kiln_storage::StorageError) -> Self {
        use kiln_storage::StorageError as E;
        let message = match &error {
            E::NotFound { .. } => "not found".to_string(),
            E::PermissionDenied { message, .. } => format!("access denied: {message}"),
            E::InvalidUrl { message, .. } | E::Io { message, .. } => message.clone(),
            // The whole text says how to get the scheme served.
            E::NoStorage { .. } => error.to_string(),
        };
        DataFrameError::Io { path: error.url().to_string(), message }
    }
}

/// Results of dataframe operations.
pub type Result<T, E = DataFrameError> = std::result::Result<T, E>;
