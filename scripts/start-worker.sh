#!/usr/bin/env bash
# Start one mailpipe worker.
#
#   scripts/start-worker.sh [--background] CONSUMER [worker.py options...]
#
# In the foreground (the default, for systemd, supervisord, runit or a container) the worker replaces
# this shell, so the supervisor's SIGTERM reaches it directly: it stops reading, lets in-flight handlers
# finish (MAILPIPE_SHUTDOWN_TIMEOUT_S), settles them and exits 0. --background detaches it instead and
# writes $MAILPIPE_RUN_DIR/worker-CONSUMER.pid and .log, for scripts/stop-worker.sh.
#
# CONSUMER must be unique per worker and stable across restarts: a restarted worker takes over its own
# pending entries at once. Settings come from MAILPIPE_* variables or .env in the checkout.
# Exit codes: those of worker.py in the foreground (0 stopped, 2 configuration, 3 Redis unreachable);
# with --background 0 started, 1 already running or died at start, 2 usage.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

BACKGROUND=0
if [[ "${1:-}" == "--background" ]]; then
  BACKGROUND=1
  shift
fi
if [[ $# -lt 1 || "$1" == -* ]]; then
  echo "usage: $(basename "$0") [--background] CONSUMER [worker.py options...]" >&2
  exit 2
fi
consumer="$1"
shift
check_name "$consumer"
start_process "worker-$consumer" "--consumer $consumer" \
  "$MAILPIPE_PYTHON" "$MAILPIPE_HOME/worker.py" --consumer "$consumer" "$@"
