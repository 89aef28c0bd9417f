//! `WorkerState` against a simulated scheduler, peers, compute threads and disk: random task
//! pieces, random completion orders, frees, steals, fetch failures, memory pressure, spill
//! failures, leaving and reconnecting. After every event the state's invariants are checked,
//! and a model of the shell checks the instructions: no run without its inputs in memory, no
//! instruction for a freed task, no value or spill file leaked, every task answered.

use std::collections::{HashMap, HashSet};

use kiln_graph::Key;
use kiln_protocol::messages::{Priority, TaskFailure, WhoHas, WorkerId, WorkerInfo, WorkerToScheduler};
use kiln_worker::{
    Config, Event, Instruction, KeyState, MemoryLimits, RunId, SpillError, SpillFile, WhenStuck, WorkerState,
};

// The generator both simulations share, so cases replay from their seed.
#[allow(dead_code)] // each simulation uses the part it needs
#[path = "../../../tests/support/rng.rs"]
mod rng;
use rng::Rng;

const ME: WorkerId = WorkerId::new(0);
const PEERS: [WorkerId; 3] = [WorkerId::new(1), WorkerId::new(2), WorkerId::new(3)];
const LIMIT: u64 = 10_000;

fn info(id: WorkerId) -> WorkerInfo {
    WorkerInfo {
        id,
        address: format!("10.0.0.{id}:9000"),
        name: format!("w{id}"),
        nthreads: 1,
        memory_limit: 0,
        write_token: Default::default(),
    }
}

/// The shell, the threads, the peers and the disk, as plain bookkeeping.
struct Sim {
    state: WorkerState<u32>,
    /// Bytes that may be arriving at once (with more than one value asked for).
    transfer_bytes: Option<u64>,
    rng: Rng,
    now: u64,
    /// Values in the store's memory (with their sizes) and on disk.
    memory: HashMap<Key, u64>,
    disk: HashMap<Key, SpillFile>,
    files: HashSet<SpillFile>,
    /// Runs queued for the threads, runs started, runs cancelled.
    queued: Vec<(RunId, Key)>,
    running: Vec<(RunId, Key)>,
    cancelled: HashSet<RunId>,
    fetches: Vec<(WorkerId, Vec<Key>)>,
    spills: Vec<(Key, SpillFile)>,
    unspills: Vec<(Key, SpillFile)>,
    /// Each task's dependencies, by payload.
    tasks: Vec<(Key, Vec<Key>)>,
    /// Tasks sent with `Compute` and not answered yet.
    outstanding: HashSet<Key>,
    /// Tasks the scheduler freed (and did not send again).
    freed: HashSet<Key>,
    /// Results this worker reported and holds, as the scheduler sees it.
    held: HashSet<Key>,
    steals: HashMap<Key, u32>,
    stopped: bool,
    events: usize,
    /// The task whose result arrives with the current event.
    result: Option<Key>,
    /// How often each kind of instruction, message and notice came out.
    seen: HashMap<String, usize>,
    /// Whether the scheduler believes this worker is paused (from its `Paused` messages).
    scheduler_paused: bool,
    /// Between losing the scheduler and registering again (the new one knows nothing yet).
    rejoining: bool,
}

impl Sim {
    fn new(seed: u64, config: Config) -> Sim {
        let transfer_bytes = config.memory.map(|m| (m.limit as f64 * m.transfer) as u64);
        let mut sim = Sim {
            transfer_bytes,
            state: WorkerState::new(config).unwrap(),
            rng: Rng(seed),
            now: 0,
            memory: HashMap::new(),
            disk: HashMap::new(),
            files: HashSet::new(),
            queued: Vec::new(),
            running: Vec::new(),
            cancelled: HashSet::new(),
            fetches: Vec::new(),
            spills: Vec::new(),
            unspills: Vec::new(),
            tasks: Vec::new(),
            outstanding: HashSet::new(),
            freed: HashSet::new(),
            held: HashSet::new(),
            steals: HashMap::new(),
            stopped: false,
            events: 0,
            result: None,
            seen: HashMap::new(),
            scheduler_paused: false,
            rejoining: false,
        };
        sim.register();
        sim
    }

    fn register(&mut self) {
        self.scheduler_paused = false;
        self.rejoining = false;
        let peers = std::iter::once(ME).chain(PEERS).map(info).collect();
        self.handle(Event::Registered { id: ME, peers });
    }

