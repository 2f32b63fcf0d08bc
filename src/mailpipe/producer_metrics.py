"""Metrics of one producer process: what it publishes and how its IMAP and OAuth2 sessions fare.

Labels: ``stream``, plus ``account`` / ``mailbox`` (bounded by configuration) and fixed kinds.
"""

from __future__ import annotations

import threading
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from mailpipe.metrics_base import FETCH_ERROR_KINDS, OTHER, POLL_KINDS, PUBLISH_BUCKETS, Bounded, new_registry


class ProducerMetrics:
    """The metrics one producer process updates while it publishes mail onto ``stream``."""

    def __init__(self, registry: CollectorRegistry | None = None, *, stream: str) -> None:
        self.registry = registry if registry is not None else new_registry()
        self.stream = stream
        reg = self.registry
        s = ("stream",)
        acc = ("stream", "account")
        box = ("stream", "account", "mailbox")

        self._published = Counter("mailpipe_producer_emails_published_total",
                                  "Emails published onto the stream.", box, registry=reg)
        self._polls = Counter("mailpipe_producer_polls_total",
                              "Mailbox checks, by kind: poll (timer), idle_wakeup (IDLE reported a change), "
                              "idle_timeout (IDLE renewed without a change).", (*box, "kind"), registry=reg)
        self._poll_kind = Bounded("poll kind", POLL_KINDS)
        errors = Counter("mailpipe_producer_fetch_errors_total", "Failed IMAP operations, by kind.",
                         (*s, "kind"), registry=reg)
        self._fetch_errors = {k: errors.labels(stream, k) for k in (*FETCH_ERROR_KINDS, OTHER)}
        self._error_kind = Bounded("fetch error kind", FETCH_ERROR_KINDS)
        self._reconnects = Counter("mailpipe_producer_reconnects_total",
                                   "IMAP connections re-established after a failure.", acc, registry=reg)
        self._uidvalidity = Counter("mailpipe_producer_uidvalidity_changes_total",
                                    "Mailboxes whose UIDVALIDITY changed (the mailbox is re-synced).",
                                    box, registry=reg)
        self._bytes = Counter("mailpipe_producer_fetched_bytes_total", "RFC 822 bytes fetched from IMAP.",
                              acc, registry=reg)
        self._publish = Histogram("mailpipe_producer_publish_duration_seconds",
                                  "Time to publish one email onto the stream (XADD and its bookkeeping).",
                                  s, buckets=PUBLISH_BUCKETS, registry=reg).labels(stream)
        self._token_expiry = Gauge("mailpipe_producer_oauth_token_expiry_timestamp_seconds",
                                   "Unix time at which the current OAuth2 access token expires.",
                                   acc, registry=reg)
        self._refresh_failures = Counter("mailpipe_producer_oauth_refresh_failures_total",
                                         "Failed OAuth2 token refreshes.", acc, registry=reg)
        self._backpressure = Counter("mailpipe_producer_backpressure_pauses_total",
                                     "Times publishing paused because the consumers were too far behind.",
                                     acc, registry=reg)
        self._last_sync = Gauge("mailpipe_producer_last_sync_timestamp_seconds",
                                "Unix time of the last successful sync of a mailbox.", box, registry=reg)
        self._watched = Gauge("mailpipe_producer_mailbox_watch_start_timestamp_seconds",
                              "Unix time the producer started watching a mailbox (alerts on mailboxes that "
                              "never synced).", box, registry=reg)
        self._defects = Counter("mailpipe_producer_parse_defects_total",
                                "MIME defects found while parsing fetched mail (the mail is still "
                                "published).",
                                s, registry=reg).labels(stream)

        self._seen: set[tuple[str, str]] = set()
        self._seen_lock = threading.Lock()

    def _touch(self, account: str, mailbox: str | None = None) -> None:
        """Create an account's (and mailbox's) counters at 0 on first sight.

        A counter that appears already at 1 hides its first increase from ``increase()``/``rate()``, so
        the first OAuth refresh failure or reconnect would never alert.
        """
        key = (account, mailbox or "")
        if key in self._seen:
            return
        with self._seen_lock:
            self._seen.add(key)
        s = self.stream
        for family in (self._reconnects, self._bytes, self._refresh_failures, self._backpressure):
            family.labels(s, account)
        if mailbox is not None:
            self._published.labels(s, account, mailbox)
            self._uidvalidity.labels(s, account, mailbox)
            for kind in POLL_KINDS:
                self._polls.labels(s, account, mailbox, kind)

    def published(self, account: str, mailbox: str, n: int = 1) -> None:
        self._touch(account, mailbox)
        self._published.labels(self.stream, account, mailbox).inc(n)

    def poll(self, account: str, mailbox: str, kind: str) -> None:
        self._touch(account, mailbox)
        self._polls.labels(self.stream, account, mailbox, self._poll_kind(kind)).inc()

    def fetch_error(self, kind: str) -> None:
        self._fetch_errors[self._error_kind(kind)].inc()

    def reconnect(self, account: str) -> None:
        self._touch(account)
        self._reconnects.labels(self.stream, account).inc()

    def uidvalidity_change(self, account: str, mailbox: str) -> None:
        self._touch(account, mailbox)
        self._uidvalidity.labels(self.stream, account, mailbox).inc()

    def bytes_fetched(self, account: str, n: int) -> None:
        self._touch(account)
        self._bytes.labels(self.stream, account).inc(n)

    def publish_seconds(self, seconds: float) -> None:
        self._publish.observe(seconds)

    def token_expiry(self, account: str, seconds_left: float) -> None:
        self._touch(account)
        # Exported as an absolute time so the value stays right between refreshes (and after a stall).
        self._token_expiry.labels(self.stream, account).set(time.time() + seconds_left)

    def oauth_refresh_failure(self, account: str) -> None:
        self._touch(account)
        self._refresh_failures.labels(self.stream, account).inc()

    def backpressure_pause(self, account: str) -> None:
        self._touch(account)
        self._backpressure.labels(self.stream, account).inc()

    def watch(self, account: str, mailbox: str) -> None:
        """Declare a mailbox this producer is responsible for, before its first login or sync.

        Creates the account's and mailbox's series at 0 (so the very first failure is visible to
        ``increase()``) and records when watching began, so a mailbox that never syncs still alerts.
        """
        self._touch(account, mailbox)
        self._watched.labels(self.stream, account, mailbox).set(time.time())

    def sync_success(self, account: str, mailbox: str) -> None:
        self._touch(account, mailbox)
        self._last_sync.labels(self.stream, account, mailbox).set(time.time())

    def parse_defect(self, n: int = 1) -> None:
        self._defects.inc(n)
