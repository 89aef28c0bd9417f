//! The outside world's events and how each is applied: workers and clients joining, leaving
//! and sending messages, and the periodic tick.
//!
//! [`SchedulerState::handle`] is the one entry point: the server and the simulations feed
//! every event through it, so there is one place where an event starts and ends (releases,
//! root-task filling, retirement progress and batched frees happen at its end).

use kiln_graph::Key;
use kiln_graph::portable::InputSpec;
use kiln_protocol::messages::{
    ClientId, ClientToScheduler, FailureKind, MemoryReport, Priority, ScatteredEntry, SchedulerToClient,
    SchedulerToWorker, SubmittedTask, TaskFailure, WorkerId, WorkerInfo, WorkerToScheduler,
};
use rustc_hash::FxHashSet;
use smallvec::SmallVec;

use super::arena::{Body, BodyInput, TaskSlot, hash_key};
use super::observe::{SchedulerEvent, WorkerActivity};
use super::{Command, DATASETS, SchedulerState, TaskState, Worker};

/// Something that happened outside the scheduler, fed to [`SchedulerState::handle`].
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A worker registered.
    WorkerJoined(WorkerInfo),
    /// A worker is gone (connection lost, missed heartbeats, or it left). What it was running
    /// is rescheduled; what only it held is recomputed if still needed.
    WorkerLost {
        /// The worker.
        worker: WorkerId,
        /// Why, for the failure message of tasks suspected of killing it.
        reason: String,
    },
    /// A message from a worker.
    Worker(WorkerId, WorkerToScheduler),
    /// Something a worker did that changes no scheduling decision but that observers want
    /// to see (a transfer, a spill, a pause); recorded only while observing.
    WorkerActivity(WorkerId, WorkerActivity),
    /// A client connected.
    ClientJoined(ClientId),
    /// A client disconnected: its references are dropped.
    ClientLost(ClientId),
    /// A message from a client.
    Client(ClientId, ClientToScheduler),
    /// Periodic balancing (the server sends it about every 100 ms): idle workers take queued
    /// work from saturated ones when moving its inputs is cheap compared with running it.
    Tick,
}

impl SchedulerState {
    /// Applies one event that happened at `now` (milliseconds on the server's clock). The
    /// commands it produces are drained with [`SchedulerState::drain_commands_into`].
    pub fn handle(&mut self, event: Event, now: u64) {
        match event {
            Event::WorkerJoined(info) => self.add_worker(info, now),
            Event::WorkerLost { worker, reason } => self.remove_worker(worker, &reason),
            Event::Worker(worker, message) => self.worker_message(worker, message, now),
            Event::WorkerActivity(worker, activity) => self.worker_activity(worker, activity, now),
            Event::ClientJoined(client) => self.add_client(client),
            Event::ClientLost(client) => self.remove_client(client),
            Event::Client(client, message) => self.client_message(client, message, now),
            Event::Tick => {
                self.expire_unrunnable(now);
                self.tick(now);
            }
        }
    }

