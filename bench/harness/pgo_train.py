"""Training load for scripts/build-pgo.sh: `python3 -m harness.pgo_train BINARY SECONDS`
(from bench/). Runs the instrumented Portico build under S1's and S2's loads (a plain
proxied request, then one Lua access plugin) and stops it with SIGTERM, so that it writes
its profile at exit."""

import sys

from . import load, peers, system
from .scenarios_proxy import portico_resources, read_lua, serverless_access


def main(argv):
    binary, seconds = argv[0], int(argv[1]) if len(argv) > 1 else 20
    origin = peers.Origin().start()
    try:
        confs = [("pgo-plain", 18080, portico_resources()),
                 ("pgo-lua", 18090, portico_resources({"plugins": serverless_access(read_lua("s2-access.lua"))}))]
        for name, port, resources in confs:
            p = peers.Portico(name, port, resources, bin=binary).start()
            res = load.wrk(p.url("/"), seconds)
            print(f"{name}: {res['requests']} requests", flush=True)
            # SIGTERM, and time for the exit handlers that write the profile.
            p.stop()
    finally:
        origin.stop()
        system.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
