"""`sealgate migrate mbox|maildir` against a real bubble, checked through the gateway's IMAP.

The migration runs as its own process without the account's password; the gateway
files what it imported when the account is unlocked (at once when it is). Killing
the migration part-way and running it again never duplicates a message.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import re
import secrets
import signal
import sqlite3
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.bubble_processes import Bubble, files_containing, sealgate
from tests.integration.conftest import start_bubble
from tests.migrate_mail import Legacy, corpus, gateway_view, imap_login, write_maildir, write_mbox

pytestmark = pytest.mark.integration


@pytest.fixture
def lone(tmp_path: Path) -> Iterator[Bubble]:
    b = start_bubble(tmp_path / "bubble", ("alice",))
    try:
        yield b
    finally:
        b.kill_all()


def imported_rows(gateway: Path) -> int:
    with contextlib.closing(sqlite3.connect(gateway / "gateway.db", timeout=30)) as db:
        return int(db.execute("SELECT count(*) FROM imported_message").fetchone()[0])


def migrate(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    return sealgate("migrate", *args, check=check)


def killed_after_rows(args: list[str | Path], gateway: Path, rows: int) -> int:
    """Run `sealgate migrate ARGS`, SIGKILL it once the store holds `rows` imports;
    the imports stored by then."""
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "migrate", *map(str, args)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while imported_rows(gateway) < rows and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return imported_rows(gateway)


def wait_for_view(bubble: Bubble, count: int) -> dict[int, list]:
    """Log in (unlocking the account, which files its imports) until `count` messages
    show; the gateway files in batches, so this polls the user's view."""
    deadline = time.monotonic() + 30
    while True:
        imap = imap_login(bubble.accounts["alice"])
        try:
            view = gateway_view(imap)
        finally:
            imap.logout()
        if sum(len(v) for v in view.values()) >= count or time.monotonic() > deadline:
            return view
        time.sleep(0.2)


def assert_migrated(view: dict[int, list], expected: dict[int, tuple[str, Legacy]]) -> None:
    assert sorted(view) == sorted(expected)
    for seq, (folder, mail) in expected.items():
        (seen,) = view[seq]  # exactly once
        assert (seen.folder, seen.flags, seen.date) == (folder, mail.flags, mail.date), seq


def test_mbox_migration_killed_part_way_then_resumed_while_the_gateway_serves(
    lone: Bubble, tmp_path: Path
) -> None:
    alice = lone.accounts["alice"]
    canary = "canary" + secrets.token_hex(6)
    imap_login(alice).logout()  # unlocked: imports are filed as they arrive
    inbox, sent, old = corpus(canary, 150), corpus(canary, 40, 150), corpus(canary, 30, 190)
    files = tmp_path / "export"
    files.mkdir()
    write_mbox(files / "inbox.mbox", inbox)
    write_mbox(files / "Sent Items.mbox", sent)
    write_mbox(files / "Archiv 2015.mbox", old)
    config = tmp_path / "migrate.toml"
    config.write_text("batch_messages = 10\nmax_messages_per_second = 100\n")
    args = ["mbox", *sorted(files.iterdir()), "--account", alice.address,
            "--gateway", alice.home, "--config", config, "--json"]

    stored_before = killed_after_rows(args, alice.home, 30)
    assert 30 <= stored_before < 220

    second = json.loads(migrate(*args).stdout)
    assert second["ok"] is True
    assert sum(f["imported"] for f in second["folders"]) == 220 - stored_before
    assert {f["target"] for f in second["folders"]} == {"INBOX", "Sent", "Archiv 2015"}

    expected = {m.seq: ("INBOX", m) for m in inbox}
    expected |= {m.seq: ("Sent", m) for m in sent} | {m.seq: ("Archiv 2015", m) for m in old}
    view = wait_for_view(lone, 220)
    assert_migrated(view, expected)
    body = view[3][0].body  # mboxrd quoting undone, CRLF line ends
    assert b"\r\nFrom the legacy server" in body and b"\r\n>From an already quoted" in body

    again = json.loads(migrate(*args).stdout)
    assert sum(f["imported"] for f in again["folders"]) == 0
    assert sum(f["present"] for f in again["folders"]) == 220
    assert imported_rows(alice.home) == 220
    assert files_containing(lone.state_dirs, [canary.encode()]) == []


