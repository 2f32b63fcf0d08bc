"""One sync pass over one mailbox: from the checkpoint to the newest message, in UID windows.

A pass: SELECT; compare UIDVALIDITY with the checkpoint (first run: place the start point; changed:
re-sync a date window, see ``_reconcile``); finish a post-publish action a crash interrupted; then walk
UIDs above ``last_uid`` in windows (metadata first, bodies in batches bounded by count and bytes),
publishing each message together with its checkpoint advance (``publish.lua``). ``UID N:*`` returns the
highest message even when its UID is below N, so every window is filtered ``uid > last`` here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import quote

from mailpipe.entry import Email, Source, build_entry
from mailpipe.metrics import ProducerMetrics
from mailpipe.producer.backpressure import Backpressure
from mailpipe.producer.checkpoint import Checkpoint, CheckpointStore
from mailpipe.producer.errors import ImapProtocolError
from mailpipe.producer.identity import email_key
from mailpipe.producer.imap_source import ImapConnection, MailboxState, MessageMeta
from mailpipe.producer.lease import Lease
from mailpipe.producer.mime import parse_email
from mailpipe.producer.publish import DUPLICATE, PUBLISHED, Publication, Publisher, Target
from mailpipe.producer.settings import ProducerSettings

log = logging.getLogger(__name__)
MAX_WINDOW = 1_000_000


@dataclass
class PassStats:
    fetched: int = 0
    published: int = 0
    duplicates: int = 0
    skipped: int = 0
    complete: bool = True
    lines: list[str] = field(default_factory=list)  # dry-run summaries


class MailboxSync:
    def __init__(self, *, settings: ProducerSettings, account: str, mailbox: str, action: str,
                 checkpoints: CheckpointStore, publisher: Publisher | None, lease: Lease | None,
                 backpressure: Backpressure | None, metrics: ProducerMetrics, stop: threading.Event,
                 host: str = "", on_dry_run: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self.account, self.mailbox, self.action = account, mailbox, action
        self.checkpoints = checkpoints
        self.publisher = publisher  # None: dry run (fetch, parse, print; write nothing)
        self.lease = lease
        self.backpressure = backpressure
        self.metrics = metrics
        self.stop = stop
        self.policy = settings.size_policy()
        self.ref_base = f"imap://{quote(account, safe='')}@{host}/{quote(mailbox, safe='')}"
        self.on_dry_run = on_dry_run or print
        self.last_uid = 0  # where the last pass ended

    def has_new_mail(self, conn: ImapConnection) -> bool:
        """Mail that arrived during the last pass (the server may have announced it before IDLE began)."""
        return bool(conn.uids_after(self.last_uid))

    @property
    def dry_run(self) -> bool:
        return self.publisher is None

    def run_pass(self, conn: ImapConnection) -> PassStats:
        stats = PassStats()
        state = conn.select(self.mailbox, readonly=self.action == "none" or self.dry_run)
        cp = self._reconcile(self.checkpoints.get(self.account, self.mailbox), state, conn)
        if not self.dry_run and cp.acted_uid < cp.last_uid:
            self._finish_action(conn, cp)
        window = self.settings.uid_window
        lo = cp.last_uid + 1
        hi_known = state.uidnext - 1 if state.uidnext else None
        pending: list[MessageMeta] = []
        while not self.stop.is_set():
            last_window = hi_known is None or lo + window - 1 >= hi_known
            metas = [m for m in conn.fetch_meta(lo, None if last_window else lo + window - 1)
                     if m.uid > cp.last_uid]
            for meta in metas:
                if self._below_floor(cp, meta):
                    stats.skipped += 1
                    continue
                pending.append(meta)
                if (len(pending) >= self.settings.fetch_batch_messages
                        or sum(m.size for m in pending) >= self.settings.fetch_batch_bytes):
                    cp = self._batch(conn, cp, pending, stats)
                    pending = []
            if metas and self._below_floor(cp, metas[-1]) and not pending:
                cp = self._skip_to(cp, metas[-1].uid)  # a long run of old mail: move the checkpoint past it
            if last_window:
                break
            lo += window
            # Adapt to the density of UIDs: sparse ranges (after deletions) would otherwise cost one
            # round trip per empty window; dense ones keep each response near uid_window entries.
            if len(metas) < self.settings.uid_window // 4:
                window = min(window * 2, MAX_WINDOW)
            elif len(metas) > self.settings.uid_window * 2:
                window = max(self.settings.uid_window, window // 2)
        if pending and not self.stop.is_set():
            cp = self._batch(conn, cp, pending, stats)
        self.last_uid = cp.last_uid
        stats.complete = not self.stop.is_set()
        if stats.complete and not self.dry_run:
            self.checkpoints.update(self.account, self.mailbox, cp.uidvalidity, self.lease,
                                    synced_ms=int(time.time() * 1000))
            self.metrics.sync_success(self.account, self.mailbox)
        return stats

    # --- checkpoint placement --------------------------------------------------------------------

    def _reconcile(self, cp: Checkpoint | None, state: MailboxState, conn: ImapConnection) -> Checkpoint:
        uidnext = state.uidnext if state.uidnext is not None else conn.highest_uid() + 1
        start_floor = self.settings.start_floor()
        start_floor_ms = int(start_floor.timestamp() * 1000) if start_floor else 0
        if cp is None:
            if self.settings.start == "new":
                new = Checkpoint(state.uidvalidity, last_uid=uidnext - 1, acted_uid=uidnext - 1)
            else:
                new = Checkpoint(state.uidvalidity, last_uid=0, floor_ms=start_floor_ms,
                                 floor_uid=uidnext if start_floor_ms else 0)
            log.info("first sync of %s/%s: start point %s (UIDVALIDITY %d, UIDNEXT %d)", self.account,
                     self.mailbox, self.settings.start, state.uidvalidity, uidnext)
            return self._store(new, expected=None)
        if cp.uidvalidity == state.uidvalidity:
            return cp
        # UIDVALIDITY changed: every UID we know is void. Mail older than the last complete sync was
        # published; re-check what arrived around and after it. The published set turns every message
        # seen before into a no-op, so a server that changes UIDVALIDITY on every session costs one
        # small re-check per session, never a re-ingest.
        seen_ms = cp.synced_ms or cp.updated_ms
        floor_ms = max(start_floor_ms, seen_ms - self.settings.resync_margin_s * 1000) if seen_ms else start_floor_ms
        self.metrics.uidvalidity_change(self.account, self.mailbox)
        since = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(floor_ms / 1000)) if floor_ms else "the start"
        log.warning("UIDVALIDITY of %s/%s changed from %d to %d: re-syncing mail received since %s "
                    "(mail published before is not published again)", self.account, self.mailbox,
                    cp.uidvalidity, state.uidvalidity, since)
        new = Checkpoint(state.uidvalidity, last_uid=0, floor_ms=floor_ms, floor_uid=uidnext if floor_ms else 0,
                         uv_changes=cp.uv_changes + 1)
        return self._store(new, expected=cp.uidvalidity)

    def _store(self, new: Checkpoint, *, expected: int | None) -> Checkpoint:
        if not self.dry_run:
            self.checkpoints.reset(self.account, self.mailbox, new, expected=expected, lease=self.lease)
        return new

    def _below_floor(self, cp: Checkpoint, meta: MessageMeta) -> bool:
        if not cp.floor_ms or meta.uid >= cp.floor_uid or meta.internaldate is None:
            return False
        return meta.internaldate.timestamp() * 1000 < cp.floor_ms

    def _skip_to(self, cp: Checkpoint, uid: int) -> Checkpoint:
        if self.publisher is None or uid <= cp.last_uid:
            return cp
        self.publisher.publish([Publication(key="-", fields=None, uid=uid)], self._target(cp))
        return Checkpoint(**{**cp.__dict__, "last_uid": uid})

    def _target(self, cp: Checkpoint) -> Target:
        return Target(self.account, self.mailbox, cp.uidvalidity, self.lease)

    # --- one batch ---------------------------------------------------------------------------------

    def _batch(self, conn: ImapConnection, cp: Checkpoint, metas: list[MessageMeta], stats: PassStats) -> Checkpoint:
        if not self.dry_run:
            if self.backpressure is not None and not self.backpressure.wait(
                    self.stop, on_pause=lambda: self.metrics.backpressure_pause(self.account),
                    keep_alive=self.lease.keep_alive if self.lease else None):
                return cp
            if self.lease is not None:
                self.lease.keep_alive()
        limit = self.settings.max_fetch_bytes
        bodies = conn.fetch_bodies([m.uid for m in metas if m.size <= limit])
        headers = conn.fetch_headers([m.uid for m in metas if m.size > limit])
        missing = [m.uid for m in metas if m.uid not in bodies and m.uid not in headers]
        if missing:
            self._check_gone(conn, missing)
        items: list[Publication] = []
        for meta in metas:
            big = meta.size > limit
            raw = headers.get(meta.uid) if big else bodies.get(meta.uid)
            if raw is None:  # expunged between the metadata and the body fetch
                items.append(Publication(key="-", fields=None, uid=meta.uid))
                continue
            stats.fetched += 1
            self.metrics.bytes_fetched(self.account, len(raw))
            ref = f"{self.ref_base};UIDVALIDITY={cp.uidvalidity}/;UID={meta.uid}"
            email = parse_email(raw, policy=self.policy, raw_ref=ref, headers_only_size=meta.size if big else None)
            if email.defects:
                self.metrics.parse_defect(len(email.defects))
            key = email_key(self.account, raw, headers_only_size=meta.size if big else None)
            if self.publisher is None:
                self.on_dry_run(summary(f"uid={meta.uid}", key, email))
                continue
            fields = build_entry(email, idempotency_key=key, policy=self.policy, source=Source(
                kind="imap", account=self.account, mailbox=self.mailbox, uidvalidity=cp.uidvalidity, uid=meta.uid))
            items.append(Publication(key=key, fields=fields, uid=meta.uid))
        if self.publisher is None or not items:
            return cp
        started = time.perf_counter()
        result = self.publisher.publish(items, self._target(cp))
        elapsed = (time.perf_counter() - started) / len(items)
        for _ in items:
            self.metrics.publish_seconds(elapsed)
        for item, outcome in zip(items, result.outcomes, strict=True):
            if outcome.status == PUBLISHED and item.fields is not None:
                # the correlation id in this line is the one the worker's handler lines carry
                log.info("published", extra={"correlation_id": item.fields["cid"], "idempotency_key": item.key,
                                             "stream_id": outcome.stream_id, "account": self.account,
                                             "mailbox": self.mailbox, "uid": item.uid})
        published = result.count(PUBLISHED)
        stats.published += published
        stats.duplicates += result.count(DUPLICATE)
        if published:
            self.metrics.published(self.account, self.mailbox, published)
        last = metas[-1].uid
        acted = [o_uid for o_uid, o in zip([i.uid for i in items], result.outcomes, strict=True)
                 if o.status in (PUBLISHED, DUPLICATE) and o_uid is not None]
        conn.apply_action(acted, self.action)
        self.checkpoints.update(self.account, self.mailbox, cp.uidvalidity, self.lease, acted_uid=last)
        return Checkpoint(**{**cp.__dict__, "last_uid": max(cp.last_uid, last), "acted_uid": last})

    def _check_gone(self, conn: ImapConnection, uids: list[int]) -> None:
        """A body missing from a FETCH answer: fine if the message was expunged, an error otherwise."""
        still = conn.existing(uids)
        if still:
            raise ImapProtocolError(f"{self.account}/{self.mailbox}: the server returned no body for UID(s) "
                                    f"{still[:5]} that still exist; will retry")

    def _finish_action(self, conn: ImapConnection, cp: Checkpoint) -> None:
        """A crash between a publish and its action: act on what was published since ``acted_uid``."""
        if self.action != "none":
            metas = conn.fetch_meta(cp.acted_uid + 1, cp.last_uid)
            uids = [m.uid for m in metas if cp.acted_uid < m.uid <= cp.last_uid and not self._below_floor(cp, m)]
            log.info("finishing the post-publish action %s on %d message(s) of %s/%s", self.action, len(uids),
                     self.account, self.mailbox)
            conn.apply_action(uids, self.action)
        self.checkpoints.update(self.account, self.mailbox, cp.uidvalidity, self.lease, acted_uid=cp.last_uid)


def summary(where: str, key: str, email: Email) -> str:
    """One line per message for --dry-run."""
    sender = email.from_[0] if email.from_ else "?"
    parts = [where, f"key={key[:15]}", f"size={email.size}", f"from={sender[:60]!r}", f"subject={email.subject[:80]!r}"]
    if email.attachments:
        parts.append(f"attachments={len(email.attachments)}")
    if email.defects:
        parts.append(f"defects={len(email.defects)}")
    return " ".join(parts)
