"""``python producer.py`` as a user runs it, against real Dovecot and Redis, killed where it hurts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from mailpipe.keys import Keys
from tests.dovecot import PASSWORD, DovecotServer
from tests.e2e.workers import finish, start_worker, successes_per_key
from tests.mail_samples import make_mail
from tests.util import wait_until

pytestmark = pytest.mark.imap
ROOT = Path(__file__).resolve().parents[3]


def producer(dovecot: DovecotServer, user: str, redis_url: str, keys: Keys, *args: str,
             password: str = PASSWORD, **env: str) -> subprocess.Popen[str]:
    full_env = {
        **os.environ, "MAILPIPE_IMAP_HOST": dovecot.host, "MAILPIPE_IMAP_PORT": str(dovecot.port),
        "MAILPIPE_IMAP_TLS": "none", "MAILPIPE_USERNAME": user, "MAILPIPE_IMAP_PASSWORD": password,
        "MAILPIPE_LEASE_TTL_S": "3", "MAILPIPE_LOG_LEVEL": "WARNING", **env,
    }
    cmd = [sys.executable, str(ROOT / "producer.py"), "--redis-url", redis_url, "--namespace", keys.namespace,
           "--stream", keys.stream_name, *args]
    return subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def http_get(port: int, path: str) -> tuple[int, str]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def wait_exit(proc: subprocess.Popen[str], timeout: float = 120) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"producer did not exit within {timeout}s: {err[-2000:]}") from None
    return proc.returncode, err


def test_sigkill_during_a_large_batch_then_restart_publishes_each_mail_once(
        dovecot: DovecotServer, imap_user: str, redis_url: str, r: redis.Redis, keys: Keys, tmp_path: Path) -> None:
    total = 2000
    dovecot.append(imap_user, [make_mail(i, tag="bulk") for i in range(total)])
    env = {"MAILPIPE_START": "all", "MAILPIPE_FETCH_BATCH_MESSAGES": "25"}
    first = producer(dovecot, imap_user, redis_url, keys, "--once", **env)
    wait_until(lambda: r.xlen(keys.stream) >= 300 or first.poll() is not None, 120, interval=0.002,
               what="the first producer in the middle of the backlog")
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    killed_at = r.xlen(keys.stream)
    assert killed_at < total, "killed too late to prove anything"

    started = time.monotonic()
    code, err = wait_exit(producer(dovecot, imap_user, redis_url, keys, "--once", **env))
    elapsed = time.monotonic() - started
    assert code == 0, err
    fields = [f for _, f in r.xrange(keys.stream)]  # type: ignore[misc]
    assert len(fields) == total
    assert sorted(int(f["uid"]) for f in fields) == list(range(1, total + 1))
    assert len({f["idem"] for f in fields}) == total
    print(f"\nkilled after {killed_at}; restart published {total - killed_at} in {elapsed:.1f}s "
          f"(process start and lease wait included)")

    # ... and a worker processes every one of them exactly once.
    code, err = finish(start_worker(redis_url, keys, "c1", "--exit-when-idle", stderr_file=tmp_path / "worker.log"),
                       timeout=180)
    assert code == 0, (tmp_path / "worker.log").read_text()[-2000:]
    per_key = successes_per_key(r)
    assert len(per_key) == total and set(per_key.values()) == {1}


def test_long_running_producer_idles_and_stops_cleanly_on_sigterm(
        dovecot: DovecotServer, imap_user: str, redis_url: str, r: redis.Redis, keys: Keys) -> None:
    from mailpipe.embedded import free_port

    port = free_port()
    proc = producer(dovecot, imap_user, redis_url, keys, "--metrics-port", str(port))
    wait_until(lambda: http_get(port, "/ready")[0] == 200, 30, what="producer ready")
    dovecot.append(imap_user, make_mail(1))  # start=new: the checkpoint was placed before this arrived
    wait_until(lambda: r.xlen(keys.stream) == 1, 30, what="mail pushed through IDLE")
    wait_until(lambda: '"state": "idle"' in http_get(port, "/status")[1], 30, what="idle again in /status")
    status = json.loads(http_get(port, "/status")[1])["mailboxes"][f"{imap_user}/INBOX"]
    assert status["published"] == 1 and status["last_error"] == ""
    assert (f'mailpipe_producer_emails_published_total{{account="{imap_user}",mailbox="INBOX",'
            f'stream="{keys.stream_name}"}} 1.0') in http_get(port, "/metrics")[1]
    proc.send_signal(signal.SIGTERM)
    code, err = wait_exit(proc, 30)
    assert code == 0, err
    assert r.get(keys.lease(imap_user, "INBOX")) is None, "lease released on a clean stop"


@pytest.mark.parametrize(("password", "port_open", "expected", "exit_code"), [
    ("wrong", True, "refused", 4),  # never restarted by a supervisor
    (PASSWORD, False, "connection refused", 1),  # a supervisor may restart
])
def test_bad_credentials_or_unreachable_server_is_one_line_and_distinct_exit(
        dovecot: DovecotServer, imap_user: str, redis_url: str, keys: Keys, password: str, port_open: bool,
        expected: str, exit_code: int) -> None:
    from mailpipe.embedded import free_port

    extra = {} if port_open else {"MAILPIPE_IMAP_PORT": str(free_port())}
    code, err = wait_exit(producer(dovecot, imap_user, redis_url, keys, "--once", password=password, **extra), 60)
    assert code == exit_code
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("producer: ") and expected in lines[0], err
    assert "Traceback" not in err and "wrong" not in err
