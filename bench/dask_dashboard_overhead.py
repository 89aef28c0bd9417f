"""What dask.distributed's Bokeh dashboard costs its scheduler: the `dask_distributed_overhead.py`
graph (n `inc` tasks feeding an 8-ary tree of sums) on one
``LocalCluster(n_workers=2, threads_per_worker=1, processes=True)`` serving its dashboard, run
alternately with no page open ("off") and with --pages real pages of ``/status`` open in headless
Chromium ("on"; each page is its own browser process with its own Bokeh session, as ten tabs of
ten users would be). Which condition goes first alternates from one repetition to the next.

Bokeh pages cost the server only while they are connected, so for "on" the browsers are started,
the script waits until every page holds its websocket to the dashboard (counted on the dashboard's
port) and a few seconds more for the first render, runs the graph, then stops them. Two figures:
throughput (tasks/s, wall clock) and the CPU time of this process per task, which is where
LocalCluster runs the scheduler (with the client, whose work is the same in both conditions);
on a 2-core machine the browsers also compete for the cores, which the CPU figure is immune to.

    bench/.venv/bin/python bench/dask_dashboard_overhead.py --n 100000 --runs 5 --pages 10
"""
import argparse
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from urllib.parse import urlparse

import distributed
import psutil

from dask_common import load_average
from dask_distributed_overhead import build


def chromium():
    for name in ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"]:
        path = shutil.which(name)
        if path:
            return path
    raise SystemExit("no Chromium found (Debian: apt-get install chromium)")


def open_websockets(port):
    """Established TCP connections to the dashboard's port whose peer is a browser process."""
    n = 0
    for c in psutil.net_connections(kind="tcp"):
        if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == port and c.pid == os.getpid():
            n += 1
    return n


class Pages:
    """--pages headless Chromium processes each showing the dashboard's /status."""

    def __init__(self, binary, url, pages, port):
        self.dirs = [tempfile.mkdtemp(prefix="dask-dash-page-") for _ in range(pages)]
        self.procs = [
            subprocess.Popen(
                [
                    binary,
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--no-first-run",
                    f"--user-data-dir={d}",
                    "--remote-debugging-port=0",
                    "--window-size=1600,1000",
                    url,
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            for d in self.dirs
        ]
        deadline = time.monotonic() + 120
        while open_websockets(port) < pages:
            if time.monotonic() > deadline:
                self.close()
                raise SystemExit(f"only {open_websockets(port)} of {pages} pages connected within 120 s")
            if any(p.poll() is not None for p in self.procs):
                self.close()
                raise SystemExit("a Chromium page exited before connecting")
            time.sleep(0.5)
        # Let the first render and the pages' first periodic updates pass.
        time.sleep(5)
        self.connected = open_websockets(port)

    def close(self):
        for p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
        for d in self.dirs:
            shutil.rmtree(d, ignore_errors=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--pages", type=int, default=10)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    binary = chromium()

    cluster = distributed.LocalCluster(
        n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0"
    )
    client = distributed.Client(cluster)
    link = cluster.dashboard_link
    port = urlparse(link).port
    url = link.replace("/status", "").rstrip("/") + "/status"
    print(f"dask {distributed.__version__} LocalCluster: {args.workers} processes x 1 thread, dashboard {url}")

    def run():
        dsk, root = build(args.n)
        cpu0, t0 = time.process_time(), time.perf_counter()
        result = client.get(dsk, root)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        return len(dsk), result, wall, cpu

    tasks, result, _, _ = run()  # warm-up
    load_start = load_average()
    walls = {"off": [], "on": []}
    cpus = {"off": [], "on": []}
    connected = []
    for rep in range(args.runs):
        order = ["off", "on"] if rep % 2 == 0 else ["on", "off"]
        for mode in order:
            pages = Pages(binary, url, args.pages, port) if mode == "on" else None
            try:
                if pages:
                    connected.append(pages.connected)
                n, r, wall, cpu = run()
            finally:
                if pages:
                    pages.close()
            assert (n, r) == (tasks, result), "the answer changed between runs"
            walls[mode].append(wall)
            cpus[mode].append(cpu)
            print(
                f"  run {rep + 1} {mode:>3}: {n / wall:,.0f} tasks/s, main process CPU {cpu / n * 1e6:.1f} us/task"
                + (f" ({connected[-1]} dashboard connections)" if mode == "on" else "")
            )
    load_end = load_average()
    client.close()
    cluster.close()

    off_tps = tasks / statistics.median(walls["off"])
    on_tps = tasks / statistics.median(walls["on"])
    off_cpu = statistics.median(cpus["off"]) / tasks * 1e6
    on_cpu = statistics.median(cpus["on"]) / tasks * 1e6
    print(
        f"dask dashboard: off {off_tps:,.0f} tasks/s, {args.pages} pages {on_tps:,.0f} tasks/s "
        f"(ratio {on_tps / off_tps:.3f}); scheduler process CPU {off_cpu:.1f} -> {on_cpu:.1f} us/task "
        f"({on_cpu / off_cpu:.3f}x)"
    )
    print(
        f"RESULT name=dask_dashboard_overhead tasks={tasks} result={result} workers={args.workers} "
        f"runs={args.runs} pages={args.pages} min_connections={min(connected)} off_tasks_per_s={off_tps:.0f} "
        f"on_tasks_per_s={on_tps:.0f} ratio={on_tps / off_tps:.3f} off_cpu_us_per_task={off_cpu:.2f} "
        f"on_cpu_us_per_task={on_cpu:.2f} cpu_ratio={on_cpu / off_cpu:.3f} load_start={load_start:.2f} "
        f"load_end={load_end:.2f} distributed={distributed.__version__}"
    )


if __name__ == "__main__":
    main()
