"""Example handler: classify each email and append one JSON line per email to a file.

Run it:  python worker.py --consumer w1 --handler examples.classify:handle
Output:  $MAILPIPE_EXAMPLE_OUT (default: classified.jsonl), one object per email.

The line carries the idempotency key, so a consumer of the file can drop the rare duplicate line left by
a worker killed between writing it and settling the entry (mailpipe's at-least-once window).
"""

from __future__ import annotations

import json
import os
import re

from mailpipe import Context, Message, PermanentError

RULES: list[tuple[str, re.Pattern[str]]] = [
    ("invoice", re.compile(r"\b(invoice|receipt|payment|bill|rechnung)\b", re.I)),
    ("newsletter", re.compile(r"\b(newsletter|unsubscribe|digest|weekly)\b", re.I)),
    ("notification", re.compile(r"\b(alert|notification|no-?reply|report)\b", re.I)),
]


def classify(subject: str, sender: str, text: str, has_list_header: bool) -> str:
    if has_list_header:
        return "newsletter"
    haystack = f"{subject}\n{sender}\n{text[:2000]}"
    for label, pattern in RULES:
        if pattern.search(haystack):
            return label
    return "personal"


def handle(message: Message, ctx: Context) -> None:
    email = message.email
    if not email.from_ and not email.subject and not email.text:
        raise PermanentError("nothing to classify: no sender, subject or text")
    headers = {name.lower() for name, _ in email.headers}
    label = classify(email.subject, ",".join(email.from_), email.text or "", "list-unsubscribe" in headers)
    line = json.dumps({
        "idempotency_key": ctx.idempotency_key,
        "label": label,
        "subject": email.subject,
        "from": email.from_,
        "date": email.date,
        "attachments": [a.filename for a in email.attachments],
        "source": {"account": message.source.account, "mailbox": message.source.mailbox},
    }, ensure_ascii=False)
    path = os.environ.get("MAILPIPE_EXAMPLE_OUT", "classified.jsonl")
    # one write() on an O_APPEND descriptor: concurrent handlers never interleave lines
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)
    ctx.logger.info("classified as %s", label, extra={"label": label})
