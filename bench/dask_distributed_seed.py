"""Dask's side of the distributed seed benchmark: (x + x.T - x.mean(axis=0)).std() on
``distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True)``, timed from
building the expression to the value (cluster start excluded, timed once); one warm-up, then
--runs timed runs (bench/dask_common.py)."""
import argparse
import time

import dask.array as da
import distributed

from dask_common import add_protocol_args, measure, print_cluster_threads, result_line


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--chunk", type=int, default=1000)
    p.add_argument("--workers", type=int, default=2)
    add_protocol_args(p)
    args = p.parse_args()
    print_cluster_threads(args.workers)

    t0 = time.perf_counter()
    cluster = distributed.LocalCluster(
        n_workers=args.workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        # No memory limit: spilling is not what this measures (kiln's workers have none either).
        memory_limit=0,
    )
    client = distributed.Client(cluster)
    start_s = time.perf_counter() - t0
    print(f"dask LocalCluster: {args.workers} processes x 1 thread started in {start_s:.2f} s")

    def work():
        x = da.random.default_rng(42).random((args.n, args.n), chunks=(args.chunk, args.chunk))
        return float((x + x.T - x.mean(axis=0)).std().compute())

    side, value = measure(args.runs, work)
    client.close()
    cluster.close()
    print(f"dask distributed: n={args.n} std={value:.6f}: {side.summary()}")
    print(
        result_line(
            f"n={args.n} start_s={start_s:.3f} {side.fields()} std={value:.6f} distributed={distributed.__version__}",
            side,
            1,
            args.runs,
        )
    )


if __name__ == "__main__":
    main()