    /// Errs the tasks no worker has been able to run for the no-workers timeout: tasks parked
    /// without workers, and queued roots while every worker is retiring (a worker that holds
    /// the only copy of needed data is never let go, so such a cluster would wait forever).
    fn expire_unrunnable(&mut self, now: u64) {
        let Some(timeout) = self.config.no_workers_timeout_ms else { return };
        let open = self.workers.keys().filter(|w| !self.retiring.contains(w)).count();
        if open > 0 && self.no_worker.is_empty() {
            self.unrunnable.clear();
            self.unrunnable_synced = None;
            return;
        }
        // Only reached while the cluster cannot run anything, and then the parked tasks are
        // walked only on ticks after they changed.
        let signature = (self.parked_changes, open == 0);
        if self.unrunnable_synced != Some(signature) {
            let (no_worker, queued) = (&self.no_worker, &self.queued);
            self.unrunnable.retain(|k, _| no_worker.contains(k) || (open == 0 && queued.contains(k)));
            let queued_too = if open == 0 { self.queued.len() } else { 0 };
            for &k in self.no_worker.iter().chain(self.queued.iter().take(queued_too)) {
                self.unrunnable.entry(k).or_insert(now);
            }
            self.unrunnable_synced = Some(signature);
            self.unrunnable_earliest = self.unrunnable.values().copied().min().unwrap_or(u64::MAX);
        }
        if self.unrunnable_earliest == u64::MAX || now.saturating_sub(self.unrunnable_earliest) < timeout {
            return;
        }
        let expired: Vec<((Priority, TaskSlot), u64)> = self
            .unrunnable
            .iter()
            .filter(|&(_, &since)| now.saturating_sub(since) >= timeout)
            .map(|(&k, &since)| (k, since))
            .collect();
        if expired.is_empty() {
            return;
        }
        let why = if self.workers.is_empty() {
            match (self.workers_left, self.workers_retired) {
                (0, _) => "the cluster has no workers: none has joined".to_string(),
                (left, 0) => format!("the cluster has no workers: all {left} that joined have left"),
                (left, retired) => {
                    format!("the cluster has no workers: all {left} that joined have left, {retired} of them retired")
                }
            }
        } else {
            format!(
                "every worker of the cluster ({}) is retiring, and retiring workers take no new work",
                self.workers.len()
            )
        };
        for (k, since) in expired {
            self.unrunnable.remove(&k);
            let t = k.1;
            if !matches!(self.tasks[t].state, TaskState::NoWorker | TaskState::Queued) {
                continue;
            }
            let failure = TaskFailure {
                key: self.tasks[t].key.clone(),
                message: format!(
                    "no worker could run this task for {:.1} s (the scheduler's no-workers timeout): {why}; \
                     start workers, or raise the timeout if they take longer to join",
                    timeout as f64 / 1000.0
                ),
                kind: FailureKind::NoWorkers { waited_ms: now.saturating_sub(since) },
            };
            self.err(t, failure);
        }
        self.finish_event();
    }

    /// A worker reported what it did on its own: proof of life, and news for observers.
    fn worker_activity(&mut self, worker: WorkerId, activity: WorkerActivity, now: u64) {
        let Some(w) = self.workers.get_mut(&worker) else { return };
        w.last_seen = now;
        self.record(|_| SchedulerEvent::Worker { worker, activity });
    }

    /// A worker registered.
    fn add_worker(&mut self, info: WorkerInfo, now: u64) {
        let id = info.id;
        self.record(|_| SchedulerEvent::WorkerJoined(info.clone()));
        for w in self.workers.values() {
            self.commands.push(Command::Worker(w.info.id, SchedulerToWorker::WorkerAdded(info.clone())));
        }
        for &c in self.clients.keys() {
            self.commands.push(Command::Client(c, SchedulerToClient::WorkerAdded(info.clone())));
        }
        self.workers.insert(
            id,
            Worker {
                info,
                processing: FxHashSet::default(),
                has_what: FxHashSet::default(),
                nbytes: 0,
                occupancy_us: 0.0,
                reported: MemoryReport { worker: id, managed: 0, spilled: 0, process: 0 },
                last_seen: now,
                paused: false,
                finished: 0,
                failed: 0,
            },
        );
        let all = self.workers();
        self.commands.push(Command::Worker(id, SchedulerToWorker::Registered { id, workers: all }));
        self.idle.insert(id);
        self.place_stranded();
        self.finish_event();
    }

    /// Tasks parked in `no-worker` are placed again now that a worker takes work (it joined or
    /// resumed), and the no-workers clock restarts.
    fn place_stranded(&mut self) {
        self.unrunnable.clear();
        self.unrunnable_synced = None;
        let stranded: Vec<TaskSlot> = std::mem::take(&mut self.no_worker).into_iter().map(|(_, t)| t).collect();
        for t in stranded {
            self.set_state(t, TaskState::Waiting);
            self.ready(t);
        }
        self.roots_added = true;
    }

    /// A worker paused (no new tasks; its unstarted ones may be stolen) or resumed.
    fn worker_paused(&mut self, worker: WorkerId, paused: bool) {
        let Some(w) = self.workers.get_mut(&worker) else { return };
        if w.paused == paused {
            return;
        }
        w.paused = paused;
        self.record(|_| SchedulerEvent::Worker { worker, activity: WorkerActivity::Paused(paused) });
        if !paused {
            self.place_stranded();
        }
    }

