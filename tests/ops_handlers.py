"""Handler for worker processes of the backup/restore round trip, configured through the environment.

MAILPIPE_TEST_RECORD_URL   Redis (not the one under test) where every successful execution is RPUSHed
                           to ``test:executions`` as "<key> <phase> <consumer> <attempt>"
MAILPIPE_TEST_PHASE        "source" or "target": which side of the restore this worker runs on
Keys: ``perm-*`` fail permanently; ``flaky-*`` ask for a retry in 3 s on their first attempt;
``hang-*`` block forever on the source (the worker is killed with them in flight), succeed on the target.
"""

from __future__ import annotations

import os
import threading

from mailpipe.entry import Message
from mailpipe.errors import PermanentError, RetryLater
from mailpipe.handler import Context
from tests.handlers import _recorder

EXECUTIONS = "test:executions"
STARTED = "test:started"


def handle(message: Message, ctx: Context) -> None:
    key, phase = ctx.idempotency_key, os.environ.get("MAILPIPE_TEST_PHASE", "")
    if key.startswith("perm-"):
        raise PermanentError(f"{key} can never be handled")
    if key.startswith("flaky-") and ctx.attempt == 1:
        raise RetryLater(3.0, "downstream asked us to come back later")
    if key.startswith("hang-") and phase == "source":
        _recorder().rpush(STARTED, key)
        threading.Event().wait()  # until the process is killed: an entry in flight at backup time
    _recorder().rpush(EXECUTIONS, f"{key} {phase} {ctx.consumer} {ctx.attempt}")
