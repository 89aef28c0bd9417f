"""Dask's side of the seed array benchmark: (x + x.T - x.mean(axis=0)).std() on the threaded
scheduler, timed from building the expression to the value; one warm-up, then --runs timed runs
(bench/dask_common.py)."""
import argparse
import resource

import dask.array as da

from dask_common import add_protocol_args, measure, result_line, use_threads


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--chunk", type=int, default=1000)
    add_protocol_args(p)
    args = p.parse_args()
    use_threads(args.threads)

    def work():
        x = da.random.default_rng(42).random((args.n, args.n), chunks=(args.chunk, args.chunk))
        return float((x + x.T - x.mean(axis=0)).std().compute())

    side, value = measure(args.runs, work)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"dask: n={args.n} std={value:.6f}: {side.summary()}")
    print(result_line(f"n={args.n} {side.fields()} peak_rss_bytes={rss} std={value:.6f}", side, args.threads, args.runs))


if __name__ == "__main__":
    main()
