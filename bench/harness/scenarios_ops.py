"""Operational scenarios S6-S9: config changes under load, a node killed and restarted,
a soak with route churn, and many idle connections."""

import json
import os
import threading
import time

from . import load, measure, peers, system
from .peers import ORIGIN_PORTS, Haproxy, Nginx, Origin, Portico
from .report import Scenario
from .scenarios_proxy import (HAPROXY_FRONT, ORIGIN, RATE, haproxy_backend, nginx_server,
                              nginx_upstream, portico_resources, started, stop_all)

PUSH_RATE = float(os.environ.get("BENCH_PUSH_RATE", "10"))
PUSH_SECONDS = int(os.environ.get("BENCH_PUSH_SECONDS", "15"))
SOAK_SECONDS = int(os.environ.get("BENCH_SOAK_SECONDS", "600"))
IDLE_CONNS = int(os.environ.get("BENCH_IDLE_CONNS", "10000"))
NODE_B = "127.0.0.1:19011"


class Background(threading.Thread):
    """Runs `fn` in a thread and keeps its result or exception."""

    def __init__(self, fn):
        super().__init__(daemon=True)
        self.fn = fn
        self.result = None
        self.error = None

    def run(self):
        try:
            self.result = self.fn()
        except Exception as e:  # noqa: BLE001 - re-raised by value()
            self.error = e

    def value(self):
        self.join()
        if self.error:
            raise self.error
        return self.result


def every(interval, seconds, action):
    """Calls action(i) every `interval` seconds for `seconds`; returns (done, failed)."""
    done = failed = 0
    start = time.monotonic()
    i = 0
    while time.monotonic() - start < seconds:
        try:
            action(i)
            done += 1
        except Exception:  # noqa: BLE001 - counted and reported
            failed += 1
        i += 1
        time.sleep(max(0.0, start + i * interval - time.monotonic()))
    return done, failed


def s6_push(run):
    """S6: a config change 10 times a second under fixed-rate load."""
    two = [ORIGIN, f"127.0.0.1:{ORIGIN_PORTS[1]}"]
    s = Scenario("S6", "config changes under load",
                 f"Fixed-rate load ({RATE} req/s, 64 connections, uncapped) for {PUSH_SECONDS} s, once "
                 f"without changes and once with the upstream's node list toggled between one and two "
                 f"nodes {PUSH_RATE:g} times a second: Portico through `PUT /apisix/admin/upstreams/u1`, "
                 "nginx by rewriting its config and `SIGHUP`, HAProxy by rewriting its config and a "
                 "master-worker reload (`SIGUSR2`).")
    ps = started(
        Nginx("nginx", 18081, nginx_upstream([ORIGIN]) + nginx_server(18081)),
        Haproxy("haproxy", 18082, HAPROXY_FRONT, haproxy_backend([ORIGIN])),
        Portico("portico", 18080, portico_resources()),
    )
    ng, hp, pt = ps

    def change(peer, i):
        nodes = two if i % 2 == 0 else [ORIGIN]
        if peer is pt:
            pt.admin("PUT", "/apisix/admin/upstreams/u1",
                     {"type": "roundrobin", "nodes": {n: 1 for n in nodes}})
        elif peer is ng:
            ng.reload(nginx_upstream(nodes) + nginx_server(18081))
        else:
            hp.reload(haproxy_backend(nodes))

    rows = []
    try:
        for p in ps:
            base = load.oha(p.url("/"), RATE, PUSH_SECONDS)
            pusher = Background(lambda p=p: every(1 / PUSH_RATE, PUSH_SECONDS, lambda i: change(p, i)))
            pusher.start()
            pushed = load.oha(p.url("/"), RATE, PUSH_SECONDS)
            done, failed_changes = pusher.value()
            ratio = pushed["p99_us"] / base["p99_us"] if base["p99_us"] else None
            rows.append([p.name, f"{done} ({failed_changes} failed)", base["failed"], pushed["failed"],
                         f"{base['p99_us']:.0f}", f"{pushed['p99_us']:.0f}", f"{ratio:.2f}×",
                         ", ".join(f"{k}: {v}" for k, v in pushed["error_kinds"].items()) or "-"])
            if p is pt:
                s.check("S6 0 failed requests during config pushes",
                        f"{pushed['failed']} of {pushed['requests']}", pushed["failed"] == 0)
                s1 = run.get("s1_p99") or base["p99_us"]
                s.check("S6 p99 during pushes < 1.2× S1's",
                        f"{pushed['p99_us']:.0f} µs vs {s1:.0f} µs", pushed["p99_us"] < 1.2 * s1)
            if p is ng:
                time.sleep(1)  # let the old workers exit before the next peer's load
        s.table(["peer", "changes", "failed (no changes)", "failed (changes)", "p99 µs (no changes)",
                 "p99 µs (changes)", "p99 ratio", "errors"], rows)
        s.load.append(system.loadavg())
    finally:
        stop_all(ps)
    return s


