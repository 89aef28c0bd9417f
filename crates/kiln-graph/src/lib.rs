//! The task-graph core of kiln.
//!
//! Every kiln computation is a graph of small tasks. This crate describes those graphs and
//! transforms them; it never runs them (that is the job of a [`Scheduler`]). It owns no threads,
//! sockets or clocks, so everything in it is a deterministic function that tests can drive.
//!
//! - [`Key`]: the names users see, Dask style: a name plus an index tuple, `("sum-8f3a", 2, 0)`.
//! - [`Value`]: a reference-counted, type-erased task result, typed again at the edges.
//! - [`Kernel`]: what a task runs. Portable kernels carry a stable id plus serialized
//!   parameters (see [`KernelRegistry`]); closures run on the local scheduler only.
//! - [`GraphBuilder`] / [`Graph`]: tasks in an arena with dense [`TaskId`]s, validated on build.
//! - [`cull`], [`fuse`], [`order`]: the optimizations; [`dot`]: Graphviz text.
//! - [`shuffle`]: the staged hash shuffle pattern, generic over the partition type.
//! - [`memory`]: the memory budget kernels check before allocating, and the result-size check.
//!
//! ```
//! use std::sync::Arc;
//! use kiln_graph::{GraphBuilder, Key, Arg, Kernel, kernel::func2};
//! let add: Arc<dyn Kernel> = Arc::new(func2("add", |a: &i64, b: &i64| a + b));
//! let mut g = GraphBuilder::new();
//! let x = g.add(Key::new("x"), add.clone(), vec![Arg::literal(1i64), Arg::literal(2i64)]).unwrap();
//! let y = g.add(Key::new("y"), add, vec![Arg::Task(x), Arg::literal(10i64)]).unwrap();
//! let graph = g.build().unwrap();
//! assert_eq!(graph.len(), 2);
//! assert_eq!(graph.dependencies(y), &[x]);
//! ```
#![deny(missing_docs)]

pub mod codec;
pub mod collection;
pub mod cull;
pub mod dot;
pub mod error;
pub mod frame;
pub mod fuse;
pub mod graph;
pub mod kernel;
pub mod key;
pub mod memory;
pub mod order;
pub mod portable;
pub mod reread;
pub mod scheduler;
pub mod shuffle;
pub mod simulate;
pub mod spill;
pub mod value;

pub use codec::{CodecError, CodecRegistry, Encoded};
pub use collection::{Collection, Persist};
pub use error::{ComputeError, GraphError, TaskError};
pub use frame::Frame;
pub use graph::{Arg, Graph, GraphBuilder, TaskId};
pub use kernel::{Kernel, KernelRegistry, KernelSpec};
pub use key::{Key, Tokenize, Tokenizer, tokenize, unique_token};
pub use scheduler::Scheduler;
pub use value::Value;
