"""The `sealgate` command as an operator meets it: contracts, exit codes, one-line errors."""

from __future__ import annotations

import contextlib
import imaplib
import json
import secrets
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.bubble_processes import Bubble, free_port, sealgate, wait_for_port
from tests.integration.test_end_to_end import fetch_all

pytestmark = pytest.mark.integration


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sealgate: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture
def demos() -> Iterator[list[subprocess.Popen[str]]]:
    """Demo processes a test starts; any still running when it ends are killed."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def start_demo(
    directory: Path, *extra: str, track: list[subprocess.Popen[str]]
) -> subprocess.Popen[str]:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "clients.json").unlink(missing_ok=True)  # wait for this run's file
    with (directory.parent / "demo.log").open("a") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "demo", "--dir", str(directory), *extra],
            stdout=log, stderr=subprocess.STDOUT, text=True,
        )
    track.append(proc)
    deadline = time.monotonic() + 60
    while not (directory / "clients.json").exists():
        assert proc.poll() is None, "demo exited early"
        assert time.monotonic() < deadline, "clients.json never appeared"
        time.sleep(0.1)
    return proc


def stop(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=30)


def test_demo_contract_and_reuse(tmp_path: Path, demos: list[subprocess.Popen[str]]) -> None:
    directory = tmp_path / "demo"
    proc = start_demo(directory, track=demos)
    clients = json.loads((directory / "clients.json").read_text())
    alice, bob = clients["accounts"]
    assert (alice["address"], bob["address"]) == ("alice@demo.bubble", "bob@demo.bubble")
    for acc in clients["accounts"]:
        for proto in ("smtp", "imap"):
            assert acc[proto]["host"] == "127.0.0.1" and acc[proto]["security"] == "starttls"
            wait_for_port(acc[proto]["port"])
        assert acc["inbound"]["host"] == "127.0.0.1"
        wait_for_port(acc["inbound"]["port"])
    assert clients["relays"][0]["url"].startswith("http://127.0.0.1:")
    for part in ("relay", "gateways/alice", "gateways/bob", "admin"):
        assert (directory / part).is_dir()

    ctx = ssl.create_default_context(cafile=str(directory / "gateways/alice/tls/cert.pem"))
    with smtplib.SMTP("127.0.0.1", alice["smtp"]["port"], timeout=30) as smtp:
        smtp.starttls(context=ctx)
        smtp.login(alice["address"], alice["password"])
        smtp.sendmail(alice["address"], [bob["address"]],
                      f"From: {alice['address']}\r\nTo: {bob['address']}\r\n"
                      "Subject: demo\r\n\r\nkept across runs\r\n")
    assert stop(proc) == 0

    proc = start_demo(directory, track=demos)
    assert json.loads((directory / "clients.json").read_text()) == clients  # same ports, passwords
    imap = imaplib.IMAP4("127.0.0.1", bob["imap"]["port"], timeout=30)
    imap.starttls(ssl_context=ssl.create_default_context(
        cafile=str(directory / "gateways/bob/tls/cert.pem")))
    imap.login(bob["address"], bob["password"])
    deadline = time.monotonic() + 20
    while not (bodies := fetch_all(imap)) and time.monotonic() < deadline:
        time.sleep(0.3)
    imap.logout()
    assert len(bodies) == 1 and b"kept across runs" in bodies[0]
    assert stop(proc) == 0


def free_port_run(count: int) -> int:
    """A port N such that N..N+count-1 are free now (others may still take one later)."""
    for _ in range(100):
        base = free_port()
        try:
            with contextlib.ExitStack() as stack:
                for port in range(base, base + count):
                    sock = stack.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise AssertionError(f"no run of {count} free ports")


def test_demo_port_base(tmp_path: Path, demos: list[subprocess.Popen[str]]) -> None:
    base = free_port_run(7)  # relay, two SMTP, two IMAP, two inbound
    proc = start_demo(tmp_path / "demo", "--port-base", str(base), track=demos)
    clients = json.loads((tmp_path / "demo" / "clients.json").read_text())
    ports = {clients["accounts"][0]["smtp"]["port"], clients["accounts"][0]["imap"]["port"],
             clients["accounts"][1]["smtp"]["port"], clients["accounts"][1]["imap"]["port"]}
    assert clients["relays"][0]["url"] == f"http://127.0.0.1:{base}"
    assert ports == {base + 1, base + 2, base + 3, base + 4}
    assert [acc["inbound"]["port"] for acc in clients["accounts"]] == [base + 5, base + 6]
    assert stop(proc) == 0


def test_demo_inbound_listener_takes_mail_from_outside(
    tmp_path: Path, demos: list[subprocess.Popen[str]]
) -> None:
    """An MX (smtplib here) hands bob's gateway's inbound listener mail for alice, who
    reads it over IMAP on her own gateway, marked as from outside."""
    directory = tmp_path / "demo"
    proc = start_demo(directory, track=demos)
    alice, bob = json.loads((directory / "clients.json").read_text())["accounts"]
    assert {acc["inbound"]["host"] for acc in (alice, bob)} == {"127.0.0.1"}
    with smtplib.SMTP(bob["inbound"]["host"], bob["inbound"]["port"], timeout=30) as smtp:
        smtp.sendmail("dave@partner.example", [alice["address"]],
                      f"From: dave@partner.example\r\nTo: {alice['address']}\r\n"
                      "Subject: hello from outside\r\n\r\nfrom the legacy world\r\n")
    imap = imaplib.IMAP4("127.0.0.1", alice["imap"]["port"], timeout=30)
    imap.starttls(ssl_context=ssl.create_default_context(
        cafile=str(directory / "gateways/alice/tls/cert.pem")))
    imap.login(alice["address"], alice["password"])
    deadline = time.monotonic() + 20
    while not (bodies := fetch_all(imap)) and time.monotonic() < deadline:
        time.sleep(0.3)
    imap.logout()
    assert len(bodies) == 1 and b"from the legacy world" in bodies[0]
    assert bodies[0].startswith(b"Sealgate-Origin: external;")
    assert stop(proc) == 0


def test_operator_errors_are_one_line(tmp_path: Path) -> None:
    admin = tmp_path / "admin"
    sealgate("bubble", "init", "--home", admin, "--domain", "err.bubble")
    assert_one_line_error(
        sealgate("bubble", "init", "--home", admin, "--domain", "err.bubble", check=False),
        "already holds a bubble",
    )
    pw = tmp_path / "pw"
    pw.write_text("s\u00e9same-ouvre\n", encoding="utf-8")  # 12 characters, 13 bytes: long enough
    dead = f"http://127.0.0.1:{free_port()}"
    assert_one_line_error(
        sealgate("account", "add", "a@err.bubble", "--gateway", tmp_path / "gw", "--bubble", admin,
                 "--relay", dead, "--password-file", pw, check=False),
        "cannot publish",
    )
    assert_one_line_error(
        sealgate("account", "add", "a@elsewhere.example", "--gateway", tmp_path / "gw",
                 "--bubble", admin, "--relay", dead, "--password-file", pw, check=False),
        "not in the bubble's domain",
    )
    assert_one_line_error(
        sealgate("account", "add", "a@err.bubble", "--gateway", tmp_path / "gw", "--bubble", admin,
                 "--relay", dead, "--password-file", tmp_path / "missing", check=False),
        "cannot read password file",
    )
    short = tmp_path / "short"
    short.write_text("\u00e9" * 11 + "\n", encoding="utf-8")  # 22 bytes, but 11 characters
    assert_one_line_error(
        sealgate("account", "add", "a@err.bubble", "--gateway", tmp_path / "gw-short",
                 "--bubble", admin, "--relay", dead, "--password-file", short, check=False),
        "the password is too short: 11 characters, at least 12",
    )
    assert not (tmp_path / "gw-short").exists()  # refused before anything was written
    assert_one_line_error(
        sealgate("relay", "serve", "--home", tmp_path / "relay", "--listen", "127.0.0.1:0",
                 check=False),
        "--trust-root",
    )
    assert_one_line_error(
        sealgate("relay", "serve", "--home", tmp_path / "relay", "--listen", "nowhere",
                 "--trust-root", admin / "root.pub", check=False),
        "setting 'listen'",
    )
    config = tmp_path / "gateway.toml"
    config.write_text("max_recipients = 0\n")
    assert_one_line_error(
        sealgate("gateway", "serve", "--home", tmp_path / "gw", "--config", config, check=False),
        "setting 'max_recipients'",
    )
    assert_one_line_error(
        sealgate("gateway", "serve", "--home", tmp_path / "gw", "--inbound", "nowhere",
                 check=False),
        "setting 'inbound'",
    )
    config.write_text("inbound_port = 70000\n")
    assert_one_line_error(
        sealgate("gateway", "serve", "--home", tmp_path / "gw", "--config", config, check=False),
        "setting 'inbound_port'",
    )
    config.write_text("poll_intervall = 3\n")
    assert_one_line_error(
        sealgate("gateway", "serve", "--home", tmp_path / "gw", "--config", config, check=False),
        "unknown setting 'poll_intervall'",
    )
    config.write_text("this is not toml [\n")
    assert_one_line_error(
        sealgate("gateway", "serve", "--home", tmp_path / "gw", "--config", config, check=False),
        "not valid TOML",
    )
    assert_one_line_error(
        sealgate("gateway", "serve", "--home", tmp_path / "nothing-here", check=False),
        "membership.json does not exist",
    )


def test_help_lists_every_command() -> None:
    out = sealgate("--help").stdout
    for command in ("bubble", "relay", "account", "gateway", "demo"):
        assert command in out
    assert "--password-file" in sealgate("account", "add", "--help").stdout


def test_gateway_serve_flags_for_the_inbound_and_implicit_tls_listeners(tmp_path: Path) -> None:
    bubble = Bubble(tmp_path)
    try:
        bubble.init()
        alice = bubble.add_account("alice", "alice-" + secrets.token_hex(6))
        inbound, smtps, imaps = free_port(), free_port(), free_port()
        service = bubble.services["alice"]
        service.args += ["--inbound", f"127.0.0.1:{inbound}", "--smtps", f"127.0.0.1:{smtps}",
                         "--imaps", f"127.0.0.1:{imaps}"]
        service.ports += [inbound, smtps, imaps]
        bubble.start_gateway("alice")
        with smtplib.SMTP("127.0.0.1", inbound, timeout=30) as smtp:
            smtp.ehlo()
            assert smtp.has_extn("starttls") and not smtp.has_extn("auth")
        with smtplib.SMTP_SSL("127.0.0.1", smtps, context=alice.tls_context(), timeout=30) as smtp:
            smtp.ehlo()
            assert smtp.has_extn("auth")
        with imaplib.IMAP4_SSL("127.0.0.1", imaps, ssl_context=alice.tls_context(),
                               timeout=30) as imap:
            # TLS from the first byte: no STARTTLS to offer, LOGIN allowed at once
            assert "STARTTLS" not in imap.capabilities and "AUTH=PLAIN" in imap.capabilities
            assert imap.login(alice.address, alice.password)[0] == "OK"
            assert imap.select("INBOX")[0] == "OK"
            assert imap.logout()[0] == "BYE"
        assert bubble.stop_gateway("alice") == 0
        assert (f"smtps on 127.0.0.1:{smtps}, imaps on 127.0.0.1:{imaps}, "
                f"inbound on 127.0.0.1:{inbound}" in bubble.log_text("alice"))
    finally:
        bubble.kill_all()


def test_demo_console_keeps_the_banner_in_view(
    tmp_path: Path, demos: list[subprocess.Popen[str]]
) -> None:
    """A newcomer's console over a short run with mail: start-up, the banner, no line per
    message or login, no aiosmtpd deprecation warning; SIGUSR1 prints the banner again."""
    directory = tmp_path / "demo"
    proc = start_demo(directory, track=demos)
    alice, bob = json.loads((directory / "clients.json").read_text())["accounts"]
    imap = imaplib.IMAP4("127.0.0.1", bob["imap"]["port"], timeout=30)
    imap.starttls(ssl_context=ssl.create_default_context(
        cafile=str(directory / "gateways/bob/tls/cert.pem")))
    imap.login(bob["address"], bob["password"])
    ctx = ssl.create_default_context(cafile=str(directory / "gateways/alice/tls/cert.pem"))
    for n in range(3):
        with smtplib.SMTP("127.0.0.1", alice["smtp"]["port"], timeout=30) as smtp:
            smtp.starttls(context=ctx)
            smtp.login(alice["address"], alice["password"])
            smtp.sendmail(alice["address"], [bob["address"]],
                          f"From: {alice['address']}\r\nSubject: {n}\r\n\r\nhello\r\n")
    deadline = time.monotonic() + 20
    while len(bodies := fetch_all(imap)) < 3 and time.monotonic() < deadline:
        time.sleep(0.3)
    imap.logout()
    assert len(bodies) == 3
    proc.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while (tmp_path / "demo.log").read_text().count("is running (Ctrl-C") < 2:
        assert time.monotonic() < deadline, "no second banner after SIGUSR1"
        time.sleep(0.1)
    assert stop(proc) == 0
    console = (tmp_path / "demo.log").read_text()
    assert "deprecated" not in console
    lines = console.splitlines()
    banner = lines.index(next(line for line in lines if "is running (Ctrl-C" in line))
    # Everything before the banner is start-up; after it, only the banner again.
    assert all(" INFO gateway" in line or " INFO sealgate" in line for line in lines[:banner])
    after = [line for line in lines[banner:] if " INFO " in line or " WARNING " in line]
    assert after == [], after
    assert f"kill -USR1 {proc.pid}" in console
