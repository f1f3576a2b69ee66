"""`sealgate migrate imap` from a real Dovecot into a serving gateway, seen through its IMAP.

Dovecot (tests/dovecot.py) holds several folders seeded by IMAP APPEND: special-use
ones under other names, a hierarchy with a non-ASCII name, flags, keywords and
internal dates. The migration is killed part-way and resumed with --delete-source.
"""

from __future__ import annotations

import asyncio
import dataclasses
import imaplib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.cli import main as cli_main
from gateway.migrate.errors import SourceError
from gateway.migrate.imap import ImapSource
from gateway.migrate.settings import MigrateSettings
from gateway.tls import ensure_certificate
from tests.bubble_processes import Bubble, files_containing, free_port, sealgate
from tests.dovecot import Dovecot, make_root, missing
from tests.integration.conftest import start_bubble
from tests.integration.test_migrate_files import assert_migrated, imported_rows, wait_for_view
from tests.migrate_mail import Legacy, corpus, imap_login

pytestmark = pytest.mark.integration

PASSWORD = "legacy-password-1"
TEMPLATE = "template"  # seeded once; each test migrates a copy of its own
# Dovecot's folder (wire name) -> (the bubble's folder as its IMAP lists it, how many)
FOLDERS = {
    "INBOX": ("INBOX", 130),
    "Gesendet": ("Sent", 40),  # \Sent
    "Work.Projekt &AMQ-": ("Work/Projekt &AMQ-", 30),  # "Work/Projekt Ä"
    "Spam": ("Junk", 15),  # \Junk
    "Entw&APw-rfe": ("Drafts", 10),  # "Entwürfe", \Drafts
}
TOTAL = sum(count for _, count in FOLDERS.values())  # 225


@dataclass
class LegacyServer:
    dovecot: Dovecot
    cert: Path
    password_file: Path
    mails: dict[str, list[Legacy]]
    canary: str
    user: str = TEMPLATE


def legacy_imap(server: Dovecot, user: str) -> imaplib.IMAP4:
    imap = imaplib.IMAP4("127.0.0.1", server.port, timeout=30)
    imap.login(user, PASSWORD)
    return imap


def seed(server: Dovecot, canary: str) -> dict[str, list[Legacy]]:
    mails: dict[str, list[Legacy]] = {}
    start = 0
    imap = legacy_imap(server, TEMPLATE)
    try:
        for name, (_, count) in FOLDERS.items():
            if name != "INBOX":
                assert imap.create(f'"{name}"')[0] == "OK"
            mails[name] = corpus(canary, count, start)
            start += count
            for mail in mails[name]:
                flags = "(" + " ".join(sorted(mail.flags)) + ")"
                when = imaplib.Time2Internaldate(mail.date)
                typ, said = imap.append(f'"{name}"', flags, when, mail.message)
                assert typ == "OK", said
    finally:
        imap.logout()
    return mails


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LegacyServer]:
    why = missing()
    if why is not None:
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    tmp = tmp_path_factory.mktemp("legacy")
    cert, key = ensure_certificate(tmp / "tls", "localhost")
    users = {TEMPLATE: PASSWORD} | {f"user{n}": PASSWORD for n in range(16)}
    server = Dovecot(make_root(), users, tls=(cert, key))
    server.start()
    try:
        canary = "canary" + secrets.token_hex(6)
        password_file = tmp / "legacy.password"
        password_file.write_text(PASSWORD + "\n")
        yield LegacyServer(server, cert, password_file, seed(server, canary), canary)
    finally:
        server.remove()


_clones = iter(range(16))


@pytest.fixture
def legacy(seeded: LegacyServer) -> LegacyServer:
    """The seeded mailbox, copied to a user of this test's own."""
    user = f"user{next(_clones)}"
    seeded.dovecot.clone_user(TEMPLATE, user)
    return dataclasses.replace(seeded, user=user)


@pytest.fixture
def lone(tmp_path: Path) -> Iterator[Bubble]:
    b = start_bubble(tmp_path / "bubble", ("alice",))
    try:
        yield b
    finally:
        b.kill_all()


