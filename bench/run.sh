#!/usr/bin/env bash
# Benchmarks Portico side by side with nginx, nginx + ngx_lua and HAProxy on this machine.
#
#   bench/run.sh [S1 ... S13]    # all scenarios when none is named
#
# Installs what it needs if missing (Debian packages; oha from crates.io), builds
# portico (--profile profiling), runs the scenarios (bench/harness/), writes
# bench/results/<date>-<scenario>.md and docs/benchmarks.md, and prints the ratio
# table. Knobs (environment): BENCH_ROUNDS (5), BENCH_SECONDS (5), BENCH_CAP_PERCENT (40),
# BENCH_RATE (5000), BENCH_SOAK_SECONDS (600), BENCH_IDLE_CONNS (10000),
# BENCH_BASELINE_BIN (an earlier build run beside the current one in S1, S2),
# BENCH_TLS_IDLE_CONNS (5000: S11's idle TLS connections).
# Needs root for the cgroup CPU quota and a machine with at least 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo_() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v nginx >/dev/null || missing+=(nginx)
[ -f /usr/lib/nginx/modules/ngx_http_lua_module.so ] || missing+=(libnginx-mod-http-lua lua-resty-core)
dpkg -s lua-cjson >/dev/null 2>&1 || missing+=(lua-cjson)
command -v haproxy >/dev/null || missing+=(haproxy)
command -v wrk >/dev/null || missing+=(wrk)
command -v openssl >/dev/null || missing+=(openssl)
command -v taskset >/dev/null || missing+=(util-linux)
if [ ${#missing[@]} -gt 0 ]; then
    echo "bench: installing ${missing[*]}"
    sudo_ apt-get update -qq
    sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
if ! command -v oha >/dev/null && [ ! -x "$HOME/.cargo/bin/oha" ]; then
    echo "bench: installing oha (fixed-rate load generator) from crates.io; this takes a few minutes"
    cargo install oha --locked --no-default-features --features rustls
fi
if [ "$(nproc)" -lt 2 ]; then
    echo "bench: needs at least 2 cores (proxy on one, load generator and origin on the other)" >&2
    exit 1
fi

scripts/setup.sh >/dev/null
# The profiling profile: release code with symbols, so profilers (perf, callgrind) can
# name functions; the shipped release binary is stripped.
cargo build --profile profiling -q -p portico
cargo bench -q -p portico --bench core --no-run 2>/dev/null
# The floor of S1 (issue 17): a tokio + httparse proxy with no Pingora, its own crate.
(cd bench/floor-proxy && cargo build --release -q)
# The Pingora floor of S1: a bare `ProxyHttp` on Portico's Pingora and build profile.
(cd bench/pingora-floor && cargo build --release -q)

cd bench
exec python3 -m harness "$@"
