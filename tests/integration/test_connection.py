"""Pointing mailpipe at Redis: URL forms that work, and one-line errors for those that do not."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import redis

from mailpipe.embedded import RedisServerProcess, free_port
from mailpipe.keys import Keys
from tests.e2e.workers import finish, start_worker
from tests.util import sample_entry


def run_worker(url: str, keys: Keys) -> tuple[int, str]:
    return finish(start_worker(url, keys, "c1", "--exit-when-idle"), timeout=60)


def assert_one_line(err: str) -> None:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err


def test_invalid_url_is_a_configuration_error(keys: Keys) -> None:
    code, err = run_worker("http://localhost:6379", keys)
    assert code == 2
    assert_one_line(err)
    assert "MAILPIPE_REDIS_URL" in err and "redis://" in err


def test_refused_connection_names_the_server_and_the_fix(keys: Keys) -> None:
    port = free_port()
    code, err = run_worker(f"redis://127.0.0.1:{port}/0", keys)
    assert code == 3
    assert_one_line(err)
    assert f"127.0.0.1:{port}" in err and "is it running?" in err


@pytest.fixture
def acl_server(tmp_path: Path) -> RedisServerProcess:
    server = RedisServerProcess(data_dir=tmp_path, extra_args=[
        "--user", "mailpipe", "on", ">s3cret-pw", "~*", "&*", "+@all"])
    try:
        server.start()
    except Exception as exc:
        pytest.fail(f"could not start an ACL Redis: {exc}")
    yield server  # type: ignore[misc]
    server.stop()


def test_wrong_password_is_one_line_without_the_secret(acl_server: RedisServerProcess, keys: Keys) -> None:
    code, err = run_worker(f"redis://mailpipe:wrong-pw@127.0.0.1:{acl_server.port}/0", keys)
    assert code == 3
    assert_one_line(err)
    assert "rejected the credentials" in err and "wrong-pw" not in err


def test_acl_user_and_database_number_from_the_url(acl_server: RedisServerProcess, keys: Keys) -> None:
    url = f"redis://mailpipe:s3cret-pw@127.0.0.1:{acl_server.port}/3"
    r = redis.Redis.from_url(url, decode_responses=True)
    r.xadd(keys.stream, sample_entry(1))
    code, err = run_worker(url, keys)
    assert code == 0, err
    assert "s3cret-pw" not in err
    assert r.xpending(keys.stream, "workers")["pending"] == 0
    assert r.xinfo_groups(keys.stream)[0]["entries-read"] == 1
    assert redis.Redis.from_url(url.replace("/3", "/0")).dbsize() == 0  # db 0 untouched


def test_tls_via_rediss_url(tmp_path: Path, keys: Keys) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    tls_port = free_port()
    server = RedisServerProcess(data_dir=tmp_path / "data", extra_args=[
        "--tls-port", str(tls_port), "--tls-cert-file", str(cert), "--tls-key-file", str(key),
        "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no"]).start()
    try:
        url = f"rediss://127.0.0.1:{tls_port}/0?ssl_ca_certs={cert}"
        redis.Redis.from_url(server.url).xadd(keys.stream, sample_entry(1))
        code, err = run_worker(url, keys)
        assert code == 0, err
        assert "processed 1" in err
        # plain redis:// against the TLS port fails with one line
        code, err = run_worker(f"redis://127.0.0.1:{tls_port}/0", keys)
        assert code == 3
        assert_one_line(err)
    finally:
        server.stop()
