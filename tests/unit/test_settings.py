from __future__ import annotations

import pytest

from mailpipe.errors import ConfigError
from mailpipe.settings import WorkerSettings, load_settings


def test_environment_is_read_and_overrides_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILPIPE_CONCURRENCY", "7")
    monkeypatch.setenv("MAILPIPE_GROUP", "billing")
    s = load_settings(WorkerSettings, group="support", consumer=None)
    assert s.concurrency == 7 and s.group == "support" and s.consumer is None


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"concurrency": 0}, "MAILPIPE_CONCURRENCY=0"),
        ({"group": "bad name"}, "MAILPIPE_GROUP='bad name'"),
        ({"handler": "nocolon"}, "MAILPIPE_HANDLER"),
        ({"redis_url": "http://x"}, "MAILPIPE_REDIS_URL: must start with redis://"),
        ({"dedup_bucket_s": 100, "dedup_retention_s": 10}, "dedup_bucket_s must not exceed"),
        ({"log_level": "chatty"}, "MAILPIPE_LOG_LEVEL"),
    ],
)
def test_invalid_settings_fail_with_one_line_naming_the_variable(override: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(WorkerSettings, **override)
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_redis_password_is_never_echoed() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(WorkerSettings, redis_url="http://user:hunter2@host")
    assert "hunter2" not in str(info.value)
    s = load_settings(WorkerSettings, redis_url="redis://user:hunter2@host:6379/2")
    assert "hunter2" not in repr(s) and "hunter2" not in str(s.model_dump())


def test_empty_redis_url_means_embedded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILPIPE_REDIS_URL", "")
    assert load_settings(WorkerSettings).redis_url is None


def test_the_shipped_env_example_loads_as_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(tmp_path)  # type: ignore[arg-type]
    Path(".env").write_text((root / ".env.example").read_text())
    s = load_settings(WorkerSettings)
    assert s.metrics_port is None and s.consumer is None and s.redis_url is None
    assert s == WorkerSettings(_env_file=None)  # type: ignore[call-arg]


def test_every_setting_is_documented_in_env_example() -> None:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / ".env.example").read_text()
    for name in WorkerSettings.model_fields:
        assert f"MAILPIPE_{name.upper()}=" in text, name
