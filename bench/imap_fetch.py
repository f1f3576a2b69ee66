"""imap_fetch: the gateway's IMAP server against Dovecot on the same 2,000 and 10,000 messages.

Ours: a real `gateway.service.Gateway` in this process (relay and gateway from
`bench.bubble`), its IMAP listener over its SQLite store. bob's INBOX is filed as
delivered mail is (`gateway.store.folder_rows`: sealed first, then stored with the header
cache extended in the same transaction, 500 messages a transaction): text messages of
10 KB (10,000 bytes), each sealed at rest under bob's storage key, its header block sealed
apart and, by runs of messages, in the sealed header cache (`gateway.store.header_cache`):
a header-only FETCH opens (XChaCha20-Poly1305) just header blocks, a body fetch the whole
messages.

Baseline: Dovecot 2.3 as a throwaway server (`tests/dovecot.py`) holding the same
messages in a Maildir, with the same certificate and STARTTLS. Without
dovecot installed (or without root) the baseline is reported missing and only
our absolute figures are printed.

Load: one imaplib client in a separate process (`bench.clients`), STARTTLS,
LOGIN, EXAMINE INBOX, then for each server:
    header sync  UID FETCH 1:* (UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS
                 (FROM TO SUBJECT DATE MESSAGE-ID)])
    body fetch   UID FETCH 1:* (BODY.PEEK[])  (2,000 messages only)
One untimed first round (Dovecot builds its index and cache there; its times are
printed as a note), then the timed rounds alternate between the servers. Every
answer must hold every message and, for bodies, exactly the stored bytes. Each folder
size is a run of its own: a fresh bubble and a fresh Dovecot (`--quick`: 2,000 only). The
imaplib rows include imaplib parsing the answer, the same work for both servers,
which narrows the gap between them. The "raw" rows send the same commands on the
same connection and only read the answer's bytes up to the tagged OK: closer to the
servers' own cost, though a full body fetch stays bound by the client decrypting
20 MB of TLS in Python on the same two cores.

Ratio: our median time over Dovecot's. Targets, on the imaplib rows (the raw rows
have none): <= 1.5 for the header sync (issue 6), <= 3 for the body fetch. Dovecot
answers a header sync from its cache file, we from the sealed header cache (one
decryption per run of messages); a full fetch moves the same bytes through TLS on both
sides, with one decryption more on ours.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.bubble import DOMAIN, Bubble, log_to_file, start_bubble
from bench.clients import run_client
from bench.common import (
    KB,
    BenchError,
    Result,
    Settings,
    Target,
    format_value,
    make_message,
    start_dovecot,
    time_ratio,
)
from gateway.homes import gateway_database_url
from gateway.keyring import KeyRing
from gateway.store import header_cache
from gateway.store.accounts import AccountStore, find_account
from gateway.store.db import open_engine, reading, writing
from gateway.store.folder_rows import folder_row, prepare_message, store_prepared
from tests.dovecot import Dovecot, missing

NAME = "imap_fetch"
COUNTS = (2000, 10000)
BODY_FETCH_UP_TO = 2000  # a full fetch of 10,000 (100 MB) measures the client's TLS
SIZE = 10 * KB
SEED_BATCH = 500
TARGETS = {"header": Target("<=", 1.5), "body": Target("<=", 3.0)}
LABELS = {"header": "header sync", "body": "full body fetch"}


def messages(recipient: str, count: int) -> tuple[list[bytes], list[datetime]]:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    mails = [
        make_message(SIZE, sender=f"colleague{n % 37}@example.org", recipient=recipient,
                     number=n)
        for n in range(count)
    ]
    return mails, [start + timedelta(minutes=7 * n) for n in range(count)]


def seed_store(home_url: str, address: str, password: str, mails: list[bytes],
               dates: list[datetime]) -> None:
    engine = open_engine(home_url)
    try:
        keys = KeyRing(AccountStore(engine)).unlock(address, password)
        with reading(engine) as connection:
            account = find_account(connection, address)
        if account is None:
            raise BenchError(f"{address} has no account")
        key = keys.storage_key
        for start in range(0, len(mails), SEED_BATCH):
            batch = range(start, min(start + SEED_BATCH, len(mails)))
            prepared = [prepare_message(key, account.id, mails[n]) for n in batch]
            with writing(engine) as connection:
                folder = folder_row(connection, account.id, "INBOX", lock=True)
                for n, message in zip(batch, prepared, strict=True):
                    store_prepared(connection, folder.id, message, internal_date=dates[n])
                header_cache.extend(connection, key, account.id, folder.id)
    finally:
        engine.dispose()


async def seed_servers(
    bubble: Bubble, workdir: Path, count: int, mails: list[bytes], dates: list[datetime]
) -> tuple[list[dict[str, Any]], Dovecot | None]:
    """bob's INBOX seeded with `mails` on Sealgate and, when it can run here, on a fresh
    Dovecot started for it: the client job's "servers", and the Dovecot to stop."""
    address = f"bob@{DOMAIN}"
    password = bubble.passwords[address]
    await asyncio.to_thread(
        seed_store, gateway_database_url(bubble.home), address, password, mails, dates
    )
    servers: list[dict[str, Any]] = [{
        "name": "sealgate", "host": "127.0.0.1", "port": bubble.gateway.imap_port,
        "user": address, "password": password,
    }]
    if missing() is not None:
        return servers, None
    server = Dovecot(workdir / f"dovecot-{count}", {address: password},
                     tls=(bubble.cert, bubble.key), require_tls=True)
    server.seed(address, mails, dates)
    try:
        await start_dovecot(server)
    except BaseException:
        await asyncio.to_thread(server.stop)
        raise
    servers.append({"name": "dovecot", "host": "127.0.0.1", "port": server.port,
                    "user": address, "password": password})
    return servers, server


