"""Raw RFC 822 bytes to :class:`mailpipe.entry.Email`, with the standard library (``email.policy.default``).

:func:`parse_email` never raises: whatever cannot be parsed (a lying or unknown charset, broken MIME,
8-bit headers, a header the library chokes on) is decoded as well as possible and named in
``Email.defects``. Text that is not valid in its declared charset is retried as UTF-8, then decoded with
replacement characters, so no bytes stop the producer and no surrogate reaches Redis.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from datetime import UTC
from email import policy as email_policy
from email.message import EmailMessage, Message
from email.parser import BytesParser
from typing import Any

from mailpipe.entry import Attachment, Email, SizePolicy

log = logging.getLogger(__name__)

MAX_DEFECTS = 50
MAX_PARTS = 1_000  # a message with more MIME parts than this is a zip bomb of a kind; the rest is skipped
ADDRESS_HEADERS = {"from": "from_", "to": "to", "cc": "cc", "reply-to": "reply_to"}


def parse_email(
    raw: bytes, *, policy: SizePolicy | None = None, raw_ref: str | None = None,
    headers_only_size: int | None = None,
) -> Email:
    """Parse ``raw``; keep it inline only within ``policy`` (else ``raw_ref`` says where it lives).

    ``headers_only_size`` marks ``raw`` as just the header block of a message of that many bytes (too
    large to fetch): the entry carries the headers, the size and the reference, and says so in defects.
    """
    policy = policy or SizePolicy()
    defects = _Defects()
    try:
        fields = _parse(raw, defects)
    except Exception as exc:  # the email package has a history of IndexError/AttributeError on odd input
        log.warning("message could not be parsed (%s); publishing it raw with a defect", type(exc).__name__)
        defects.add(f"unparseable message: {type(exc).__name__}: {_clean(str(exc))[:200]}")
        fields = {}
    size = len(raw) if headers_only_size is None else headers_only_size
    if headers_only_size is not None:
        defects.add(f"message of {size} bytes exceeds MAILPIPE_MAX_FETCH_BYTES: headers only, body not fetched")
    inline = headers_only_size is None and len(raw) <= policy.raw_inline_max_bytes
    return Email(
        **fields,
        size=size,
        raw_sha256=hashlib.sha256(raw).hexdigest() if headers_only_size is None else None,
        raw=raw if inline else None,
        raw_ref=None if inline else raw_ref,
        defects=defects.items,
    )


class _Defects:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, text: str) -> None:
        if text not in self.items and len(self.items) < MAX_DEFECTS:
            self.items.append(text)

    def add_from(self, where: str, part: Message) -> None:
        for defect in getattr(part, "defects", []):
            detail = _clean(str(defect))
            name = type(defect).__name__
            self.add(f"{where}: {name}" + (f" ({detail[:160]})" if detail and detail != name else ""))


def _parse(raw: bytes, defects: _Defects) -> dict[str, Any]:
    msg = BytesParser(policy=email_policy.default).parsebytes(raw)
    assert isinstance(msg, EmailMessage)
    defects.add_from("message", msg)
    fields: dict[str, Any] = {"headers": _headers(msg, defects)}
    fields["subject"] = _header_text(msg, "subject", defects) or ""
    for header, attr in ADDRESS_HEADERS.items():
        fields[attr] = _addresses(msg, header, defects)
    message_id = _header_text(msg, "message-id", defects)
    fields["message_id"] = message_id.strip() if message_id and message_id.strip() else None
    if fields["message_id"] is None:
        defects.add("no Message-ID header")
    fields["in_reply_to"] = (_header_text(msg, "in-reply-to", defects) or "").strip() or None
    fields["references"] = (_header_text(msg, "references", defects) or "").split()
    fields["date"] = _date(msg, defects)
    body = _Bodies(defects)
    body.walk(msg, depth=0)
    fields.update(text=body.text, html=body.html, attachments=body.attachments)
    return fields


def _clean(text: str) -> str:
    """Make ``text`` valid Unicode: 8-bit bytes smuggled in as surrogates become UTF-8 or Latin-1."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        data = text.encode("utf-8", "surrogateescape")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return data.decode("latin-1")


def _header_text(msg: EmailMessage, name: str, defects: _Defects) -> str | None:
    try:
        value = msg.get(name)
    except Exception as exc:
        defects.add(f"header {name}: cannot be decoded ({type(exc).__name__})")
        return _raw_header(msg, name)
    if value is None:
        return None
    text = str(value)
    cleaned = _clean(text)
    if cleaned != text:
        defects.add(f"header {name}: raw 8-bit bytes")
    for defect in getattr(value, "defects", ()):
        defects.add(f"header {name}: {type(defect).__name__}")
    return cleaned


def _raw_header(msg: EmailMessage, name: str) -> str | None:
    for key, value in msg.raw_items():
        if key.lower() == name:
            return _clean(" ".join(str(value).split()))
    return None


def _headers(msg: EmailMessage, defects: _Defects) -> list[tuple[str, str]]:
    result = []
    for key, value in msg.raw_items():
        if _clean(str(value)) != str(value):
            defects.add(f"header {key.lower()}: raw 8-bit bytes (not RFC 2047 encoded)")
        text = str(value)
        if "=?" in text:  # RFC 2047 encoded words; the header registry is slow, so only when needed
            try:
                text = str(email_policy.default.header_factory(key, value))
            except Exception:
                defects.add(f"header {key.lower()}: encoded words cannot be decoded")
        result.append((_clean(key), _clean(" ".join(text.split()))))
    return result


