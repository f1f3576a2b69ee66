"""Source folders and messages as the migration reads them: names, flags, quoting."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bridge.settings import SettingsError, load_settings
from gateway.migrate.folders import Target, target_folder
from gateway.migrate.settings import MigrateSettings
from gateway.migrate.sources import MaildirSource, MboxSource

MBOX = (
    b"From a@legacy.example Tue Mar  5 10:11:12 2019\n"
    b"Subject: one\nStatus: RO\nX-Status: AF\nX-Keywords: $Work, Later\n\n"
    b">From the body\n>>From quoted once\nend\n\n"
    b"From a@legacy.example Wed Mar  6 10:11:12 2019\n"
    b"Subject: two\n\nplain\n"
)


def read_all(source, folder):
    async def go():
        return [m async for batch in source.read(folder, 0) for m in batch]
    return asyncio.run(go())


@pytest.mark.parametrize(("path", "attributes", "target"), [
    (["INBOX"], [], Target("INBOX", None)),
    (["Gesendete Objekte"], ["\\Sent"], Target("Sent", "\\Sent")),
    (["Sent Items"], [], Target("Sent", "\\Sent")),
    (["INBOX", "Spam"], [], Target("Junk", "\\Junk")),
    (["Papierkorb"], ["\\Trash"], Target("Trash", "\\Trash")),
    (["Deleted Items"], [], Target("Trash", "\\Trash")),
    (["Archiv"], ["\\Archive"], Target("Archive", "\\Archive")),
    (["Entwürfe"], ["\\Drafts"], Target("Drafts", "\\Drafts")),
    (["Projects", "Sent"], [], Target("Projects/Sent", None)),  # only top-level names
    (["a/b", "c"], [], Target("a_b/c", None)),
    (["[Gmail]", "All Mail"], ["\\All"], None),
])
def test_source_folders_map_to_bubble_folders(path, attributes, target):
    assert target_folder(path, attributes) == target


@pytest.mark.parametrize(("quoting", "body"), [
    ("mboxrd", b"From the body\n>From quoted once\nend\n"),
    ("mboxo", b"From the body\n>>From quoted once\nend\n"),
])
def test_mbox_unquotes_from_lines_and_reads_flags_and_dates(tmp_path: Path, quoting, body):
    path = tmp_path / "inbox.mbox"
    path.write_bytes(MBOX)
    source = MboxSource([path], folder=None, max_bytes=10_000, batch=1, quoting=quoting)
    (folder,) = asyncio.run(source.folders())
    assert (folder.target.name, folder.count) == ("INBOX", 2)
    first, second = read_all(source, folder)
    assert first.raw is not None and first.raw.endswith(b"\n\n" + body)
    assert first.flags == ("$Work", "Later", "\\Answered", "\\Flagged", "\\Seen")
    assert first.internal_date == datetime(2019, 3, 5, 10, 11, 12, tzinfo=UTC)
    assert (second.uid, second.flags, second.raw) == (2, (), b"Subject: two\n\nplain\n")


def test_mbox_folder_puts_every_file_into_one_named_folder(tmp_path: Path):
    for name in ("a.mbox", "inbox.mbox"):
        (tmp_path / name).write_bytes(MBOX)
    source = MboxSource(sorted(tmp_path.iterdir()), folder="Alt/2019", max_bytes=10_000,
                        batch=10)
    folders = asyncio.run(source.folders())
    assert [(f.display, f.target.name, f.count) for f in folders] == [
        (str(tmp_path / "a.mbox"), "Alt/2019", 2), (str(tmp_path / "inbox.mbox"), "Alt/2019", 2)]
    assert [m.uid for f in folders for m in read_all(source, f)] == [1, 2, 1, 2]


def test_maildir_flags_keywords_and_unreadable_sizes(tmp_path: Path):
    for sub in ("cur", "new", "tmp"):
        (tmp_path / sub).mkdir()
    (tmp_path / "dovecot-keywords").write_text("0 $Work\n1 Later\n")
    (tmp_path / "cur" / "1.a:2,FSb").write_bytes(b"Subject: a\n\nx\n")
    (tmp_path / "new" / "2.b").write_bytes(b"Subject: b\n\n" + b"y" * 100)
    source = MaildirSource(tmp_path, max_bytes=50, batch=10)
    (folder,) = asyncio.run(source.folders())
    first, second = read_all(source, folder)
    assert first.flags == ("Later", "\\Flagged", "\\Seen")
    assert (second.raw, second.problem) == (None, "over the size limit")


@pytest.mark.parametrize("values", [
    {"max_message_bytes": 0}, {"batch_messages": -1}, {"imap_timeout": 0},
    {"imap_retries": -1}, {"max_messages_per_second": -2}, {"parallel_accounts": 0},
    {"no_such": 1},
])
def test_bad_migrate_settings_are_refused(values):
    with pytest.raises(SettingsError):
        load_settings(MigrateSettings, values)
