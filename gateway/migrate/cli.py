"""The `sealgate migrate` subcommands (registered by `gateway.cli`).

    sealgate migrate mbox FILE ... --account ADDRESS --gateway GW [--folder NAME]
    sealgate migrate maildir DIR --account ADDRESS --gateway GW
    sealgate migrate forget --account ADDRESS --gateway GW   (after the migration)
    sealgate migrate imap --host H [--port P] [--tls|--starttls|--plain] --user U
                          --password-file F --account ADDRESS --gateway GW
                          [--folders GLOB ...] [--delete-source [--move-to FOLDER]]
                          [--ca-file F] [--insecure]
    sealgate migrate imap --accounts CSV [--parallel N] --host H ... --gateway GW
                          (many accounts: gateway.migrate.batch)

Each takes `--dry-run`, `--json` (the summary object on stdout instead of the
table) and `--config FILE` (TOML: `gateway.migrate.settings.MigrateSettings`). The
exit status is 0 when every folder verified, 3 when one did not (in batch mode: or an
account failed; the others still ran), 1 on an error
(one line on stderr). None asks for the account's password.
"""

from __future__ import annotations

import argparse
import asyncio
import fnmatch
import json
import sys
import threading
from pathlib import Path
from typing import Any

from bridge.settings import load_settings, read_toml
from gateway.homes import DATABASE_FILE, gateway_database_url
from gateway.migrate.errors import MigrateError
from gateway.migrate.progress import folder_progress
from gateway.migrate.run import Migration, MigrationReport, format_table
from gateway.migrate.settings import MigrateSettings
from gateway.migrate.sources import (
    MBOX_FORMATS,
    MaildirSource,
    MboxSource,
    Source,
    SourceFolder,
)
from gateway.store.db import StoreError, UnknownAccount, open_engine
from gateway.store.imports import PENDING, ImportStore, ImportTarget

MISMATCH_EXIT = 3


def _settings(args: argparse.Namespace) -> MigrateSettings:
    values = read_toml(args.config) if args.config is not None else {}
    return load_settings(MigrateSettings, values, source=str(args.config))


def _open_imports(gateway: Path) -> ImportStore:
    if not (gateway / DATABASE_FILE).is_file():
        raise MigrateError(f"{gateway} is not a gateway state directory (no {DATABASE_FILE})")
    return ImportStore(open_engine(gateway_database_url(gateway)))


def _target(imports: ImportStore, account: str, gateway: Path, *, dry_run: bool) -> ImportTarget:
    try:
        return imports.target(account, create=not dry_run)
    except UnknownAccount:
        raise MigrateError(f"no account {account} on the gateway {gateway}") from None
    except StoreError as e:
        raise MigrateError(str(e)) from None


def _open_target(args: argparse.Namespace) -> tuple[ImportStore, ImportTarget]:
    imports = _open_imports(args.gateway)
    return imports, _target(imports, args.account, args.gateway, dry_run=args.dry_run)


async def _migrate(
    args: argparse.Namespace, source: Source, settings: MigrateSettings,
    select: list[str] | None = None, *, into: tuple[ImportStore, ImportTarget] | None = None,
    label: str = "",
) -> MigrationReport:
    imports, target = into if into is not None else _open_target(args)
    bar = sys.stderr.isatty() and not label  # parallel accounts log lines, not bars
    migration = Migration(
        imports, target, source, settings,
        lambda name, total: folder_progress(label + name, total, bar=bar),
        dry_run=args.dry_run, delete_source=getattr(args, "delete_source", False),
    )
    try:
        await migration.start()  # its writer process starts while the folders are listed
        folders: list[SourceFolder] = await source.folders()
        if select:
            folders = [f for f in folders
                       if any(fnmatch.fnmatchcase(f.display, glob) for glob in select)]
            if not folders:
                raise MigrateError("no source folder matches --folders")
        return await migration.run(folders)
    finally:
        await migration.close()
        await source.close()


def _finish(args: argparse.Namespace, report: MigrationReport) -> None:
    if args.json:
        print(json.dumps(report.as_json(), indent=2, ensure_ascii=False))
    else:
        print(format_table(report))
    if not report.ok:
        raise SystemExit(MISMATCH_EXIT)


