#!/usr/bin/env bash
# Installs the Debian packages thumbgen needs, only those missing; as root it installs them,
# otherwise it names them and fails. Usage: tools/syspkgs.sh PYTHON [EXTRA_PACKAGE…]
#   libsystemd-dev, pkg-config, gcc, pythonX.Y-dev: systemd-python is compiled at install time
#   pythonX.Y-venv: `python -m venv` needs ensurepip, which Debian ships apart
#   systemd: systemd-analyze checks the unit file in the tests
#   extra ones the caller names: libvips-tools (make bench), bindfs (make test: a FUSE mount
#   stands in for a network share)
set -euo pipefail
python=${1:-python3.11}; shift || true
missing=()
need() { dpkg -s "$1" >/dev/null 2>&1 || missing+=("$1"); }

for pkg in libsystemd-dev pkg-config systemd "$@"; do need "$pkg"; done
command -v gcc >/dev/null 2>&1 || missing+=(gcc)
if ! command -v "$python" >/dev/null 2>&1; then
  missing+=("$python" "$python-venv" "$python-dev")
else
  "$python" -c 'import ensurepip' >/dev/null 2>&1 || missing+=("$python-venv")
  "$python" -c 'import os, sysconfig; assert os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h"))' \
    >/dev/null 2>&1 || missing+=("$python-dev")
fi

[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "missing Debian packages: ${missing[*]}" >&2
  echo "run as root: apt-get install ${missing[*]}" >&2
  exit 1
fi
