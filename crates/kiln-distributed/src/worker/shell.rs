//! The worker's async shell: turns what happens (scheduler messages, finished runs, fetches,
//! spills, timers) into [`Event`]s for [`WorkerState`] and carries out its [`Instruction`]s.
//!
//! It decides nothing. One task owns the state and reads one channel; everything that takes
//! time (fetching from a peer, writing or reading a spill file, reconnecting) runs in its own
//! task or on the blocking pool and comes back through that channel. Answers the shell knows at
//! once (did the queue still hold that run? which runs never started?) are fed back before the
//! next channel event, so the state sees them in order.
//!
//! Per task on the hot path: the kernel is looked up in a cache, the literals decoded, the
//! inputs taken from the store under one lock at `Run`, and the result put in the store at
//! `Keep`; the instruction vector and the arrival buffer are reused across events.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_graph::kernel::ResolveError;
use kiln_graph::portable::{InputSpec, PortableError, TaskSpec, resolve_task};
use kiln_graph::{CodecRegistry, Kernel, KernelRegistry, KernelSpec, Key, TaskError, Value};
use kiln_protocol::Role;
use kiln_protocol::messages::{
    ActivityKind, ComputeTask, PeerReply, PeerRequest, Priority, SchedulerToWorker, TaskFailure, WorkerId,
    WorkerToScheduler,
};
use kiln_worker::{Event, Instruction, Notice, RunId, SpillError, SpillFile, WorkerState};
use rustc_hash::FxHashMap;
use smallvec::SmallVec;
use tokio::sync::mpsc;

use super::activity::unix_us;
use super::compute::{Job, JobQueue, Outcome};
use super::peer::value_nbytes;
use super::store::{Store, UnspillError, read_spill, write_spill};
use crate::comm::{
    self, CommError, Flushed, Outgoing, PacketReader, PeerPool, ReceivedFrames, Sender, Transport, value_from_wire,
};

/// What reaches the shell's channel.
pub(super) enum ShellEvent {
    Scheduler(Vec<SchedulerToWorker>),
    SchedulerLost(String),
    Reconnected(Sender<WorkerToScheduler>, Flushed),
    GaveUp(String),
    Done(Outcome),
    Fetched {
        holder: WorkerId,
        values: Vec<(Key, Value)>,
        missing: Vec<Key>,
        timing: (u64, u64),
    },
    FetchFailed {
        holder: WorkerId,
        keys: Vec<Key>,
    },
    Received(Vec<(Key, u64)>),
    Spilled {
        key: Key,
        file: SpillFile,
        result: Result<(), SpillError>,
        timing: (u64, u64),
    },
    Unspilled {
        key: Key,
        file: SpillFile,
        result: Result<Value, UnspillError>,
        timing: (u64, u64),
    },
    Heartbeat,
    MemoryCheck,
    Close(String),
    /// A scrape of the worker's `/metrics`.
    Metrics(tokio::sync::oneshot::Sender<kiln_dashboard::worker::WorkerMetrics>),
}

/// A task's kernel and inputs (literals decoded, dependencies by key), carried through the
/// state until it runs.
pub(super) struct Prepared {
    kernel: Arc<dyn Kernel>,
    inputs: Vec<Result<Value, Key>>,
}

/// Resolved kernels kept at most (most graphs use few distinct kernels).
const KERNEL_CACHE_ENTRIES: usize = 1024;
/// Bytes of kernel parameters the cache keeps at most.
const KERNEL_CACHE_BYTES: usize = 16 << 20;
/// Kernels with larger parameters are not cached: a fused chain of a million steps is one
/// task with a ~100 MB spec that no later task repeats, and caching it (with its resolved
/// steps) kept hundreds of megabytes alive after the task ended, pausing the worker for good.
const KERNEL_CACHE_MAX_SPEC: usize = 64 << 10;

/// Whether a kernel is worth caching. A fused kernel never is: its steps carry the keys of the
/// tasks it replaced, so no other task has the same spec. Caching the ~400 fused kernels of a
/// 100,000-step chain (25 KB of spec and ~70 KB of resolved steps each) kept 38 MB alive after
/// the chain, over the pause threshold of a 64 MB worker holding nothing.
fn worth_caching(spec: &KernelSpec) -> bool {
    spec.id != kiln_graph::fuse::FUSED_KERNEL_ID && KernelCache::spec_bytes(spec) <= KERNEL_CACHE_MAX_SPEC
}

