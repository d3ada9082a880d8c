#!/usr/bin/env bash
# Runs every test: unit tests of each crate and the end-to-end suite (tests/e2e), which
# starts the real `portico` binary against real HTTP backends on loopback ports.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo test --workspace --all-targets "$@"
