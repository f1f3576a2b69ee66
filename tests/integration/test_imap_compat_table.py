"""The README's IMAP compatibility table is true of `sealgate demo`, both ways.

Capability rows: every atom the demo's IMAP server advertises (greeting, CAPABILITY
before login, after STARTTLS and after LOGIN) has a `yes` row, and every `yes` row is
advertised. Command rows: every command the demo answers other than `BAD Unknown
command` has a `yes` row, every `yes` row is such a command, and each `not yet` row is
answered `Unknown command`. A failure names the row and what the demo said.
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.imap.protocol.parse import PARSERS
from tests.integration.test_cli import demos as demos  # the fixture
from tests.integration.test_cli import start_demo, stop

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "README.md"
BEGIN, END = "<!-- imap-compatibility: begin -->", "<!-- imap-compatibility: end -->"
KINDS = {"capability", "command"}
SUPPORTED = {"yes", "not yet"}


@dataclass(frozen=True)
class Row:
    line: int
    name: str
    kind: str
    supported: str

    def __str__(self) -> str:
        return f"README.md:{self.line} ({self.kind} `{self.name}`: {self.supported})"


def table_rows() -> list[Row]:
    """The table's rows, each checked for shape; a malformed row fails naming its line."""
    lines = README.read_text().splitlines()
    start, end = lines.index(BEGIN), lines.index(END)
    header, rule, *body = lines[start + 1 : end]
    assert header == "| Name | Kind | RFC | Supported | Note |", f"README.md:{start + 2}"
    assert rule == "|---|---|---|---|---|", f"README.md:{start + 3}"
    rows = []
    for number, text in enumerate(body, start + 4):
        cells = [cell.strip() for cell in text.strip().strip("|").split("|")]
        where = f"README.md:{number}: {text!r}"
        assert len(cells) == 5, f"{where}: expected 5 cells, got {len(cells)}"
        name, kind, rfc, supported, _ = cells
        m = re.fullmatch(r"`([A-Z][A-Za-z0-9+=.-]*( [A-Z]+)?)`", name)
        assert m is not None, f"{where}: the name must be an IMAP atom in backticks"
        assert kind in KINDS, f"{where}: kind must be one of {sorted(KINDS)}"
        assert rfc.isdigit(), f"{where}: the RFC column is its number"
        assert supported in SUPPORTED, f"{where}: supported must be one of {sorted(SUPPORTED)}"
        rows.append(Row(number, m[1], kind, supported))
    keys = [(row.kind, row.name) for row in rows]
    duplicates = {key for key in keys if keys.count(key) > 1}
    assert not duplicates, f"rows listed twice: {sorted(duplicates)}"
    return rows


class Client:
    """A raw IMAP connection to the demo (the answers themselves are what is checked)."""

    def __init__(self, port: int) -> None:
        self.sock: socket.socket | ssl.SSLSocket = socket.create_connection(
            ("127.0.0.1", port), timeout=30
        )
        self.file = self.sock.makefile("rb")
        self.greeting = self.file.readline()
        self.count = 0

    def command(self, text: str) -> list[bytes]:
        """Send one command; its responses to the tagged one. A `+` (IDLE) gets DONE."""
        self.count += 1
        tag = f"t{self.count}".encode()
        self.sock.sendall(tag + b" " + text.encode() + b"\r\n")
        lines = []
        while line := self.file.readline():
            lines.append(line)
            if line.startswith(b"+"):
                self.sock.sendall(b"DONE\r\n")
            if line.startswith(tag + b" "):
                return lines
        raise AssertionError(f"the demo closed the connection after {text!r}: {lines}")

    def capabilities(self) -> set[str]:
        lines = self.command("CAPABILITY")
        line = next(line for line in lines if line.startswith(b"* CAPABILITY "))
        return set(line.decode().split()[2:])

    def start_tls(self, cafile: Path) -> None:
        assert self.command("STARTTLS")[-1].split()[1] == b"OK"
        context = ssl.create_default_context(cafile=str(cafile))
        self.file.close()
        self.sock = context.wrap_socket(self.sock, server_hostname="127.0.0.1")
        self.file = self.sock.makefile("rb")

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def greeting_capabilities(greeting: bytes) -> set[str]:
    m = re.match(rb"\* OK \[CAPABILITY ([^\]]*)\]", greeting)
    assert m is not None, greeting
    return set(m[1].decode().split())


def test_readme_table_matches_the_demo(
    tmp_path: Path, demos: list[subprocess.Popen[str]]
) -> None:
    rows = table_rows()
    directory = tmp_path / "demo"
    proc = start_demo(directory, track=demos)
    alice = json.loads((directory / "clients.json").read_text())["accounts"][0]
    client = Client(alice["imap"]["port"])
    try:
        errors = check(client, rows, directory, alice)
    finally:
        client.close()
    assert stop(proc) == 0
    assert not errors, "README IMAP compatibility table:\n" + "\n".join(errors)


def check(client: Client, rows: list[Row], directory: Path, alice: dict[str, Any]) -> list[str]:
    """What is wrong with the table, one line per row (none: it is true)."""
    advertised = greeting_capabilities(client.greeting) | client.capabilities()
    client.start_tls(directory / "gateways" / "alice" / "tls" / "cert.pem")
    advertised |= client.capabilities()
    login = client.command(f'LOGIN {alice["address"]} "{alice["password"]}"')
    assert login[-1].split()[1] == b"OK", login
    advertised |= client.capabilities()

    errors: list[str] = []
    capabilities = {row.name: row for row in rows if row.kind == "capability"}
    for atom in sorted(advertised):
        row = capabilities.get(atom)
        if row is None:
            errors.append(f"the demo advertises {atom}, which has no capability row")
        elif row.supported != "yes":
            errors.append(f"{row}: the demo advertises it; make it yes")
    for row in capabilities.values():
        if row.supported == "yes" and row.name not in advertised:
            errors.append(f"{row}: the demo does not advertise it (it said {sorted(advertised)})")

    commands = {row.name: row for row in rows if row.kind == "command"}
    for name in sorted(set(PARSERS) - set(commands)):
        errors.append(f"the server parses {name}, which has no command row")
    for row in commands.values():
        if row.name == "LOGOUT":
            continue  # asked last: it ends the session
        tagged = client.command(row.name)[-1]
        unknown = tagged.split(b" ", 1)[1].startswith(b"BAD Unknown command")
        if row.supported == "yes" and unknown:
            errors.append(f"{row}: the demo answers {tagged!r}")
        if row.supported != "yes" and not unknown:
            errors.append(f"{row}: the demo knows it ({tagged!r}); make it yes")
        client.command("NOOP")  # so the BADs of argument-less commands never add up to BYE
    logout = client.command("LOGOUT")
    if commands["LOGOUT"].supported == "yes" and logout[-1].split()[1] != b"OK":
        errors.append(f"{commands['LOGOUT']}: the demo answers {logout!r}")
    return errors
