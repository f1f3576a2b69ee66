"""Batch mode of `sealgate migrate imap`: the CSV file, the bound on parallel accounts,
and the one-line errors of its command line."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.cli import main as cli_main
from gateway.migrate.batch import BatchAccount, read_accounts, run_batch
from gateway.migrate.errors import MigrateError, SourceError
from gateway.migrate.run import FolderReport, MigrationReport


def test_the_csv_file_names_its_columns_and_paths_are_taken_from_its_directory(
    tmp_path: Path,
) -> None:
    csv_file = tmp_path / "accounts.csv"
    csv_file.write_text("account, user ,password_file\n"
                        "a@bubble.example,anna,secrets/anna\n"
                        'b@bubble.example,"ben, jr",/abs/ben\n')
    shared = Path("/var/lib/sealgate/gw")
    assert read_accounts(csv_file, shared) == [
        BatchAccount(2, "anna", tmp_path / "secrets/anna", "a@bubble.example", shared),
        BatchAccount(3, "ben, jr", Path("/abs/ben"), "b@bubble.example", shared),
    ]


def test_a_row_may_name_its_own_gateway_and_an_empty_cell_means_the_flag(
    tmp_path: Path,
) -> None:
    csv_file = tmp_path / "accounts.csv"
    csv_file.write_text("user,password_file,account,gateway\n"
                        "anna,p,a@bubble.example,gateways/a\n"
                        "ben,p,b@bubble.example,\n"
                        "cleo,p,c@bubble.example,/srv/gw-c\n")
    homes = [entry.gateway for entry in read_accounts(csv_file, Path("/srv/gw"))]
    assert homes == [tmp_path / "gateways/a", Path("/srv/gw"), Path("/srv/gw-c")]
    with pytest.raises(MigrateError, match="line 3: no gateway"):
        read_accounts(csv_file, None)


@pytest.mark.parametrize(("text", "message"), [
    ("user,account\nanna,a@x\n", "lacks the column(s) password_file"),
    ("user,password_file,account\nanna,,a@x\n", "line 2: empty password_file"),
    ("user,password_file,account\nanna,p,a@x\nben,p,a@x\n", "line 3: the account of line 2"),
    ("user,password_file,account\n", "lists no account"),
    ("user,password_file,account,gw\nanna,p,a@x,/srv/gw\n",
     "unknown column(s) gw (it takes user,password_file,account and optionally gateway)"),
])
def test_a_bad_csv_file_is_refused_with_its_line(tmp_path: Path, text: str, message: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    csv_file = tmp_path / "accounts.csv"
    csv_file.write_text(text)
    code = cli_main(["migrate", "imap", "--host", "127.0.0.1", "--accounts", str(csv_file),
                     "--gateway", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("sealgate: error: ") and message in err, err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(("args", "message"), [
    (["--accounts", "a.csv", "--user", "anna"], "drop --user"),
    (["--user", "anna"], "give --account, --password-file (or --accounts CSV"),
    (["--user", "u", "--account", "a@x", "--password-file", "p", "--gateway", None],
     "give --gateway (or --accounts CSV"),
    (["--accounts", "a.csv", "--parallel", "0"], "--parallel must be at least 1"),
    (["--user", "u", "--account", "a@x", "--password-file", "p", "--parallel", "2"],
     "--parallel goes with --accounts"),
    (["--user", "u", "--account", "a@x", "--password-file", "p", "--move-to", "Old"],
     "--move-to goes with --delete-source"),
    (["--user", "u", "--account", "a@x", "--password-file", "p", "--delete-source",
      "--move-to", "Old//Mail"], "--move-to 'Old//Mail' is not a folder name"),
])
def test_batch_flags_are_checked(tmp_path: Path, args: list[str | None], message: str,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    if None in args:  # this case leaves --gateway out
        argv = [arg for arg in args if arg not in ("--gateway", None)]
    else:
        argv = ["--gateway", str(tmp_path), *args]
    code = cli_main(["migrate", "imap", "--host", "127.0.0.1", *argv])
    err = capsys.readouterr().err
    assert code == 1 and message in err, err


def test_at_most_parallel_accounts_run_at_once_and_a_failure_stays_its_own() -> None:
    accounts = [BatchAccount(n + 2, f"user{n}", Path("p"), f"u{n}@x", Path("gw")) for n in range(7)]
    running, most = 0, 0

    async def migrate(entry: BatchAccount) -> MigrationReport:
        nonlocal running, most
        running += 1
        most = max(most, running)
        for _ in range(3):
            await asyncio.sleep(0)  # let the others start, if the bound allowed it
        running -= 1
        if entry.user == "user3":
            raise SourceError("the server refused the login of user3")
        return MigrationReport("imap", False, [FolderReport("INBOX", "INBOX", verified=True)])

    report = asyncio.run(run_batch(accounts, migrate, parallel=3, dry_run=False))
    assert most == 3
    assert [item.ok for item in report.accounts] == [True] * 3 + [False] + [True] * 3
    assert report.accounts[3].error == "the server refused the login of user3"
    assert report.ok is False
