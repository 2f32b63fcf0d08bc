"""The idempotency key: the same email always gets the same key, different emails never share one."""

from __future__ import annotations

from mailpipe.producer.identity import KEY_PREFIX, canonical_bytes, email_key
from tests.mail_samples import make_mail, nasty_corpus


def test_same_email_same_key_whatever_the_transport_did() -> None:
    raw = make_mail(1)
    crlf = raw.replace(b"\n", b"\r\n")
    key = email_key("dana@example.com", raw)
    assert key.startswith(KEY_PREFIX) and len(key) == len(KEY_PREFIX) + 64
    assert email_key("dana@example.com", crlf) == key  # Maildir (LF) vs IMAP (CRLF)
    assert email_key("Dana@Example.com ", raw) == key  # account spelling
    assert email_key("dana@example.com", b"From sender@x Mon Jan  1 00:00:00 2024\n" + raw + b"\n\n") == key
    with_status = raw.replace(b"Subject:", b"Status: RO\nX-Keywords: $Label1\nX-UID: 42\nX-Gmail-Labels: Inbox,\n"
                              b" Important\nSubject:", 1)
    assert email_key("dana@example.com", with_status) == key  # bookkeeping headers of mail stores


def test_different_emails_never_share_a_key() -> None:
    # Broken senders reuse Message-IDs; missing Message-IDs are common.
    reused = [make_mail(1, message_id="<same@x>", body=f"body {i}\n") for i in range(50)]
    missing = [make_mail(i, message_id="") for i in range(50)]
    corpus = list(nasty_corpus().values())
    keys = {email_key("a@x", raw) for raw in reused + missing + corpus}
    assert len(keys) == len(reused) + len(missing) + len(corpus)
    assert email_key("a@x", make_mail(1)) != email_key("b@x", make_mail(1))  # another account's copy
    # One byte of content differs: another email.
    assert email_key("a@x", make_mail(1, body="x\n")) != email_key("a@x", make_mail(1, body="y\n"))


def test_headers_only_keys_are_stable_and_never_collide_with_full_ones() -> None:
    raw = make_mail(1)
    head = raw.split(b"\n\n")[0] + b"\n\n"
    a = email_key("a@x", head, headers_only_size=123)
    assert a == email_key("a@x", head.replace(b"\n", b"\r\n"), headers_only_size=123)
    assert a != email_key("a@x", head, headers_only_size=124)
    assert a != email_key("a@x", head)


def test_canonical_bytes_keeps_content() -> None:
    raw = b"Subject: s\r\nStatus: RO\r\n continued\r\nX: y\r\n\r\nbody\r\n\r\n\r\n"
    assert canonical_bytes(raw) == b"Subject: s\nX: y\n\nbody"
    assert canonical_bytes(b"") == b"\n\n"
    assert canonical_bytes(b"From : obsolete header\n\nb") == b"From : obsolete header\n\nb"
