//! A spill file that cannot be written in full (the disk fills up mid-file) fails the run with
//! a clear `ComputeError::Spill` and leaves no file behind: neither the partial file nor the
//! run's spill directory.
//!
//! The full disk is real to the scheduler: this test program lowers its own file-size limit
//! (`RLIMIT_FSIZE`), so the kernel refuses a write past 256 KiB with `EFBIG` in the middle of
//! the first 1 MiB spill file, as it refuses one with `ENOSPC` on a full disk. The limit is
//! process-wide, which is why this test has a program of its own.

use std::sync::Arc;

use kiln_graph::kernel::{func1, slice_kernel};
use kiln_graph::{Arg, ComputeError, GraphBuilder, Kernel, Key, TaskId, Value};
use kiln_local::{LocalScheduler, Progress};

#[test]
fn a_spill_write_that_fails_midway_is_a_clear_error_and_leaves_no_file() {
    let parent = std::env::temp_dir().join(format!("kiln-spill-full-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&parent);
    std::fs::create_dir_all(&parent).unwrap();

    // SAFETY: plain libc calls with valid arguments. Ignoring SIGXFSZ turns an oversized write
    // into an EFBIG error instead of killing the process; the limit only affects files.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let limit = libc::rlimit { rlim_cur: 256 << 10, rlim_max: libc::RLIM_INFINITY };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0, "{}", std::io::Error::last_os_error());
    }

    // Eight 1 MiB blocks that do not compress (LZ4 cannot shrink them below the file limit),
    // all needed by one final task, under a 2 MiB limit: the third block must spill.
    let make: Arc<dyn Kernel> = Arc::new(func1("block", |i: &u64| {
        let mut state = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..131_072)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                f64::from_bits(state >> 2)
            })
            .collect::<Vec<f64>>()
    }));
    let count: Arc<dyn Kernel> = Arc::new(slice_kernel("count", |xs: &[Value]| Ok(Value::new(xs.len() as u64))));
    let mut g = GraphBuilder::new();
    let blocks: Vec<TaskId> = (0..8u64)
        .map(|i| g.add(Key::with_index("block", [i as u32]), make.clone(), [Arg::literal(i)]).unwrap())
        .collect();
    let out = g.add(Key::new("count"), count, blocks.iter().map(|b| Arg::Task(*b)).collect::<Vec<_>>()).unwrap();
    let g = g.build().unwrap();

    let scheduler = LocalScheduler::threads(1).with_progress(Progress::Never).memory_limit(2 << 20).spill_dir(&parent);
    let err = scheduler.run(&g, &[out]).unwrap_err();
    match &err {
        ComputeError::Spill { key, action, path, message } => {
            assert_eq!(key.name(), "block", "{err}");
            assert_eq!(*action, "cannot spill");
            assert!(path.starts_with(&parent) && path.extension().is_some_and(|e| e == "lz4"), "{err}");
            assert!(message.contains("File too large"), "{err}");
            assert!(message.contains("LocalScheduler::spill_dir"), "{err}");
        }
        other => panic!("expected a spill error, got {other:?}"),
    }
    let left: Vec<_> = std::fs::read_dir(&parent).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(left.is_empty(), "files left behind: {left:?}");
    assert_eq!(scheduler.last_run_stats().unwrap().spill_count, 0);
    std::fs::remove_dir_all(&parent).unwrap();
}
