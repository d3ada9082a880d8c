"""K1: where a plain proxied request's kernel time goes (issue 17). For nginx, the floor
proxy and Portico under the same uncapped wrk load (S1's setup): user and system CPU per
request, context switches per request (voluntary: the worker went to sleep in epoll;
involuntary: it was preempted), page faults per request, and the syscalls per request
counted by `strace -c -f` in a separate run (strace slows the process down, so its run
gives counts, not times)."""

import os
import re
import subprocess
import time

from . import load, measure, system
from .peers import BASELINE_BIN, Floor, Nginx, PingoraCodecFloor, PingoraFloor, Portico
from .report import Scenario
from .scenarios_proxy import ORIGIN, nginx_server, nginx_upstream, portico_resources, started, stop_all

SECONDS = int(os.environ.get("BENCH_SECONDS", "5"))
STRACE_SECONDS = 3


def _task_counts(pids):
    """(voluntary, involuntary) context switches over every thread of these processes."""
    vol = invol = 0
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/status") as f:
                    text = f.read()
            except OSError:
                continue
            m = re.search(r"^voluntary_ctxt_switches:\s+(\d+)", text, re.M)
            n = re.search(r"^nonvoluntary_ctxt_switches:\s+(\d+)", text, re.M)
            vol += int(m.group(1)) if m else 0
            invol += int(n.group(1)) if n else 0
    return vol, invol


def _stat(pids):
    """(minor faults, utime s, stime s) summed over these processes."""
    minflt = ut = st = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        minflt += int(fields[7])
        ut += int(fields[11])
        st += int(fields[12])
    return minflt, ut / system.CLK_TCK, st / system.CLK_TCK


def _threads(pids):
    return sum(len(os.listdir(f"/proc/{p}/task")) for p in pids if os.path.isdir(f"/proc/{p}/task"))


def counters(peer):
    """One uncapped wrk run; per-request figures from /proc."""
    pids = peer.pids()
    v0, i0 = _task_counts(pids)
    f0, u0, s0 = _stat(pids)
    res = load.wrk(peer.url("/"), SECONDS, conns=measure.CONNS)
    v1, i1 = _task_counts(pids)
    f1, u1, s1 = _stat(pids)
    n = max(res["requests"], 1)
    return {
        "rps": res["rps"],
        "user_us": (u1 - u0) / n * 1e6,
        "sys_us": (s1 - s0) / n * 1e6,
        "vol": (v1 - v0) / n,
        "invol": (i1 - i0) / n,
        "faults": (f1 - f0) / n,
        "threads": _threads(pids),
    }


def syscalls(peer):
    """Syscalls per request by name, from `strace -c -f` attached during a wrk run."""
    pids = peer.pids()
    out_path = os.path.join("/tmp", f"k1-strace-{peer.name}.txt")
    args = ["strace", "-c", "-f", "-o", out_path]
    for p in pids:
        args += ["-p", str(p)]
    tracer = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # strace attaches to every thread before the load starts
    res = load.wrk(peer.url("/"), STRACE_SECONDS, conns=measure.CONNS)
    tracer.send_signal(2)
    tracer.wait(timeout=30)
    n = max(res["requests"], 1)
    counts = {}
    with open(out_path) as f:
        for line in f:
            parts = line.split()
            # "% time seconds usecs/call calls [errors] syscall"
            if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] != "total":
                counts[parts[-1]] = int(parts[3]) / n
    return counts


def k1_kernel(run):
    """K1: per-request kernel work of nginx, the floors and Portico."""
    s = Scenario("K1", "kernel work per request",
                 "S1's setup (one route, one origin node, keep-alive both sides), uncapped, "
                 "wrk with the same connections: CPU split into user and system time, "
                 "context switches, page faults and threads from /proc, then syscalls per "
                 "request from `strace -c -f` in a separate run.")
    ps = started(
        Nginx("nginx", 18081, nginx_upstream([ORIGIN]) + nginx_server(18081)),
        Floor("floor", 18084, ORIGIN),
        PingoraFloor("pingora", 18085, ORIGIN),
        PingoraCodecFloor("pingora-codec", 18086, ORIGIN, "pooled"),
        PingoraCodecFloor("pingora-codec-owned", 18087, ORIGIN, "owned"),
        PingoraCodecFloor("pingora-hooks", 18088, ORIGIN, "hooks"),
        Portico("portico", 18080, portico_resources()),
        *([Portico("portico-base", 18070, portico_resources(), bin=BASELINE_BIN)] if BASELINE_BIN else []),
    )
    if BASELINE_BIN:
        s.note(f"`portico-base` is `{BASELINE_BIN}`, measured in the same run.")
    try:
        for p in ps:
            load.wrk(p.url("/"), 2, conns=measure.CONNS)  # warm-up: pools, allocator
        figures = {p.name: counters(p) for p in ps}
        calls = {p.name: syscalls(p) for p in ps}
        # The same load with a niced busy loop on the client core: the load generator and
        # the origin then never sleep in an idle vCPU, and each wake-up a proxy's `send`
        # does (charged to the proxy's system time) preempts the loop instead.
        spinner = subprocess.Popen(["taskset", "-c", system.CLIENT_CORE, "nice", "-n", "19",
                                    "sh", "-c", "while :; do :; done"])
        try:
            busy = {p.name: counters(p) for p in ps}
        finally:
            spinner.kill()
            spinner.wait()
        s.table(["peer", "req/s (uncapped)", "user µs/req", "sys µs/req", "voluntary cs/req",
                 "involuntary cs/req", "minor faults/req", "threads"],
                [[name, f"{f['rps']:.0f}", f"{f['user_us']:.1f}", f"{f['sys_us']:.1f}",
                  f"{f['vol']:.3f}", f"{f['invol']:.3f}", f"{f['faults']:.4f}", f["threads"]]
                 for name, f in figures.items()])
        s.table(["peer", "user µs/req", "sys µs/req", "sys µs/req, idle client core"],
                [[name, f"{f['user_us']:.1f}", f"{f['sys_us']:.1f}", f"{figures[name]['sys_us']:.1f}"]
                 for name, f in busy.items()],
                caption="the same with a busy loop (nice 19) on the client core")
        names = sorted({c for v in calls.values() for c, n in v.items() if n >= 0.01},
                       key=lambda c: -max(v.get(c, 0) for v in calls.values()))
        s.table(["syscall"] + [p.name for p in ps],
                [[c] + [f"{calls[p.name].get(c, 0):.3f}" for p in ps] for c in names],
                caption="syscalls per request (strace -c -f; ≥ 0.01 per request in some peer)")
        for p in ps:
            total = sum(calls[p.name].values())
            s.check(f"{p.name}: syscalls per request", f"{total:.2f}", None)
    finally:
        stop_all(ps)
    return s


SCENARIOS = {"K1": k1_kernel}
