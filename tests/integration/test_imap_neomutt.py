"""neomutt, a real terminal client, scripted in a tmux pane against the IMAP server: it
replies with an Fcc to Sent, postpones a draft to Drafts, flags, saves a message into a
folder it creates and deletes one to Trash. What it did is then read from storage.

The pane is read with `tmux capture-pane`; each step waits (bounded) for the screen to
show what a user would wait for before typing on.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.imap_backends import MailBackend
from tests.integration.test_imap_server import (
    PASSWORD,
    USER,
    ServerThread,
    make_server,
    seed_inbox,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def backend(mail_backend: MailBackend) -> MailBackend:
    return seed_inbox(mail_backend)


@pytest.fixture
def server(backend: MailBackend) -> Iterator[ServerThread]:
    running = make_server(backend, None)
    yield running
    running.close()


class Pane:
    """neomutt in a detached tmux session on a socket of its own."""

    def __init__(self, command: list[str], home: Path) -> None:
        self.socket = f"sealgate-{secrets.token_hex(4)}"
        self.tmux = ["tmux", "-L", self.socket]
        env_command = ["env", f"HOME={home}", "TERM=xterm", "LINES=30", "COLUMNS=100", *command]
        subprocess.run(
            [*self.tmux, "new-session", "-d", "-x", "100", "-y", "30", *env_command],
            check=True,
            timeout=10,
        )

    def screen(self) -> str:
        done = subprocess.run(
            [*self.tmux, "capture-pane", "-p"], capture_output=True, text=True, timeout=10
        )
        return done.stdout

    def wait_for(self, text: str, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if text in screen:
                return screen

            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} never appeared; the screen:\n{screen}")
            time.sleep(0.1)

    def keys(self, *keys: str) -> None:
        subprocess.run([*self.tmux, "send-keys", *keys], check=True, timeout=10)

    def close(self) -> None:
        subprocess.run([*self.tmux, "kill-server"], check=False, timeout=10)


def wait_until(what: str, done: Callable[[], bool], pane: Pane, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"never {what}; the screen:\n{pane.screen()}")
        time.sleep(0.1)


def folders(backend: MailBackend) -> set[str]:
    session = backend.other_session(USER)
    try:
        return {f.name for f in session.list_folders()}
    finally:
        session.close()


def subjects(backend: MailBackend, folder: str) -> list[str]:
    session = backend.other_session(USER)
    try:
        uids = [m.uid for m in session.snapshot(folder).messages]
        found = []
        for message in session.fetch(folder, uids):
            for line in message.body.split(b"\r\n"):
                if line.lower().startswith(b"subject:"):
                    found.append(line[8:].strip().decode())
        return sorted(found)
    finally:
        session.close()


def test_neomutt_replies_postpones_files_and_deletes_to_trash(
    server: ServerThread, backend: MailBackend, tmp_path: Path
):
    neomutt = shutil.which("neomutt")
    if neomutt is None or shutil.which("tmux") is None:
        pytest.skip("neomutt and tmux (Debian packages neomutt, tmux) are not installed")
    user = USER.replace("@", "%40")
    rc = tmp_path / "neomuttrc"
    rc.write_text(
        f'set folder="imap://{user}@127.0.0.1:{server.port}/"\n'
        f'set imap_pass="{PASSWORD}"\n'
        'set spoolfile="+INBOX"\nset record="+Sent"\nset postponed="+Drafts"\n'
        'set trash="+Trash"\n'
        "set ssl_starttls=no\nset ssl_force_tls=no\n"
        f'set sendmail="{shutil.which("true")}"\n'
        f'set editor="{shutil.which("true")}"\n'
        "set abort_unmodified=no\nset fast_reply=yes\nset include=yes\n"
        "set copy=yes\nset confirmappend=no\nset confirmcreate=no\n"
        "set postpone=yes\nset recall=no\nset delete=yes\nset move=no\nset resolve=no\n"
        'set from="alice@example.org"\nset use_from=yes\n'
        "set sort=date\nset mail_check=1\nset imap_keepalive=30\n"
        'set header_cache=""\nset message_cachedir=""\nset wait_key=no\n'
    )
    pane = Pane([neomutt, "-n", "-F", str(rc)], tmp_path)
    try:
        pane.wait_for("Lunch")
        pane.wait_for("News")
        # Reply to the first message (Lunch, the oldest): Fcc goes to Sent.
        pane.keys("r")
        pane.wait_for("y:Send")
        pane.keys("y")
        wait_until("sent", lambda: bool(backend.uids(USER, "Sent")), pane)
        pane.wait_for(" 1 r ")
        # A new message, postponed: it goes to Drafts.
        pane.keys("m")
        pane.wait_for("To:")
        pane.keys("bob@example.org", "Enter")
        pane.wait_for("Subject:")
        pane.keys("Plans", "Enter")
        pane.wait_for("y:Send")
        pane.keys("P")
        wait_until("postponed", lambda: bool(backend.uids(USER, "Drafts")), pane)
        # Flag Lunch, then save it to a folder neomutt creates.
        pane.keys("F")
        pane.keys("s")
        pane.wait_for("Save to mailbox")
        pane.keys("C-u", "=Filed", "Enter")
        wait_until("filed", lambda: "Filed" in folders(backend), pane)
        # Delete News: with `trash` set it goes to Trash on sync.
        pane.keys("j")
        pane.keys("d")
        pane.keys("$")
        wait_until("synced", lambda: not backend.uids(USER, "INBOX"), pane)
        pane.keys("q")
    finally:
        pane.close()
    assert subjects(backend, "Sent") == ["Re: Lunch"]
    assert subjects(backend, "Drafts") == ["Plans"]
    assert subjects(backend, "Filed") == ["Lunch"]
    assert "\\Flagged" in backend.flags(USER, "Filed", 1)
    assert subjects(backend, "Trash") == ["News"]
    assert backend.uids(USER, "INBOX") == []
