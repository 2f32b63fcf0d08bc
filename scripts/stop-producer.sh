#!/usr/bin/env bash
# Stop a producer started with scripts/start-producer.sh --background.
#
#   scripts/stop-producer.sh [TIMEOUT_S]
#
# SIGTERM first (the current batch is published with its checkpoint, leases are released), then after
# TIMEOUT_S (default 60) a cold stop: publish and checkpoint are one atomic step, so nothing is lost or
# published twice; the leases then expire by themselves (MAILPIPE_LEASE_TTL_S).
# Exit codes: 0 stopped or not running, 2 usage.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

if [[ $# -gt 1 ]]; then
  echo "usage: $(basename "$0") [TIMEOUT_S]" >&2
  exit 2
fi
timeout="${1:-60}"
[[ "$timeout" =~ ^[0-9]+$ ]] || die 2 "TIMEOUT_S must be a whole number of seconds"
stop_process "producer" "producer.py" "$timeout"
