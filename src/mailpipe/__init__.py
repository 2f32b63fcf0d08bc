"""mailpipe: move email through Redis Streams reliably."""

from mailpipe.entry import ENTRY_FORMAT_VERSION, Email, Message, build_entry, parse_entry
from mailpipe.errors import MalformedEntry, PermanentError, RetryLater, TransientError
from mailpipe.handler import Context

__version__ = "0.1.0"

__all__ = [
    "ENTRY_FORMAT_VERSION",
    "Context",
    "Email",
    "MalformedEntry",
    "Message",
    "PermanentError",
    "RetryLater",
    "TransientError",
    "build_entry",
    "parse_entry",
]
