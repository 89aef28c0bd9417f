"""Dask's side of the distributed per-task overhead benchmark: n trivial tasks (add one to an
integer) feeding an 8-ary tree of sums, as a raw dict graph, run end to end with
``client.get`` on ``distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True)``
(cluster start excluded, timed once). One warm-up compute, then --runs timed computes
(bench/dask_common.py); the graph is built before each compute, outside the timing, as on
kiln's side."""
import argparse
import time

import distributed

from dask_common import Side, add_protocol_args, print_cluster_threads, result_line


def inc(x):
    return x + 1


def add(*xs):
    return sum(xs) + 1


def build(n, fan_in=8):
    dsk = {("inc", i): (inc, i) for i in range(n)}
    level = [("inc", i) for i in range(n)]
    depth = 0
    while len(level) > 1:
        nxt = []
        for j in range(0, len(level), fan_in):
            key = ("sum", depth, j // fan_in)
            dsk[key] = (add, *level[j : j + fan_in])
            nxt.append(key)
        level = nxt
        depth += 1
    return dsk, level[0]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--workers", type=int, default=2)
    add_protocol_args(p)
    args = p.parse_args()
    print_cluster_threads(args.workers)

    t0 = time.perf_counter()
    cluster = distributed.LocalCluster(
        n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None
    )
    client = distributed.Client(cluster)
    start_s = time.perf_counter() - t0
    print(f"dask LocalCluster: {args.workers} processes x 1 thread started in {start_s:.2f} s")

    side = Side()
    result = None
    tasks = 0
    for rep in range(args.runs + 1):
        t0 = time.perf_counter()
        dsk, root = build(args.n)
        build_s = time.perf_counter() - t0
        tasks = len(dsk)
        t0 = time.perf_counter()
        result = client.get(dsk, root)
        run_s = time.perf_counter() - t0
        if rep > 0:
            side.push(run_s)
        print(
            f"  {'warm-up' if rep == 0 else f'run {rep}'}: build {build_s:.2f} s, compute {run_s:.2f} s = "
            f"{tasks / run_s:.0f} tasks/s, {run_s / tasks * 1e6:.0f} us/task"
        )
    side.end()
    client.close()
    cluster.close()
    print(f"dask distributed: {side.summary()}")
    print(
        result_line(
            f"tasks={tasks} result={result} start_s={start_s:.3f} {side.fields()} "
            f"us_per_task={side.median() / tasks * 1e6:.1f} distributed={distributed.__version__}",
            side,
            1,
            args.runs,
        )
    )


if __name__ == "__main__":
    main()
