"""Structured logging: JSON lines (python-json-logger) or plain text, secrets redacted."""

from __future__ import annotations

import logging
import re
import sys

from pythonjsonlogger.json import JsonFormatter

# user:password@ in URLs, and access/refresh tokens or passwords in key=value / JSON form.
_SECRET_PATTERNS = [
    (re.compile(r"(?P<pre>[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s]+@", re.I), r"\g<pre>***@"),
    (
        re.compile(r"(?P<pre>(access_token|refresh_token|client_secret|password|token)[\"']?\s*[:=]\s*[\"']?)"
                   r"[^\"'\s,&}]+", re.I),
        r"\g<pre>***",
    ),
]


def redact(text: str) -> str:
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFilter(logging.Filter):
    """Last line of defence: scrub URLs with passwords and token-looking values from every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        # Format first, then redact the result: arguments may be dicts or objects (e.g. a token response
        # logged by an OAuth library) whose text only exists once formatted.
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not lose the record
            message = str(record.msg)
        record.msg = redact(message)
        record.args = None
        for key, value in list(record.__dict__.items()):
            if isinstance(value, str) and key not in ("msg", "message", "name", "levelname", "pathname"):
                record.__dict__[key] = redact(value)
        return True


_STANDARD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class TextFormatter(logging.Formatter):
    """Human-readable lines that still show the structured fields (stream id, key, consumer...)."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = {k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS and not k.startswith("_")}
        if extras:
            line += "  " + " ".join(f"{k}={v}" for k, v in extras.items())
        return line


def setup_logging(level: str = "INFO", fmt: str = "json", stream: object = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)  # type: ignore[arg-type]
    if fmt == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "ts", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
