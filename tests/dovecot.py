"""A throwaway Dovecot IMAP server: the legacy server a migration test reads, and the
baseline of the imap_fetch and migrate_imap benchmarks (bench/ imports it from here).

Everything lives under one directory: configuration, runtime sockets, logs, the
passwd-file and a Maildir (LAYOUT=fs) per user. It listens on 127.0.0.1 only: IMAP
(plain, with STARTTLS when given a certificate; `require_tls` refuses a login before
it) and IMAPS. Its namespace uses "." as the hierarchy separator and marks a few
folders SPECIAL-USE, as many legacy servers do. Running it needs root and the
`dovecot`/`dovenull` users that `apt-get install dovecot-imapd` creates
(scripts/system-packages installs it); `missing()` says why it cannot run, for a skip.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

# Folder names (UTF-8, as Dovecot's configuration takes them) and their SPECIAL-USE.
SPECIAL_USE = {"Gesendet": "\\Sent", "Papierkorb": "\\Trash", "Spam": "\\Junk",
               "Entwürfe": "\\Drafts"}

CONFIG = """\
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
info_log_path = /dev/null
protocols = imap
listen = 127.0.0.1
{ssl}
disable_plaintext_auth = {plaintext_refused}
auth_mechanisms = plain login
auth_failure_delay = 0
default_internal_user = dovecot
default_login_user = dovenull
first_valid_uid = 0
mail_location = maildir:{root}/mail/%u:LAYOUT=fs
namespace inbox {{
  inbox = yes
  separator = .
{special}
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid=dovecot gid=dovecot home={root}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {tls_port}
  }}
}}
"""


def missing() -> str | None:
    """Why a throwaway Dovecot cannot run here, or None if it can."""
    if shutil.which("dovecot") is None or shutil.which("doveadm") is None:
        return "dovecot is not installed (apt-get install -y dovecot-imapd)"
    if os.geteuid() != 0:
        return "running a throwaway dovecot needs root"
    for user in ("dovecot", "dovenull"):
        try:
            pwd.getpwnam(user)
        except KeyError:
            return f"the system user {user!r} is missing"
    return None


def make_root() -> Path:
    """A fresh directory for a Dovecot's files, reachable by the `dovecot` user."""
    return Path(tempfile.mkdtemp(prefix="sealgate-dovecot-")) / "dovecot"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Dovecot:
    def __init__(
        self, root: Path, users: dict[str, str], tls: tuple[Path, Path] | None = None,
        *, require_tls: bool = False,
    ) -> None:
        self.root = root
        self.users = users
        self.tls = tls
        self.require_tls = require_tls
        self.config = root / "dovecot.conf"
        self.port = _free_port()
        self.tls_port = _free_port() if tls else 0
        self._running = False

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "mail").mkdir(exist_ok=True)
        passwd = self.root / "passwd"
        passwd.write_text("".join(f"{u}:{{PLAIN}}{p}\n" for u, p in self.users.items()))
        ssl = "ssl = no"
        if self.tls:
            cert, key = self.tls
            required = "required" if self.require_tls else "yes"
            ssl = f"ssl = {required}\nssl_cert = <{cert}\nssl_key = <{key}"
            if Path("/usr/share/dovecot/dh.pem").exists():
                ssl += "\nssl_dh = </usr/share/dovecot/dh.pem"
        special = "\n".join(
            f'  mailbox "{name}" {{\n    special_use = {use}\n  }}'
            for name, use in SPECIAL_USE.items()
        )
        self.config.write_text(CONFIG.format(
            root=self.root, ssl=ssl, special=special, port=self.port, tls_port=self.tls_port,
            plaintext_refused="yes" if self.require_tls else "no",
        ))
        # Dovecot's processes run as `dovecot`: they must reach the directory and own the
        # mail. `root` is best a directory of its own (`make_root`): pytest's base
        # directory is reset to mode 0700 by every pytest that starts on the machine.
        for path in (self.root.parent, self.root):
            path.chmod(path.stat().st_mode | 0o011)
        _own(self.root / "mail")
        os.chown(passwd, 0, pwd.getpwnam("dovecot").pw_gid)
        passwd.chmod(0o640)
        errors = self.root / "start.err"
        with errors.open("w") as err:  # the daemon keeps its descriptors: no pipes
            code = subprocess.run(
                ["dovecot", "-c", str(self.config)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, timeout=30,
            ).returncode
        if code != 0:
            raise RuntimeError(f"dovecot did not start: {errors.read_text()[-500:]}")
        self._running = True
        # Ready once it listens and has written its pid (which `cpu_seconds` reads: on a
        # loaded machine the listener can come first).
        deadline = time.monotonic() + 20
        pid_file = self.root / "run" / "master.pid"
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.5):
                    pass
                if pid_file.read_text().split():
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise
            if time.monotonic() > deadline:
                raise RuntimeError(f"dovecot wrote no pid to {pid_file}")
            time.sleep(0.05)

    def seed(self, user: str, messages: Sequence[bytes], dates: Sequence[datetime]) -> None:
        """Before `start`: write CRLF `messages` into `user`'s INBOX Maildir as LF files
        (as Dovecot stores mail, with the S= and W= sizes in the name), dated `dates`;
        Dovecot builds its index on first access."""
        inbox = self.root / "mail" / user
        for sub in ("cur", "new", "tmp"):
            (inbox / sub).mkdir(parents=True, exist_ok=True)
        base = int(time.time())
        for n, (message, when) in enumerate(zip(messages, dates, strict=True)):
            stored = message.replace(b"\r\n", b"\n")
            name = f"{base}.M{n}P{os.getpid()}.seed,S={len(stored)},W={len(message)}:2,"
            path = inbox / "cur" / name
            path.write_bytes(stored)
            os.utime(path, (when.timestamp(), when.timestamp()))

    def cpu_seconds(self) -> float:
        """CPU time used so far by the master and its processes, those gone included."""
        master = int((self.root / "run" / "master.pid").read_text().split()[0])
        ticks = 0
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue  # the process is gone
            # Fields after the command name, which is in parentheses and may hold spaces.
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(entry.name) == master or int(fields[1]) == master:
                # utime, stime, and the same for children waited for (cutime, cstime).
                ticks += sum(int(x) for x in fields[11:15])
        return ticks / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if not self._running:
            return
        self._running = False
        subprocess.run(["doveadm", "-c", str(self.config), "stop"], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
        pid_file = self.root / "run" / "master.pid"
        deadline = time.monotonic() + 10
        while pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)

    def remove(self) -> None:
        """Stop, then delete every file (the directory `make_root` made included)."""
        self.stop()
        shutil.rmtree(self.root.parent if self.root.parent.name.startswith("sealgate-dovecot-")
                      else self.root, ignore_errors=True)

    def clone_user(self, source: str, target: str) -> None:
        """Give `target` (a user of the passwd-file) a copy of `source`'s mail, so a test
        can change a mailbox seeded once."""
        home = self.root / "mail"
        shutil.copytree(home / source, home / target)
        _own(home / target)

    def kick(self, user: str) -> None:
        """Drop every IMAP connection of `user` (a dropped connection, server side)."""
        subprocess.run(["doveadm", "-c", str(self.config), "kick", user], check=True,
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=30)


def _own(top: Path) -> None:
    """Give `top` and everything under it to the `dovecot` user."""
    dovecot = pwd.getpwnam("dovecot")
    for directory, _, files in os.walk(top):
        os.chown(directory, dovecot.pw_uid, dovecot.pw_gid)
        for name in files:
            os.chown(os.path.join(directory, name), dovecot.pw_uid, dovecot.pw_gid)