def _run(args: argparse.Namespace, source: Source, select: list[str] | None = None) -> None:
    try:
        report = asyncio.run(_migrate(args, source, args.settings, select))
    except KeyboardInterrupt:
        raise MigrateError("interrupted: what was stored is kept; run again to resume") from None
    _finish(args, report)


def cmd_migrate_mbox(args: argparse.Namespace) -> None:
    settings = args.settings = _settings(args)
    source = MboxSource(
        args.files, folder=args.folder, max_bytes=settings.max_message_bytes,
        batch=settings.batch_messages, quoting=args.mbox_format,
    )
    _run(args, source)


def cmd_migrate_maildir(args: argparse.Namespace) -> None:
    settings = args.settings = _settings(args)
    source = MaildirSource(
        args.directory, max_bytes=settings.max_message_bytes, batch=settings.batch_messages
    )
    _run(args, source)


def _imap_source(args: argparse.Namespace, user: str, password_file: Path) -> Source:
    from gateway.migrate.imap import ImapSource
    from gateway.provision import read_password_file

    return ImapSource(
        host=args.host, port=args.port, security=args.security, user=user,
        password=read_password_file(password_file), settings=args.settings,
        ca_file=args.ca_file, insecure=args.insecure, move_to=args.move_to,
    )


def cmd_migrate_imap(args: argparse.Namespace) -> None:
    args.settings = _settings(args)
    if args.insecure and args.ca_file:
        raise MigrateError("--insecure and --ca-file exclude each other")
    if args.move_to is not None and not args.delete_source:
        raise MigrateError("--move-to goes with --delete-source")
    if args.move_to is not None and (not args.move_to.strip("/") or "//" in args.move_to
                                     or args.move_to != args.move_to.strip("/")):
        raise MigrateError(f"--move-to {args.move_to!r} is not a folder name")
    if args.accounts is not None:
        alone = [flag for flag, value in (("--user", args.user), ("--account", args.account),
                 ("--password-file", args.password_file)) if value is not None]
        if alone:
            raise MigrateError(f"--accounts takes the accounts from the CSV file: "
                               f"drop {', '.join(alone)}")
        _run_batch(args)
        return
    absent = [flag for flag, value in (("--user", args.user), ("--account", args.account),
              ("--password-file", args.password_file), ("--gateway", args.gateway))
              if value is None]
    if absent:
        raise MigrateError(f"give {', '.join(absent)} (or --accounts CSV for many accounts)")
    if args.parallel is not None:
        raise MigrateError("--parallel goes with --accounts")
    _run(args, _imap_source(args, args.user, args.password_file), args.folders)


def _run_batch(args: argparse.Namespace) -> None:
    from gateway.migrate.batch import BatchAccount, format_batch, read_accounts, run_batch

    settings: MigrateSettings = args.settings
    parallel = args.parallel if args.parallel is not None else settings.parallel_accounts
    if parallel < 1:
        raise MigrateError("--parallel must be at least 1")
    accounts = read_accounts(args.accounts, args.gateway)
    stores: dict[Path, ImportStore] = {}  # one per gateway, opened by its first account
    opening = threading.Lock()  # accounts open their targets in worker threads

    def open_target(entry: BatchAccount) -> tuple[ImportStore, ImportTarget]:
        with opening:
            if entry.gateway not in stores:
                stores[entry.gateway] = _open_imports(entry.gateway)
            imports = stores[entry.gateway]
        return imports, _target(imports, entry.account, entry.gateway, dry_run=args.dry_run)

    async def migrate(entry: BatchAccount) -> MigrationReport:
        into = await asyncio.to_thread(open_target, entry)
        source = _imap_source(args, entry.user, entry.password_file)
        return await _migrate(args, source, settings, args.folders, into=into,
                              label=f"row {entry.row}: ")

    try:
        report = asyncio.run(run_batch(accounts, migrate, parallel=parallel,
                                       dry_run=args.dry_run))
    except KeyboardInterrupt:
        raise MigrateError("interrupted: what was stored is kept; run again to resume") from None
    if args.json:
        print(json.dumps(report.as_json(), indent=2, ensure_ascii=False))
    else:
        print(format_batch(report))
    if not report.ok:
        raise SystemExit(MISMATCH_EXIT)


