"""Producer ingest from a real Dovecot, against mbsync (isync) syncing the same mailbox to a Maildir.

A Dovecot (the test suite's fixture, ``tests/dovecot.py``) holds N messages of the 2 KB-200 KB mix, put
straight into its Maildir and indexed by Dovecot before anything is timed, so neither tool pays for the
server's first scan. Each run is a first sync: ``python producer.py --once --start all`` into a fresh
stream (entries carry the parsed email and, up to 64 KB, the raw message), and ``mbsync`` into an empty
Maildir (raw messages on disk). Runs alternate between the two tools; the wall time of the whole
command is measured, start-up included, for both.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import RESULTS_DIR, ROOT, Config, cpu_seconds, median
from bench.emails import make_raw, size_mix
from mailpipe.embedded import RedisServerProcess

USER = "bench@example.com"


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def mailbox_files(count: int) -> Path:
    """A directory of ``count`` generated messages, made once and kept in bench/results/cache."""
    cache = RESULTS_DIR / "cache" / f"mailbox-{count}"
    done = cache / ".complete"
    if not done.exists():
        shutil.rmtree(cache, ignore_errors=True)
        cache.mkdir(parents=True)
        print(f"  generating {count:,} messages (once, cached in {cache}) ...", file=sys.stderr, flush=True)
        for n, size in enumerate(size_mix(count), start=1):
            (cache / f"{n:06d}").write_bytes(make_raw(n, size))
        done.touch()
    return cache


def seed_maildir(dovecot: Any, source: Path) -> tuple[int, int]:
    """Copy the messages into the user's Maildir ``cur/`` and let Dovecot index them; (count, bytes)."""
    maildir = Path(dovecot.dir) / "mail" / USER / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    count = total = 0
    stamp = int(time.time())
    for path in sorted(source.iterdir()):
        if path.name.startswith("."):
            continue
        size = path.stat().st_size
        # Maildir names are <time>.<unique>.<host>,S=<size>:2,<flags>; S= spares Dovecot a stat per file.
        target = maildir / "cur" / f"{stamp}.M{count}P0.bench,S={size}:2,S"
        shutil.copyfile(path, target)
        count += 1
        total += size
    if os.geteuid() == 0:
        _, _, _, uid, gid = dovecot._ids()
        subprocess.run(["chown", "-R", f"{uid}:{gid}", str(Path(dovecot.dir) / "mail")], check=True)
    dovecot.doveadm("index", "-u", USER, "INBOX")
    status = dovecot.doveadm("mailbox", "status", "-u", USER, "messages", "INBOX")
    if f"messages={count}" not in status:
        raise RuntimeError(f"Dovecot sees {status.strip()!r}, expected {count} messages")
    return count, total


def mbsync_config(dovecot: Any, target: Path, password: str) -> Path:
    conf = target.parent / "mbsyncrc"
    conf.write_text(f"""IMAPAccount bench
Host {dovecot.host}
Port {dovecot.port}
User {USER}
Pass {password}
SSLType None
AuthMechs LOGIN

IMAPStore remote
Account bench

MaildirStore local
Path {target}/
Inbox {target}/INBOX

Channel bench
Far :remote:
Near :local:
Patterns INBOX
Create Near
Sync Pull
SyncState *
""")
    return conf


def run_mbsync(dovecot: Any, password: str, work: Path, expected: int) -> dict[str, Any]:
    target = Path(tempfile.mkdtemp(prefix="mbsync-", dir=work))
    (target / "store").mkdir()
    conf = mbsync_config(dovecot, target / "store", password)
    cpu0 = _children_cpu()
    started = time.monotonic()
    result = subprocess.run(["mbsync", "-c", str(conf), "-q", "bench"], capture_output=True, text=True,
                            check=False)
    seconds = time.monotonic() - started
    cpu = _children_cpu() - cpu0
    got = sum(1 for sub in ("cur", "new") for _ in (target / "store" / "INBOX" / sub).glob("*"))
    shutil.rmtree(target, ignore_errors=True)
    if result.returncode != 0 or got != expected:
        raise RuntimeError(f"mbsync exit {result.returncode}, {got}/{expected} messages: "
                           f"{(result.stderr or result.stdout).strip()[-300:]}")
    return {"seconds": round(seconds, 3), "rate": round(expected / seconds, 1), "cpu_s": round(cpu, 2)}


