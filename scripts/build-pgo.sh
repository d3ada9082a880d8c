#!/usr/bin/env bash
# Builds a profile-guided optimised portico (issue 17): an instrumented build, a training
# run under S1's and S2's loads (bench/harness/pgo_train.py: nginx origin, wrk), a merged
# profile, then the optimised build, at target/pgo/profiling/portico. The plain release
# build stays the default; this script exits without building when the machine cannot
# get an llvm-profdata matching rustc's LLVM.
#
#   scripts/build-pgo.sh [TRAINING_SECONDS]      # default 20 per load
#   CARGO_PROFILE_PROFILING_LTO=thin CARGO_PROFILE_PROFILING_CODEGEN_UNITS=4 scripts/build-pgo.sh
#                                                # the same on the quicker thin-LTO build
#   BENCH_PORTICO_BIN=target/pgo/profiling/portico BENCH_BASELINE_BIN=target/profiling/portico bench/run.sh S1 S2
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-20}
sudo_() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# The profile format follows LLVM's major version: rustc's own, not whichever is installed.
major=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
profdata=$(command -v "llvm-profdata-$major" || true)
if [ -z "$profdata" ] && command -v apt-get >/dev/null; then
    # A fresh machine's package index may be empty: without an update, llvm-N looks absent.
    apt-cache show "llvm-$major" >/dev/null 2>&1 || sudo_ apt-get update -qq >/dev/null 2>&1 || true
    if apt-cache show "llvm-$major" >/dev/null 2>&1; then
        sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "llvm-$major" >/dev/null
        profdata=$(command -v "llvm-profdata-$major" || true)
    fi
fi
if [ -z "$profdata" ]; then
    echo "build-pgo: no llvm-profdata for LLVM $major (rustc's); the plain build stays the default" >&2
    exit 0
fi
# The build's own tools (cmake for zlib-ng), as for every other build of the project.
scripts/setup.sh >/dev/null
# The training load needs the benchmark's tools (nginx for the origin, wrk).
for tool in nginx wrk; do
    command -v "$tool" >/dev/null || sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$tool" >/dev/null
done

# A fixed place for the raw profiles: the path is part of RUSTFLAGS, so a random one
# would rebuild every dependency on each run.
work="$PWD/target/pgo-data"
rm -rf "$work"
mkdir -p "$work"
echo "build-pgo: instrumented build"
RUSTFLAGS="-Cprofile-generate=$work/raw" cargo build -q --profile profiling -p portico --target-dir target/pgo-gen
echo "build-pgo: training (${seconds}s per load)"
(cd bench && python3 -m harness.pgo_train "$PWD/../target/pgo-gen/profiling/portico" "$seconds")
"$profdata" merge -o "$work/portico.profdata" "$work/raw"
echo "build-pgo: optimised build"
RUSTFLAGS="-Cprofile-use=$work/portico.profdata -Cllvm-args=-no-pgo-warn-mismatch" \
    cargo build -q --profile profiling -p portico --target-dir target/pgo
echo "build-pgo: target/pgo/profiling/portico"
