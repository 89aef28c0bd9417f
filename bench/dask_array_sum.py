"""Dask's side of the sum benchmark: x.sum() of an in-memory NumPy array in auto chunks."""
import argparse
import time

import dask.array as da
import numpy as np


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=1_000_000_000)
    args = p.parse_args()
    x = (np.arange(args.n) % 1000) * 0.001
    d = da.from_array(x, chunks="auto")
    t0 = time.perf_counter()
    total = float(d.sum().compute())
    secs = time.perf_counter() - t0
    print(f"dask: sum of {args.n} in {secs:.3f} s = {total}")
    print(f"RESULT dask_s={secs:.3f}")


if __name__ == "__main__":
    main()
