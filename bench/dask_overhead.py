"""Dask's side of the per-task overhead benchmark: n trivial tasks (add one to an integer)
feeding an 8-ary tree of sums, run on the synchronous and the threaded scheduler. A run is
timed end to end, building the graph included (as on kiln's side); one warm-up, then --runs
timed runs of each scheduler (bench/dask_common.py)."""
import argparse
import resource

import dask
from dask.threaded import get as threaded_get

from dask_common import add_protocol_args, measure, result_line, use_threads


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
    add_protocol_args(p)
    args = p.parse_args()
    use_threads(args.threads)
    tasks = len(build(args.n)[0])

    def sync():
        dsk, root = build(args.n)
        return dask.get(dsk, root)

    def threaded():
        dsk, root = build(args.n)
        return threaded_get(dsk, root, num_workers=args.threads)

    sync_side, sync_result = measure(args.runs, sync)
    print(f"dask synchronous: {tasks} tasks: {sync_side.summary()}")
    threaded_side, threaded_result = measure(args.runs, threaded)
    assert threaded_result == sync_result
    print(f"dask threaded ({args.threads} workers): {tasks} tasks: {threaded_side.summary()}")
    # One load pair for the whole process: from the start of the first side to the end of the last.
    threaded_side.load_start = sync_side.load_start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(
        result_line(
            f"tasks={tasks} result={sync_result} {sync_side.fields('sync')} {threaded_side.fields('threaded')} "
            f"peak_rss_bytes={rss}",
            threaded_side,
            args.threads,
            args.runs,
        )
    )


if __name__ == "__main__":
    main()
