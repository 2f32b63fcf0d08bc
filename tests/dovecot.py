"""A real Dovecot IMAP server for tests: temp dir, free port, password users, optional XOAUTH2.

Mail is stored as Maildir under the temp dir. Runs as root (login processes as ``dovenull``, mail as
``nobody``, the way Dovecot insists) or as an unprivileged user (everything as that user).
Password users: any user name with the password ``PASSWORD``. ``oauth2_introspection_url`` adds
Dovecot's oauth2 passdb, which validates XOAUTH2 access tokens with ``GET <url><token>`` (a local
server answers ``{"active": "true", "email": ...}``).
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from imapclient import IMAPClient

from mailpipe.embedded import free_port

PASSWORD = "secret"


class DovecotUnavailable(RuntimeError):
    pass


class DovecotServer:
    def __init__(self, *, oauth2_introspection_url: str | None = None) -> None:
        self.binary = shutil.which("dovecot") or "/usr/sbin/dovecot"
        self.doveadm_binary = shutil.which("doveadm") or "/usr/bin/doveadm"
        self.port = free_port()
        self.host = "127.0.0.1"
        self.oauth2_introspection_url = oauth2_introspection_url
        self.dir = Path(tempfile.mkdtemp(prefix="mailpipe-dovecot-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.users: dict[str, str] = {}

    # --- lifecycle ---------------------------------------------------------------------------------

    def start(self, timeout: float = 15.0) -> DovecotServer:
        if not os.access(self.binary, os.X_OK):
            raise DovecotUnavailable("dovecot is not installed (apt-get install dovecot-imapd)")
        os.chmod(self.dir, 0o755)
        (self.dir / "run").mkdir()
        (self.dir / "mail").mkdir()
        self._chown(self.dir / "mail")
        self.conf.write_text(self._config())
        log = open(self.dir / "dovecot.log", "wb")  # noqa: SIM115 - kept open for the process' life
        self.proc = subprocess.Popen([self.binary, "-c", str(self.conf), "-F"], stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise DovecotUnavailable(f"dovecot exited: {self.log_tail()}")
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), timeout=0.5) as s:
                if s.recv(64).startswith(b"* OK"):
                    return self
            time.sleep(0.05)
        self.stop()
        raise DovecotUnavailable(f"dovecot did not answer within {timeout}s: {self.log_tail()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join((self.dir / "dovecot.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    @property
    def conf(self) -> Path:
        return self.dir / "dovecot.conf"

    def _ids(self) -> tuple[str, str, str, str, str]:
        """(login user, internal user, internal group, mail uid, mail gid)."""
        if os.geteuid() == 0:
            return "dovenull", "dovecot", "dovecot", "nobody", grp.getgrgid(pwd.getpwnam("nobody").pw_gid).gr_name
        me = pwd.getpwuid(os.geteuid()).pw_name
        group = grp.getgrgid(os.getegid()).gr_name
        return me, me, group, me, group

    def _chown(self, path: Path) -> None:
        if os.geteuid() == 0:
            _, _, _, uid, gid = self._ids()
            shutil.chown(path, uid, gid)

    def _config(self) -> str:
        login, internal, internal_group, mail_uid, mail_gid = self._ids()
        oauth = ""
        mechanisms = "plain login"
        if self.oauth2_introspection_url:
            ext = self.dir / "oauth2.conf.ext"
            ext.write_text(
                "introspection_mode = get\n"
                f"introspection_url = {self.oauth2_introspection_url}\n"
                "username_attribute = email\nactive_attribute = active\nactive_value = true\ntokeninfo_url =\n"
            )
            oauth = f"passdb {{\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n  args = {ext}\n}}\n"
            mechanisms = "plain login xoauth2 oauthbearer"
        return f"""
