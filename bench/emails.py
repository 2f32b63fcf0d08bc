"""Realistic email, made up deterministically: raw RFC 822 messages (for IMAP ingest) and the stream
entries mailpipe would publish for them (for throughput and memory).

A message has the headers a real one carries (Received chain, DKIM, List-*), a text and an HTML
alternative, and, for the larger sizes, base64 attachments. Sizes follow a log-uniform mix between 2 KB
and 200 KB, which matches the bulk of real mailboxes (most mail small, a long tail of attachments).
"""

from __future__ import annotations

import base64
import hashlib
import math
import random
import textwrap
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, make_msgid

from mailpipe.entry import Attachment, Email, SizePolicy, Source, build_entry

WORDS = (
    "invoice", "order", "shipment", "account", "meeting", "project", "update", "review", "please",
    "attached", "report", "quarterly", "schedule", "deadline", "customer", "support", "ticket",
    "thanks", "regards", "team", "release", "notes", "draft", "budget", "approve", "contract",
    "renewal", "payment", "confirm", "delivery", "address", "question", "answer", "follow", "up",
    "tomorrow", "next", "week",
)
MIN_SIZE = 2 * 1024
MAX_SIZE = 200 * 1024


def _sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


def _paragraphs(rng: random.Random, chars: int) -> str:
    out: list[str] = []
    size = 0
    while size < chars:
        para = " ".join(_sentence(rng, rng.randint(6, 16)) for _ in range(rng.randint(2, 5)))
        out.append(para)
        size += len(para) + 2
    return "\n\n".join(out)


def make_raw(n: int, size: int, *, seed: int = 7) -> bytes:
    """Message number ``n`` of about ``size`` bytes (written as MIME text directly: the email package's
    serialiser would take minutes for the 10,000-message mailbox)."""
    rng = random.Random(seed * 1_000_003 + n)
    sent = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(minutes=n * 7)
    date = format_datetime(sent)
    boundary_alt, boundary_mixed = f"alt-{n}-{rng.getrandbits(32):x}", f"mix-{n}-{rng.getrandbits(32):x}"
    headers = [
        *(f"Received: from mx{hop}.example.net (mx{hop}.example.net [192.0.2.{10 + hop}])\r\n"
          f"\tby mail.example.com with ESMTPS id {rng.getrandbits(48):x}; {date}" for hop in range(3)),
        "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.net; s=sel1;\r\n"
        f"\th=from:to:subject:date; bh={hashlib.sha256(str(n).encode()).hexdigest()[:43]}=;\r\n\tb={'x' * 160}",
        f"From: Sender {n % 97} <sender{n % 97}@example.net>",
        "To: Team <team@example.com>",
        *(["Cc: Alice <alice@example.com>, Bob <bob@example.com>"] if n % 3 == 0 else []),
        f"Subject: {_sentence(rng, rng.randint(3, 9))[:-1]}",
        f"Date: {date}",
        f"Message-ID: {make_msgid(idstring=f'bench{n}', domain='example.net')}",
        f"List-Unsubscribe: <mailto:unsubscribe+{n}@example.net>",
        "X-Mailer: bench-generator 1.0",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/mixed; boundary="{boundary_mixed}"',
    ]
    text = _paragraphs(rng, min(max(size // 3, 600), 6_000))
    wrapped = "\r\n".join(textwrap.fill(p, 76).replace("\n", "\r\n") for p in text.split("\n\n"))
    html = "<html><body>" + "".join(f"<p>{p}</p>\r\n" for p in text.split("\n\n")) + "</body></html>"
    body = (
        f"--{boundary_mixed}\r\nContent-Type: multipart/alternative; boundary=\"{boundary_alt}\"\r\n\r\n"
        f"--{boundary_alt}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 7bit"
        f"\r\n\r\n{wrapped}\r\n"
        f"--{boundary_alt}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 7bit"
        f"\r\n\r\n{html}\r\n--{boundary_alt}--\r\n"
    )
    head = "\r\n".join(headers) + "\r\n\r\n"
    remaining = size - len(head) - len(body) - 200
    if remaining > 1024:
        data = base64.encodebytes(rng.randbytes(remaining * 3 // 4)).decode().replace("\n", "\r\n")
        body += (
            f"--{boundary_mixed}\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
            f'Content-Disposition: attachment; filename="document-{n}.pdf"\r\n\r\n{data}'
        )
    return (head + body + f"--{boundary_mixed}--\r\n").encode()


def size_mix(count: int, *, seed: int = 11) -> list[int]:
    """``count`` sizes, log-uniform between 2 KB and 200 KB."""
    rng = random.Random(seed)
    low, high = math.log(MIN_SIZE), math.log(MAX_SIZE)
    return [int(math.exp(rng.uniform(low, high))) for _ in range(count)]


def email_of(raw: bytes, n: int) -> Email:
    """The parsed form mailpipe carries for ``raw`` (parsed with the standard library)."""
    from email import message_from_bytes, policy

    parsed = message_from_bytes(raw, policy=policy.default)
    text_part = parsed.get_body(("plain",))
    html_part = parsed.get_body(("html",))
    attachments = []
    for att in parsed.iter_attachments():
        content = att.get_payload(decode=True) or b""
        if isinstance(content, bytes):
            attachments.append(Attachment(
                filename=att.get_filename(), content_type=att.get_content_type(), size=len(content),
                sha256=hashlib.sha256(content).hexdigest(),
            ))
    return Email(
        message_id=str(parsed["Message-ID"]), subject=str(parsed["Subject"]),
        from_=[str(parsed["From"])], to=[str(parsed["To"])],
        cc=[a.strip() for a in str(parsed["Cc"]).split(",")] if parsed["Cc"] else [],
        date=parsed["Date"].datetime.isoformat() if parsed["Date"] else None,
        headers=[(k, str(v)) for k, v in parsed.items()],
        text=text_part.get_content() if text_part else None,
        html=html_part.get_content() if html_part else None,
        attachments=attachments, size=len(raw), raw_sha256=hashlib.sha256(raw).hexdigest(), raw=raw,
        raw_ref=f"imap://team@example.com/INBOX;UIDVALIDITY=1/;UID={n}",
    )


def entry_for(n: int, size: int, *, policy: SizePolicy | None = None) -> dict[str, str]:
    """The stream entry the producer would publish for message ``n`` of ``size`` bytes."""
    raw = make_raw(n, size)
    return build_entry(
        email_of(raw, n), idempotency_key=f"imap:team@example.com:INBOX:1:{n}",
        source=Source(kind="imap", account="team@example.com", mailbox="INBOX", uidvalidity=1, uid=n),
        policy=policy,
    )


def minimal_entry() -> dict[str, str]:
    """The smallest valid entry (~0.4 KB: a one-line email, no raw bytes): what queue micro-benchmarks
    carry, and what the issue's reference figures were measured with."""
    email = Email(message_id="<m1@example.com>", subject="hello", from_=["a@example.com"],
                  to=["b@example.com"], text="hi", size=120)
    return build_entry(email, idempotency_key="api:1", source=Source(kind="api"))


PAYLOADS = {
    # A short notification-style email (~2-3 KB raw; the entry carries it parsed and raw: ~9 KB).
    "email": 2 * 1024,
    # A typical business email with an attachment (~40 KB raw, within the inline raw limit: ~70 KB).
    "typical": 40 * 1024,
}


def payload_entry(name: str) -> dict[str, str]:
    """A payload by name: ``minimal``, ``email`` or ``typical``."""
    if name == "minimal":
        return minimal_entry()
    return entry_for(1, PAYLOADS[name])
