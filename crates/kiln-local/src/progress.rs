//! The progress bar: a thread that samples the completed-task counter a few times a second, so
//! the per-task path only increments an atomic.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::Progress;

/// How long a run must last before a bar appears, so short runs print nothing.
const DELAY: Duration = Duration::from_millis(500);
const TICK: Duration = Duration::from_millis(100);

pub(crate) fn wanted(mode: Progress) -> bool {
    match mode {
        Progress::Never => false,
        Progress::Always => true,
        Progress::Auto => std::io::stderr().is_terminal(),
    }
}

/// Draws until `done` is set; the caller unparks this thread after setting it.
pub(crate) fn draw(total: usize, completed: &AtomicUsize, done: &AtomicBool) {
    let start = Instant::now();
    while start.elapsed() < DELAY {
        if done.load(Ordering::Acquire) {
            return;
        }
        std::thread::park_timeout(DELAY.saturating_sub(start.elapsed()));
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
}
