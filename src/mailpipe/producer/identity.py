"""The idempotency key of an email: ``e1-`` + SHA-256 over the account and the message's canonical bytes.

Two directions have to hold:

* **The same email always gets the same key** -- re-fetched after a UIDVALIDITY change (new UIDs),
  published again after a crash, re-imported from the same mbox, seen in two folders of one account
  (Gmail's INBOX and "All Mail" hold the same message), or moved by our own post-publish action.
  So the key must not depend on the UID, the UIDVALIDITY, the folder, the fetch time or the file it
  came from. It depends only on what the message *is*: its bytes.
* **Two different emails never share a key** -- so the worker never skips one by mistake. Message-ID
  cannot be the key: it is missing in plenty of real mail, and broken senders reuse one Message-ID for
  different messages (newsletters, ticket systems, some phones). Two messages that differ in any byte
  of content (another Date, another body, another Received chain) get different digests.

Putting the Message-ID into the hash next to the digest would add nothing: the digest already covers
the Message-ID header, and leaving it out keeps one rule for mail with and without one.

Canonical bytes: line endings normalised to LF, trailing blank lines dropped, an mbox ``From `` line
dropped, and the headers mail stores add for their own bookkeeping (``Status``, ``X-Keywords``,
``X-UID``, ``X-Gmail-Labels``, ...) dropped. These differ between a Maildir, an mbox export and an IMAP
fetch of one and the same message, and say nothing about its content; anything else counts.

The account is part of the key: the same message delivered to two mailboxes the pipeline watches
(alice's and bob's) is two pieces of work. A message whose body was too large to fetch is keyed on its
headers and announced size, marked so that it never collides with a fully fetched message.

The prefix ``e1`` versions the derivation: changing it means every key changes.
"""

from __future__ import annotations

import hashlib
import re

KEY_PREFIX = "e1-"
_DOMAIN = b"mailpipe-email-key-v1\x00"
_OBSOLETE_FROM_HEADER = re.compile(rb"^From\s*:")  # "From :" is a header (RFC 5322 obs-syntax), not mbox

# Headers that mail stores, exporters and servers add to record local state; never part of the message.
BOOKKEEPING_HEADERS = frozenset({
    b"status", b"x-status", b"x-keywords", b"x-uid", b"x-imap", b"x-imapbase", b"content-length",
    b"lines", b"x-mozilla-status", b"x-mozilla-status2", b"x-mozilla-keys", b"x-gmail-labels",
    b"x-gm-thrid", b"x-gm-msgid", b"x-dovecot-keywords",
})


def email_key(account: str, raw: bytes, *, headers_only_size: int | None = None) -> str:
    """The idempotency key of the message ``raw`` in ``account``.

    ``headers_only_size``: ``raw`` is only the header block of a message of that size (too large to fetch).
    """
    digest = hashlib.sha256(_DOMAIN)
    digest.update(account.strip().lower().encode("utf-8"))
    digest.update(b"\x00")
    if headers_only_size is None:
        digest.update(b"full\x00")
        digest.update(canonical_bytes(raw))
    else:
        digest.update(f"headers-only:{headers_only_size}\x00".encode("ascii"))
        digest.update(canonical_bytes(raw, headers_only=True))
    return KEY_PREFIX + digest.hexdigest()


def canonical_bytes(raw: bytes, *, headers_only: bool = False) -> bytes:
    """The bytes the key is computed over (see the module docstring)."""
    data = raw.replace(b"\r\n", b"\n")
    if data.startswith(b"From ") and not _OBSOLETE_FROM_HEADER.match(data):
        data = data.split(b"\n", 1)[1] if b"\n" in data else b""
    cut = data.find(b"\n\n")
    if data.startswith(b"\n"):
        head, body = b"", data[1:]
    elif cut < 0:
        head, body = data, b""
    else:
        head, body = data[: cut + 1], data[cut + 2:]
    kept = _drop_bookkeeping(head)
    if headers_only:
        return kept
    return kept + b"\n" + body.rstrip(b"\n")


def _drop_bookkeeping(head: bytes) -> bytes:
    out: list[bytes] = []
    dropping = False
    for line in head.split(b"\n"):
        if line[:1] in (b" ", b"\t"):
            if not dropping:
                out.append(line)
            continue
        name = line.split(b":", 1)[0].strip().lower() if b":" in line else b""
        dropping = name in BOOKKEEPING_HEADERS
        if not dropping:
            out.append(line)
    return b"\n".join(out).rstrip(b"\n") + b"\n"