def cmd_migrate_forget(args: argparse.Namespace) -> None:
    args.dry_run = False
    imports, target = _open_target(args)
    pending = imports.counts(target.account_id).get(PENDING, 0)
    if pending:
        raise MigrateError(f"{pending} imported message(s) are not filed yet: log in first")
    imports.forget(target.account_id)
    print(f"migration records of {args.account} removed; a new migration starts afresh")


def _common(p: argparse.ArgumentParser, *, account: bool = True) -> None:
    p.add_argument("--account", required=account, metavar="ADDRESS",
                   help="the bubble account the mail is for (its password is not needed)")
    p.add_argument("--gateway", type=Path, required=account, metavar="GW",
                   help="the account's gateway state directory (it may be serving)" +
                   ("" if account else "; with --accounts, of the rows without a gateway"))
    p.add_argument("--dry-run", action="store_true",
                   help="read and count everything, write nothing")
    p.add_argument("--json", action="store_true", help="print the summary as a JSON object")
    p.add_argument("--config", type=Path, metavar="FILE", help="TOML file with migrate settings")


def add_migrate_commands(sub: Any) -> None:
    migrate = sub.add_parser(
        "migrate", help="move mailboxes from legacy IMAP, mbox or Maildir into the bubble"
    ).add_subparsers(dest="action", required=True, metavar="SOURCE")

    p = migrate.add_parser("mbox", help="import mbox files (one folder per file)")
    p.add_argument("files", type=Path, nargs="+", metavar="FILE")
    p.add_argument("--folder", metavar="NAME",
                   help="import every file into this folder (default: one per file, by name)")
    p.add_argument("--mbox-format", choices=MBOX_FORMATS, default="mboxrd",
                   help="how '>From ' lines are quoted in the files (default mboxrd)")
    _common(p)
    p.set_defaults(func=cmd_migrate_mbox)

    p = migrate.add_parser("imap", help="import every folder of a legacy IMAP account")
    p.add_argument("--host", required=True, help="the legacy IMAP server")
    p.add_argument("--port", type=int, help="default 993 with --tls, else 143")
    security = p.add_mutually_exclusive_group()
    for flag, what in (("tls", "TLS from the start (IMAPS)"),
                       ("starttls", "STARTTLS (the default)"),
                       ("plain", "no TLS at all: passwords and mail cross the network in clear")):
        security.add_argument(f"--{flag}", dest="security", action="store_const", const=flag,
                              help=what)
    p.set_defaults(security="starttls")
    p.add_argument("--user", help="the user name on the legacy server")
    p.add_argument("--password-file", type=Path, metavar="F",
                   help="file whose first line is the legacy server's password")
    p.add_argument("--accounts", type=Path, metavar="CSV",
                   help="migrate many accounts: a CSV file with the header row "
                   "user,password_file,account[,gateway] (instead of --user, --password-file, "
                   "--account)")
    p.add_argument("--parallel", type=int, metavar="N",
                   help="with --accounts: migrate N accounts at once (default: the setting "
                   "parallel_accounts, 4)")
    p.add_argument("--folders", nargs="+", metavar="GLOB",
                   help="only the folders whose name (with '/' between levels) matches")
    p.add_argument("--delete-source", action="store_true",
                   help="delete each folder's messages from the legacy server once verified")
    p.add_argument("--move-to", metavar="FOLDER",
                   help="with --delete-source: move the verified messages to this folder of "
                   "the legacy server (created if missing; '/' between levels) instead of "
                   "expunging them")
    p.add_argument("--ca-file", type=Path, metavar="FILE",
                   help="trust the server's certificate when signed by a CA in FILE")
    p.add_argument("--insecure", action="store_true",
                   help="do not check the server's certificate (only on a network you trust)")
    _common(p, account=False)
    p.set_defaults(func=cmd_migrate_imap)

    p = migrate.add_parser(
        "forget", help="once migrated and filed: drop the digests and checkpoints kept for "
        "dedup (a later migration of the same mail would import it again)")
    p.add_argument("--account", required=True, metavar="ADDRESS")
    p.add_argument("--gateway", type=Path, required=True, metavar="GW")
    p.set_defaults(func=cmd_migrate_forget)

    p = migrate.add_parser("maildir", help="import a Maildir (Maildir++ or LAYOUT=fs folders)")
    p.add_argument("directory", type=Path, metavar="DIR")
    _common(p)
    p.set_defaults(func=cmd_migrate_maildir)
