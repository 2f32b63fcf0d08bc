"""Settings of ``python producer.py``: one IMAP account from ``MAILPIPE_IMAP_*`` or several from
``MAILPIPE_ACCOUNTS`` (JSON), plus how the producer syncs, paces and parses.

Built once in ``main`` (``load_settings(ProducerSettings, ...)``) and passed in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator

from mailpipe import defaults
from mailpipe.entry import SizePolicy
from mailpipe.producer.oauth2_client import OAuth2Settings

TlsMode = Literal["tls", "starttls", "none"]
AuthMode = Literal["password", "xoauth2"]

# IMAP's own timeout for IDLE is 30 minutes (RFC 2177); servers may drop an idler after 29.
MAX_IDLE_REFRESH_S = 29 * 60
_ACTION = re.compile(r"^(none|flag:[^\s()]+|move:.+)$")
_START = re.compile(r"^(new|all|since:\d{4}-\d{2}-\d{2})$")


def _check_action(value: str) -> str:
    if not _ACTION.match(value):
        raise ValueError("must be none, flag:NAME (e.g. flag:$Mailpipe or flag:\\Flagged) or move:FOLDER")
    return value


class AccountSettings(BaseModel):
    """One IMAP account (an entry of ``MAILPIPE_ACCOUNTS``; fields left out use the top-level values)."""

    model_config = {"extra": "forbid"}

    imap_host: str | None = None
    imap_port: int | None = Field(default=None, ge=1, le=65535)
    imap_tls: TlsMode | None = None
    username: str | None = None
    imap_password: SecretStr | None = None
    auth: AuthMode | None = None
    token_file: str | None = None
    mailboxes: list[str] | None = None
    post_action: str | None = None

    @field_validator("post_action")
    @classmethod
    def _action(cls, value: str | None) -> str | None:
        return None if value is None else _check_action(value)


class ProducerSettings(OAuth2Settings):
    """Everything ``python producer.py`` reads (env ``MAILPIPE_*``, ``.env``, then CLI options).

    The login (``username``), ``token_file`` and the ``oauth_*`` settings come from OAuth2Settings.
    """

    # --- the IMAP account (the single-account form) -----------------------------------------------
    imap_host: str | None = None
    imap_port: int | None = Field(default=None, ge=1, le=65535, description="default 993 (tls) / 143")
    imap_tls: TlsMode = "tls"
    imap_tls_verify: bool = True
    imap_ca_file: str | None = None
    imap_password: SecretStr | None = None
    imap_timeout_s: float = Field(default=defaults.DEFAULT_IMAP_TIMEOUT_S, gt=0)
    auth: AuthMode = "password"
    mailboxes: list[str] = Field(default_factory=lambda: ["INBOX"], min_length=1)
    accounts: list[AccountSettings] = Field(default_factory=list)
    # Name of the account for local imports (--source); defaults to username, else "local".
    account: str | None = None

    # --- how mail is synced ------------------------------------------------------------------------
    poll_interval_s: float = Field(default=defaults.DEFAULT_POLL_INTERVAL_S, gt=0)
    idle_refresh_s: float = Field(default=defaults.DEFAULT_IDLE_REFRESH_S, gt=0, le=MAX_IDLE_REFRESH_S)
    use_idle: bool = True
    start: str = "new"
    uid_window: int = Field(default=defaults.DEFAULT_UID_WINDOW, ge=1, le=100_000)
    fetch_batch_messages: int = Field(default=defaults.DEFAULT_FETCH_BATCH_MESSAGES, ge=1, le=10_000)
    fetch_batch_bytes: int = Field(default=defaults.DEFAULT_FETCH_BATCH_BYTES, ge=1)
    max_fetch_bytes: int = Field(default=defaults.DEFAULT_MAX_FETCH_BYTES, ge=1024)
    post_action: str = "none"
    mailbox_actions: dict[str, str] = Field(default_factory=dict)
    resync_margin_s: int = Field(default=defaults.DEFAULT_RESYNC_MARGIN_S, ge=0)
    reconnect_max_s: float = Field(default=defaults.DEFAULT_RECONNECT_MAX_S, gt=0)

    # --- coordination and pacing -------------------------------------------------------------------
    lease_ttl_s: float = Field(default=defaults.DEFAULT_LEASE_TTL_S, ge=1)
    backpressure_limit: int = Field(default=defaults.DEFAULT_BACKPRESSURE_LIMIT, ge=0)
    backpressure_check_s: float = Field(default=defaults.DEFAULT_BACKPRESSURE_CHECK_S, gt=0)
    published_retention_s: int = Field(default=defaults.DEFAULT_PUBLISHED_RETENTION_S, ge=60)
    published_bucket_s: int = Field(default=defaults.DEFAULT_PUBLISHED_BUCKET_S, ge=60)

    # --- size policy of the entries ----------------------------------------------------------------
    raw_inline_max_bytes: int = Field(default=defaults.DEFAULT_RAW_INLINE_MAX_BYTES, ge=0)
    body_max_chars: int = Field(default=defaults.DEFAULT_BODY_MAX_CHARS, ge=0)
    max_headers: int = Field(default=defaults.DEFAULT_MAX_HEADERS, ge=1)

    @field_validator("start")
    @classmethod
    def _start(cls, value: str) -> str:
        if not _START.match(value):
            raise ValueError("must be new, all or since:YYYY-MM-DD")
        if value.startswith("since:"):
            datetime.strptime(value[6:], "%Y-%m-%d")  # raises ValueError naming the bad date
        return value

    @field_validator("post_action")
    @classmethod
    def _action(cls, value: str) -> str:
        return _check_action(value)

    @field_validator("mailbox_actions")
    @classmethod
    def _actions(cls, value: dict[str, str]) -> dict[str, str]:
        return {box: _check_action(action) for box, action in value.items()}

    @field_validator("imap_password", mode="before")
    @classmethod
    def _empty_password(cls, value: Any) -> Any:
        return None if value == "" else value

    @model_validator(mode="after")
    def _coherent(self) -> ProducerSettings:
        if self.published_bucket_s > self.published_retention_s:
            raise ValueError("published_bucket_s must not exceed published_retention_s")
        if self.lease_ttl_s < 3:
            raise ValueError("lease_ttl_s must be at least 3 seconds (it is renewed every third)")
        return self

    # --- derived -----------------------------------------------------------------------------------

    def size_policy(self) -> SizePolicy:
        return SizePolicy(raw_inline_max_bytes=self.raw_inline_max_bytes, body_max_chars=self.body_max_chars,
                          max_headers=self.max_headers)

    def local_account(self) -> str:
        return self.account or self.username or "local"

    def action_for(self, account: ImapAccount, mailbox: str) -> str:
        return self.mailbox_actions.get(mailbox, account.post_action)

    def imap_accounts(self) -> list[ImapAccount]:
        """The accounts to sync, each complete; raises ValueError naming what is missing."""
        raw = self.accounts or [AccountSettings()]
        result = []
        for i, acct in enumerate(raw):
            where = f"MAILPIPE_ACCOUNTS[{i}]" if self.accounts else "MAILPIPE_IMAP"
            host = acct.imap_host or self.imap_host
            username = acct.username or (None if self.accounts else self.username)
            if not host:
                raise ValueError(f"{where}: no IMAP host: set MAILPIPE_IMAP_HOST (e.g. imap.gmail.com)")
            if not username:
                raise ValueError(f"{where}: no IMAP user: set MAILPIPE_USERNAME (the login / address)")
            auth = acct.auth or self.auth
            password = acct.imap_password or (None if self.accounts else self.imap_password)
            if auth == "password" and password is None:
                raise ValueError(
                    f"{where}: no password for {username}: set MAILPIPE_IMAP_PASSWORD "
                    "(an app password for Gmail/Microsoft 365) or use MAILPIPE_AUTH=xoauth2"
                )
            tls = acct.imap_tls or self.imap_tls
            port = acct.imap_port or self.imap_port or (993 if tls == "tls" else 143)
            result.append(ImapAccount(
                host=host, port=port, tls=tls, username=username, password=password, auth=auth,
                token_file=acct.token_file or self.token_file,
                mailboxes=tuple(acct.mailboxes or self.mailboxes),
                post_action=acct.post_action or self.post_action,
            ))
        names = [a.username for a in result]
        if len(set(names)) != len(names):
            raise ValueError("MAILPIPE_ACCOUNTS: the same account is listed twice")
        return result

    def for_account(self, account: ImapAccount) -> ProducerSettings:
        """A copy whose top-level IMAP fields are ``account``'s (what OAuth2Authenticator reads)."""
        return self.model_copy(update={
            "imap_host": account.host, "imap_port": account.port, "imap_tls": account.tls,
            "username": account.username, "imap_password": account.password, "auth": account.auth,
            "token_file": account.token_file, "mailboxes": list(account.mailboxes), "accounts": [],
        })

    def start_floor(self) -> datetime | None:
        """The INTERNALDATE lower bound of ``start=since:DATE`` (UTC midnight), else None."""
        if self.start.startswith("since:"):
            return datetime.strptime(self.start[6:], "%Y-%m-%d").replace(tzinfo=UTC)
        return None


@dataclass(frozen=True)
class ImapAccount:
    """One fully resolved IMAP account."""

    host: str
    port: int
    tls: TlsMode
    username: str
    password: SecretStr | None
    auth: AuthMode
    token_file: str
    mailboxes: tuple[str, ...]
    post_action: str

    def __repr__(self) -> str:  # the dataclass repr would be fine (SecretStr masks), but keep it short
        return f"ImapAccount({self.username}@{self.host}:{self.port}, {self.tls}, {self.auth})"
