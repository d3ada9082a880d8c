"""Uncapped A/B of Portico builds on the Lua scenarios: CPU per request from /proc.

    python3 bench/uncapped_ab.py S2 /path/to/portico-a,/path/to/portico-b
    python3 bench/uncapped_ab.py S3 /path/to/portico-a,/path/to/portico-b

Each build runs twice, without Lua and with the scenario's Lua (S2: one access function;
S3: the five plugin modules), all in the same rounds under uncapped wrk. It prints, per
build, the medians of CPU µs per request (user + system, and user alone) and the Lua's
extra per round. Without the CPU quota the figures are closer to the code's own cost
than `bench/run.sh`'s, but a single run still varies by ±2 µs per round on a 2-core VM:
run it more than once, with the builds in both orders. `PERF=/path/to/out.data` also
records a profile of the first build's Lua peer (`CG=dwarf` for DWARF call graphs).

Knobs: `BENCH_ROUNDS` (10), `BENCH_SECONDS` (4).
"""
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.chdir(os.path.dirname(os.path.abspath(__file__)))

from harness import load, measure, peers, system  # noqa: E402
from harness.scenarios_kernel import _stat  # noqa: E402
from harness.scenarios_proxy import (  # noqa: E402
    S3_PLUGINS, portico_resources, read_lua, s3_confs, serverless_access, started)


def lua_resources(scenario):
    if scenario == "S2":
        return portico_resources({"plugins": serverless_access(read_lua("s2-access.lua"))}), None
    modules = [{"id": n, "code": read_lua(f"{n}.lua")} for n in S3_PLUGINS]
    return portico_resources({"plugins": s3_confs()}, lua_plugins=modules), "s3-key.lua"


def median(xs):
    return sorted(xs)[len(xs) // 2]


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("S2", "S3"):
        sys.exit(__doc__)
    scenario, bins = sys.argv[1], sys.argv[2].split(",")
    rounds = int(os.environ.get("BENCH_ROUNDS", "10"))
    secs = int(os.environ.get("BENCH_SECONDS", "4"))
    origin = peers.Origin().start()
    ps = []
    try:
        port = 18080
        for b in bins:
            resources, script = lua_resources(scenario)
            ps.append((peers.Portico(f"p{port}", port, portico_resources(), bin=b), script))
            ps.append((peers.Portico(f"p{port + 10}", port + 10, resources, bin=b), script))
            port += 20
        started(*(p for p, _ in ps))
        res = {p.name: [] for p, _ in ps}
        for _ in range(rounds):
            for p, script in ps:
                pids = p.pids()
                _, u0, s0 = _stat(pids)
                w = load.wrk(p.url("/"), secs, conns=measure.CONNS, script=script)
                _, u1, s1 = _stat(pids)
                n = max(w["requests"], 1)
                res[p.name].append(((u1 - u0) / n * 1e6, (s1 - s0) / n * 1e6, w["non2xx"]))
        for i, b in enumerate(bins):
            plain, lua = res[ps[2 * i][0].name], res[ps[2 * i + 1][0].name]
            extra = [(lu + ls) - (pu + pst) for (pu, pst, _), (lu, ls, _) in zip(plain, lua)]
            user_extra = [lu - pu for (pu, _, _), (lu, _, _) in zip(plain, lua)]
            print(f"{b}: plain {median([u + s for u, s, _ in plain]):.2f} µs "
                  f"(user {median([u for u, _, _ in plain]):.2f}); "
                  f"with Lua {median([u + s for u, s, _ in lua]):.2f} µs "
                  f"(user {median([u for u, _, _ in lua]):.2f}); "
                  f"extra per round {[round(x, 2) for x in extra]}, median {median(extra):.2f}; "
                  f"user extra {median(user_extra):.2f}; non-2xx {sum(x[2] for x in lua)}")
        out = os.environ.get("PERF")
        if out:
            peer, script = ps[1]
            rec = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "--call-graph",
                                    os.environ.get("CG", "fp"), "-p", str(peer.pids()[0]),
                                    "-o", out, "--", "sleep", "6"])
            time.sleep(0.5)
            load.wrk(peer.url("/"), 5, conns=measure.CONNS, script=script)
            rec.wait()
    finally:
        for p, _ in ps:
            p.stop()
        origin.stop()
        system.stop_all()


if __name__ == "__main__":
    main()
