"""push: how fast mail reaches the recipient's gateway, and what an idle bubble costs.

Ours: a bubble as operators run it, every part its own process (`sealgate relay
serve`, and `sealgate gateway serve` for alice's gateway and for bob's), on 127.0.0.1,
each logging at INFO (the default). Both accounts are unlocked by an IMAP login, so
bob's gateway holds a listing open on the relay (push, `push_wait` = 50 s).

Baseline: the same bubble with push off (`push_wait = 0`) and the gateways polling
their relay every 5 s (`poll_interval`, the default before push).

Latency: alice's client submits 10 KB messages at 20 msg/s (four SMTP sessions taking
turns on a fixed schedule) for `latency_seconds`; each message is timed from the
start of its submission to the moment bob's INBOX shows it, seen by an IMAP session
that lists new UIDs every 25 ms (so figures carry up to ~25 ms of that polling; the
session runs only while messages are sent, never in the idle window).
Rows: p50 and p99 of those latencies. Target: p99 < 1 s (printed as a note; the ratio,
ours over the baseline's, is shown without a target).

IDLE: then bob's IMAP session enters IDLE and alice submits `IDLE_MESSAGES` messages one
at a time, each once the last one showed; each is timed from alice's `250` after DATA to
the `* N EXISTS` bob's session receives (what a mail client in IDLE sees). Row: the median.

Idle CPU: with both accounts unlocked and no mail, the CPU time (user + system, from
/proc) of the relay and the two gateways together over `--idle-seconds` (default 60,
20 with --quick; the issue's figure is over ten minutes: `--idle-seconds 600`), as a
percentage of one core. Target: below 0.5 % (a note; the ratio against polling is shown).
"""

from __future__ import annotations

import contextlib
import imaplib
import os
import re
import secrets
import smtplib
import socket
import ssl
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import BenchError, Result, Settings, make_message

NAME = "push"
DOMAIN = "push.bubble"
RATE = 20.0  # messages per second
SENDERS = 4  # SMTP sessions taking turns
SIZE = 10_000
_TICK = os.sysconf("SC_CLK_TCK")
_SUBJECT = re.compile(rb"Subject: push-(\d+)-")
_INBOX_POLL = 0.025  # seconds between looks at bob's INBOX while messages arrive
IDLE_MESSAGES = 8
_EXISTS = re.compile(rb"\* (\d+) EXISTS\r\n")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise BenchError(f"nothing listens on 127.0.0.1:{port}")


def _sealgate(*args: str) -> None:
    result = subprocess.run(  # noqa: S603 - our own CLI, fixed arguments
        [sys.executable, "-m", "gateway.cli", *args], capture_output=True, text=True,
        timeout=120, check=False,
    )
    if result.returncode != 0:
        raise BenchError(f"sealgate {' '.join(args[:2])} failed: {result.stderr.strip()}")


@dataclass
class _Account:
    address: str
    password: str
    home: Path
    smtp_port: int = field(default_factory=_free_port)
    imap_port: int = field(default_factory=_free_port)

    def tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.home / "tls" / "cert.pem"))

    def imap(self) -> imaplib.IMAP4:
        imap = imaplib.IMAP4("127.0.0.1", self.imap_port, timeout=30)
        imap.starttls(ssl_context=self.tls())
        imap.login(self.address, self.password)
        return imap


