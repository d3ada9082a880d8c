"""Tables that put a subject (a Portico configuration) beside its peers: each peer's
figures, then Portico's ratio to each peer, computed within each round."""

from . import measure
from .measure import median, spread

MB = 1024.0


def peer_table(s, tp, lat=None, caption=None):
    """One row per target: capped req/s, CPU per request, fixed-rate latency, RSS, errors."""
    header = ["peer", "req/s (capped)", "CPU µs/req", "p50 µs", "p99 µs", "p99.9 µs", "RSS MB", "errors"]
    rows = []
    for label, rounds in tp.items():
        lr = (lat or {}).get(label, [])
        errors = sum(r["errors"] + r["non2xx"] for r in rounds) + sum(r["failed"] for r in lr)
        rows.append([
            label,
            spread([r["rps"] for r in rounds]),
            spread([r["cpu_us"] for r in rounds], "{:.1f}"),
            spread([r["p50_us"] for r in lr]) if lr else "-",
            spread([r["p99_us"] for r in lr]) if lr else "-",
            spread([r["p999_us"] for r in lr]) if lr else "-",
            f"{max(r['rss_kb'] for r in rounds) / MB:.1f}",
            errors,
        ])
        for r in rounds:
            s.load.append(r["load"])
    s.table(header, rows, caption or (
        f"{measure.CAP_PERCENT}% CPU quota for req/s and CPU; latency uncapped at a fixed rate; "
        "median (min-max) over rounds"))


def ratio_table(s, tp, lat, subject, peers, caption=None):
    """Portico ÷ each peer, per round: req/s (higher is better), CPU per request and p99
    (lower is better)."""
    header = [f"{subject} ÷ peer", "req/s ratio", "CPU/req ratio", "p99 ratio"]
    rows = []
    for p in peers:
        rows.append([
            p,
            spread(measure.ratios(tp, subject, p), "{:.2f}"),
            spread(measure.ratios(tp, subject, p, "cpu_us"), "{:.2f}"),
            spread(measure.ratios(lat, subject, p, "p99_us"), "{:.2f}") if lat and p in lat else "-",
        ])
    s.table(header, rows, caption or "ratios within each round, median (min-max)")


def rps_ratio(tp, a, b):
    return median(measure.ratios(tp, a, b))


def cpu_ratio(tp, a, b):
    return median(measure.ratios(tp, a, b, "cpu_us"))


def cpu_extra(tp, a, b):
    """Median over rounds of the CPU per request `a` adds to `b` (a plugin's cost)."""
    return median(measure.extras(tp, a, b))


def cpu_of(tp, label):
    return median([r["cpu_us"] for r in tp[label]])


def p99_of(lat, label):
    return median([r["p99_us"] for r in lat[label]])


def fmt_ratio(value):
    return "n/a" if value is None else f"{value:.2f}×"
