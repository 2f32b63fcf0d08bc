"""`mailpipe dlq list|show|replay|purge` against a real Redis, on dead letters made by a real worker."""

from __future__ import annotations

import pytest
import redis

from mailpipe.cli import main
from mailpipe.entry import Message
from mailpipe.handler import Context
from mailpipe.keys import Keys
from tests.cli_util import drain, run_cli
from tests.ops_seed import Seed, seed_pipeline


@pytest.fixture
def seed(redis_url: str, keys: Keys) -> Seed:
    return seed_pipeline(redis_url, keys, retries=False)


def test_list_shows_newest_first_with_reason_error_and_subject(redis_url: str, keys: Keys, seed: Seed) -> None:
    res = run_cli(redis_url, keys, "dlq", "list", "--json")
    assert res.code == 0, res.err
    rows = res.json()
    assert [r["id"] for r in rows] == list(reversed(seed.dead_ids))
    assert {r["idempotency_key"] for r in rows} == {"perm-0", "perm-1", "perm-2"}
    first = rows[0]
    assert first["reason"] == "permanent" and first["error_type"] == "PermanentError"
    assert first["group"] == "workers" and first["attempts"] == 1 and first["consumer"] == seed.worker_consumer
    assert first["subject"] == "subject of perm-2" and first["from"] == ["a@example.com"]
    assert "unknown customer" in first["error"]

    human = run_cli(redis_url, keys, "dlq", "list")
    assert human.code == 0
    header = human.out.splitlines()[0].split()
    assert header[:4] == ["ID", "FAILED", "GROUP", "REASON"]
    assert all(i in human.out for i in seed.dead_ids)
    assert "3 dead letters in total" in human.out


@pytest.mark.parametrize(("filters", "expected"), [
    (["--reason", "permanent"], 3),
    (["--reason", "poison"], 0),
    (["--error-type", "PermanentError"], 3),
    (["--error-type", "TimeoutError"], 0),
    (["--group", "workers"], 3),
    (["--group", "other"], 0),
    (["--newer-than", "1h"], 3),
    (["--older-than", "1h"], 0),
    (["--limit", "2"], 2),
])
def test_list_filters(redis_url: str, keys: Keys, seed: Seed, filters: list[str], expected: int) -> None:
    res = run_cli(redis_url, keys, "dlq", "list", "--json", *filters)
    assert res.code == 0, res.err
    assert len(res.json()) == expected


def test_show_has_every_field_the_traceback_and_the_email(redis_url: str, keys: Keys, seed: Seed) -> None:
    res = run_cli(redis_url, keys, "dlq", "show", seed.dead_ids[0], "--json")
    assert res.code == 0, res.err
    doc = res.json()
    assert doc["id"] == seed.dead_ids[0]
    assert "PermanentError" in doc["traceback"] and "Traceback" in doc["traceback"]
    assert doc["email"]["subject"] == "subject of perm-0" and doc["email"]["from"] == ["a@example.com"]
    assert doc["fields"]["dl_reason"] == "permanent" and doc["fields"]["idem"] == "perm-0"

    human = run_cli(redis_url, keys, "dlq", "show", seed.dead_ids[0])
    assert human.code == 0
    assert "email.subject" in human.out and "subject of perm-0" in human.out and "traceback:" in human.out

    missing = run_cli(redis_url, keys, "dlq", "show", "1-0")
    assert missing.code == 1 and missing.out == ""
    assert missing.err.count("\n") == 1 and "no dead letter with id 1-0" in missing.err


def test_replay_by_id_after_fixing_the_cause_gets_the_email_processed(
        redis_url: str, keys: Keys, seed: Seed, r: redis.Redis) -> None:
    res = run_cli(redis_url, keys, "dlq", "replay", seed.dead_ids[1], "--json")
    assert res.code == 0, res.err
    [moved] = res.json()
    assert moved["dead_letter_id"] == seed.dead_ids[1]
    assert r.xlen(keys.dead_letters) == 2
    [(_, fields)] = r.xrange(keys.stream, moved["stream_id"], moved["stream_id"])
    assert fields["idem"] == "perm-1" and fields["attempt"] == "1" and fields["grp"] == "workers"
    assert not any(name.startswith("dl_") for name in fields)

    handled: list[str] = []

    def fixed(message: Message, ctx: Context) -> None:  # the handler after the bug fix
        handled.append(message.idempotency_key)

    drain(redis_url, keys, fixed, consumer="after-fix")
    assert handled.count("perm-1") == 1
    assert r.xlen(keys.dead_letters) == 2


