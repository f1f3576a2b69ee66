"""A whole bubble run the way an operator runs it: one OS process per part.

`Bubble` drives the `sealgate` command (bubble init, relay serve, account add,
gateway serve) as subprocesses on 127.0.0.1, captures every process's output in
files under its directory (so canary scans cover logs too), and stops them with
SIGTERM, checking the exit status.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from gateway.tls import ensure_certificate

DOMAIN = "test.bubble"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(
    port: int, timeout: float = 20.0, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Wait until something listens on `port`; give up early once `process` has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (process is None or process.poll() is None):
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


def sealgate(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"sealgate {args[:2]} failed: {result.stderr}")
    return result


@dataclass
class Service:
    name: str
    args: list[str]
    log: Path
    ports: list[int]
    proc: subprocess.Popen[bytes] | None = None
    log_level: str = "DEBUG"  # the canary scans then cover the most verbose logs there are

    def start(self) -> None:
        self.spawn()
        self.wait_ready()

    def spawn(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "--log-level", self.log_level, *self.args],
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self) -> None:
        for port in self.ports:
            try:
                wait_for_port(port, process=self.proc)
            except TimeoutError as slow:
                # Say whether it died or hung, and why, rather than only the port.
                code = self.proc.poll()
                state = "still running" if code is None else f"exited with status {code}"
                tail = self.log.read_text(errors="replace")[-3000:]
                raise TimeoutError(f"{self.name}: {slow} ({state}); its log ends:\n{tail}") \
                    from None

    def stop(self) -> int:
        self.terminate()
        return self.wait()

    def terminate(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)

    def wait(self) -> int:
        """The exit status after `terminate` (killed after 20 s)."""
        if self.proc is None:
            return 0
        try:
            code = self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.proc = None
        return code

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@dataclass
class Account:
    address: str
    password: str
    home: Path
    smtp_port: int
    imap_port: int

    def tls_context(self) -> ssl.SSLContext:
        """Trust exactly this gateway's self-signed certificate."""
        ctx = ssl.create_default_context(cafile=str(self.home / "tls" / "cert.pem"))
        return ctx


