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
from pathlib import Path
from typing import Any

from gateway.operator import command

# How '>From ' lines are quoted (`gateway.migrate.sources.MboxSource`, `quoting`).
MBOX_FORMATS = ("mboxrd", "mboxo")


def _command(name: str) -> Any:
    return command("gateway.migrate.commands", name)


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
    p.set_defaults(func=_command("cmd_migrate_mbox"))

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
    p.set_defaults(func=_command("cmd_migrate_imap"))

    p = migrate.add_parser(
        "forget", help="once migrated and filed: drop the digests and checkpoints kept for "
        "dedup (a later migration of the same mail would import it again)")
    p.add_argument("--account", required=True, metavar="ADDRESS")
    p.add_argument("--gateway", type=Path, required=True, metavar="GW")
    p.set_defaults(func=_command("cmd_migrate_forget"))

    p = migrate.add_parser("maildir", help="import a Maildir (Maildir++ or LAYOUT=fs folders)")
    p.add_argument("directory", type=Path, metavar="DIR")
    _common(p)
    p.set_defaults(func=_command("cmd_migrate_maildir"))
