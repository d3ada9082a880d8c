#!/usr/bin/env bash
# Builds and runs portico with the default configuration in conf/.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec cargo run --release -p portico -- -c conf/portico.yaml "$@"
