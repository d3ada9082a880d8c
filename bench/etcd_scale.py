#!/usr/bin/env python3
"""Cluster mode at scale (docs/benchmarks.md, "Cluster mode (etcd)").

Starts a real etcd (Debian's etcd-server) on free loopback ports with a temporary data
directory, writes N routes in APISIX's layout, then starts Portico (`config_provider:
etcd`) and measures:

- initial load: from spawning portico until the last route is routable;
- RSS after the load, and after the changes;
- one change's convergence: a route put into etcd directly, until the proxy routes it
  (median and max over --changes runs);
- an admin write through etcd: PUT until the reply (the reply comes once this gateway
  applied it from its watch).

Usage: bench/etcd_scale.py --portico target/release/portico [--routes 10000] [--changes 20]
Everything it starts is stopped at the end; stdlib only.
"""

import argparse
import base64
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def b64(text):
    return base64.b64encode(text.encode()).decode()


def post(port, path, body, headers=None, method="POST", timeout=30):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.request(method, path, json.dumps(body), headers or {})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data


def get_status(port, path):
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        conn.close()
        return resp.status
    except OSError:
        return 0


def wait(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.002)
    raise SystemExit(f"timed out waiting for {what}")


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--portico", required=True)
    ap.add_argument("--routes", type=int, default=10000)
    ap.add_argument("--changes", type=int, default=20)
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="portico-etcd-bench-")
    procs = []
    try:
        cport, pport = free_port(), free_port()
        etcd = subprocess.Popen(
            ["etcd", "--name", "bench", "--data-dir", f"{tmp}/etcd",
             "--listen-client-urls", f"http://127.0.0.1:{cport}",
             "--advertise-client-urls", f"http://127.0.0.1:{cport}",
             "--listen-peer-urls", f"http://127.0.0.1:{pport}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{pport}",
             "--initial-cluster", f"bench=http://127.0.0.1:{pport}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(etcd)
        wait(lambda: post_ok(cport), 30, "etcd")

        backend_port = free_port()  # nothing listens: routed requests answer 502
        upstream = {"id": "u", "nodes": {f"127.0.0.1:{backend_port}": 1}, "type": "roundrobin"}
        ops = [{"request_put": {"key": b64("/apisix/upstreams/u"), "value": b64(json.dumps(upstream))}}]
        t = time.monotonic()
        for i in range(args.routes):
            route = {"id": str(i), "uri": f"/r/{i}", "upstream_id": "u"}
            ops.append({"request_put": {"key": b64(f"/apisix/routes/{i}"),
                                        "value": b64(json.dumps(route))}})
            if len(ops) == 100:
                post(cport, "/v3/kv/txn", {"success": ops})
                ops = []
        if ops:
            post(cport, "/v3/kv/txn", {"success": ops})
        print(f"wrote {args.routes} routes to etcd in {time.monotonic() - t:.2f} s")

        proxy, admin, metrics = free_port(), free_port(), free_port()
        key = "bench-admin-key-0123456789"
        conf = f"{tmp}/portico.yaml"
        with open(conf, "w") as f:
            f.write(f"""proxy:
  listen: ["127.0.0.1:{proxy}"]
admin:
  listen: "127.0.0.1:{admin}"
  keys: [{{name: admin, key: "{key}"}}]
metrics:
  listen: "127.0.0.1:{metrics}"
data_dir: "{tmp}/data"
log:
  access:
    path: "off"
config_provider: etcd
etcd:
  endpoints: ["http://127.0.0.1:{cport}"]
""")
        t = time.monotonic()
        gw = subprocess.Popen([args.portico, "-c", conf], stdout=subprocess.DEVNULL,
                              stderr=open(f"{tmp}/portico.log", "w"))
        procs.append(gw)
        last = f"/r/{args.routes - 1}"
        wait(lambda: get_status(proxy, last) not in (0, 404), 120, "the last route")
        load = time.monotonic() - t
        time.sleep(2)
        rss_loaded = rss_mb(gw.pid)
        print(f"initial load (spawn until {last} is routable): {load * 1000:.0f} ms; RSS {rss_loaded:.1f} MB")

        lags = []
        for i in range(args.changes):
            path = f"/new/{i}"
            route = {"id": f"new{i}", "uri": path, "upstream_id": "u"}
            t = time.monotonic()
            post(cport, "/v3/kv/put", {"key": b64(f"/apisix/routes/new{i}"),
                                        "value": b64(json.dumps(route))})
            wait(lambda: get_status(proxy, path) not in (0, 404), 30, path)
            lags.append(time.monotonic() - t)
        print(f"one change written to etcd until routed ({args.changes} runs): "
              f"median {statistics.median(lags) * 1000:.1f} ms, max {max(lags) * 1000:.1f} ms")

        writes = []
        for i in range(args.changes):
            body = {"uri": f"/adm/{i}", "upstream_id": "u"}
            t = time.monotonic()
            st, data = post(admin, f"/apisix/admin/routes/adm{i}", body,
                            {"X-API-KEY": key, "Content-Type": "application/json"}, method="PUT")
            writes.append(time.monotonic() - t)
            if st not in (200, 201):
                raise SystemExit(f"admin PUT answered {st}: {data[:200]}")
        print(f"admin PUT through etcd until the reply ({args.changes} runs): "
              f"median {statistics.median(writes) * 1000:.1f} ms, max {max(writes) * 1000:.1f} ms")
        time.sleep(2)
        print(f"RSS after the changes: {rss_mb(gw.pid):.1f} MB")
        print(f"load average: {os.getloadavg()[0]:.2f}")
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGKILL)
            p.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def post_ok(port):
    try:
        st, _ = post(port, "/v3/kv/range", {"key": b64("/")}, timeout=2)
        return st == 200
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(main())
