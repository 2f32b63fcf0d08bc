"""``python producer.py``: parse options, build the producer, run it.

Exit codes: 0 ok, 1 the IMAP server is unreachable or misbehaving / a mailbox is missing (a supervisor may
restart), 2 invalid settings, 3 Redis unreachable, 4 the credentials were refused or the OAuth2 grant is
revoked (fix them first: restarting would retry a wrong password in a loop), 130 interrupted.
Every expected failure is one line.
First SIGTERM/SIGINT: finish the current batch, release the leases, exit 0. Second: exit at once
(nothing is lost: publish and checkpoint are one atomic step).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

import redis

from mailpipe import defaults
from mailpipe.connection import connect_sync, resolve_url
from mailpipe.errors import ConfigError, MailpipeError, RedisUnavailable
from mailpipe.health import HealthServer
from mailpipe.logs import redact, setup_logging
from mailpipe.metrics import ProducerMetrics, new_registry
from mailpipe.producer.auth import oauth2_module
from mailpipe.producer.backpressure import Backpressure
from mailpipe.producer.errors import ImapAuthError, ImapProtocolError, ImapUnavailable, LeaseLost
from mailpipe.producer.local_source import import_source, parse_spec
from mailpipe.producer.runner import Producer
from mailpipe.producer.settings import ProducerSettings
from mailpipe.settings import load_settings

log = logging.getLogger("mailpipe.producer")
EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_REDIS, EXIT_AUTH = 0, 1, 2, 3, 4


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="producer.py",
        description="Publish email onto the mailpipe stream, each message exactly once: from IMAP mailboxes "
        "(password or Gmail/Microsoft 365 OAuth2), or from local mbox/Maildir/.eml files. Every setting "
        "can also be given as MAILPIPE_<NAME> in the environment or .env (see .env.example).",
    )
    auth = p.add_argument_group("OAuth2 (MAILPIPE_AUTH=xoauth2)")
    auth.add_argument("--auth-setup", action="store_true", help="run the browser consent once and store the "
                      "refresh token (file mode 0600, MAILPIPE_TOKEN_FILE)")
    auth.add_argument("--no-browser", action="store_true", help="with --auth-setup: print the consent URL "
                      "instead of opening a browser (headless servers)")
    auth.add_argument("--auth-info", action="store_true", help="show the stored token's account, scopes and "
                      "expiry (never the secrets)")
    auth.add_argument("--auth-revoke", action="store_true", help="revoke the stored token and delete the file")
    src = p.add_argument_group("what to read")
    src.add_argument("--source", metavar="KIND:PATH", help="import local files instead of IMAP: mbox:FILE, "
                     "maildir:DIR or eml:DIR; re-running publishes nothing twice")
    src.add_argument("--mailbox", action="append", dest="mailboxes", metavar="NAME",
                     help="IMAP mailbox to sync; repeat for several (default INBOX; MAILPIPE_MAILBOXES)")
    src.add_argument("--account", help="account name recorded for --source imports (default: MAILPIPE_USERNAME "
                     "or 'local'); use your IMAP login to share keys with mail fetched over IMAP")
    src.add_argument("--start", help="first run on a mailbox: new (only mail arriving from now), all, or "
                     "since:YYYY-MM-DD (default new)")
    run = p.add_argument_group("how to run")
    run.add_argument("--once", action="store_true", help="one sync pass over every mailbox, then exit")
    run.add_argument("--dry-run", action="store_true", help="fetch and parse, print one line per message, "
                     "publish nothing and move no checkpoint")
    run.add_argument("--poll-interval", type=float, dest="poll_interval_s", metavar="SECONDS",
                     help=f"polling period when IDLE is unavailable (default {defaults.DEFAULT_POLL_INTERVAL_S:g})")
    run.add_argument("--no-idle", action="store_false", dest="use_idle", default=None,
                     help="poll even if the server supports IDLE")
    run.add_argument("--redis-url", help="redis://[user:pass@]host:port/db or rediss:// (default: embedded)")
    run.add_argument("--namespace", help=f"key namespace (default {defaults.DEFAULT_NAMESPACE})")
    run.add_argument("--stream", help=f"pipeline / stream name (default {defaults.DEFAULT_STREAM})")
    run.add_argument("--metrics-port", type=int, help="serve /metrics /health /ready /status (default: off)")
    run.add_argument("--metrics-host", help="address for the metrics server (default 127.0.0.1)")
    run.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    run.add_argument("--log-format", choices=["json", "text"], help="log format (default json)")
    return p


_NOT_SETTINGS = {"auth_setup", "no_browser", "auth_info", "auth_revoke", "source", "once", "dry_run"}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        overrides = {k: v for k, v in vars(args).items() if k not in _NOT_SETTINGS}
        settings = load_settings(ProducerSettings, **overrides)
        setup_logging(settings.log_level, settings.log_format)
        if args.auth_setup or args.auth_info or args.auth_revoke:
            return _auth_command(args, settings)
        return _run(args, settings)
    except ConfigError as exc:
        return _fail(exc, EXIT_USAGE)
    except RedisUnavailable as exc:
        return _fail(exc, EXIT_REDIS)
    except ImapAuthError as exc:  # includes a revoked OAuth2 grant
        return _fail(exc, EXIT_AUTH)
    except (ImapUnavailable, ImapProtocolError, LeaseLost) as exc:
        return _fail(exc, EXIT_FAILURE)
    except MailpipeError as exc:
        return _fail(exc, EXIT_FAILURE)
    except ValueError as exc:  # incomplete account settings (imap_accounts) or the like
        return _fail(exc, EXIT_USAGE)
    except redis.RedisError as exc:  # Redis lost in the middle of an import, or refusing a command
        return _fail(RedisUnavailable(f"Redis failed: {type(exc).__name__}: {redact(str(exc))[:200]}"), EXIT_REDIS)
    except KeyboardInterrupt:
        return 130


def _fail(exc: BaseException, code: int) -> int:
    print(f"producer: {exc}", file=sys.stderr)
    return code


def _auth_command(args: argparse.Namespace, settings: ProducerSettings) -> int:
    module: Any = oauth2_module()
    account = settings.imap_accounts()[0] if settings.imap_host else None
    target = settings.for_account(account) if account else settings
    if args.auth_setup:
        return int(module.auth_setup(target, args.no_browser))
    if args.auth_info:
        return int(module.auth_info(target))
    return int(module.auth_revoke(target))


def _run(args: argparse.Namespace, settings: ProducerSettings) -> int:
    if args.source:
        parse_spec(args.source)  # a wrong path fails before anything is started
    else:
        settings.imap_accounts()  # incomplete IMAP settings likewise
    client = connect_sync(resolve_url(settings))
    keys = settings.keys()
    stop = threading.Event()
    _install_signal_handlers(stop)
    if args.source:
        result = import_source(
            client, keys, args.source, policy=settings.size_policy(), progress=sys.stderr.isatty(),
            account=settings.local_account(), dry_run=print if args.dry_run else None, stop=stop,
            backpressure=Backpressure(client, keys, limit=settings.backpressure_limit,
                                      check_s=settings.backpressure_check_s),
            retention_s=settings.published_retention_s, bucket_s=settings.published_bucket_s)
        if not args.dry_run:
            print(f"{args.source}: {result.published} published, {result.skipped_already_published} already "
                  f"published, {result.failed} unreadable", file=sys.stderr)
        return EXIT_FAILURE if result.failed else EXIT_OK
    registry = new_registry()
    metrics = ProducerMetrics(registry, stream=settings.stream)
    producer = Producer(settings, client, metrics, once=args.once, dry_run=args.dry_run)
    def relay_stop() -> None:
        stop.wait()
        producer.stop()

    threading.Thread(target=relay_stop, daemon=True).start()
    producer.preflight()
    server = None
    if settings.metrics_port is not None:
        server = HealthServer(settings.metrics_host, settings.metrics_port, registry, ready=producer.ready,
                              status=producer.status)
        server.start()
        log.info("metrics and health on http://%s:%d/metrics", settings.metrics_host, server.port)
    try:
        producer.run()
    finally:
        if server is not None:
            server.stop()
    return EXIT_OK


def _install_signal_handlers(stop: threading.Event) -> None:
    def on_signal(signum: int, frame: object) -> None:
        if stop.is_set():
            os._exit(128 + signum)  # second signal: leave at once; publish+checkpoint are atomic
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
