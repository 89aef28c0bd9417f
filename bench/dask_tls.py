"""Dask's side of the TLS benchmark (bench/src/bin/tls_transfer.rs): a
``distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True)``, once plain and
once with ``security=Security.temporary()`` (TLS with certificates generated at start, as kiln's
``.secure(true)``; needs the ``cryptography`` package).

1. Large-value transfer: a --mib MiB float64 array made on one worker, another 8 KiB larger on
   the other, then a task pinned beside the larger one that reads both, so the smaller crosses
   between the workers; the time of that task, from submit to result, is the transfer.
2. Trivial-task throughput: the foundation graph of dask_distributed_overhead.py (--n ``inc``
   tasks feeding an 8-ary tree of sums) with ``client.get``.

One untimed warm-up, then --runs timed runs of each; medians.
"""
import argparse
import statistics
import time

import distributed
import numpy as np

from dask_common import load_average
from dask_distributed_overhead import build


def make(n, salt):
    return np.full(n, float(salt))


def lengths(a, b):
    return len(a) + len(b)


def transfers(client, elems, runs):
    workers = sorted(client.scheduler_info()["workers"])
    times = []
    salt = 0
    while len(times) <= runs:
        salt += 2
        small = client.submit(make, elems, salt, workers=[workers[0]], pure=False)
        large = client.submit(make, elems + 1024, salt + 1, workers=[workers[1]], pure=False)
        distributed.wait([small, large])
        t0 = time.perf_counter()
        both = client.submit(lengths, small, large, workers=[workers[1]], pure=False).result()
        secs = time.perf_counter() - t0
        assert both == 2 * elems + 1024
        label = "warm-up" if not times else f"run {len(times)}"
        print(f"  {label}: {secs:.3f} s = {elems * 8 / secs / 1e9:.2f} GB/s")
        times.append(secs)
        del small, large
        time.sleep(0.3)
    return times[1:]


def task_runs(client, n, runs):
    times = []
    tasks = 0
    for rep in range(runs + 1):
        dsk, root = build(n)
        tasks = len(dsk)
        t0 = time.perf_counter()
        client.get(dsk, root)
        secs = time.perf_counter() - t0
        print(f"  {'warm-up' if rep == 0 else f'run {rep}'}: {secs:.3f} s = {tasks / secs:.0f} tasks/s")
        if rep > 0:
            times.append(secs)
    return tasks, times


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--mib", type=int, default=1024)
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    elems = args.mib * (1 << 20) // 8
    load_start = load_average()
    figures = {}
    for secure in (False, True):
        name = "tls" if secure else "tcp"
        cluster = distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            security=distributed.Security.temporary() if secure else None,
        )
        client = distributed.Client(cluster)
        print(f"{name}: cluster at {cluster.scheduler_address}")
        print(f"{name}: moving {args.mib} MiB between the two workers")
        figures[f"{name}_transfer_s"] = statistics.median(transfers(client, elems, args.runs))
        print(f"{name}: trivial tasks")
        tasks, times = task_runs(client, args.n, args.runs)
        figures[f"{name}_tasks_per_s"] = tasks / statistics.median(times)
        client.close()
        cluster.close()
    gbs = {k: elems * 8 / figures[f"{k}_transfer_s"] / 1e9 for k in ("tcp", "tls")}
    print(
        f"RESULT mib={args.mib} tasks={tasks} runs={args.runs} workers=2 "
        f"tcp_transfer_s={figures['tcp_transfer_s']:.3f} tls_transfer_s={figures['tls_transfer_s']:.3f} "
        f"tcp_transfer_gbs={gbs['tcp']:.2f} tls_transfer_gbs={gbs['tls']:.2f} "
        f"transfer_ratio={figures['tcp_transfer_s'] / figures['tls_transfer_s']:.3f} "
        f"tcp_tasks_per_s={figures['tcp_tasks_per_s']:.0f} tls_tasks_per_s={figures['tls_tasks_per_s']:.0f} "
        f"tasks_ratio={figures['tls_tasks_per_s'] / figures['tcp_tasks_per_s']:.3f} "
        f"load_start={load_start:.2f} load_end={load_average():.2f} distributed={distributed.__version__}"
    )


if __name__ == "__main__":
    main()
