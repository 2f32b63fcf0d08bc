from __future__ import annotations

import json

import pytest

from mailpipe.entry import ENTRY_FORMAT_VERSION, Attachment, Email, SizePolicy, Source, build_entry, parse_entry
from mailpipe.errors import MalformedEntry


def make_email(**kw: object) -> Email:
    base: dict[str, object] = dict(message_id="<a@x>", subject="Hello", from_=["a@x"], to=["b@y"], text="hi",
                                   html="<p>hi</p>", size=10, raw=b"raw bytes", raw_sha256="abc",
                                   attachments=[Attachment("f.pdf", "application/pdf", 3, "deadbeef")],
                                   headers=[("Subject", "Hello")])
    base.update(kw)
    return Email(**base)  # type: ignore[arg-type]


def test_round_trip_keeps_every_field() -> None:
    email = make_email()
    fields = build_entry(email, idempotency_key="k1", correlation_id="c1",
                         source=Source("imap", "me@x", "INBOX", 7, 42), enqueued_ms=1000)
    assert all(isinstance(v, str) for v in fields.values())
    msg = parse_entry("1-0", fields)
    assert msg.email == email
    assert (msg.idempotency_key, msg.correlation_id, msg.attempt) == ("k1", "c1", 1)
    assert msg.source == Source("imap", "me@x", "INBOX", 7, 42)
    assert msg.enqueued_ms == msg.first_enqueued_ms == 1000
    assert msg.version == ENTRY_FORMAT_VERSION and not msg.bypass_idempotency


def test_non_imap_source_has_no_uid() -> None:
    msg = parse_entry("1-0", build_entry(make_email(), idempotency_key="k", source=Source("eml", "", "dir")))
    assert msg.source.uid is None and msg.source.uidvalidity is None


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"idem": ""}, r"missing field\(s\) idem"),
        ({"v": "2"}, "format version 2 is not supported"),
        ({"attempt": "zero"}, "'attempt' must be an integer"),
        ({"attempt": "0"}, "attempt must be >= 1"),
        ({"src": "pigeon"}, "unknown source kind"),
        ({"email": "[1, 2]"}, "not a valid email document"),
        ({"idem": "has space"}, "whitespace"),
        ({"uid": "x"}, "'uid' must be an integer"),
    ],
)
def test_malformed_entries_name_the_problem(change: dict[str, str], expected: str) -> None:
    fields = build_entry(make_email(), idempotency_key="k", source=Source("api"))
    fields.update(change)
    with pytest.raises(MalformedEntry, match=expected) as info:
        parse_entry("5-1", fields)
    assert "5-1" in str(info.value)


def test_size_policy_truncates_bodies_and_drops_large_raw_visibly() -> None:
    email = make_email(text="t" * 100, html="h" * 100, raw=b"r" * 100, raw_ref="imap://x",
                       headers=[("X-H", str(i)) for i in range(10)])
    fields = build_entry(email, idempotency_key="k", source=Source("api"),
                         policy=SizePolicy(raw_inline_max_bytes=50, body_max_chars=20, max_headers=5))
    doc = json.loads(fields["email"])
    assert doc["text"] == "t" * 20 and doc["text_truncated"] is True
    assert doc["html"] == "h" * 20 and doc["html_truncated"] is True
    assert doc["raw"] is None and doc["raw_ref"] == "imap://x"
    assert len(doc["headers"]) == 5 and "headers truncated to 5" in doc["defects"]


def test_small_email_is_untouched_by_policy() -> None:
    email = make_email()
    assert email.apply_policy(SizePolicy()) is email


def test_replay_force_field_sets_bypass() -> None:
    fields = build_entry(make_email(), idempotency_key="k", source=Source("api"))
    fields["replay"] = "force"
    assert parse_entry("1-0", fields).bypass_idempotency


def test_build_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="idempotency key"):
        build_entry(make_email(), idempotency_key="", source=Source("api"))
    with pytest.raises(ValueError, match="source kind"):
        build_entry(make_email(), idempotency_key="k", source=Source("fax"))
    with pytest.raises(ValueError, match="attempt"):
        build_entry(make_email(), idempotency_key="k", source=Source("api"), attempt=0)


def test_empty_raw_message_survives_the_round_trip() -> None:
    fields = build_entry(make_email(raw=b""), idempotency_key="k", source=Source("api"))
    assert parse_entry("1-0", fields).email.raw == b""


def test_email_document_is_decoded_lazily_and_a_broken_one_raises_on_access() -> None:
    fields = build_entry(make_email(), idempotency_key="k", source=Source("api"))
    fields["email"] = "{not json"
    message = parse_entry("7-0", fields)  # the envelope is fine
    with pytest.raises(MalformedEntry, match=r"7-0.*not a valid email document"):
        _ = message.email