/// Resolved kernels by spec, bounded by entries and by the bytes of their specs; the least
/// recently used goes first.
#[derive(Default)]
pub(super) struct KernelCache {
    entries: FxHashMap<KernelSpec, (Arc<dyn Kernel>, u64)>,
    bytes: usize,
    clock: u64,
}

impl KernelCache {
    fn spec_bytes(spec: &KernelSpec) -> usize {
        spec.id.len() + spec.params.len()
    }

    fn get(&mut self, spec: &KernelSpec) -> Option<Arc<dyn Kernel>> {
        self.clock += 1;
        let clock = self.clock;
        self.entries.get_mut(spec).map(|(kernel, used)| {
            *used = clock;
            kernel.clone()
        })
    }

    fn insert(&mut self, spec: KernelSpec, kernel: Arc<dyn Kernel>) {
        if !worth_caching(&spec) {
            return;
        }
        let size = Self::spec_bytes(&spec);
        while !self.entries.is_empty()
            && (self.entries.len() >= KERNEL_CACHE_ENTRIES || self.bytes + size > KERNEL_CACHE_BYTES)
        {
            let oldest = self.entries.iter().min_by_key(|(_, (_, used))| *used).map(|(s, _)| s.clone());
            let Some(oldest) = oldest else { break };
            self.entries.remove(&oldest);
            self.bytes -= Self::spec_bytes(&oldest);
        }
        self.clock += 1;
        self.bytes += size;
        self.entries.insert(spec, (kernel, self.clock));
    }

    /// Kernels cached.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }

    /// Bytes of the cached specs.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.bytes
    }
}

/// How a leaving worker waits for its writer to flush at most (a stuck socket is dropped by
/// the writer itself after [`comm::WRITE_TIMEOUT`]).
const FLUSH_PATIENCE: Duration = Duration::from_secs(10);

pub(super) struct Shell {
    pub name: String,
    /// The data address peers and clients reach this worker at.
    pub address: String,
    pub scheduler_address: String,
    pub register: WorkerToScheduler,
    pub reconnect: Duration,
    pub to_scheduler: Sender<WorkerToScheduler>,
    pub flushed: Flushed,
    pub state: WorkerState<Prepared>,
    pub store: Arc<Store>,
    pub queue: Arc<JobQueue>,
    pub pool: PeerPool,
    /// How this worker connects (TLS, token), for rejoining the scheduler.
    pub transport: Transport,
    /// Set when the worker stopped because no scheduler was reachable for
    /// [`Shell::reconnect`] (the death timeout).
    pub no_scheduler: Arc<std::sync::atomic::AtomicBool>,
    pub events: mpsc::UnboundedSender<ShellEvent>,
    pub kernels: KernelCache,
    /// Instructions of the event being handled (reused).
    pub out: Vec<Instruction<Prepared>>,
    /// Values that arrived with the event being handled, until `Keep` (reused).
    pub arriving: Vec<(Key, Value)>,
    /// Answers known at once, handled before the next channel event.
    pub follow_ups: VecDeque<Event<Prepared>>,
    pub started: Instant,
    /// Transfers, spills and CPU use for the next heartbeat.
    pub activity: super::activity::Activity,
    /// Running totals for `/metrics`.
    pub counters: super::metrics::Counters,
}

/// How the shell's loop ended.
enum Ending {
    /// Left cleanly: flush what was sent to the scheduler.
    Left,
    /// The scheduler is gone: nothing to flush.
    Lost,
}

impl Shell {
    fn now(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    /// Runs until the worker has left or given up on the scheduler; `true` when it left to be
    /// started afresh ([`WorkerState::wants_fresh_start`]).
    pub async fn run(mut self, mut events: mpsc::UnboundedReceiver<ShellEvent>) -> bool {
        let mut batch = Vec::new();
        let ending = 'outer: loop {
            let deadline = self.state.next_deadline().map(|us| self.started + Duration::from_micros(us));
            let received = match deadline {
                Some(deadline) => {
                    tokio::select! {
                        n = events.recv_many(&mut batch, 1024) => n,
                        _ = tokio::time::sleep_until(deadline.into()) => {
                            if self.feed(Event::Tick) {
                                break 'outer Ending::Left;
                            }
                            continue;
                        }
                    }
                }
                None => events.recv_many(&mut batch, 1024).await,
            };
            if received == 0 {
                break Ending::Lost;
            }
            let turn = Instant::now();
            for event in batch.drain(..) {
                if let Some(ending) = self.shell_event(event) {
                    break 'outer ending;
                }
            }
            self.counters.tick(turn.elapsed());
        };
        let fresh_start = self.state.wants_fresh_start();
        if let Ending::Left = ending {
            // Every sender dropped: the writer writes what is queued, shuts the socket, ends.
            let Shell { to_scheduler, flushed, .. } = self;
            drop(to_scheduler);
            if tokio::time::timeout(FLUSH_PATIENCE, flushed).await.is_err() {
                tracing::warn!("the goodbye to the scheduler was not flushed within {FLUSH_PATIENCE:?}");
            }
        } else {
            self.queue.drain(true);
        }
        fresh_start
    }