    /// A worker is gone (connection lost, missed heartbeats, or it left). What it was running
    /// is rescheduled; what only it held is recomputed if still needed.
    fn remove_worker(&mut self, id: WorkerId, reason: &str) {
        let Some(worker) = self.workers.remove(&id) else { return };
        self.record(|_| SchedulerEvent::WorkerLeft { worker: id, reason: reason.to_string() });
        self.workers_left += 1;
        if self.closing.contains(&id) {
            self.workers_retired += 1;
        }
        self.idle.remove(&id);
        // Steals from or to this worker will never be answered.
        self.steals.retain(|t, thief| *thief != id && !worker.processing.contains(t));
        self.retiring.remove(&id);
        self.closing.remove(&id);
        self.replicating.retain(|_, target| *target != id);
        for w in self.workers.values() {
            self.commands.push(Command::Worker(w.info.id, SchedulerToWorker::WorkerRemoved(id)));
        }
        for &c in self.clients.keys() {
            self.commands.push(Command::Client(c, SchedulerToClient::WorkerRemoved(id)));
        }
        // Results it held: drop the replica; a value with no replica left is lost.
        let mut lost = Vec::new();
        for &t in &worker.has_what {
            let task = &mut self.tasks[t];
            task.who_has.retain(|w| *w != id);
            if task.who_has.is_empty() && task.state == TaskState::Memory {
                lost.push(t);
            }
        }
        // Tasks it was running go back to waiting (or err after too many deaths).
        let mut running: Vec<TaskSlot> = worker.processing.iter().copied().collect();
        running.sort_unstable_by_key(|&t| self.tasks[t].priority);
        // A worker runs its tasks in priority order: only the first `nthreads` were likely
        // executing, so only they are suspected of having killed it.
        let executing = worker.info.nthreads.max(1) as usize;
        for (i, &t) in running.iter().enumerate() {
            let task = &mut self.tasks[t];
            task.processing_on = None;
            if i < executing {
                task.suspicious += 1;
            }
        }
        for t in lost {
            self.lose(t);
        }
        for t in running {
            let task = &self.tasks[t];
            if task.state != TaskState::Processing {
                continue;
            }
            if task.suspicious >= self.config.allowed_failures {
                let failure = TaskFailure {
                    key: task.key.clone(),
                    message: format!(
                        "{} workers died while running this task (last: worker {id}, {reason}); it is marked erred \
                         instead of being tried again",
                        task.suspicious
                    ),
                    kind: FailureKind::KilledWorker {
                        last_worker: id,
                        last_address: worker.info.address.clone(),
                        failures: task.suspicious,
                    },
                };
                self.err(t, failure);
            } else {
                self.reset_to_waiting(t);
            }
        }
        self.roots_added = true;
        self.finish_event();
    }

    /// A message from a worker.
    fn worker_message(&mut self, worker: WorkerId, message: WorkerToScheduler, now: u64) {
        if let Some(w) = self.workers.get_mut(&worker) {
            w.last_seen = now;
        } else {
            return;
        }
        match message {
            WorkerToScheduler::Register { .. } => {}
            WorkerToScheduler::Finished { key, nbytes, duration_us, started_us, thread } => {
                // A result this worker already had (`started_us` 0) ran nowhere just now.
                let ran = (started_us != 0).then_some((started_us, thread));
                self.finished(worker, &key, nbytes, duration_us, ran)
            }
            WorkerToScheduler::Failed { key, failure } => {
                if let Some(t) = self.find(&key)
                    && self.tasks[t].state == TaskState::Processing
                    && self.tasks[t].processing_on == Some(worker)
                {
                    if let Some(w) = self.workers.get_mut(&worker) {
                        w.failed += 1;
                    }
                    if self.is_observed() {
                        self.record_ran(t, worker, 0, None);
                    }
                    self.unassign(t);
                    self.err(t, failure);
                }
            }
            WorkerToScheduler::MissingDependency { key, missing, tried } => {
                self.missing_dependency(worker, &key, &missing, &tried)
            }
            WorkerToScheduler::Received { entries } => {
                for (key, nbytes) in entries {
                    if let Some(t) = self.find(&key) {
                        self.add_replica(t, worker, nbytes);
                    }
                }
            }
            WorkerToScheduler::Heartbeat {
                managed_bytes,
                spilled_bytes,
                process_bytes,
                cpu_percent,
                activity,
                activity_dropped: _,
                network_read_bytes,
                network_written_bytes,
            } => {
                let report =
                    MemoryReport { worker, managed: managed_bytes, spilled: spilled_bytes, process: process_bytes };
                if let Some(w) = self.workers.get_mut(&worker) {
                    w.reported = report;
                }
                self.record(|_| SchedulerEvent::MemoryReported(report));
                self.record(|_| SchedulerEvent::CpuReported { worker, cpu_percent });
                self.record(|_| SchedulerEvent::NetworkReported {
                    worker,
                    read_bytes: network_read_bytes,
                    written_bytes: network_written_bytes,
                });
                if self.is_observed() {
                    for record in activity {
                        self.record(|_| SchedulerEvent::Worker {
                            worker,
                            activity: WorkerActivity::from_record(record),
                        });
                    }
                }
            }
            WorkerToScheduler::StealResponse { key, stolen } => self.steal_response(worker, &key, stolen),
            WorkerToScheduler::Paused { paused, .. } => self.worker_paused(worker, paused),
            WorkerToScheduler::Leaving { returned } => {
                for key in returned {
                    if let Some(t) = self.find(&key)
                        && self.tasks[t].processing_on == Some(worker)
                    {
                        self.unassign(t);
                        self.reset_to_waiting(t);
                    }
                }
            }
        }
        self.finish_event();
    }

