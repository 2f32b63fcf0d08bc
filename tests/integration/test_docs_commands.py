"""Every command shown in the docs runs, against a real Redis holding a pipeline in a mid-run state.

The convention (README.md and docs/**/*.md):

- Commands go in fenced blocks marked ```console; each command line starts with ``$ `` (a line ending in
  ``\\`` continues on the next). Other lines of the block are sample output and are not checked.
- A command is expected to exit 0; a trailing ``# exit N`` comment expects N (e.g. a refusal without
  --yes). For ``redis-cli``, an error reply (ERR, WRONGTYPE, NOPERM, ...) counts as a failure.
- Values that differ per installation are written as placeholders, replaced here with real ones:
  ``<dead-letter-id>``, ``<stream-id>``, ``<consumer>``, ``<new-redis-url>``. An unknown placeholder fails.
- Commands run with bash in a scratch directory that links the checkout's files, with the checkout's
  .venv first on PATH (``mailpipe``, ``python``), ``MAILPIPE_REDIS_URL`` pointing at the test server
  (namespace ``mailpipe``, stream ``mail``, group ``workers``), and ``redis-cli`` talking to it.
- Commands that cannot run here (root, systemd, a mail provider, a running process's port) are listed in
  NOT_RUN with the reason; every entry must still match a command in the docs, so the list cannot rot.
- Commands outside ```console blocks are not run: the operator docs keep none there.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from mailpipe.keys import Keys
from tests.conftest import server_missing
from tests.ops_seed import Seed, seed_pipeline

ROOT = Path(__file__).resolve().parents[2]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
# Docs owned by operations: every command in them is in a console block.
OPERATOR_DOCS = [ROOT / "docs" / "OPERATIONS.md", ROOT / "docs" / "SCALING.md", ROOT / "docs" / "SECURITY.md",
                 *sorted((ROOT / "docs" / "runbooks").glob("*.md"))]

NOT_RUN: list[tuple[str, str]] = [
    (r"^bash scripts/run\.sh", "the demo itself; tests/e2e/test_demo_and_example.py runs it"),
    (r"^bash scripts/test\.sh", "the test suite itself"),
    (r"^sudo ", "needs root and systemd on the host; the units are checked by tests/e2e/test_shell_helpers.py"),
    (r"^curl ", "needs a running process's metrics port; /status is tested with each process"),
    (r"^scripts/health\.sh ", "needs a running process's metrics port; tests/e2e/test_shell_helpers.py runs it"),
    (r"producer\.py --auth-", "needs an account at Google or Microsoft; tests/unit/test_oauth2_setup.py covers it"),
    (r"^redis-cli CONFIG SET appendonly", "would switch on AOF in the test server shared by the suite"),
    (r"producer\.py( --once --dry-run --start all| --mailbox .*| --start all --dry-run)?( *#.*)?$",
     "needs an IMAP account; tests/e2e/producer/test_producer_processes.py runs producer.py against Dovecot"),
    (r"producer\.py --metrics-port", "runs until stopped; tests/e2e/producer/test_producer_processes.py checks "
     "its /metrics, /ready and /status"),
    (r"producer\.py --source mbox:~", "a reader's own Takeout file; tests/integration/producer/ import mbox files"),
    (r"worker\.py --consumer [\w-]+( --handler examples\.classify:handle --concurrency 32| --metrics-port \d+)?"
     r"( *#.*)?$", "runs until stopped; tests/e2e/test_worker_processes.py runs worker.py processes"),
    (r"worker\.py --consumer w1 --handler myapp\.mail:handle", "myapp is the reader's own package"),
    (r"^python -m mailpipe exporter( *#.*)?$", "runs until stopped; tests/e2e/test_exporter_cli.py runs it"),
    (r"^prometheus --config\.file", "runs until stopped; tests/e2e/test_prometheus_e2e.py runs Prometheus"),
]
ERROR_REPLY = re.compile(r"^(\(error\) )?(ERR|WRONGTYPE|NOPERM|NOGROUP|NOSCRIPT|BUSYGROUP|MOVED|CROSSSLOT)\b", re.M)
PLACEHOLDER = re.compile(r"<[a-z][a-z-]*>")


@dataclass(frozen=True)
class DocCommand:
    path: Path
    line: int
    text: str
    expected_exit: int

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


@dataclass(frozen=True)
class Block:
    path: Path
    line: int
    commands: tuple[DocCommand, ...]


def parse_blocks(path: Path) -> list[Block]:
    blocks: list[Block] = []
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() != "```console":
            i += 1
            continue
        start, commands = i + 1, []
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            raw = lines[i].strip()
            if raw.startswith("$ "):
                first, text = i + 1, raw[2:]
                while text.endswith("\\") and i + 1 < len(lines):
                    i += 1
                    text = text[:-1] + lines[i].strip()
                m = re.search(r"\s+#\s*exit\s+(\d+)\s*$", text)
                commands.append(DocCommand(path, first, text[: m.start()] if m else text, int(m.group(1)) if m else 0))
            i += 1
        if commands:
            blocks.append(Block(path, start, tuple(commands)))
        i += 1
    return blocks


def not_run_reason(command: str) -> str | None:
    return next((reason for pattern, reason in NOT_RUN if re.search(pattern, command)), None)


BLOCKS = [b for path in DOC_FILES for b in parse_blocks(path)]
RUNNABLE = [b for b in BLOCKS if any(not_run_reason(c.text) is None for c in b.commands)]


def test_the_docs_show_commands_and_the_not_run_list_matches_them() -> None:
    commands = [c.text for b in BLOCKS for c in b.commands]
    assert len(commands) > 50
    unused = [pattern for pattern, _ in NOT_RUN if not any(re.search(pattern, c) for c in commands)]
    assert unused == [], f"NOT_RUN entries matching no command in the docs: {unused}"


def test_operator_docs_keep_commands_in_console_blocks() -> None:
    for path in OPERATOR_DOCS:
        fences = re.findall(r"^```(\S*)", path.read_text(), re.M)
        assert not {"sh", "bash", "shell"} & set(fences), f"{path.name}: put commands in ```console blocks"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scratch checkout: the repository's files linked, so docs commands write nothing into it."""
    redis_cli = shutil.which("redis-cli")
    if redis_cli is None:
        server_missing("redis-cli")
    base = tmp_path_factory.mktemp("docs")
    bin_dir = base / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "redis-cli"
    wrapper.write_text(
        "#!/bin/sh\n# docs test: talk to the test server unless the command names a server itself\n"
        f'case " $* " in *" -u "*|*" -h "*|*" -p "*) exec {redis_cli} "$@";; esac\n'
        f'exec {redis_cli} -u "$MAILPIPE_REDIS_URL" "$@"\n')
    wrapper.chmod(0o755)
    return base


