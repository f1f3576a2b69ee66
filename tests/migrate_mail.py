"""Legacy mail for the migration tests: a corpus, mbox and Maildir writers, and the
gateway's IMAP view of what was migrated (read with imaplib, as a user would)."""

from __future__ import annotations

import imaplib
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

from tests.bubble_processes import Account

BASE_DATE = datetime(2015, 6, 1, 8, 0, 0, tzinfo=UTC)
_SEQ = re.compile(rb"seq-(\d+)-")


@dataclass(frozen=True)
class Legacy:
    seq: int
    message: bytes  # CRLF
    flags: frozenset[str]
    date: datetime


def corpus(canary: str, count: int, start: int = 0) -> list[Legacy]:
    """Messages with a unique `seq-N-` marker and `canary` in each body; non-ASCII
    subjects and text, a `From ` line in the body, an attachment every fifth, flags
    and a keyword on some, a Message-ID missing on some and repeated on others."""
    mails = []
    for seq in range(start, start + count):
        m = EmailMessage(policy=SMTP)
        m["From"] = "Ålder Sändare <old@legacy.example>"
        m["To"] = "alice@test.bubble"
        m["Subject"] = f"Grüße {canary} nr {seq} — 日本"
        m["Date"] = "Mon, 01 Jun 2015 08:00:00 +0000"
        if seq % 6:
            m["Message-ID"] = f"<{seq % 10}@legacy.example>"  # repeats: never a dedup key
        body = (f"Hallo seq-{seq}- {canary}\nFrom the legacy server, with Übermaß.\n"
                ">From an already quoted line\n")
        m.set_content(body)
        if seq % 5 == 0:
            m.add_attachment(os.urandom(3000) + canary.encode(), maintype="application",
                             subtype="octet-stream", filename=f"bericht-{seq}.bin")
        flags = set()
        if seq % 3 == 0:
            flags.add("\\Seen")
        if seq % 4 == 0:
            flags.add("\\Flagged")
        if seq % 7 == 0:
            flags.add("\\Answered")
        if seq % 5 == 0:
            flags.add("$Work")
        mails.append(Legacy(seq, m.as_bytes(), frozenset(flags),
                            BASE_DATE + timedelta(hours=seq, seconds=seq)))
    return mails


def write_mbox(path: Path, mails: list[Legacy]) -> None:
    """An mboxrd file: `From ` lines quoted with one more `>`, flags in Status/X-Status."""
    out = bytearray()
    for mail in mails:
        text = mail.message.replace(b"\r\n", b"\n")
        head, _, body = text.partition(b"\n\n")
        status = b"RO" if "\\Seen" in mail.flags else b"O"
        xstatus = (b"A" if "\\Answered" in mail.flags else b"") + (
            b"F" if "\\Flagged" in mail.flags else b"")
        head += b"\nStatus: " + status + b"\nX-Status: " + xstatus
        if "$Work" in mail.flags:
            head += b"\nX-Keywords: $Work"
        body = re.sub(rb"^(>*From )", rb">\1", body, flags=re.MULTILINE)
        stamp = mail.date.strftime("%a %b %d %H:%M:%S %Y").encode()
        out += b"From old@legacy.example " + stamp + b"\n" + head + b"\n\n" + body + b"\n"
    path.write_bytes(bytes(out))


_MAILDIR_LETTERS = {"\\Seen": "S", "\\Flagged": "F", "\\Answered": "R", "$Work": "a"}


def write_maildir(folder: Path, mails: list[Legacy]) -> None:
    """A Maildir folder: LF files named with their flags, mtime = internal date."""
    for sub in ("cur", "new", "tmp"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    (folder / "dovecot-keywords").write_text("0 $Work\n")
    for mail in mails:
        letters = "".join(sorted(_MAILDIR_LETTERS[f] for f in mail.flags))
        name = f"{1400000000 + mail.seq}.M{mail.seq}P1.legacy:2,{letters}"
        path = folder / "cur" / name
        path.write_bytes(mail.message.replace(b"\r\n", b"\n"))
        stamp = mail.date.timestamp()
        os.utime(path, (stamp, stamp))


@dataclass(frozen=True)
class Seen:
    folder: str
    flags: frozenset[str]
    date: datetime
    body: bytes


_ITEMS = re.compile(rb'FLAGS \(([^)]*)\)|INTERNALDATE "([^"]+)"')


def gateway_view(imap: imaplib.IMAP4) -> dict[int, list[Seen]]:
    """Every message of every folder, by its seq marker (a list: to see duplicates)."""
    typ, listing = imap.list()
    assert typ == "OK"
    view: dict[int, list[Seen]] = {}
    for line in listing:
        assert isinstance(line, bytes)
        if b"\\Noselect" in line or b"\\NonExistent" in line:
            continue  # a parent shown for its children
        name = line.rsplit(b' "/" ', 1)[1].strip().strip(b'"').decode()
        typ, data = imap.select(f'"{name}"', readonly=True)
        assert typ == "OK", name
        if data[0] == b"0":
            continue
        typ, fetched = imap.uid("FETCH", "1:*", "(FLAGS INTERNALDATE BODY.PEEK[])")
        assert typ == "OK"
        for item in fetched:
            if not isinstance(item, tuple):
                continue
            head, body = item
            flags = date = None
            for match in _ITEMS.finditer(head):
                if match.group(1) is not None:
                    flags = frozenset(match.group(1).decode().split()) - {"\\Recent"}
                else:
                    date = datetime.strptime(match.group(2).decode(), "%d-%b-%Y %H:%M:%S %z")
            assert flags is not None and date is not None, head
            seq = _SEQ.search(body)
            assert seq is not None
            view.setdefault(int(seq.group(1)), []).append(Seen(name, flags, date, body))
    return view


def imap_login(account: Account) -> imaplib.IMAP4:
    imap = imaplib.IMAP4("127.0.0.1", account.imap_port, timeout=30)
    imap.starttls(ssl_context=account.tls_context())
    imap.login(account.address, account.password)
    return imap
