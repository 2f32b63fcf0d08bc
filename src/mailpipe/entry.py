"""The stream entry format (version 1): one function builds an entry, one parses it.

An entry is a flat map of string fields (Redis stream fields)::

    v            format version, "1"
    idem         idempotency key chosen by the publisher (same email -> same key)
    cid          correlation id that follows the email through logs (producer -> handler)
    src          source kind: imap | mbox | maildir | eml | api
    account      account the email came from ("" when not applicable)
    mailbox      mailbox / folder / file ("" when not applicable)
    uidvalidity  IMAP UIDVALIDITY ("" when not IMAP)
    uid          IMAP UID ("" when not IMAP)
    enq_ms       when this entry was added to the stream (Unix ms)
    first_ms     when the email was first enqueued (kept across retries)
    attempt      delivery attempt this entry represents, 1 for the first
    grp          "" for everyone, or the one consumer group a retry copy is addressed to
    replay       optional; "force" makes the worker run the handler even if the key is already done
                 (written only by an explicit `mailpipe replay --bypass-idempotency`)
    email        JSON of :class:`Email` (headers, bodies, attachment metadata, raw bytes within the policy)

See docs/ARCHITECTURE.md for the size policy and the compatibility rules of the version.
"""

from __future__ import annotations

import base64
import functools
import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mailpipe import defaults
from mailpipe.errors import MalformedEntry

ENTRY_FORMAT_VERSION = 1
SOURCE_KINDS = frozenset({"imap", "mbox", "maildir", "eml", "api"})
MAX_IDEMPOTENCY_KEY_LEN = 256
REQUIRED_FIELDS = ("v", "idem", "cid", "src", "enq_ms", "attempt", "email")


@dataclass(frozen=True)
class SizePolicy:
    """Bounds on what one entry carries, so one huge email cannot blow up Redis memory."""

    raw_inline_max_bytes: int = defaults.DEFAULT_RAW_INLINE_MAX_BYTES
    body_max_chars: int = defaults.DEFAULT_BODY_MAX_CHARS
    max_headers: int = defaults.DEFAULT_MAX_HEADERS


@dataclass(frozen=True)
class Attachment:
    filename: str | None
    content_type: str
    size: int
    sha256: str
    inline: bool = False
    content_id: str | None = None


