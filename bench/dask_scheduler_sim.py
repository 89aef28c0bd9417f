"""Dask's side of the scheduler memory benchmark: the bytes Dask's distributed scheduler holds
per task for the graph of `scheduler_sim` (trivial root tasks with one literal feeding an 8-ary
tree of sums), submitted to an in-process `distributed.Scheduler` without workers (so nothing
runs and every task stays known), measured with tracemalloc.

The graph is built before tracing starts, so only what the submission allocates and keeps
counts: the scheduler's task states, run specs, priorities and groups (plus the client's one
future). tracemalloc slows the submission several times over; `--no-trace` times it without.
Run: `bench/.venv/bin/python bench/dask_scheduler_sim.py --n 100000 [--no-trace]`.
"""
import argparse
import asyncio
import gc
import logging
import time
import tracemalloc

from distributed import Client, Scheduler

TOKEN = "5d41402abc4b2a76b9719d911017c592"


def inc(x):
    return x + 1


def add(*xs):
    return sum(xs)


def build(n):
    roots = max(1, -(-n * 7 // 8))
    inc_name = f"inc-{TOKEN}"
    sum_name = f"sum-{TOKEN}"
    dsk = {(inc_name, i): (inc, i) for i in range(roots)}
    level = [(inc_name, i) for i in range(roots)]
    depth = 0
    while len(level) > 1:
        nxt = []
        for j in range(0, len(level), 8):
            key = (sum_name, depth, j // 8)
            dsk[key] = (add, *level[j : j + 8])
            nxt.append(key)
        level = nxt
        depth += 1
    return dsk, level[0]


async def main(n, trace):
    logging.getLogger("distributed").setLevel(logging.ERROR)
    async with Scheduler(port=0, dashboard_address=":0") as s:
        async with Client(s.address, asynchronous=True) as c:
            dsk, root = build(n)
            tasks = len(dsk)
            gc.collect()
            if trace:
                tracemalloc.start()
            t0 = time.perf_counter()
            fut = c.get(dsk, root, sync=False)
            del dsk
            while len(s.tasks) < tasks:
                await asyncio.sleep(0.01)
            update_s = time.perf_counter() - t0
            # Let the update finish (transitions after the tasks were added).
            await asyncio.sleep(0.5)
            gc.collect()
            held, peak = tracemalloc.get_traced_memory() if trace else (float("nan"), float("nan"))
            tracemalloc.stop()
            states = {}
            for ts in s.tasks.values():
                states[ts.state] = states.get(ts.state, 0) + 1
            print(f"dask scheduler: {tasks} tasks known after {update_s:.2f} s; states {states}")
            print(
                f"dask scheduler memory: held {held / 1e6:.1f} MB = {held / tasks:.0f} B/task, "
                f"peak {peak / 1e6:.1f} MB = {peak / tasks:.0f} B/task"
            )
            print(
                f"RESULT tasks={tasks} update_s={update_s:.3f} bytes_per_task={held / tasks:.0f} "
                f"peak_bytes_per_task={peak / tasks:.0f}"
            )
            del fut


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--no-trace", action="store_true", help="time the submission without tracemalloc")
    args = p.parse_args()
    asyncio.run(main(args.n, not args.no_trace))
