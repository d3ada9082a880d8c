#!/usr/bin/env bash
# Installs the system tools the build and the tests need beyond the Rust toolchain, each
# only when missing (safe to run repeatedly):
# - cmake: Pingora's zlib-ng backend (libz-ng-sys) builds its C code with it;
# - redis-server: the e2e tests of the `redis` rate-limit policy start a real one;
# - promtool (Debian's prometheus): the metrics tests validate the exposition with it;
# - python3-grpcio: the gRPC e2e tests run a real gRPC server and client in Python.
# - etcd (Debian's etcd-server): the cluster-mode e2e tests start a real one.
# - mariadb-server: the Lua MySQL-client e2e test (lua_db_clients) starts a real mariadbd.
set -euo pipefail
missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
# Debian's own python3 (the tests prefer it over a pyenv/venv one on PATH): apt's
# python3-grpcio is on its path only.
debian_python=/usr/bin/python3
[ -x "$debian_python" ] || debian_python=python3
"$debian_python" -c 'import grpc' >/dev/null 2>&1 || missing+=(python3-grpcio)
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
command -v mariadbd >/dev/null 2>&1 || missing+=(mariadb-server)
[ ${#missing[@]} -eq 0 ] && exit 0
echo "portico: installing ${missing[*]}" >&2
sudo_cmd=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then sudo_cmd="sudo"; else
    echo "portico: please install ${missing[*]} (e.g. 'apt-get install ${missing[*]}') and retry" >&2
    exit 1
  fi
fi
if command -v apt-get >/dev/null 2>&1; then
  $sudo_cmd apt-get update -qq
  # Services are only used by tests that start their own instance on an ephemeral port;
  # policy-rc.d keeps Debian from starting the packaged system service.
  DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The packaged redis service is not wanted (tests start their own); stop it if started.
  if command -v systemctl >/dev/null 2>&1; then
    $sudo_cmd systemctl disable --now redis-server >/dev/null 2>&1 || true
    $sudo_cmd systemctl disable --now etcd >/dev/null 2>&1 || true
    $sudo_cmd systemctl disable --now mariadb >/dev/null 2>&1 || true
  fi
elif command -v dnf >/dev/null 2>&1; then
  $sudo_cmd dnf install -y "${missing[@]}"
elif command -v brew >/dev/null 2>&1; then
  brew install "${missing[@]}"
else
  echo "portico: please install ${missing[*]} with your package manager and retry" >&2
  exit 1
fi
command -v cmake >/dev/null
