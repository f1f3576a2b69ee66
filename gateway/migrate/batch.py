"""Batch mode of `sealgate migrate imap`: many accounts from one CSV file, a bounded
number at a time, each failure kept to its own account.

The CSV file has a header row naming its columns: `user` (the login on the legacy
server), `password_file` (a file whose first line is that login's password; a
relative path is taken from the CSV file's directory), `account` (the bubble
address) and, if the accounts live on several gateways, `gateway` (the account's
gateway state directory, relative paths likewise; an empty cell means `--gateway`).
Any other column is refused, so that a misspelt one is not silently ignored. The
server, its port and TLS options and the settings are shared from the command
line. This module never reads a password into a report or
a log line, and logs no address: an account is named by its CSV row.
"""

from __future__ import annotations

import asyncio
import csv
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from gateway.migrate.errors import MigrateError
from gateway.migrate.run import MigrationReport
from gateway.provision import ProvisionError
from gateway.store.db import StoreError

COLUMNS = ("user", "password_file", "account")
OPTIONAL = ("gateway",)
ISOLATED = (MigrateError, ProvisionError, StoreError, OSError)
"""The errors that end one account's migration and not the batch (an unreadable
password file, a refused login, a server gone for good, an unknown account)."""


@dataclass(frozen=True)
class BatchAccount:
    row: int  # the CSV line (the header is line 1)
    user: str
    password_file: Path
    account: str
    gateway: Path  # the account's gateway state directory


@dataclass
class AccountReport:
    entry: BatchAccount
    report: MigrationReport | None = None
    error: str | None = None  # why this account's migration stopped (one line)

    @property
    def ok(self) -> bool:
        return self.error is None and self.report is not None and self.report.ok

    def as_json(self) -> dict[str, object]:
        report = self.report.as_json() if self.report is not None else {}
        return {"row": self.entry.row, "user": self.entry.user, "account": self.entry.account,
                "gateway": str(self.entry.gateway), "ok": self.ok, "error": self.error,
                "folders": report.get("folders", [])}


@dataclass
class BatchReport:
    dry_run: bool
    accounts: list[AccountReport]

    @property
    def ok(self) -> bool:
        return all(account.ok for account in self.accounts)

    def as_json(self) -> dict[str, object]:
        return {"kind": "imap-batch", "dry_run": self.dry_run, "ok": self.ok,
                "accounts": [account.as_json() for account in self.accounts]}


def read_accounts(path: Path, gateway: Path | None) -> list[BatchAccount]:
    """The accounts of a batch CSV file, on `gateway` unless a row names its own;
    `MigrateError` naming the file and line."""
    try:
        text = path.read_text("utf-8")
    except OSError as e:
        raise MigrateError(f"cannot read --accounts {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise MigrateError(f"--accounts {path} is not UTF-8 text") from None
    reader = csv.DictReader(text.splitlines())
    names = [name.strip() for name in reader.fieldnames or []]
    absent = [column for column in COLUMNS if column not in names]
    if absent:
        raise MigrateError(f"--accounts {path}: the header row lacks the column(s) "
                           f"{', '.join(absent)} (it needs {','.join(COLUMNS)})")
    unknown = [name for name in names if name not in COLUMNS + OPTIONAL]
    if unknown:
        raise MigrateError(f"--accounts {path}: unknown column(s) {', '.join(unknown)} "
                           f"(it takes {','.join(COLUMNS)} and optionally {','.join(OPTIONAL)})")
    reader.fieldnames = names
    accounts: list[BatchAccount] = []
    seen: dict[str, int] = {}
    for fields in reader:
        row = reader.line_num
        values = {column: (fields.get(column) or "").strip() for column in COLUMNS}
        empty = [column for column, value in values.items() if not value]
        if empty:
            raise MigrateError(f"--accounts {path} line {row}: empty {', '.join(empty)}")
        if values["account"] in seen:
            raise MigrateError(f"--accounts {path} line {row}: the account of line "
                               f"{seen[values['account']]} again")
        seen[values["account"]] = row
        own = (fields.get("gateway") or "").strip()
        home = path.parent / own if own else gateway
        if home is None:
            raise MigrateError(f"--accounts {path} line {row}: no gateway (fill its gateway "
                               "column or give --gateway)")
        accounts.append(BatchAccount(row, values["user"], path.parent / values["password_file"],
                                     values["account"], home))
    if not accounts:
        raise MigrateError(f"--accounts {path} lists no account")
    return accounts


async def run_batch(
    accounts: list[BatchAccount],
    migrate: Callable[[BatchAccount], Awaitable[MigrationReport]],
    *,
    parallel: int,
    dry_run: bool,
) -> BatchReport:
    """Migrate every account, at most `parallel` at once; an account whose migration
    raises one of `ISOLATED` gets it as its error line, and the others go on."""
    gate = asyncio.Semaphore(parallel)

    async def one(entry: BatchAccount) -> AccountReport:
        async with gate:
            try:
                return AccountReport(entry, report=await migrate(entry))
            except ISOLATED as e:
                return AccountReport(entry, error=str(e) or type(e).__name__)

    return BatchReport(dry_run, list(await asyncio.gather(*(one(a) for a in accounts))))


def format_batch(report: BatchReport) -> str:
    """One line per account, then each failure and each folder not verified."""
    head = ("row", "account", "folders", "source", "new", "present", "missing", "result")
    rows = [head]
    notes: list[str] = []
    for item in report.accounts:
        folders = item.report.folders if item.report is not None else []
        result = "verified" if item.ok else ("FAILED" if item.error else "MISMATCH")
        rows.append((str(item.entry.row), item.entry.account, str(len(folders)),
                     str(sum(f.source_count for f in folders)),
                     str(sum(f.imported for f in folders)), str(sum(f.present for f in folders)),
                     str(sum(f.missing + len(f.problems) for f in folders)), result))
        if item.error:
            notes.append(f"{item.entry.account}: {item.error}")
        notes += [f"{item.entry.account}: folder {f.source} not verified"
                  for f in folders if not f.verified]
        notes += [f"{item.entry.account}: {f.source}: message {uid} not imported: {why}"
                  for f in folders for uid, why in f.problems]
        notes += [f"{item.entry.account}: {f.source}: message {uid} imported as it is "
                  "(it does not parse as mail)" for f in folders for uid in f.kept_raw]
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
             .rstrip() for row in rows]
    failed = sum(not item.ok for item in report.accounts)
    what = "dry run: nothing written" if report.dry_run else "pending until each account unlocks"
    verdict = (f"every account verified ({what})" if not failed else
               f"{failed} of {len(report.accounts)} account(s) FAILED or not verified ({what})")
    return "\n".join([*lines, *notes, verdict])
