"""How many stored blocks Dask's static order (dask.order.order) holds at once on the seed
expression over a Zarr store: the graph the threaded scheduler runs, replayed one task at a time
in Dask's order, counting the from-zarr blocks alive (a block lives from its read until its last
reader ran). kiln's figure for the same graph is in crates/kiln-array/tests/order_memory.rs."""
import argparse

import dask
import dask.array as da
from dask.order import order


def peak_blocks(dsk, outputs, is_block):
    from dask.core import get_dependencies
    deps = {k: get_dependencies(dsk, k) for k in dsk}
    readers = {k: 0 for k in dsk}
    for k, ds in deps.items():
        for d in ds:
            readers[d] += 1
    prio = order(dsk)
    live = peak = 0
    for k in sorted(dsk, key=prio.__getitem__):
        if is_block(k):
            live += 1
        peak = max(peak, live)
        for d in deps[k]:
            readers[d] -= 1
            if readers[d] == 0 and d not in outputs and is_block(d):
                live -= 1
    return peak


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--path", required=True)
    args = p.parse_args()
    x = da.from_zarr(args.path)
    y = (x + x.T - x.mean(axis=0)).std()
    (y,) = dask.optimize(y)
    dsk = dict(y.__dask_graph__())
    outputs = set(y.__dask_keys__()) if isinstance(y.__dask_keys__(), list) else {y.__dask_keys__()}
    name = x.name

    def is_block(k):
        return isinstance(k, tuple) and isinstance(k[0], str) and (k[0] == name or k[0].startswith("from-zarr") or k[0].startswith("getitem"))

    nblocks = sum(1 for k in dsk if is_block(k))
    print(f"RESULT dask={dask.__version__} blocks={nblocks} tasks={len(dsk)} dask_order_peak_blocks={peak_blocks(dsk, outputs, is_block)}")


if __name__ == "__main__":
    main()
