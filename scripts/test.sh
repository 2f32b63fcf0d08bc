#!/usr/bin/env bash
# The test command: sets everything up, then lint, type-check and the whole test suite.
# Extra arguments go to pytest (e.g. --skip-slow locally, -k NAME).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh --dev
.venv/bin/ruff check src tests examples scripts producer.py worker.py
.venv/bin/mypy src
exec .venv/bin/python -m pytest "$@"