    /// Feeds one event and carries out its instructions (and their immediate answers).
    fn handle(&mut self, event: Event<u32>) {
        let mut pending = vec![event];
        while let Some(event) = pending.pop() {
            // Values that arrive with this event wait for `Keep`.
            let mut arriving: HashMap<Key, u64> = HashMap::new();
            match &event {
                Event::TaskFinished { key, nbytes, .. } => {
                    self.result = Some(key.clone());
                    arriving.insert(key.clone(), *nbytes);
                }
                Event::Fetched { arrived, .. } => arriving.extend(arrived.iter().cloned()),
                Event::Unspilled { key, .. } => {
                    arriving.insert(key.clone(), 0);
                }
                _ => {}
            }
            self.result = None;
            let shown = format!("{event:?}");
            let mut out = Vec::new();
            self.now += 1 + self.rng.below(1000) as u64;
            self.events += 1;
            self.state.handle(event, self.now, &mut out);
            if let Err(e) = self.state.check_invariants() {
                panic!("after event {} ({shown}): {e}; instructions {out:?}", self.events);
            }
            for instruction in out {
                if let Some(follow_up) = self.execute(instruction, &mut arriving) {
                    pending.push(follow_up);
                }
            }
            self.check_model();
        }
    }

    fn size_of(&self, key: &Key) -> u64 {
        key.to_string().len() as u64 * 100
    }

    fn execute(&mut self, instruction: Instruction<u32>, arriving: &mut HashMap<Key, u64>) -> Option<Event<u32>> {
        assert!(!self.stopped, "an instruction after Stop: {instruction:?}");
        let kind = match &instruction {
            Instruction::Send(m) => format!("{m:?}").split([' ', '(', '{']).next().unwrap_or("").to_string(),
            Instruction::Notice(n) => format!("{n:?}").split([' ', '(', '{']).next().unwrap_or("").to_string(),
            other => format!("{other:?}").split([' ', '(', '{']).next().unwrap_or("").to_string(),
        };
        *self.seen.entry(kind).or_default() += 1;
        match instruction {
            Instruction::Send(message) => self.scheduler_receives(message),
            Instruction::Fetch { holder, keys } => {
                assert!(PEERS.contains(&holder), "fetch from {holder}, not a peer");
                assert!(!keys.is_empty());
                self.fetches.push((holder, keys));
            }
            Instruction::Run { run, key, payload, .. } => {
                assert!(!self.freed.contains(&key), "{key} runs after it was freed");
                assert!(self.outstanding.contains(&key), "{key} runs but was not asked for");
                let (task_key, deps) = &self.tasks[payload as usize];
                assert_eq!(task_key, &key, "the payload travels with its task");
                for dep in deps {
                    assert!(self.memory.contains_key(dep), "{key} runs without its input {dep} in memory");
                }
                self.queued.push((run, key));
            }
            Instruction::Cancel { run } => {
                self.cancelled.insert(run);
            }
            Instruction::Unqueue { run, key } => {
                let taken = match self.queued.iter().position(|(r, _)| *r == run) {
                    Some(i) => {
                        self.queued.remove(i);
                        true
                    }
                    None => false,
                };
                return Some(Event::Unqueued { key, run, taken });
            }
            Instruction::DrainQueue { .. } => {
                let unstarted = std::mem::take(&mut self.queued);
                return Some(Event::QueueDrained { unstarted });
            }
            Instruction::Keep { key } => {
                let nbytes = arriving.remove(&key).unwrap_or_else(|| panic!("Keep {key}: nothing arrived"));
                let is_result = self.result.as_ref() == Some(&key);
                assert!(!(is_result && self.freed.contains(&key)), "keeps the result of freed {key}");
                assert_eq!(
                    nbytes == 0,
                    self.disk.remove(&key).is_some(),
                    "{key}: only read-back values come from disk"
                );
                self.memory.insert(key.clone(), self.size_of(&key));
            }
            Instruction::Spill { key, file } => {
                assert!(self.memory.contains_key(&key), "spill of {key}, not in memory");
                self.spills.push((key, file));
            }
            Instruction::Evict { key, file } => {
                assert!(self.memory.remove(&key).is_some(), "evict of {key}, not in memory");
                assert!(self.files.contains(&file), "evict to a file not written");
                self.disk.insert(key, file);
            }
            Instruction::Unspill { key, file } => {
                assert_eq!(self.disk.get(&key), Some(&file), "unspill of {key} from the wrong file");
                self.unspills.push((key, file));
            }
            Instruction::Release { key, file } => {
                self.memory.remove(&key);
                self.disk.remove(&key);
                if let Some(file) = file {
                    self.files.remove(&file);
                }
            }
            Instruction::DeleteFile { file } => {
                self.files.remove(&file);
            }
            Instruction::Notice(_) => {}
            Instruction::Stop => self.stopped = true,
        }
        None
    }

