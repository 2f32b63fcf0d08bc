"""IDLE, dropped connections, UIDVALIDITY changes and concurrent producers against a real Dovecot."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import redis

from mailpipe.keys import Keys
from mailpipe.metrics import ProducerMetrics
from mailpipe.producer.checkpoint import CheckpointStore
from mailpipe.producer.runner import Producer
from mailpipe.producer.settings import ProducerSettings
from tests.dovecot import DovecotServer
from tests.integration.producer.conftest import metric
from tests.mail_samples import make_mail
from tests.util import wait_until

pytestmark = pytest.mark.imap


@contextmanager
def running(producer: Producer) -> Iterator[Producer]:
    errors: list[BaseException] = []

    def target() -> None:
        try:
            producer.run()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    try:
        yield producer
    finally:
        producer.stop()
        thread.join(15)
    assert not thread.is_alive(), "producer did not stop"
    assert not errors, errors


def uids_on_stream(r: redis.Redis, keys: Keys) -> list[int]:
    return [int(f["uid"]) for _, f in r.xrange(keys.stream)]  # type: ignore[misc]


def ready(producer: Producer) -> bool:
    return producer.ready()[0] and all(w.state == "idle" for w in producer.workers)


def test_mail_appended_while_idling_arrives(
        dovecot: DovecotServer, imap_user: str, make_settings: Callable[..., ProducerSettings],
        r: redis.Redis, keys: Keys, metrics: ProducerMetrics) -> None:
    dovecot.append(imap_user, make_mail(0))
    with running(Producer(make_settings(), r, metrics)) as producer:
        wait_until(lambda: ready(producer), 20, what="first pass done and idling")
        assert uids_on_stream(r, keys) == [1]
        dovecot.append(imap_user, [make_mail(1), make_mail(2)])
        wait_until(lambda: uids_on_stream(r, keys) == [1, 2, 3], 20, what="IDLE push of the new mail")
    assert metric(metrics, "mailpipe_producer_polls_total", stream=keys.stream_name, account=imap_user,
                  mailbox="INBOX", kind="idle_wakeup") >= 1


def test_idle_refresh_probes_and_keeps_working(
        dovecot: DovecotServer, imap_user: str, make_settings: Callable[..., ProducerSettings],
        r: redis.Redis, keys: Keys, metrics: ProducerMetrics) -> None:
    with running(Producer(make_settings(idle_refresh_s=0.5), r, metrics)) as producer:
        wait_until(lambda: metric(metrics, "mailpipe_producer_polls_total", stream=keys.stream_name,
                                  account=imap_user, mailbox="INBOX", kind="idle_timeout") >= 2, 20,
                   what="two IDLE re-issues")
        dovecot.append(imap_user, make_mail(1))
        wait_until(lambda: uids_on_stream(r, keys) == [1], 20, what="mail after IDLE refreshes")
        assert producer.ready()[0]


def test_polling_when_idle_is_disabled(
        dovecot: DovecotServer, imap_user: str, make_settings: Callable[..., ProducerSettings],
        r: redis.Redis, keys: Keys, metrics: ProducerMetrics) -> None:
    with running(Producer(make_settings(use_idle=False, poll_interval_s=0.3), r, metrics)) as producer:
        wait_until(lambda: producer.workers[0].state == "polling", 20, what="polling")
        dovecot.append(imap_user, make_mail(1))
        wait_until(lambda: uids_on_stream(r, keys) == [1], 20, what="polled mail")


def test_killed_connection_reconnects_and_catches_up(
        dovecot: DovecotServer, imap_user: str, make_settings: Callable[..., ProducerSettings],
        r: redis.Redis, keys: Keys, metrics: ProducerMetrics) -> None:
    with running(Producer(make_settings(), r, metrics)) as producer:
        wait_until(lambda: ready(producer), 20, what="idling")
        for round_ in range(3):
            dovecot.kick(imap_user)
            # Appended right after the kick: usually while the producer is disconnected.
            dovecot.append(imap_user, make_mail(round_))
            wait_until(lambda n=round_ + 1: len(uids_on_stream(r, keys)) == n, 30, what="catch-up after kick")
        wait_until(lambda: metric(metrics, "mailpipe_producer_reconnects_total", stream=keys.stream_name,
                                  account=imap_user) >= 3, 30, what="three reconnects counted")
    assert uids_on_stream(r, keys) == [1, 2, 3]


def test_uidvalidity_change_resyncs_without_duplicates(
        dovecot: DovecotServer, imap_user: str, make_settings: Callable[..., ProducerSettings],
        r: redis.Redis, keys: Keys, metrics: ProducerMetrics) -> None:
    dovecot.append(imap_user, [make_mail(i) for i in range(4)])
    settings = make_settings()
    Producer(settings, r, metrics, once=True).run()
    assert r.xlen(keys.stream) == 4
    # A server that changes UIDVALIDITY on every session: three sessions, one new mail in between.
    for session in range(3):
        dovecot.set_uidvalidity(imap_user, 7000 + session)
        if session == 1:
            dovecot.append(imap_user, make_mail(99))
        Producer(settings, r, metrics, once=True).run()
        cp = CheckpointStore(r, keys).get(imap_user, "INBOX")
        assert cp is not None and cp.uidvalidity == 7000 + session and cp.uv_changes == session + 1
    subjects = [f["email"] for _, f in r.xrange(keys.stream)]  # type: ignore[misc]
    assert len(subjects) == 5, "each email exactly once across three UIDVALIDITY changes"
    assert metric(metrics, "mailpipe_producer_uidvalidity_changes_total", stream=keys.stream_name,
                  account=imap_user, mailbox="INBOX") == 3


def test_two_producers_on_one_mailbox_never_duplicate(
        dovecot: DovecotServer, imap_user: str, make_settings: Callable[..., ProducerSettings],
        r: redis.Redis, keys: Keys, metrics: ProducerMetrics) -> None:
    dovecot.append(imap_user, [make_mail(i) for i in range(40)])
    settings = make_settings(fetch_batch_messages=5)
    first, second = Producer(settings, r, metrics), Producer(settings, r, metrics)
    with running(first), running(second):
        dovecot.append(imap_user, [make_mail(i, tag="late") for i in range(20)])
        wait_until(lambda: r.xlen(keys.stream) >= 60, 30, what="60 messages on the stream")
        states = sorted(w.state for p in (first, second) for w in p.workers)
        assert "standby" in states, states
    ids = uids_on_stream(r, keys)
    assert ids == list(range(1, 61))


def test_standby_takes_over_when_the_holder_stops(
        dovecot: DovecotServer, imap_user: str, make_settings: Callable[..., ProducerSettings],
        r: redis.Redis, keys: Keys, metrics: ProducerMetrics) -> None:
    settings = make_settings()
    first = Producer(settings, r, metrics)
    with running(first):
        wait_until(lambda: ready(first), 20, what="first producer idling")
        second = Producer(settings, r, metrics)
        with running(second):
            wait_until(lambda: second.workers[0].state == "standby", 20, what="second on standby")
            first.stop()
            wait_until(lambda: second.workers[0].state == "idle", 20, what="second takes over")
            dovecot.append(imap_user, make_mail(5))
            wait_until(lambda: uids_on_stream(r, keys) == [1], 20, what="mail through the new holder")


def test_redis_restart_is_waited_out_without_loss_or_duplicates(
        dovecot: DovecotServer, imap_user: str, make_settings: Callable[..., ProducerSettings],
        keys: Keys, metrics: ProducerMetrics, tmp_path: object) -> None:
    from mailpipe.embedded import RedisServerProcess

    server = RedisServerProcess(data_dir=str(tmp_path), appendonly=True, appendfsync="always")
    server.start()
    try:
        client = redis.Redis.from_url(server.url, decode_responses=True, socket_timeout=5)
        settings = make_settings(redis_url=server.url)
        dovecot.append(imap_user, make_mail(1))
        with running(Producer(settings, client, metrics)) as producer:
            wait_until(lambda: ready(producer), 20, what="idling")
            server.stop()
            dovecot.append(imap_user, make_mail(2))  # arrives while Redis is down
            wait_until(lambda: producer.workers[0].state == "reconnecting", 20, what="Redis failure noticed")
            server.start()
            dovecot.append(imap_user, make_mail(3))
            wait_until(lambda: len(uids_on_stream(client, keys)) == 3, 30, what="all mail after the restart")
        assert uids_on_stream(client, keys) == [1, 2, 3]
    finally:
        server.stop()
