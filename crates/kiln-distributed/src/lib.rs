//! kiln's distributed runtime: the scheduler server, workers, the client and `LocalCluster`.
//!
//! This crate is the I/O edge of the distributed system. The decisions live in pure crates:
//! `kiln-scheduler` (the scheduler's state machine), `kiln-worker` (the worker's) and
//! `kiln-protocol` (bytes on the wire);
//! here they meet sockets, threads and clocks.
//!
//! ```no_run
//! use kiln_distributed::LocalCluster;
//! use kiln_graph::Scheduler;
//! let cluster = LocalCluster::builder().workers(2).start().unwrap();
//! let client = cluster.client().unwrap();
//! client.set_as_default(); // collections' compute() now runs on the cluster
//! ```

#![deny(missing_docs)]

pub mod client;
pub mod cluster;
pub mod comm;
pub mod futures;
pub mod server;
pub mod worker;

pub use client::{Client, ClusterLoad, KeyStatus};
pub use cluster::{
    ClusterError, LocalCluster, LocalClusterBuilder, WorkerArgsError, WorkerMode, run_worker_if_requested,
};
pub use futures::{AsCompleted, Future};
pub use server::{SchedulerServer, ServerConfig};
pub use worker::{WorkerConfig, WorkerHandle, start_worker, tune_allocator_for_workers};
