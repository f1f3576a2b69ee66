"""A throwaway Dovecot IMAP server, the baseline of the imap_fetch benchmark.

Everything lives under one directory: the configuration, runtime sockets, error log,
password file and a Maildir per user. The server listens on 127.0.0.1 only,
requires STARTTLS (with the certificate it is given) and knows exactly one user.
Messages are written straight into the Maildir (LF line ends, as Dovecot stores
mail itself, with the S= and W= sizes in the file name), so Dovecot builds its
index on first access. Starting Dovecot this way needs root and the `dovecot`
and `dovenull` system users that `apt-get install dovecot-imapd` creates.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from bench.common import BenchError

DH_PARAMS = Path("/usr/share/dovecot/dh.pem")


def _program(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BenchError(f"{name} is not installed")
    return path


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


CONFIG = """\
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
info_log_path = /dev/null
protocols = imap
listen = 127.0.0.1
ssl = required
ssl_cert = <{cert}
ssl_key = <{key}
{dh}
disable_plaintext_auth = yes
auth_mechanisms = plain
default_internal_user = dovecot
default_login_user = dovenull
first_valid_uid = 0
mail_location = maildir:{root}/mail/%u:LAYOUT=fs
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
    port = 0
  }}
}}
"""


class Dovecot:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.config = root / "dovecot.conf"
        self.port = 0
        self._running = False

    def seed(self, user: str, messages: Sequence[bytes], dates: Sequence[datetime]) -> None:
        """Write CRLF `messages` into `user`'s INBOX Maildir as LF files."""
        inbox = self.root / "mail" / user
        for sub in ("cur", "new", "tmp"):
            (inbox / sub).mkdir(parents=True, exist_ok=True)
        base = int(time.time())
        for n, (message, when) in enumerate(zip(messages, dates, strict=True)):
            stored = message.replace(b"\r\n", b"\n")
            name = f"{base}.M{n}P{os.getpid()}.bench,S={len(stored)},W={len(message)}:2,"
            path = inbox / "cur" / name
            path.write_bytes(stored)
            stamp = when.timestamp()
            os.utime(path, (stamp, stamp))

    def start(self, user: str, password: str, cert: Path, key: Path) -> int:
        """Start Dovecot for one user; return its IMAP port."""
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "passwd").write_text(f"{user}:{{PLAIN}}{password}\n")
        self.port = free_port()
        self.config.write_text(CONFIG.format(
            root=self.root, cert=cert, key=key, port=self.port,
            dh=f"ssl_dh = <{DH_PARAMS}" if DH_PARAMS.exists() else "",
        ))
        # Dovecot's processes run as `dovecot`: they must reach and own the mail. The
        # root's parent is the benchmark's own temporary directory (mode 0700).
        for path in (self.root.parent, self.root):
            path.chmod(path.stat().st_mode | 0o011)
        dovecot = pwd.getpwnam("dovecot")
        for directory, _, files in os.walk(self.root / "mail"):
            os.chown(directory, dovecot.pw_uid, dovecot.pw_gid)
            for name in files:
                os.chown(os.path.join(directory, name), dovecot.pw_uid, dovecot.pw_gid)
        passwd = self.root / "passwd"
        os.chown(passwd, 0, dovecot.pw_gid)
        passwd.chmod(0o640)
        # The daemon keeps the descriptors it was started with: no pipes, or run() waits.
        errors = self.root / "start.err"
        with errors.open("w") as err:
            code = subprocess.run(  # noqa: S603 - a fixed command line
                [_program("dovecot"), "-c", str(self.config)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, timeout=30,
            ).returncode
        if code != 0:
            raise BenchError(f"dovecot did not start: {errors.read_text().strip()[-300:]}")
        self._running = True
        # Ready once it listens and has written its pid (which `cpu_seconds` reads: on a
        # loaded machine the listener can come first).
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.5):
                    pass
                self._master_pid()
                return self.port
            except (OSError, BenchError):
                if time.monotonic() > deadline:
                    raise BenchError(f"dovecot is not ready on {self.port}") from None
                time.sleep(0.05)

    def _master_pid(self) -> int:
        try:
            return int((self.root / "run" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            raise BenchError("cannot read dovecot's master.pid") from None

    def cpu_seconds(self) -> float:
        """CPU time used so far by the master and its processes, those gone included."""
        master = self._master_pid()
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
            pid, ppid = int(entry.name), int(fields[1])
            if pid == master or ppid == master:
                # utime, stime, and the same for children waited for (cutime, cstime).
                ticks += sum(int(x) for x in fields[11:15])
        return ticks / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if not self._running:
            return
        self._running = False
        subprocess.run(  # noqa: S603 - a fixed command line
            [_program("doveadm"), "-c", str(self.config), "stop"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            timeout=30,
        )
        pid_file = self.root / "run" / "master.pid"
        deadline = time.monotonic() + 10
        while pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
