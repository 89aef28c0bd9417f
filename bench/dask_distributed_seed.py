"""Dask's side of the distributed seed benchmark: (x + x.T - x.mean(axis=0)).std() on
``distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True)``, timed from
building the expression to the value (cluster start excluded)."""
import argparse
import time

import dask
import dask.array as da
import distributed


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--chunk", type=int, default=1000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeat", type=int, default=1)
    args = p.parse_args()

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
    print(f"dask LocalCluster: {args.workers} processes x 1 thread started in {time.perf_counter() - t0:.2f} s")

    times = []
    value = float("nan")
    for rep in range(args.repeat):
        t0 = time.perf_counter()
        x = da.random.default_rng(42).random((args.n, args.n), chunks=(args.chunk, args.chunk))
        value = float((x + x.T - x.mean(axis=0)).std().compute())
        secs = time.perf_counter() - t0
        times.append(secs)
        print(f"  run {rep + 1}: n={args.n} std={value:.6f} in {secs:.2f} s")
    client.close()
    cluster.close()
    best = min(times)
    print(
        f"RESULT dask_s={best:.3f} std={value:.6f} dask={dask.__version__} distributed={distributed.__version__}"
    )


if __name__ == "__main__":
    main()
