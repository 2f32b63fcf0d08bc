"""Mail for producer tests: ordinary messages, a corpus of nasty ones, and a large one made on demand."""

from __future__ import annotations

import base64
import os
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime


def make_mail(n: int, *, tag: str = "t", message_id: str | None = None, body: str | None = None,
              date: datetime | None = None) -> bytes:
    """A small, unique, well-formed message."""
    msg = EmailMessage()
    msg["From"] = f"Sender {n} <sender{n}@example.com>"
    msg["To"] = "dest@example.com"
    msg["Subject"] = f"{tag} message {n}"
    msg["Date"] = format_datetime(date or datetime(2024, 5, 1, 12, 0, tzinfo=UTC))
    msg["Message-ID"] = message_id if message_id is not None else f"<{tag}.{n}@example.com>"
    msg.set_content(body if body is not None else f"body of {tag} message {n}\n")
    return msg.as_bytes()


def big_mail(attachment_bytes: int, *, tag: str = "big") -> bytes:
    """A message with one random attachment of ``attachment_bytes`` (built at test time, never committed)."""
    msg = EmailMessage()
    msg["From"] = "big@example.com"
    msg["To"] = "dest@example.com"
    msg["Subject"] = f"{tag}: a large attachment"
    msg["Message-ID"] = f"<{tag}.{os.urandom(6).hex()}@example.com>"
    msg.set_content("see attachment\n")
    msg.add_attachment(os.urandom(attachment_bytes), maintype="application", subtype="octet-stream",
                       filename="big.bin")
    return msg.as_bytes()


def _nested(depth: int) -> bytes:
    head = b"".join(b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i)
                    for i in range(depth))
    return (b"From: deep@example.com\r\nSubject: deep\r\nMIME-Version: 1.0\r\n" + head
            + b"Content-Type: text/plain\r\n\r\nbottom\r\n")


def nasty_corpus() -> dict[str, bytes]:
    """Messages that break parsers: name -> raw bytes. Each must be published, with defects named."""
    latin1 = "Grüße aus Köln".encode("latin-1")
    utf8 = "Grüße aus Köln — ✓".encode()
    return {
        "unknown_charset": (b"From: a@example.com\r\nSubject: unknown charset\r\nMessage-ID: <n1@example.com>\r\n"
                            b"Content-Type: text/plain; charset=x-no-such-charset\r\n\r\n" + latin1 + b"\r\n"),
        "ascii_but_utf8": (b"From: a@example.com\r\nSubject: lying ascii\r\nMessage-ID: <n2@example.com>\r\n"
                           b"Content-Type: text/plain; charset=us-ascii\r\n\r\n" + utf8 + b"\r\n"),
        "utf8_but_latin1": (b"From: a@example.com\r\nSubject: lying utf-8\r\nMessage-ID: <n3@example.com>\r\n"
                            b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + latin1 + b"\r\n"),
        "eight_bit_headers": (b"From: J\xfcrgen <j@example.com>\r\nSubject: " + utf8 + b"\r\n"
                              b"Message-ID: <n4@example.com>\r\n\r\nbody\r\n"),
        "unknown_encoded_word": (b"From: a@example.com\r\nSubject: =?x-bogus?Q?caf=E9?= ok\r\n"
                                 b"Message-ID: <n5@example.com>\r\n\r\nbody\r\n"),
        "no_message_id": (b"From: a@example.com\r\nSubject: no id\r\n"
                          b"Date: Mon, 1 Jan 2024 10:00:00 +0000\r\n\r\nbody\r\n"),
        "missing_boundary": (b"From: a@example.com\r\nSubject: no boundary\r\nMessage-ID: <n6@example.com>\r\n"
                             b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed\r\n\r\n--x\r\n"
                             b"Content-Type: text/plain\r\n\r\nhello\r\n--x--\r\n"),
        "unclosed_multipart": (b"From: a@example.com\r\nSubject: unclosed\r\nMessage-ID: <n7@example.com>\r\n"
                               b"MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=zz\r\n\r\n"
                               b"--zz\r\nContent-Type: text/plain\r\n\r\nplain\r\n--zz\r\n"
                               b"Content-Type: text/html\r\n\r\n<p>html"),
        "bad_base64": (b"From: a@example.com\r\nSubject: bad base64\r\nMessage-ID: <n8@example.com>\r\n"
                       b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=q\r\n\r\n--q\r\n"
                       b"Content-Type: text/plain\r\n\r\nsee file\r\n--q\r\n"
                       b"Content-Type: application/pdf; name=\"x.pdf\"\r\nContent-Transfer-Encoding: base64\r\n"
                       b"Content-Disposition: attachment; filename=\"x.pdf\"\r\n\r\n"
                       b"JVBERi0x!!!LjQKJ\xff\xfe===\r\n--q--\r\n"),
        "garbage_addresses": (b"From: <<<@@@>>>, \"unclosed <a@\r\nTo: ;;;,,,@\r\nCc: undisclosed-recipients:;\r\n"
                              b"Subject: addresses\r\nMessage-ID: <n9@example.com>\r\n"
                              b"Date: yesterday-ish\r\n\r\nb\r\n"),
        "no_separator": b"this is not an email at all \xff\xfe\x00 just bytes",
        "empty": b"",
        "nul_bytes": (b"From: a@example.com\r\nSubject: nul\r\nMessage-ID: <n10@example.com>\r\n\r\n"
                      b"a\x00b\x00c\r\n"),
        "many_headers": (b"From: a@example.com\r\nSubject: headers\r\nMessage-ID: <n11@example.com>\r\n"
                         + b"".join(b"X-H%d: v\r\n" % i for i in range(600)) + b"\r\nbody\r\n"),
        "bare_lf": b"From: a@example.com\nSubject: bare lf\nMessage-ID: <n12@example.com>\n\nline1\nline2\n",
        "deep_nesting": _nested(80),
        "rfc2231_filename": (b"From: a@example.com\r\nSubject: filename\r\nMessage-ID: <n13@example.com>\r\n"
                             b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=r\r\n\r\n--r\r\n"
                             b"Content-Type: text/plain\r\n\r\nx\r\n--r\r\nContent-Type: text/plain\r\n"
                             b"Content-Disposition: attachment; filename*=x-bogus''%E9t%E9.txt\r\n\r\n"
                             + base64.b64encode(b"abc") + b"\r\n--r--\r\n"),
    }