def test_maildir_migration_killed_while_the_gateway_is_stopped_is_filed_on_unlock(
    lone: Bubble, tmp_path: Path
) -> None:
    alice = lone.accounts["alice"]
    canary = "canary" + secrets.token_hex(6)
    assert lone.stop_gateway("alice") == 0
    root = tmp_path / "Maildir"
    inbox, sent, work, fs = (corpus(canary, 60), corpus(canary, 20, 60),
                             corpus(canary, 20, 80), corpus(canary, 20, 100))
    write_maildir(root, inbox)
    write_maildir(root / ".Sent", sent)  # Maildir++
    write_maildir(root / ".Work.Projekt &AMQ-", work)  # "Work/Projekt Ä" in modified UTF-7
    write_maildir(root / "Archiv" / "2015", fs)  # LAYOUT=fs

    config = tmp_path / "migrate.toml"
    config.write_text("batch_messages = 10\nmax_messages_per_second = 60\n")
    args = ["maildir", root, "--account", alice.address, "--gateway", alice.home, "--json"]
    stored_before = killed_after_rows([*args, "--config", config], alice.home, 30)
    assert 30 <= stored_before < 120

    report = json.loads(migrate(*args).stdout)
    assert report["ok"] is True
    assert {(f["target"], f["imported"] + f["present"]) for f in report["folders"]} == {
        ("INBOX", 60), ("Sent", 20), ("Work/Projekt Ä", 20), ("Archiv/2015", 20)}
    assert sum(f["imported"] for f in report["folders"]) == 120 - stored_before

    lone.start_gateway("alice")
    expected = {m.seq: ("INBOX", m) for m in inbox} | {m.seq: ("Sent", m) for m in sent}
    expected |= {m.seq: ("Work/Projekt &AMQ-", m) for m in work}  # IMAP lists modified UTF-7
    expected |= {m.seq: ("Archiv/2015", m) for m in fs}
    assert_migrated(wait_for_view(lone, 120), expected)
    assert files_containing(lone.state_dirs, [canary.encode()]) == []
    migrate("forget", "--account", alice.address, "--gateway", alice.home)
    assert imported_rows(alice.home) == 0  # no digest left once the mail is filed


def test_a_message_that_does_not_parse_is_imported_as_it_is_and_listed(
    lone: Bubble, tmp_path: Path
) -> None:
    alice = lone.accounts["alice"]
    canary = "canary" + secrets.token_hex(6)
    imap_login(alice).logout()  # unlocked: filed as it arrives
    root = tmp_path / "Maildir"
    mails = corpus(canary, 2)
    write_maildir(root, mails)
    garbage = b"\x00\x01 no header seq-900- " + canary.encode() + b"\r\n\xff\xfe binary\r\n"
    (root / "cur" / "1500000000.M900P1.legacy:2,S").write_bytes(garbage)
    result = migrate("maildir", root, "--account", alice.address, "--gateway", alice.home)
    lines = result.stdout.splitlines()
    assert any("message 3 imported as it is: it does not begin with a header field" in line
               for line in lines), lines
    assert lines[-1].startswith("every folder verified")

    view = wait_for_view(lone, 3)
    (raw,) = view[900]
    # BODY[] sends its NUL as 0x80: a {n} literal may not hold one (RFC 3501 CHAR8).
    shown = garbage.replace(b"\x00", b"\x80")
    assert (raw.folder, raw.flags, raw.body) == ("INBOX", frozenset({"\\Seen"}), shown)
    assert_migrated({seq: seen for seq, seen in view.items() if seq != 900},
                    {m.seq: ("INBOX", m) for m in mails})
    assert files_containing(lone.state_dirs, [canary.encode()]) == []