def migrate_args(bubble: Bubble, legacy: LegacyServer, *extra: str | Path) -> list[str]:
    alice = bubble.accounts["alice"]
    return [str(a) for a in (
        "migrate", "imap", "--host", "127.0.0.1", "--port", legacy.dovecot.port, "--plain",
        "--user", legacy.user, "--password-file", legacy.password_file, "--account", alice.address,
        "--gateway", alice.home, "--json", *extra)]


def expected(legacy: LegacyServer) -> dict[int, tuple[str, Legacy]]:
    return {mail.seq: (FOLDERS[name][0], mail)
            for name, mails in legacy.mails.items() for mail in mails}


def legacy_counts(legacy: LegacyServer) -> dict[str, int]:
    imap = legacy_imap(legacy.dovecot, legacy.user)
    try:
        counts = {}
        for name in FOLDERS:
            typ, data = imap.status(f'"{name}"', "(MESSAGES)")
            assert typ == "OK"
            counts[name] = int(data[0].rsplit(b" ", 1)[1].rstrip(b")"))
        return counts
    finally:
        imap.logout()


def run_until_rows(args: list[str], gateway: Path, rows: int) -> subprocess.Popen[bytes]:
    """Start a migration and return it once the gateway store holds `rows` imports."""
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while imported_rows(gateway) < rows and time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the migration ended early: {proc.communicate()}")
        time.sleep(0.02)
    return proc


def paced(tmp_path: Path, per_second: int = 150) -> Path:
    config = tmp_path / "migrate.toml"
    config.write_text(f"batch_messages = 10\nmax_messages_per_second = {per_second}\n"
                      "imap_retry_delay = 0.1\n")
    return config


def test_imap_migration_killed_resumed_verified_and_deleted_at_the_source(
    lone: Bubble, legacy: LegacyServer, tmp_path: Path
) -> None:
    alice = lone.accounts["alice"]
    imap_login(alice).logout()  # unlocked: the serving gateway files imports as they come

    first = run_until_rows(migrate_args(lone, legacy, "--config", paced(tmp_path)),
                           alice.home, 40)
    first.send_signal(signal.SIGKILL)
    first.communicate()
    assert 40 <= imported_rows(alice.home) < TOTAL

    result = sealgate(*migrate_args(lone, legacy, "--delete-source"))
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert any(f["resumed_after"] > 0 for f in report["folders"])
    assert sum(f["deleted"] for f in report["folders"]) == TOTAL
    assert {f["source"]: f["target"] for f in report["folders"]} == {
        "INBOX": "INBOX", "Gesendet": "Sent", "Work/Projekt Ä": "Work/Projekt Ä",
        "Spam": "Junk", "Entwürfe": "Drafts"}

    assert_migrated(wait_for_view(lone, TOTAL), expected(legacy))
    assert legacy_counts(legacy) == dict.fromkeys(FOLDERS, 0)
    assert imported_rows(alice.home) == TOTAL
    assert files_containing(lone.state_dirs, [legacy.canary.encode()]) == []


def folder_count(legacy: LegacyServer, wire_name: str) -> int:
    imap = legacy_imap(legacy.dovecot, legacy.user)
    try:
        typ, data = imap.status(f'"{wire_name}"', "(MESSAGES)")
        assert typ == "OK", data
        return int(data[0].rsplit(b" ", 1)[1].rstrip(b")"))
    finally:
        imap.logout()


