"""The worker: read a batch, run handlers, settle every entry atomically, keep house.

The loop reads as a story:

1. take over this consumer's own pending entries (left by a crash or restart under the same name);
2. read new entries with XREADGROUP while handler capacity is free and the circuit breaker allows;
3. claim each entry's idempotency key (one Lua call per batch): done keys are acknowledged as
   duplicates, keys another worker is handling right now wait, the rest run;
4. handlers run concurrently (coroutines on the loop, plain functions in a thread pool);
5. outcomes are settled in batches by one Lua call (ack + mark done / schedule retry / dead-letter);
6. housekeeping runs beside it (see :mod:`mailpipe.housekeeping`).

Connection errors are caught at the loop boundary and retried with a capped backoff; nothing
unfinished is ever acknowledged.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from mailpipe.breaker import CLOSED, OPEN, Breaker
from mailpipe.consumer_group import ensure_group, is_nogroup
from mailpipe.entry import Message, parse_entry
from mailpipe.errors import MalformedEntry, PermanentError, RetryLater, TransientError
from mailpipe.handler import Context, Handler, is_async_handler
from mailpipe.housekeeping import Housekeeping
from mailpipe.idempotency import ClaimStatus, Idempotency
from mailpipe.metrics import WorkerMetrics
from mailpipe.recovery import Recovery
from mailpipe.retries import RetryPolicy
from mailpipe.scripts import register
from mailpipe.settings import WorkerSettings
from mailpipe.settle import DEAD, OK, RETRY, Outcome, Settler

log = logging.getLogger("mailpipe.worker")

# Exceptions that say "a downstream system is failing" and so count towards the circuit breaker.
DOWNSTREAM_ERRORS: tuple[type[BaseException], ...] = (TransientError, ConnectionError, TimeoutError)
SETTLE_BATCH = 500
MAX_BACKOFF_S = 5.0


@dataclass
class Summary:
    """What one worker run did (printed at exit, also served on /status)."""

    processed: int = 0
    duplicates: int = 0
    retried: int = 0
    dead_lettered: int = 0
    reclaimed: int = 0
    poison: int = 0
    gone: int = 0
    not_pending: int = 0
    last_error: str = ""

    @property
    def failed(self) -> int:
        return self.retried + self.dead_lettered

    def line(self) -> str:
        return (f"processed {self.processed}, skipped as duplicate {self.duplicates}, failed {self.failed} "
                f"(retried {self.retried}, dead-lettered {self.dead_lettered})")


class _NotStarted(Exception):
    """Marks an entry that was held but never handed to the handler (the worker is stopping)."""


_NOT_STARTED = _NotStarted()


@dataclass
class _InFlight:
    message: Message
    task: asyncio.Task[None] | None  # None for plain-function handlers (run by the pool's runners)


class Worker:
    def __init__(self, client: aioredis.Redis, settings: WorkerSettings, handler: Handler, *,
                 consumer: str, metrics: WorkerMetrics | None = None) -> None:
        self.client = client
        self.settings = settings
        self.handler = handler
        self.consumer = consumer
        self.group = settings.group
        self.keys = settings.keys()
        self.metrics = metrics or WorkerMetrics(None, stream=settings.stream, group=self.group,
                                                consumer=consumer)
        self.scripts = register(client)
        self.idempotency = Idempotency(
            self.keys, self.group, retention_s=settings.dedup_retention_s, bucket_s=settings.dedup_bucket_s,
            claim_ttl_ms=settings.claim_ttl_ms, claim_script=self.scripts.claim)
        self.settler = Settler(self.keys, self.group, consumer, self.idempotency, self.scripts.settle)
        self.recovery = Recovery(
            self.keys, self.group, consumer, self.scripts, min_idle_ms=settings.reclaim_idle_ms,
            max_deliveries=settings.max_deliveries, claim_ttl_ms=settings.claim_ttl_ms)
        self.breaker = Breaker(
            self.keys.breaker(self.group), self.scripts.breaker, threshold=settings.breaker_threshold,
            cooldown_s=settings.breaker_cooldown_s, token=consumer, on_change=self.metrics.breaker)
        self.policy = RetryPolicy(settings.retry_base_s, settings.retry_factor, settings.retry_cap_s,
                                  settings.max_attempts)
        self.housekeeping = Housekeeping(self)
        self.summary = Summary()
        self._async_handler = is_async_handler(handler)
        self._prefetch = settings.effective_prefetch
        self._slots = asyncio.Semaphore(settings.concurrency)  # coroutine handlers running at once
        self._side_tasks: set[asyncio.Future[Any]] = set()
        self._sync_queue: collections.deque[Message] = collections.deque()
        self._runners = 0
        self._reclaim_lock = asyncio.Lock()  # orphan reclaim vs. the exit-when-idle decision
        self._pool = None if self._async_handler else ThreadPoolExecutor(
            max_workers=settings.concurrency, thread_name_prefix="handler")
        self._inflight: dict[str, _InFlight] = {}
        self._deferred: dict[str, Message] = {}
        self._to_settle: list[Outcome] = []
        self._settle_wake = asyncio.Event()
        self._settled = asyncio.Event()
        self._capacity = asyncio.Event()
        self._stopping = False
        self._closed = False  # set when shutdown is over: background loops end
        self._log_extra = {"consumer": consumer, "group": self.group, "stream": settings.stream}
        self._handler_log = logging.getLogger("mailpipe.handler")

    # --- public ----------------------------------------------------------------------------------

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def ready(self) -> tuple[bool, str]:
        """For /ready (called from the HTTP thread: reads plain attributes only)."""
        if self._redis_down:
            return False, "Redis unreachable"
        if self.breaker.state == OPEN:
            return False, "circuit breaker open"
        if self._stopping:
            return False, "stopping"
        return True, "ok"

    def status(self) -> dict[str, object]:
        return {
            "consumer": self.consumer, "group": self.group, "stream": self.settings.stream,
            "inflight": len(self._inflight), "deferred": len(self._deferred),
            "breaker": self.breaker.state, "stopping": self._stopping,
            "processed": self.summary.processed, "duplicates": self.summary.duplicates,
            "retried": self.summary.retried, "dead_lettered": self.summary.dead_lettered,
            "reclaimed": self.summary.reclaimed, "last_error": self.summary.last_error,
        }

    def request_stop(self) -> None:
        """Warm stop: read nothing more, let in-flight handlers finish, settle them, return."""
        if not self._stopping:
            log.info("stopping: finishing in-flight handlers", extra={**self._log_extra,
                                                                        "inflight": len(self._inflight)})
        self._stopping = True
        self._capacity.set()
        # A read already blocked in Redis is not cancelled: Redis would still deliver into our pending
        # list; it returns within block_ms and what it brings is handled before the worker exits.

    async def run(self) -> Summary:
        await self._call_with_retry(self._ensure_group)
        settle_task = asyncio.create_task(self._settle_loop(), name="settle")
        house_task = asyncio.create_task(self.housekeeping.run(), name="housekeeping")
        log.info("worker started", extra={**self._log_extra, "concurrency": self.settings.concurrency})
        try:
            await self._recover_own()
            while not self._stopping:
                try:
                    if not await self._step():
                        break
                except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                    await self._redis_trouble(exc)
                except ResponseError as exc:
                    if not is_nogroup(exc):
                        raise
                    await self._recreate_group()
        finally:
            await self._shutdown(settle_task, house_task)
        return self.summary

    # --- the loop --------------------------------------------------------------------------------

    async def _step(self) -> bool:
        """One turn of the loop; False when an --exit-when-idle worker is done."""
        if self._deferred:
            await self._retry_deferred()
        if self._side_tasks:  # failures still being recorded in the breaker decide whether we may read
            await asyncio.wait(list(self._side_tasks), timeout=5)
        view = await self.breaker.check()
        if view.state == OPEN or (view.state != CLOSED and not view.is_probe):
            await self._wait(self.settings.housekeeping_interval_s)
            return True
        capacity = self._prefetch - len(self._inflight) - len(self._deferred)
        if view.state != CLOSED:  # the half-open probe: exactly one entry
            capacity = 0 if self._inflight else 1
        # Read in whole batches: waiting for half a batch of free capacity (unless nothing runs) keeps
        # reads, claims and settles batched instead of fragmenting into one-entry round trips.
        want = min(self.settings.batch_size, self._prefetch)
        if capacity <= 0 or (capacity < want // 2 and self._inflight):
            self._capacity.clear()
            await self._wait_capacity()
            return True
        entries = await self._read(min(capacity, self.settings.batch_size))
        if entries:
            await self.dispatch(entries)
            return True
        if self.settings.exit_when_idle:
            return not await self._idle()
        return True

    async def _read(self, count: int) -> list[tuple[str, dict[str, str]]]:
        block = self.settings.block_ms
        if self.settings.exit_when_idle:
            block = min(block, 50)
        reply: Any = await self.client.xreadgroup(
            self.group, self.consumer, {self.keys.stream: ">"}, count=count, block=block)
        if not reply:
            return []
        return [(sid, fields) for sid, fields in reply[0][1] if fields is not None]

    async def dispatch(self, entries: list[tuple[str, dict[str, str]]]) -> None:
        """Parse, claim and start handlers for delivered entries (also used for reclaimed ones)."""
        candidates: list[Message] = []
        immediate: list[Outcome] = []
        for stream_id, fields in entries:
            if stream_id in self._inflight or stream_id in self._deferred:
                continue  # already ours and being handled (e.g. found again by recovery)
            try:
                message = parse_entry(stream_id, fields)
            except MalformedEntry as exc:
                self.metrics.malformed()
                log.error("malformed entry dead-lettered: %s", exc, extra={**self._log_extra,
                                                                          "stream_id": stream_id})
                # the key of a malformed entry may itself be malformed: its claim is never taken anyway
                immediate.append(Outcome.dead(stream_id, "-", error_type="MalformedEntry", message=str(exc),
                                              traceback="", reason="malformed"))
                continue
            if message.target_group and message.target_group != self.group:
                immediate.append(Outcome.duplicate(stream_id, foreign=True))  # a retry copy for another group
                continue
            candidates.append(message)
        await self._claim_and_start(candidates, immediate)
        self._queue(immediate)

    async def _claim_and_start(self, messages: list[Message], immediate: list[Outcome]) -> None:
        statuses = await self.idempotency.claim(
            [(m.stream_id, m.idempotency_key, m.bypass_idempotency) for m in messages], self.consumer)
        claimed: list[Message] = []
        for message, status in zip(messages, statuses, strict=True):
            self._deferred.pop(message.stream_id, None)
            if status == ClaimStatus.CLAIMED:
                claimed.append(message)
            elif status == ClaimStatus.DONE:
                immediate.append(Outcome.duplicate(message.stream_id, message.idempotency_key))
            else:
                self._deferred[message.stream_id] = message
        self._start_many(claimed)

    async def _retry_deferred(self) -> None:
        immediate: list[Outcome] = []
        await self._claim_and_start(list(self._deferred.values()), immediate)
        self._queue(immediate)
        if self._deferred:
            await self._wait(0.05)  # another worker holds the key; its claim ends with its handler

    def _start_many(self, messages: list[Message]) -> None:
        if not messages:
            return
        if self._async_handler:
            for message in messages:
                self._inflight[message.stream_id] = _InFlight(message, asyncio.create_task(self._run_async(message)))
        else:
            for message in messages:
                self._inflight[message.stream_id] = _InFlight(message, None)
            self._sync_queue.extend(messages)
            self._ensure_runners()
        self.metrics.set_inflight(len(self._inflight))

    def _ensure_runners(self) -> None:
        """Keep up to `concurrency` pool threads pulling entries (called on the loop thread only)."""
        loop = asyncio.get_running_loop()
        while self._sync_queue and self._runners < self.settings.concurrency:
            self._runners += 1
            future = loop.run_in_executor(self._pool, self._runner, loop)
            future.add_done_callback(self._runner_done)

    def _runner_done(self, future: asyncio.Future[None]) -> None:
        self._runners -= 1
        if not future.cancelled() and future.exception() is not None:
            log.error("handler runner failed: %r", future.exception(), extra=self._log_extra)
        if not self._closed:
            self._ensure_runners()  # entries queued while this runner was leaving

    def _context(self, message: Message) -> Context:
        extra = {**self._log_extra, "stream_id": message.stream_id, "idempotency_key": message.idempotency_key,
                 "correlation_id": message.correlation_id}
        return Context(message.idempotency_key, message.attempt, message.stream_id, self.consumer,
                       message.correlation_id, logging.LoggerAdapter(self._handler_log, extra))

    async def _run_async(self, message: Message) -> None:
        error: BaseException | None = None
        try:
            async with self._slots:
                if self._stopping:
                    error = _NOT_STARTED
                else:
                    started = time.perf_counter()
                    try:
                        await self.handler(message, self._context(message))  # type: ignore[misc]
                    except Exception as exc:  # the handler's failure is data, not a crash of the worker
                        error = exc
                    self.metrics.handler_seconds(time.perf_counter() - started)
        except asyncio.CancelledError:
            self._done([message])
            raise
        self._finish([(message, error)])

    def _runner(self, loop: asyncio.AbstractEventLoop) -> None:
        """Runs on a pool thread: takes the next entry until none is left, so a free thread never waits
        behind a slow handler and one hand-off serves many entries. Each result goes to the loop at once."""
        while True:
            try:
                message = self._sync_queue.popleft()
            except IndexError:
                return
            if self._stopping:  # a stop request: what has not started is released, not run
                loop.call_soon_threadsafe(self._finish, [(message, _NOT_STARTED)])
                continue
            started = time.perf_counter()
            error: Exception | None = None
            try:
                self.handler(message, self._context(message))
            except Exception as exc:  # the handler's failure is data, not a crash of the worker
                error = exc
            self.metrics.handler_seconds(time.perf_counter() - started)
            loop.call_soon_threadsafe(self._finish, [(message, error)])

    def _finish(self, results: Sequence[tuple[Message, BaseException | None]]) -> None:
        outcomes = []
        for message, error in results:
            if error is None:
                outcomes.append(Outcome.ok(message.stream_id, message.idempotency_key, message.enqueued_ms))
            elif error is _NOT_STARTED:
                outcomes.append(Outcome.release(message.stream_id, message.idempotency_key))
            else:
                assert isinstance(error, Exception)
                outcomes.append(self._failure(message, error))
        self._done([m for m, _ in results])
        self._queue(outcomes)

    def _done(self, messages: list[Message]) -> None:
        for message in messages:
            self._inflight.pop(message.stream_id, None)
        self.metrics.set_inflight(len(self._inflight))
        self._capacity.set()

    def _failure(self, message: Message, exc: Exception) -> Outcome:
        extra = {**self._log_extra, "stream_id": message.stream_id, "idempotency_key": message.idempotency_key,
                 "correlation_id": message.correlation_id}
        error = f"{type(exc).__name__}: {exc}"
        self.summary.last_error = error[:300]
        # a half-open probe that fails for any reason re-opens the breaker
        if isinstance(exc, DOWNSTREAM_ERRORS) or self.breaker.state != CLOSED:
            self._background(self._record_breaker_failure())
        if isinstance(exc, PermanentError):
            reason = "permanent"
        elif isinstance(exc, MalformedEntry):  # the email document, decoded on first use, is broken
            reason = "malformed"
        elif self.policy.exhausted(message.attempt) and not isinstance(exc, RetryLater):
            reason = "max_attempts"
        else:
            delay = exc.delay_s if isinstance(exc, RetryLater) else self.policy.delay(message.attempt)
            log.warning("handler failed, retry %d in %.1fs: %s", message.attempt + 1, delay, error,
                        extra={**extra, "attempt": message.attempt, "error_type": type(exc).__name__})
            return Outcome.retry(message.stream_id, message.idempotency_key,
                                 due_ms=int((time.time() + delay) * 1000), next_attempt=message.attempt + 1,
                                 error=exc)
        log.error("handler failed, dead-lettered (%s): %s", reason, error,
                  extra={**extra, "attempt": message.attempt, "error_type": type(exc).__name__})
        return Outcome.dead(message.stream_id, message.idempotency_key, error_type=type(exc).__name__,
                            message=str(exc), traceback="".join(traceback.format_exception(exc)),
                            reason=reason)

    async def _record_breaker_failure(self) -> None:
        try:
            await self.breaker.record_failure()
        except RedisError:
            log.warning("could not record a failure in the circuit breaker", extra=self._log_extra)

    def _background(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._side_tasks.add(task)  # keep a reference until done (the loop holds tasks weakly)
        task.add_done_callback(self._side_tasks.discard)

    # --- settling --------------------------------------------------------------------------------

    def _queue(self, outcomes: list[Outcome]) -> None:
        if outcomes:
            self._to_settle.extend(outcomes)
            self._settle_wake.set()

    async def _settle_loop(self) -> None:
        while not self._closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._settle_wake.wait(), timeout=1.0)
            self._settle_wake.clear()
            await self._settle_pending()

    async def _settle_pending(self) -> None:
        while self._to_settle:
            batch = self._to_settle[:SETTLE_BATCH]
            try:
                results = await self.settler.settle(batch)
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                await self._redis_trouble(exc)
                continue
            except ResponseError as exc:
                if not is_nogroup(exc):
                    raise
                await self._recreate_group()
                continue
            del self._to_settle[: len(batch)]
            self._redis_down = False
            self._trouble_delay = 0.1
            self._account(batch, results)
            if any(o.kind == OK for o in batch):
                try:
                    await self.breaker.record_success()
                except RedisError:
                    log.warning("could not record success in the circuit breaker", extra=self._log_extra)
        self._settled.set()

    def _account(self, batch: list[Outcome], results: list[int]) -> None:
        now_ms = time.time() * 1000
        summary, metrics = self.summary, self.metrics
        for outcome, settled in zip(batch, results, strict=True):
            if not settled and outcome.kind in (RETRY, DEAD):
                summary.not_pending += 1  # someone else settled it; our outcome had no effect
                continue
            kind = outcome.counted_as
            if kind == "success":
                summary.processed += 1
                metrics.end_to_end_seconds(max(0.0, (now_ms - outcome.enqueued_ms) / 1000))
            elif kind == "duplicate":
                summary.duplicates += 1
            elif kind == "retried":
                summary.retried += 1
                metrics.retry_scheduled()
            elif kind == "dead_lettered":
                summary.dead_lettered += 1
            else:
                continue
            metrics.processed(kind)

    # --- start, idle, stop -----------------------------------------------------------------------

    async def _ensure_group(self) -> None:
        await ensure_group(self.client, self.keys.stream, self.group, self.settings.group_start_id)

    async def _recreate_group(self) -> None:
        log.warning("consumer group missing (Redis restarted without data, or it was deleted): recreating",
                    extra=self._log_extra)
        await self._call_with_retry(self._ensure_group)

    async def _recover_own(self) -> None:
        """Deliver again what was pending on this consumer name before a crash or restart.

        One entry at a time, each settled before the next is claimed: one of them may be what crashed the
        worker, and taking them together would count every crash against all of them (and dead-letter
        innocent entries as poison).
        """
        cursor = "-"
        while not self._stopping:
            found = await self._call_with_retry(functools.partial(self.recovery.own, 1, cursor))
            self.note_recovered(found.poison, found.gone)
            if not found.entries:
                if found.poison or found.gone:
                    continue
                return
            stream_id = found.entries[0][0]
            cursor = "(" + stream_id
            await self.dispatch(found.entries)
            while not self._stopping and (stream_id in self._inflight or self._unsettled(stream_id)):
                await self._wait(0.005)

    def _unsettled(self, stream_id: str) -> bool:
        return any(o.stream_id == stream_id for o in self._to_settle)

    def note_recovered(self, poison: list[str], gone: list[str]) -> None:
        if poison:
            self.summary.poison += len(poison)
            self.summary.dead_lettered += len(poison)
            self.metrics.poison(len(poison))
            self.metrics.processed("dead_lettered", len(poison))
            log.error("dead-lettered %d poison entries (too many deliveries)", len(poison),
                      extra={**self._log_extra, "stream_ids": poison[:20]})
        if gone:
            self.summary.gone += len(gone)
            self.metrics.payload_gone(len(gone))
            log.warning("dropped %d pending entries whose payload was deleted", len(gone),
                        extra={**self._log_extra, "stream_ids": gone[:20]})

    async def _idle(self) -> bool:
        """True when nothing is left for this consumer: no in-flight, deferred or unsettled entries, no own
        pending entries and no scheduled retries of the group (their due time is awaited)."""
        if self._inflight or self._deferred or self._to_settle:
            if self._inflight:
                self._capacity.clear()
                await self._wait_capacity()
            return False
        # Decided under the reclaim lock: housekeeping must not take orphans onto this consumer between
        # the check of its pending list and the decision to exit (they would be left pending on it).
        async with self._reclaim_lock:
            own = await self.client.xpending_range(self.keys.stream, self.group, "-", "+", 1,
                                                   consumername=self.consumer)
            first_due = await self.client.zrange(self.keys.retry_schedule(self.group), 0, 0, withscores=True)
            if not own and not first_due:
                self._stopping = True
                return True
        if own:
            await self._recover_own()
            return False
        wait_s = float(first_due[0][1]) / 1000 - time.time()
        await self._wait(min(max(wait_s, 0.01), 0.5))
        await self.housekeeping.move_due_retries()
        return False

    async def _shutdown(self, settle_task: asyncio.Task[None], house_task: asyncio.Task[None]) -> None:
        self._stopping = True  # housekeeping now only heart-beats the handlers still running
        give_up = time.monotonic() + self.settings.shutdown_timeout_s
        while self._inflight and time.monotonic() < give_up:
            await self._wait(min(0.05, max(0.0, give_up - time.monotonic())))
        if self._inflight:
            log.warning("%d handlers did not finish within the shutdown timeout; their entries stay "
                        "pending (not acknowledged) for recovery", len(self._inflight), extra=self._log_extra)
            for held in self._inflight.values():
                if held.task is not None:
                    held.task.cancel()
        deadline = time.monotonic() + max(5.0, self.settings.shutdown_timeout_s)
        while self._to_settle and time.monotonic() < deadline:
            self._settled.clear()
            self._settle_wake.set()
            try:
                await asyncio.wait_for(self._settled.wait(), timeout=max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                break
        if self._to_settle:
            log.error("%d outcomes could not be settled before exit; those entries stay pending",
                      len(self._to_settle), extra=self._log_extra)
        # Background tasks also watch _stopping: a cancellation swallowed inside a Redis call (seen with
        # redis-py's asyncio client) must not keep the process alive, so waiting for them is bounded.
        self._closed = True
        settle_task.cancel()
        house_task.cancel()
        _, stuck = await asyncio.wait([settle_task, house_task], timeout=5)
        if stuck:
            log.warning("background tasks did not stop in time; exiting anyway", extra=self._log_extra)
        for task in (settle_task, house_task):
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.error("background task failed: %r", task.exception(), extra=self._log_extra)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        log.info("worker stopped: %s", self.summary.line(), extra=self._log_extra)

    # --- waiting and trouble ---------------------------------------------------------------------

    async def _wait_capacity(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._capacity.wait(), timeout=self.settings.housekeeping_interval_s)

    async def _wait(self, seconds: float) -> None:
        """Sleep that a stop request cuts short."""
        self._capacity.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._capacity.wait(), timeout=seconds)

    _trouble_delay = 0.1
    _redis_down = False

    async def _redis_trouble(self, exc: BaseException) -> None:
        self.metrics.redis_error()
        self._redis_down = True
        self.summary.last_error = f"redis: {type(exc).__name__}: {exc}"[:300]
        log.warning("Redis unavailable (%s), retrying in %.1fs", type(exc).__name__, self._trouble_delay,
                    extra=self._log_extra)
        await asyncio.sleep(self._trouble_delay)
        self._trouble_delay = min(self._trouble_delay * 2, MAX_BACKOFF_S)

    async def _call_with_retry(self, fn: Callable[[], Any]) -> Any:
        while True:
            try:
                result = await fn()
                self._trouble_delay = 0.1
                self._redis_down = False
                return result
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                await self._redis_trouble(exc)
            except ResponseError as exc:
                if not is_nogroup(exc):
                    raise
                await self._ensure_group()
