"""The Dask side of bench/src/bin/bag_groupby.rs: dask.bag's foldby and groupby (its default
shuffle without a distributed client: on disk, through partd) over the same generated records,
with dask's default multiprocessing scheduler for bags, each timed separately, printed as one
`DASK ...` line with a checksum of the per-key sums."""
import sys
import time

import dask.bag as db

KEYS = 1000


def record(i):
    # The same records as bag_groupby.rs: 1000 keys spread by a multiplicative step.
    return ((i * 7919) % KEYS, i % 100)


def add_amount(total, r):
    return total + r[1]


def add(a, b):
    return a + b


def group_sum(kv):
    return (kv[0], sum(r[1] for r in kv[1]))


def checksum(pairs):
    # Order-free and sensitive to every pair: sum of key * 1_000_003 + total.
    return sum(k * 1_000_003 + total for k, total in pairs)


def main():
    n, npartitions = int(sys.argv[1]), int(sys.argv[2])
    records = db.range(n, npartitions=npartitions).map(record)
    start = time.perf_counter()
    folded = records.foldby(lambda r: r[0], add_amount, 0, add, 0).compute()
    foldby_s = time.perf_counter() - start
    start = time.perf_counter()
    grouped = records.groupby(lambda r: r[0]).map(group_sum).compute()
    groupby_s = time.perf_counter() - start
    assert len(folded) == KEYS and len(grouped) == KEYS, (len(folded), len(grouped))
    assert checksum(folded) == checksum(grouped)
    print(f"dask.bag: foldby {foldby_s:.2f} s, groupby {groupby_s:.2f} s on {n} records")
    print(f"DASK groups={len(grouped)} checksum={checksum(folded)} foldby_s={foldby_s:.3f} groupby_s={groupby_s:.3f}")


if __name__ == "__main__":
    main()