protocols = imap
listen = 127.0.0.1
base_dir = {self.dir}/run
state_dir = {self.dir}/run/state
log_path = {self.dir}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = {mechanisms}
default_login_user = {login}
default_internal_user = {internal}
default_internal_group = {internal_group}
first_valid_uid = 1
first_valid_gid = 1
mail_location = maildir:{self.dir}/mail/%u/Maildir
mail_uid = {mail_uid}
mail_gid = {mail_gid}
mail_max_userip_connections = 100
auth_failure_delay = 0
{oauth}passdb {{
  driver = static
  args = password={PASSWORD}
}}
userdb {{
  driver = static
  args = home={self.dir}/mail/%u
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
service stats {{
  unix_listener stats-reader {{
    mode = 0666
  }}
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
"""

    # --- users and mail ----------------------------------------------------------------------------

    def add_user(self, user: str) -> str:
        """A password user; every user name logs in with PASSWORD (static passdb, so no reload races)
        and gets a fresh Maildir on first login. Returns the user name."""
        self.users[user] = PASSWORD
        return user

    @contextlib.contextmanager
    def client(self, user: str) -> Iterator[IMAPClient]:
        client = IMAPClient(self.host, port=self.port, ssl=False, timeout=30)
        client.login(user, self.users.get(user, PASSWORD))
        try:
            yield client
        finally:
            with contextlib.suppress(Exception):
                client.logout()

    def append(self, user: str, raw: bytes | Iterable[bytes], mailbox: str = "INBOX",
               flags: tuple[bytes, ...] = ()) -> list[int]:
        """APPEND messages over one connection; returns their UIDs (APPENDUID)."""
        messages = [raw] if isinstance(raw, bytes) else list(raw)
        uids = []
        with self.client(user) as client:
            if not client.folder_exists(mailbox):
                client.create_folder(mailbox)
            for message in messages:
                answer = client.append(mailbox, message, flags=flags)
                uids.append(int(answer.split(b"]")[0].split()[-1]))
        return uids

    def expunge(self, user: str, uids: list[int], mailbox: str = "INBOX") -> None:
        with self.client(user) as client:
            client.select_folder(mailbox)
            client.delete_messages(uids)
            client.uid_expunge(uids)

    def flags(self, user: str, mailbox: str = "INBOX") -> dict[int, tuple[bytes, ...]]:
        with self.client(user) as client:
            client.select_folder(mailbox, readonly=True)
            uids = client.search("ALL")
            return {uid: d[b"FLAGS"] for uid, d in client.fetch(uids, ["FLAGS"]).items()} if uids else {}

    def uids(self, user: str, mailbox: str = "INBOX") -> list[int]:
        with self.client(user) as client:
            client.select_folder(mailbox, readonly=True)
            return sorted(client.search("ALL"))

    def doveadm(self, *args: str, ok: tuple[int, ...] = (0,)) -> str:
        result = subprocess.run([self.doveadm_binary, "-c", str(self.conf), *args], capture_output=True,
                                text=True, timeout=30)
        if result.returncode not in ok:
            raise RuntimeError(f"doveadm {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def set_uidvalidity(self, user: str, value: int, mailbox: str = "INBOX") -> None:
        """Give the mailbox a new UIDVALIDITY (what a server migration or mailbox rebuild does)."""
        self.doveadm("mailbox", "update", "-u", user, "--uid-validity", str(value), mailbox)

    def uidvalidity(self, user: str, mailbox: str = "INBOX") -> int:
        with self.client(user) as client:
            return int(client.folder_status(mailbox, [b"UIDVALIDITY"])[b"UIDVALIDITY"])

    def kick(self, user: str) -> None:
        """Disconnect every IMAP session of ``user`` (doveadm kick)."""
        self.doveadm("kick", user, ok=(0, 68))  # 68: nobody to kick


@contextlib.contextmanager
def running_dovecot(**kwargs: object) -> Iterator[DovecotServer]:
    """A started DovecotServer, stopped afterwards; unavailable Dovecot fails in CI and skips locally."""
    from tests.conftest import server_missing

    server = DovecotServer(**kwargs)  # type: ignore[arg-type]
    try:
        server.start()
    except (DovecotUnavailable, OSError) as exc:
        server.stop()
        server_missing(f"a Dovecot IMAP server ({exc})")
    try:
        yield server
    finally:
        server.stop()
