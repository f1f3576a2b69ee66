"""login_flood: a logged-in session's SMTP submission and IMAP NOOP during a login flood.

Ours: a real `gateway.service.Gateway` in this process (`bench.bubble`), accounts sealed
at the default moderate Argon2id cost (~0.5 s and 256 MiB per check), the default two
Argon2id threads; blocking and delays are turned off (`login_block_failures` huge,
`login_failure_delay` 0) so that the flood is as heavy as it can be. A flood process
keeps `FLOODERS` IMAP connections doing STARTTLS and a wrong-password LOGIN for bob, as
fast as the gateway answers, so the Argon2id pool is always full. Meanwhile alice,
logged in before the flood, submits 10 KB messages to bob over SMTP one at a time (each
sealed and committed to the outbox before its 250) and sends IMAP NOOPs.

Baseline: the same submissions and NOOPs of the same sessions with no flood, measured
in alternation with the flooded ones.

Ratio: our median seconds per submission (and per NOOP) over the baseline's. Target:
<= 3. The flood's two Argon2id threads take both cores of a small machine, so the
event loop gets a share of the CPU, not all of it; what must not happen is what
happened when Argon2id shared the default executor with sealing: a submission waiting
behind every queued login (seconds per message).
"""

from __future__ import annotations

import asyncio
import imaplib
import smtplib
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench.bubble import DOMAIN, Bubble, log_to_file, start_bubble
from bench.common import KB, Result, Settings, Target, make_message, time_ratio
from bridge.keys import KdfCost

NAME = "login_flood"
FLOODERS = 8
TARGET = Target("<=", 3.0)


def flood(port: int, cafile: str, user: str) -> None:
    """Wrong-password IMAP logins from FLOODERS threads until this process is killed."""
    context = ssl.create_default_context(cafile=cafile)
    context.check_hostname = False

    def one_flooder() -> None:
        while True:
            imap = imaplib.IMAP4("127.0.0.1", port, timeout=120)
            imap.starttls(ssl_context=context)
            try:
                imap.login(user, "not the password")
            except imaplib.IMAP4.error:
                pass
            imap.logout()

    threads = [threading.Thread(target=one_flooder, daemon=True) for _ in range(FLOODERS)]
    for thread in threads:
        thread.start()
    threads[0].join()


def _client_tls(bubble: Bubble) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(bubble.cert))
    context.check_hostname = False
    return context


def _sessions(bubble: Bubble, sender: str) -> tuple[smtplib.SMTP, imaplib.IMAP4]:
    gateway = bubble.gateway
    smtp = smtplib.SMTP("127.0.0.1", gateway.smtp_port, timeout=120)
    smtp.starttls(context=_client_tls(bubble))
    smtp.login(sender, bubble.passwords[sender])
    imap = imaplib.IMAP4("127.0.0.1", gateway.imap_port, timeout=120)
    imap.starttls(ssl_context=_client_tls(bubble))
    imap.login(sender, bubble.passwords[sender])
    imap.select("INBOX")
    return smtp, imap


def _round(
    smtp: smtplib.SMTP, imap: imaplib.IMAP4, sender: str, recipient: str, count: int
) -> tuple[float, float]:
    """Seconds per submission and per NOOP, `count` of each, one after the other."""
    submit = noop = 0.0
    for n in range(count):
        message = make_message(10 * KB, sender=sender, recipient=recipient, number=n)
        start = time.perf_counter()
        refused = smtp.sendmail(sender, [recipient], message)
        submit += time.perf_counter() - start
        if refused:
            raise AssertionError(f"a submission was refused: {refused}")
        start = time.perf_counter()
        if imap.noop()[0] != "OK":
            raise AssertionError("NOOP did not answer OK")
        noop += time.perf_counter() - start
    return submit / count, noop / count


async def _measure(settings: Settings) -> list[Result]:
    log_to_file(settings.workdir / "bench.log")
    bubble = await start_bubble(
        settings.workdir / "bubble",
        ("alice", "bob"),
        cost=KdfCost.moderate(),
        login_block_failures=1_000_000,
        login_failure_delay=0.0,
        kdf_queue=64,
    )
    sender, recipient = f"alice@{DOMAIN}", f"bob@{DOMAIN}"
    count = 5 if settings.quick else 20
    samples: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    try:
        smtp, imap = await asyncio.to_thread(_sessions, bubble, sender)
        for rep in range(settings.reps):
            for flooded in (False, True) if rep % 2 == 0 else (True, False):
                flooder = _start_flood(bubble, recipient) if flooded else None
                try:
                    if flooder is not None:
                        await _wait_for_full_pool(bubble)
                    samples[flooded].append(
                        await asyncio.to_thread(_round, smtp, imap, sender, recipient, count)
                    )
                finally:
                    if flooder is not None:
                        flooder.kill()
                        flooder.wait()
        await asyncio.to_thread(smtp.quit)
        await asyncio.to_thread(imap.logout)
    finally:
        await bubble.stop()
    results = []
    for index, case in ((0, "SMTP submission, 10 KB"), (1, "IMAP NOOP")):
        ours = [s[index] for s in samples[True]]
        quiet = [s[index] for s in samples[False]]
        results.append(
            Result(NAME, f"{case}, {FLOODERS} flooders", "s", ours, "no flood", quiet,
                   time_ratio(ours, quiet), TARGET)
        )
    return results


def _start_flood(bubble: Bubble, user: str) -> subprocess.Popen[bytes]:
    code = (
        "from bench.login_flood import flood; "
        f"flood({bubble.gateway.imap_port}, {str(bubble.cert)!r}, {user!r})"
    )
    return subprocess.Popen(  # noqa: S603 - our own module, fixed arguments
        [sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


async def _wait_for_full_pool(bubble: Bubble) -> None:
    """Until the flood keeps both Argon2id threads busy and logins waiting."""
    gate = bubble.gateway.gate
    assert gate is not None
    deadline = time.perf_counter() + 60
    while gate.pool.in_pool <= 2:
        if time.perf_counter() > deadline:
            raise AssertionError("the flood never filled the Argon2id pool")
        await asyncio.sleep(0.05)


def run(settings: Settings) -> list[Result]:
    return asyncio.run(_measure(settings))
