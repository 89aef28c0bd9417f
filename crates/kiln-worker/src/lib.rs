//! kiln's distributed worker as a pure state machine: events and the current time in,
//! instructions out.
//!
//! [`WorkerState`] decides everything a worker decides: which inputs to fetch and from whom,
//! when a task may run, what to tell the scheduler, which values to spill or read back, when to
//! pause, how to answer a steal, how to leave. It owns no socket, thread, clock or value: the
//! async shell in `kiln-distributed` (`worker/shell.rs`) feeds it [`Event`]s and carries out the
//! [`Instruction`]s, and a test feeds it random event schedules and checks
//! [`WorkerState::check_invariants`] after each one.
//!
//! The state tracks keys and sizes only. Values stay with the shell, in its store; a task's
//! resolved kernel and literal inputs travel through the state as an opaque payload `P`, handed
//! back in [`Instruction::Run`], so a task costs no extra map in the shell.
//!
//! # A key's life
//!
//! Every key the worker knows is in exactly one [`KeyState`]:
//!
//! ```text
//!  Compute ──► Waiting ──(inputs here)──► Ready ──(thread slot, not paused)──► Executing
//!                 ▲                                                              │
//!   dependency:   │ Fetching ──(arrived)──► Memory ◄──(finished)─────────────────┘
//!                 │                         │   ▲
//!                 └──── Unspilling ◄──── Spilled (spill done) / unspill done
//! ```
//!
//! A key that leaves the state is released: its value is dropped and no instruction names it
//! again (except [`Instruction::DeleteFile`] for a spill file written before the release).
//!
//! Values come in two kinds. *Held* values are the worker's results, acquired copies and
//! scattered data: the scheduler knows them and frees them with `Free`. *Borrowed* values are
//! inputs fetched from peers for this worker's tasks: the scheduler does not know about them,
//! so they are dropped as soon as the last task that needs them has started.

#![deny(missing_docs)]

mod state;

pub use state::{
    Config, ConfigError, Event, Instruction, InvariantError, KeyState, MemoryLimits, Notice, PauseReason, RunId,
    SpillError, SpillFile, WhenStuck, WorkerState,
};
