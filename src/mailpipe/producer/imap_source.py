"""The IMAP edge: one connection to one account, with protocol failures turned into domain errors.

Everything protocol-shaped stays here (imapclient, TLS modes, FETCH items, IDLE); the sync logic in
``mailbox_sync`` sees :class:`MailboxState`, :class:`MessageMeta` and bytes. Mail is only ever read
with ``BODY.PEEK``, so fetching never sets ``\\Seen``; mailboxes are opened read-only (EXAMINE) unless
a post-publish action needs to write.
"""

from __future__ import annotations

import contextlib
import imaplib
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError, LoginError

from mailpipe.producer.auth import Authenticator
from mailpipe.producer.errors import ImapAuthError, ImapProtocolError, ImapUnavailable
from mailpipe.producer.settings import ImapAccount

log = logging.getLogger(__name__)

CHANGED, TIMEOUT, STOPPED = "changed", "timeout", "stopped"


@dataclass(frozen=True)
class MailboxState:
    uidvalidity: int
    uidnext: int | None
    exists: int


@dataclass(frozen=True)
class MessageMeta:
    uid: int
    size: int
    internaldate: datetime | None


def error_kind(exc: BaseException) -> str:
    """The ``fetch_error`` metric kind of a failure."""
    if isinstance(exc, ImapAuthError):
        return "auth"
    if isinstance(exc, ImapProtocolError):
        return "protocol"
    text = str(exc).lower()
    return "timeout" if "timed out" in text or "timeout" in text else "connection"


