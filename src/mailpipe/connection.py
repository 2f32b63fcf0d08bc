"""Connecting to Redis: one URL, actionable one-line errors, secrets never shown."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError, AuthorizationError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from mailpipe.errors import ConfigError, RedisUnavailable
from mailpipe.settings import CommonSettings


def redact_url(url: str) -> str:
    """The URL with any password replaced by ***, safe for logs and errors."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit((parts.scheme, f"{user}:***@{host}{port}", parts.path, parts.query, parts.fragment))


def resolve_url(settings: CommonSettings) -> str:
    """The configured Redis URL, or the URL of the embedded server (started if needed)."""
    if settings.redis_url is not None:
        return settings.redis_url.get_secret_value()
    from mailpipe.embedded import ensure_embedded

    return ensure_embedded(settings.embedded_port, settings.embedded_dir)


def _explain(exc: Exception, url: str) -> RedisUnavailable:
    where = redact_url(url)
    if isinstance(exc, AuthenticationError | AuthorizationError) or "WRONGPASS" in str(exc) or (
        "NOAUTH" in str(exc)
    ):
        return RedisUnavailable(
            f"Redis at {where} rejected the credentials: check user and password in MAILPIPE_REDIS_URL"
        )
    if isinstance(exc, RedisTimeoutError):
        return RedisUnavailable(f"Redis at {where} did not answer in time: check host, port and firewall")
    if isinstance(exc, RedisConnectionError):
        reason = str(exc).split("\n")[0]
        if "SSL" in reason or "ssl" in reason:
            hint = "check the TLS setup (rediss:// needs a TLS port; ssl_cert_reqs/ssl_ca_certs in the URL)"
        else:
            hint = "is it running? set MAILPIPE_REDIS_URL (or leave it empty for the embedded server)"
        return RedisUnavailable(f"cannot connect to Redis at {where} ({_scrub(reason, url)}): {hint}")
    if isinstance(exc, ResponseError):
        return RedisUnavailable(f"Redis at {where} refused the connection: {_scrub(str(exc), url)}")
    return RedisUnavailable(f"Redis at {where}: {type(exc).__name__}: {_scrub(str(exc), url)}")


def _scrub(text: str, url: str) -> str:
    password = urlsplit(url).password if "://" in url else None
    return text.replace(password, "***") if password else text


def _client_kwargs() -> dict[str, object]:
    return {
        "decode_responses": True,
        "health_check_interval": 30,
        "socket_connect_timeout": 5,
        "socket_keepalive": True,
    }


async def connect(url: str) -> aioredis.Redis:
    """An asyncio client for ``url``, verified with PING."""
    try:
        client = aioredis.Redis.from_url(url, **_client_kwargs())  # type: ignore[arg-type]
    except ValueError as exc:
        raise ConfigError(f"invalid MAILPIPE_REDIS_URL {redact_url(url)}: {_scrub(str(exc), url)}") from None
    try:
        await client.ping()
    except Exception as exc:
        await client.aclose()
        raise _explain(exc, url) from None
    return client


def connect_sync(url: str) -> redis.Redis:
    """A blocking client for ``url`` (CLI, producer), verified with PING."""
    try:
        client = redis.Redis.from_url(url, **_client_kwargs())
    except ValueError as exc:
        raise ConfigError(f"invalid MAILPIPE_REDIS_URL {redact_url(url)}: {_scrub(str(exc), url)}") from None
    try:
        client.ping()
    except Exception as exc:
        client.close()
        raise _explain(exc, url) from None
    return client


def explain_error(exc: Exception, url: str) -> RedisUnavailable:
    """Public form of the error translation, for code that catches Redis errors mid-run."""
    return _explain(exc, url)