    /// A client connected.
    fn add_client(&mut self, client: ClientId) {
        self.clients.entry(client).or_default();
        let workers = self.workers();
        self.commands.push(Command::Client(client, SchedulerToClient::Welcome { client, workers, dashboard: None }));
    }

    /// A client disconnected: its references are dropped.
    fn remove_client(&mut self, client: ClientId) {
        if let Some(c) = self.clients.remove(&client) {
            for t in c.wants {
                self.drop_want(t, client);
            }
        }
        self.finish_event();
    }

    /// A message from a client.
    fn client_message(&mut self, client: ClientId, message: ClientToScheduler, now: u64) {
        let _ = now;
        if !self.clients.contains_key(&client) {
            return;
        }
        match message {
            // The server's business (it gates the connection on it).
            ClientToScheduler::Register { .. } => {}
            ClientToScheduler::UpdateGraph { tasks, wanted } => self.update_graph(client, tasks, wanted),
            ClientToScheduler::Want { keys } => {
                for key in keys {
                    match self.find(&key) {
                        Some(t) => self.want(t, client),
                        None => self.commands.push(Command::Client(
                            client,
                            SchedulerToClient::Cancelled {
                                reason: format!("{key} is not known to the scheduler"),
                                key,
                            },
                        )),
                    }
                }
            }
            ClientToScheduler::Release { keys } => {
                for key in keys {
                    self.client_releases(client, &key);
                }
            }
            ClientToScheduler::Cancel { keys } => {
                for key in keys {
                    self.client_releases(client, &key);
                    self.commands.push(Command::Client(
                        client,
                        SchedulerToClient::Cancelled { key, reason: "cancelled by the client".into() },
                    ));
                }
            }
            ClientToScheduler::Scattered { entries } => self.scattered(client, entries),
            ClientToScheduler::Publish { name, keys, overwrite } => {
                if self.datasets.contains_key(&name) && !overwrite {
                    self.commands.push(Command::Client(
                        client,
                        SchedulerToClient::Refused {
                            request: None,
                            message: format!("a dataset named {name:?} is already published"),
                        },
                    ));
                    return;
                }
                self.unpublish(&name);
                let mut found = Vec::with_capacity(keys.len());
                for key in keys {
                    match self.find(&key) {
                        Some(t) => {
                            self.add_want(t, DATASETS);
                            found.push(key);
                        }
                        None => {
                            self.commands.push(Command::Client(
                                client,
                                SchedulerToClient::Refused {
                                    request: None,
                                    message: format!("cannot publish {name:?}: {key} is not known to the scheduler"),
                                },
                            ));
                        }
                    }
                }
                self.datasets.insert(name, found);
            }
            ClientToScheduler::Unpublish { name } => self.unpublish(&name),
            ClientToScheduler::GetDataset { request, name } => {
                let keys = self.datasets.get(&name).cloned();
                self.commands.push(Command::Client(client, SchedulerToClient::Dataset { request, keys }));
            }
            ClientToScheduler::ListDatasets { request } => {
                let names = self.datasets.keys().cloned().collect();
                self.commands.push(Command::Client(client, SchedulerToClient::Datasets { request, names }));
            }
            ClientToScheduler::WhoHas { request, keys } => {
                let holders = keys.iter().map(|k| self.who_has(k)).collect();
                self.commands.push(Command::Client(client, SchedulerToClient::WhoHas { request, holders }));
            }
            ClientToScheduler::Progress { request, names } => {
                let done = self.name_progress(names.iter().map(String::as_str));
                self.commands.push(Command::Client(client, SchedulerToClient::Progress { request, done }));
            }
            ClientToScheduler::WorkerMemory { request } => {
                let workers = self.memory_reports();
                self.commands.push(Command::Client(client, SchedulerToClient::WorkerMemory { request, workers }));
            }
            ClientToScheduler::RetireWorkers { workers } => self.retire_workers(&workers),
            ClientToScheduler::ClusterLoad { request } => {
                let (mut waiting, mut no_worker) = (0u64, 0u64);
                for task in self.tasks.iter().filter(|t| t.live) {
                    match task.state {
                        TaskState::Waiting => waiting += 1,
                        // Ready tasks of a cluster with no worker able to run them: the load
                        // that makes an adaptive cluster grow from zero.
                        TaskState::NoWorker => no_worker += 1,
                        _ => {}
                    }
                }
                let processing = self.workers.values().map(|w| w.processing.len() as u64).sum();
                // Threads that take new work: a paused or retiring worker's do not.
                let threads =
                    self.workers.values().filter(|w| self.takes_work(w.info.id)).map(|w| w.info.nthreads as u64).sum();
                self.commands.push(Command::Client(
                    client,
                    SchedulerToClient::ClusterLoad {
                        request,
                        queued: self.queued.len() as u64 + no_worker,
                        processing,
                        waiting,
                        workers: self.workers.len() as u64,
                        threads,
                    },
                ));
            }
            ClientToScheduler::ShutdownCluster => {
                self.shutdown_cluster(client);
            }
        }
        self.finish_event();
    }