def test_delete_source_moves_verified_mail_to_the_folder_the_operator_names(
    lone: Bubble, legacy: LegacyServer
) -> None:
    """Dovecot has MOVE: the verified messages go to "Übertragen/2026" (created, its
    name in modified UTF-7), which a later run does not take for a source folder."""
    report = json.loads(sealgate(*migrate_args(
        lone, legacy, "--folders", "Spam", "Entwürfe", "--delete-source",
        "--move-to", "Übertragen/2026")).stdout)
    assert report["ok"] is True
    assert {(f["source"], f["deleted"], f["moved_to"]) for f in report["folders"]} == {
        ("Spam", 15, "Übertragen/2026"), ("Entwürfe", 10, "Übertragen/2026")}
    counts = legacy_counts(legacy)
    assert (counts["Spam"], counts["Entw&APw-rfe"], counts["INBOX"]) == (0, 0, 130)
    assert folder_count(legacy, "&ANw-bertragen.2026") == 25

    table = sealgate(*migrate_args(lone, legacy, "--dry-run", "--delete-source",
                                   "--move-to", "Übertragen/2026")).stdout
    sources = [f["source"] for f in json.loads(table)["folders"]]
    assert "Übertragen/2026" not in sources and "INBOX" in sources
    assert imported_rows(lone.accounts["alice"].home) == 25
    assert legacy_counts(legacy) == counts  # a dry run deletes nothing, --delete-source or not


def test_without_move_the_named_folder_gets_a_copy_then_the_originals_are_expunged(
    legacy: LegacyServer,
) -> None:
    """The path for a server without MOVE (UID COPY, \\Deleted, UID EXPUNGE), run
    against Dovecot with MOVE struck from the capabilities the client saw."""

    async def move_three() -> None:
        source = ImapSource(host="127.0.0.1", port=legacy.dovecot.port, security="plain",
                            user=legacy.user, password=PASSWORD, settings=MigrateSettings(),
                            move_to="Kopiert")
        try:
            spam = next(f for f in await source.folders() if f.display == "Spam")
            source._client.protocol.capabilities.discard("MOVE")
            assert await source.delete(spam, [2, 3, 5]) == "Kopiert"
        finally:
            await source.close()

    asyncio.run(move_three())
    assert (folder_count(legacy, "Spam"), folder_count(legacy, "Kopiert")) == (12, 3)
    imap = legacy_imap(legacy.dovecot, legacy.user)
    try:
        imap.select('"Spam"', readonly=True)
        typ, data = imap.uid("SEARCH", "ALL")
        assert typ == "OK"
        assert 2 not in map(int, data[0].split()) and 4 in map(int, data[0].split())
    finally:
        imap.logout()


def test_a_server_without_uidplus_is_never_expunged_from(legacy: LegacyServer) -> None:
    """A plain EXPUNGE could remove mail the migration never read: without UIDPLUS
    (struck from what the client saw of Dovecot's), nothing is marked or removed."""

    async def try_to_delete() -> None:
        source = ImapSource(host="127.0.0.1", port=legacy.dovecot.port, security="plain",
                            user=legacy.user, password=PASSWORD, settings=MigrateSettings())
        try:
            spam = next(f for f in await source.folders() if f.display == "Spam")
            source._client.protocol.capabilities.discard("UIDPLUS")
            with pytest.raises(SourceError, match="lacks UIDPLUS: nothing deleted from it"):
                await source.delete(spam, [2, 3, 5])
        finally:
            await source.close()

    asyncio.run(try_to_delete())
    imap = legacy_imap(legacy.dovecot, legacy.user)
    try:
        imap.select('"Spam"', readonly=True)
        assert imap.uid("SEARCH", "DELETED") == ("OK", [b""])
    finally:
        imap.logout()
    assert folder_count(legacy, "Spam") == 15


