#!/usr/bin/env bash
# Sets up .venv with mailpipe and its dependencies; with --dev also the test tools and, when run as root
# with apt-get available, the real servers the test suite talks to (redis-server, dovecot, prometheus).
# Safe to run repeatedly: it only reinstalls when a requirements file changed.
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0
[ "${1:-}" = "--dev" ] && dev=1

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "mailpipe needs Python 3.11 or newer (found: $("$python" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
  exit 1
fi

if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi

reqs=requirements.txt
[ "$dev" = 1 ] && reqs=requirements-dev.txt
hash=$(cat requirements.txt requirements-dev.txt pyproject.toml | sha256sum | cut -c1-16)
stamp=".venv/.installed-$hash-$dev"
# a dev install includes the runtime one
if [ ! -f "$stamp" ] && ! { [ "$dev" = 0 ] && [ -f ".venv/.installed-$hash-1" ]; }; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$reqs"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
  rm -f .venv/.installed-*
  touch "$stamp"
fi

if [ "$dev" = 1 ]; then
  missing=()
  command -v redis-server >/dev/null || missing+=(redis-server)
  command -v dovecot >/dev/null || missing+=(dovecot-imapd)
  { command -v prometheus >/dev/null && command -v promtool >/dev/null; } || missing+=(prometheus)
  command -v mbsync >/dev/null || missing+=(isync)
  command -v openssl >/dev/null || missing+=(openssl)
  if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "installing test servers: ${missing[*]}" >&2
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq >/dev/null
      apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
      echo "note: ${missing[*]} not installed (needs root + apt-get); tests needing them skip locally, fail in CI" >&2
    fi
  fi
fi
