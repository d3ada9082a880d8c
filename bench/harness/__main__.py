"""bench/run.sh's driver: `python3 -m harness [S1 S2 ...]` (from bench/). Starts the
origin, runs the named scenarios (all by default), writes bench/results/<date>-<S>.md
and docs/benchmarks.md, prints the target table, and stops everything it started, also
on Ctrl-C, SIGTERM or failure."""

import datetime
import os
import signal
import sys
import traceback

from . import (load, peers, report, scenarios_cache, scenarios_kernel, scenarios_limits, scenarios_ops,
               scenarios_proxy, scenarios_tls, system)

SCENARIOS = {**scenarios_proxy.SCENARIOS, **scenarios_ops.SCENARIOS, **scenarios_limits.SCENARIOS,
             **scenarios_tls.SCENARIOS, **scenarios_cache.SCENARIOS, **scenarios_kernel.SCENARIOS}


def _terminate(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv):
    names = [a.upper() for a in argv] or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        print(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    started = datetime.datetime.now(datetime.timezone.utc)
    command = "bench/run.sh" + "".join(f" {a}" for a in argv)
    done = []
    failed = []
    run_state = {}  # figures one scenario leaves for a later one (S1's p99 for S6)
    try:
        origin = peers.Origin().start()
        versions = [
            peers.Portico("version", 0, None).version(),
            origin.version(),
            peers.Haproxy("version", 0, "", "").version(),
            "ngx_lua (libnginx-mod-http-lua) " + system.run(
                ["dpkg-query", "-W", "-f", "${Version}", "libnginx-mod-http-lua"], check=False),
            system.run(["wrk", "-v"], check=False).split("Copyright")[0].strip(),
            (system.run([load.oha_path(), "--version"]).strip()
             if os.path.exists(load.oha_path()) else "oha: not installed"),
        ]
        for name in names:
            print(f"== {name} ({datetime.datetime.now():%H:%M:%S})", flush=True)
            try:
                s = SCENARIOS[name](run_state)
            except KeyboardInterrupt:
                raise
            except Exception as e:  # noqa: BLE001 - one broken scenario must not lose the others
                traceback.print_exc()
                failed.append(name)
                s = report.Scenario(name, "failed to run", "")
                s.note(f"The scenario stopped with an error: `{e}`")
                s.check(f"{name} ran", "error", False)
            done.append(s)
            for target, measured, passed in s.checks:
                mark = "      " if passed is None else ("ok    " if passed else "MISSED")
                print(f"   {mark} {target}: {measured}", flush=True)
        report.write(done, versions, command, started, full=names == list(SCENARIOS))
    except KeyboardInterrupt:
        print("interrupted: stopping everything started", file=sys.stderr)
        return 130
    finally:
        system.stop_all()
    print()
    print(report.summary_table(done))
    print(f"\nresults: bench/results/{started:%Y-%m-%d}-S*.md and docs/benchmarks.md")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
