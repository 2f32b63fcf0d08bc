"""MIME parsing: never raises, names what it could not parse, keeps raw within the size policy."""

from __future__ import annotations

import json

import pytest

from mailpipe.entry import Email, SizePolicy, Source, build_entry, parse_entry
from mailpipe.producer.mime import decode_text, parse_email
from tests.mail_samples import big_mail, make_mail, nasty_corpus


@pytest.mark.parametrize("name", sorted(nasty_corpus()))
def test_nasty_message_parses_and_survives_the_entry_round_trip(name: str) -> None:
    raw = nasty_corpus()[name]
    email = parse_email(raw, raw_ref="imap://x")
    fields = build_entry(email, idempotency_key="k", source=Source("imap"))
    json.loads(fields["email"])  # valid JSON, no lone surrogates
    fields["email"].encode("utf-8")
    back = parse_entry("1-0", fields).email
    assert back.size == len(raw) and back.raw == raw
    assert back.raw_sha256 == email.raw_sha256


def test_defects_say_what_could_not_be_parsed() -> None:
    corpus = nasty_corpus()
    assert "no Message-ID header" in parse_email(corpus["no_message_id"]).defects
    bad = parse_email(corpus["unknown_charset"])
    assert bad.text is not None and "Grüße" in bad.text
    assert any("unknown charset 'x-no-such-charset'" in d for d in bad.defects)
    eight = parse_email(corpus["eight_bit_headers"])
    assert eight.subject == "Grüße aus Köln — ✓" and eight.from_ == ["Jürgen <j@example.com>"]
    assert any("raw 8-bit bytes" in d for d in eight.defects)
    assert any("Boundary" in d or "boundary" in d for d in parse_email(corpus["missing_boundary"]).defects)
    unclosed = parse_email(corpus["unclosed_multipart"])
    assert unclosed.text == "plain\r\n" or (unclosed.text or "").startswith("plain")
    assert unclosed.html is not None and "<p>html" in unclosed.html
    deep = parse_email(corpus["deep_nesting"])
    assert any("nesting deeper" in d for d in deep.defects)
    headers = parse_email(corpus["many_headers"], policy=SizePolicy(max_headers=50))
    assert len(headers.headers) == 603  # the parser keeps them; the policy cuts them in the entry
    assert len(headers.apply_policy(SizePolicy(max_headers=50)).headers) == 50
    assert parse_email(corpus["garbage_addresses"]).date is None


def test_structured_fields_of_a_regular_message() -> None:
    raw = big_mail(1000).replace(b"Subject:", b"In-Reply-To: <p@x>\r\nReferences: <a@x> <p@x>\r\nSubject:", 1)
    email = parse_email(raw)
    assert email.subject == "big: a large attachment" and email.text == "see attachment\n"
    assert email.in_reply_to == "<p@x>" and email.references == ["<a@x>", "<p@x>"]
    (attachment,) = email.attachments
    assert (attachment.filename, attachment.content_type, attachment.size) == ("big.bin", "application/octet-stream",
                                                                              1000)
    assert len(attachment.sha256) == 64
    dated = parse_email(make_mail(1))
    assert dated.date == "2024-05-01T12:00:00+00:00" and dated.message_id == "<t.1@example.com>"
    assert dated.to == ["dest@example.com"] and dated.from_ == ["Sender 1 <sender1@example.com>"]


def test_raw_is_inline_only_within_the_policy() -> None:
    raw = make_mail(1)
    small = parse_email(raw, policy=SizePolicy(raw_inline_max_bytes=len(raw)), raw_ref="ref")
    assert small.raw == raw and small.raw_ref is None
    large = parse_email(raw, policy=SizePolicy(raw_inline_max_bytes=len(raw) - 1), raw_ref="ref")
    assert large.raw is None and large.raw_ref == "ref" and large.size == len(raw)
    headers_only = parse_email(raw.split(b"\n\n")[0], raw_ref="ref", headers_only_size=10**9)
    assert headers_only.size == 10**9 and headers_only.raw is None and headers_only.raw_sha256 is None
    assert any("headers only" in d for d in headers_only.defects)


def test_decode_text_falls_back_and_says_so() -> None:
    assert decode_text(b"caf\xc3\xa9", "utf-8") == ("café", None)
    assert decode_text(b"caf\xc3\xa9", "us-ascii") == ("café", "bytes are not valid us-ascii: decoded as UTF-8")
    text, problem = decode_text(b"caf\xe9", "nope")
    assert text == "café" and problem is not None and "Windows-1252" in problem


def test_parse_never_raises_on_random_bytes() -> None:
    import random

    rng = random.Random(7)
    for _ in range(200):
        raw = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 400)))
        assert isinstance(parse_email(b"Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\n" + raw), Email)
