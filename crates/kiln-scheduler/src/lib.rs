//! kiln's distributed scheduler, as a pure state machine.
//!
//! [`SchedulerState`] owns every scheduling decision of a cluster and nothing else: it takes
//! events (messages from clients and workers, workers joining and leaving, the current time)
//! and returns [`Command`]s (messages to send). It owns no sockets, threads or clocks, so tests
//! drive it with thousands of simulated workers in one process and check its invariants after
//! every step; the network server around it lives in `kiln-distributed`.
//!
//! Task states follow Dask's scheduler: `released` (known, not needed or not computed),
//! `waiting` (needed, inputs not all in memory), `queued` (a root task waiting for a worker
//! slot, so workers never load many more inputs than they have threads), `no-worker`,
//! `processing` (assigned to a worker), `memory` (held by one or more workers), `erred`; a
//! task nobody needs any more is forgotten.
//!
//! ```
//! use kiln_graph::{Key, KernelSpec, portable::TaskSpec};
//! use kiln_protocol::messages::*;
//! use kiln_scheduler::{Command, Config, SchedulerState};
//! let mut s = SchedulerState::new(Config::default());
//! s.add_worker(WorkerInfo { id: 0, address: "w0".into(), name: "w0".into(), nthreads: 1, memory_limit: 0 }, 0);
//! s.add_client(7);
//! let spec = TaskSpec { key: Key::new("x"), kernel: KernelSpec { id: "k".into(), params: vec![] }, inputs: vec![] };
//! s.client_message(7, ClientToScheduler::UpdateGraph {
//!     tasks: vec![SubmittedTask { spec, order: 0 }],
//!     wanted: vec![Key::new("x")],
//! }, 0);
//! let commands = s.take_commands();
//! assert!(commands.iter().any(|c| matches!(c, Command::Worker(0, SchedulerToWorker::Compute(_)))));
//! s.worker_message(0, WorkerToScheduler::Finished { key: Key::new("x"), nbytes: 8, duration_us: 3 }, 1);
//! let commands = s.take_commands();
//! assert!(commands.iter().any(|c| matches!(c, Command::Client(7, SchedulerToClient::InMemory { .. }))));
//! s.check_invariants().unwrap();
//! ```

#![warn(missing_docs)]

mod state;

pub use state::{Command, Config, SchedulerState, TaskState, WorkerLoad};
