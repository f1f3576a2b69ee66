"""Everything a relay wrote during an exchange, against what docs/relay-api.md says it keeps.

A relay at its default log level serves alice, bob and carol's gateways (processes);
alice sends one message to bob and carol; carol reads hers (a tombstone), bob's waits
on the relay. Then every table, column and row, every file name and time under the
relay's home and every log line are compared with the section "What a relay operator
sees" and the "Logs" table: nothing else appears, no address, no canary, no exact time.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import sqlite3
from pathlib import Path

import pytest

from tests.bubble_processes import DOMAIN, Bubble
from tests.integration.test_end_to_end import compose, submit, wait_for_messages
from tests.integration.test_relay_failover import outbox_size, wait_for

pytestmark = pytest.mark.integration

DOC = (Path(__file__).parents[2] / "docs" / "relay-api.md").read_text(encoding="utf-8")
HOUR = 3600
_NOATIME = getattr(os, "O_NOATIME", 0)
_FILE_NAMES = [
    re.compile(pattern) for pattern in (
        r"relay\.db", r"relay\.db-wal", r"relay\.db-shm", r"envelopes",
        r"envelopes/[0-9a-f]{2}", r"envelopes/[0-9a-f]{2}/[0-9a-f]{32}",
    )
]
_LOG_LINE = re.compile(
    r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|WARNING|ERROR) sealgate\.relay(\.\w+)?: "
    r"event=(\w+)( \w+=\S+)*"
)


def _section(title: str) -> str:
    start = DOC.index(f"\n## {title}\n")
    end = DOC.find("\n## ", start + 1)
    return DOC[start:end]


def documented_columns() -> dict[str, set[str]]:
    """table -> columns, from the table in "What a relay operator sees"."""
    rows = re.findall(r"^\| `(\w+)` \| (`.+`) \|$", _section("What a relay operator sees"),
                      re.MULTILINE)
    return {table: set(re.findall(r"`(\w+)`", columns)) for table, columns in rows}


def documented_events() -> set[str]:
    return set(re.findall(r"event=(\w+)", _section("Logs")))


def _read(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY | _NOATIME)  # reading must not change what it checks
    with os.fdopen(fd, "rb") as file:
        return file.read()


def test_a_relay_keeps_only_what_its_operator_guide_lists(tmp_path: Path) -> None:
    bubble = Bubble(tmp_path, relay_log_level="INFO")
    try:
        bubble.init()
        for user in ("alice", "bob", "carol"):
            bubble.add_account(user, f"{user}-{secrets.token_hex(4)}")
        bubble.start_gateway("alice", "bob", "carol")
        alice, bob, carol = (bubble.accounts[u] for u in ("alice", "bob", "carol"))
        canary = "canary-" + secrets.token_hex(8)
        message = compose(alice, bob.address, canary, f"subject {canary}")
        message.replace_header("Cc", carol.address)
        assert submit(alice, message) == {}
        wait_for(lambda: outbox_size(alice) == 0, 30, "both envelopes deposited")
        assert len(wait_for_messages(carol, token=canary, timeout=30)) == 1

        home = bubble.relay_home
        # Times first (reading the database would set its access time).
        stats = {path.relative_to(home).as_posix(): path.stat()
                 for path in sorted(home.rglob("*"))}
        copy = tmp_path / "relay-copy"
        copy.mkdir()
        for name in ("relay.db", "relay.db-wal"):
            if (home / name).exists():
                (copy / name).write_bytes(_read(home / name))
        contents = {name: _read(home / name) for name, st in stats.items()
                    if (home / name).is_file()}
        log = bubble.log_text("relay")
    finally:
        bubble.kill_all()

    # File names and times.
    for name, st in stats.items():
        assert any(p.fullmatch(name) for p in _FILE_NAMES), name
        if name != "relay.db-shm":
            assert int(st.st_mtime) % HOUR == 0, (name, st.st_mtime)
        if name.count("/") == 2:  # an envelope file (listing a directory sets its atime)
            assert int(st.st_atime) % HOUR == 0, (name, st.st_atime)
    envelope_files = [n for n in stats if n.count("/") == 2]
    assert len(envelope_files) == 1  # bob's, waiting; carol's was fetched and removed

    # Tables, columns, rows.
    db = sqlite3.connect(copy / "relay.db")
    try:
        tables = {name for (name,) in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        columns = {table: {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
                   for table in tables}
        assert columns == documented_columns()
        rows = {table: db.execute(f"SELECT * FROM {table}").fetchall()  # noqa: S608 - names
                for table in tables}  # from sqlite_master
        times = {("envelopes", "received"), ("tombstones", "hour")}
        for table, column in times:
            for (value,) in db.execute(f"SELECT {column} FROM {table}"):  # noqa: S608
                assert value % HOUR == 0, (table, column, value)
        assert [r[0] for r in db.execute("SELECT reason FROM tombstones")] == ["delivered"]
        ids = [row[0].hex() for row in db.execute("SELECT envelope_id FROM envelopes")]
        ids += [row[0].hex() for row in db.execute("SELECT envelope_id FROM tombstones")]
        ids += [row[0].hex() for row in db.execute("SELECT mailbox_id FROM envelopes")]
    finally:
        db.close()
    assert (len(rows["envelopes"]), len(rows["tombstones"])) == (1, 1)
    assert len(rows["directory_records"]) == 3 and rows["gateway_revocations"] == []

    # No address, domain or canary anywhere: rows, files, logs.
    needles = [canary.encode(), DOMAIN.encode(), b"alice", b"carol"]
    for name, data in contents.items():
        for needle in needles:
            assert needle not in data, (name, needle)
    for table, table_rows in rows.items():
        for row in table_rows:
            for value in row:
                data = value if isinstance(value, bytes) else str(value).encode()
                assert not any(needle in data for needle in needles), (table, value)

    # Log lines: only the documented events, no id (whole or its first 8 digits).
    events = documented_events()
    lines = [line for line in log.splitlines() if line.strip()]
    assert lines
    for line in lines:
        if line.startswith("relay listening on http://127.0.0.1:"):
            continue  # the command's own start-up line on stdout
        found = _LOG_LINE.fullmatch(line)
        assert found, line
        assert found.group(3) in events, line
        assert found.group(3) != "request", line  # per-request lines are DEBUG only
        for identifier in ids:
            assert identifier[:8] not in line, line
        for needle in needles:
            assert needle.decode() not in line, line
    shutil.rmtree(copy)