    pub(super) fn shutdown_cluster(&mut self, client: ClientId) {
        for w in self.workers.values() {
            self.commands.push(Command::Worker(
                w.info.id,
                SchedulerToWorker::Close { reason: "the cluster is shutting down".into() },
            ));
        }
        for &c in self.clients.keys() {
            self.commands.push(Command::Client(
                c,
                SchedulerToClient::Shutdown { reason: format!("client {client} shut the cluster down") },
            ));
        }
    }

    pub(super) fn unpublish(&mut self, name: &str) {
        if let Some(keys) = self.datasets.remove(name) {
            for key in keys {
                if let Some(t) = self.find(&key) {
                    self.drop_want(t, DATASETS);
                }
            }
        }
    }

    pub(super) fn update_graph(&mut self, client: ClientId, tasks: Vec<SubmittedTask>, wanted: Vec<Key>) {
        self.generation += 1;
        let generation = self.generation;
        let mut inserted = Vec::with_capacity(tasks.len());
        for SubmittedTask { spec, order } in tasks {
            let hash = hash_key(&spec.key);
            let tasks = &self.tasks;
            if self.index.find(hash, |&t| tasks[t].key == spec.key).is_some() {
                continue;
            }
            let mut deps: SmallVec<[TaskSlot; 2]> = SmallVec::new();
            let mut inputs: SmallVec<[BodyInput; 2]> = SmallVec::with_capacity(spec.inputs.len());
            let mut missing = None;
            for input in spec.inputs {
                match input {
                    InputSpec::Task(k) => match self.find(&k) {
                        Some(d) => {
                            if !deps.contains(&d) {
                                deps.push(d);
                            }
                            inputs.push(BodyInput::Dep(d));
                        }
                        None => {
                            missing = Some(k);
                            break;
                        }
                    },
                    InputSpec::Literal(e) => inputs.push(BodyInput::Literal(Box::new(e))),
                }
            }
            if let Some(missing) = missing {
                let failure = TaskFailure::raised(
                    spec.key.clone(),
                    format!("depends on {missing}, which the scheduler does not know (released or never submitted)"),
                );
                let t = self.insert_task(spec.key, None, SmallVec::new(), Priority { generation, order });
                self.tasks[t].failure = Some(Box::new(failure));
                self.set_state(t, TaskState::Erred);
                inserted.push(t);
                continue;
            }
            let kernel = self.intern_kernel(spec.kernel);
            let body = Box::new(Body { kernel, inputs });
            inserted.push(self.insert_task_hashed(spec.key, hash, Some(body), deps, Priority { generation, order }));
        }
        for key in wanted {
            match self.find(&key) {
                Some(t) => self.want(t, client),
                None => self.commands.push(Command::Client(
                    client,
                    SchedulerToClient::Cancelled { reason: format!("{key} is not known to the scheduler"), key },
                )),
            }
        }
        // Submitted tasks that nothing wanted are not kept (dependents first, so chains go).
        for &t in inserted.iter().rev() {
            self.forget_if_unreferenced(t);
        }
    }