def _scratch(base: Path, name: str) -> Path:
    work = base / name
    work.mkdir()
    for entry in ("scripts", "src", "worker.py", "producer.py", "config", "docs", "examples", "tests", ".venv",
                  ".env.example",
                  "pyproject.toml", "requirements.txt"):
        if (ROOT / entry).exists():
            (work / entry).symlink_to(ROOT / entry)
    return work


def _values(seed: Seed, r: redis.Redis, redis_url: str) -> dict[str, str]:
    first = r.xrange(seed.keys.stream, count=1)
    return {"<dead-letter-id>": seed.dead_ids[0], "<stream-id>": str(first[0][0]), "<consumer>": seed.dead_consumer,
            "<new-redis-url>": redis_url.rsplit("/", 1)[0] + "/1"}


@pytest.mark.parametrize("block", RUNNABLE, ids=[f"{b.path.relative_to(ROOT)}:{b.line}" for b in RUNNABLE])
def test_docs_block_runs(block: Block, workdir: Path, redis_url: str, r: redis.Redis) -> None:
    runnable = [c for c in block.commands if not_run_reason(c.text) is None]
    seed = seed_pipeline(redis_url, Keys(), retries=False)
    values = _values(seed, r, redis_url)
    work = _scratch(workdir, f"{block.path.stem}-{block.line}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILPIPE_")}
    env.update(PATH=f"{workdir / 'bin'}:{ROOT / '.venv' / 'bin'}:{env.get('PATH', '')}", HOME=str(work),
               MAILPIPE_REDIS_URL=redis_url, MAILPIPE_LOG_LEVEL="WARNING", COLUMNS="160")
    for command in runnable:
        text = command.text
        for name, value in values.items():
            text = text.replace(name, value)
        unknown = PLACEHOLDER.findall(text)
        assert not unknown, f"{command.where}: unknown placeholder {unknown}; add it to _values() in this test"
        done = subprocess.run(["bash", "-c", text], cwd=work, env=env, capture_output=True, text=True, timeout=120)
        output = done.stdout + done.stderr
        assert done.returncode == command.expected_exit, (
            f"{command.where}: `{command.text}` exited {done.returncode}, expected {command.expected_exit}:\n"
            f"{output[-3000:]}")
        if text.startswith("redis-cli"):
            assert not ERROR_REPLY.search(done.stdout), f"{command.where}: `{command.text}` got an error:\n{output}"
        assert "Traceback (most recent call last)" not in done.stderr, f"{command.where}: traceback:\n{output}"


def test_every_alert_has_a_runbook_that_says_how_to_confirm_and_fix() -> None:
    alerts = set(re.findall(r"^\s*- alert:\s*(\S+)", (ROOT / "config" / "alerts.yml").read_text(), re.M))
    runbooks = {p.stem: p.read_text() for p in (ROOT / "docs" / "runbooks").glob("*.md")}
    assert alerts and set(runbooks) == alerts
    for name, text in runbooks.items():
        assert text.startswith(f"# {name}\n"), name
        for section in ("## What it means", "## Confirm", "## Fix"):
            assert section in text, f"{name}: missing {section}"
        assert "```console" in text, f"{name}: show the commands that confirm it"
