"""The Dask side of bench/src/bin/bag_json.rs: the seeds' dask.bag pipelines with dask's default
multiprocessing scheduler for bags, timed separately, and the peak RSS of this process plus its
worker processes (sampled every 50 ms), printed as one `DASK ...` line."""
import json
import sys
import threading
import time

import dask.bag as db
import psutil


class PeakRss:
    """Samples the summed RSS of this process and its children until stopped."""

    def __init__(self):
        self.peak = 0
        self.running = True
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        me = psutil.Process()
        while self.running:
            total = 0
            for p in [me] + me.children(recursive=True):
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            time.sleep(0.05)

    def stop(self):
        self.running = False
        self.thread.join()
        return self.peak


def main():
    pattern = sys.argv[1]
    rss = PeakRss()
    b = db.read_text(pattern).map(json.loads)
    start = time.perf_counter()
    count = b.filter(lambda d: d["name"] == "Alice").count().compute()
    count_s = time.perf_counter() - start
    start = time.perf_counter()
    top = b.pluck("type").frequencies().topk(10, key=1).compute()
    topk_s = time.perf_counter() - start
    peak = rss.stop()
    print(f"dask.bag: count {count} in {count_s:.2f} s, topk {top[:3]}... in {topk_s:.2f} s")
    print(f"DASK count={count} count_s={count_s:.3f} topk_s={topk_s:.3f} peak_rss_mb={peak / 2**20:.0f}")


if __name__ == "__main__":
    main()
