"""Typed settings, read from MAILPIPE_* environment variables and a .env file, overridden by CLI options.

Built once in ``main`` and passed in; nothing reads the environment anywhere else.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mailpipe import defaults
from mailpipe.errors import ConfigError
from mailpipe.keys import Keys

_NAME_PATTERN = r"^[A-Za-z0-9_.\-]{1,100}$"


class CommonSettings(BaseSettings):
    """Settings shared by every mailpipe process."""

    model_config = SettingsConfigDict(
        env_prefix="MAILPIPE_", env_file=".env", env_file_encoding="utf-8", extra="ignore", env_ignore_empty=True,
        validate_default=True,
    )

    redis_url: SecretStr | None = Field(
        default=None,
        description="redis://[user:password@]host:port/db or rediss:// for TLS; empty starts an embedded server",
    )
    namespace: str = Field(default=defaults.DEFAULT_NAMESPACE, pattern=_NAME_PATTERN)
    stream: str = Field(default=defaults.DEFAULT_STREAM, pattern=_NAME_PATTERN)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "json"
    embedded_port: int = Field(default=defaults.DEFAULT_EMBEDDED_PORT, ge=1, le=65535)
    embedded_dir: str = defaults.DEFAULT_EMBEDDED_DIR
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = Field(default=None, ge=0, le=65535)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("redis_url", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("redis_url")
    @classmethod
    def _scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            url = value.get_secret_value()
            if not url.startswith(("redis://", "rediss://", "unix://")):
                raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    def keys(self) -> Keys:
        return Keys(namespace=self.namespace, stream_name=self.stream)


class WorkerSettings(CommonSettings):
    """Settings of ``python worker.py``."""

    @property
    def effective_prefetch(self) -> int:
        """Entries one worker holds at once (running or waiting for a handler slot)."""
        return self.prefetch or max(self.concurrency, self.batch_size)

    consumer: str | None = Field(default=None, pattern=_NAME_PATTERN)
    group: str = Field(default=defaults.DEFAULT_GROUP, pattern=_NAME_PATTERN)
    group_start_id: str = Field(default=defaults.DEFAULT_GROUP_START_ID, pattern=r"^(\$|0|\d+-\d+|\d+)$")
    handler: str = Field(default=defaults.DEFAULT_HANDLER, pattern=r"^[\w.]+:[\w.]+$")
    concurrency: int = Field(default=defaults.DEFAULT_CONCURRENCY, ge=1, le=10_000)
    batch_size: int = Field(default=defaults.DEFAULT_BATCH_SIZE, ge=1, le=10_000)
    prefetch: int = Field(default=defaults.DEFAULT_PREFETCH, ge=0, le=100_000)
    block_ms: int = Field(default=defaults.DEFAULT_BLOCK_MS, ge=1, le=600_000)
    exit_when_idle: bool = False
    shutdown_timeout_s: float = Field(default=defaults.DEFAULT_SHUTDOWN_TIMEOUT_S, ge=0)
    claim_ttl_ms: int = Field(default=defaults.DEFAULT_CLAIM_TTL_MS, ge=100)
    dedup_retention_s: int = Field(default=defaults.DEFAULT_DEDUP_RETENTION_S, ge=1)
    dedup_bucket_s: int = Field(default=defaults.DEFAULT_DEDUP_BUCKET_S, ge=1)
    retry_base_s: float = Field(default=defaults.DEFAULT_RETRY_BASE_S, ge=0)
    retry_factor: float = Field(default=defaults.DEFAULT_RETRY_FACTOR, ge=1)
    retry_cap_s: float = Field(default=defaults.DEFAULT_RETRY_CAP_S, ge=0)
    max_attempts: int = Field(default=defaults.DEFAULT_MAX_ATTEMPTS, ge=1)
    reclaim_idle_ms: int = Field(default=defaults.DEFAULT_RECLAIM_IDLE_MS, ge=100)
    max_deliveries: int = Field(default=defaults.DEFAULT_MAX_DELIVERIES, ge=1)
    consumer_prune_idle_ms: int = Field(default=defaults.DEFAULT_CONSUMER_PRUNE_IDLE_MS, ge=0)
    breaker_threshold: int = Field(default=defaults.DEFAULT_BREAKER_THRESHOLD, ge=0)
    breaker_cooldown_s: float = Field(default=defaults.DEFAULT_BREAKER_COOLDOWN_S, ge=0)
    stream_max_len: int = Field(default=defaults.DEFAULT_STREAM_MAX_LEN, ge=0)
    dead_letter_retention_s: int = Field(default=defaults.DEFAULT_DEAD_LETTER_RETENTION_S, ge=0)
    housekeeping_interval_s: float = Field(default=defaults.DEFAULT_HOUSEKEEPING_INTERVAL_S, gt=0)

    @model_validator(mode="after")
    def _coherent(self) -> WorkerSettings:
        if self.prefetch and self.prefetch < self.concurrency:
            raise ValueError("prefetch must be 0 (automatic) or at least concurrency")
        if self.dedup_bucket_s > self.dedup_retention_s:
            raise ValueError("dedup_bucket_s must not exceed dedup_retention_s")
        if self.retry_cap_s < self.retry_base_s:
            raise ValueError("retry_cap_s must be >= retry_base_s")
        if self.reclaim_idle_ms <= self.claim_ttl_ms // 3:
            raise ValueError("reclaim_idle_ms must be larger than a third of claim_ttl_ms (the heartbeat period)")
        return self


S = TypeVar("S", bound=CommonSettings)


def load_settings(cls: type[S], **overrides: Any) -> S:
    """Build settings from env/.env plus explicit overrides (None means "not given")."""
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return cls(**given)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    """One line per invalid setting, naming its environment variable; never echoes secret values."""
    lines = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p != "__root__"]
        name = loc[0] if loc else ""
        var = f"MAILPIPE_{name.upper()}" if name else "settings"
        msg = err.get("msg", "invalid").removeprefix("Value error, ")
        sensitive = any(word in str(part).lower() for part in loc for word in ("password", "secret", "token", "url"))
        if name and not sensitive:
            value = err.get("input")
            shown = f"={value!r}" if isinstance(value, str | int | float | bool) else ""
            lines.append(f"invalid setting {var}{shown}: {msg}")
        else:
            lines.append(f"invalid setting {var}: {msg}")
    return "; ".join(lines)