def run_producer(dovecot: Any, password: str, redis_url: str, run_no: int, expected: int,
                 work: Path, redis_pid: int) -> dict[str, Any]:
    import redis

    stream_name = f"ingest{run_no}"
    env = {
        **os.environ, "MAILPIPE_REDIS_URL": redis_url, "MAILPIPE_NAMESPACE": "bench",
        "MAILPIPE_STREAM": stream_name, "MAILPIPE_IMAP_HOST": dovecot.host,
        "MAILPIPE_IMAP_PORT": str(dovecot.port), "MAILPIPE_IMAP_TLS": "none", "MAILPIPE_USERNAME": USER,
        "MAILPIPE_IMAP_PASSWORD": password, "MAILPIPE_START": "all", "MAILPIPE_BACKPRESSURE_LIMIT": "0",
        "MAILPIPE_LOG_LEVEL": "INFO", "MAILPIPE_LOG_FORMAT": "json",
    }
    redis_cpu0 = cpu_seconds([redis_pid])
    cpu0 = _children_cpu()
    started = time.monotonic()
    with open(work / f"producer-{run_no}.log", "wb") as log:
        proc = subprocess.run([sys.executable, str(ROOT / "producer.py"), "--once", "--mailbox", "INBOX"],
                              env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, check=False)
    seconds = time.monotonic() - started
    cpu = _children_cpu() - cpu0
    redis_cpu = cpu_seconds([redis_pid]) - redis_cpu0
    r = redis.Redis.from_url(redis_url)
    stream = f"bench:{{{stream_name}}}:stream"
    got = int(r.xlen(stream))
    memory = int(r.memory_usage(stream, samples=0) or 0)
    for key in r.scan_iter(match=f"bench:{{{stream_name}}}:*", count=1000):
        r.unlink(key)
    r.close()
    if proc.returncode != 0 or got != expected:
        tail = (work / f"producer-{run_no}.log").read_text(errors="replace").strip().splitlines()[-3:]
        raise RuntimeError(f"producer exit {proc.returncode}, {got}/{expected} entries: {' | '.join(tail)}")
    return {"seconds": round(seconds, 3), "rate": round(expected / seconds, 1), "cpu_s": round(cpu, 2),
            "redis_cpu_s": round(redis_cpu, 2), "stream_memory_bytes": memory}


def run(cfg: Config, server: RedisServerProcess, work: Path) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from tests.dovecot import PASSWORD, DovecotServer

    if not shutil.which("mbsync"):
        raise RuntimeError("mbsync is not installed (apt-get install isync)")
    source = mailbox_files(cfg.ingest_messages)
    dovecot = DovecotServer().start()
    try:
        dovecot.add_user(USER)
        count, total = seed_maildir(dovecot, source)
        print(f"  Dovecot holds {count:,} messages, {total / 1e6:.0f} MB", file=sys.stderr, flush=True)
        runs: dict[str, list[dict[str, Any]]] = {"producer": [], "mbsync": []}
        redis_pid = server.proc.pid if server.proc else 0
        for n in range(cfg.ingest_runs):
            for tool in ("mbsync", "producer"):
                print(f"  [{n + 1}/{cfg.ingest_runs}] {tool} first sync ...", end="", file=sys.stderr, flush=True)
                if tool == "mbsync":
                    result = run_mbsync(dovecot, PASSWORD, work, count)
                else:
                    result = run_producer(dovecot, PASSWORD, server.url, n, count, work, redis_pid)
                runs[tool].append(result)
                print(f" {result['rate']:,.0f} messages/s", file=sys.stderr, flush=True)
    finally:
        dovecot.stop()
    summary: dict[str, Any] = {"messages": count, "bytes": total, "mean_message_bytes": round(total / count)}
    for tool, results in runs.items():
        rate = median([r["rate"] for r in results])
        summary[tool] = {"rate": rate, "mb_per_s": round(rate * total / count / 1e6, 2), "runs": results}
    summary["producer_vs_mbsync"] = round(summary["producer"]["rate"] / summary["mbsync"]["rate"], 3)
    return summary