@dataclass(frozen=True)
class Email:
    """The parsed email as carried in the stream. Attachment *content* is never in the stream."""

    message_id: str | None = None
    subject: str = ""
    from_: list[str] = field(default_factory=list)
    to: list[str] = field(default_factory=list)
    cc: list[str] = field(default_factory=list)
    reply_to: list[str] = field(default_factory=list)
    date: str | None = None  # RFC 3339, as parsed from the Date header
    in_reply_to: str | None = None
    references: list[str] = field(default_factory=list)
    headers: list[tuple[str, str]] = field(default_factory=list)
    text: str | None = None
    text_truncated: bool = False
    html: str | None = None
    html_truncated: bool = False
    attachments: list[Attachment] = field(default_factory=list)
    size: int = 0  # size of the raw RFC 822 message in bytes
    raw_sha256: str | None = None
    raw: bytes | None = None  # the raw message, only when size <= policy.raw_inline_max_bytes
    raw_ref: str | None = None  # where the original can be fetched when raw is not inline
    defects: list[str] = field(default_factory=list)  # what could not be parsed

    def to_json(self) -> str:
        doc: dict[str, Any] = {
            "message_id": self.message_id,
            "subject": self.subject,
            "from": self.from_,
            "to": self.to,
            "cc": self.cc,
            "reply_to": self.reply_to,
            "date": self.date,
            "in_reply_to": self.in_reply_to,
            "references": self.references,
            "headers": [list(h) for h in self.headers],
            "text": self.text,
            "text_truncated": self.text_truncated,
            "html": self.html,
            "html_truncated": self.html_truncated,
            "attachments": [a.__dict__ for a in self.attachments],
            "size": self.size,
            "raw_sha256": self.raw_sha256,
            "raw": base64.b64encode(self.raw).decode("ascii") if self.raw is not None else None,
            "raw_ref": self.raw_ref,
            "defects": self.defects,
        }
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Email:
        doc = json.loads(text)
        if not isinstance(doc, dict):
            raise ValueError("email is not a JSON object")
        raw = doc.get("raw")
        return cls(
            message_id=doc.get("message_id"),
            subject=doc.get("subject") or "",
            from_=list(doc.get("from") or []),
            to=list(doc.get("to") or []),
            cc=list(doc.get("cc") or []),
            reply_to=list(doc.get("reply_to") or []),
            date=doc.get("date"),
            in_reply_to=doc.get("in_reply_to"),
            references=list(doc.get("references") or []),
            headers=[(str(h[0]), str(h[1])) for h in doc.get("headers") or []],
            text=doc.get("text"),
            text_truncated=bool(doc.get("text_truncated")),
            html=doc.get("html"),
            html_truncated=bool(doc.get("html_truncated")),
            attachments=[Attachment(**a) for a in doc.get("attachments") or []],
            size=int(doc.get("size") or 0),
            raw_sha256=doc.get("raw_sha256"),
            raw=base64.b64decode(raw) if raw is not None else None,
            raw_ref=doc.get("raw_ref"),
            defects=list(doc.get("defects") or []),
        )

    def apply_policy(self, policy: SizePolicy) -> Email:
        """Return a copy that fits the size policy (truncation is flagged, never silent)."""
        changes: dict[str, Any] = {}
        if self.text is not None and len(self.text) > policy.body_max_chars:
            changes["text"] = self.text[: policy.body_max_chars]
            changes["text_truncated"] = True
        if self.html is not None and len(self.html) > policy.body_max_chars:
            changes["html"] = self.html[: policy.body_max_chars]
            changes["html_truncated"] = True
        if len(self.headers) > policy.max_headers:
            changes["headers"] = self.headers[: policy.max_headers]
            changes["defects"] = [*self.defects, f"headers truncated to {policy.max_headers}"]
        if self.raw is not None and len(self.raw) > policy.raw_inline_max_bytes:
            changes["raw"] = None
        if not changes:
            return self
        return Email(**{**self.__dict__, **changes})


@dataclass(frozen=True)
class Source:
    """Where an email came from."""

    kind: str
    account: str = ""
    mailbox: str = ""
    uidvalidity: int | None = None
    uid: int | None = None


@dataclass(frozen=True)
class Message:
    """A parsed stream entry, as handed to a handler.

    The envelope is validated by :func:`parse_entry`; the email document is decoded on first access of
    :attr:`email` (a handler that routes on the envelope alone never pays for it). A broken document
    raises :class:`MalformedEntry` there, which the worker dead-letters at once.
    """

    stream_id: str
    idempotency_key: str
    correlation_id: str
    source: Source
    enqueued_ms: int
    first_enqueued_ms: int
    attempt: int
    target_group: str
    fields: Mapping[str, str]  # the entry exactly as stored (copied verbatim into dead letters)
    version: int = ENTRY_FORMAT_VERSION
    bypass_idempotency: bool = False

    @functools.cached_property
    def email(self) -> Email:
        try:
            return Email.from_json(self.fields["email"])
        except (ValueError, TypeError, KeyError) as exc:
            raise MalformedEntry(
                f"entry {self.stream_id}: field 'email' is not a valid email document ({exc})") from None


def new_correlation_id() -> str:
    return uuid.uuid4().hex


