# Shared by the start/stop scripts (sourced, not run). Resolves the checkout, the Python to use and
# where pid and log files go.
#   MAILPIPE_PYTHON   interpreter (default: .venv/bin/python of this checkout, else python3)
#   MAILPIPE_RUN_DIR  pid and log files of --background processes (default: .mailpipe/run in the checkout)

MAILPIPE_HOME="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "${MAILPIPE_PYTHON:-}" ]]; then
  if [[ -x "$MAILPIPE_HOME/.venv/bin/python" ]]; then
    MAILPIPE_PYTHON="$MAILPIPE_HOME/.venv/bin/python"
  else
    MAILPIPE_PYTHON="$(command -v python3 || true)"
  fi
fi
MAILPIPE_RUN_DIR="${MAILPIPE_RUN_DIR:-$MAILPIPE_HOME/.mailpipe/run}"

die() {  # die CODE MESSAGE
  echo "$(basename "$0"): $2" >&2
  exit "$1"
}

check_name() {  # the names mailpipe accepts (they end up in file names here)
  [[ "$1" =~ ^[A-Za-z0-9_.-]{1,100}$ ]] || die 2 "invalid name '$1': use 1-100 characters from A-Z a-z 0-9 _ . -"
}

# pid_alive PIDFILE PATTERN: prints the pid if it runs a command line containing PATTERN (so a pid the
# kernel reused for another program is never signalled).
pid_alive() {
  local pid
  [[ -f "$1" ]] || return 1
  pid="$(cat "$1" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [[ -r "/proc/$pid/cmdline" ]] || { kill -0 "$pid" 2>/dev/null || return 1; echo "$pid"; return 0; }
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$2" || return 1
  echo "$pid"
}

# start_process NAME PATTERN CMD...: foreground (exec) by default; with BACKGROUND=1 detach, write
# RUN_DIR/NAME.pid and append output to RUN_DIR/NAME.log.
start_process() {
  local name="$1" pattern="$2"
  shift 2
  [[ -n "$MAILPIPE_PYTHON" ]] || die 2 "no Python found: run scripts/bootstrap.sh or set MAILPIPE_PYTHON"
  cd "$MAILPIPE_HOME"
  if [[ "${BACKGROUND:-0}" != 1 ]]; then
    exec "$@"
  fi
  mkdir -p "$MAILPIPE_RUN_DIR"
  chmod 700 "$MAILPIPE_RUN_DIR"
  local pidfile="$MAILPIPE_RUN_DIR/$name.pid" logfile="$MAILPIPE_RUN_DIR/$name.log" pid
  if pid="$(pid_alive "$pidfile" "$pattern")"; then
    die 1 "$name is already running (pid $pid)"
  fi
  umask 077
  setsid "$@" >>"$logfile" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$pidfile"
  # A process that dies within its first seconds met a bad configuration or an unreachable Redis:
  # report that here rather than leave a stale pid file (MAILPIPE_START_CHECK_S, default 3).
  local checks=$(( ${MAILPIPE_START_CHECK_S:-3} * 10 ))
  while (( checks > 0 )); do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$pidfile"
      local rc=0
      wait "$pid" || rc=$?
      echo "$(basename "$0"): $name exited at start (exit $rc); last lines of $logfile:" >&2
      tail -n 5 "$logfile" >&2
      exit 1
    fi
    sleep 0.1
    checks=$((checks - 1))
  done
  echo "started $name (pid $pid), log: $logfile"
}

# stop_process NAME PATTERN TIMEOUT: SIGTERM (warm stop: in-flight work finishes), wait up to TIMEOUT
# seconds, then a second SIGTERM (cold stop: unsettled entries stay pending for recovery) and SIGKILL.
stop_process() {
  local name="$1" pattern="$2" timeout="$3"
  local pidfile="$MAILPIPE_RUN_DIR/$name.pid" pid waited=0
  if ! pid="$(pid_alive "$pidfile" "$pattern")"; then
    rm -f "$pidfile"
    echo "$name is not running"
    return 0
  fi
  kill -TERM "$pid"
  while kill -0 "$pid" 2>/dev/null; do
    if (( waited >= timeout * 10 )); then
      echo "$name (pid $pid) did not stop within ${timeout}s: cold stop" >&2
      kill -TERM "$pid" 2>/dev/null || true
      sleep 2
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
  rm -f "$pidfile"
  echo "stopped $name (pid $pid)"
}
