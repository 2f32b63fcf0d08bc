"""What the producer publishes: nasty mail, huge mail, dry runs, backpressure (real Dovecot + Redis)."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
import redis

from mailpipe.entry import parse_entry
from mailpipe.keys import Keys
from mailpipe.metrics import ProducerMetrics
from mailpipe.producer.runner import Producer
from mailpipe.producer.settings import ProducerSettings
from tests.dovecot import DovecotServer
from tests.integration.producer.conftest import metric
from tests.mail_samples import big_mail, make_mail, nasty_corpus
from tests.util import wait_until

pytestmark = pytest.mark.imap


def test_nasty_corpus_and_a_20mb_message_flow_through(
        dovecot: DovecotServer, imap_user: str, make_settings: Callable[..., ProducerSettings],
        r: redis.Redis, keys: Keys, metrics: ProducerMetrics) -> None:
    corpus = {k: v for k, v in nasty_corpus().items() if v}  # IMAP cannot APPEND an empty message
    big = big_mail(20 * 1024 * 1024)
    dovecot.append(imap_user, [*corpus.values(), big])
    Producer(make_settings(), r, metrics, once=True).run()

    messages = [parse_entry(i, f) for i, f in r.xrange(keys.stream)]  # type: ignore[misc]
    assert len(messages) == len(corpus) + 1
    by_subject = {m.email.subject: m.email for m in messages}
    assert "no Message-ID header" in by_subject["no id"].defects
    assert "Grüße aus Köln" in (by_subject["lying ascii"].text or "")
    assert "Grüße aus Köln" in (by_subject["lying utf-8"].text or "")
    assert "Grüße aus Köln" in (by_subject["unknown charset"].text or "")
    assert any("unknown charset" in d for d in by_subject["unknown charset"].defects)
    assert by_subject["Grüße aus Köln — ✓"].from_ == ["Jürgen <j@example.com>"]
    assert len({m.idempotency_key for m in messages}) == len(messages)
    huge = by_subject["big: a large attachment"]
    assert huge.raw is None and huge.raw_ref and ";UID=" in huge.raw_ref
    assert huge.size == len(big.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
    assert huge.attachments[0].size == 20 * 1024 * 1024
    assert metric(metrics, "mailpipe_producer_parse_defects_total", stream=keys.stream_name) > 0


def test_message_over_fetch_limit_is_published_as_headers_and_reference(
        dovecot: DovecotServer, imap_user: str, make_settings: Callable[..., ProducerSettings],
        r: redis.Redis, keys: Keys, metrics: ProducerMetrics) -> None:
    dovecot.append(imap_user, [big_mail(300_000), make_mail(1)])
    Producer(make_settings(max_fetch_bytes=100_000), r, metrics, once=True).run()
    first, second = (parse_entry(i, f) for i, f in r.xrange(keys.stream))  # type: ignore[misc]
    assert first.email.subject == "big: a large attachment" and first.email.text is None
    assert first.email.size > 300_000 and first.email.raw_ref is not None
    assert any("headers only" in d for d in first.email.defects)
    assert second.email.subject == "t message 1"


def test_dry_run_prints_and_publishes_nothing(
        dovecot: DovecotServer, imap_user: str, make_settings: Callable[..., ProducerSettings],
        r: redis.Redis, keys: Keys, metrics: ProducerMetrics) -> None:
    dovecot.append(imap_user, [make_mail(i) for i in range(3)])
    lines: list[str] = []
    Producer(make_settings(), r, metrics, dry_run=True, out=lines.append).run()
    assert len(lines) == 3 and "subject='t message 0'" in lines[0] and "uid=1" in lines[0]
    assert r.xlen(keys.stream) == 0 and not r.keys(keys.pattern())


def test_backpressure_pauses_until_consumers_catch_up(
        dovecot: DovecotServer, imap_user: str, make_settings: Callable[..., ProducerSettings],
        r: redis.Redis, keys: Keys, metrics: ProducerMetrics) -> None:
    dovecot.append(imap_user, [make_mail(i) for i in range(12)])
    r.xgroup_create(keys.stream, "workers", id="0", mkstream=True)
    producer = Producer(make_settings(backpressure_limit=4, fetch_batch_messages=2, backpressure_check_s=0.05),
                        r, metrics, once=True)
    thread = threading.Thread(target=producer.run, daemon=True)
    thread.start()
    paused = lambda: metric(metrics, "mailpipe_producer_backpressure_pauses_total",  # noqa: E731
                            stream=keys.stream_name, account=imap_user) >= 1
    wait_until(paused, 20, what="a backpressure pause")
    assert r.xlen(keys.stream) <= 6  # the limit plus at most one batch
    while thread.is_alive():  # a consumer catching up lets the producer go on
        r.xreadgroup("workers", "c1", {keys.stream: ">"}, count=2, block=100)
    thread.join(20)
    assert r.xlen(keys.stream) == 12
