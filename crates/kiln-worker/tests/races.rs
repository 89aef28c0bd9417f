//! The worker's hard races, one named test each, replayed event by event with explicit time.

use kiln_graph::Key;
use kiln_protocol::messages::{Priority, WhoHas, WorkerId, WorkerInfo, WorkerToScheduler};
use kiln_worker::{
    Config, Event, Instruction, KeyState, MemoryLimits, Notice, PauseReason, RunId, SpillError, SpillFile, WhenStuck,
    WorkerState,
};

type Out = Vec<Instruction<()>>;

const W0: WorkerId = WorkerId::new(0);
const W1: WorkerId = WorkerId::new(1);
const W2: WorkerId = WorkerId::new(2);

fn key(name: &str) -> Key {
    Key::new(name)
}

fn peer(id: u32) -> WorkerInfo {
    WorkerInfo {
        id: WorkerId::new(id),
        address: format!("10.0.0.{id}:9000"),
        name: format!("w{id}"),
        nthreads: 1,
        memory_limit: 0,
        write_token: Default::default(),
    }
}

/// A registered worker (id 0) with peers 1 and 2.
fn worker(config: Config) -> WorkerState<()> {
    let mut state = WorkerState::new(config).unwrap();
    step(&mut state, Event::Registered { id: W0, peers: vec![peer(0), peer(1), peer(2)] });
    state
}

fn step(state: &mut WorkerState<()>, event: Event<()>) -> Out {
    let mut out = Vec::new();
    state.handle(event, 0, &mut out);
    state.check_invariants().unwrap();
    out
}

fn compute(name: &str, deps: &[(&str, &[u32])]) -> Event<()> {
    Event::Compute {
        key: key(name),
        deps: deps.iter().map(|(d, _)| key(d)).collect(),
        who_has: deps
            .iter()
            .filter(|(_, h)| !h.is_empty())
            .map(|(d, h)| WhoHas { key: key(d), holders: h.iter().map(|&i| WorkerId::new(i)).collect(), nbytes: 100 })
            .collect(),
        priority: Priority::default(),
        payload: (),
    }
}

