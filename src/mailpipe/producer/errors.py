"""Errors of the producer. Each message is one actionable line without secrets."""

from __future__ import annotations

from mailpipe.errors import MailpipeError


class ImapAuthError(MailpipeError):
    """The server (or the token endpoint) refused our credentials: fatal, never retried in a loop.

    Retrying a wrong password can lock the account; a revoked refresh token needs ``--auth-setup``.
    """


class ImapUnavailable(MailpipeError):
    """The IMAP server cannot be reached or broke the connection (retried with backoff once running)."""


class ImapProtocolError(MailpipeError):
    """The server answered something we cannot work with (missing mailbox, no UIDPLUS for a move...)."""


class LeaseLost(MailpipeError):
    """Another producer holds (or took over) the mailbox lease; this one must stop publishing it."""


class CheckpointMoved(MailpipeError):
    """The checkpoint changed under us (another producer re-synced); the pass restarts from Redis."""
