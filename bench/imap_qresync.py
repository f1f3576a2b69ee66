"""imap_qresync: resyncing an unchanged mailbox with QRESYNC (RFC 7162), against Dovecot.

A client that cached a mailbox reconnects and sends `EXAMINE INBOX (QRESYNC
(uidvalidity modseq))` with what it saw last; nothing changed since, so the answer is
the usual EXAMINE responses and no VANISHED or FETCH. Issue 6 asks that this answer
"in a few milliseconds" for 10,000 messages: the resync itself costs O(changes) (one
`changes_since` that finds nothing), and EXAMINE's folder metadata comes from the
process's snapshot cache (`gateway.store.snapshots`) brought up to date by modseq. The
client's first EXAMINE (untimed, at login) is the one that fills it: a gateway that
has not opened the folder since it started reads every row once (cold), as Dovecot
reads its index file from disk.

Ours: a real `gateway.service.Gateway` in this process (`bench.bubble`), bob's INBOX
seeded as `bench.imap_fetch` seeds it (10 KB messages, sealed at rest). Baseline:
Dovecot 2.3 (`tests/dovecot.py`) on the same messages in a Maildir, same certificate and
STARTTLS. Without Dovecot (or root) the baseline is reported missing.

Load: one imaplib client in a separate process (`bench.clients`, kind "qresync"):
STARTTLS, LOGIN, ENABLE QRESYNC, EXAMINE INBOX, then an untimed round and `reps`
timed rounds alternating between the servers, each answer read raw up to the tagged
OK. Folder sizes: 10,000 messages (`--quick`: 2,000 only), each a fresh bubble and a
fresh Dovecot.

Ratio: our median time over Dovecot's; target <= 3.
"""

from __future__ import annotations

import asyncio

from bench.bubble import DOMAIN, log_to_file, start_bubble
from bench.clients import run_client
from bench.common import BenchError, Result, Settings, Target, time_ratio
from bench.imap_fetch import messages, seed_servers
from tests.dovecot import Dovecot, missing

NAME = "imap_qresync"
COUNTS = (10000,)
QUICK_COUNTS = (2000,)
TARGET = Target("<=", 3.0)


async def _measure(settings: Settings, count: int) -> Result:
    workdir = settings.workdir
    log_to_file(workdir / f"bench-{count}.log")
    bubble = await start_bubble(workdir / f"bubble-{count}", ("bob",))
    mails, dates = messages(f"bob@{DOMAIN}", count)
    server: Dovecot | None = None
    try:
        servers, server = await seed_servers(bubble, workdir, count, mails, dates)
        answer = await run_client({
            "kind": "qresync",
            "cafile": str(bubble.cert),
            "servers": servers,
            "messages": count,
            "reps": settings.reps,
        })
    finally:
        if server is not None:
            await asyncio.to_thread(server.stop)
        await bubble.stop()
    if "error" in answer:
        raise BenchError(f"client failed: {answer['error']}")
    case = f"QRESYNC resync, unchanged, {count:,} x 10 KB"
    notes = ("EXAMINE INBOX (QRESYNC (uidvalidity modseq)) after ENABLE QRESYNC, read raw",)
    base = answer.get("dovecot")
    if base is None:
        return Result(NAME, case, "s", answer["sealgate"], "dovecot", None, None, TARGET,
                      (*notes, f"baseline missing: {missing()}"))
    return Result(NAME, case, "s", answer["sealgate"], "dovecot 2.3", base,
                  time_ratio(answer["sealgate"], base), TARGET, notes)


def run(settings: Settings) -> list[Result]:
    counts = QUICK_COUNTS if settings.quick else COUNTS
    return [asyncio.run(_measure(settings, count)) for count in counts]