def test_a_dropped_connection_is_retried_and_a_new_uidvalidity_never_duplicates(
    lone: Bubble, legacy: LegacyServer, tmp_path: Path
) -> None:
    alice = lone.accounts["alice"]
    # 50 msg/s: the 195 messages after the first 30 take about 4 s, so the kick lands
    # mid-run however slowly `doveadm` starts.
    proc = run_until_rows(migrate_args(lone, legacy, "--config", paced(tmp_path, 50)),
                          alice.home, 30)
    legacy.dovecot.kick(legacy.user)  # the server drops the connection mid-folder
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert b"connection lost" in err  # and it went on after reconnecting
    assert json.loads(out)["ok"] is True
    assert imported_rows(alice.home) == TOTAL

    # The folder is recreated at the source (a new UIDVALIDITY), with one message more.
    imap = legacy_imap(legacy.dovecot, legacy.user)
    try:
        assert imap.delete('"Spam"')[0] == "OK"
        assert imap.create('"Spam"')[0] == "OK"
        for mail in [*legacy.mails["Spam"], *corpus(legacy.canary, 1, 500)]:
            imap.append('"Spam"', "()", imaplib.Time2Internaldate(mail.date), mail.message)
    finally:
        imap.logout()
    again = json.loads(sealgate(*migrate_args(lone, legacy, "--folders", "Spam")).stdout)
    (spam,) = again["folders"]
    assert (spam["uid_validity_changed"], spam["imported"], spam["present"]) == (True, 1, 15)
    assert imported_rows(alice.home) == TOTAL + 1


def test_a_message_the_server_cannot_return_is_listed_and_read_on_a_later_run(
    lone: Bubble, legacy: LegacyServer, tmp_path: Path
) -> None:
    """Dovecot cannot read one message file of Spam: it fails the FETCH of its batch.
    The others are read one by one and imported; that one is listed and the folder
    not verified (nor deleted). Once the file is readable again, a second run imports it."""
    spam_dir = legacy.dovecot.root / "mail" / legacy.user / "Spam" / "cur"
    broken = sorted(spam_dir.iterdir())[6]
    broken.chmod(0)
    quick = tmp_path / "quick-retry.toml"
    quick.write_text("imap_retry_delay = 0.05\n")  # it hangs up on each retry of the batch
    args = migrate_args(lone, legacy, "--folders", "Spam", "--delete-source", "--config", quick)
    first = sealgate(*args, check=False)
    assert first.returncode == 3, first.stderr
    (folder,) = json.loads(first.stdout)["folders"]
    (problem,) = folder["problems"]
    assert problem["problem"].startswith("the server could not return it (")
    assert (folder["imported"], folder["verified"], folder["deleted"]) == (14, False, 0)
    assert legacy_counts(legacy)["Spam"] == 15

    broken.chmod(0o600)
    (again,) = json.loads(sealgate(*args).stdout)["folders"]
    assert (again["imported"], again["present"], again["verified"]) == (1, 14, True)
    assert again["resumed_after"] == problem["uid"] - 1
    assert legacy_counts(legacy)["Spam"] == 0
    assert imported_rows(lone.accounts["alice"].home) == 15


def test_when_the_retries_run_out_the_run_stops_in_one_line_and_the_next_resumes(
    lone: Bubble, legacy: LegacyServer, tmp_path: Path
) -> None:
    config = tmp_path / "no-retry.toml"
    # Paced so that 100 messages take 5 s: the kick lands mid-run however slowly
    # `doveadm` starts (at 150 msg/s the run could end before it, and exit 0).
    config.write_text("batch_messages = 10\nmax_messages_per_second = 20\nimap_retries = 0\n")
    args = migrate_args(lone, legacy, "--folders", "INBOX", "--config", config)
    proc = run_until_rows(args, lone.accounts["alice"].home, 30)
    legacy.dovecot.kick(legacy.user)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    (line,) = err.decode().strip().splitlines()[-1:]
    assert line.startswith("sealgate: error: connection to 127.0.0.1:") and \
        line.endswith("0 retries failed; run again to resume"), err
    stored = imported_rows(lone.accounts["alice"].home)
    (inbox,) = json.loads(sealgate(*migrate_args(lone, legacy, "--folders", "INBOX")).stdout)[
        "folders"]
    assert inbox["resumed_after"] >= 30 and inbox["verified"] is True
    assert inbox["imported"] == 130 - stored
    assert imported_rows(lone.accounts["alice"].home) == 130


