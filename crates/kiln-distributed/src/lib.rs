//! kiln's distributed runtime: the scheduler server, workers, the client and `LocalCluster`.
//!
//! This crate is the I/O edge of the distributed system. The decisions live in pure crates:
//! `kiln-scheduler` (the scheduler's state machine), `kiln-worker` (the worker's) and
//! `kiln-protocol` (bytes on the wire);
//! here they meet sockets, threads and clocks.
//!
//! ```
//! use kiln_distributed::{LocalCluster, WorkerMode};
//! // Worker processes by default; threads of this process here, so the example runs anywhere.
//! let cluster = LocalCluster::builder().workers(2).mode(WorkerMode::Threads).start().unwrap();
//! let client = cluster.client().unwrap();
//! client.set_as_default(); // collections' compute() now runs on the cluster
//! ```

#![deny(missing_docs)]

// One folder per part of the runtime, so the layout shows the architecture: `comm` is the
// connection code all of them share (handshake, packets, batching writers, peer pool).
mod client;
mod cluster;
pub mod comm;
pub mod config;
mod server;
pub mod worker;

pub use client::futures::{AsCompleted, Future};
pub use client::progress::{TaskProgress, progress};
pub use client::{Client, ClusterLoad, KeyStatus};
pub use cluster::adaptive;
pub use cluster::scheduler_file;
pub use cluster::{
    ClusterError, EXIT_CANNOT_START, EXIT_FRESH_START, EXIT_NO_SCHEDULER, LocalCluster, LocalClusterBuilder,
    NannyPolicy, SecurityArgs, WorkerArgs, WorkerArgsError, WorkerArgsInvalid, WorkerMode, parse_memory_limit,
    run_nanny, run_worker_if_requested,
};
pub use comm::tls::{CertificateAuthority, Security, SecurityError, TlsRole, TlsVersion};
/// Performance reports ([`Client::performance_report`], and `performance_report` for local work).
pub use kiln_dashboard::report;
pub use server::{DashboardConfig, SchedulerServer, ServerConfig};
pub use worker::{WorkerConfig, WorkerHandle, start_worker, tune_allocator_for_workers};
