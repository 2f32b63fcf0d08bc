"""The bench's own virtualenv (bench/.venv) holding the peers, created from bench/requirements.txt.

Kept apart from the project's venv so the peers' dependencies never leak into mailpipe's, and recreated
only when bench/requirements.txt changes.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from bench.common import BENCH_DIR

VENV = BENCH_DIR / ".venv"
REQUIREMENTS = BENCH_DIR / "requirements.txt"


def python() -> Path:
    return VENV / "bin" / "python"


def ensure() -> Path:
    """Create or update the venv; raises RuntimeError with pip's last lines when it cannot."""
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:16]
    stamp = VENV / f".installed-{digest}"
    if stamp.exists():
        return python()
    if not python().exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    print(f"bench: installing the peers into {VENV} (once) ...", file=sys.stderr, flush=True)
    result = subprocess.run(
        [str(python()), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r",
         str(REQUIREMENTS)],
        capture_output=True, text=True, check=False,
    )
    if result.returncode != 0:
        tail = " | ".join((result.stderr or result.stdout).strip().splitlines()[-3:])
        raise RuntimeError(f"cannot install the peers from {REQUIREMENTS.name}: {tail}")
    for old in VENV.glob(".installed-*"):
        old.unlink()
    stamp.touch()
    return python()


def versions() -> dict[str, str | None]:
    """Versions of the peers installed in the venv (None when the venv is missing)."""
    names = ("faststream", "taskiq", "taskiq-redis", "redis")
    if not python().exists():
        return {}
    code = (
        "import json; from importlib import metadata as m\n"
        f"print(json.dumps({{n: m.version(n) for n in {names!r}}}))"
    )
    result = subprocess.run([str(python()), "-c", code], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        return {}
    import json

    found: dict[str, str | None] = json.loads(result.stdout)
    return {f"peer:{name}": version for name, version in found.items()}
