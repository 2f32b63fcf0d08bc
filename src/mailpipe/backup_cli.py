"""``scripts/backup.py`` and ``scripts/restore.py``: parse options, connect, run, print a summary.

Exit codes as the admin CLI: 0 ok, 1 failure (refused, damaged file, verification failed), 2 usage or
configuration error, 3 Redis unreachable.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from mailpipe.backup import BackupError, Manifest, read_archive, take_snapshot, write_archive
from mailpipe.cli import EXIT_FAILURE, EXIT_OK, EXIT_REDIS, EXIT_USAGE, add_common_options
from mailpipe.connection import connect_sync, explain_error, redact_url, resolve_url
from mailpipe.errors import ConfigError, RedisUnavailable
from mailpipe.keys import Keys
from mailpipe.restore import RestoreResult, restore
from mailpipe.settings import CommonSettings, load_settings


def connect_binary(url: str, keys: Keys) -> tuple[redis.Redis, str]:
    """A client that does not decode (DUMP payloads are binary) on the node holding the pipeline's slot."""
    connect_sync(url).close()  # one-line errors for a wrong URL, credentials or TLS setup
    client: Any = redis.Redis.from_url(url, decode_responses=False, socket_connect_timeout=5)
    info = client.info("cluster")
    if not int(info.get("cluster_enabled", 0)):
        return client, url
    # Redis Cluster: every key of a pipeline shares the hash tag, so one node holds them all.
    slot = int(client.execute_command("CLUSTER KEYSLOT", keys.stream))
    for start, end, master, *_ in client.execute_command("CLUSTER SLOTS"):
        if int(start) <= slot <= int(end):
            host = master[0].decode() if isinstance(master[0], bytes) else str(master[0])
            parts = urlsplit(url)
            auth = parts.netloc.rpartition("@")[0]
            node = urlunsplit((parts.scheme, f"{auth + '@' if auth else ''}{host}:{int(master[1])}", "/0",
                               parts.query, ""))
            client.close()
            connect_sync(node).close()
            return redis.Redis.from_url(node, decode_responses=False, socket_connect_timeout=5), node
    raise BackupError(f"no cluster node serves slot {slot} of {keys.stream}: is the cluster healthy?")


