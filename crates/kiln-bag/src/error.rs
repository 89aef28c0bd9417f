//! What can go wrong building or computing a bag.

use std::path::PathBuf;

/// A bag that cannot be built, or a partition that cannot be computed.
///
/// Construction errors (a glob that matches nothing) are returned directly; errors found while
/// a partition runs (a malformed JSON line, a missing `pluck` key) fail that task, and the
/// computation reports them inside [`kiln_graph::ComputeError::Task`] with this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BagError {
    /// A partition count of zero (`from_sequence(.., 0)`, `range(.., 0)`).
    #[error("{operation}: the number of partitions must be at least 1")]
    ZeroPartitions {
        /// The operation given zero.
        operation: &'static str,
    },
    /// A partition size of zero (`from_sequence_sized(.., 0)`).
    #[error("from_sequence_sized: the partition size must be at least 1")]
    ZeroPartitionSize,
    /// A block size of zero (`read_text_blocks(.., 0)`).
    #[error("read_text_blocks: the block size must be at least 1 byte")]
    ZeroBlocksize,
    /// A chunk size of zero (`chunk_size(0)`).
    #[error("chunk_size: a chunk must hold at least 1 element")]
    ZeroChunkSize,
    /// A shuffle's `max_branch` below 2 (`groupby_with`).
    #[error("groupby: max_branch must be at least 2, got {0}")]
    MaxBranch(usize),
    /// A shuffle the shared builder refused (a partition count it cannot route).
    #[error("groupby: {0}")]
    Shuffle(String),
    /// A tree reduction fan-in below 2.
    #[error("split_every must be at least 2, got {0}")]
    SplitEvery(usize),
    /// A glob pattern that is not valid.
    #[error("invalid file pattern {pattern:?}: {message}")]
    BadPattern {
        /// The pattern as given.
        pattern: String,
        /// What is wrong with it.
        message: String,
    },
    /// A pattern that matches no file (also a plain path that does not exist).
    #[error("no files match {pattern:?}")]
    NoFilesMatch {
        /// The pattern as given.
        pattern: String,
    },
    /// Reading or writing a file failed.
    #[error("{}: {message}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's message.
        message: String,
    },
    /// A line that is not valid JSON for the requested type (or not UTF-8).
    #[error("{}, line {line}: {message}", path.display())]
    BadLine {
        /// The file.
        path: PathBuf,
        /// The 1-based line number.
        line: u64,
        /// What the parser said.
        message: String,
    },
    /// Bytes that are not UTF-8 text in a block of a file (blocks do not know line numbers).
    #[error("{}, byte {offset}: {message}", path.display())]
    BadText {
        /// The file.
        path: PathBuf,
        /// Where the line starts.
        offset: u64,
        /// What is wrong.
        message: String,
    },
    /// `pluck(key)` on a record without that key.
    #[error("pluck: a record has no key {key:?} (use pluck_or to give a default)")]
    MissingKey {
        /// The key asked for.
        key: String,
    },
    /// `pluck(key)` on a JSON value that is not an object.
    #[error("pluck: cannot take key {key:?} from a JSON {found}")]
    NotAnObject {
        /// The key asked for.
        key: String,
        /// The kind of value found ("array", "string", ...).
        found: &'static str,
    },
    /// `pluck_index` (or a path step) on a JSON value that is not an array.
    #[error("pluck: cannot take index {index} from a JSON {found}")]
    NotAnArray {
        /// The index asked for.
        index: usize,
        /// The kind of value found.
        found: &'static str,
    },
    /// A pluck path that does not lead to a value in some record.
    #[error("pluck: a record has nothing at {path} (use pluck_path_or to give a default)")]
    MissingPath {
        /// The path, e.g. `"actor"."login"[0]`.
        path: String,
    },
    /// `pluck_path` with no steps.
    #[error("pluck_path: the path is empty")]
    EmptyPath,
    /// `portable(id)` on a bag whose newest step is not a user function.
    #[error(
        "portable({id:?}): the bag's newest operation has no user function to register (call it right after \
         map, filter, remove, flat_map, try_map, map_partitions, starmap, join, topk, groupby, or on the result of \
         fold, reduction or foldby)"
    )]
    NoUserFunction {
        /// The id given.
        id: String,
    },
    /// `random_sample` with a fraction outside `[0, 1]`.
    #[error("random_sample: the fraction must be between 0 and 1, got {0}")]
    BadFraction(String),
    /// `zip` of bags with different partition counts.
    #[error("zip: the bags have {left} and {right} partitions; zip needs as many on both sides")]
    ZipPartitions {
        /// The left bag's partitions.
        left: usize,
        /// The right bag's partitions.
        right: usize,
    },
    /// `zip` of partitions of different lengths.
    #[error("zip: partition {partition} has {left} elements on the left and {right} on the right")]
    ZipLengths {
        /// The partition.
        partition: usize,
        /// Its length on the left.
        left: usize,
        /// Its length on the right.
        right: usize,
    },
    /// A reduction that has no answer for no elements (`min`, `max`, `mean`).
    #[error("{operation} of an empty bag")]
    Empty {
        /// The reduction.
        operation: &'static str,
    },
    /// `var`/`std` with no more elements than degrees of freedom removed.
    #[error("{operation} with ddof={ddof} needs more than {ddof} elements, the bag has {count}")]
    TooFewElements {
        /// The reduction.
        operation: &'static str,
        /// The delta degrees of freedom asked for.
        ddof: u64,
        /// How many elements there are.
        count: u64,
    },
    /// An integer sum that does not fit its type.
    #[error("sum overflows {type_name}")]
    Overflow {
        /// The element type.
        type_name: &'static str,
    },
    /// A type that has no codec or tag where a cluster needs one (`register_zip`, a fold's
    /// initial value or a join's table made portable).
    #[error(
        "{type_name} is not a registered element type: register it with \
         kiln_bag::portable::register_element::<{type_name}>(tag) (or register_hashable, register_numeric) in the \
         client and in every worker program"
    )]
    Unregistered {
        /// The type.
        type_name: &'static str,
    },
    /// A value that its codec could not frame as task parameters.
    #[error("could not encode a value for a cluster task: {0}")]
    Encode(String),
}

impl From<BagError> for kiln_graph::TaskError {
    fn from(error: BagError) -> Self {
        kiln_graph::TaskError::Failed(error.to_string())
    }
}