    /// Handles one channel event; `Some` when the loop must end.
    fn shell_event(&mut self, event: ShellEvent) -> Option<Ending> {
        let event = match event {
            ShellEvent::Scheduler(messages) => {
                for message in messages {
                    if let Some(event) = self.scheduler_message(message)
                        && self.feed(event)
                    {
                        return Some(Ending::Left);
                    }
                }
                return None;
            }
            ShellEvent::SchedulerLost(reason) => {
                if self.reconnect.is_zero() {
                    tracing::warn!("worker {}: lost the scheduler: {reason}; stopping", self.name);
                    return Some(Ending::Lost);
                }
                tracing::warn!("worker {}: lost the scheduler: {reason}; trying to rejoin", self.name);
                self.spawn_reconnect();
                Event::SchedulerLost
            }
            ShellEvent::Reconnected(sender, flushed) => {
                tracing::info!("worker {}: rejoined the scheduler", self.name);
                self.to_scheduler = sender;
                self.flushed = flushed;
                return None;
            }
            ShellEvent::GaveUp(reason) => {
                tracing::error!(
                    "worker {}: no scheduler reachable for {:?}: {reason}; stopping",
                    self.name,
                    self.reconnect
                );
                self.no_scheduler.store(true, std::sync::atomic::Ordering::Relaxed);
                return Some(Ending::Lost);
            }
            ShellEvent::Done(Outcome { key, run, result, duration, started_us, thread }) => match result {
                None => Event::TaskSkipped { key, run },
                Some(Ok(value)) => {
                    let nbytes = value_nbytes(&value);
                    self.arriving.push((key.clone(), value));
                    let duration_us = duration.as_micros() as u64;
                    Event::TaskFinished { key, run, nbytes, duration_us, started_us, thread }
                }
                Some(Err(error)) => {
                    let failure = match error {
                        TaskError::At { key: inner, error } => TaskFailure::raised(inner, error.to_string()),
                        other => TaskFailure::raised(key.clone(), other.to_string()),
                    };
                    Event::TaskFailed { key, run, failure }
                }
            },
            ShellEvent::Fetched { holder, values, missing, timing: (started_us, duration_us) } => {
                let arrived: Vec<(Key, u64)> = values.iter().map(|(k, v)| (k.clone(), value_nbytes(v))).collect();
                for (key, nbytes) in &arrived {
                    self.counters.fetched(*nbytes);
                    let kind = ActivityKind::Transfer { from: holder };
                    self.activity.push(kind, key.clone(), *nbytes, started_us, duration_us);
                }
                self.arriving.extend(values);
                Event::Fetched { holder, arrived, missing }
            }
            ShellEvent::FetchFailed { holder, keys } => Event::FetchFailed { holder, keys },
            ShellEvent::Received(entries) => Event::Received { entries },
            ShellEvent::Spilled { key, file, result, timing: (started_us, duration_us) } => match result {
                Ok(()) => {
                    let nbytes = self.store.get(&key).map(|v| value_nbytes(&v)).unwrap_or(0);
                    self.counters.spilled(nbytes, duration_us);
                    self.activity.push(ActivityKind::Spill, key.clone(), nbytes, started_us, duration_us);
                    Event::SpillDone { key, file }
                }
                Err(error) => Event::SpillFailed { key, file, error },
            },
            ShellEvent::Unspilled { key, file, result, timing: (started_us, duration_us) } => match result {
                Ok(value) => {
                    let nbytes = value_nbytes(&value);
                    self.counters.unspilled(nbytes, duration_us);
                    self.activity.push(ActivityKind::Unspill, key.clone(), nbytes, started_us, duration_us);
                    self.arriving.push((key.clone(), value));
                    Event::Unspilled { key, file }
                }
                Err(e) => Event::UnspillFailed { key, file, message: e.to_string() },
            },
            ShellEvent::Heartbeat => {
                let (cpu_percent, activity, activity_dropped) = self.activity.take();
                Event::HeartbeatDue {
                    process_bytes: super::process_rss(),
                    cpu_percent,
                    activity,
                    activity_dropped,
                    network_bytes: crate::comm::tls::network_bytes(),
                }
            }
            ShellEvent::MemoryCheck => {
                if self.state.is_paused() {
                    // Freed heap pages (a large task's spec, kernel and intermediates) go back
                    // to the system, so the process memory that paused the worker can fall.
                    trim_heap();
                }
                Event::MemoryMeasured { process_bytes: super::process_rss() }
            }
            ShellEvent::Metrics(reply) => {
                let _ = reply.send(self.counters.take(&self.state, super::process_rss()));
                return None;
            }
            ShellEvent::Close(reason) => {
                tracing::info!("worker {} leaving: {reason}", self.name);
                Event::Leave
            }
        };
        self.feed(event).then_some(Ending::Left)
    }

