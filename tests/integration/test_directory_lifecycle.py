"""Rotation, revocation and two-step enrolment, driven through `sealgate` processes.

Each test runs a relay and gateways as separate processes and talks to them with
smtplib/imaplib, as an operator and the users would.
"""

from __future__ import annotations

import email
import email.policy
import json
import os
import secrets
import smtplib
import sqlite3
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

import pytest

from bridge.directory import lookup_id
from tests.bubble_processes import (
    DOMAIN,
    Account,
    Bubble,
    files_containing,
    free_port,
    sealgate,
)
from tests.integration.conftest import start_bubble
from tests.integration.test_cli import assert_one_line_error
from tests.integration.test_end_to_end import submit, wait_for_messages
from tests.integration.test_sender_authenticity import deposit_sealed

pytestmark = pytest.mark.integration

FAST_SYNC = ("directory_sync_interval = 0.3",)


def note(sender: Account, to: str, token: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender.address
    msg["To"] = to
    msg["Subject"] = f"note {token}"
    msg.set_content(f"token {token}\n")
    return msg


def wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.2)


def rcpt(sender: Account, to: str) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", sender.smtp_port, timeout=30) as smtp:
        smtp.starttls(context=sender.tls_context())
        smtp.login(sender.address, sender.password)
        smtp.mail(sender.address)
        return smtp.rcpt(to)


def mail_from(sender: Account) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", sender.smtp_port, timeout=30) as smtp:
        smtp.starttls(context=sender.tls_context())
        smtp.login(sender.address, sender.password)
        return smtp.mail(sender.address)


def outbox_size(account: Account) -> int:
    with sqlite3.connect(account.home / "gateway.db") as db:
        return int(db.execute("SELECT count(*) FROM outbox_item").fetchone()[0])


def subjects(bodies: list[bytes]) -> list[str]:
    return [str(email.message_from_bytes(b, policy=email.policy.default)["Subject"])
            for b in bodies]


def relay_record(bubble: Bubble, lookup_id: str) -> bytes:
    with urllib.request.urlopen(f"{bubble.relay_url}/v1/directory/{lookup_id}") as r:  # noqa: S310
        return bytes(r.read())


def put_record(bubble: Bubble, body: bytes) -> tuple[int, dict[str, str]]:
    lookup_id = json.loads(body)["lookup_id"]
    request = urllib.request.Request(  # noqa: S310
        f"{bubble.relay_url}/v1/directory/{lookup_id}", data=body, method="PUT",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request) as r:  # noqa: S310
            return r.status, {}
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def lookup_id_of(account: Account) -> str:
    directory_key = json.loads((account.home / "membership.json").read_text())["directory_key"]
    return lookup_id(bytes.fromhex(directory_key), account.address).hex()


def test_rotation_keeps_mail_flowing_and_old_mail_opening(tmp_path: Path) -> None:
    bubble = start_bubble(tmp_path, ("alice", "bob"), gateway_settings=FAST_SYNC)
    try:
        alice, bob = bubble.accounts["alice"], bubble.accounts["bob"]
        assert submit(alice, note(alice, bob.address, "before")) == {}
        assert subjects(wait_for_messages(bob, token="before")) == ["note before"]

        # In flight across both rotations: sealed to bob's old key, signed by alice's old key.
        assert bubble.stop_gateway("bob") == 0
        assert submit(alice, note(alice, bob.address, "inflight")) == {}
        wait_until(lambda: outbox_size(alice) == 0)

        for user, account in bubble.accounts.items():
            result = sealgate(
                "account", "rotate", account.address, "--gateway", account.home,
                "--bubble", bubble.admin,
                "--password-file", bubble.password_file(user, account.password),
            )
            assert "directory version 2" in result.stdout, result.stdout
        bubble.start_gateway("bob")

        got = wait_for_messages(bob, 2, token="")
        assert sorted(subjects(got)) == ["note before", "note inflight"]  # no notice
        # New keys both ways: alice signs with her new key (her next login unlocks it).
        assert submit(alice, note(alice, bob.address, "after")) == {}
        assert subjects(wait_for_messages(bob, token="after")) == ["note after"]
        assert submit(bob, note(bob, alice.address, "reply")) == {}
        assert subjects(wait_for_messages(alice, token="reply")) == ["note reply"]
        assert [s for s in subjects(wait_for_messages(bob, 3, timeout=1))
                if "could not be opened" in s] == []
        for name in ("alice", "bob"):
            log = bubble.log_text(name)
            assert "rejected" not in log and "Traceback" not in log
    finally:
        bubble.kill_all()