async def _measure(settings: Settings, count: int) -> list[Result]:
    workdir = settings.workdir
    log_to_file(workdir / f"bench-{count}.log")
    bubble = await start_bubble(workdir / f"bubble-{count}", ("bob",))
    mails, dates = messages(f"bob@{DOMAIN}", count)
    ops = ("header", "body") if count <= BODY_FETCH_UP_TO else ("header",)
    baseline_missing = missing()
    server: Dovecot | None = None
    try:
        servers, server = await seed_servers(bubble, workdir, count, mails, dates)
        cpu_ours = time.process_time()
        cpu_dovecot = server.cpu_seconds() if server is not None else 0.0
        answer = await run_client({
            "kind": "imap",
            "cafile": str(bubble.cert),
            "servers": servers,
            "messages": count,
            "body_bytes": sum(len(m) for m in mails),
            "reps": settings.reps,
            "ops": ops,
        })
        cpu_ours = time.process_time() - cpu_ours
        if server is not None:
            cpu_dovecot = server.cpu_seconds() - cpu_dovecot
    finally:
        if server is not None:
            await asyncio.to_thread(server.stop)
        await bubble.stop()
    if "error" in answer:
        raise BenchError(f"client failed: {answer['error']}")
    ours = answer["sealgate"]
    base = answer.get("dovecot")
    rounds = settings.reps + 1
    results: list[Result] = []
    for op in ops:
        for client in ("imaplib", "raw"):
            key = op if client == "imaplib" else "raw_" + op
            target = TARGETS[op] if client == "imaplib" else None
            case = f"{LABELS[op]}, {client}, {count:,} x 10 KB"
            notes: list[str] = []
            if not results and base is None:
                notes.append(f"baseline missing: {baseline_missing}")
            if client == "imaplib":
                cold = f"sealgate {format_value(ours['cold_' + op][0], 's')}"
                if base is not None:
                    cold += (f", dovecot {format_value(base['cold_' + op][0], 's')}"
                             " (Dovecot builds its index and cache here)")
                notes.append(f"first, untimed round: {cold}")
            elif op == ops[-1]:
                cpu = f"sealgate {cpu_ours:.2f} s"
                if base is not None:
                    cpu += f", dovecot {cpu_dovecot:.2f} s ({cpu_ours / cpu_dovecot:.1f}x)"
                notes.append(f"server CPU time over the whole client run ({rounds} rounds): "
                             f"{cpu}")
            if client == "raw" and op == "header":
                notes.append("raw: the client reads the answer's bytes up to the tagged OK "
                             "and parses nothing")
            if base is None:
                results.append(Result(NAME, case, "s", ours[key], "dovecot", None, None, target,
                                      tuple(notes)))
            else:
                results.append(Result(NAME, case, "s", ours[key], "dovecot 2.3", base[key],
                                      time_ratio(ours[key], base[key]), target, tuple(notes)))
    return results


def run(settings: Settings) -> list[Result]:
    counts = COUNTS[:1] if settings.quick else COUNTS
    return [row for count in counts for row in asyncio.run(_measure(settings, count))]
