"""Dask's side of the per-task overhead benchmark: n trivial tasks (add one to an integer)
feeding an 8-ary tree of sums, run on the synchronous and the threaded scheduler."""
import argparse
import resource
import time

import dask


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
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--skip-threaded", action="store_true")
    args = p.parse_args()

    t0 = time.perf_counter()
    dsk, root = build(args.n)
    build_s = time.perf_counter() - t0
    tasks = len(dsk)

    t0 = time.perf_counter()
    sync_result = dask.get(dsk, root)
    sync_s = time.perf_counter() - t0
    print(f"dask synchronous: {tasks} tasks in {sync_s:.2f} s ({sync_s / tasks * 1e6:.1f} us/task)")

    threaded_s = float("nan")
    if not args.skip_threaded:
        from dask.threaded import get as threaded_get

        t0 = time.perf_counter()
        threaded_result = threaded_get(dsk, root)
        threaded_s = time.perf_counter() - t0
        assert threaded_result == sync_result
        print(f"dask threaded: {tasks} tasks in {threaded_s:.2f} s ({threaded_s / tasks * 1e6:.1f} us/task)")

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(
        f"RESULT tasks={tasks} result={sync_result} build_s={build_s:.3f} sync_s={sync_s:.3f} "
        f"threaded_s={threaded_s:.3f} peak_rss_bytes={rss} dask={dask.__version__}"
    )


if __name__ == "__main__":
    main()
