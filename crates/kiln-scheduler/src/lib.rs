//! kiln's distributed scheduler, as a pure state machine.
//!
//! [`SchedulerState`] owns every scheduling decision of a cluster and nothing else: it takes
//! [`Event`]s (messages from clients and workers, workers joining and leaving, the periodic
//! tick) with the current time through one entry point, [`SchedulerState::handle`], and
//! produces [`Command`]s (messages to send) and, for observers such as the dashboard, a typed
//! record of what it did ([`SchedulerEvent`]). It owns no sockets, threads or clocks, so tests
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
//! use kiln_scheduler::{Command, Config, Event, SchedulerState};
//! let (w0, me) = (WorkerId::new(0), ClientId::new(7));
//! let mut s = SchedulerState::new(Config::default());
//! let info = WorkerInfo { id: w0, address: "w0".into(), name: "w0".into(), nthreads: 1, memory_limit: 0, write_token: Default::default() };
//! s.handle(Event::WorkerJoined(info), 0);
//! s.handle(Event::ClientJoined(me), 0);
//! let spec = TaskSpec { key: Key::new("x"), kernel: KernelSpec { id: "k".into(), params: vec![] }, inputs: vec![] };
//! let graph = ClientToScheduler::UpdateGraph { tasks: vec![SubmittedTask { spec, order: 0 }], wanted: vec![Key::new("x")] };
//! s.handle(Event::Client(me, graph), 0);
//! let commands = s.take_commands();
//! assert!(commands.iter().any(|c| matches!(c, Command::Worker(w, SchedulerToWorker::Compute(_)) if *w == w0)));
//! s.handle(Event::Worker(w0, WorkerToScheduler::Finished { key: Key::new("x"), nbytes: 8, duration_us: 3, started_us: 1, thread: 0 }), 1);
//! let commands = s.take_commands();
//! assert!(commands.iter().any(|c| matches!(c, Command::Client(c, SchedulerToClient::InMemory { .. }) if *c == me)));
//! s.check_invariants().unwrap();
//! ```

#![deny(missing_docs)]

pub mod aggregate;
mod state;

pub use state::{
    Command, Config, Event, GraphNode, GraphView, InvariantViolation, ObserveLevel, PrefixEstimate, PrefixProgress,
    SchedulerEvent, SchedulerState, StateCounts, TASK_INFO_NEIGHBOURS, TaskInfo, TaskState, WorkerActivity, WorkerLoad,
};