def test_replay_all_needs_yes_and_moves_every_match(redis_url: str, keys: Keys, seed: Seed, r: redis.Redis) -> None:
    length = r.xlen(keys.stream)
    refused = run_cli(redis_url, keys, "dlq", "replay", "--all", "--reason", "permanent")
    assert refused.code == 2 and "add --yes" in refused.err
    assert all(i in refused.out for i in seed.dead_ids)
    assert r.xlen(keys.dead_letters) == 3 and r.xlen(keys.stream) == length

    done = run_cli(redis_url, keys, "dlq", "replay", "--all", "--reason", "permanent", "--yes")
    assert done.code == 0, done.err
    assert "replayed 3 dead letters" in done.out
    assert r.xlen(keys.dead_letters) == 0 and r.xlen(keys.stream) == length + 3

    nothing = run_cli(redis_url, keys, "dlq", "replay", "--all", "--yes")
    assert nothing.code == 0 and "nothing to replay" in nothing.out


def test_replay_refuses_unknown_ids_and_contradictions(redis_url: str, keys: Keys, seed: Seed, r: redis.Redis) -> None:
    unknown = run_cli(redis_url, keys, "dlq", "replay", seed.dead_ids[0], "2-0")
    assert unknown.code == 1 and "2-0" in unknown.err
    assert r.xlen(keys.dead_letters) == 3  # all or nothing
    both = run_cli(redis_url, keys, "dlq", "replay", seed.dead_ids[0], "--all")
    assert both.code == 2
    filters_without_all = run_cli(redis_url, keys, "dlq", "replay", seed.dead_ids[0], "--reason", "permanent")
    assert filters_without_all.code == 2
    neither = run_cli(redis_url, keys, "dlq", "replay")
    assert neither.code == 2
    bad_id = run_cli(redis_url, keys, "dlq", "replay", "not-an-id")
    assert bad_id.code == 2


def test_purge_refuses_without_yes_then_deletes(redis_url: str, keys: Keys, seed: Seed, r: redis.Redis) -> None:
    refused = run_cli(redis_url, keys, "dlq", "purge", seed.dead_ids[0])
    assert refused.code == 2 and seed.dead_ids[0] in refused.out and "perm-0" in refused.out
    assert r.xlen(keys.dead_letters) == 3

    one = run_cli(redis_url, keys, "dlq", "purge", seed.dead_ids[0], "--yes", "--json")
    assert one.code == 0 and one.json()["purged"] == 1
    rest = run_cli(redis_url, keys, "dlq", "purge", "--all", "--newer-than", "1h", "--yes")
    assert rest.code == 0 and "purged 2" in rest.out
    assert r.xlen(keys.dead_letters) == 0


def test_wrong_stream_names_the_pipelines_that_exist(redis_url: str, keys: Keys, seed: Seed) -> None:
    other = Keys(namespace=keys.namespace, stream_name="nosuchstream")
    res = run_cli(redis_url, other, "dlq", "list")
    assert res.code == 1 and res.out == ""
    assert "no stream" in res.err and f"--stream {keys.stream_name}" in res.err
    assert res.err.count("\n") == 1


def test_invalid_settings_are_a_usage_error(redis_url: str, keys: Keys, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["dlq", "list", "--redis-url", redis_url, "--namespace", "bad name!"])
    err = capsys.readouterr().err
    assert code == 2 and "MAILPIPE_NAMESPACE" in err and err.count("\n") == 1
    code = main(["dlq", "list", "--redis-url", "http://127.0.0.1:1"])
    err = capsys.readouterr().err
    assert code == 2 and "MAILPIPE_REDIS_URL" in err and err.count("\n") == 1