    fn scheduler_receives(&mut self, message: WorkerToScheduler) {
        match message {
            WorkerToScheduler::Finished { key, nbytes, .. } => {
                assert!(!self.freed.contains(&key), "Finished for freed {key}");
                assert!(self.memory.contains_key(&key) || self.disk.contains_key(&key), "Finished without a value");
                assert_eq!(nbytes, self.size_of(&key));
                self.outstanding.remove(&key);
                self.held.insert(key);
            }
            WorkerToScheduler::Failed { key, .. } => {
                assert!(!self.freed.contains(&key), "Failed for freed {key}");
                self.outstanding.remove(&key);
            }
            WorkerToScheduler::MissingDependency { key, missing, tried } => {
                assert!(!self.freed.contains(&key));
                assert!(tried.iter().all(|h| *h == ME || PEERS.contains(h)), "tried {tried:?} for {missing}");
                self.outstanding.remove(&key);
            }
            WorkerToScheduler::StealResponse { key, stolen } => {
                let asked = self.steals.get_mut(&key).expect("a steal response answers a steal");
                *asked -= 1;
                if *asked == 0 {
                    self.steals.remove(&key);
                }
                if stolen {
                    self.outstanding.remove(&key);
                    assert!(
                        !self.queued.iter().chain(&self.running).any(|(_, k)| *k == key) || self.freed.contains(&key)
                    );
                }
            }
            WorkerToScheduler::Leaving { returned } => {
                for key in returned {
                    self.outstanding.remove(&key);
                }
            }
            WorkerToScheduler::Paused { paused, reason } => {
                assert_ne!(paused, self.scheduler_paused, "a repeated Paused({paused}): {reason}");
                assert!(!reason.is_empty());
                self.scheduler_paused = paused;
            }
            WorkerToScheduler::Received { .. } | WorkerToScheduler::Heartbeat { .. } => {}
            WorkerToScheduler::Register { .. } => unreachable!("the state never registers"),
        }
    }

    /// The shell's store and the state agree; nothing leaks.
    fn check_model(&self) {
        let (fetching, incoming) = self.state.incoming();
        if let Some(limit) = self.transfer_bytes {
            assert!(fetching <= 1 || incoming <= limit, "{fetching} values, {incoming} bytes arriving, limit {limit}");
        }
        if !self.rejoining && !self.stopped {
            assert_eq!(self.state.is_paused(), self.scheduler_paused, "the scheduler is not told of a pause");
        }
        for key in self.memory.keys() {
            assert_eq!(self.state.key_state(key), Some(KeyState::Memory), "{key} in memory, not in the state");
        }
        for (key, file) in &self.disk {
            let s = self.state.key_state(key);
            assert!(matches!(s, Some(KeyState::Spilled | KeyState::Unspilling)), "{key} on disk, state {s:?}");
            assert!(self.files.contains(file), "{key}'s file is gone");
        }
        let managed: u64 = self.memory.values().sum();
        assert_eq!(managed, self.state.managed_bytes(), "managed bytes");
        for file in &self.files {
            let referenced = self.disk.values().any(|f| f == file) || self.spills.iter().any(|(_, f)| f == file);
            assert!(referenced, "spill file {file:?} leaked");
        }
    }

    // ---- the world's moves ----

    fn compute(&mut self) {
        let index = self.tasks.len() as u32;
        let key = Key::with_index("t", [index]);
        let mut deps = Vec::new();
        let mut who_has = Vec::new();
        for _ in 0..self.rng.below(4) {
            let local: Vec<Key> = self.held.iter().filter(|k| self.state.key_state(k).is_some()).cloned().collect();
            if !local.is_empty() && self.rng.chance(50) {
                let mut local = local;
                local.sort();
                deps.push(local[self.rng.below(local.len())].clone());
            } else {
                let dep = Key::with_index("r", [self.rng.below(12) as u32]);
                let mut named: Vec<WorkerId> = PEERS.iter().copied().filter(|_| self.rng.chance(60)).collect();
                if named.is_empty() {
                    named.push(PEERS[self.rng.below(3)]);
                }
                who_has.push(WhoHas { key: dep.clone(), holders: named, nbytes: self.size_of(&dep) });
                deps.push(dep);
            }
        }
        self.tasks.push((key.clone(), deps.clone()));
        self.outstanding.insert(key.clone());
        self.freed.remove(&key);
        let priority = Priority { generation: 0, order: self.rng.below(50) as u32 };
        self.handle(Event::Compute { key, deps: deps.into_iter().collect(), who_has, priority, payload: index });
    }

