"""An operator's day with a small relay: separate processes, real SMTP and IMAP clients.

The relay's quota holds three envelopes. Bob's gateway is stopped while alice sends him
five messages, one after the other: the relay purges the two oldest to make room, alice's
gateway learns it from the relay's envelope status and puts a notice in her INBOX naming
each lost message (from her own sealed records), and when bob's gateway starts again the
three newest arrive.
"""

from __future__ import annotations

import email
import email.policy
import re
import time
import urllib.request
from email.message import EmailMessage
from pathlib import Path

import pytest

from bridge.envelope import MIN_BUCKET, OUTER_HEADER_LEN
from tests.bubble_processes import DOMAIN, Bubble, files_containing
from tests.integration.test_end_to_end import fetch_all, imap_login, submit

pytestmark = pytest.mark.integration

ENVELOPE_BYTES = OUTER_HEADER_LEN + MIN_BUCKET  # a short message fills the smallest bucket
DEPOSITED = re.compile(r"delivery: envelope [0-9a-f]{8} deposited$", re.MULTILINE)
SUBJECTS = [f"quarterly figures {n} zq{n}x" for n in range(1, 6)]


def wait_until(condition: object, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def subjects(messages: list[bytes]) -> list[str]:
    return [
        str(email.message_from_bytes(m, policy=email.policy.default)["Subject"]) for m in messages
    ]


def test_a_full_relay_purges_the_oldest_tells_the_sender_and_keeps_the_newest(
    tmp_path: Path,
) -> None:
    bubble = Bubble(
        tmp_path,
        relay_args=("--quota", f"{3 * ENVELOPE_BYTES}B", "--retention", "30d"),
        gateway_settings=("status_check_interval = 0.5",),
    )
    try:
        bubble.init()
        alice = bubble.add_account("alice", "alice-password-1234")
        bob = bubble.add_account("bob", "bob-password-12345")
        bubble.start_gateway("alice", "bob")
        assert bubble.stop_gateway("bob") == 0  # the recipient's gateway is down

        for n, subject in enumerate(SUBJECTS, start=1):
            msg = EmailMessage()
            msg["From"], msg["To"], msg["Subject"] = alice.address, bob.address, subject
            msg.set_content(f"Figures, part {n}.\n")
            assert submit(alice, msg) == {}
            # One deposit at a time, so that the relay's oldest is the first sent.
            wait_until(lambda n=n: len(DEPOSITED.findall(bubble.log_text("alice"))) == n,
                       f"deposit {n}")

        relay_files = [p for p in (bubble.relay_home / "envelopes").rglob("*") if p.is_file()]
        assert sum(p.stat().st_size for p in relay_files) == 3 * ENVELOPE_BYTES
        # The operator's metrics say the same.
        with urllib.request.urlopen(f"{bubble.relay_url}/metrics", timeout=10) as r:  # noqa: S310
            metrics = r.read().decode()
        assert 'sealgate_relay_purged_total{reason="quota"} 2.0' in metrics
        assert f"sealgate_relay_quota_bytes {float(3 * ENVELOPE_BYTES)}" in metrics
        assert f"sealgate_relay_stored_bytes {float(3 * ENVELOPE_BYTES)}" in metrics

        imap = imap_login(alice)
        try:
            def notices() -> list[bytes]:
                return [m for m in fetch_all(imap) if b"was not delivered" in m]

            wait_until(lambda: len(notices()) == 2, "alice's two notices")
            told = notices()
        finally:
            imap.logout()
        for notice, lost in zip(sorted(told, key=lambda m: SUBJECTS[0] not in m.decode()),
                                SUBJECTS[:2], strict=True):
            text = email.message_from_bytes(notice, policy=email.policy.default)
            assert text["Subject"] == "A message you sent was not delivered"
            assert text["From"] == f"Sealgate <postmaster@{DOMAIN}>"
            body = text.get_content()
            assert f"To:        {bob.address}" in body and f"Subject:   {lost}" in body
            assert "storage was full" in body
            assert all(other not in body for other in SUBJECTS if other != lost)

        bubble.start_gateway("bob")
        imap = imap_login(bob)
        try:
            wait_until(lambda: len(fetch_all(imap)) == 3, "bob's three newest messages")
            assert sorted(subjects(fetch_all(imap))) == sorted(SUBJECTS[2:])
        finally:
            imap.logout()

        # The subjects were never written anywhere in clear: not by the relay, nor in
        # alice's sealed notes, nor in any log.
        canaries = [s.split()[-1].encode() for s in SUBJECTS]
        assert files_containing(bubble.state_dirs, canaries) == []
        assert bubble.stop_all() == {"relay": 0, "alice": 0, "bob": 0}
    finally:
        bubble.kill_all()
