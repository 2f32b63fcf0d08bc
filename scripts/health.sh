#!/usr/bin/env bash
# Ask a mailpipe process (worker, producer, exporter) whether it is alive or ready, for supervisors,
# load balancers, container health checks and cron.
#
#   scripts/health.sh [--ready] [--port PORT] [--host HOST] [--timeout SECONDS]
#
# GET /health (the process serves HTTP: alive) or, with --ready, /ready (it can do its work: Redis
# reachable, circuit breaker closed, not stopping). The process must run with a metrics port
# (MAILPIPE_METRICS_PORT / --metrics-port; the exporter serves 9108 by default).
# Defaults: --port $MAILPIPE_METRICS_PORT, --host $MAILPIPE_METRICS_HOST or 127.0.0.1, --timeout 5.
# Exit codes: 0 healthy/ready, 1 answered but unhealthy/not ready (the reason is printed),
# 2 nothing answered (not running, wrong port, timed out), 64 usage.
set -euo pipefail

path=/health
host="${MAILPIPE_METRICS_HOST:-127.0.0.1}"
port="${MAILPIPE_METRICS_PORT:-}"
timeout=5
usage() { echo "usage: $(basename "$0") [--ready] [--port PORT] [--host HOST] [--timeout SECONDS]" >&2; exit 64; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --ready) path=/ready ;;
    --port) [[ $# -ge 2 ]] || usage; port="$2"; shift ;;
    --host) [[ $# -ge 2 ]] || usage; host="$2"; shift ;;
    --timeout) [[ $# -ge 2 ]] || usage; timeout="$2"; shift ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) usage ;;
  esac
  shift
done
[[ "$port" =~ ^[0-9]+$ ]] || { echo "$(basename "$0"): no port: pass --port or set MAILPIPE_METRICS_PORT" >&2; exit 64; }
[[ "$host" == 0.0.0.0 ]] && host=127.0.0.1   # a process listening everywhere answers locally too
[[ "$host" == *:* && "$host" != \[* ]] && host="[$host]"
url="http://$host:$port$path"

body_file="$(mktemp)"
trap 'rm -f "$body_file"' EXIT
set +e
code="$(curl --silent --show-error --max-time "$timeout" --output "$body_file" --write-out '%{http_code}' "$url" 2>/dev/null)"
rc=$?
set -e
body="$(head -c 300 "$body_file" | tr -d '\r')"
if [[ $rc -ne 0 || "$code" == 000 ]]; then
  echo "unreachable: nothing answered at $url (curl exit $rc)"
  exit 2
fi
if [[ "$code" == 200 ]]; then
  echo "ok: $url ${body:+($body)}"
  exit 0
fi
echo "unhealthy: $url answered HTTP $code${body:+: $body}"
exit 1
