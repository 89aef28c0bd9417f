//! The progress bar: a thread that samples the completed-task counter a few times a second, so
//! the per-task path only increments an atomic. It ends with a summary (for the local
//! scheduler, the run's memory: the peak of held results against the limit, and what was
//! spilled). The distributed client draws the same bar, its counter fed by the scheduler.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::Progress;

/// How long a run must last before a bar appears, so short runs print nothing.
const DELAY: Duration = Duration::from_millis(500);
const TICK: Duration = Duration::from_millis(100);

/// Whether `mode` wants a bar now (for [`Progress::Auto`], whether stderr is a terminal).
pub fn wanted(mode: Progress) -> bool {
    match mode {
        Progress::Never => false,
        Progress::Always => true,
        Progress::Auto => std::io::stderr().is_terminal(),
    }
}

/// Draws until `done` is set; the caller unparks this thread after setting it. On a terminal
/// the bar redraws in place; elsewhere (a forced bar piped to a log) it prints a plain line a
/// second, since escape codes and carriage returns would garble a log file.
pub fn draw(total: usize, completed: &AtomicUsize, done: &AtomicBool, summary: impl Fn() -> String) {
    let start = Instant::now();
    while start.elapsed() < DELAY {
        if done.load(Ordering::Acquire) {
            return;
        }
        std::thread::park_timeout(DELAY.saturating_sub(start.elapsed()));
    }
    if !std::io::stderr().is_terminal() {
        return draw_lines(start, total, completed, done, summary);
    }
    let bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("[{elapsed_precise}] {bar:40} {pos}/{len} tasks ({per_sec}, eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    while !done.load(Ordering::Acquire) {
        bar.set_position(completed.load(Ordering::Relaxed) as u64);
        std::thread::park_timeout(TICK);
    }
    bar.set_position(completed.load(Ordering::Relaxed) as u64);
    bar.finish();
    eprintln!("{}", summary());
}

/// How often a bar that is not on a terminal prints a line.
const LINE_EVERY: Duration = Duration::from_secs(1);

fn draw_lines(start: Instant, total: usize, completed: &AtomicUsize, done: &AtomicBool, summary: impl Fn() -> String) {
    let rate = |n: usize| {
        let secs = start.elapsed().as_secs_f64();
        format!("[{secs:7.1} s] {n}/{total} tasks ({:.0} tasks/s)", n as f64 / secs.max(1e-9))
    };
    let line = |n: usize| eprintln!("{}", rate(n));
    let mut next = Instant::now();
    while !done.load(Ordering::Acquire) {
        if Instant::now() >= next {
            line(completed.load(Ordering::Relaxed));
            next += LINE_EVERY;
        }
        std::thread::park_timeout(TICK);
    }
    eprintln!("{}; {}", rate(completed.load(Ordering::Relaxed)), summary());
}