    fn start_one(&mut self) {
        if self.queued.is_empty() {
            return;
        }
        let (run, key) = self.queued.remove(self.rng.below(self.queued.len()));
        if self.cancelled.remove(&run) {
            self.handle(Event::TaskSkipped { key, run });
        } else {
            self.running.push((run, key));
        }
    }

    fn finish_one(&mut self) {
        if self.running.is_empty() {
            return;
        }
        let (run, key) = self.running.remove(self.rng.below(self.running.len()));
        if self.rng.chance(10) {
            let failure = TaskFailure::raised(key.clone(), "boom".to_string());
            self.handle(Event::TaskFailed { key, run, failure });
        } else {
            let nbytes = self.size_of(&key);
            self.handle(Event::TaskFinished { key, run, nbytes, duration_us: 5, started_us: 1, thread: 0 });
        }
    }

    fn answer_fetch(&mut self) {
        if self.fetches.is_empty() {
            return;
        }
        let (holder, keys) = self.fetches.remove(self.rng.below(self.fetches.len()));
        if self.rng.chance(10) {
            self.handle(Event::FetchFailed { holder, keys });
            return;
        }
        let (mut arrived, mut missing) = (Vec::new(), Vec::new());
        for key in keys {
            // A holder that no longer has the value.
            if self.rng.chance(20) {
                missing.push(key);
            } else {
                let nbytes = self.size_of(&key);
                arrived.push((key, nbytes));
            }
        }
        self.handle(Event::Fetched { holder, arrived, missing });
    }

    fn answer_spill(&mut self) {
        if self.spills.is_empty() {
            return;
        }
        let (key, file) = self.spills.remove(self.rng.below(self.spills.len()));
        self.files.insert(file);
        let roll = self.rng.below(100);
        if roll < 3 {
            self.handle(Event::SpillFailed { key, file, error: SpillError::Io("disk full".into()) });
        } else if roll < 8 {
            self.handle(Event::SpillFailed { key, file, error: SpillError::Unencodable("no codec".into()) });
        } else {
            self.handle(Event::SpillDone { key, file });
        }
    }

    fn answer_unspill(&mut self) {
        if self.unspills.is_empty() {
            return;
        }
        let (key, file) = self.unspills.remove(self.rng.below(self.unspills.len()));
        if !self.files.contains(&file) || self.rng.chance(5) {
            self.handle(Event::UnspillFailed { key, file, message: "unreadable".into() });
        } else {
            self.handle(Event::Unspilled { key, file });
        }
    }

    fn free_one(&mut self) {
        let mut known: Vec<Key> =
            self.held.iter().chain(self.outstanding.iter()).filter(|k| !self.freed.contains(*k)).cloned().collect();
        if known.is_empty() {
            return;
        }
        known.sort();
        known.dedup();
        let key = known[self.rng.below(known.len())].clone();
        self.held.remove(&key);
        self.outstanding.remove(&key);
        self.freed.insert(key.clone());
        self.handle(Event::Free { keys: vec![key] });
    }

    fn steal_one(&mut self) {
        let mut candidates: Vec<Key> = self.outstanding.iter().cloned().collect();
        if candidates.is_empty() {
            return;
        }
        candidates.sort();
        let key = candidates[self.rng.below(candidates.len())].clone();
        *self.steals.entry(key.clone()).or_default() += 1;
        self.handle(Event::Steal { key });
    }

    fn acquire(&mut self) {
        let key = Key::with_index("a", [self.rng.below(6) as u32]);
        self.held.insert(key.clone());
        self.freed.remove(&key);
        let holders = vec![PEERS[self.rng.below(3)], PEERS[self.rng.below(3)]];
        let nbytes = self.size_of(&key);
        self.handle(Event::Acquire { keys: vec![WhoHas { key, holders, nbytes }] });
    }