class _ProcessBubble:
    """A relay and one gateway per account, each a `sealgate` process under `root`."""

    def __init__(self, root: Path, gateway_settings: dict[str, float | int]) -> None:
        self.root = root
        self.procs: list[subprocess.Popen[bytes]] = []
        self.accounts: dict[str, _Account] = {}
        admin, relay_port = root / "admin", _free_port()
        _sealgate("bubble", "init", "--home", str(admin), "--domain", DOMAIN)
        self._start(["relay", "serve", "--home", str(root / "relay"),
                     "--listen", f"127.0.0.1:{relay_port}",
                     "--trust-root", str(admin / "root.pub")], "relay", [relay_port])
        config = root / "gateway.toml"
        config.write_text("".join(f"{k} = {v!r}\n" for k, v in gateway_settings.items()))
        for user in ("alice", "bob"):
            account = _Account(f"{user}@{DOMAIN}", secrets.token_urlsafe(12),
                               root / "gateways" / user)
            password_file = root / f"{user}.password"
            password_file.write_text(account.password + "\n")
            password_file.chmod(0o600)
            _sealgate("account", "add", account.address, "--gateway", str(account.home),
                      "--bubble", str(admin), "--relay", f"http://127.0.0.1:{relay_port}",
                      "--password-file", str(password_file), "--kdf-cost", "minimum")
            self.accounts[user] = account
        for user, account in self.accounts.items():
            self._start(["gateway", "serve", "--home", str(account.home),
                         "--smtp", f"127.0.0.1:{account.smtp_port}",
                         "--imap", f"127.0.0.1:{account.imap_port}", "--config", str(config)],
                        user, [account.smtp_port, account.imap_port])

    def _start(self, args: list[str], name: str, ports: list[int]) -> None:
        log = (self.root / "logs" / f"{name}.log")
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            self.procs.append(subprocess.Popen(  # noqa: S603 - our own CLI
                [sys.executable, "-m", "gateway.cli", *args], stdout=out,
                stderr=subprocess.STDOUT,
            ))
        for port in ports:
            _wait_for_port(port)

    def cpu_seconds(self) -> list[float]:
        """User + system CPU time of each process so far (relay, alice's, bob's gateway)."""
        times = []
        for proc in self.procs:
            fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            times.append((int(fields[11]) + int(fields[12])) / _TICK)  # utime, stime
        return times

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class _Inbox(threading.Thread):
    """Watches bob's INBOX and records when each pushed message first shows."""

    def __init__(self, account: _Account) -> None:
        super().__init__(daemon=True)
        self.seen: dict[int, float] = {}
        self._imap = account.imap()
        self._done = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._imap.select("INBOX")
            next_uid = 1
            while not self._done.is_set():
                _, data = self._imap.uid("SEARCH", f"UID {next_uid}:*")
                uids = [int(u) for u in data[0].split() if int(u) >= next_uid]
                if uids:
                    now = time.perf_counter()
                    spec = ",".join(map(str, uids))
                    _, fetched = self._imap.uid(
                        "FETCH", spec, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])"
                    )
                    for item in fetched:
                        if isinstance(item, tuple) and (found := _SUBJECT.search(item[1])):
                            self.seen.setdefault(int(found.group(1)), now)
                    next_uid = max(uids) + 1
                else:
                    time.sleep(_INBOX_POLL)
        except BaseException as e:  # noqa: BLE001 - reported by the caller
            self.error = e

    def stop(self) -> None:
        self._done.set()
        self.join(10)
        with contextlib.suppress(OSError, imaplib.IMAP4.error):
            self._imap.logout()


def _send(alice: _Account, bob: _Account, count: int) -> dict[int, float]:
    """Submit `count` messages at RATE; their submission start times by number."""
    started: dict[int, float] = {}
    errors: list[BaseException] = []
    origin = time.perf_counter() + 0.5

    def sender(first: int) -> None:
        try:
            with smtplib.SMTP("127.0.0.1", alice.smtp_port, timeout=60) as smtp:
                smtp.starttls(context=alice.tls())
                smtp.login(alice.address, alice.password)
                for number in range(first, count, SENDERS):
                    delay = origin + number / RATE - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                    message = make_message(SIZE, sender=alice.address, recipient=bob.address,
                                           number=number)
                    message = message.replace(
                        b"Subject: ", f"Subject: push-{number}-".encode(), 1
                    )
                    started[number] = time.perf_counter()
                    smtp.sendmail(alice.address, [bob.address], message)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(SENDERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise BenchError(f"submission failed: {errors[0]!r}")
    return started


def _idle_latencies(alice: _Account, bob: _Account, count: int) -> list[float]:
    """Seconds from alice's `250` to the `* N EXISTS` in bob's IDLE session, per message."""
    imap = bob.imap()
    latencies: list[float] = []
    try:
        _, data = imap.select("INBOX")
        exists = int(data[0] or b"0")
        imap.send(b"I1 IDLE\r\n")
        if not imap.readline().startswith(b"+ "):
            raise BenchError("bob's IDLE was refused")
        with smtplib.SMTP("127.0.0.1", alice.smtp_port, timeout=60) as smtp:
            smtp.starttls(context=alice.tls())
            smtp.login(alice.address, alice.password)
            for number in range(count):
                message = make_message(SIZE, sender=alice.address, recipient=bob.address,
                                       number=number)
                smtp.sendmail(alice.address, [bob.address], message)
                accepted = time.perf_counter()
                exists += 1
                while True:
                    line = imap.readline()
                    if not line:
                        raise BenchError("bob's IDLE session closed")
                    found = _EXISTS.fullmatch(line)
                    if found and int(found.group(1)) >= exists:
                        break
                latencies.append(time.perf_counter() - accepted)
        imap.send(b"DONE\r\n")
        while not imap.readline().startswith(b"I1 "):
            pass
    finally:
        with contextlib.suppress(OSError, imaplib.IMAP4.error):
            imap.logout()
    return latencies


def _quantile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q * 100) - 1]


