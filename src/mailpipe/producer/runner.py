"""The producer loop: one thread per (account, mailbox), each holding that mailbox's lease.

A mailbox thread takes the lease (or waits as a standby while another producer holds it), connects,
runs a sync pass, then waits for mail with IDLE (re-issued every ``idle_refresh_s``; an IDLE that ends
without news is followed by a NOOP as a health probe) or by polling every ``poll_interval_s``. Any
connection failure -- BYE, reset, timeout -- reconnects with capped exponential backoff (tenacity)
and starts over with a pass, which is the UID catch-up: nothing that arrived meanwhile is missed.
A refused login is fatal (no retry loop): the producer stops with one line.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from tenacity import RetryCallState, Retrying, retry_if_exception_type

from mailpipe.errors import MailpipeError
from mailpipe.metrics import ProducerMetrics
from mailpipe.producer.auth import Authenticator, build_authenticator
from mailpipe.producer.backpressure import Backpressure
from mailpipe.producer.checkpoint import CheckpointStore
from mailpipe.producer.errors import (
    CheckpointMoved,
    ImapAuthError,
    ImapProtocolError,
    ImapUnavailable,
    LeaseLost,
)
from mailpipe.producer.imap_source import CHANGED, TIMEOUT, ImapConnection, error_kind
from mailpipe.producer.lease import Lease
from mailpipe.producer.mailbox_sync import MailboxSync
from mailpipe.producer.publish import Publisher
from mailpipe.producer.settings import ImapAccount, ProducerSettings

log = logging.getLogger(__name__)
# Redis restarting or failing over is waited out like a dropped IMAP connection.
RETRYABLE = (ImapUnavailable, ImapProtocolError, redis.ConnectionError, redis.TimeoutError)
AuthFactory = Callable[[ProducerSettings, ImapAccount, Any], Authenticator]


class Producer:
    def __init__(self, settings: ProducerSettings, client: redis.Redis, metrics: ProducerMetrics, *,
                 once: bool = False, dry_run: bool = False, out: Callable[[str], None] = print,
                 auth_factory: AuthFactory = build_authenticator) -> None:
        self.settings = settings
        self.client = client
        self.keys = settings.keys()
        self.metrics = metrics
        self.once = once or dry_run
        self.dry_run = dry_run
        self.out = out
        self.auth_factory = auth_factory
        self.stop_event = threading.Event()
        self.accounts = settings.imap_accounts()
        self.checkpoints = CheckpointStore(client, self.keys)
        self.publisher = None if dry_run else Publisher(
            client, self.keys, retention_s=settings.published_retention_s, bucket_s=settings.published_bucket_s)
        self.backpressure = Backpressure(client, self.keys, limit=settings.backpressure_limit,
                                         check_s=settings.backpressure_check_s)
        self.workers = [MailboxWorker(self, a, m) for a in self.accounts for m in a.mailboxes]
        self.failure: BaseException | None = None
        self._authenticators: dict[str, Authenticator] = {}

    def connection(self, account: ImapAccount) -> ImapConnection:
        if account.username not in self._authenticators:  # one per account: OAuth2 keeps its token state
            self._authenticators[account.username] = self.auth_factory(self.settings, account, self.metrics)
        return ImapConnection(account, self._authenticators[account.username],
                              timeout_s=self.settings.imap_timeout_s, tls_verify=self.settings.imap_tls_verify,
                              ca_file=self.settings.imap_ca_file)

    def preflight(self) -> None:
        """Log in to every account and open every mailbox once, so bad settings fail at start."""
        for account in self.accounts:
            with self.connection(account).connect() as conn:
                for mailbox in account.mailboxes:
                    conn.select(mailbox, readonly=True)

    def run(self) -> None:
        """Run every mailbox until stopped (or one pass each with ``once``); re-raises a fatal error."""
        for worker in self.workers:
            self.metrics.watch(worker.account.username, worker.mailbox)  # alerts work before a first sync
            worker.start()
        for worker in self.workers:
            while worker.is_alive():
                worker.join(0.5)
        if self.failure is not None:
            raise self.failure

    def stop(self) -> None:
        self.stop_event.set()

    def fail(self, exc: BaseException) -> None:
        if self.failure is None:
            self.failure = exc
        self.stop_event.set()

    def ready(self) -> tuple[bool, str]:
        waiting = [w.name for w in self.workers if not w.ready]
        return (not waiting, "ok" if not waiting else f"not synced yet: {', '.join(waiting[:5])}")

    def status(self) -> dict[str, Any]:
        return {"mailboxes": {w.name: w.status() for w in self.workers}}


class MailboxWorker(threading.Thread):
    def __init__(self, producer: Producer, account: ImapAccount, mailbox: str) -> None:
        super().__init__(name=f"{account.username}/{mailbox}", daemon=True)
        self.producer = producer
        self.settings = producer.settings
        self.account = account
        self.mailbox = mailbox
        self.stop = producer.stop_event
        self.lease: Lease | None = None if producer.dry_run else Lease(
            producer.client, producer.keys, account.username, mailbox, self.settings.lease_ttl_s)
        self.sync = MailboxSync(
            settings=self.settings, account=account.username, mailbox=mailbox,
            action=self.settings.action_for(account, mailbox), checkpoints=producer.checkpoints,
            publisher=producer.publisher, lease=self.lease,
            backpressure=None if producer.dry_run else producer.backpressure, metrics=producer.metrics,
            stop=self.stop, host=account.host, on_dry_run=producer.out)
        self.state = "starting"
        self.ready = False
        self.failures = 0
        self.connected_once = False
        self.published = 0
        self.last_error = ""
        self.last_sync = 0.0

    def status(self) -> dict[str, Any]:
        return {"state": self.state, "published": self.published, "last_sync": self.last_sync,
                "last_error": self.last_error, "lease_holder": self.lease.holder() if self.lease else None}

    def run(self) -> None:
        try:
            self._run()
            self.state = "stopped"
        except MailpipeError as exc:
            self.state, self.last_error = "failed", str(exc)
            self.producer.fail(exc)
        except Exception as exc:  # a bug: keep the traceback in the log, stop the producer cleanly
            log.exception("mailbox %s stopped by an unexpected error", self.name)
            self.state, self.last_error = "failed", f"{type(exc).__name__}: {exc}"
            self.producer.fail(exc)
        finally:
            if self.lease is not None:
                with contextlib.suppress(redis.RedisError):  # it expires by itself
                    self.lease.release()

    def _run(self) -> None:
        retrying = Retrying(retry=retry_if_exception_type(RETRYABLE), wait=self._backoff,
                            stop=lambda _: self.stop.is_set() or self.producer.once, sleep=self._sleep,
                            before_sleep=self._before_retry, reraise=True)
        while not self.stop.is_set():
            if not self._acquire():
                return
            try:
                retrying(self._session)
                return
            except (LeaseLost, CheckpointMoved) as exc:
                log.warning("%s: %s; going back to standby", self.name, exc)
                if self.lease is not None:
                    self.lease.held = False
                if self.producer.once:
                    raise
            except RETRYABLE:
                if self.stop.is_set():
                    return
                raise

    def _acquire(self) -> bool:
        """Take the lease, waiting as a standby while another producer holds it."""
        if self.lease is None:
            return True
        deadline = time.monotonic() + 3 * self.settings.lease_ttl_s
        while not self.stop.is_set():
            if self.lease.held or self.lease.acquire():
                return True
            if self.state != "standby":
                log.info("%s is synced by %s: standing by", self.name, self.lease.holder())
            self.state, self.ready = "standby", True
            if self.producer.once and time.monotonic() > deadline:
                raise LeaseLost(f"{self.name} is being synced by another producer ({self.lease.holder()})")
            self.stop.wait(min(1.0, self.settings.lease_ttl_s / 3))
        return False

    def _session(self) -> None:
        self.state = "connecting"
        with self.producer.connection(self.account).connect() as conn:
            if self.failures:
                self.producer.metrics.reconnect(self.account.username)
                log.info("%s: reconnected after %d failure(s); catching up", self.name, self.failures)
            while not self.stop.is_set():
                self.state = "syncing"
                stats = self.sync.run_pass(conn)
                self.published += stats.published
                self.failures, self.last_error = 0, ""
                if stats.complete:
                    self.ready, self.last_sync = True, time.time()
                if stats.published or stats.duplicates:
                    log.info("%s: published %d, already published %d", self.name, stats.published,
                             stats.duplicates)
                if self.producer.once:
                    return
                self._wait_for_mail(conn)

    def _wait_for_mail(self, conn: ImapConnection) -> None:
        keep_alive = self.lease.keep_alive if self.lease else (lambda: None)
        tick = min(1.0, self.settings.lease_ttl_s / 3)
        if self.settings.use_idle and conn.has_idle():
            if self.sync.has_new_mail(conn):  # announced during the pass: IDLE would not repeat it
                self.producer.metrics.poll(self.account.username, self.mailbox, "idle_wakeup")
                return
            self.state = "idle"
            outcome = conn.idle_wait(self.settings.idle_refresh_s, self.stop, tick_s=tick, on_tick=keep_alive)
            if outcome == CHANGED:
                self.producer.metrics.poll(self.account.username, self.mailbox, "idle_wakeup")
            elif outcome == TIMEOUT:
                conn.noop()  # the connection answered: it is alive; the pass below re-checks anyway
                self.producer.metrics.poll(self.account.username, self.mailbox, "idle_timeout")
            return
        self.state = "polling"
        deadline = time.monotonic() + self.settings.poll_interval_s
        while not self.stop.is_set() and time.monotonic() < deadline:
            self.stop.wait(min(tick, max(0.0, deadline - time.monotonic())))
            keep_alive()
        self.producer.metrics.poll(self.account.username, self.mailbox, "poll")

    def _backoff(self, state: RetryCallState) -> float:
        cap = self.settings.reconnect_max_s
        return float(min(cap, 2.0 ** min(self.failures - 1, 30)) * random.uniform(0.5, 1.0))

    def _sleep(self, seconds: float) -> None:
        self.stop.wait(seconds)

    def _before_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, ImapAuthError):  # never retried; here only for the type checker's sake
            return
        self.failures += 1
        self.state, self.last_error = "reconnecting", str(exc)
        if isinstance(exc, ImapUnavailable | ImapProtocolError):
            self.producer.metrics.fetch_error(error_kind(exc))
        log.warning("%s: %s; reconnecting (attempt %d)", self.name, exc, self.failures)
