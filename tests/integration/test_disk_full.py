"""Submission on a full disk, with real processes: alice's gateway home is a small
size-limited tmpfs (root only; the test is skipped, saying so, where mounting is not
allowed), filled up to the last byte while the gateway runs.

Messages acknowledged before the disk filled wait in the outbox (the relay is down
meanwhile); a message that cannot be written is answered `452 4.3.1` (temporary: the
client keeps it); once space frees, the same gateway process accepts it, and after the
relay is back every acknowledged message reaches bob, the store intact.
"""

from __future__ import annotations

import secrets
import smtplib
import sqlite3
from pathlib import Path

import pytest

from tests.bubble_processes import Account, Bubble
from tests.integration.test_end_to_end import wait_for_messages
from tests.tmpfs import small_tmpfs
from tests.unit.test_outbox_disk_full import fill

pytestmark = pytest.mark.integration


def message(sender: Account, to: Account, token: str, size: int = 0) -> bytes:
    body = "".join(f"line {n} of a large message\r\n" for n in range(size // 27))
    return (f"From: {sender.address}\r\nTo: {to.address}\r\nSubject: {token}\r\n\r\n"
            f"{token}\r\n{body}").encode()


def test_a_full_disk_answers_452_keeps_what_was_acknowledged_and_recovers(
    tmp_path: Path,
) -> None:
    bubble = Bubble(tmp_path)
    bubble.init()
    (tmp_path / "gateways").mkdir()
    with small_tmpfs(tmp_path / "gateways" / "alice", "8m") as home:
        try:
            alice = bubble.add_account("alice", "alice-" + secrets.token_hex(4))
            bob = bubble.add_account("bob", "bob-" + secrets.token_hex(4))
            bubble.start_gateway("alice", "bob")
            bubble.stop_relay()
            token = "full-" + secrets.token_hex(6)
            with smtplib.SMTP("127.0.0.1", alice.smtp_port, timeout=60) as smtp:
                smtp.starttls(context=alice.tls_context())
                smtp.login(alice.address, alice.password)
                for n in range(3):
                    smtp.sendmail(alice.address, [bob.address], message(alice, bob, f"{token}-{n}"))
                filler = fill(home)
                large = message(alice, bob, f"{token}-large", size=600_000)
                with pytest.raises(smtplib.SMTPDataError) as refused:
                    smtp.sendmail(alice.address, [bob.address], large)
                assert (refused.value.smtp_code, refused.value.smtp_error[:5]) == (452, b"4.3.1")
                assert smtp.noop()[0] == 250  # the session goes on
                filler.unlink()
                smtp.sendmail(alice.address, [bob.address], large)  # same process, no restart
            bubble.start_relay()
            assert len(wait_for_messages(bob, count=4, timeout=60, token=token)) == 4
            with sqlite3.connect(f"file:{home / 'gateway.db'}?mode=ro", uri=True) as db:
                assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        finally:
            bubble.kill_all()