def test_revocation_refuses_rcpt_and_mail_signed_by_the_revoked_key(tmp_path: Path) -> None:
    bubble = start_bubble(tmp_path, ("alice", "bob"), gateway_settings=FAST_SYNC)
    try:
        alice, bob = bubble.accounts["alice"], bubble.accounts["bob"]
        assert rcpt(alice, bob.address)[0] == 250
        before = relay_record(bubble, lookup_id_of(bob))

        result = sealgate("account", "revoke", bob.address, "--bubble", bubble.admin,
                          "--relay", bubble.relay_url)
        assert "revoked" in result.stdout

        def refused() -> bool:
            return rcpt(alice, bob.address)[0] == 550

        wait_until(refused)  # alice's gateway syncs its directory replica
        code, reply = rcpt(alice, bob.address)
        assert code == 550 and reply.startswith(b"5.1.1") and b"revoked" in reply

        # bob's own gateway stops sending for him once its replica has the revocation...
        wait_until(lambda: mail_from(bob)[0] == 550)
        code, reply = mail_from(bob)
        assert reply.startswith(b"5.7.1") and b"revoked" in reply
        # ...and what bob's keys still sign (sealed past his gateway) is refused at alice's.
        deposit_sealed(bubble, bob, alice, [note(bob, alice.address, "from-revoked").as_bytes()])
        (notice,) = wait_for_messages(alice, 1)
        parsed = email.message_from_bytes(notice, policy=email.policy.default)
        assert parsed["Subject"] == "A sealed message could not be opened"
        assert b"from-revoked" not in notice
        assert "revoked" in parsed.get_body(("plain",)).get_content()
        assert "rejected: revoked-key" in bubble.log_text("alice")

        # The pre-revocation record, genuinely root-signed, cannot be put back.
        status, error = put_record(bubble, before)
        assert status == 409 and "newer version" in error["error"]
        assert rcpt(alice, bob.address)[0] == 550
        # No address reached the relay's disk or any process's log.
        assert files_containing([bubble.relay_home, bubble.root / "logs"],
                                [bob.address.encode(), b"bob@"]) == []
    finally:
        bubble.kill_all()


def test_revoked_gateway_credential_keeps_mail_queued(tmp_path: Path) -> None:
    bubble = start_bubble(tmp_path, ("alice", "bob"))
    try:
        alice, bob = bubble.accounts["alice"], bubble.accounts["bob"]
        result = sealgate("gateway", "revoke", "--bubble", bubble.admin,
                          "--gateway", alice.home, "--relay", bubble.relay_url)
        gateway_key = json.loads((alice.home / "membership.json").read_text())["gateway_seed"]
        assert "revoked" in result.stdout and gateway_key not in result.stdout

        assert submit(alice, note(alice, bob.address, "queued")) == {}  # 250: accepted
        wait_until(lambda: "403 gateway credential is revoked" in bubble.log_text("alice"))
        assert outbox_size(alice) == 1  # nothing acknowledged is lost
        assert wait_for_messages(bob, 1, timeout=1) == []
        # bob's gateway is not revoked and still delivers.
        assert submit(bob, note(bob, alice.address, "other way")) == {}
        assert subjects(wait_for_messages(alice, token="other way")) == ["note other way"]
        assert bubble.stop_gateway("alice") == 0
        assert outbox_size(alice) == 1
    finally:
        bubble.kill_all()


