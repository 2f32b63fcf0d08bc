"""Hand-written redis-py consumers: the limit of what a Python process can do, and the naive loop.

Run as ``python -m bench.raw_consumer MODE --url URL --stream S --group G`` where MODE is

* ``raw``: XREADGROUP COUNT 100, run the (no-op) handler on each entry, one pipelined XACK;
* ``idem``: the same plus an idempotency ``SADD`` per entry in the same pipeline (the cheapest form of
  "remember what was done"; not crash-safe: a crash between handler and pipeline repeats the batch);
* ``naive``: what a first implementation does: per entry SISMEMBER, handle, SADD, XACK, each a round trip.

With ``--latency-file`` the consumer records, per entry carrying a ``t_ns`` field (wall clock at XADD),
the delay until its handler finished, and writes them (nanoseconds, one per line) when it stops.
"""

from __future__ import annotations

import argparse
import signal
import time
from array import array
from pathlib import Path
from typing import Any

import redis

stopping = False


def _stop(*_: Any) -> None:
    global stopping
    stopping = True


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.raw_consumer")
    parser.add_argument("mode", choices=("raw", "idem", "naive"))
    parser.add_argument("--url", required=True)
    parser.add_argument("--stream", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--consumer", default="c1")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--block-ms", type=int, default=100)
    parser.add_argument("--exit-when-idle", action="store_true")
    parser.add_argument("--latency-file")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _stop)

    r = redis.Redis.from_url(args.url)
    done_key = f"{args.stream}:done"
    latencies = array("q")
    record = args.latency_file is not None
    processed = 0
    while not stopping:
        reply: Any = r.xreadgroup(args.group, args.consumer, {args.stream: ">"}, count=args.batch_size,
                             block=args.block_ms)
        if not reply:
            if args.exit_when_idle and processed:
                break
            continue
        entries = reply[0][1]
        if args.mode == "naive":
            for entry_id, fields in entries:
                idem = fields[b"idem"]
                if not r.sismember(done_key, idem):
                    handle(fields)
                    r.sadd(done_key, idem)
                r.xack(args.stream, args.group, entry_id)
                if record:
                    latencies.append(time.time_ns() - int(fields[b"t_ns"]))
        else:
            for _entry_id, fields in entries:
                handle(fields)
                if record:
                    latencies.append(time.time_ns() - int(fields[b"t_ns"]))
            pipe = r.pipeline(transaction=False)
            if args.mode == "idem":
                for _entry_id, fields in entries:
                    pipe.sadd(done_key, fields[b"idem"])
            pipe.xack(args.stream, args.group, *[entry_id for entry_id, _ in entries])
            pipe.execute()
        processed += len(entries)
    if record:
        Path(args.latency_file).write_text("\n".join(map(str, latencies)))
    return 0


def handle(fields: dict[bytes, bytes]) -> None:
    """The no-op handler."""


if __name__ == "__main__":
    raise SystemExit(main())