def build_entry(
    email: Email,
    *,
    idempotency_key: str,
    source: Source,
    correlation_id: str | None = None,
    policy: SizePolicy | None = None,
    enqueued_ms: int | None = None,
    first_enqueued_ms: int | None = None,
    attempt: int = 1,
    target_group: str = "",
) -> dict[str, str]:
    """Build the fields of a version-1 stream entry; the email is cut to the size policy first."""
    _check_idempotency_key(idempotency_key)
    if source.kind not in SOURCE_KINDS:
        raise ValueError(f"unknown source kind {source.kind!r}; expected one of {sorted(SOURCE_KINDS)}")
    if attempt < 1:
        raise ValueError("attempt must be >= 1")
    now_ms = int(time.time() * 1000) if enqueued_ms is None else enqueued_ms
    email = email.apply_policy(policy or SizePolicy())
    return {
        "v": str(ENTRY_FORMAT_VERSION),
        "idem": idempotency_key,
        "cid": correlation_id or new_correlation_id(),
        "src": source.kind,
        "account": source.account,
        "mailbox": source.mailbox,
        "uidvalidity": "" if source.uidvalidity is None else str(source.uidvalidity),
        "uid": "" if source.uid is None else str(source.uid),
        "enq_ms": str(now_ms),
        "first_ms": str(now_ms if first_enqueued_ms is None else first_enqueued_ms),
        "attempt": str(attempt),
        "grp": target_group,
        "email": email.to_json(),
    }


def parse_entry(stream_id: str, fields: Mapping[str, str]) -> Message:
    """Parse and validate an entry; raises :class:`MalformedEntry` naming what is wrong."""
    missing = [name for name in REQUIRED_FIELDS if not fields.get(name)]
    if missing:
        raise MalformedEntry(f"entry {stream_id}: missing field(s) {', '.join(missing)}")
    version = _int_field(stream_id, fields, "v")
    if version != ENTRY_FORMAT_VERSION:
        raise MalformedEntry(
            f"entry {stream_id}: format version {version} is not supported (this worker reads "
            f"version {ENTRY_FORMAT_VERSION}); upgrade mailpipe"
        )
    idem = fields["idem"]
    try:
        _check_idempotency_key(idem)
    except ValueError as exc:
        raise MalformedEntry(f"entry {stream_id}: {exc}") from None
    kind = fields["src"]
    if kind not in SOURCE_KINDS:
        raise MalformedEntry(f"entry {stream_id}: unknown source kind {kind!r}")
    attempt = _int_field(stream_id, fields, "attempt")
    if attempt < 1:
        raise MalformedEntry(f"entry {stream_id}: attempt must be >= 1, got {attempt}")
    enqueued = _int_field(stream_id, fields, "enq_ms")
    if not fields["email"].startswith("{"):
        raise MalformedEntry(f"entry {stream_id}: field 'email' is not a valid email document (not a JSON object)")
    return Message(
        stream_id=stream_id,
        idempotency_key=idem,
        correlation_id=fields["cid"],
        source=Source(
            kind=kind,
            account=fields.get("account", ""),
            mailbox=fields.get("mailbox", ""),
            uidvalidity=_optional_int(stream_id, fields, "uidvalidity"),
            uid=_optional_int(stream_id, fields, "uid"),
        ),
        enqueued_ms=enqueued,
        first_enqueued_ms=_optional_int(stream_id, fields, "first_ms") or enqueued,
        attempt=attempt,
        target_group=fields.get("grp", ""),
        fields=fields,
        version=version,
        bypass_idempotency=fields.get("replay") == "force",
    )


def _check_idempotency_key(key: str) -> None:
    if not key or len(key) > MAX_IDEMPOTENCY_KEY_LEN:
        raise ValueError(f"idempotency key must be 1-{MAX_IDEMPOTENCY_KEY_LEN} characters")
    if any(c.isspace() for c in key):
        raise ValueError("idempotency key must not contain whitespace")


def _int_field(stream_id: str, fields: Mapping[str, str], name: str) -> int:
    try:
        return int(fields[name])
    except (KeyError, ValueError):
        got = fields.get(name)
        raise MalformedEntry(f"entry {stream_id}: field {name!r} must be an integer, got {got!r}") from None


def _optional_int(stream_id: str, fields: Mapping[str, str], name: str) -> int | None:
    value = fields.get(name, "")
    return None if value == "" else _int_field(stream_id, fields, name)