@dataclass
class Bubble:
    root: Path
    relay_port: int = field(default_factory=free_port)
    https: bool = False  # the relay serves HTTPS with its own certificate, which gateways pin
    gateway_settings: tuple[str, ...] = ()  # extra TOML lines for every gateway's config
    relay_args: tuple[str, ...] = ()  # extra flags for `relay serve` (e.g. --quota)
    poll_interval: float = 0.3  # the gateways' --poll-interval
    relay_db: str | None = None  # every relay's --db (one database shared by all relays)
    relay_log_level: str = "DEBUG"  # INFO: what a relay logs by default
    _tls_args: list[str] = field(default_factory=list)
    services: dict[str, Service] = field(default_factory=dict)
    accounts: dict[str, Account] = field(default_factory=dict)

    @property
    def admin(self) -> Path:
        return self.root / "admin"

    @property
    def relay_home(self) -> Path:
        return self.root / "relay"  # the first relay's; others are ROOT/<name>

    @property
    def relay_url(self) -> str:
        return f"{'https' if self.https else 'http'}://127.0.0.1:{self.relay_port}"

    @property
    def relay_cert(self) -> Path:
        return self.root / "relay-tls" / "cert.pem"

    @property
    def state_dirs(self) -> list[Path]:
        return [self.admin, self.relay_home, self.root / "gateways", self.root / "logs"]

    def init(self) -> None:
        sealgate("bubble", "init", "--home", self.admin, "--domain", DOMAIN)
        tls: list[str] = []
        if self.https:
            cert, key = ensure_certificate(self.relay_cert.parent, "relay.test")
            tls = ["--tls-cert", str(cert), "--tls-key", str(key)]
        self._tls_args = tls
        self._relay_service("relay", self.relay_port)
        self.start_relay()

    def _relay_service(self, name: str, port: int) -> Service:
        db = ["--db", self.relay_db] if self.relay_db else []
        service = self.services[name] = Service(
            name,
            ["relay", "serve", "--home", str(self.root / name), *db,
             "--listen", f"127.0.0.1:{port}",
             "--trust-root", str(self.admin / "root.pub"), *self._tls_args, *self.relay_args],
            self.root / "logs" / f"{name}.log",
            [port],
            log_level=self.relay_log_level,
        )
        return service

    def add_relay(self, name: str) -> str:
        """Start one more relay (home ROOT/name, its own port); its URL."""
        port = free_port()
        self._relay_service(name, port).start()
        return f"{'https' if self.https else 'http'}://127.0.0.1:{port}"

    def start_relay(self) -> None:
        self.services["relay"].start()
        context = ssl.create_default_context(cafile=self.relay_cert) if self.https else None
        health = f"{self.relay_url}/v1/health"
        with urllib.request.urlopen(health, timeout=5, context=context) as r:  # noqa: S310
            assert r.status == 200

    def stop_relay(self) -> None:
        assert self.services["relay"].stop() == 0

    def add_account(
        self,
        user: str,
        password: str,
        *,
        kdf_cost: str | None = "interactive",
        settings: dict[str, float | int] | None = None,
        gateway: str | None = None,
        relays: list[str] | None = None,
    ) -> Account:
        """`account add` (Argon2id at `kdf_cost`: cheaper than the moderate default unless
        None), and a gateway to serve it with `settings` in its TOML file; with `gateway`,
        into that user's gateway home (one gateway serving several accounts); with
        `relays`, those home relays in priority order instead of the first relay."""
        home = self.root / "gateways" / (gateway or user)
        pw_file = self.root / f"{user}.password"
        pw_file.write_text(password + "\n")
        os.chmod(pw_file, 0o600)
        pin = ["--relay-ca", str(self.relay_cert)] if self.https else []
        sealgate(
            "account", "add", f"{user}@{DOMAIN}", "--gateway", home, "--bubble", self.admin,
            *[arg for url in relays or [self.relay_url] for arg in ("--relay", url)],
            "--password-file", pw_file, *pin,
            *(["--kdf-cost", kdf_cost] if kdf_cost else []),
        )
        pw_file.unlink()
        return self._register(user, password, home, settings)

    def password_file(self, user: str, password: str) -> Path:
        path = self.root / f"{user}.password"
        path.write_text(password + "\n")
        os.chmod(path, 0o600)
        return path

    def enrol_two_step(self, user: str, password: str) -> Account:
        """request on the gateway, sign with the admin home, import on the gateway."""
        home = self.root / "gateways" / user
        request, signed = self.root / f"{user}.request.json", self.root / f"{user}.signed.json"
        sealgate(
            "account", "request", f"{user}@{DOMAIN}", "--gateway", home,
            "--relay", self.relay_url, "--password-file", self.password_file(user, password),
            "--out", request, "--kdf-cost", "interactive",
        )
        (self.root / f"{user}.password").unlink()
        sealgate("bubble", "sign", request, "--bubble", self.admin, "--out", signed)
        sealgate("account", "import", signed, "--gateway", home,
                 "--trust-root", self.admin / "root.pub")
        signed.unlink()
        return self._register(user, password, home)

    def _register(
        self, user: str, password: str, home: Path,
        settings: dict[str, float | int] | None = None,
    ) -> Account:
        config = self.root / f"{user}.toml"
        lines = [f'relay_ca_file = "{self.relay_cert}"'] if self.https else []
        lines += [f"{name} = {value!r}" for name, value in (settings or {}).items()]
        config.write_text("".join(f"{line}\n" for line in (*lines, *self.gateway_settings)))
        account = Account(f"{user}@{DOMAIN}", password, home, free_port(), free_port())
        self.accounts[user] = account
        self.services[user] = Service(
            user,
            ["gateway", "serve", "--home", str(home),
             "--smtp", f"127.0.0.1:{account.smtp_port}",
             "--imap", f"127.0.0.1:{account.imap_port}",
             "--poll-interval", str(self.poll_interval), "--config", str(config)],
            self.root / "logs" / f"{user}.log",
            [account.smtp_port, account.imap_port],
        )
        return account

    def start_gateway(self, *users: str) -> None:
        """Start these users' gateways side by side (each imports for a second or more),
        then wait until every one listens."""
        for user in users:
            self.services[user].spawn()
        for user in users:
            self.services[user].wait_ready()

    def stop_gateway(self, user: str) -> int:
        return self.services[user].stop()

    def stop_all(self) -> dict[str, int]:
        """SIGTERM to every part at once, then each one's exit status."""
        for service in self.services.values():
            service.terminate()
        return {name: service.wait() for name, service in self.services.items()}

    def kill_all(self) -> None:
        for service in self.services.values():
            service.kill()

    def log_text(self, name: str) -> str:
        path = self.services[name].log
        return path.read_text(errors="replace") if path.exists() else ""


def files_containing(roots: list[Path], needles: list[bytes]) -> list[tuple[Path, bytes]]:
    """Every (file, needle) where a file under `roots` contains a needle, byte for byte."""
    found = []
    for root in roots:
        if not root.exists():
            continue
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            data = path.read_bytes()
            found += [(path, n) for n in needles if n in data]
    return found
