"""The `sealgate migrate` commands' work (`gateway.migrate.cli` builds their parser)."""

from __future__ import annotations

import argparse
import asyncio
import fnmatch
import json
import sys
import threading
from pathlib import Path

from bridge.settings import load_settings, read_toml
from gateway.homes import DATABASE_FILE, gateway_database_url
from gateway.migrate.errors import MigrateError
from gateway.migrate.progress import folder_progress
from gateway.migrate.run import Migration, MigrationReport, format_table
from gateway.migrate.settings import MigrateSettings
from gateway.migrate.sources import (
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