def test_ctrl_c_keeps_what_was_stored_and_a_terminal_gets_a_progress_bar(
    lone: Bubble, tmp_path: Path
) -> None:
    """On a terminal (a pty here) a bar per folder; Ctrl-C ends the run with one line;
    the next run, its stderr no terminal, logs plain lines and imports the rest."""
    alice = lone.accounts["alice"]
    mbox = tmp_path / "inbox.mbox"
    write_mbox(mbox, corpus("c", 150))
    config = tmp_path / "migrate.toml"
    # Paced to 2.5 s, so that the interrupt lands well before the end.
    config.write_text("batch_messages = 10\nmax_messages_per_second = 60\n")
    args = ["migrate", "mbox", mbox, "--account", alice.address, "--gateway", alice.home,
            "--config", config]
    terminal, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 100 columns
    # SIGINT as a terminal's Ctrl-C delivers it: a shell that started these tests in
    # the background has them (and so the child) ignore it otherwise.
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=child,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    os.close(child)
    shown = bytearray()

    def collect() -> None:
        with contextlib.suppress(OSError):  # EIO once the child's side is closed
            while chunk := os.read(terminal, 4096):
                shown.extend(chunk)

    reader = threading.Thread(target=collect)
    reader.start()
    try:
        deadline = time.monotonic() + 30
        while imported_rows(alice.home) < 30 and time.monotonic() < deadline:
            time.sleep(0.02)
        rows_at_signal = imported_rows(alice.home)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 1, (rows_at_signal, out, bytes(shown))
    finally:
        proc.kill()
        reader.join(timeout=10)
        os.close(terminal)
    text = shown.decode("utf-8", "replace")
    assert "inbox.mbox: " in text and "/150 [" in text and "\r" in text, text  # a bar, redrawn
    # tqdm's bar: elapsed<ETA, messages/s, then the octets read so far
    assert re.search(r"/150 \[\d\d:\d\d<\d\d:\d\d, [\d.]+msg/s, [\d.]+[kMG]?B\]", text), text
    assert text.rstrip().endswith(
        "sealgate: error: interrupted: what was stored is kept; run again to resume"), text
    assert "Traceback" not in text
    stored = imported_rows(alice.home)
    assert 30 <= stored < 150

    rest = migrate(*args[1:])
    assert "\r" not in rest.stderr and "inbox.mbox: 150 read (" in rest.stderr, rest.stderr
    assert rest.stdout.splitlines()[-1].startswith("every folder verified")
    assert imported_rows(alice.home) == 150


def test_oversized_dry_run_and_bad_input_are_reported_not_dropped(
    lone: Bubble, tmp_path: Path
) -> None:
    alice = lone.accounts["alice"]
    small, big = corpus("c", 3, 1), corpus("c", 1, 5)  # only seq 5 carries an attachment
    root = tmp_path / "Maildir"
    write_maildir(root, small + big)
    config = tmp_path / "migrate.toml"
    config.write_text(f"max_message_bytes = {max(len(m.message) for m in small) + 10}\n")
    common = ["--account", alice.address, "--gateway", alice.home, "--json"]

    dry = migrate("maildir", root, *common, "--dry-run", "--config", config, check=False)
    assert dry.returncode == 3
    assert imported_rows(alice.home) == 0

    result = migrate("maildir", root, *common, "--config", config, check=False)
    assert result.returncode == 3  # a mismatch: one message was not imported
    (folder,) = json.loads(result.stdout)["folders"]
    assert (folder["imported"], folder["verified"]) == (3, False)
    assert folder["problems"] == [{"uid": 4, "problem": "over the size limit"}]
    refused = migrate("forget", "--account", alice.address, "--gateway", alice.home,
                      check=False)
    assert (refused.returncode, refused.stderr.strip()) == (
        1, "sealgate: error: 3 imported message(s) are not filed yet: log in first")

    empty = tmp_path / "empty"
    empty.mkdir()
    for bad_args, message in (
        (["maildir", root, "--account", "nobody@test.bubble", "--gateway", alice.home],
         "no account nobody@test.bubble"),
        (["maildir", root, "--account", alice.address, "--gateway", tmp_path],
         "is not a gateway state directory"),
        (["mbox", tmp_path / "missing.mbox", "--account", alice.address,
          "--gateway", alice.home], "no mbox file at"),
        (["maildir", empty, "--account", alice.address, "--gateway", alice.home],
         "no Maildir folder"),
    ):
        failed = migrate(*bad_args, check=False)
        assert failed.returncode == 1, failed.stderr
        assert failed.stderr.startswith("sealgate: error: ") and message in failed.stderr
        assert "Traceback" not in failed.stderr
