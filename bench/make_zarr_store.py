"""Writes the seed benchmark's input: an n x n float64 Zarr array of uniform [0, 1) numbers,
chunks 1000 x 1000 (or --chunk), with zarr-python's default codecs (Zarr v3, zstd), one band of
chunk rows at a time so that writing needs little memory. Does nothing when the store exists
with the asked shape and chunks."""
import argparse
import json
import os

import numpy as np
import zarr


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--path", required=True)
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--chunk", type=int, default=1000)
    args = p.parse_args()
    meta = os.path.join(args.path, "zarr.json")
    if os.path.exists(meta):
        with open(meta) as f:
            m = json.load(f)
        shape = m.get("shape")
        chunks = m.get("chunk_grid", {}).get("configuration", {}).get("chunk_shape")
        if shape == [args.n, args.n] and chunks == [args.chunk, args.chunk]:
            print(f"store {args.path} exists: {shape}, chunks {chunks}")
            return
        raise SystemExit(f"{args.path} holds another array ({shape}, chunks {chunks}); remove it first")
    z = zarr.create_array(store=args.path, shape=(args.n, args.n), chunks=(args.chunk, args.chunk), dtype="f8")
    rng = np.random.default_rng(7)
    for r0 in range(0, args.n, args.chunk):
        r1 = min(r0 + args.chunk, args.n)
        z[r0:r1, :] = rng.random((r1 - r0, args.n))
    print(f"wrote {args.path}: {args.n}x{args.n} f64, chunks {args.chunk}, codecs {z.metadata.codecs}")


if __name__ == "__main__":
    main()
