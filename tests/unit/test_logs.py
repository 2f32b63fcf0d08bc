from __future__ import annotations

import io
import json
import logging

from mailpipe.connection import redact_url
from mailpipe.logs import redact, setup_logging


def test_redact_urls_and_tokens() -> None:
    assert redact("redis://bob:s3cret@host:6379/0") == "redis://bob:***@host:6379/0"
    assert "ya29.tok" not in redact('{"access_token": "ya29.tok", "x": 1}')
    assert "r3fresh" not in redact("refresh_token=r3fresh&grant_type=refresh_token")
    assert redact_url("rediss://u:p4ss@h:6380/1") == "rediss://u:***@h:6380/1"
    assert redact_url("redis://h:6379") == "redis://h:6379"


def test_json_log_lines_carry_extra_fields_and_no_secrets() -> None:
    out = io.StringIO()
    setup_logging("INFO", "json", stream=out)
    try:
        logging.getLogger("t").info("connect to redis://u:pw123@h/0", extra={"stream_id": "1-0", "url": "redis://u:pw123@h"})
    finally:
        setup_logging("WARNING", "text")
    line = json.loads(out.getvalue().strip())
    assert line["stream_id"] == "1-0" and line["level"] == "INFO"
    assert "pw123" not in out.getvalue()


def test_dict_arguments_are_redacted_after_formatting() -> None:
    out = io.StringIO()
    setup_logging("DEBUG", "text", stream=out)
    try:
        logging.getLogger("oauthlib").debug("token response: %s", {"access_token": "ya29.secret", "expires_in": 3599})
    finally:
        setup_logging("WARNING", "text")
    assert "ya29.secret" not in out.getvalue() and "expires_in" in out.getvalue()
