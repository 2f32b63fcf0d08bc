#!/usr/bin/env bash
# Start the mailpipe producer (IMAP -> stream).
#
#   scripts/start-producer.sh [--background] [producer.py options...]
#
# Foreground by default (systemd, supervisord, containers): the producer replaces this shell, so a
# SIGTERM finishes the current batch, releases the mailbox leases and exits 0. --background detaches it
# and writes $MAILPIPE_RUN_DIR/producer.pid and .log, for scripts/stop-producer.sh. Run one producer per
# set of mailboxes; a second one on the same mailbox waits as a standby (mailbox leases).
# Exit codes: those of producer.py in the foreground; with --background 0 started, 1 already running or
# died at start, 2 usage.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

BACKGROUND=0
if [[ "${1:-}" == "--background" ]]; then
  BACKGROUND=1
  shift
fi
start_process "producer" "producer.py" "$MAILPIPE_PYTHON" "$MAILPIPE_HOME/producer.py" "$@"