fn run_of(out: &Out, name: &str) -> RunId {
    out.iter()
        .find_map(|i| match i {
            Instruction::Run { run, key: k, .. } if *k == key(name) => Some(*run),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{name} does not run: {out:?}"))
}

fn sent(out: &Out) -> Vec<&WorkerToScheduler> {
    out.iter()
        .filter_map(|i| match i {
            Instruction::Send(m) => Some(m),
            _ => None,
        })
        .collect()
}

fn finish(state: &mut WorkerState<()>, name: &str, run: RunId, nbytes: u64) -> Out {
    step(state, Event::TaskFinished { key: key(name), run, nbytes, duration_us: 1, started_us: 1, thread: 0 })
}

#[test]
fn a_free_arriving_while_the_task_runs_drops_its_late_result() {
    let mut state = worker(Config::new(1));
    let first = run_of(&step(&mut state, compute("x", &[])), "x");
    let out = step(&mut state, Event::Free { keys: vec![key("x")] });
    assert!(matches!(&out[..], [Instruction::Cancel { run }] if *run == first), "{out:?}");
    assert_eq!(state.key_state(&key("x")), None);
    // The scheduler sends it again before the first run reports.
    let second = run_of(&step(&mut state, compute("x", &[])), "x");
    assert_ne!(first, second);
    // The first run's late result is neither kept nor reported.
    let out = finish(&mut state, "x", first, 10);
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(state.key_state(&key("x")), Some(KeyState::Executing));
    let out = finish(&mut state, "x", second, 10);
    assert!(matches!(&out[0], Instruction::Keep { .. }));
    assert!(matches!(sent(&out)[..], [WorkerToScheduler::Finished { nbytes: 10, .. }]));
    assert_eq!(state.in_flight(), 0);
}

#[test]
fn a_steal_racing_a_start_is_refused_once_the_task_has_started() {
    let mut state = worker(Config::new(1));
    let run = run_of(&step(&mut state, compute("x", &[])), "x");
    // Handed to the threads: only the queue knows whether it started.
    let out = step(&mut state, Event::Steal { key: key("x") });
    assert!(matches!(&out[..], [Instruction::Unqueue { run: r, .. }] if *r == run), "{out:?}");
    // A second steal while the first is unanswered asks nothing more.
    assert!(step(&mut state, Event::Steal { key: key("x") }).is_empty());
    // It had started: refused, and its result is reported as usual.
    let out = step(&mut state, Event::Unqueued { key: key("x"), run, taken: false });
    assert!(matches!(sent(&out)[..], [WorkerToScheduler::StealResponse { stolen: false, .. }]), "{out:?}");
    let out = finish(&mut state, "x", run, 8);
    assert!(matches!(sent(&out)[..], [WorkerToScheduler::Finished { .. }]));
}

#[test]
fn a_steal_of_a_queued_task_takes_it_back_and_its_slot_goes_to_the_next() {
    let mut config = Config::new(1);
    config.tasks_per_thread = 1;
    let mut state = worker(config);
    let x = run_of(&step(&mut state, compute("x", &[])), "x");
    // No slot: y waits in the state and is stolen without asking the threads.
    assert!(step(&mut state, compute("y", &[])).is_empty());
    let out = step(&mut state, Event::Steal { key: key("y") });
    assert!(matches!(sent(&out)[..], [WorkerToScheduler::StealResponse { stolen: true, .. }]), "{out:?}");
    // x had not started: the queue gives it back, and z takes the slot.
    assert!(step(&mut state, compute("z", &[])).is_empty());
    step(&mut state, Event::Steal { key: key("x") });
    let out = step(&mut state, Event::Unqueued { key: key("x"), run: x, taken: true });
    assert!(matches!(sent(&out)[..], [WorkerToScheduler::StealResponse { stolen: true, .. }]), "{out:?}");
    run_of(&out, "z");
    assert_eq!(state.key_state(&key("x")), None);
    assert_eq!(state.in_flight(), 1);
}

#[test]
fn a_holder_that_no_longer_has_the_value_is_skipped_for_the_next_one() {
    let mut state = worker(Config::new(1));
    let out = step(&mut state, compute("t", &[("d", &[1, 2])]));
    assert!(matches!(&out[..], [Instruction::Fetch { holder: W1, .. }]), "{out:?}");
    let out = step(&mut state, Event::Fetched { holder: W1, arrived: vec![], missing: vec![key("d")] });
    assert!(matches!(&out[..], [Instruction::Fetch { holder: W2, .. }]), "{out:?}");
    let out = step(&mut state, Event::Fetched { holder: W2, arrived: vec![(key("d"), 5)], missing: vec![] });
    assert!(matches!(&out[0], Instruction::Keep { key: k } if *k == key("d")));
    let t = run_of(&out, "t");
    // The borrowed input stays while its run holds it, and goes when the run ends; the
    // scheduler never knew it.
    assert!(!out.iter().any(|i| matches!(i, Instruction::Release { .. })), "{out:?}");
    assert_eq!(state.key_state(&key("d")), Some(KeyState::Memory));
    let out = finish(&mut state, "t", t, 8);
    assert!(out.iter().any(|i| matches!(i, Instruction::Release { key: k, file: None } if *k == key("d"))), "{out:?}");
    assert_eq!(state.key_state(&key("d")), None);
}

#[test]
fn a_dependency_no_holder_has_is_reported_with_every_holder_tried() {
    let mut state = worker(Config::new(1));
    step(&mut state, compute("t", &[("d", &[1, 2]), ("e", &[1])]));
    step(&mut state, Event::Fetched { holder: W1, arrived: vec![(key("e"), 5)], missing: vec![key("d")] });
    let out = step(&mut state, Event::FetchFailed { holder: W2, keys: vec![key("d")] });
    let messages = sent(&out);
    assert!(
        matches!(messages[..], [WorkerToScheduler::MissingDependency { tried, .. }] if *tried == vec![W1, W2]),
        "{out:?}"
    );
    assert!(!out.iter().any(|i| matches!(i, Instruction::Run { .. })));
    // The input that did arrive is dropped with the task.
    assert_eq!(state.key_state(&key("t")), None);
    assert_eq!(state.key_state(&key("e")), None);
    assert_eq!(state.managed_bytes(), 0);
}

fn limited(limit: u64) -> Config {
    let mut config = Config::new(1);
    config.memory = MemoryLimits::with_limit(limit);
    config
}

#[test]
fn pause_holds_new_tasks_and_resume_starts_them_in_order() {
    let mut state = worker(limited(1000));
    let mut out = Vec::new();
    state.handle(Event::MemoryMeasured { process_bytes: 900 }, 1_000, &mut out);
    let reason = PauseReason::Memory { process_bytes: 900, limit: 1000, fraction: 0.8 };
    assert!(
        matches!(
            &out[..],
            [Instruction::Send(WorkerToScheduler::Paused { paused: true, reason: sent }), Instruction::Notice(Notice::Paused { reason: noticed })]
                if *noticed == reason && *sent == reason.to_string()
        ),
        "{out:?}"
    );
    assert!(state.is_paused());
    for name in ["a", "b"] {
        assert!(step(&mut state, compute(name, &[])).is_empty(), "{name} starts while paused");
        assert_eq!(state.key_state(&key(name)), Some(KeyState::Ready));
    }
    let mut out = Vec::new();
    state.handle(Event::MemoryMeasured { process_bytes: 100 }, 5_000, &mut out);
    state.check_invariants().unwrap();
    assert!(matches!(&out[0], Instruction::Send(WorkerToScheduler::Paused { paused: false, .. })), "{out:?}");
    assert!(matches!(&out[1], Instruction::Notice(Notice::Resumed { paused_for_us: 4_000, .. })), "{out:?}");
    run_of(&out, "a");
    run_of(&out, "b");
}

/// Finishes `name` (no inputs) with `nbytes` and returns the instructions of its result.
fn produce(state: &mut WorkerState<()>, name: &str, nbytes: u64) -> Out {
    let run = run_of(&step(state, compute(name, &[])), name);
    finish(state, name, run, nbytes)
}

#[test]
fn a_spill_failure_keeps_the_value_in_memory_and_stops_spilling() {
    let mut state = worker(limited(1000)); // target 600 bytes
    produce(&mut state, "a", 400);
    let out = produce(&mut state, "b", 400);
    let Some(Instruction::Spill { key: victim, file }) = out.iter().find(|i| matches!(i, Instruction::Spill { .. }))
    else {
        panic!("nothing spilled over the target: {out:?}")
    };
    assert_eq!(*victim, key("a"), "the least recently used goes first");
    let out =
        step(&mut state, Event::SpillFailed { key: key("a"), file: *file, error: SpillError::Io("disk full".into()) });
    assert!(out.iter().any(|i| matches!(i, Instruction::Notice(Notice::SpillingStopped { .. }))), "{out:?}");
    assert!(!out.iter().any(|i| matches!(i, Instruction::Evict { .. } | Instruction::Release { .. })));
    assert_eq!(state.key_state(&key("a")), Some(KeyState::Memory));
    assert_eq!(state.managed_bytes(), 800);
    assert!(state.spilling_stopped());
    // More memory (a client's scatter): no further spill is tried, and "a" serves its
    // dependents from memory.
    let out = step(&mut state, Event::Received { entries: vec![(key("c"), 400)] });
    assert!(!out.iter().any(|i| matches!(i, Instruction::Spill { .. })), "{out:?}");
    let out = step(&mut state, compute("t", &[("a", &[])]));
    assert!(!out.iter().any(|i| matches!(i, Instruction::Unspill { .. })));
    run_of(&out, "t");
}

#[test]
fn an_unencodable_value_stays_in_memory_and_the_next_one_spills() {
    let mut state = worker(limited(1000));
    produce(&mut state, "a", 300);
    produce(&mut state, "b", 300);
    let out = produce(&mut state, "c", 300);
    let Some(Instruction::Spill { file, .. }) = out.iter().find(|i| matches!(i, Instruction::Spill { .. })) else {
        panic!("{out:?}")
    };
    let error = SpillError::Unencodable("no codec".into());
    let out = step(&mut state, Event::SpillFailed { key: key("a"), file: *file, error });
    assert!(out.iter().any(|i| matches!(i, Instruction::Notice(Notice::Unspillable { .. }))));
    assert!(
        out.iter().any(|i| matches!(i, Instruction::Spill { key: k, .. } if *k == key("b"))),
        "the next candidate spills: {out:?}"
    );
    assert!(!state.spilling_stopped());
}

#[test]
fn a_spilled_input_is_read_back_before_its_task_runs_and_a_lost_one_is_reported() {
    let mut state = worker(limited(1000));
    produce(&mut state, "a", 400);
    let out = produce(&mut state, "b", 400);
    let Some(Instruction::Spill { file, .. }) = out.iter().find(|i| matches!(i, Instruction::Spill { .. })) else {
        panic!("{out:?}")
    };
    let file = *file;
    let out = step(&mut state, Event::SpillDone { key: key("a"), file });
    assert!(matches!(&out[..], [Instruction::Evict { .. }]), "{out:?}");
    assert_eq!((state.managed_bytes(), state.spilled_bytes()), (400, 400));
    let out = step(&mut state, compute("t", &[("a", &[])]));
    assert!(matches!(&out[..], [Instruction::Unspill { file: f, .. }] if *f == file), "{out:?}");
    let out = step(&mut state, Event::Unspilled { key: key("a"), file });
    assert!(matches!(&out[0], Instruction::Keep { .. }));
    // Back over the target: "t" waits until the unpinned "b" is written out.
    assert!(!out.iter().any(|i| matches!(i, Instruction::Run { .. })), "{out:?}");
    let Some(Instruction::Spill { key: victim, file }) = out.iter().find(|i| matches!(i, Instruction::Spill { .. }))
    else {
        panic!("{out:?}")
    };
    let (victim, file) = (victim.clone(), *file);
    assert_eq!(victim, key("b"));
    let out = step(&mut state, Event::SpillDone { key: victim.clone(), file });
    let t = run_of(&out, "t");
    finish(&mut state, "t", t, 1);
    // Then the file of "b" is lost: the task needing it is reported, nothing runs.
    let u = Event::Compute {
        key: key("u"),
        deps: [victim.clone()].into_iter().collect(),
        who_has: vec![],
        priority: Priority::default(),
        payload: (),
    };
    step(&mut state, u);
    let out = step(&mut state, Event::UnspillFailed { key: victim.clone(), file, message: "gone".into() });
    assert!(out.iter().any(|i| matches!(i, Instruction::Notice(Notice::ValueLost { .. }))));
    assert!(
        sent(&out)
            .iter()
            .any(|m| matches!(m, WorkerToScheduler::MissingDependency { tried, .. } if *tried == vec![W0]))
    );
    assert!(!out.iter().any(|i| matches!(i, Instruction::Run { .. })));
}

#[test]
fn leaving_hands_back_unstarted_work_and_waits_for_running_tasks() {
    let mut config = Config::new(1);
    config.tasks_per_thread = 2;
    let mut state = worker(config);
    let x = run_of(&step(&mut state, compute("x", &[])), "x");
    let y = run_of(&step(&mut state, compute("y", &[])), "y");
    step(&mut state, compute("z", &[]));
    step(&mut state, compute("w", &[("d", &[1])]));
    let mut out = Vec::new();
    state.handle(Event::Leave, 100, &mut out);
    assert!(matches!(&out[..], [Instruction::DrainQueue { close: true }]), "{out:?}");
    assert_eq!(state.next_deadline(), Some(100 + 30_000_000));
    // y had not started; x runs on and reports before the worker leaves.
    let out = step(&mut state, Event::QueueDrained { unstarted: vec![(y, key("y"))] });
    assert!(out.is_empty(), "{out:?}");
    let out = finish(&mut state, "x", x, 1);
    let messages = sent(&out);
    assert!(matches!(messages[0], WorkerToScheduler::Finished { .. }));
    let WorkerToScheduler::Leaving { returned } = messages[1] else { panic!("{out:?}") };
    let mut returned = returned.clone();
    returned.sort();
    assert_eq!(returned, vec![key("w"), key("y"), key("z")]);
    // The log says how many went back, counted once everything is known.
    assert!(out.iter().any(|i| matches!(i, Instruction::Notice(Notice::Leaving { returned: 3 }))), "{out:?}");
    assert!(matches!(out.last(), Some(Instruction::Stop)));
    assert!(step(&mut state, compute("late", &[])).is_empty(), "a stopped worker does nothing");
}

#[test]
fn a_task_that_outlives_the_leave_patience_is_left_behind() {
    let mut state = worker(Config::new(1));
    run_of(&step(&mut state, compute("x", &[])), "x");
    let mut out = Vec::new();
    state.handle(Event::Leave, 0, &mut out);
    state.handle(Event::QueueDrained { unstarted: vec![] }, 1, &mut out);
    out.clear();
    let deadline = state.next_deadline().unwrap();
    state.handle(Event::Tick, deadline - 1, &mut out);
    assert!(out.is_empty());
    state.handle(Event::Tick, deadline, &mut out);
    assert!(matches!(
        &out[..],
        [
            Instruction::Notice(Notice::LeaveTimedOut { running: 1 }),
            Instruction::Notice(Notice::Leaving { returned: 0 }),
            Instruction::Send(_),
            Instruction::Stop
        ]
    ));
    assert_eq!(state.next_deadline(), None);
}

#[test]
fn a_paused_worker_whose_memory_is_pinned_by_ready_tasks_still_runs_one_at_a_time() {
    let mut state = worker(limited(1000));
    produce(&mut state, "a", 400);
    let out = produce(&mut state, "b", 400);
    let Some(Instruction::Spill { key: victim, file }) = out.iter().find(|i| matches!(i, Instruction::Spill { .. }))
    else {
        panic!("{out:?}")
    };
    // The disk is full: nothing can be spilled any more.
    step(&mut state, Event::SpillFailed { key: victim.clone(), file: *file, error: SpillError::Io("full".into()) });
    step(&mut state, Event::MemoryMeasured { process_bytes: 990 });
    assert!(state.is_paused());
    // A root task would add memory: it waits. Only running the consumers of "a" and "b"
    // unpins their inputs: one starts.
    assert!(step(&mut state, compute("root", &[])).is_empty());
    let out = step(&mut state, compute("use-a", &[("a", &[])]));
    let run = run_of(&out, "use-a");
    assert!(step(&mut state, compute("use-b", &[("b", &[])])).is_empty(), "one at a time");
    let out = finish(&mut state, "use-a", run, 1);
    run_of(&out, "use-b");
    assert_eq!(state.key_state(&key("root")), Some(KeyState::Ready));
}

#[test]
fn spilled_inputs_of_a_burst_of_tasks_are_read_back_a_few_at_a_time() {
    let mut config = limited(1000);
    config.max_unspills_in_flight = 2;
    let mut state = worker(config);
    // Spill five values by keeping memory over the target.
    let mut spilled = Vec::new();
    for i in 0..5 {
        let name = format!("v{i}");
        let out = produce(&mut state, &name, 700);
        for instruction in out {
            if let Instruction::Spill { key, file } = instruction {
                step(&mut state, Event::SpillDone { key: key.clone(), file });
                spilled.push((key, file));
            }
        }
    }
    assert!(spilled.len() >= 4, "{spilled:?}");
    let mut unspills = 0;
    for (i, (victim, _)) in spilled.iter().enumerate() {
        let event = Event::Compute {
            key: key(&format!("use{i}")),
            deps: [victim.clone()].into_iter().collect(),
            who_has: vec![],
            priority: Priority::default(),
            payload: (),
        };
        unspills += step(&mut state, event).iter().filter(|i| matches!(i, Instruction::Unspill { .. })).count();
    }
    // At most two at a time, and only as memory allows (here: over the target, one).
    assert_eq!(unspills, 1, "reads back only what memory has room for");
}

fn unspills(out: &Out) -> Vec<Key> {
    out.iter()
        .filter_map(|i| match i {
            Instruction::Unspill { key, .. } => Some(key.clone()),
            _ => None,
        })
        .collect()
}

fn unspill_file(out: &Out) -> SpillFile {
    out.iter()
        .find_map(|i| match i {
            Instruction::Unspill { file, .. } => Some(*file),
            _ => None,
        })
        .unwrap_or_else(|| panic!("nothing read back: {out:?}"))
}

fn needs(name: &str, input: &str) -> Event<()> {
    Event::Compute {
        key: key(name),
        deps: [key(input)].into_iter().collect(),
        who_has: vec![],
        priority: Priority::default(),
        payload: (),
    }
}

/// Reads back count the reads already under way, and wait for writes under way: a 128 MB
/// worker summing its persisted chunks twice held 119 MB of values against a 77 MB target when
/// each read was weighed alone and a write in flight did not hold reads back.
#[test]
fn reads_back_never_outrun_the_target_nor_the_writes_under_way() {
    let mut config = limited(1000); // target 600 bytes
    config.max_unspills_in_flight = 2;
    let mut state = worker(config);
    for i in 0..5 {
        for instruction in produce(&mut state, &format!("v{i}"), 200) {
            if let Instruction::Spill { key, file } = instruction {
                step(&mut state, Event::SpillDone { key, file });
            }
        }
    }
    assert_eq!((state.managed_bytes(), state.spilled_bytes()), (600, 400));
    step(&mut state, Event::Free { keys: vec![key("v4")] });
    assert_eq!(state.managed_bytes(), 400);
    // Two reads of 200 bytes would each fit alone; together they pass the target.
    let out = step(&mut state, needs("use0", "v0"));
    assert_eq!(unspills(&out), [key("v0")]);
    assert!(unspills(&step(&mut state, needs("use1", "v1"))).is_empty(), "a second read past the target");
    let out = step(&mut state, Event::Unspilled { key: key("v0"), file: unspill_file(&out) });
    assert_eq!(state.managed_bytes(), 600);
    // use0 runs and adds 200 bytes: a write starts; with it under way, nothing is read back,
    // although nothing else runs.
    let out = finish(&mut state, "use0", run_of(&out, "use0"), 200);
    let Some((victim, file)) = out.iter().find_map(|i| match i {
        Instruction::Spill { key, file } => Some((key.clone(), *file)),
        _ => None,
    }) else {
        panic!("nothing spilled over the target: {out:?}")
    };
    assert!(unspills(&out).is_empty(), "read back with a write under way: {out:?}");
    assert_eq!(state.in_flight(), 0);
    // Once the write ends, the worker has nothing else under way, so it reads v1 back even
    // though memory sits at the target: use1 must progress.
    let out = step(&mut state, Event::SpillDone { key: victim, file });
    assert_eq!(unspills(&out), [key("v1")]);
}

#[test]
fn a_value_being_fetched_from_a_lost_holder_is_computed_here_when_the_scheduler_asks() {
    let mut state = worker(Config::new(1));
    step(&mut state, compute("t", &[("d", &[1])]));
    // Holder 1 is cut off; the fetch never answers. The scheduler frees "t" and asks this
    // worker to compute "d" itself.
    step(&mut state, Event::Free { keys: vec![key("t")] });
    let out = step(&mut state, compute("d", &[]));
    let run = run_of(&out, "d");
    let out = finish(&mut state, "d", run, 3);
    assert!(matches!(sent(&out)[..], [WorkerToScheduler::Finished { .. }]), "{out:?}");
    // The late answer of the abandoned fetch changes nothing.
    let out = step(&mut state, Event::FetchFailed { holder: W1, keys: vec![key("d")] });
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(state.key_state(&key("d")), Some(KeyState::Memory));
}

#[test]
fn a_worker_pauses_at_eighty_percent_of_its_memory_limit_as_the_readme_says() {
    let mut state = worker(limited(1000));
    step(&mut state, Event::MemoryMeasured { process_bytes: 799 });
    assert!(!state.is_paused(), "paused below 80 %");
    step(&mut state, Event::MemoryMeasured { process_bytes: 801 });
    assert!(state.is_paused(), "not paused above 80 %");
}

fn at(state: &mut WorkerState<()>, now: u64, event: Event<()>) -> Out {
    let mut out = Vec::new();
    state.handle(event, now, &mut out);
    state.check_invariants().unwrap();
    out
}

fn pause_messages(out: &Out) -> Vec<(bool, String)> {
    sent(out)
        .into_iter()
        .filter_map(|m| match m {
            WorkerToScheduler::Paused { paused, reason } => Some((*paused, reason.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_failed_spill_pauses_the_worker_tells_the_scheduler_once_and_retries_after_a_backoff() {
    let mut state = worker(limited(1000)); // target 600 bytes
    produce(&mut state, "a", 400);
    let out = produce(&mut state, "b", 400);
    let Some(Instruction::Spill { file, .. }) = out.iter().find(|i| matches!(i, Instruction::Spill { .. })) else {
        panic!("nothing spilled over the target: {out:?}")
    };
    // The disk is full at t = 1 s.
    let error = SpillError::Io("/tmp/spill/0.lz4: No space left on device (os error 28)".into());
    let out = at(&mut state, 1_000_000, Event::SpillFailed { key: key("a"), file: *file, error });
    assert!(
        out.iter().any(|i| matches!(i, Instruction::DeleteFile { file: f } if f == file)),
        "the partial file stays: {out:?}"
    );
    let stopped = out.iter().filter(|i| matches!(i, Instruction::Notice(Notice::SpillingStopped { .. }))).count();
    assert_eq!(stopped, 1, "{out:?}");
    let paused = pause_messages(&out);
    assert_eq!(paused.len(), 1, "{out:?}");
    assert!(paused[0].0 && paused[0].1.contains("spilling to disk failed"), "{paused:?}");
    assert!(state.is_paused());
    assert!(matches!(state.pause_reason(), Some(PauseReason::SpillFailed { managed_bytes: 800, .. })));
    assert_eq!(state.key_state(&key("a")), Some(KeyState::Memory), "the value is kept in memory");
    // Paused: a new task waits; nothing spills before the backoff ends.
    assert!(at(&mut state, 1_000_100, compute("c", &[])).is_empty());
    assert_eq!(state.key_state(&key("c")), Some(KeyState::Ready));
    assert_eq!(state.next_deadline(), Some(6_000_000), "retry 5 s after the failure");
    assert!(at(&mut state, 5_999_999, Event::Tick).is_empty(), "spills before the backoff ends");
    // The retry fails too: silently, and the next one waits twice as long.
    let out = at(&mut state, 6_000_000, Event::Tick);
    let Some(Instruction::Spill { file: retry, .. }) = out.iter().find(|i| matches!(i, Instruction::Spill { .. }))
    else {
        panic!("no retry at the deadline: {out:?}")
    };
    assert_eq!(out.iter().filter(|i| matches!(i, Instruction::Spill { .. })).count(), 1, "one probe at a time");
    let error = SpillError::Io("No space left on device (os error 28)".into());
    let out = at(&mut state, 6_000_010, Event::SpillFailed { key: key("a"), file: *retry, error });
    assert!(!out.iter().any(|i| matches!(i, Instruction::Notice(_))), "a failed retry is logged again: {out:?}");
    assert!(pause_messages(&out).is_empty(), "{out:?}");
    assert_eq!(state.next_deadline(), Some(16_000_010));
    // Room on disk again: the next retry succeeds, spilling and tasks resume.
    let out = at(&mut state, 16_000_010, Event::Tick);
    let Some(Instruction::Spill { key: k, file: retry }) = out.iter().find(|i| matches!(i, Instruction::Spill { .. }))
    else {
        panic!("no second retry: {out:?}")
    };
    let out = at(&mut state, 16_000_020, Event::SpillDone { key: k.clone(), file: *retry });
    assert!(out.iter().any(|i| matches!(i, Instruction::Notice(Notice::SpillingResumed))), "{out:?}");
    assert!(out.iter().any(|i| matches!(i, Instruction::Evict { .. })), "{out:?}");
    assert_eq!(pause_messages(&out), vec![(false, "resumed".to_string())]);
    run_of(&out, "c");
    assert!(!state.spilling_stopped() && !state.is_paused());
    assert_eq!(state.next_deadline(), None);
}

#[test]
fn a_worker_paused_by_memory_tells_the_scheduler_again_after_rejoining() {
    let mut state = worker(limited(1000));
    let out = step(&mut state, Event::MemoryMeasured { process_bytes: 950 });
    assert_eq!(pause_messages(&out).len(), 1);
    step(&mut state, Event::SchedulerLost);
    let out = step(&mut state, Event::Registered { id: W1, peers: vec![peer(0), peer(1)] });
    let again = pause_messages(&out);
    assert_eq!(again.len(), 1, "{out:?}");
    assert!(again[0].0, "{again:?}");
    assert_eq!(again[0].1, "process memory 0.0 MB > 80 % of 0.0 MB limit");
}

fn stuck_notices(out: &Out) -> Vec<bool> {
    out.iter()
        .filter_map(|i| match i {
            Instruction::Notice(Notice::PauseCannotEnd { process_bytes: 900, limit: 1000, restart, .. }) => {
                Some(*restart)
            }
            Instruction::Notice(Notice::PauseCannotEnd { .. }) => panic!("wrong figures: {i:?}"),
            _ => None,
        })
        .collect()
}

/// A worker that ran `a` and was told to free its result, then paused at 900 of 1000 bytes at
/// t = 1 s with `b` ready: it runs nothing and holds nothing.
fn paused_holding_nothing(when_stuck: WhenStuck) -> WorkerState<()> {
    let mut config = limited(1000);
    config.when_stuck = when_stuck;
    let mut state = worker(config);
    produce(&mut state, "a", 10);
    let out = at(&mut state, 1_000_000, Event::MemoryMeasured { process_bytes: 900 });
    assert_eq!(pause_messages(&out).len(), 1, "{out:?}");
    // Over the spill threshold too: `a` goes to disk.
    let Some(Instruction::Spill { file, .. }) = out.iter().find(|i| matches!(i, Instruction::Spill { .. })) else {
        panic!("a is not spilled: {out:?}")
    };
    at(&mut state, 1_000_001, Event::SpillDone { key: key("a"), file: *file });
    assert_eq!(state.key_state(&key("a")), Some(KeyState::Spilled));
    assert!(at(&mut state, 1_000_002, compute("b", &[])).is_empty(), "b starts while paused");
    // Holding a value, the pause can end by freeing it: nothing happens however long it lasts.
    for t in [2_000_000, 5_000_000, 9_000_000] {
        let out = at(&mut state, t, Event::MemoryMeasured { process_bytes: 900 });
        assert!(stuck_notices(&out).is_empty() && state.is_paused(), "{out:?}");
    }
    assert!(
        at(&mut state, 9_500_000, Event::Free { keys: vec![key("a")] })
            .iter()
            .all(|i| matches!(i, Instruction::Release { .. }))
    );
    state
}

#[test]
fn a_pause_that_waiting_cannot_end_makes_a_worker_under_a_nanny_leave_for_a_fresh_start() {
    let mut state = paused_holding_nothing(WhenStuck::Restart);
    assert_eq!(state.next_deadline(), Some(12_500_000), "the grace ends 3 s after it began");
    let out = at(&mut state, 12_499_999, Event::MemoryMeasured { process_bytes: 900 });
    assert!(stuck_notices(&out).is_empty() && !state.wants_fresh_start(), "{out:?}");
    let out = at(&mut state, 12_500_000, Event::Tick);
    assert_eq!(stuck_notices(&out), vec![true], "{out:?}");
    assert!(out.iter().any(|i| matches!(i, Instruction::DrainQueue { close: true })), "{out:?}");
    let out = at(&mut state, 12_500_001, Event::QueueDrained { unstarted: vec![] });
    assert!(
        matches!(sent(&out)[..], [WorkerToScheduler::Leaving { returned }] if *returned == vec![key("b")]),
        "the unstarted task is not handed back: {out:?}"
    );
    assert!(matches!(out.last(), Some(Instruction::Stop)), "{out:?}");
    assert!(state.wants_fresh_start());
}

#[test]
fn a_pause_that_waiting_cannot_end_resumes_a_worker_without_a_nanny_with_a_warning() {
    let mut state = paused_holding_nothing(WhenStuck::Resume);
    let out = at(&mut state, 12_500_000, Event::MemoryMeasured { process_bytes: 900 });
    assert_eq!(stuck_notices(&out), vec![false], "{out:?}");
    assert_eq!(pause_messages(&out), vec![(false, "resumed".to_string())]);
    run_of(&out, "b");
    assert!(!state.wants_fresh_start() && !state.is_paused());
    // Still over the threshold: no pause, since waiting would not help.
    let out = at(&mut state, 12_600_000, Event::MemoryMeasured { process_bytes: 950 });
    assert!(pause_messages(&out).is_empty() && !state.is_paused(), "{out:?}");
    // Once memory has fallen under the threshold, pausing works as before.
    at(&mut state, 12_700_000, Event::MemoryMeasured { process_bytes: 500 });
    let out = at(&mut state, 12_800_000, Event::MemoryMeasured { process_bytes: 900 });
    assert_eq!(pause_messages(&out).len(), 1, "{out:?}");
}

#[test]
fn a_worker_over_the_pause_threshold_before_running_anything_resumes_rather_than_restart() {
    let mut config = limited(1000);
    config.when_stuck = WhenStuck::Restart;
    let mut state = worker(config);
    at(&mut state, 1_000_000, Event::MemoryMeasured { process_bytes: 900 });
    assert!(state.is_paused());
    let out = at(&mut state, 4_000_000, Event::MemoryMeasured { process_bytes: 900 });
    assert_eq!(stuck_notices(&out), vec![false], "a fresh process would be as far over: {out:?}");
    assert!(!state.is_paused() && !state.wants_fresh_start());
}

#[test]
fn a_worker_under_a_memory_limit_queues_only_the_runs_whose_results_fit_under_its_target() {
    let mut state = worker(limited(1000)); // target 600 bytes, one thread, 16 runs per thread
    produce(&mut state, "a", 100);
    let runs = |out: &Out| out.iter().filter(|i| matches!(i, Instruction::Run { .. })).count();
    let mut started = 0;
    for i in 0..10 {
        started += runs(&step(&mut state, compute(&format!("t{i}"), &[])));
    }
    // 500 bytes of room at 100 bytes a result: five runs, not ten.
    assert_eq!((started, state.in_flight()), (5, 5));
    let out = finish(&mut state, "t0", RunId(1), 100);
    assert_eq!(runs(&out), 0, "400 bytes of room, four runs in flight: {out:?}");
    // Near the target, one run per thread still goes.
    for (i, run) in (1..5).zip(2..) {
        finish(&mut state, &format!("t{i}"), RunId(run), 100);
    }
    assert_eq!(state.managed_bytes(), 600);
    assert_eq!(state.in_flight(), 1, "the thread is left idle at the target");
    // Without a limit, every run is queued at once.
    let mut free = worker(Config::new(1));
    produce(&mut free, "a", 100);
    let started: usize = (0..10).map(|i| runs(&step(&mut free, compute(&format!("t{i}"), &[])))).sum();
    assert_eq!(started, 10);
}

/// A task whose inputs `(name, holder, nbytes)` are on peers.
fn compute_remote(name: &str, deps: &[(&str, u32, u64)]) -> Event<()> {
    Event::Compute {
        key: key(name),
        deps: deps.iter().map(|(d, _, _)| key(d)).collect(),
        who_has: deps
            .iter()
            .map(|&(d, h, nbytes)| WhoHas { key: key(d), holders: vec![WorkerId::new(h)], nbytes })
            .collect(),
        priority: Priority::default(),
        payload: (),
    }
}

fn fetches(out: &Out) -> Vec<(WorkerId, Vec<Key>)> {
    out.iter()
        .filter_map(|i| match i {
            Instruction::Fetch { holder, keys } => Some((*holder, keys.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn fetches_wait_while_the_bytes_arriving_would_pass_the_transfer_limit() {
    // 10 % of 10 kB: 1 kB may be arriving at once.
    let mut state = worker(limited(10_000));
    let out = step(&mut state, compute_remote("t1", &[("a", 1, 600), ("b", 2, 300)]));
    assert_eq!(fetches(&out), vec![(W1, vec![key("a")]), (W2, vec![key("b")])]);
    assert_eq!(state.incoming(), (2, 900));
    // 900 + 600 > 1000: c and d wait their turn, in order.
    let out = step(&mut state, compute_remote("t2", &[("c", 1, 600), ("d", 1, 50)]));
    assert!(fetches(&out).is_empty(), "{out:?}");
    assert_eq!(state.key_state(&key("c")), Some(KeyState::Fetching));
    assert_eq!(state.fetches_queued(), 2);
    // a arrives: c fits now, and d after it, asked of their holder in one request.
    let out = step(&mut state, Event::Fetched { holder: W1, arrived: vec![(key("a"), 600)], missing: vec![] });
    assert_eq!(fetches(&out), vec![(W1, vec![key("c"), key("d")])]);
    assert_eq!(state.incoming(), (3, 950));
}

#[test]
fn one_value_larger_than_the_transfer_limit_is_fetched_when_nothing_else_arrives() {
    let mut state = worker(limited(10_000));
    let out = step(&mut state, compute_remote("t1", &[("big", 1, 5_000), ("small", 2, 10)]));
    // The big value alone is over the limit: it goes first, alone.
    assert_eq!(fetches(&out), vec![(W1, vec![key("big")])]);
    let out = step(&mut state, Event::Fetched { holder: W1, arrived: vec![(key("big"), 5_000)], missing: vec![] });
    assert_eq!(fetches(&out), vec![(W2, vec![key("small")])]);
    let out = step(&mut state, Event::Fetched { holder: W2, arrived: vec![(key("small"), 10)], missing: vec![] });
    run_of(&out, "t1");
    assert_eq!(state.incoming(), (0, 0));
}

#[test]
fn a_paused_worker_fetches_nothing_until_it_resumes() {
    let mut state = worker(limited(10_000));
    // A local value pins memory; a task on the threads keeps the worker busy.
    let busy = run_of(&step(&mut state, compute("busy", &[])), "busy");
    let mut out = Vec::new();
    state.handle(Event::MemoryMeasured { process_bytes: 9_000 }, 10, &mut out);
    assert!(state.is_paused());
    let out = step(&mut state, compute_remote("t", &[("a", 1, 100)]));
    assert!(fetches(&out).is_empty(), "a paused worker fetched: {out:?}");
    // The running task ends; memory is still over: its result can be spilled, so nothing
    // arrives yet.
    let out = finish(&mut state, "busy", busy, 10);
    assert!(fetches(&out).is_empty(), "{out:?}");
    let mut out = Vec::new();
    state.handle(Event::MemoryMeasured { process_bytes: 1_000 }, 20, &mut out);
    state.check_invariants().unwrap();
    assert!(!state.is_paused());
    assert_eq!(fetches(&out), vec![(W1, vec![key("a")])]);
}

#[test]
fn a_pause_nothing_under_way_can_end_fetches_one_value_at_a_time() {
    let mut state = worker(limited(10_000));
    let mut out = Vec::new();
    state.handle(Event::MemoryMeasured { process_bytes: 9_000 }, 10, &mut out);
    assert!(state.is_paused());
    // Nothing runs, spills or arrives: waiting would last until memory falls by itself, so
    // inputs still come in, one value at a time.
    let out = step(&mut state, compute_remote("t", &[("a", 1, 10), ("b", 1, 10)]));
    assert_eq!(fetches(&out), vec![(W1, vec![key("a")])]);
    let out = step(&mut state, Event::Fetched { holder: W1, arrived: vec![(key("a"), 10)], missing: vec![] });
    assert_eq!(fetches(&out), vec![(W1, vec![key("b")])]);
    let out = step(&mut state, Event::Fetched { holder: W1, arrived: vec![(key("b"), 10)], missing: vec![] });
    // Paused with its inputs pinned and nothing running: the task runs (one at a time).
    run_of(&out, "t");
}

#[test]
fn a_queued_fetch_whose_task_is_freed_is_never_asked_for() {
    let mut state = worker(limited(10_000));
    step(&mut state, compute_remote("t1", &[("a", 1, 900)]));
    let out = step(&mut state, compute_remote("t2", &[("b", 2, 900)]));
    assert!(fetches(&out).is_empty(), "{out:?}");
    step(&mut state, Event::Free { keys: vec![key("t2")] });
    assert_eq!(state.key_state(&key("b")), None);
    let out = step(&mut state, Event::Fetched { holder: W1, arrived: vec![(key("a"), 900)], missing: vec![] });
    assert!(fetches(&out).is_empty(), "b was asked for after its task was freed: {out:?}");
    run_of(&out, "t1");
}

#[test]
fn without_a_memory_limit_every_input_is_asked_for_at_once() {
    let mut state = worker(Config::new(1));
    let out = step(&mut state, compute_remote("t1", &[("a", 1, 1 << 40), ("b", 1, 1 << 40), ("c", 2, 1)]));
    assert_eq!(fetches(&out), vec![(W1, vec![key("a"), key("b")]), (W2, vec![key("c")])]);
}

fn fetched_keys(out: &Out) -> Vec<Key> {
    fetches(out).into_iter().flat_map(|(_, keys)| keys).collect()
}

#[test]
fn a_queued_runs_inputs_stay_counted_and_unspillable_until_the_run_ends() {
    let mut config = limited(1000); // target 600 bytes
    config.nthreads = 2;
    let mut state = worker(config);
    produce(&mut state, "a", 500);
    // t is handed to the threads with a: the run holds a until it reports back.
    let t = run_of(&step(&mut state, compute("t", &[("a", &[])])), "t");
    // Over the target with b, yet a is no spill candidate: spilling it would free nothing.
    let out = produce(&mut state, "b", 300);
    let spilled: Vec<&Key> = out
        .iter()
        .filter_map(|i| match i {
            Instruction::Spill { key, .. } => Some(key),
            _ => None,
        })
        .collect();
    assert_eq!(spilled, [&key("b")], "{out:?}");
    assert_eq!(state.managed_bytes(), 800);
    // The scheduler frees a meanwhile: it goes only when t ends.
    let out = step(&mut state, Event::Free { keys: vec![key("a")] });
    assert!(!out.iter().any(|i| matches!(i, Instruction::Release { .. })), "{out:?}");
    let out = finish(&mut state, "t", t, 10);
    assert!(out.iter().any(|i| matches!(i, Instruction::Release { key: k, file: None } if *k == key("a"))), "{out:?}");
    assert_eq!(state.key_state(&key("a")), None);
}

#[test]
fn over_the_spill_threshold_nothing_arrives_until_nothing_else_moves() {
    let mut state = worker(limited(10_000)); // spill threshold 7,000 bytes, pause 8,000
    step(&mut state, Event::MemoryMeasured { process_bytes: 7_500 });
    assert!(!state.is_paused());
    // Two tasks each wait for a value of a peer while another runs: nothing is fetched.
    let busy = run_of(&step(&mut state, compute("busy", &[])), "busy");
    let out = step(&mut state, compute("t1", &[("d1", &[1])]));
    assert!(fetched_keys(&out).is_empty(), "fetched over the spill threshold: {out:?}");
    let out = step(&mut state, compute("t2", &[("d2", &[2])]));
    assert!(fetched_keys(&out).is_empty(), "{out:?}");
    // The run ends; its result is written out (over the threshold), and then nothing else is
    // under way: one input of the first task is fetched, and only that one.
    let out = finish(&mut state, "busy", busy, 10);
    let Some(Instruction::Spill { file, .. }) = out.iter().find(|i| matches!(i, Instruction::Spill { .. })) else {
        panic!("the result is not spilled over the threshold: {out:?}")
    };
    assert!(fetched_keys(&out).is_empty(), "{out:?}");
    let out = step(&mut state, Event::SpillDone { key: key("busy"), file: *file });
    assert_eq!(fetched_keys(&out), [key("d1")], "{out:?}");
    let out = step(&mut state, Event::Fetched { holder: W1, arrived: vec![(key("d1"), 100)], missing: vec![] });
    let t1 = run_of(&out, "t1");
    assert!(fetched_keys(&out).is_empty(), "{out:?}");
    // Memory falls under the threshold: fetching goes on as usual.
    let out = step(&mut state, Event::MemoryMeasured { process_bytes: 3_000 });
    assert_eq!(fetched_keys(&out), [key("d2")], "{out:?}");
    finish(&mut state, "t1", t1, 10);
}

#[test]
fn a_paused_worker_with_nothing_under_way_brings_in_one_input_of_its_first_waiting_task() {
    let mut state = worker(limited(10_000));
    step(&mut state, Event::MemoryMeasured { process_bytes: 9_000 });
    assert!(state.is_paused());
    // A ready task without inputs cannot start while paused; it does not block the others.
    assert!(step(&mut state, compute("r0", &[])).is_empty());
    let out = step(&mut state, compute("w", &[("d", &[1])]));
    assert_eq!(fetched_keys(&out), [key("d")], "{out:?}");
    let out = step(&mut state, Event::Fetched { holder: W1, arrived: vec![(key("d"), 100)], missing: vec![] });
    // w consumes a pinned input: it runs, one task at a time, to let memory fall.
    run_of(&out, "w");
    assert_eq!(state.key_state(&key("r0")), Some(KeyState::Ready));
}

/// Produces `name` with `nbytes`, expects it to push `victim` out, and finishes that spill.
fn produce_spilling(state: &mut WorkerState<()>, name: &str, nbytes: u64, victim: &str) -> SpillFile {
    let out = produce(state, name, nbytes);
    let Some(Instruction::Spill { key: spilled, file }) = out.iter().find(|i| matches!(i, Instruction::Spill { .. }))
    else {
        panic!("nothing spilled over the target: {out:?}")
    };
    assert_eq!(*spilled, key(victim));
    let file = *file;
    step(state, Event::SpillDone { key: key(victim), file });
    file
}

#[test]
fn a_read_back_waits_for_room_under_the_spill_threshold() {
    let mut state = worker(limited(1000)); // target 600, spill 700, pause 800
    produce(&mut state, "a", 300);
    produce(&mut state, "b", 300);
    let a_file = produce_spilling(&mut state, "c", 300, "a");
    produce_spilling(&mut state, "d", 300, "b");
    step(&mut state, Event::Free { keys: vec![key("c"), key("d")] });
    assert_eq!(state.managed_bytes(), 0);
    // Both fit under the target, but the process holds 650 bytes of its own: reading one back
    // would cross the spill threshold while a task runs.
    step(&mut state, Event::MemoryMeasured { process_bytes: 650 });
    let busy = run_of(&step(&mut state, compute("busy", &[])), "busy");
    let out = step(&mut state, compute("t", &[("a", &[]), ("b", &[])]));
    assert!(unspills(&out).is_empty(), "{out:?}");
    // With room again, both are read back at once.
    let out = step(&mut state, Event::MemoryMeasured { process_bytes: 50 });
    assert_eq!(unspills(&out), [key("a"), key("b")], "{out:?}");
    step(&mut state, Event::Unspilled { key: key("a"), file: a_file });
    finish(&mut state, "busy", busy, 1);
}

#[test]
fn a_value_to_keep_arrives_over_the_spill_threshold_and_while_paused_with_nothing_else_to_do() {
    let mut state = worker(limited(10_000));
    let acquire = |name: &str, holder: u32| Event::Acquire {
        keys: vec![WhoHas { key: key(name), holders: vec![WorkerId::new(holder)], nbytes: 100 }],
    };
    // A retiring peer's data, over the spill threshold with nothing else under way: it arrives.
    step(&mut state, Event::MemoryMeasured { process_bytes: 7_500 });
    let out = step(&mut state, acquire("k1", 1));
    assert_eq!(fetched_keys(&out), [key("k1")], "{out:?}");
    // Over the spill threshold, k1 is written out as it arrives.
    let out = step(&mut state, Event::Fetched { holder: W1, arrived: vec![(key("k1"), 100)], missing: vec![] });
    let Some(Instruction::Spill { file, .. }) = out.iter().find(|i| matches!(i, Instruction::Spill { .. })) else {
        panic!("k1 is not spilled over the spill threshold: {out:?}")
    };
    let file = *file;
    // Paused: once the write is done, with nothing under way and no task waiting, still one
    // value at a time.
    step(&mut state, Event::MemoryMeasured { process_bytes: 9_000 });
    assert!(state.is_paused());
    let out = step(&mut state, acquire("k2", 2));
    assert!(fetched_keys(&out).is_empty(), "fetched while a spill is under way: {out:?}");
    let out = step(&mut state, Event::SpillDone { key: key("k1"), file });
    assert_eq!(fetched_keys(&out), [key("k2")], "{out:?}");
    let out = step(&mut state, acquire("k3", 2));
    assert!(fetched_keys(&out).is_empty(), "{out:?}");
}
