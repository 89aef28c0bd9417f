"""Writes the HDF5 variant of the seed benchmark's input: the Zarr store's array
(bench/make_zarr_store.py) as dataset "x" of an HDF5 file, written by h5py in chunks the size of
the store's: uncompressed (h5py's default), or with `--gzip LEVEL` deflate-compressed, and with
`--shuffle` shuffled before compression. Same data as the store. Does nothing when the file
already holds a dataset "x" of the right shape and filters."""
import argparse
import os

import h5py
import zarr


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--from-zarr", required=True)
    p.add_argument("--path", required=True)
    p.add_argument("--gzip", type=int, default=None, help="deflate level 0-9 (default: uncompressed)")
    p.add_argument("--shuffle", action="store_true", help="the shuffle filter before compression")
    args = p.parse_args()
    z = zarr.open_array(args.from_zarr, mode="r")
    compression = "gzip" if args.gzip is not None else None
    if os.path.exists(args.path):
        with h5py.File(args.path, "r") as f:
            x = f.get("x")
            if (
                x is not None
                and x.shape == z.shape
                and x.compression == compression
                and (compression is None or x.compression_opts == args.gzip)
                and x.shuffle == args.shuffle
            ):
                print(f"{args.path} exists: {x.shape} in chunks {x.chunks}, {compression}, shuffle={x.shuffle}")
                return
    tmp = args.path + ".partial"
    with h5py.File(tmp, "w") as f:
        x = f.create_dataset(
            "x",
            shape=z.shape,
            dtype=z.dtype,
            chunks=z.chunks,
            compression=compression,
            compression_opts=args.gzip,
            shuffle=args.shuffle,
        )
        step = z.chunks[0]
        for start in range(0, z.shape[0], step):
            x[start : start + step] = z[start : start + step]
    os.replace(tmp, args.path)
    print(f"wrote {args.path}: {z.shape} in chunks {z.chunks}, {compression}, shuffle={args.shuffle} from {args.from_zarr}")


if __name__ == "__main__":
    main()