@contextlib.contextmanager
def translated(what: str) -> Iterator[None]:
    """Re-raise protocol and socket failures of ``what`` as domain errors (no tracebacks upstream)."""
    try:
        yield
    except LoginError as exc:
        raise ImapAuthError(f"{what}: login refused ({_first_line(exc)})") from None
    except (IMAPClientAbortError, OSError, EOFError, ssl.SSLError) as exc:
        raise ImapUnavailable(f"{what}: connection lost ({type(exc).__name__}: {_first_line(exc)})") from None
    except IMAPClientError as exc:
        raise ImapProtocolError(f"{what}: server said {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


class ImapConnection:
    """A logged-in connection; use as a context manager so it is always logged out / closed."""

    def __init__(self, account: ImapAccount, authenticator: Authenticator, *, timeout_s: float,
                 tls_verify: bool = True, ca_file: str | None = None) -> None:
        self.account = account
        self.authenticator = authenticator
        self.timeout_s = timeout_s
        self.tls_verify = tls_verify
        self.ca_file = ca_file
        self.client: IMAPClient | None = None
        self.where = f"IMAP {account.host}:{account.port} ({account.username})"

    def _ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.ca_file)
        if not self.tls_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def connect(self) -> ImapConnection:
        acct = self.account
        with translated(f"cannot connect to {self.where}"):
            try:
                client = IMAPClient(acct.host, port=acct.port, ssl=acct.tls == "tls",
                                    ssl_context=self._ssl_context() if acct.tls == "tls" else None,
                                    timeout=self.timeout_s)
            except socket.gaierror:
                raise ImapUnavailable(f"cannot connect to {self.where}: unknown host {acct.host!r}: "
                                      "check MAILPIPE_IMAP_HOST") from None
            except ConnectionRefusedError:
                raise ImapUnavailable(f"cannot connect to {self.where}: connection refused: check "
                                      "MAILPIPE_IMAP_HOST / MAILPIPE_IMAP_PORT and that the server runs") from None
            client.normalise_times = False  # keep INTERNALDATE time-zone aware
            if acct.tls == "starttls":
                client.starttls(self._ssl_context())
        self.client = client
        try:
            self.authenticator.login(client)
        except (ImapAuthError, ImapUnavailable):
            self.close()
            raise
        except Exception as exc:
            self.close()
            with translated(f"login to {self.where}"):
                raise exc
        return self

    def __enter__(self) -> ImapConnection:
        return self.connect() if self.client is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        client, self.client = self.client, None
        if client is None:
            return
        try:
            client.logout()
        except Exception:  # a dead connection cannot say goodbye; just drop the socket
            with contextlib.suppress(Exception):
                client.shutdown()

    @property
    def imap(self) -> IMAPClient:
        if self.client is None:
            raise ImapUnavailable(f"{self.where}: not connected")
        return self.client

    def has_idle(self) -> bool:
        with translated(f"{self.where}: CAPABILITY"):
            return bool(self.imap.has_capability("IDLE"))

    def select(self, mailbox: str, *, readonly: bool) -> MailboxState:
        with translated(f"{self.where}: SELECT {mailbox}"):
            try:
                info = self.imap.select_folder(mailbox, readonly=readonly)
            except IMAPClientError as exc:
                if isinstance(exc, IMAPClientAbortError):
                    raise
                raise ImapProtocolError(f"{self.where}: cannot open mailbox {mailbox!r} "
                                        f"({_first_line(exc)}): check MAILPIPE_MAILBOXES") from None
        uidvalidity = info.get(b"UIDVALIDITY")
        if uidvalidity is None:
            raise ImapProtocolError(f"{self.where}: SELECT {mailbox} returned no UIDVALIDITY")
        uidnext = info.get(b"UIDNEXT")
        return MailboxState(int(uidvalidity), int(uidnext) if uidnext is not None else None,
                            int(info.get(b"EXISTS", 0)))

    def highest_uid(self) -> int:
        """UID of the last message (0 if empty); for servers that do not announce UIDNEXT."""
        with translated(f"{self.where}: SEARCH"):
            return max(self.imap.search(["UID", "*"]), default=0)

    def fetch_meta(self, lo: int, hi: int | None = None) -> list[MessageMeta]:
        """UID, size and INTERNALDATE of the messages with UIDs ``lo..hi`` (``hi`` None: to the end).

        A UID SEARCH of the window first, then a FETCH of exactly those UIDs: imapclient only returns
        FETCH results for explicit UIDs, and the window keeps both answers small.
        """
        uid_range = f"{lo}:{'*' if hi is None else hi}"
        with translated(f"{self.where}: FETCH {uid_range}"):
            uids = [u for u in self.imap.search(["UID", uid_range]) if u >= lo]
            data = self.imap.fetch(uids, ["RFC822.SIZE", "INTERNALDATE"]) if uids else {}
        metas = [MessageMeta(int(uid), int(d.get(b"RFC822.SIZE", 0)), d.get(b"INTERNALDATE"))
                 for uid, d in data.items()]
        return sorted(metas, key=lambda m: m.uid)

    def uids_after(self, uid: int) -> list[int]:
        with translated(f"{self.where}: SEARCH"):
            return [u for u in self.imap.search(["UID", f"{uid + 1}:*"]) if u > uid]

    def existing(self, uids: Sequence[int]) -> list[int]:
        """Which of ``uids`` still exist."""
        if not uids:
            return []
        with translated(f"{self.where}: SEARCH"):
            return sorted(set(self.imap.search(["UID", ",".join(map(str, uids))])) & set(uids))

    def fetch_bodies(self, uids: Sequence[int]) -> dict[int, bytes]:
        """Full RFC 822 bytes, with BODY.PEEK so \\Seen is never set; expunged UIDs are simply absent."""
        return self._fetch(uids, "BODY.PEEK[]", b"BODY[]")

    def fetch_headers(self, uids: Sequence[int]) -> dict[int, bytes]:
        return self._fetch(uids, "BODY.PEEK[HEADER]", b"BODY[HEADER]")

    def _fetch(self, uids: Sequence[int], item: str, key: bytes) -> dict[int, bytes]:
        if not uids:
            return {}
        with translated(f"{self.where}: FETCH {len(uids)} bodies"):
            data = self.imap.fetch(list(uids), [item])
        result = {}
        for uid, d in data.items():
            body = d.get(key)
            if isinstance(body, bytes):
                result[int(uid)] = body
        return result

    def noop(self) -> None:
        with translated(f"{self.where}: NOOP"):
            self.imap.noop()

    def apply_action(self, uids: Sequence[int] | str, action: str) -> None:
        """The post-publish action: ``flag:NAME`` adds a flag, ``move:FOLDER`` moves (MOVE or COPY+EXPUNGE)."""
        if action == "none" or not uids:
            return
        kind, _, arg = action.partition(":")
        with translated(f"{self.where}: {kind} {arg}"):
            if kind == "flag":
                self.imap.add_flags(uids, [arg], silent=True)
            elif self.imap.has_capability("MOVE"):
                self.imap.move(uids, arg)
            elif self.imap.has_capability("UIDPLUS"):
                self.imap.copy(uids, arg)
                self.imap.add_flags(uids, [b"\\Deleted"], silent=True)
                self.imap.uid_expunge(uids)
            else:
                raise ImapProtocolError(f"{self.where}: cannot move mail safely (no MOVE or UIDPLUS)")

    def idle_wait(self, timeout_s: float, stop: threading.Event, *, tick_s: float,
                  on_tick: Callable[[], None]) -> str:
        """IDLE until new mail (CHANGED), ``timeout_s`` (TIMEOUT) or ``stop`` (STOPPED)."""
        imap = self.imap
        with translated(f"{self.where}: IDLE"):
            imap.idle()
            # On any exception DONE is not sent: the caller drops the connection anyway.
            outcome = self._idle_loop(imap, timeout_s, stop, tick_s, on_tick)
            imap.idle_done()
        return outcome

    @staticmethod
    def _idle_loop(imap: IMAPClient, timeout_s: float, stop: threading.Event, tick_s: float,
                   on_tick: Callable[[], None]) -> str:
        deadline = time.monotonic() + timeout_s
        while not stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return TIMEOUT
            responses = imap.idle_check(timeout=min(tick_s, remaining))
            if any(b"BYE" in r[:2] for r in responses):
                raise imaplib.IMAP4.abort("server said BYE")
            if any(len(r) > 1 and r[1] in (b"EXISTS", b"RECENT") for r in responses):
                return CHANGED
            on_tick()
        return STOPPED
