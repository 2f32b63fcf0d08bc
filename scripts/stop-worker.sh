#!/usr/bin/env bash
# Stop a worker started with scripts/start-worker.sh --background.
#
#   scripts/stop-worker.sh CONSUMER [TIMEOUT_S]
#
# SIGTERM first (warm stop: in-flight handlers finish and are settled), then after TIMEOUT_S (default
# MAILPIPE_SHUTDOWN_TIMEOUT_S + 40, i.e. 70) a cold stop. A cold stop loses nothing: unsettled entries
# stay pending in Redis and the worker takes them over when it starts again under the same name.
# Workers under systemd are stopped by systemd (KillSignal=SIGTERM), not by this script.
# Exit codes: 0 stopped or not running, 2 usage.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

if [[ $# -lt 1 || $# -gt 2 ]]; then
  echo "usage: $(basename "$0") CONSUMER [TIMEOUT_S]" >&2
  exit 2
fi
check_name "$1"
default_timeout=$(( ${MAILPIPE_SHUTDOWN_TIMEOUT_S:-30} + 40 ))
timeout="${2:-$default_timeout}"
[[ "$timeout" =~ ^[0-9]+$ ]] || die 2 "TIMEOUT_S must be a whole number of seconds"
stop_process "worker-$1" "--consumer $1" "$timeout"