    /// Turns a scheduler message into an event (`None`: nothing for the state).
    fn scheduler_message(&mut self, message: SchedulerToWorker) -> Option<Event<Prepared>> {
        Some(match message {
            SchedulerToWorker::Registered { id, workers } => {
                tracing::info!("worker {} registered as worker {id}", self.name);
                for w in &workers {
                    self.pool.know(&w.address, w.write_token);
                }
                Event::Registered { id, peers: workers }
            }
            SchedulerToWorker::WorkerAdded(info) => {
                self.pool.know(&info.address, info.write_token);
                Event::PeerAdded(info)
            }
            SchedulerToWorker::WorkerRemoved(id) => Event::PeerRemoved(id),
            SchedulerToWorker::Compute(task) => self.prepare(task),
            SchedulerToWorker::Free { keys } => Event::Free { keys },
            SchedulerToWorker::Acquire { keys } => Event::Acquire { keys },
            SchedulerToWorker::Steal { key } => Event::Steal { key },
            SchedulerToWorker::Close { reason } => {
                tracing::info!("worker {} leaving: {reason}", self.name);
                Event::Leave
            }
        })
    }

    /// Resolves a task's kernel and literals; a failure is the task's failure.
    fn prepare(&mut self, task: ComputeTask) -> Event<Prepared> {
        let ComputeTask { key, kernel: spec, inputs: specs, who_has, priority } = task;
        let kernel = match self.kernels.get(&spec) {
            Some(k) => k,
            None => {
                let spec_only = TaskSpec { key: key.clone(), kernel: spec, inputs: Vec::new() };
                match resolve_task(&spec_only, KernelRegistry::global(), CodecRegistry::global()) {
                    Ok(resolved) => {
                        self.kernels.insert(spec_only.kernel, resolved.kernel.clone());
                        resolved.kernel
                    }
                    Err(PortableError::Resolve { source: ResolveError::Unknown(id), .. }) => {
                        // The address the scheduler advertises (a worker listening on all
                        // interfaces knows only 0.0.0.0 itself).
                        let advertised = self.state.id().and_then(|me| self.state.peer_address(me));
                        let message = unknown_kernel(advertised.unwrap_or(&self.address), &self.name, &id);
                        return Event::TaskRejected { key, message };
                    }
                    Err(e) => return Event::TaskRejected { key, message: e.to_string() },
                }
            }
        };
        let codecs = CodecRegistry::global();
        let mut deps: SmallVec<[Key; 2]> = SmallVec::new();
        let mut inputs = Vec::with_capacity(specs.len());
        for (i, input) in specs.into_iter().enumerate() {
            match input {
                InputSpec::Task(dep) => {
                    deps.push(dep.clone());
                    inputs.push(Err(dep));
                }
                InputSpec::Literal(encoded) => match codecs.decode(&encoded) {
                    Ok(value) => inputs.push(Ok(value)),
                    Err(e) => {
                        let message = format!("{key}: literal input {i}: {e}");
                        return Event::TaskRejected { key, message };
                    }
                },
            }
        }
        Event::Compute { key, deps, who_has, priority, payload: Prepared { kernel, inputs } }
    }