def test_two_step_enrolment_keeps_the_root_key_in_the_admin_home(tmp_path: Path) -> None:
    bubble = Bubble(tmp_path)
    try:
        bubble.init()
        alice = bubble.add_account("alice", "alice-" + secrets.token_hex(4))
        carol = bubble.enrol_two_step("carol", "carol-" + secrets.token_hex(4))
        bubble.start_gateway("alice", "carol")
        root_seed = (bubble.admin / "root.key").read_text().strip().encode()
        assert files_containing([carol.home], [root_seed]) == []
        assert (os.stat(carol.home / "membership.json").st_mode & 0o777) == 0o600

        assert submit(alice, note(alice, carol.address, "hello carol")) == {}
        assert subjects(wait_for_messages(carol, token="hello carol")) == ["note hello carol"]
        assert submit(carol, note(carol, alice.address, "hello alice")) == {}
        assert subjects(wait_for_messages(alice, token="hello alice")) == ["note hello alice"]
        assert "Traceback" not in bubble.log_text("carol")
    finally:
        bubble.kill_all()


def test_signed_files_for_another_request_or_altered_are_refused(tmp_path: Path) -> None:
    bubble = Bubble(tmp_path)
    try:
        bubble.init()
        gw, other = tmp_path / "gw-dave", tmp_path / "gw-erin"
        password = bubble.password_file("dave", "dave-" + secrets.token_hex(4))
        for user, home in (("dave", gw), ("erin", other)):
            sealgate("account", "request", f"{user}@{DOMAIN}", "--gateway", home,
                     "--relay", bubble.relay_url, "--password-file", password,
                     "--out", tmp_path / f"{user}.req")
        request = json.loads((tmp_path / "dave.req").read_text())
        assert set(request) >= {"address", "keys", "gateway_key", "request_id"}
        assert "seed" not in (tmp_path / "dave.req").read_text()

        for user in ("dave", "erin"):
            sealgate("bubble", "sign", tmp_path / f"{user}.req", "--bubble", bubble.admin,
                     "--out", tmp_path / f"{user}.signed")
            assert (os.stat(tmp_path / f"{user}.signed").st_mode & 0o777) == 0o600
        assert_one_line_error(
            sealgate("account", "import", tmp_path / "erin.signed", "--gateway", gw, check=False),
            "which this gateway has not made",
        )
        signed = json.loads((tmp_path / "dave.signed").read_text())
        for field, value in (("relays", ["http://127.0.0.1:1"]), ("domain", "evil.example")):
            altered = dict(signed, **{field: value})
            (tmp_path / "altered.signed").write_text(json.dumps(altered))
            assert_one_line_error(
                sealgate("account", "import", tmp_path / "altered.signed", "--gateway", gw,
                         check=False),
                "not signed by the root it names",
            )
        (tmp_path / "garbage.signed").write_text("{not json")
        assert_one_line_error(
            sealgate("account", "import", tmp_path / "garbage.signed", "--gateway", gw,
                     check=False),
            "is not a signed enrolment file",
        )
        foreign = tmp_path / "foreign-admin"
        sealgate("bubble", "init", "--home", foreign, "--domain", DOMAIN)
        assert_one_line_error(
            sealgate("account", "import", tmp_path / "dave.signed", "--gateway", gw,
                     "--trust-root", foreign / "root.pub", check=False),
            "another bubble's root",
        )
        result = sealgate("account", "import", tmp_path / "dave.signed", "--gateway", gw)
        assert f"dave@{DOMAIN} added" in result.stdout
        assert_one_line_error(  # a signed file is used once
            sealgate("account", "import", tmp_path / "dave.signed", "--gateway", gw, check=False),
            "has imported already",
        )
    finally:
        bubble.kill_all()


