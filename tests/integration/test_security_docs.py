"""The ACL users and TLS URLs of docs/SECURITY.md, applied to real Redis servers: each role can do its
whole job with exactly the documented rules, and nothing dangerous."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.exceptions import NoPermissionError

from mailpipe.embedded import RedisServerProcess, free_port
from mailpipe.errors import ConfigError
from mailpipe.keys import Keys
from tests.cli_util import drain, run_cli
from tests.conftest import server_missing
from tests.ops_seed import publish, seed_pipeline
from tests.util import wait_until

ROOT = Path(__file__).resolve().parents[2]
SECURITY = (ROOT / "docs" / "SECURITY.md").read_text()
KEYS = Keys()  # the documented key pattern is the default namespace's


def documented_users() -> dict[str, list[str]]:
    users = {}
    for line in SECURITY.splitlines():
        if line.startswith("user mailpipe-"):
            _, name, *rules = line.split()
            users[name] = ["reset", *(">pw" if r == ">CHANGE-ME" else r for r in rules)]
    return users


@pytest.fixture
def acl(redis_server: RedisServerProcess, redis_url: str, r: redis.Redis) -> Iterator[dict[str, str]]:
    users = documented_users()
    assert set(users) == {"mailpipe-worker", "mailpipe-producer", "mailpipe-admin"}
    for name, rules in users.items():
        r.acl_setuser(name, reset=True)
        r.execute_command("ACL", "SETUSER", name, *rules)
    yield {name.removeprefix("mailpipe-"): f"redis://{name}:pw@127.0.0.1:{redis_server.port}/0" for name in users}
    for name in users:
        r.acl_deluser(name)


def test_each_role_does_its_job_with_the_documented_rules(acl: dict[str, str], tmp_path: Path,
                                                          r: redis.Redis) -> None:
    # worker: settle, retry, dead-letter (in-process), then a real process reclaiming, trimming, pruning
    seed = seed_pipeline(acl["worker"], KEYS)
    publish(r, KEYS, [f"bulk-{i}" for i in range(30)])
    env = {**os.environ, "MAILPIPE_REDIS_URL": acl["worker"], "MAILPIPE_RECLAIM_IDLE_MS": "300",
           "MAILPIPE_CLAIM_TTL_MS": "600", "MAILPIPE_HOUSEKEEPING_INTERVAL_S": "0.1", "MAILPIPE_STREAM_MAX_LEN": "5",
           "MAILPIPE_CONSUMER_PRUNE_IDLE_MS": "1", "MAILPIPE_LOG_LEVEL": "WARNING"}
    worker = subprocess.Popen([sys.executable, str(ROOT / "worker.py"), "--consumer", "acl-worker",
                               "--handler", "mailpipe.handlers:noop"], env=env, cwd=ROOT, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: r.xpending(KEYS.stream, "workers")["pending"] == 0 and r.xlen(KEYS.stream) <= 10,
                   timeout=60, what="the worker to reclaim the dead consumer's entries and trim")
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            _, err = worker.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            worker.send_signal(signal.SIGTERM)  # the documented cold stop
            _, err = worker.communicate(timeout=20)
    assert b"NOPERM" not in err and b"no permissions" not in err, err.decode()[-2000:]
    assert seed.dead_consumer not in {c["name"] for c in r.xinfo_consumers(KEYS.stream, "workers")}  # pruned

    # producer: a local import publishes with its published set (and would checkpoint IMAP mail)
    samples = ROOT / "src" / "mailpipe" / "samples"
    producer_env = {**os.environ, "MAILPIPE_REDIS_URL": acl["producer"], "MAILPIPE_LOG_LEVEL": "WARNING"}
    produced = subprocess.run([sys.executable, str(ROOT / "producer.py"), "--source", f"eml:{samples}", "--once"],
                              env=producer_env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert produced.returncode == 0, produced.stderr
    lease = KEYS.lease("me@example.com", "INBOX")
    client = redis.Redis.from_url(acl["producer"])
    assert client.set(lease, "me", nx=True, px=1000) and client.delete(lease) == 1

    # admin: every CLI command, backup and restore
    for argv in (["status"], ["pending"], ["consumers", "list"], ["consumers", "prune", "--idle-ms", "0", "--yes"],
                 ["dlq", "list"], ["dlq", "show", seed.dead_ids[0]], ["dlq", "replay", seed.dead_ids[0]],
                 ["dlq", "purge", seed.dead_ids[1], "--yes"], ["replay", "--since", "1h", "--yes"],
                 ["checkpoint", "show"], ["checkpoint", "set", "--account", "me@example.com", "--mailbox", "INBOX",
                                          "--uid", "3", "--yes"]):
        res = run_cli(acl["admin"], KEYS, *argv)
        assert res.code == 0, (argv, res.err)
    archive = tmp_path / "b.tar"
    for script, args in (("backup.py", ["--redis-url", acl["admin"], str(archive)]),
                         ("restore.py", ["--redis-url", acl["admin"].replace("/0", "/2"), str(archive)])):
        done = subprocess.run([sys.executable, str(ROOT / "scripts" / script), *args], cwd=ROOT, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    assert "verified" in done.stdout
    assert r.execute_command("ACL", "LOG", "10") == [] or all(
        e["username"] not in ("mailpipe-worker", "mailpipe-producer", "mailpipe-admin")
        for e in r.execute_command("ACL", "LOG", "10"))


@pytest.mark.parametrize("role", ["worker", "producer", "admin"])
def test_no_role_gets_dangerous_commands_or_other_keys(acl: dict[str, str], role: str) -> None:
    client = redis.Redis.from_url(acl[role])
    try:
        for forbidden in (("FLUSHALL",), ("KEYS", "*"), ("CONFIG", "GET", "*"),
                          ("SHUTDOWN",), ("GET", "someone-else:key"), ("ACL", "LIST"),
                          ("FUNCTION", "FLUSH"), ("PUBLISH", "chan", "x")):
            with pytest.raises(NoPermissionError):
                client.execute_command(*forbidden)
        if role != "admin":
            with pytest.raises(NoPermissionError):
                client.execute_command("RESTORE", "mailpipe:{x}:k", "0", b"\x00")
    finally:
        client.close()


def test_a_refused_permission_is_one_line(acl: dict[str, str], redis_url: str, r: redis.Redis) -> None:
    seed_pipeline(redis_url, KEYS)
    res = run_cli(acl["worker"], KEYS, "status")  # a worker user lacks INFO
    assert res.code == 1 and res.err.count("\n") == 1
    assert "lacks a permission" in res.err and "SECURITY.md" in res.err


# --- TLS ------------------------------------------------------------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[RedisServerProcess, int, Path]]:
    if not shutil.which("openssl"):
        server_missing("openssl (to make test certificates)")
    d = tmp_path
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
             "-subj", "/CN=mailpipe-test-ca", cwd=d)
    (d / "ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj",
                 f"/CN={name}", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.pem", "-days", "1", "-extfile", "ext", cwd=d)
    tls_port = free_port()
    server = RedisServerProcess(data_dir=d / "data", extra_args=[
        "--tls-port", str(tls_port), "--tls-cert-file", str(d / "server.pem"), "--tls-key-file", str(d / "server.key"),
        "--tls-ca-cert-file", str(d / "ca.pem"), "--tls-auth-clients", "optional"])
    try:
        server.start()
    except ConfigError as exc:
        server_missing(f"a Redis server with TLS ({exc})")
    yield server, tls_port, d
    server.stop()


def documented_tls_urls(port: int, certs: Path) -> list[str]:
    urls = re.findall(r"^MAILPIPE_REDIS_URL=(rediss://\S+)$", SECURITY, re.M)
    assert len(urls) == 2
    out = []
    for url in urls:
        url = url.replace("mailpipe-worker:PASSWORD@", "").replace("redis.internal:6380", f"127.0.0.1:{port}")
        out.append(url.replace("/etc/mailpipe/redis-ca.pem", str(certs / "ca.pem"))
                   .replace("/etc/mailpipe/client.pem", str(certs / "client.pem"))
                   .replace("/etc/mailpipe/client.key", str(certs / "client.key")))
    return out


def test_documented_tls_urls_work_for_workers_and_the_cli(tls_server: tuple[RedisServerProcess, int, Path]) -> None:
    server, port, certs = tls_server
    server_only, mutual = documented_tls_urls(port, certs)
    with redis.Redis.from_url(server_only, decode_responses=True) as client:
        publish(client, KEYS, ["over-tls"])
        client.xgroup_create(KEYS.stream, "workers", id="0")
    seen: list[str] = []
    drain(server_only, KEYS, lambda m, c: seen.append(m.idempotency_key))
    assert seen == ["over-tls"]
    assert run_cli(server_only, KEYS, "status").code == 0

    with redis.Redis(port=server.port) as plain:
        plain.config_set("tls-auth-clients", "yes")  # now a client certificate is required
    refused = run_cli(server_only, KEYS, "status")
    assert refused.code == 3 and "127.0.0.1" in refused.err
    assert run_cli(mutual, KEYS, "status").code == 0
    unverified = run_cli(f"rediss://127.0.0.1:{port}/0", KEYS, "status")
    assert unverified.code == 3 and "TLS" in unverified.err