@dataclass
class _Figures:
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    idle_push: list[float] = field(default_factory=list)  # median per repetition
    idle: list[float] = field(default_factory=list)  # percent of one core
    idle_parts: list[list[float]] = field(default_factory=list)  # relay, alice's, bob's


def _measure(root: Path, settings: Settings, gateway: dict[str, float | int],
             figures: _Figures, latency_seconds: float) -> None:
    bubble = _ProcessBubble(root, gateway)
    try:
        alice, bob = bubble.accounts["alice"], bubble.accounts["bob"]
        alice.imap().logout()  # a login unlocks the account until the gateway stops
        bob.imap().logout()
        time.sleep(2.0)  # start-up work (directory sync, first listings) settles
        idle_seconds = settings.idle_seconds or (20.0 if settings.quick else 60.0)
        before, t0 = bubble.cpu_seconds(), time.perf_counter()
        time.sleep(idle_seconds)
        after, elapsed = bubble.cpu_seconds(), time.perf_counter() - t0
        shares = [100.0 * (b - a) / elapsed for a, b in zip(before, after, strict=True)]
        figures.idle.append(sum(shares))
        figures.idle_parts.append(shares)
        inbox = _Inbox(bob)
        inbox.start()
        count = int(latency_seconds * RATE)
        started = _send(alice, bob, count)
        deadline = time.perf_counter() + 60
        while len(inbox.seen) < count and time.perf_counter() < deadline:
            if inbox.error is not None:
                raise BenchError(f"watching bob's INBOX failed: {inbox.error!r}")
            time.sleep(0.05)
        inbox.stop()
        if len(inbox.seen) < count:
            raise BenchError(f"only {len(inbox.seen)} of {count} messages reached bob")
        latencies = [inbox.seen[n] - started[n] for n in range(count)]
        figures.p50.append(_quantile(latencies, 0.50))
        figures.p99.append(_quantile(latencies, 0.99))
        figures.idle_push.append(statistics.median(_idle_latencies(alice, bob, IDLE_MESSAGES)))
    finally:
        bubble.stop()


def run(settings: Settings) -> list[Result]:
    latency_seconds = 10.0 if settings.quick else 30.0
    ours, polling = _Figures(), _Figures()
    for rep in range(settings.reps):
        for name, gateway, figures in (
            ("push", {"push_wait": 50}, ours),
            ("poll", {"push_wait": 0, "poll_interval": 5.0}, polling),
        ):
            _measure(settings.workdir / f"{name}-{rep}", settings, gateway, figures,
                     latency_seconds)
    rows = []
    for case, unit, mine, theirs, goal in (
        ("submission to bob's gateway, p50", "s", ours.p50, polling.p50, None),
        ("submission to bob's gateway, p99", "s", ours.p99, polling.p99, 1.0),
        ("alice's 250 to * N EXISTS in bob's IDLE", "s", ours.idle_push, polling.idle_push,
         None),
        ("idle CPU of one core, relay + 2 gateways", "%", ours.idle, polling.idle, 0.5),
    ):
        ratio = statistics.median(mine) / statistics.median(theirs)
        notes: tuple[str, ...] = ()
        if goal is not None:
            verdict = "met" if statistics.median(mine) < goal else "MISSED"
            notes = (f"target < {goal:g} {'s' if unit == 's' else '%'}: {verdict}",)
        if unit == "%":
            window = settings.idle_seconds or (20.0 if settings.quick else 60.0)
            notes += tuple(
                f"{name}: relay {r:.3f} %, alice's gateway {a:.3f} %, bob's gateway "
                f"{b:.3f} % over {window:.0f} s"
                for name, parts in (("push", ours.idle_parts), ("polling", polling.idle_parts))
                for r, a, b in parts
            )
        rows.append(Result(NAME, case, unit, mine, "polling every 5 s", theirs, ratio, None,
                           notes))
    return rows