    pub(super) fn add_want(&mut self, t: TaskSlot, client: ClientId) {
        let task = &mut self.tasks[t];
        if !task.wanted_by.contains(&client) {
            task.wanted_by.push(client);
        }
        if let Some(c) = self.clients.get_mut(&client) {
            c.wants.insert(t);
        }
    }

    /// A client wants `t`: tell it now if done, else make sure it gets computed.
    pub(super) fn want(&mut self, t: TaskSlot, client: ClientId) {
        self.add_want(t, client);
        let task = &self.tasks[t];
        match task.state {
            TaskState::Memory => {
                let message = SchedulerToClient::InMemory {
                    key: task.key.clone(),
                    holders: task.who_has.to_vec(),
                    nbytes: task.nbytes,
                };
                self.commands.push(Command::Client(client, message));
            }
            TaskState::Erred => {
                let failure =
                    task.failure.as_deref().cloned().unwrap_or_else(|| TaskFailure::raised(task.key.clone(), "erred"));
                self.commands
                    .push(Command::Client(client, SchedulerToClient::Erred { key: task.key.clone(), failure }));
            }
            TaskState::Released => self.compute(t),
            _ => {}
        }
    }

    /// A client drops its reference on `key` (release or cancel).
    pub(super) fn client_releases(&mut self, client: ClientId, key: &Key) {
        if let Some(t) = self.find(key) {
            if let Some(c) = self.clients.get_mut(&client) {
                c.wants.remove(&t);
            }
            self.drop_want(t, client);
        }
    }

    pub(super) fn drop_want(&mut self, t: TaskSlot, client: ClientId) {
        let task = &mut self.tasks[t];
        task.wanted_by.retain(|c| *c != client);
        if task.wanted_by.is_empty() {
            self.release_if_unneeded(t);
        }
    }

    pub(super) fn scattered(&mut self, client: ClientId, entries: Vec<ScatteredEntry>) {
        for ScatteredEntry { key, worker, nbytes } in entries {
            if !self.workers.contains_key(&worker) {
                self.commands.push(Command::Client(
                    client,
                    SchedulerToClient::Cancelled {
                        key,
                        reason: format!("worker {worker} left before the scatter landed"),
                    },
                ));
                continue;
            }
            let t = match self.find(&key) {
                Some(t) => t,
                None => self.insert_task(key, None, SmallVec::new(), Priority::default()),
            };
            self.add_replica(t, worker, nbytes);
            self.want(t, client);
        }
    }

    pub(super) fn missing_dependency(&mut self, worker: WorkerId, key: &Key, missing: &Key, tried: &[WorkerId]) {
        if let Some(m) = self.find(missing) {
            let stale: Vec<WorkerId> = self.tasks[m].who_has.iter().copied().filter(|w| tried.contains(w)).collect();
            for w in stale {
                self.tasks[m].who_has.retain(|x| *x != w);
                let nbytes = self.tasks[m].nbytes;
                if let Some(holder) = self.workers.get_mut(&w) {
                    holder.has_what.remove(&m);
                    holder.nbytes = holder.nbytes.saturating_sub(nbytes);
                }
            }
            if self.tasks[m].state == TaskState::Memory && self.tasks[m].who_has.is_empty() {
                self.lose(m);
            }
        }
        if let Some(t) = self.find(key)
            && self.tasks[t].state == TaskState::Processing
            && self.tasks[t].processing_on == Some(worker)
        {
            // Try again: its inputs are either elsewhere or being recomputed.
            self.unassign(t);
            self.reset_to_waiting(t);
        }
    }
}