def test_directory_commands_fail_with_one_line(tmp_path: Path) -> None:
    bubble = Bubble(tmp_path)
    try:
        bubble.init()
        alice = bubble.add_account("alice", "alice-" + secrets.token_hex(4))
        wrong = bubble.password_file("wrong", "not alice's password")
        admin, relay = bubble.admin, bubble.relay_url
        dead = f"http://127.0.0.1:{free_port()}"
        cases = [
            (("account", "rotate", alice.address, "--gateway", alice.home, "--bubble", admin,
              "--password-file", wrong), "wrong password"),
            (("account", "rotate", f"zoe@{DOMAIN}", "--gateway", alice.home, "--bubble", admin,
              "--password-file", wrong), "is not an account of this gateway"),
            (("account", "rotate", alice.address, "--gateway", tmp_path / "none",
              "--bubble", admin, "--password-file", wrong), "membership.json does not exist"),
            (("account", "revoke", f"zoe@{DOMAIN}", "--bubble", admin, "--relay", relay),
             "no directory record"),
            (("account", "revoke", alice.address, "--bubble", admin, "--relay", dead),
             "no relay answered"),
            (("account", "revoke", "alice@elsewhere.example", "--bubble", admin,
              "--relay", relay), "not in the bubble's domain"),
            (("gateway", "revoke", "--bubble", admin, "--gateway-key", "abc", "--relay", relay),
             "--gateway-key must be 64 hex digits"),
            (("gateway", "revoke", "--bubble", admin, "--gateway-key", "00" * 32,
              "--relay", dead), "cannot publish the revocation"),
            (("bubble", "sign", tmp_path / "missing.req", "--bubble", admin,
              "--out", tmp_path / "x"), "cannot read enrolment request"),
            (("account", "request", alice.address, "--gateway", alice.home, "--relay", relay,
              "--password-file", wrong, "--out", tmp_path / "r"), "already exists"),
        ]
        for args, fragment in cases:
            assert_one_line_error(sealgate(*args, check=False), fragment)
        # After a revocation, rotating is refused and the version is not reused.
        sealgate("account", "revoke", alice.address, "--bubble", admin, "--relay", relay)
        assert_one_line_error(
            sealgate("account", "rotate", alice.address, "--gateway", alice.home,
                     "--bubble", admin, "--password-file",
                     bubble.password_file("alice", alice.password), check=False),
            "is revoked",
        )
        out = sealgate("--help").stdout
        assert "account" in out
        for command, flag in (("rotate", "--password-file"), ("revoke", "--relay"),
                              ("request", "--out"), ("import", "--trust-root")):
            assert flag in sealgate("account", command, "--help").stdout
        assert "--out" in sealgate("bubble", "sign", "--help").stdout
        assert "--gateway-key" in sealgate("gateway", "revoke", "--help").stdout
    finally:
        bubble.kill_all()


def test_two_step_rotation_with_the_root_offline(tmp_path: Path) -> None:
    bubble = start_bubble(tmp_path, ("alice", "bob"), gateway_settings=FAST_SYNC)
    try:
        alice, bob = bubble.accounts["alice"], bubble.accounts["bob"]
        request, signed = tmp_path / "rotate.req", tmp_path / "rotate.signed"
        password = bubble.password_file("bob", bob.password)
        assert bubble.stop_gateway("bob") == 0
        assert submit(alice, note(alice, bob.address, "sealed to the old key")) == {}
        wait_until(lambda: outbox_size(alice) == 0)

        sealgate("account", "request", bob.address, "--gateway", bob.home, "--rotate",
                 "--password-file", password, "--out", request)
        stale = tmp_path / "stale.req"  # a second request made before the first is signed
        sealgate("account", "request", bob.address, "--gateway", bob.home, "--rotate",
                 "--password-file", password, "--out", stale)
        result = sealgate("bubble", "sign", request, "--bubble", bubble.admin, "--out", signed)
        assert "rotation of" in result.stdout and "version 2" in result.stdout
        assert_one_line_error(
            sealgate("bubble", "sign", stale, "--bubble", bubble.admin,
                     "--out", tmp_path / "stale.signed", check=False),
            "was signed since",
        )
        result = sealgate("account", "import", signed, "--gateway", bob.home)
        assert "rotated on" in result.stdout

        bubble.start_gateway("bob")
        assert subjects(wait_for_messages(bob, token="old key")) == ["note sealed to the old key"]
        assert submit(bob, note(bob, alice.address, "new key")) == {}
        assert subjects(wait_for_messages(alice, token="new key")) == ["note new key"]
        assert submit(alice, note(alice, bob.address, "to the new key")) == {}
        assert subjects(wait_for_messages(bob, token="to the new key")) == ["note to the new key"]
        assert "rejected" not in bubble.log_text("alice") + bubble.log_text("bob")
    finally:
        bubble.kill_all()
