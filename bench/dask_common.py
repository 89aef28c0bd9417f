"""The measuring protocol of the Dask side, shared by the bench/dask_*.py scripts (the kiln side's
is in bench/src/lib.rs): one untimed warm-up run, then --runs timed runs; median and best; the
1-minute load average at the start and end; the thread counts stated.

The BLAS / OpenMP thread count cannot be set from here: NumPy's BLAS reads OMP_NUM_THREADS,
OPENBLAS_NUM_THREADS and MKL_NUM_THREADS once, when it is loaded, so the Rust side sets them in
this process's environment (kiln_bench::run_dask) and this module only reports them.
"""
import os
import statistics
import time

import dask

BLAS_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def add_protocol_args(parser, default_runs=3):
    """--runs and --threads, as kiln_bench::run_dask passes them."""
    parser.add_argument("--runs", type=int, default=default_runs, help="timed runs after one warm-up")
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count(), help="threads of the threaded scheduler"
    )


def blas_threads():
    """The BLAS / OpenMP thread variables of this process, as `NAME=value` words."""
    return " ".join(f"{v}={os.environ.get(v, 'unset')}" for v in BLAS_THREAD_VARS)


def use_threads(threads):
    """Makes the threaded scheduler use exactly `threads` workers, and prints every thread count
    of this side. (Not for the distributed scripts: it would replace the client as scheduler.)"""
    dask.config.set(scheduler="threads", num_workers=threads)
    print(f"dask {dask.__version__}: threaded scheduler, num_workers={threads}, {blas_threads()}")


def print_cluster_threads(workers):
    """States the thread counts of a distributed side: single-threaded worker processes (whose
    nannies also pin their BLAS to one thread) and this client process's BLAS."""
    print(
        f"dask {dask.__version__}: LocalCluster {workers} worker processes x 1 thread; "
        f"client {blas_threads()}"
    )


def load_average():
    """The 1-minute load average (NaN where the platform has none)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


class Side:
    """The timed runs of one side, with the load average around them."""

    def __init__(self):
        self.times = []
        self.load_start = load_average()
        self.load_end = float("nan")

    def push(self, secs):
        self.times.append(secs)

    def end(self):
        self.load_end = load_average()
        return self

    def median(self):
        return statistics.median(self.times)

    def best(self):
        return min(self.times)

    def summary(self):
        return (
            f"median {self.median():.4f} s (best {self.best():.4f} s, {len(self.times)} runs, "
            f"load {self.load_start:.2f} -> {self.load_end:.2f})"
        )

    def fields(self, prefix=""):
        """RESULT fields kiln_bench::Side::from_dask reads back (times_s carries every run)."""
        p = f"{prefix}_" if prefix else ""
        return (
            f"{p}times_s={','.join(f'{t:.6f}' for t in self.times)} {p}median_s={self.median():.6f} "
            f"{p}best_s={self.best():.6f}"
        )


def measure(runs, work):
    """Calls work() once untimed (the warm-up), then `runs` times timed; returns the Side and
    the last value."""
    side = Side()
    value = work()
    for _ in range(max(1, runs)):
        t0 = time.perf_counter()
        value = work()
        side.push(time.perf_counter() - t0)
    return side.end(), value


def result_line(fields, side, threads, runs):
    """The RESULT line: the benchmark's own fields, then the protocol's."""
    return (
        f"RESULT {fields} runs={runs} threads={threads} load_start={side.load_start:.2f} "
        f"load_end={side.load_end:.2f} dask={dask.__version__}"
    )
