#!/usr/bin/env bash
# The run command: sets up .venv, starts an embedded Redis unless MAILPIPE_REDIS_URL is set, publishes the
# bundled sample emails, runs a worker until the stream is drained and prints a summary.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/python -m mailpipe demo "$@"
