//! Errors raised while building array graphs: bad input is reported when the expression is
//! written, not from inside a worker thread.

/// An array operation that cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArrayError {
    /// Shapes that cannot be broadcast or combined.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// Chunks that do not fit the shape.
    #[error("bad chunks: {0}")]
    Chunks(String),
    /// An axis outside `0..ndim` (negative axes count from the end).
    #[error("axis {axis} is out of bounds for an array of dimension {ndim}")]
    Axis {
        /// The axis asked for.
        axis: isize,
        /// The array's number of dimensions.
        ndim: usize,
    },
    /// An index outside the axis.
    #[error("index {index} is out of bounds for axis {axis} with size {size}")]
    Index {
        /// The index asked for.
        index: isize,
        /// The axis.
        axis: usize,
        /// The axis length.
        size: usize,
    },
    /// An argument outside its domain (e.g. a zero step).
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// Reading or writing array data failed.
    #[error("{0}")]
    Io(String),
}

/// Resolves a possibly negative axis.
///
/// # Errors
/// [`ArrayError::Axis`] when it is out of range.
pub fn normalize_axis(axis: isize, ndim: usize) -> Result<usize, ArrayError> {
    let resolved = if axis < 0 { axis + ndim as isize } else { axis };
    if resolved < 0 || resolved >= ndim as isize {
        return Err(ArrayError::Axis { axis, ndim });
    }
    Ok(resolved as usize)
}