def _run(fn: Any, args: argparse.Namespace) -> int:
    try:
        return int(fn(args))
    except ConfigError as exc:
        print(f"{_prog()}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RedisUnavailable as exc:
        print(f"{_prog()}: {exc}", file=sys.stderr)
        return EXIT_REDIS
    except BackupError as exc:
        print(f"{_prog()}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except (RedisConnectionError, RedisTimeoutError) as exc:
        print(f"{_prog()}: {explain_error(exc, getattr(args, '_url', 'redis'))}", file=sys.stderr)
        return EXIT_REDIS
    except ResponseError as exc:
        print(f"{_prog()}: Redis refused a command: {str(exc).splitlines()[0]} (an ACL user needs the "
              "permissions listed in docs/SECURITY.md)", file=sys.stderr)
        return EXIT_FAILURE


def _prog() -> str:
    return Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "mailpipe"


def _settings(args: argparse.Namespace) -> CommonSettings:
    return load_settings(CommonSettings, redis_url=args.redis_url, namespace=args.namespace, stream=args.stream)


# --- backup --------------------------------------------------------------------------------------


def backup_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="backup.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Back up every key of one pipeline (stream with groups and pending lists, retries, dead "
        "letters, done sets, checkpoints) from a live Redis into one file, as one consistent snapshot.",
        epilog="examples:\n  python scripts/backup.py backup.tar.gz\n"
        "  python scripts/backup.py --stream mail --redis-url redis://10.0.0.5:6379/0 /backups/mail.tar.gz")
    add_common_options(p)
    p.add_argument("output", type=Path, help="archive to write (.tar, or .tar.gz / .tgz to compress)")
    p.add_argument("--include-transient", action="store_true",
                   help="also back up claims, housekeeping locks and producer leases (default: left out)")
    p.add_argument("--json", action="store_true", help="print the manifest summary as JSON")
    return p


def run_backup(args: argparse.Namespace) -> int:
    settings = _settings(args)
    keys = settings.keys()
    url = resolve_url(settings)
    args._url = url
    if args.output.is_dir():
        raise ConfigError(f"{args.output} is a directory: give a file name such as {args.output}/mail.tar.gz")
    client, node = connect_binary(url, keys)
    try:
        snapshot = take_snapshot(client, keys, source=redact_url(node), include_transient=args.include_transient)
    finally:
        client.close()
    if not snapshot.manifest.keys:
        raise BackupError(f"pipeline {keys.prefix} has no keys on {redact_url(node)}: check --namespace/--stream")
    write_archive(snapshot, args.output)
    m = snapshot.manifest
    if args.json:
        print(json.dumps(_summary(m), indent=2))
    else:
        print(f"backed up {len(m.keys)} keys of {keys.prefix} from {m.source} (Redis {m.source_redis_version}) "
              f"to {args.output}")
        _print_summary(m)
        print(f"snapshot: one transaction, {m.snapshot_ms:.0f} ms")
    return EXIT_OK


def _summary(m: Manifest) -> dict[str, Any]:
    kinds: dict[str, dict[str, int]] = {}
    for k in m.keys:
        entry = kinds.setdefault(k.kind, {"keys": 0, "size": 0})
        entry["keys"] += 1
        entry["size"] += k.size
    stream = next((k for k in m.keys if k.kind == "stream"), None)
    return {"namespace": m.namespace, "stream": m.stream, "created_ms": m.created_ms, "keys": len(m.keys),
            "bytes": sum(k.bytes for k in m.keys), "by_kind": kinds, "source": m.source,
            "source_redis_version": m.source_redis_version, "groups": stream.groups if stream else [],
            "skipped_transient": len(m.skipped_transient), "snapshot_ms": m.snapshot_ms}


def _print_summary(m: Manifest) -> None:
    s = _summary(m)
    parts = [f"{kind} {v['keys']} ({v['size']} items)" for kind, v in sorted(s["by_kind"].items())]
    print("  " + ", ".join(parts))
    for g in s["groups"]:
        print(f"  group {g['name']}: {g['pending']} pending, {g['consumers']} consumers, "
              f"last delivered {g['last_delivered_id']}")
    if m.skipped_transient:
        print(f"  left out {len(m.skipped_transient)} transient keys (claims, locks, leases)")


def backup_main(argv: Sequence[str] | None = None) -> int:
    return _run(run_backup, backup_parser().parse_args(argv))


# --- restore -------------------------------------------------------------------------------------


def restore_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="restore.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Restore a pipeline backup into an empty or different Redis (atomically), then verify "
        "it. The namespace and stream come from the backup.",
        epilog="examples:\n  python scripts/restore.py --verify-only backup.tar.gz\n"
        "  python scripts/restore.py --redis-url redis://10.0.0.6:6379/0 backup.tar.gz\n"
        "  python scripts/restore.py --replace backup.tar.gz   # overwrite the pipeline in the target")
    p.add_argument("input", type=Path, help="archive written by backup.py")
    p.add_argument("--redis-url", help="target Redis (default: MAILPIPE_REDIS_URL, else the embedded server)")
    p.add_argument("--replace", action="store_true",
                   help="overwrite the pipeline if the target has it (its other keys are removed)")
    p.add_argument("--verify-only", action="store_true", help="check the file's checksums; touch no Redis")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    return p


def run_restore(args: argparse.Namespace) -> int:
    snapshot = read_archive(args.input)
    m = snapshot.manifest
    if args.verify_only:
        if args.json:
            print(json.dumps({"verified": True, **_summary(m)}, indent=2))
        else:
            print(f"{args.input}: {len(m.keys)} keys of {m.namespace}:{{{m.stream}}}, checksums OK")
            _print_summary(m)
        return EXIT_OK
    settings = load_settings(CommonSettings, redis_url=args.redis_url, namespace=m.namespace, stream=m.stream)
    url = resolve_url(settings)
    args._url = url
    client, node = connect_binary(url, settings.keys())
    try:
        result = restore(client, snapshot, replace=args.replace)
    finally:
        client.close()
    _print_restore(args, m, result, node)
    return EXIT_FAILURE if result.mismatches else EXIT_OK


def _print_restore(args: argparse.Namespace, m: Manifest, result: RestoreResult, node: str) -> None:
    if args.json:
        print(json.dumps({"restored": len(result.restored), "by_kind": result.by_kind(), "expired": result.expired,
                          "removed": result.removed, "mismatches": result.mismatches,
                          "target": redact_url(node), "groups": [g for k in result.restored for g in k.groups
                                                                 if k.kind == "stream"],
                          "keys": [asdict(k) | {"sha256": k.sha256} for k in result.restored]}, indent=2))
        return
    print(f"restored {len(result.restored)} keys of {m.namespace}:{{{m.stream}}} into {redact_url(node)}")
    print("  " + ", ".join(f"{kind} {n}" for kind, n in sorted(result.by_kind().items())))
    if result.expired:
        print(f"  not restored: {len(result.expired)} keys expired since the backup")
    if result.removed:
        print(f"  removed {len(result.removed)} keys of the pipeline that were not in the backup (--replace)")
    for problem in result.mismatches:
        print(f"  MISMATCH {problem}", file=sys.stderr)
    if not result.mismatches:
        print("  verified: every key has the type and size recorded in the backup, groups and pending lists match")


def restore_main(argv: Sequence[str] | None = None) -> int:
    return _run(run_restore, restore_parser().parse_args(argv))
