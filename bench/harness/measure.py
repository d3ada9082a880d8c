"""The measurement protocol shared by the scenarios: capped throughput rounds
interleaved across peers (A,B,C,A,B,C...), fixed-rate latency rounds uncapped, and the
statistics reported (median, min-max, ratio within a round)."""

import os
import statistics
import time

from . import load, system

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "5"))
CAP_PERCENT = int(os.environ.get("BENCH_CAP_PERCENT", "40"))
CONNS = int(os.environ.get("BENCH_CONNS", "32"))
LATENCY_SECONDS = int(os.environ.get("BENCH_LATENCY_SECONDS", "5"))


class Target:
    """One thing to load: a peer, the path, and the wrk script / headers to use."""

    def __init__(self, label, peer, path="/", script=None, headers=None):
        self.label = label
        self.peer = peer
        self.path = path
        self.script = script
        self.headers = headers or {}

    @property
    def url(self):
        return self.peer.url(self.path)


def throughput(targets, rounds=None, seconds=None, cap=None):
    """Capped closed-loop rounds. Returns {label: [round results]}, each with rps,
    cpu_us (CPU time of the peer's processes per request), errors, rss_kb."""
    rounds = rounds or ROUNDS
    seconds = seconds or SECONDS
    cap = CAP_PERCENT if cap is None else cap
    use_cap = cap and system.CpuCap.available()
    if use_cap:
        system.CpuCap.set(cap)
        for t in targets:
            system.CpuCap.add(t.peer.pids())
    try:
        for t in targets:  # warm-up: connections, caches, lazily created series
            load.wrk(t.url, 2, CONNS, t.script, t.headers)
        out = {t.label: [] for t in targets}
        for _ in range(rounds):
            for t in targets:
                pids = t.peer.pids()
                cpu0 = system.cpu_seconds(pids)
                res = load.wrk(t.url, seconds, CONNS, t.script, t.headers)
                cpu1 = system.cpu_seconds(pids)
                res.pop("raw", None)
                res["cpu_us"] = (cpu1 - cpu0) / max(res["requests"], 1) * 1e6
                res["rss_kb"] = system.rss_kb(pids)
                res["load"] = system.loadavg()
                out[t.label].append(res)
        return out
    finally:
        if use_cap:
            system.CpuCap.set(None)


def latency(targets, rate, rounds=3, seconds=None):
    """Uncapped open-loop rounds at `rate` req/s: {label: [oha results]}."""
    seconds = seconds or LATENCY_SECONDS
    out = {t.label: [] for t in targets}
    for _ in range(rounds):
        for t in targets:
            out[t.label].append(load.oha(t.url, rate, seconds, headers=t.headers))
    return out


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def spread(values, fmt="{:.0f}"):
    """'median (min-max)' of a list of numbers."""
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def ratios(results, a, b, key="rps"):
    """Per-round ratio a/b of `key` (both measured in the same round)."""
    return [ra[key] / rb[key] for ra, rb in zip(results[a], results[b]) if ra[key] and rb[key]]


def extras(results, a, b, key="cpu_us"):
    """Per-round difference a - b of `key`: what `a` adds to `b` (e.g. a plugin's CPU)."""
    return [ra[key] - rb[key] for ra, rb in zip(results[a], results[b])]


def timed(fn):
    t0 = time.monotonic()
    value = fn()
    return value, time.monotonic() - t0