def portico_checks():
    return {
        "retries": 1,
        "checks": {
            "active": {"type": "http", "http_path": "/", "timeout": 1,
                       "healthy": {"interval": 1, "successes": 2},
                       "unhealthy": {"interval": 1, "tcp_failures": 2, "http_failures": 2, "timeouts": 2}},
            "passive": {"unhealthy": {"tcp_failures": 2, "http_failures": 2, "timeouts": 2}},
        },
    }


def portico_node_b_healthy(pt):
    _, body = pt.admin("GET", "/v1/healthcheck/upstreams/u1")
    entry = body[0] if isinstance(body, list) else body
    for n in entry["nodes"]:
        if f"{n['ip']}:{n['port']}" == NODE_B:
            return n["status"] == "healthy"
    return None


def haproxy_node_b_healthy(hp):
    state = hp.admin("show servers state be")
    for line in state.splitlines():
        parts = line.split()
        if len(parts) > 5 and parts[3] == "o1":
            return parts[5] == "2"  # srv_op_state 2 = running
    return None


def s7_eject(run):
    """S7: one of two nodes killed and restarted under load."""
    duration, kill_at, restart_at = 12.0, 3.0, 7.0
    s = Scenario("S7", "a node killed and restarted under load",
                 f"Two nodes, fixed-rate GET load ({RATE // 2} req/s, uncapped) for {duration:.0f} s; the "
                 f"second node's origin is stopped at {kill_at:.0f} s and started again at {restart_at:.0f} s. "
                 "nginx: `max_fails=2 fail_timeout=5s` and `proxy_next_upstream`; HAProxy: `check inter 1s "
                 "fall 2 rise 2`, `retry-on conn-failure`, `redispatch`; Portico: active checks (interval "
                 "1 s, 2 failures to eject, 2 successes to readmit), passive checks, `retries: 1`. "
                 "Ejection and readmission times are read from each peer's health state, polled every "
                 "50 ms (nginx exposes none).")
    ps = started(
        Nginx("nginx", 18081, nginx_upstream([f"{ORIGIN} max_fails=2 fail_timeout=5s",
                                              f"{NODE_B} max_fails=2 fail_timeout=5s"]) + nginx_server(18081)),
        Haproxy("haproxy", 18082, HAPROXY_FRONT,
                haproxy_backend([f"{ORIGIN} check inter 1s fall 2 rise 2",
                                 f"{NODE_B} check inter 1s fall 2 rise 2"])),
        Portico("portico", 18080, portico_resources(upstream_extra=portico_checks(), nodes=[ORIGIN, NODE_B])),
    )
    rows = []
    origin_b = Origin("origin-b", ports=[19011])
    try:
        for p in ps:
            origin_b.start()
            probe = {"portico": portico_node_b_healthy, "haproxy": haproxy_node_b_healthy}.get(p.name)
            system.wait_for(lambda: probe is None or probe(p), 10, f"{p.name}: node B healthy")
            lg = Background(lambda p=p: load.oha(p.url("/"), RATE // 2, duration))
            t0 = time.monotonic()
            lg.start()
            ejected = readmitted = None
            killed = restarted = False
            while lg.is_alive():
                now = time.monotonic() - t0
                if not killed and now >= kill_at:
                    origin_b.stop()
                    killed, t_kill = True, time.monotonic()
                if killed and not restarted and now >= restart_at:
                    origin_b.start()
                    restarted, t_restart = True, time.monotonic()
                if probe:
                    healthy = probe(p)
                    if killed and ejected is None and healthy is False:
                        ejected = time.monotonic() - t_kill
                    if restarted and readmitted is None and healthy:
                        readmitted = time.monotonic() - t_restart
                time.sleep(0.05)
            res = lg.value()
            origin_b.stop()
            rows.append([p.name, res["failed"], res["requests"], f"{res['p99_us']:.0f}",
                         f"{res['p999_us']:.0f}", _secs(ejected, probe), _secs(readmitted, probe)])
            if p.name == "portico":
                s.check("S7 0 failed idempotent requests", f"{res['failed']} of {res['requests']}",
                        res["failed"] == 0)
                s.check("S7 ejection within the configured thresholds (≤ 2 probes of 1 s + timeout)",
                        _secs(ejected, probe), ejected is not None and ejected <= 3.0)
                s.check("S7 readmission within 2 successful probes (≤ 3 s)", _secs(readmitted, probe),
                        readmitted is not None and readmitted <= 3.0)
        s.table(["peer", "failed", "requests", "p99 µs", "p99.9 µs", "ejected after", "readmitted after"], rows)
        s.load.append(system.loadavg())
    finally:
        origin_b.stop()
        stop_all(ps)
    return s


def _secs(value, probe):
    if probe is None:
        return "not observable"
    return "never" if value is None else f"{value:.2f} s"


def s8_soak(run):
    """S8: a long fixed-rate load while routes are created and deleted."""
    rate = RATE // 2
    s = Scenario("S8", "soak with route churn",
                 f"{SOAK_SECONDS // 60} min at {rate} req/s (uncapped) on Portico while a client creates "
                 "and deletes a route (PUT then DELETE, each an apply) 5 times a second; RSS and open "
                 "fds sampled every 10 s. Growth is the trend (least squares) over the second half "
                 "under load (the first half holds the allocator's and the upstream connection "
                 "pool's warm-up); the table's last row is after the load stopped.")
    pt = Portico("portico", 18080, portico_resources()).start()
    try:
        def churn(i):
            rid = f"soak-{i % 100}"
            pt.admin("PUT", f"/apisix/admin/routes/{rid}",
                     {"uri": f"/soak/{i}", "upstream_id": "u1", "plugins": {}})
            pt.admin("DELETE", f"/apisix/admin/routes/{rid}")

        lg = Background(lambda: load.oha(pt.url("/"), rate, SOAK_SECONDS))
        ch = Background(lambda: every(0.2, SOAK_SECONDS, churn))
        lg.start()
        ch.start()
        samples = []
        t0 = time.monotonic()
        while lg.is_alive():
            pids = pt.pids()
            samples.append((time.monotonic() - t0, system.rss_kb(pids), system.fd_count(pids)))
            s.load.append(system.loadavg())
            lg.join(timeout=10)
        res = lg.value()
        cycles, failed_cycles = ch.value()
        # The second half of the run under load (the first half holds the allocator's and
        # the upstream pool's warm-up; the load's last seconds close its connections):
        # RSS growth is the least-squares slope over it, which single samples' churn
        # (about ±3%) does not move much.
        half = [x for x in samples if SOAK_SECONDS / 2 <= x[0] <= SOAK_SECONDS - 10] or samples
        rss_from = half[0][1]
        slope = least_squares_slope([(t, r) for t, r, _ in half])
        growth = slope * (half[-1][0] - half[0][0]) / rss_from
        fd_from, fd_to = min(f for _, _, f in half), max(f for _, _, f in half)
        pids = pt.pids()
        samples.append((time.monotonic() - t0, system.rss_kb(pids), system.fd_count(pids)))
        shown = samples[:: max(1, len(samples) // 12)] + [half[0], half[-1], samples[-1]]
        s.table(["time s", "RSS MB", "open fds"],
                [[f"{t:.0f}", f"{r / 1024:.1f}", f] for t, r, f in sorted(set(shown))])
        s.table(["requests", "failed", "p99 µs", "route cycles", "failed cycles"],
                [[res["requests"], res["failed"], f"{res['p99_us']:.0f}", cycles, failed_cycles]])
        s.check("S8 no RSS growth (trend over the second half ≤ 2%)",
                f"{growth:+.1%} ({rss_from / 1024:.1f} MB at the half)", growth <= 0.02)
        s.check("S8 no fd growth (second half: min-max)", f"{fd_from}-{fd_to}", fd_to <= fd_from + 5)
        s.check("S8 0 failed requests", f"{res['failed']} of {res['requests']}", res["failed"] == 0)
    finally:
        pt.stop()
    return s


def least_squares_slope(points):
    n = len(points)
    if n < 2:
        return 0.0
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    den = sum((t - mt) ** 2 for t, _ in points)
    return sum((t - mt) * (v - mv) for t, v in points) / den if den else 0.0


def hold_idle(port, n, hold_seconds, sni=None):
    """Opens n keep-alive connections (TLS with `sni`), sends one request on each, reads
    the response and keeps them open for hold_seconds; runs as a separate process (it
    needs n fds)."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "idle_conns.py")
    return system.spawn(["python3", script, str(port), str(n), str(hold_seconds)] + ([sni] if sni else []),
                        system.CLIENT_CORE, os.path.join(peers.WORK, "idle.log"))


def idle_row(peer, port, n, sni=None):
    """Holds n idle keep-alive connections to `port` (TLS with `sni`) and measures the
    peer: [name, held, RSS MB before, RSS MB holding, KB per connection, CPU while idle]."""
    pids = peer.pids()
    rss0 = system.rss_kb(pids)
    status = os.path.join(peers.WORK, "idle.status")
    if os.path.exists(status):
        os.remove(status)
    client = hold_idle(port, n, 60, sni)
    system.wait_for(lambda: os.path.exists(status), 90, f"{n} idle connections to {peer.name}")
    with open(status) as f:
        held = json.load(f)["held"]
    time.sleep(1)  # connections settle after their one request
    cpu0 = system.cpu_seconds(pids)
    time.sleep(5)
    cpu_idle = system.cpu_seconds(pids) - cpu0
    rss1 = system.rss_kb(pids)
    system.stop(client)
    per = (rss1 - rss0) / max(held, 1)
    return [peer.name, held, f"{rss0 / 1024:.1f}", f"{rss1 / 1024:.1f}", f"{per:.2f}",
            f"{cpu_idle * 1000:.0f} ms"]


def s9_idle(run):
    """S9: memory per idle keep-alive connection."""
    s = Scenario("S9", f"{IDLE_CONNS:,} idle keep-alive connections",
                 f"{IDLE_CONNS:,} client connections, each sends one request, reads the answer and stays "
                 "open (keep-alive) without further requests; the proxy's RSS before and while they are "
                 "held, and its CPU time while idle. HAProxy's connection limit follows the fd limit "
                 "of this machine (20,000: `ulimit -Hn`), so it holds fewer.")
    ps = started(
        Nginx("nginx", 18081, nginx_upstream([ORIGIN]) + nginx_server(18081)),
        Haproxy("haproxy", 18082, HAPROXY_FRONT, haproxy_backend([ORIGIN])),
        Portico("portico", 18080, portico_resources()),
    )
    rows = []
    try:
        for p in ps:
            load.wrk(p.url("/"), 1)
            row = idle_row(p, p.port, IDLE_CONNS)
            rows.append(row)
            if p.name == "portico":
                held, per = row[1], float(row[4])
                s.check(f"S9 ≤ 2 KB per idle connection ({held:,} held)", f"{per:.2f} KB", per <= 2.0)
        s.table(["peer", "connections held", "RSS MB before", "RSS MB holding", "KB per connection",
                 "CPU in 5 s idle"], rows)
        s.load.append(system.loadavg())
    finally:
        stop_all(ps)
    return s


SCENARIOS = {"S6": s6_push, "S7": s7_eject, "S8": s8_soak, "S9": s9_idle}
_ = measure
