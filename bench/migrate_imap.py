"""migrate_imap: `sealgate migrate imap` against a plain aioimaplib fetch of the same mail.

Source: Dovecot 2.3 as a throwaway server (`tests/dovecot.py`), STARTTLS with the
gateway's certificate, one user whose INBOX holds 5,000 text messages of mixed size
(500 with --quick): 60 % of 3 KB, 30 % of 15 KB, 9 % of 60 KB, 1 % of 500 KB,
about 85 MB in all.

Ours: the migration's in-process API, as `sealgate migrate imap` runs it
(`ImapSource` + `Migration`, default `MigrateSettings`), into a gateway
(`bench.bubble`) that is serving meanwhile: list, one UID FETCH of the UIDs and
sizes, then per batch (500 messages, 32 MiB at most) one UID FETCH of flags, date,
size and body, whose answer aioimaplib hands to the migration's linear reader
(`gateway.migrate.fetch_wire`); each message digested, sealed to the account's
public key and committed with its checkpoint by the migration's child process
(`gateway.migrate.writer`, started while the folders are listed), the next batch
read meanwhile; then the verification (the digest set against the store). Every
repetition migrates into a fresh account, so nothing is skipped as present; it must
import and verify every message.

Baseline: a plain aioimaplib client on the same event loop: STARTTLS, LOGIN, SELECT
INBOX, UID SEARCH, then per batch of 100 UIDs one `UID FETCH (UID FLAGS
INTERNALDATE BODY.PEEK[])`, and nothing done with the answer but count its bytes,
which must be exactly the stored messages'. 100 is aioimaplib's fastest batch here
(its work on an answer grows with the answer's lines squared: 50 and 100 measured
alike, 200 about 20 % slower, 500 about 40 %), so the baseline is plain aioimaplib
at its best.

One untimed baseline round first (Dovecot builds its index there). The timed rounds
alternate order. Ratio: the migration's messages/s over the baseline's (higher is
better). Target >= 0.8; we aim at 0.95.
"""

from __future__ import annotations

import asyncio
import secrets
import ssl
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aioimaplib

from bench.bubble import DOMAIN, Bubble, log_to_file, start_bubble
from bench.common import (
    KB,
    BenchError,
    Result,
    Settings,
    Target,
    make_message,
    rate_ratio,
    start_dovecot,
)
from gateway.homes import gateway_database_url
from gateway.migrate.imap import ImapSource
from gateway.migrate.progress import folder_progress
from gateway.migrate.run import Migration
from gateway.migrate.settings import MigrateSettings
from gateway.store.db import open_engine
from gateway.store.imports import ImportStore
from tests.dovecot import Dovecot, missing

NAME = "migrate_imap"
TARGET = Target(">=", 0.8)
SIZES = ((60, 3 * KB), (30, 15 * KB), (9, 60 * KB), (1, 500 * KB))  # (percent, bytes)
USER = "legacy.user"
BASELINE_BATCH = 100  # UIDs per FETCH of the baseline: aioimaplib's fastest here
PASSWORD = secrets.token_urlsafe(16)


def messages(count: int) -> tuple[list[bytes], list[datetime]]:
    plan = [size for share, size in SIZES for _ in range(share)]  # 100 sizes, cycled
    start = datetime(2020, 1, 1, tzinfo=UTC)
    mails = [make_message(plan[(n * 37) % len(plan)], sender=f"colleague{n % 41}@legacy.example",
                          recipient=f"{USER}@legacy.example", number=n) for n in range(count)]
    return mails, [start + timedelta(minutes=11 * n) for n in range(count)]


