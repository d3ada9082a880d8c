#!/usr/bin/env bash
# Installs the one system tool the build needs beyond the Rust toolchain: cmake
# (Pingora's zlib-ng backend, libz-ng-sys, builds its C code with it).
# Safe to run repeatedly; does nothing when cmake is already present.
set -euo pipefail
if command -v cmake >/dev/null 2>&1; then
  exit 0
fi
echo "portico: cmake is required to build Pingora (libz-ng-sys); installing it" >&2
sudo_cmd=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then sudo_cmd="sudo"; else
    echo "portico: please install cmake (e.g. 'apt-get install cmake') and retry" >&2
    exit 1
  fi
fi
if command -v apt-get >/dev/null 2>&1; then
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq cmake >/dev/null
elif command -v dnf >/dev/null 2>&1; then
  $sudo_cmd dnf install -y cmake
elif command -v brew >/dev/null 2>&1; then
  brew install cmake
else
  echo "portico: please install cmake with your package manager and retry" >&2
  exit 1
fi
command -v cmake >/dev/null