def test_credentials_and_tls_problems_are_one_line_errors(
    lone: Bubble, legacy: LegacyServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """`sealgate` in this process (its startup is what costs here), over real sockets."""

    def run(*args: str | Path) -> tuple[int, str, str]:
        argv = [a for a in migrate_args(lone, legacy, "--dry-run") if a != "--plain"]
        code = cli_main([*argv, *map(str, args)])
        out, err = capsys.readouterr()
        return code, out, err

    wrong = legacy.password_file.with_name("wrong.password")
    wrong.write_text("not-the-password\n")
    for args, message in (
        (("--plain", "--password-file", wrong), "refused the login of user"),
        (("--starttls",), "is not trusted"),  # a self-signed certificate
        (("--tls", "--port", legacy.dovecot.tls_port), "is not trusted"),
        (("--starttls", "--ca-file", legacy.dovecot.root), "cannot read --ca-file"),
        (("--plain", "--port", free_port()), "cannot connect to 127.0.0.1"),
    ):
        code, _, err = run(*args)
        assert code == 1, err
        assert err.startswith("sealgate: error: ") and message in err, err
        assert len(err.strip().splitlines()) == 1

    for args in (("--starttls", "--ca-file", legacy.cert), ("--starttls", "--insecure"),
                 ("--tls", "--port", legacy.dovecot.tls_port, "--ca-file", legacy.cert)):
        code, out, err = run(*args, "--folders", "Spam")
        assert code == 0, err
        assert [f["imported"] for f in json.loads(out)["folders"]] == [15]
    assert imported_rows(lone.accounts["alice"].home) == 0  # dry runs wrote nothing


def test_batch_mode_migrates_accounts_in_parallel_and_isolates_a_failed_login(
    seeded: LegacyServer, tmp_path: Path
) -> None:
    """Three accounts on one gateway from one CSV file: carol's legacy password is
    wrong, so hers fails with its own line while alice's and bob's migrate and verify."""
    bubble = Bubble(tmp_path / "bubble")
    try:
        bubble.init()
        for user in ("alice", "bob", "carol"):
            bubble.add_account(user, f"{user}-{secrets.token_hex(4)}", gateway="alice")
        bubble.start_gateway("alice")
        home = bubble.accounts["alice"].home
        users = {}
        for user in ("alice", "bob", "carol"):
            users[user] = f"user{next(_clones)}"
            seeded.dovecot.clone_user(TEMPLATE, users[user])
        secrets_dir = tmp_path / "secrets"
        secrets_dir.mkdir()
        (secrets_dir / "good.password").write_text(PASSWORD + "\n")
        (secrets_dir / "carol.password").write_text("not-the-password-9\n")
        csv_file = tmp_path / "accounts.csv"
        csv_file.write_text(
            "user,password_file,account\n"
            f"{users['alice']},secrets/good.password,{bubble.accounts['alice'].address}\n"
            f"{users['carol']},secrets/carol.password,{bubble.accounts['carol'].address}\n"
            f"{users['bob']},{secrets_dir / 'good.password'},{bubble.accounts['bob'].address}\n"
        )
        result = sealgate(
            "migrate", "imap", "--accounts", csv_file, "--parallel", "2",
            "--host", "127.0.0.1", "--port", seeded.dovecot.port, "--plain",
            "--gateway", home, "--json", check=False,
        )
        assert result.returncode == 3, result.stderr
        report = json.loads(result.stdout)
        assert report["ok"] is False
        by_account = {a["account"].split("@")[0]: a for a in report["accounts"]}
        assert [a["row"] for a in report["accounts"]] == [2, 3, 4]
        for user in ("alice", "bob"):
            assert by_account[user]["ok"] is True, by_account[user]
            assert by_account[user]["error"] is None
            assert sum(f["imported"] for f in by_account[user]["folders"]) == TOTAL
            assert all(f["verified"] for f in by_account[user]["folders"])
        carol = by_account["carol"]
        assert carol["ok"] is False and carol["folders"] == []
        assert "refused the login of" in carol["error"]
        assert imported_rows(home) == 2 * TOTAL

        table = sealgate(
            "migrate", "imap", "--accounts", csv_file, "--host", "127.0.0.1",
            "--port", seeded.dovecot.port, "--plain", "--gateway", home, check=False,
        )
        assert table.returncode == 3
        lines = table.stdout.splitlines()
        carol_row = next(line for line in lines if line.startswith("3 "))
        assert carol_row.split()[1:] == [bubble.accounts["carol"].address, "0", "0", "0", "0",
                                         "0", "FAILED"]
        assert any("refused the login of" in line for line in lines)
        assert lines[-1].startswith("1 of 3 account(s) FAILED")
        assert imported_rows(home) == 2 * TOTAL  # the second run found everything in place

        alice = bubble.accounts["alice"]
        imap_login(alice).logout()  # unlocked: the gateway files alice's imports
        assert_migrated(wait_for_view(bubble, TOTAL), expected(seeded))
        assert files_containing(bubble.state_dirs, [seeded.canary.encode()]) == []
    finally:
        bubble.kill_all()


def test_batch_rows_name_their_own_gateways_and_a_wrong_one_fails_alone(
    seeded: LegacyServer, tmp_path: Path
) -> None:
    """dave's row names his own gateway (serving), erin's a directory that is no
    gateway; anna's row leaves the cell empty: --gateway's."""
    bubble = Bubble(tmp_path / "bubble")
    try:
        bubble.init()
        for user in ("anna", "dave"):
            bubble.add_account(user, f"{user}-{secrets.token_hex(4)}")
        bubble.start_gateway("dave")
        users = {}
        for user in ("anna", "dave", "erin"):
            users[user] = f"user{next(_clones)}"
            seeded.dovecot.clone_user(TEMPLATE, users[user])
        homes = {user: bubble.accounts[user].home for user in ("anna", "dave")}
        (tmp_path / "not-a-gateway").mkdir()
        csv_file = tmp_path / "accounts.csv"
        csv_file.write_text(
            "user,password_file,account,gateway\n"
            f"{users['anna']},{seeded.password_file},{bubble.accounts['anna'].address},\n"
            f"{users['dave']},{seeded.password_file},{bubble.accounts['dave'].address},"
            f"{homes['dave']}\n"
            f"{users['erin']},{seeded.password_file},erin@test.bubble,not-a-gateway\n"
        )
        result = sealgate(
            "migrate", "imap", "--accounts", csv_file, "--host", "127.0.0.1",
            "--port", seeded.dovecot.port, "--plain", "--gateway", homes["anna"],
            "--folders", "Spam", "--json", check=False,
        )
        assert result.returncode == 3, result.stderr
        anna, dave, erin = json.loads(result.stdout)["accounts"]
        assert (anna["gateway"], dave["gateway"]) == (str(homes["anna"]), str(homes["dave"]))
        for ok in (anna, dave):
            assert ok["ok"] is True, ok
            assert [f["imported"] for f in ok["folders"]] == [15]
        assert erin["ok"] is False and "is not a gateway state directory" in erin["error"]
        assert (imported_rows(homes["anna"]), imported_rows(homes["dave"])) == (15, 15)
    finally:
        bubble.kill_all()


def test_imap_messages_over_the_size_limit_are_listed_and_fail_the_folder(
    lone: Bubble, legacy: LegacyServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spam = legacy.mails["Spam"]
    sizes = sorted(len(mail.message) for mail in spam)
    limit = sizes[-3]  # the two largest are over it
    config = tmp_path / "limit.toml"
    config.write_text(f"max_message_bytes = {limit}\n")
    with pytest.raises(SystemExit) as exit_status:
        cli_main(migrate_args(lone, legacy, "--folders", "Spam", "--config", config))
    assert exit_status.value.code == 3
    (folder,) = json.loads(capsys.readouterr().out)["folders"]
    over = sorted(n + 1 for n, mail in enumerate(spam) if len(mail.message) > limit)
    assert len(over) == 2
    assert folder["problems"] == [{"uid": uid, "problem": "over the size limit"} for uid in over]
    assert (folder["imported"], folder["verified"]) == (len(spam) - 2, False)
    assert imported_rows(lone.accounts["alice"].home) == len(spam) - 2
