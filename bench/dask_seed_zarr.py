"""Dask's side of the stored-data seed benchmark: (x + x.T - x.mean(axis=0)).std() with
x = da.from_zarr(store), threaded scheduler, timed from opening the store to the value; one
warm-up, then --runs timed runs (bench/dask_common.py)."""
import argparse
import resource

import dask.array as da

from dask_common import add_protocol_args, measure, result_line, use_threads


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--path", required=True)
    add_protocol_args(p)
    args = p.parse_args()
    use_threads(args.threads)

    def work():
        x = da.from_zarr(args.path)
        return float((x + x.T - x.mean(axis=0)).std().compute()), x.shape[0]

    side, (value, n) = measure(args.runs, work)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"dask: from_zarr n={n} std={value:.6f}: {side.summary()}")
    print(result_line(f"n={n} {side.fields()} peak_rss_bytes={rss} std={value:.12f}", side, args.threads, args.runs))


if __name__ == "__main__":
    main()
