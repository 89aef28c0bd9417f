"""What a ranged GET costs on an S3-compatible server: one object of --mb MB is uploaded, then
read in --range-mib MiB ranges (--parallel at a time, all of it, --runs times) and whole
(--parallel objects' worth of whole-object GETs at a time), through boto3. A server whose ranged
GETs cost by their length reads the ranges at about the whole-object rate; one that reads the
whole object for every ranged GET (moto) is much slower per byte on ranges.

    python bench/s3_range_cost.py --endpoint http://127.0.0.1:PORT [--key K --secret S]
        [--mb 66] [--range-mib 16] [--parallel 2] [--runs 3]

Prints one line per measurement and a final `RESULT` line (MB/s, medians over the runs).
"""

import argparse
import concurrent.futures
import os
import statistics
import time

import boto3
from botocore.config import Config


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--endpoint", required=True)
    p.add_argument("--key", default="testing")
    p.add_argument("--secret", default="testing")
    p.add_argument("--bucket", default="rangecost")
    p.add_argument("--mb", type=float, default=66.0)
    p.add_argument("--range-mib", type=float, default=16.0)
    p.add_argument("--parallel", type=int, default=2)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--name", default="server")
    a = p.parse_args()
    s3 = boto3.client(
        "s3",
        endpoint_url=a.endpoint,
        aws_access_key_id=a.key,
        aws_secret_access_key=a.secret,
        region_name="us-east-1",
        config=Config(max_pool_connections=max(4, a.parallel), s3={"addressing_style": "path"}),
    )
    try:
        s3.create_bucket(Bucket=a.bucket)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    except s3.exceptions.BucketAlreadyExists:
        pass
    size = int(a.mb * 1e6)
    body = os.urandom(size)
    s3.put_object(Bucket=a.bucket, Key="object", Body=body)
    step = int(a.range_mib * (1 << 20))
    ranges = [(s, min(s + step, size) - 1) for s in range(0, size, step)]

    def get_range(r):
        got = s3.get_object(Bucket=a.bucket, Key="object", Range=f"bytes={r[0]}-{r[1]}")["Body"].read()
        assert len(got) == r[1] - r[0] + 1, (len(got), r)
        return got

    def get_whole(_):
        got = s3.get_object(Bucket=a.bucket, Key="object")["Body"].read()
        assert len(got) == size
        return got

    # The ranges put together are the object: the server answers ranges right.
    with concurrent.futures.ThreadPoolExecutor(a.parallel) as pool:
        assert b"".join(pool.map(get_range, ranges)) == body, "ranges do not add up to the object"
    range_rates, whole_rates, per_request = [], [], []
    for _ in range(a.runs):
        with concurrent.futures.ThreadPoolExecutor(a.parallel) as pool:
            t = time.perf_counter()
            list(pool.map(get_range, ranges))
            dt = time.perf_counter() - t
        range_rates.append(size / 1e6 / dt)
        per_request.append(dt / len(ranges) * a.parallel)
        with concurrent.futures.ThreadPoolExecutor(a.parallel) as pool:
            t = time.perf_counter()
            list(pool.map(get_whole, range(a.parallel)))
            dt = time.perf_counter() - t
        whole_rates.append(size * a.parallel / 1e6 / dt)
    # A tiny range: the fixed cost of a request.
    tiny = []
    for _ in range(20):
        t = time.perf_counter()
        get_range((size // 2, size // 2 + 99))
        tiny.append(time.perf_counter() - t)
    r, w, q, t = (statistics.median(x) for x in (range_rates, whole_rates, per_request, tiny))
    print(f"{a.name}: {a.range_mib:g} MiB ranges of a {a.mb:g} MB object, {a.parallel} at a time: {r:.0f} MB/s "
          f"({q * 1e3:.0f} ms a request); whole-object GETs: {w:.0f} MB/s; a 100-byte range: {t * 1e3:.1f} ms")
    print(f"RESULT server={a.name} object_mb={a.mb:g} range_mib={a.range_mib:g} parallel={a.parallel} "
          f"range_mb_s={r:.1f} range_request_ms={q * 1e3:.1f} whole_mb_s={w:.1f} tiny_range_ms={t * 1e3:.2f}")
    s3.delete_object(Bucket=a.bucket, Key="object")


if __name__ == "__main__":
    main()