    /// Feeds an event and its follow-ups to the state and carries out the instructions;
    /// `true` once the state has said `Stop`.
    fn feed(&mut self, event: Event<Prepared>) -> bool {
        let mut next = Some(event);
        let mut stop = false;
        while let Some(event) = next.take().or_else(|| self.follow_ups.pop_front()) {
            let now = self.now();
            let mut out = std::mem::take(&mut self.out);
            self.state.handle(event, now, &mut out);
            for instruction in out.drain(..) {
                stop |= self.execute(instruction);
            }
            self.out = out;
            // Arrived values the state did not keep are dropped here.
            self.arriving.clear();
        }
        stop
    }

    /// Carries out one instruction; `true` for `Stop`.
    fn execute(&mut self, instruction: Instruction<Prepared>) -> bool {
        match instruction {
            Instruction::Send(message) => {
                let _ = self.to_scheduler.send(Outgoing::Message(message));
            }
            Instruction::Fetch { holder, keys } => self.fetch(holder, keys),
            Instruction::Run { run, key, priority, payload } => self.hand_to_threads(run, key, priority, payload),
            Instruction::Cancel { run } => self.queue.cancel(run),
            Instruction::Unqueue { run, key } => {
                let taken = self.queue.take(run);
                self.follow_ups.push_back(Event::Unqueued { key, run, taken });
            }
            Instruction::DrainQueue { close } => {
                let unstarted = self.queue.drain(close);
                self.follow_ups.push_back(Event::QueueDrained { unstarted });
            }
            Instruction::Keep { key } => {
                if let Some(i) = self.arriving.iter().position(|(k, _)| *k == key) {
                    let (key, value) = self.arriving.swap_remove(i);
                    self.store.insert(key, value);
                }
            }
            Instruction::Spill { key, file } => self.spill(key, file),
            Instruction::Evict { key, file } => self.store.evict(key, file),
            Instruction::Unspill { key, file } => {
                let path = self.store.path(file);
                let events = self.events.clone();
                tokio::task::spawn_blocking(move || {
                    let (started_us, start) = (unix_us(), Instant::now());
                    let result = read_spill(&path);
                    let timing = (started_us, start.elapsed().as_micros() as u64);
                    let _ = events.send(ShellEvent::Unspilled { key, file, result, timing });
                });
            }
            Instruction::Release { key, file } => {
                self.store.remove(&key);
                if let Some(file) = file {
                    self.delete_file(file);
                }
            }
            Instruction::DeleteFile { file } => self.delete_file(file),
            Instruction::Notice(notice) => self.log(notice),
            Instruction::Stop => return true,
        }
        false
    }

    fn hand_to_threads(&mut self, run: RunId, key: Key, priority: Priority, payload: Prepared) {
        let Prepared { kernel, mut inputs } = payload;
        if let Err(dep) = self.store.fill_inputs(&mut inputs) {
            // The state only runs tasks whose inputs are in memory: this is an engine bug.
            let message = format!("internal error: input {dep} of {key} is not in the worker's memory");
            tracing::error!("worker {}: {message}", self.name);
            let failure = TaskFailure::raised(key.clone(), message);
            // Skip the run rather than queue it: the state still expects exactly one report.
            self.follow_ups.push_back(Event::TaskFailed { key, run, failure });
            return;
        }
        let inputs = inputs.into_iter().flatten().collect();
        self.queue.push(Job { priority, run, key, kernel, inputs });
    }

    fn fetch(&mut self, holder: WorkerId, keys: Vec<Key>) {
        let Some(address) = self.state.peer_address(holder).map(str::to_string) else {
            self.follow_ups.push_back(Event::FetchFailed { holder, keys });
            return;
        };
        let pool = self.pool.clone();
        let events = self.events.clone();
        tokio::spawn(async move {
            let (started_us, start) = (unix_us(), Instant::now());
            let request = PeerRequest::Get { request: pool.request_id(), keys: keys.clone() };
            let event = match pool.request(&address, request, Vec::new()).await {
                Ok((PeerReply::Data { values, mut missing, .. }, frames)) => {
                    let mut frames = ReceivedFrames::from(frames);
                    let mut decoded = Vec::with_capacity(values.len());
                    for (key, wire) in values {
                        match value_from_wire(&wire, &mut frames, CodecRegistry::global()) {
                            Ok(v) => decoded.push((key, v)),
                            Err(e) => {
                                tracing::warn!("cannot decode {key} from {address}: {e}");
                                missing.push(key);
                            }
                        }
                    }
                    let timing = (started_us, start.elapsed().as_micros() as u64);
                    ShellEvent::Fetched { holder, values: decoded, missing, timing }
                }
                Ok((other, _)) => {
                    tracing::warn!("unexpected reply from {address}: {other:?}");
                    ShellEvent::FetchFailed { holder, keys }
                }
                Err(e) => {
                    tracing::warn!("fetching from {address} failed: {e}");
                    ShellEvent::FetchFailed { holder, keys }
                }
            };
            let _ = events.send(event);
        });
    }

