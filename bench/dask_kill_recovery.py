"""Dask's side of the kill-recovery benchmark (bench/src/bin/kill_recovery.rs).

distributed.LocalCluster(n_workers=3, threads_per_worker=1, processes=True) computes
(x + x.T - x.mean(axis=0)).std() with x = random((n, n), chunks=(c, c)): a warm-up run, a clean
run (T0), then the same with one worker process SIGKILLed at T0/2 after the start. Measured:
from the kill until the scheduler no longer lists that worker (the scheduler's `identity` reply,
the request behind client.scheduler_info(), polled every 5 ms from another thread; also the in-process scheduler's
own `workers` table, polled the same way, which leaves out the request's latency), the total time
with the kill (T1), the overhead T1 - T0; the result must equal the clean run's (relative 1e-9).
Dask's nanny restarts the killed worker process; when the replacement registers is reported too.
Each of the --runs runs has its own cluster and its own warm-up compute; medians and best are
reported, with the load average around the whole side (bench/dask_common.py).
"""
import argparse
import os
import signal
import statistics
import threading
import time

import dask.array as da
import distributed
from distributed import Client, LocalCluster

from dask_common import Side, add_protocol_args, print_cluster_threads, result_line


def expression(n, chunk):
    x = da.random.RandomState(42).random((n, n), chunks=(chunk, chunk))
    return (x + x.T - x.mean(axis=0)).std()


def one_run(args):
    with LocalCluster(
        n_workers=args.workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
    ) as cluster, Client(cluster) as client:
        y = expression(args.n, args.chunk)
        t = time.perf_counter()
        warm = float(y.compute())
        warmup_s = time.perf_counter() - t
        t = time.perf_counter()
        clean = float(y.compute())
        clean_s = time.perf_counter() - t
        assert abs(warm - clean) <= 1e-9 * abs(clean), (warm, clean)

        pids = client.run(os.getpid)  # worker address -> worker process id
        victim_address, victim_pid = sorted(pids.items())[1]
        seen = {}
        stop = threading.Event()

        def monitor():
            while not stop.is_set():
                # What client.scheduler_info() asks for, without its cache: the client's own
                # 2-second refresh (n_workers=0, no per-worker entries) can overwrite the cache
                # between the request and the return, which reads as a vanished worker.
                workers = client.sync(client.scheduler.identity, n_workers=-1)["workers"]
                now = time.perf_counter()
                if "removed" not in seen:
                    if victim_address not in workers:
                        seen["removed"] = now
                elif len(workers) >= args.workers:
                    seen["replaced"] = now
                    return
                time.sleep(0.005)

        def scheduler_monitor():
            # LocalCluster runs the scheduler in this process: read its table directly.
            while not stop.is_set():
                if victim_address not in cluster.scheduler.workers:
                    seen["removed_in_scheduler"] = time.perf_counter()
                    return
                time.sleep(0.005)

        watcher = threading.Thread(target=monitor, daemon=True)
        watcher.start()
        scheduler_watcher = threading.Thread(target=scheduler_monitor, daemon=True)
        scheduler_watcher.start()
        started = time.perf_counter()
        future = client.compute(y)
        time.sleep(max(0.0, started + clean_s * args.kill_at - time.perf_counter()))
        os.kill(victim_pid, signal.SIGKILL)
        killed_at = time.perf_counter()
        killed = float(future.result())
        killed_s = time.perf_counter() - started
        deadline = time.perf_counter() + 30
        while "removed" not in seen and time.perf_counter() < deadline:
            time.sleep(0.005)
        stop.set()
        watcher.join()
        scheduler_watcher.join()
        assert "removed" in seen, "the killed worker was never removed"
        assert killed_s > killed_at - started, "the computation ended before the kill; make it larger"
        assert abs(killed - clean) <= 1e-9 * abs(clean), (killed, clean)
        replaced = seen.get("replaced")
        return {
            "warmup_s": warmup_s,
            "clean_s": clean_s,
            "kill_after_s": killed_at - started,
            "killed_s": killed_s,
            "detect_ms": (seen["removed"] - killed_at) * 1e3,
            "detect_sched_ms": (seen.get("removed_in_scheduler", float("nan")) - killed_at) * 1e3,
            "replaced_s": (replaced - killed_at) if replaced is not None else float("nan"),
        }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--chunk", type=int, default=1000)
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--kill-at", type=float, default=0.5)
    add_protocol_args(p)
    args = p.parse_args()
    print_cluster_threads(args.workers)
    runs = []
    clean_side, killed_side = Side(), Side()
    for i in range(1, max(1, args.runs) + 1):
        r = one_run(args)
        print(
            f"dask run {i}: n={args.n} "
            f"chunks={args.chunk} workers={args.workers}: warm-up {r['warmup_s']:.2f} s, clean {r['clean_s']:.2f} s, "
            f"killed a worker at {r['kill_after_s']:.2f} s, done in {r['killed_s']:.2f} s "
            f"(+{r['killed_s'] - r['clean_s']:.2f} s); removed {r['detect_ms']:.1f} ms after the kill "
            f"(identity request), {r['detect_sched_ms']:.1f} ms (scheduler's table); nanny's replacement "
            + (f"registered {r['replaced_s']:.2f} s after it" if r["replaced_s"] == r["replaced_s"] else "not registered before the end"),
            flush=True,
        )
        runs.append(r)
        clean_side.push(r["clean_s"])
        killed_side.push(r["killed_s"])
    clean_side.end()
    killed_side.end()
    killed_side.load_start = clean_side.load_start

    def med(f):
        return statistics.median(f(r) for r in runs)

    print(f"dask: clean {clean_side.summary()}; with a kill {killed_side.summary()}")
    print(
        result_line(
            f"n={args.n} chunk={args.chunk} workers={args.workers} {clean_side.fields('clean')} "
            f"{killed_side.fields('killed')} "
            f"dask_clean_s={med(lambda r: r['clean_s']):.3f} dask_killed_s={med(lambda r: r['killed_s']):.3f} "
            f"dask_overhead_s={med(lambda r: r['killed_s'] - r['clean_s']):.3f} "
            f"dask_detect_ms={med(lambda r: r['detect_ms']):.1f} "
            f"dask_detect_best_ms={min(r['detect_ms'] for r in runs):.1f} "
            f"dask_detect_sched_ms={med(lambda r: r['detect_sched_ms']):.1f} "
            f"dask_replaced_s={med(lambda r: r['replaced_s']):.2f} distributed={distributed.__version__}",
            killed_side,
            1,
            args.runs,
        )
    )


if __name__ == "__main__":
    main()