    fn step(&mut self) {
        if self.stopped {
            // The worker left for a fresh start (a pause waiting could not end): its process
            // exits, nothing more happens to this state.
            return;
        }
        match self.rng.below(100) {
            0..=19 => self.compute(),
            20..=34 => self.start_one(),
            35..=49 => self.finish_one(),
            50..=61 => self.answer_fetch(),
            62..=67 => self.answer_spill(),
            68..=71 => self.answer_unspill(),
            72..=78 => self.free_one(),
            79..=83 => self.steal_one(),
            84..=90 => {
                let process_bytes = self.rng.below(2 * LIMIT as usize) as u64;
                self.handle(Event::MemoryMeasured { process_bytes });
            }
            91..=92 => self.acquire(),
            93 => {
                let key = Key::with_index("s", [self.rng.below(4) as u32]);
                if self.state.key_state(&key).is_some() {
                    return;
                }
                // The peer server stores scattered data before it tells the state.
                self.held.insert(key.clone());
                self.freed.remove(&key);
                self.memory.insert(key.clone(), self.size_of(&key));
                let nbytes = self.size_of(&key);
                self.handle(Event::Received { entries: vec![(key, nbytes)] });
            }
            94..=96 => self.handle(Event::HeartbeatDue {
                process_bytes: 0,
                cpu_percent: 0.0,
                activity: Vec::new(),
                activity_dropped: 0,
                network_bytes: (0, 0),
            }),
            97 if self.rng.chance(10) => {
                // The scheduler is lost: it forgets this worker's work, which rejoins.
                self.rejoining = true;
                self.handle(Event::SchedulerLost);
                self.outstanding.clear();
                self.held.clear();
                self.steals.clear();
                self.register();
            }
            _ => self.handle(Event::Tick),
        }
    }

    /// Lets every queued operation complete, with memory low, until nothing moves.
    fn settle(&mut self) {
        self.handle(Event::MemoryMeasured { process_bytes: 0 });
        for _ in 0..100_000 {
            if self.stopped {
                return;
            }
            if !self.queued.is_empty() {
                self.start_one();
            } else if !self.running.is_empty() {
                self.finish_one();
            } else if !self.fetches.is_empty() {
                self.answer_fetch();
            } else if !self.spills.is_empty() {
                self.answer_spill();
            } else if !self.unspills.is_empty() {
                self.answer_unspill();
            } else if let Some(deadline) = self.state.next_deadline() {
                // A spill retry (or a leave) waits for its time.
                self.now = self.now.max(deadline);
                self.handle(Event::Tick);
            } else {
                return;
            }
        }
        panic!("the simulation does not settle");
    }
}

fn config(seed: u64) -> Config {
    let mut config = Config::new(1 + (seed % 3) as usize);
    config.tasks_per_thread = 1 + (seed % 4) as usize;
    config.memory = (!seed.is_multiple_of(4)).then(|| MemoryLimits {
        // From one value at a time to all of them.
        transfer: [0.1, 0.25, 1.0][(seed % 3) as usize],
        ..MemoryLimits::with_limit(LIMIT).unwrap()
    });
    config.max_spills_in_flight = 1 + (seed % 2) as usize;
    // Short graces, so that schedules (a few hundred milliseconds) reach the end of a pause
    // that waiting cannot end, both ways.
    config.stuck_grace_us = 2_000 + (seed % 5) * 10_000;
    config.when_stuck = if seed.is_multiple_of(3) { WhenStuck::Restart } else { WhenStuck::Resume };
    config
}

#[test]
fn random_schedules_keep_every_invariant_and_answer_every_task() {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut fresh_starts = 0;
    for seed in 0..300 {
        let mut sim = Sim::new(seed, config(seed));
        for _ in 0..400 {
            sim.step();
        }
        sim.settle();
        assert!(sim.outstanding.is_empty(), "seed {seed}: tasks never answered: {:?}", sim.outstanding);
        assert!(sim.steals.is_empty(), "seed {seed}: steals never answered: {:?}", sim.steals);
        // Leaving hands back what did not start and stops once running tasks are done.
        if sim.state.wants_fresh_start() {
            fresh_starts += 1;
            assert!(sim.stopped, "seed {seed}: left for a fresh start but did not stop");
        } else {
            for _ in 0..sim.rng.below(5) {
                sim.compute();
            }
            sim.handle(Event::Leave);
            sim.settle();
        }
        assert!(sim.stopped, "seed {seed}: leaving did not stop");
        assert!(sim.outstanding.is_empty(), "seed {seed}: left without answering {:?}", sim.outstanding);
        for (kind, n) in sim.seen {
            *seen.entry(kind).or_default() += n;
        }
    }
    // The schedules reach every path worth checking.
    for kind in [
        "Run",
        "Cancel",
        "Unqueue",
        "Fetch",
        "Keep",
        "Spill",
        "Evict",
        "Unspill",
        "Release",
        "DeleteFile",
        "Finished",
        "Failed",
        "MissingDependency",
        "StealResponse",
        "Received",
        "Leaving",
        "Paused",
        "Resumed",
        "SpillingStopped",
        "SpillingResumed",
        "Unspillable",
        "ValueLost",
        "PauseCannotEnd",
    ] {
        assert!(seen.get(kind).copied().unwrap_or(0) > 0, "no {kind} in any schedule: {seen:?}");
    }
    assert!(fresh_starts > 0, "no schedule left for a fresh start");
}
