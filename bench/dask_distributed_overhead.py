"""Dask's side of the distributed per-task overhead benchmark: n trivial tasks (add one to an
integer) feeding an 8-ary tree of sums, as a raw dict graph, run end to end with
``client.get`` on ``distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True)``
(cluster start excluded)."""
import argparse
import time

import dask
import distributed


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
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()

    t0 = time.perf_counter()
    cluster = distributed.LocalCluster(
        n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None
    )
    client = distributed.Client(cluster)
    start_s = time.perf_counter() - t0
    print(f"dask LocalCluster: {args.workers} processes x 1 thread started in {start_s:.2f} s")

    times = []
    result = None
    tasks = 0
    for rep in range(args.repeat):
        t0 = time.perf_counter()
        dsk, root = build(args.n)
        build_s = time.perf_counter() - t0
        tasks = len(dsk)
        t0 = time.perf_counter()
        result = client.get(dsk, root)
        run_s = time.perf_counter() - t0
        times.append(run_s)
        print(
            f"  run {rep + 1}: build {build_s:.2f} s, compute {run_s:.2f} s = "
            f"{tasks / run_s:.0f} tasks/s, {run_s / tasks * 1e6:.0f} us/task"
        )
    client.close()
    cluster.close()
    best = min(times)
    print(
        f"RESULT tasks={tasks} result={result} best_s={best:.3f} median_s={sorted(times)[len(times) // 2]:.3f} "
        f"us_per_task={best / tasks * 1e6:.1f} dask={dask.__version__} distributed={distributed.__version__}"
    )


if __name__ == "__main__":
    main()
