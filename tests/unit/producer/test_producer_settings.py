"""Producer settings: validation with one line per bad setting, accounts resolved completely."""

from __future__ import annotations

import pytest

from mailpipe.errors import ConfigError
from mailpipe.producer.settings import ProducerSettings
from mailpipe.settings import load_settings


def load(**values: object) -> ProducerSettings:
    return load_settings(ProducerSettings, _env_file=None, **values)


def test_single_account_from_top_level_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILPIPE_IMAP_HOST", "imap.example.com")
    monkeypatch.setenv("MAILPIPE_USERNAME", "dana@example.com")
    monkeypatch.setenv("MAILPIPE_IMAP_PASSWORD", "app-password")
    monkeypatch.setenv("MAILPIPE_MAILBOXES", '["INBOX", "Support"]')
    (account,) = load().imap_accounts()
    assert (account.host, account.port, account.tls, account.mailboxes) == (
        "imap.example.com", 993, "tls", ("INBOX", "Support"))
    assert "app-password" not in repr(account)
    assert load(imap_tls="starttls").imap_accounts()[0].port == 143


def test_several_accounts_with_their_own_settings() -> None:
    settings = load(imap_host="imap.example.com", accounts=[
        {"username": "a@example.com", "imap_password": "x"},
        {"username": "b@gmail.com", "auth": "xoauth2", "imap_host": "imap.gmail.com", "mailboxes": ["[Gmail]/All Mail"],
         "token_file": ".mailpipe/b.json"},
    ], post_action="flag:$Done", mailbox_actions={"Archive": "move:Old"})
    a, b = settings.imap_accounts()
    assert a.host == "imap.example.com" and a.mailboxes == ("INBOX",)
    assert b.auth == "xoauth2" and b.password is None and b.token_file == ".mailpipe/b.json"
    assert settings.action_for(a, "INBOX") == "flag:$Done" and settings.action_for(a, "Archive") == "move:Old"
    copy = settings.for_account(b)
    assert copy.username == "b@gmail.com" and copy.imap_host == "imap.gmail.com" and copy.accounts == []


@pytest.mark.parametrize(("values", "message"), [
    ({"start": "yesterday"}, "MAILPIPE_START"),
    ({"start": "since:2024-02-30"}, "MAILPIPE_START"),
    ({"post_action": "delete"}, "MAILPIPE_POST_ACTION"),
    ({"idle_refresh_s": 1800}, "MAILPIPE_IDLE_REFRESH_S"),
    ({"imap_tls": "ssl"}, "MAILPIPE_IMAP_TLS"),
    ({"uid_window": 0}, "MAILPIPE_UID_WINDOW"),
    ({"published_bucket_s": 10**9}, "published_bucket_s"),
])
def test_invalid_settings_are_one_line_config_errors(values: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load(**values)
    assert "\n" not in str(info.value)


def test_incomplete_account_names_the_missing_setting() -> None:
    with pytest.raises(ValueError, match="MAILPIPE_IMAP_HOST"):
        load().imap_accounts()
    with pytest.raises(ValueError, match="MAILPIPE_IMAP_PASSWORD"):
        load(imap_host="h", username="u").imap_accounts()
    assert load(imap_host="h", username="u", auth="xoauth2").imap_accounts()[0].password is None
    with pytest.raises(ValueError, match="twice"):
        load(imap_host="h", accounts=[{"username": "u", "imap_password": "p"}] * 2).imap_accounts()
    with pytest.raises(ConfigError, match="MAILPIPE_ACCOUNTS"):
        load(accounts=[{"bogus": 1}])
