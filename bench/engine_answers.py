"""What the multi-engine drivers (bench/tpch.py, bench/nycflights.py) share: the process's
load and peak memory, and comparing engines' answers (rows of JSON values) value by value.
Imports nothing outside the standard library, so the drivers run under any Python."""
import math


def loadavg():
    """The 1-minute load average."""
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def peak_rss_mb():
    """This process's peak resident set size, in MiB (Linux `VmHWM`)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def plain(v):
    """A cell as a comparable value: numbers as floats, missing (kiln's null prints as an empty
    cell, pandas' as NaN) as None, the rest as text."""
    if v is None or v == "" or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, (int, float)):
        return float(v)
    return str(v)


def same_answer(a, b, rel_tol=1e-9, abs_tol=1e-6):
    """Whether two answers have the same rows, numbers equal within the tolerances."""
    if len(a) != len(b):
        return False
    for ra, rb in zip(a, b):
        if len(ra) != len(rb):
            return False
        for x, y in zip(map(plain, ra), map(plain, rb)):
            if isinstance(x, float) and isinstance(y, float):
                if not math.isclose(x, y, rel_tol=rel_tol, abs_tol=abs_tol):
                    return False
            elif x != y:
                return False
    return True