async def plain_fetch(port: int, cert: Path, batch: int) -> tuple[int, int]:
    """The baseline: every message of INBOX in batches; (messages, body bytes)."""
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False  # as ours: the certificate names the gateway
    context.verify_mode = ssl.CERT_NONE
    client = aioimaplib.IMAP4(host="127.0.0.1", port=port, timeout=120)
    await client.wait_hello_from_server()
    protocol = client.protocol
    command = aioimaplib.Command("STARTTLS", protocol.new_tag(), loop=protocol.loop)
    if (await protocol.execute(command)).result != "OK":
        raise BenchError("dovecot refused the baseline's STARTTLS")
    loop = asyncio.get_running_loop()
    protocol.transport = await loop.start_tls(protocol.transport, protocol, context,
                                              server_hostname="127.0.0.1")
    await protocol.capability()
    if (await client.login(USER, PASSWORD)).result != "OK":
        raise BenchError("the baseline could not log in to dovecot")
    await client.select("INBOX")
    found = await client.uid_search("ALL")
    uids = [int(word) for line in found.lines[:-1] for word in bytes(line).split()
            if word.isdigit()]
    count = octets = 0
    for start in range(0, len(uids), batch):
        chunk = uids[start : start + batch]
        response = await client.uid("fetch", f"{chunk[0]}:{chunk[-1]}",
                                    "(UID FLAGS INTERNALDATE BODY.PEEK[])")
        if response.result != "OK":
            raise BenchError("dovecot refused the baseline's FETCH")
        bodies = [line for line in response.lines if isinstance(line, bytearray)]
        count += len(bodies)
        octets += sum(len(body) for body in bodies)
    await client.logout()
    return count, octets


async def migrate(bubble: Bubble, address: str, port: int) -> int:
    """Ours: the whole account migrated and verified; the messages imported."""
    settings = MigrateSettings()
    imports = ImportStore(open_engine(gateway_database_url(bubble.home)))
    target = await asyncio.to_thread(imports.target, address)
    source = ImapSource(host="127.0.0.1", port=port, security="starttls", user=USER,
                        password=PASSWORD, settings=settings, ca_file=bubble.cert,
                        insecure=True)  # the certificate names the gateway, not 127.0.0.1
    migration = Migration(imports, target, source, settings,
                          lambda name, total: folder_progress(name, total, bar=False))
    try:
        await migration.start()  # as the CLI: its writer process starts during the listing
        report = await migration.run(await source.folders())
    finally:
        await migration.close()
        await source.close()
    if not report.ok:
        raise BenchError("the migration did not verify")
    return sum(folder.imported for folder in report.folders)


async def _measure(settings: Settings) -> list[Result]:
    why = missing()
    if why is not None:
        raise BenchError(f"needs a throwaway dovecot: {why}")
    count = 500 if settings.quick else 5000
    log_to_file(settings.workdir / "bench.log")
    bubble = await start_bubble(settings.workdir / "bubble",
                                [f"m{n}" for n in range(settings.reps)])
    mails, dates = messages(count)
    expected = sum(len(m) for m in mails)
    server = Dovecot(settings.workdir / "dovecot", {USER: PASSWORD},
                     tls=(bubble.cert, bubble.key), require_tls=True)
    batch = BASELINE_BATCH
    ours: list[float] = []
    base: list[float] = []
    try:
        server.seed(USER, mails, dates)
        await start_dovecot(server)
        port = server.port
        await plain_fetch(port, bubble.cert, batch)  # untimed: dovecot builds its index

        async def baseline() -> None:
            t0 = time.perf_counter()
            got = await plain_fetch(port, bubble.cert, batch)
            base.append(count / (time.perf_counter() - t0))
            if got != (count, expected):
                raise BenchError(f"the baseline read {got}, not {(count, expected)}")

        async def ours_once(rep: int) -> None:
            t0 = time.perf_counter()
            imported = await migrate(bubble, f"m{rep}@{DOMAIN}", port)
            ours.append(count / (time.perf_counter() - t0))
            if imported != count:
                raise BenchError(f"the migration imported {imported} of {count}")

        for rep in range(settings.reps):
            if rep % 2:
                await baseline()
                await ours_once(rep)
            else:
                await ours_once(rep)
                await baseline()
    finally:
        await asyncio.to_thread(server.stop)
        await bubble.stop()
    case = f"{count:,} msgs, mixed 3 KB-500 KB ({expected / 1e6:.0f} MB)"
    return [Result(NAME, case, "msg/s", ours, "aioimaplib UID FETCH", base,
                   rate_ratio(ours, base), TARGET)]


def run(settings: Settings) -> list[Result]:
    return asyncio.run(_measure(settings))
