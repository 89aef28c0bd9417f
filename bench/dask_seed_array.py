"""Dask's side of the seed array benchmark: (x + x.T - x.mean(axis=0)).std()."""
import argparse
import resource
import time

import dask
import dask.array as da


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--chunk", type=int, default=1000)
    args = p.parse_args()
    t0 = time.perf_counter()
    x = da.random.default_rng(42).random((args.n, args.n), chunks=(args.chunk, args.chunk))
    value = float((x + x.T - x.mean(axis=0)).std().compute())
    secs = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"dask {dask.__version__}: n={args.n} std={value:.6f} in {secs:.2f} s")
    print(f"RESULT dask_s={secs:.3f} peak_rss_bytes={rss} std={value:.6f}")


if __name__ == "__main__":
    main()