def _addresses(msg: EmailMessage, name: str, defects: _Defects) -> list[str]:
    try:
        values = msg.get_all(name) or []
        found: list[str] = []
        for value in values:
            addresses = getattr(value, "addresses", None)
            if addresses is None:
                found.append(_clean(str(value)))
                continue
            found.extend(_clean(str(a)) for a in addresses)
            for defect in getattr(value, "defects", ()):
                defects.add(f"header {name}: {type(defect).__name__}")
        return [a for a in found if a]
    except Exception as exc:
        defects.add(f"header {name}: cannot be parsed ({type(exc).__name__})")
        raw = _raw_header(msg, name)
        return [raw] if raw else []


def _date(msg: EmailMessage, defects: _Defects) -> str | None:
    try:
        header = msg.get("date")
        if header is None:
            return None
        value = getattr(header, "datetime", None)
    except Exception as exc:
        defects.add(f"header date: cannot be parsed ({type(exc).__name__})")
        return None
    if value is None:
        defects.add("header date: not a valid RFC 5322 date")
        return None
    if value.tzinfo is None:  # "-0000": time zone unknown; UTC is the documented reading
        value = value.replace(tzinfo=UTC)
    return str(value.isoformat())


class _Bodies:
    """Walks the MIME tree: the first text/plain and text/html that are not attachments are the bodies."""

    def __init__(self, defects: _Defects) -> None:
        self.defects = defects
        self.text: str | None = None
        self.html: str | None = None
        self.attachments: list[Attachment] = []
        self.parts = 0

    def walk(self, part: Message, depth: int) -> None:
        for leaf in self._leaves(part, depth):
            self._leaf(leaf)

    def _leaves(self, part: Message, depth: int) -> Iterator[Message]:
        self.parts += 1
        if self.parts > MAX_PARTS or depth > 50:
            self.defects.add(f"more than {MAX_PARTS} MIME parts or nesting deeper than 50: rest skipped")
            return
        ctype = part.get_content_type()
        if depth > 0:
            self.defects.add_from(f"part {ctype}", part)
        if part.is_multipart():
            payload = part.get_payload()
            if ctype != "message/rfc822" and isinstance(payload, list):
                for child in payload:
                    if isinstance(child, Message):
                        yield from self._leaves(child, depth + 1)
                return
        yield part

    def _leaf(self, part: Message) -> None:
        ctype = part.get_content_type()
        disposition = (part.get_content_disposition() or "").lower()
        filename = self._filename(part)
        is_attachment = disposition == "attachment" or (filename is not None and disposition != "inline")
        if not is_attachment and ctype == "text/plain" and self.text is None:
            self.text = self._text(part, ctype)
            return
        if not is_attachment and ctype == "text/html" and self.html is None:
            self.html = self._text(part, ctype)
            return
        data = self._payload(part, ctype)
        content_id = part.get("content-id")
        self.attachments.append(Attachment(
            filename=filename, content_type=ctype, size=len(data), sha256=hashlib.sha256(data).hexdigest(),
            inline=disposition == "inline",
            content_id=_clean(str(content_id)).strip() if content_id is not None else None,
        ))

    def _filename(self, part: Message) -> str | None:
        try:
            name = part.get_filename()
        except Exception:
            self.defects.add("attachment file name cannot be decoded")
            return None
        return _clean(name) if name else None

    def _payload(self, part: Message, ctype: str) -> bytes:
        if ctype == "message/rfc822" or part.is_multipart():
            inner = part.get_payload()
            try:
                if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                    return inner[0].as_bytes(policy=email_policy.compat32)
            except Exception:
                self.defects.add("attached message cannot be serialised; its size is approximate")
            return str(inner).encode("utf-8", "surrogateescape")
        try:
            data = part.get_payload(decode=True)
        except Exception:
            self.defects.add(f"part {ctype}: payload cannot be decoded")
            data = None
        if isinstance(data, bytes):
            return data
        raw = part.get_payload()
        return raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else b""

    def _text(self, part: Message, ctype: str) -> str:
        data = self._payload(part, ctype)
        declared = part.get_content_charset() or "us-ascii"
        text, problem = decode_text(data, declared)
        if problem:
            self.defects.add(f"part {ctype}: {problem}")
        return text


def decode_text(data: bytes, charset: str) -> tuple[str, str | None]:
    """Decode body bytes; returns the text and, if the declared charset did not fit, what was done."""
    try:
        return data.decode(charset), None
    except LookupError:
        problem = f"unknown charset {charset!r}"
    except UnicodeDecodeError:
        problem = f"bytes are not valid {charset}"
    except Exception:  # codecs that raise odd errors on odd names (e.g. 'utf-7' variants)
        problem = f"charset {charset!r} cannot decode"
    try:
        return data.decode("utf-8"), f"{problem}: decoded as UTF-8"
    except UnicodeDecodeError:
        # Not UTF-8 either: the most common 8-bit charset of mislabelled mail; undefined bytes become U+FFFD.
        return data.decode("cp1252", "replace"), f"{problem}: decoded as Windows-1252 with replacement"
