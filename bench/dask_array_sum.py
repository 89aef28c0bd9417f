"""Dask's side of the sum benchmark: x.sum() of an in-memory NumPy array in auto chunks, on the
threaded scheduler; one warm-up, then --runs timed runs (bench/dask_common.py)."""
import argparse

import dask.array as da
import numpy as np

from dask_common import add_protocol_args, measure, result_line, use_threads


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=1_000_000_000)
    add_protocol_args(p)
    args = p.parse_args()
    use_threads(args.threads)
    x = (np.arange(args.n) % 1000) * 0.001
    d = da.from_array(x, chunks="auto")
    side, total = measure(args.runs, lambda: float(d.sum().compute()))
    print(f"dask: sum of {args.n} = {total}: {side.summary()}")
    print(result_line(f"n={args.n} {side.fields()} total={total!r}", side, args.threads, args.runs))


if __name__ == "__main__":
    main()
