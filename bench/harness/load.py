"""Load generators: wrk (closed loop, for throughput) and oha (open loop at a fixed
rate, for latency), both pinned to the client core, with their output parsed."""

import json
import os
import re
import shutil

from . import system

WRK_SCRIPTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "wrk")


def _duration_us(text):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", text)
    if not m:
        return None
    value, unit = float(m.group(1)), m.group(2)
    return value * {"us": 1, "ms": 1e3, "s": 1e6, "m": 60e6}[unit]


def wrk(url, seconds, conns=32, script=None, headers=None):
    """One closed-loop wrk run; returns requests, req/s, errors and latency percentiles
    (closed-loop latency includes queueing: reported, not used for targets)."""
    args = ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency", "--timeout", "5s"]
    if script:
        args += ["-s", os.path.join(WRK_SCRIPTS, script)]
    for name, value in (headers or {}).items():
        args += ["-H", f"{name}: {value}"]
    out = system.run(args + [url], core=system.CLIENT_CORE, timeout=seconds + 30)
    res = {"requests": 0, "rps": 0.0, "errors": 0, "non2xx": 0, "p50_us": None, "p99_us": None}
    m = re.search(r"(\d+) requests in", out)
    if m:
        res["requests"] = int(m.group(1))
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m:
        res["rps"] = float(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        res["errors"] = sum(int(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        res["non2xx"] = int(m.group(1))
    for pct, key in (("50", "p50_us"), ("99", "p99_us")):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.M)
        if m:
            res[key] = _duration_us(m.group(1))
    res["raw"] = out
    return res


def oha_path():
    return shutil.which("oha") or os.path.expanduser("~/.cargo/bin/oha")


def oha(url, rate, seconds, conns=64, headers=None, method="GET"):
    """Open-loop load at `rate` requests/s with latency correction (the latency a user
    at that rate sees, without coordinated omission); returns percentiles in µs,
    the status histogram and the error count."""
    args = [oha_path(), "-z", f"{seconds}s", "-q", str(rate), "-c", str(conns),
            "--latency-correction", "--no-tui", "--output-format", "json", "-m", method]
    for name, value in (headers or {}).items():
        args += ["-H", f"{name}: {value}"]
    out = system.run(args + [url], core=system.CLIENT_CORE, timeout=seconds + 60)
    data = json.loads(out)
    pct = data.get("latencyPercentiles", {})
    statuses = {int(k): v for k, v in data.get("statusCodeDistribution", {}).items()}
    # oha cancels the requests still in flight when the duration ends: not failures.
    kinds = {k: v for k, v in data.get("errorDistribution", {}).items() if "deadline" not in k}
    errors = sum(kinds.values())
    ok = sum(v for k, v in statuses.items() if 200 <= k < 400)
    return {
        "requests": ok + errors + sum(v for k, v in statuses.items() if not 200 <= k < 400),
        "ok": ok,
        "failed": errors + sum(v for k, v in statuses.items() if k >= 400),
        "statuses": statuses,
        "error_kinds": kinds,
        "p50_us": _sec_to_us(pct.get("p50")),
        "p99_us": _sec_to_us(pct.get("p99")),
        "p999_us": _sec_to_us(pct.get("p99.9")),
        "rps": data.get("summary", {}).get("requestsPerSec"),
    }


def _sec_to_us(value):
    return None if value is None else value * 1e6
