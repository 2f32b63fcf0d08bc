"""The streaming mbox reader: message boundaries, quoting, offsets."""

from __future__ import annotations

from pathlib import Path

from mailpipe.producer.local_source import read_mbox


def test_boundaries_quoting_and_offsets(tmp_path: Path) -> None:
    data = (b"From a@x Mon Jan  1 00:00:00 2024\nSubject: one\n\nFrom the start\n>From quoted\n\n"
            b"From 1788@xxx Thu Jan 11 08:47:12 +0000 2024\r\nSubject: two\r\n\r\nbody\r\n\r\n"
            b"From nobody-without-a-date\nSubject: still two\n")
    path = tmp_path / "box.mbox"
    path.write_bytes(data)
    seen: list[int] = []
    messages = list(read_mbox(path, seen.append))
    assert [m.raw for m in messages] == [
        b"Subject: one\n\nFrom the start\nFrom quoted\n",
        b"Subject: two\r\n\r\nbody\r\n\r\nFrom nobody-without-a-date\nSubject: still two\n",
    ]
    assert messages[1].ref.endswith(f"#byte={data.index(b'From 1788')}")
    assert sum(seen) == len(data)


def test_empty_file_has_no_messages(tmp_path: Path) -> None:
    (tmp_path / "e.mbox").write_bytes(b"")
    assert list(read_mbox(tmp_path / "e.mbox")) == []
