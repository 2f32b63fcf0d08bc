"""The producer against a real Dovecot and a real Redis: sync passes, exactly once, start points."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest
import redis

from mailpipe.entry import parse_entry
from mailpipe.keys import Keys
from mailpipe.metrics import ProducerMetrics
from mailpipe.producer.checkpoint import CheckpointStore
from mailpipe.producer.errors import ImapAuthError, ImapProtocolError, ImapUnavailable
from mailpipe.producer.runner import Producer
from mailpipe.producer.settings import ProducerSettings
from tests.dovecot import DovecotServer
from tests.integration.producer.conftest import metric
from tests.mail_samples import make_mail

pytestmark = pytest.mark.imap


def run_once(settings: ProducerSettings, r: redis.Redis, metrics: ProducerMetrics, **kw: object) -> Producer:
    producer = Producer(settings, r, metrics, once=True, **kw)  # type: ignore[arg-type]
    producer.run()
    return producer


def entries(r: redis.Redis, keys: Keys) -> list[dict[str, str]]:
    return [fields for _, fields in r.xrange(keys.stream)]  # type: ignore[misc]


def test_appended_mail_is_published_exactly_once_and_never_marked_seen(
        dovecot: DovecotServer, imap_user: str, make_settings: Callable[..., ProducerSettings],
        r: redis.Redis, keys: Keys, metrics: ProducerMetrics) -> None:
    dovecot.append(imap_user, [make_mail(i) for i in range(5)])
    settings = make_settings()
    run_once(settings, r, metrics)
    run_once(settings, r, metrics)  # a second pass publishes nothing

    got = entries(r, keys)
    assert len(got) == 5
    messages = [parse_entry(str(i), f) for i, f in enumerate(got)]
    assert [m.source.uid for m in messages] == [1, 2, 3, 4, 5]
    assert [m.email.subject for m in messages] == [f"t message {i}" for i in range(5)]
    assert len({m.idempotency_key for m in messages}) == 5
    assert all(m.source.kind == "imap" and m.source.account == imap_user for m in messages)
    assert messages[0].email.raw == make_mail(0).replace(b"\n", b"\r\n")
    assert all(b"\\Seen" not in flags for flags in dovecot.flags(imap_user).values())
    cp = CheckpointStore(r, keys).get(imap_user, "INBOX")
    assert cp is not None and cp.last_uid == 5 and cp.acted_uid == 5 and cp.synced_ms > 0
    assert metric(metrics, "mailpipe_producer_emails_published_total", stream=keys.stream_name,
                  account=imap_user, mailbox="INBOX") == 5


def test_start_new_publishes_only_mail_arriving_later(
        dovecot: DovecotServer, imap_user: str, make_settings: Callable[..., ProducerSettings],
        r: redis.Redis, keys: Keys, metrics: ProducerMetrics) -> None:
    dovecot.append(imap_user, [make_mail(i, tag="old") for i in range(3)])
    settings = make_settings(start="new")
    run_once(settings, r, metrics)
    assert entries(r, keys) == []
    dovecot.append(imap_user, make_mail(1, tag="new"))
    run_once(settings, r, metrics)
    assert [f["uid"] for f in entries(r, keys)] == ["4"]


def test_start_since_date_skips_older_mail_but_not_later_arrivals(
        dovecot: DovecotServer, imap_user: str, make_settings: Callable[..., ProducerSettings],
        r: redis.Redis, keys: Keys, metrics: ProducerMetrics) -> None:
    with dovecot.client(imap_user) as client:
        for i, year in enumerate((2019, 2020, 2024, 2025)):
            client.append("INBOX", make_mail(i), msg_time=datetime(year, 6, 1, tzinfo=UTC))
    settings = make_settings(start="since:2023-01-01", uid_window=1)
    run_once(settings, r, metrics)
    assert [f["uid"] for f in entries(r, keys)] == ["3", "4"]
    with dovecot.client(imap_user) as client:  # an old INTERNALDATE arriving later is still new mail
        client.append("INBOX", make_mail(9), msg_time=datetime(2001, 1, 1, tzinfo=UTC))
    run_once(settings, r, metrics)
    assert [f["uid"] for f in entries(r, keys)] == ["3", "4", "5"]


def test_uid_windows_cover_sparse_uids_after_expunges(
        dovecot: DovecotServer, imap_user: str, make_settings: Callable[..., ProducerSettings],
        r: redis.Redis, keys: Keys, metrics: ProducerMetrics) -> None:
    uids = dovecot.append(imap_user, [make_mail(i) for i in range(60)])
    dovecot.expunge(imap_user, [u for u in uids if u % 7 != 0])
    settings = make_settings(uid_window=2, fetch_batch_messages=3)
    run_once(settings, r, metrics)
    assert [int(f["uid"]) for f in entries(r, keys)] == [u for u in uids if u % 7 == 0]


def test_wrong_password_is_one_line_auth_error(
        make_settings: Callable[..., ProducerSettings], r: redis.Redis, metrics: ProducerMetrics) -> None:
    producer = Producer(make_settings(imap_password="wrong"), r, metrics, once=True)
    with pytest.raises(ImapAuthError, match="refused") as info:
        producer.preflight()
    assert "wrong" not in str(info.value) and "\n" not in str(info.value)


def test_unreachable_server_and_missing_mailbox_are_one_line_errors(
        make_settings: Callable[..., ProducerSettings], r: redis.Redis, metrics: ProducerMetrics) -> None:
    from mailpipe.embedded import free_port

    with pytest.raises(ImapUnavailable, match="connection refused"):
        Producer(make_settings(imap_port=free_port()), r, metrics).preflight()
    with pytest.raises(ImapProtocolError, match="MAILPIPE_MAILBOXES"):
        Producer(make_settings(mailboxes=["NoSuchBox"]), r, metrics).preflight()


def test_post_publish_actions_flag_and_move(
        dovecot: DovecotServer, imap_user: str, make_settings: Callable[..., ProducerSettings],
        r: redis.Redis, keys: Keys, metrics: ProducerMetrics) -> None:
    dovecot.append(imap_user, [make_mail(i) for i in range(3)])
    dovecot.append(imap_user, [make_mail(i, tag="b") for i in range(2)], mailbox="Box")
    with dovecot.client(imap_user) as client:
        client.create_folder("Done")
    settings = make_settings(mailboxes=["INBOX", "Box"], post_action="flag:$Published",
                             mailbox_actions={"Box": "move:Done"})
    run_once(settings, r, metrics)
    assert len(entries(r, keys)) == 5
    assert all(b"$Published" in f and b"\\Seen" not in f for f in dovecot.flags(imap_user).values())
    assert dovecot.uids(imap_user, "Box") == []
    assert len(dovecot.uids(imap_user, "Done")) == 2