    /// Writes a spill file on the blocking pool: the runtime keeps serving meanwhile.
    fn spill(&mut self, key: Key, file: SpillFile) {
        let Some(value) = self.store.get(&key) else {
            let error = SpillError::Io(format!("{key} is not in memory"));
            self.follow_ups.push_back(Event::SpillFailed { key, file, error });
            return;
        };
        let path = self.store.path(file);
        let events = self.events.clone();
        tokio::task::spawn_blocking(move || {
            let (started_us, start) = (unix_us(), Instant::now());
            let result = write_spill(&value, &path);
            drop(value);
            let timing = (started_us, start.elapsed().as_micros() as u64);
            let _ = events.send(ShellEvent::Spilled { key, file, result, timing });
        });
    }

    fn delete_file(&self, file: SpillFile) {
        // Unlinking is a quick metadata operation; a file that was never written is fine.
        let _ = std::fs::remove_file(self.store.path(file));
    }

    fn log(&self, notice: Notice) {
        let name = &self.name;
        match notice {
            Notice::Leaving { returned } => {
                tracing::info!("worker {name}: leaving; handing back {returned} unstarted tasks")
            }
            Notice::Paused { reason } => {
                tracing::warn!(
                    "worker {name}: paused: {reason}; no new task starts, the scheduler sends work elsewhere"
                )
            }
            Notice::Resumed { process_bytes, paused_for_us } => tracing::info!(
                "worker {name}: resumed: process memory {:.0} MB after {:.1} s paused",
                process_bytes as f64 / 1e6,
                paused_for_us as f64 / 1e6
            ),
            Notice::Unspillable { key, error } => tracing::debug!("worker {name}: {key} stays in memory: {error}"),
            Notice::SpillingStopped { key, error, retry_in_us } => tracing::error!(
                "worker {name}: spilling {key} to {} failed: {error}; spilling stops, values stay in memory \
                 (nothing is lost), retrying in {:.0} s",
                self.store.dir().display(),
                retry_in_us as f64 / 1e6
            ),
            Notice::SpillingResumed => {
                tracing::info!("worker {name}: spilling to {} works again", self.store.dir().display())
            }
            Notice::ValueLost { key, message } => tracing::error!("worker {name}: lost spilled {key}: {message}"),
            Notice::PauseCannotEnd { process_bytes, limit, fraction, restart } => {
                let why = format!(
                    "worker {name}: paused with process memory {:.0} MB > {:.0} % of the {:.0} MB limit while running \
                     nothing and holding no data, so waiting cannot free it (it is the process's own: allocator \
                     arenas, caches, a library's buffers)",
                    process_bytes as f64 / 1e6,
                    fraction * 100.0,
                    limit as f64 / 1e6
                );
                if restart {
                    tracing::warn!("{why}; leaving so that the nanny starts a fresh process");
                } else {
                    tracing::warn!(
                        "{why}; resuming (no nanny to restart it) and pausing again only after memory falls under the \
                         threshold"
                    );
                }
            }
            Notice::LeaveTimedOut { running } => {
                tracing::warn!("worker {name}: leaving without waiting longer for {running} running tasks")
            }
        }
    }

    fn spawn_reconnect(&self) {
        let address = self.scheduler_address.clone();
        let name = self.name.clone();
        let register = self.register.clone();
        let events = self.events.clone();
        let patience = self.reconnect;
        let transport = self.transport.clone();
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + patience;
            // Backoff between attempts: the scheduler may be restarting or the network down.
            let mut delay = Duration::from_millis(100);
            loop {
                tokio::time::sleep(delay).await;
                match connect_scheduler(&address, &name, register.clone(), events.clone(), &transport).await {
                    Ok((sender, flushed)) => {
                        let _ = events.send(ShellEvent::Reconnected(sender, flushed));
                        return;
                    }
                    Err(e) if tokio::time::Instant::now() >= deadline => {
                        let _ = events.send(ShellEvent::GaveUp(e.to_string()));
                        return;
                    }
                    Err(e) => tracing::debug!("rejoining {address}: {e}"),
                }
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        });
    }
}

/// The error of a task whose kernel id is not registered in this worker program.
fn unknown_kernel(address: &str, name: &str, id: &str) -> String {
    let named = if name == address { String::new() } else { format!(" ({name})") };
    let scheme = if address.contains("://") { "" } else { "tcp://" };
    format!(
        "worker {scheme}{address}{named} does not know kernel '{id}' (build the worker with the crate that registers \
         it, or use a user binary worker: a program that registers it and calls run_worker_if_requested)"
    )
}

/// Returns freed heap memory to the operating system (glibc keeps it otherwise).
fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free pages of the allocator's own heap.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Connects and registers with the scheduler; its messages feed the shell.
pub(super) async fn connect_scheduler(
    address: &str,
    name: &str,
    register: WorkerToScheduler,
    events: mpsc::UnboundedSender<ShellEvent>,
    transport: &Transport,
) -> Result<(Sender<WorkerToScheduler>, Flushed), CommError> {
    let (stream, leftover) = comm::connect(address, Role::Worker, name, transport).await?;
    let (read, write) = stream.into_split();
    let (to_scheduler, flushed) = comm::spawn_flushing_writer::<WorkerToScheduler>(write, address.to_string());
    let _ = to_scheduler.send(Outgoing::Message(register));
    let address = address.to_string();
    tokio::spawn(async move {
        let mut reader = PacketReader::with_buffer(read, address, leftover);
        let reason = loop {
            match reader.next_messages::<SchedulerToWorker>().await {
                Ok(Some((messages, _))) => {
                    if events.send(ShellEvent::Scheduler(messages)).is_err() {
                        return;
                    }
                }
                Ok(None) => break "the scheduler closed the connection".to_string(),
                Err(e) => break e.to_string(),
            }
        };
        let _ = events.send(ShellEvent::SchedulerLost(reason));
    });
    Ok((to_scheduler, flushed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(i: usize, params: usize) -> KernelSpec {
        KernelSpec { id: format!("k{i}"), params: vec![0; params] }
    }

    fn kernel() -> Arc<dyn Kernel> {
        Arc::new(kiln_graph::kernel::Identity)
    }

    #[test]
    fn the_kernel_cache_is_bounded_by_entries_and_bytes_and_skips_huge_specs() {
        let mut cache = KernelCache::default();
        // A fused chain's spec is never cached: neither a huge one nor a small one.
        cache.insert(spec(0, 100 << 20), kernel());
        let fused = KernelSpec { id: kiln_graph::fuse::FUSED_KERNEL_ID.into(), params: vec![0; 25_000] };
        cache.insert(fused.clone(), kernel());
        assert!(cache.get(&fused).is_none(), "a fused kernel was cached");
        assert_eq!((cache.len(), cache.bytes()), (0, 0));
        // Many distinct small kernels: bounded by entries, the recently used one survives.
        cache.insert(spec(1, 8), kernel());
        for i in 2..3 * KERNEL_CACHE_ENTRIES {
            assert!(cache.get(&spec(1, 8)).is_some(), "the kernel in use was evicted at {i}");
            cache.insert(spec(i, 8), kernel());
        }
        assert_eq!(cache.len(), KERNEL_CACHE_ENTRIES);
        assert!(cache.get(&spec(2, 8)).is_none(), "the least recently used stays");
        // Mid-sized specs: bounded by bytes.
        for i in 0..1000 {
            cache.insert(spec(10_000 + i, 60 << 10), kernel());
        }
        assert!(cache.bytes() <= KERNEL_CACHE_BYTES, "{} bytes cached", cache.bytes());
        let counted: usize = cache.entries.keys().map(KernelCache::spec_bytes).sum();
        assert_eq!(counted, cache.bytes());
    }

    #[test]
    fn an_unknown_kernel_error_names_the_kernel_and_the_worker() {
        let message = unknown_kernel("10.0.0.5:4012", "gpu-1", "kiln.array.zarr_write");
        assert!(message.starts_with("worker tcp://10.0.0.5:4012 (gpu-1) does not know kernel 'kiln.array.zarr_write'"));
        assert!(unknown_kernel("10.0.0.5:4012", "10.0.0.5:4012", "x").starts_with("worker tcp://10.0.0.5:4012 does"));
    }
}
