"""smtp_submission: messages per second accepted by the gateway's SMTP submission.

Ours: a real `gateway.service.Gateway` in this process on 127.0.0.1 (a bubble made
with `AdminHome.create`, a relay in its own `sealgate relay serve` process, as operators
run it, and `add_account`), the sender alice and the recipient bob both its accounts.
Each accepted message is checked against the From policy, sanitized, sealed for bob
and committed to the SQLite outbox with its Sent copy (synchronous=FULL, so fsynced;
concurrent sessions share commits) before the 250. The gateway's delivery process
deposits the envelopes on the relay meanwhile, and the relay process competes for the
same two cores: that is real load and it is in the figure. bob is never unlocked, so
nothing is fetched back. Logging runs at INFO into a file, as `sealgate` runs by
default (aiosmtpd's own logger at WARNING: see `bench.bubble`).

Baseline: aiosmtpd's `SMTP` with a handler that does nothing (250 for every DATA), on
the same loop, with the same TLS certificate and the same settings (STARTTLS required,
AUTH required and only over TLS, same size limit and SMTPUTF8), and an authenticator
that compares the credentials.

Load: one client process (`bench.clients`), 20 concurrent sessions, each doing
STARTTLS and AUTH PLAIN once and then sending its messages one transaction at a time,
in two styles: the lean asyncio client (one loop) and threaded `smtplib` (20 threads);
10 KB and 100 KB text messages. The clock runs from the moment all sessions are
authenticated to the last 250. Every message must get 250, or the benchmark errors.
Before each measurement the gateway's outbox is drained, so every one starts from the
same state; the time that takes after one gives the "accepted + deposited" row.

Ratio: our msg/s over the baseline's. Target (issue 7): >= 0.7 for accepted messages,
each size and client style (aim: 1.0, as fast as a server that does nothing). The
"accepted and deposited" rows (submission start to empty outbox) have no target.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from bench.bubble import DOMAIN, Bubble, log_to_file, start_bubble
from bench.clients import run_client
from bench.common import KB, BenchError, Result, Settings, Target, rate_ratio

NAME = "smtp_submission"
SIZES = (10 * KB, 100 * KB)
CLIENTS = ("asyncio", "smtplib")
SESSIONS = 20
TARGET = Target(">=", 0.7)


class DoNothingHandler:
    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        return "250 OK"


class CheckingAuthenticator:
    def __init__(self, login: str, password: str) -> None:
        self._login = login.encode()
        self._password = password.encode()

    def __call__(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and data.login == self._login
            and data.password == self._password
        )
        return AuthResult(success=ok)


def count_relay_envelopes(relay_home: Path) -> int:
    return sum(1 for path in (relay_home / "envelopes").glob("*/*") if path.is_file())


async def _measure(settings: Settings) -> list[Result]:
    log_to_file(settings.workdir / "bench.log")
    # alice sends thousands of messages here: no per-account submission limit in the way;
    # and all sessions log in at once: room for every AUTH in the login queue.
    bubble: Bubble = await start_bubble(
        settings.workdir / "bubble", ("alice", "bob"), submission_limit=2**31,
        kdf_queue=SESSIONS,
    )
    sender, recipient = f"alice@{DOMAIN}", f"bob@{DOMAIN}"
    loop = asyncio.get_running_loop()
    tls = bubble.server_tls()
    cfg = bubble.gateway.config
    baseline_server = await loop.create_server(
        lambda: SMTP(
            DoNothingHandler(),
            hostname=cfg.hostname,
            ident="Baseline ESMTP",
            tls_context=tls,
            require_starttls=True,
            auth_required=True,
            auth_require_tls=True,
            authenticator=CheckingAuthenticator(sender, bubble.passwords[sender]),
            data_size_limit=cfg.max_message_bytes,
            enable_SMTPUTF8=True,
            timeout=cfg.smtp_timeout,
        ),
        "127.0.0.1",
        0,
    )
    ports = {
        "baseline": int(baseline_server.sockets[0].getsockname()[1]),
        "sealgate": bubble.gateway.smtp_port,
    }
    cases = [(client, size) for size in SIZES for client in CLIENTS]
    rates: dict[tuple[str, int], dict[str, list[float]]] = {
        case: {"baseline": [], "sealgate": []} for case in cases
    }
    end_to_end: dict[tuple[str, int], list[float]] = {case: [] for case in cases}
    expected = 0
    try:
        for rep in range(settings.reps):
            order = ["baseline", "sealgate"] if rep % 2 == 0 else ["sealgate", "baseline"]
            for client, size in cases:
                total = SESSIONS * _per_session(size, settings.quick)
                for name in order:
                    await bubble.wait_outbox_empty(timeout=300)
                    answer = await run_client({
                        "kind": "smtp",
                        "client": client,
                        "host": "127.0.0.1",
                        "port": ports[name],
                        "cafile": str(bubble.cert),
                        "user": sender,
                        "password": bubble.passwords[sender],
                        "sender": sender,
                        "recipient": recipient,
                        "sessions": SESSIONS,
                        "per_session": total // SESSIONS,
                        "size": size,
                    })
                    if "error" in answer:
                        raise BenchError(f"{name}: client failed: {answer['error']}")
                    if answer["accepted"] != total:
                        raise BenchError(
                            f"{name}: {answer['accepted']} of {total} messages got 250; "
                            f"first other reply: {answer['first_error']}"
                        )
                    rates[client, size][name].append(total / answer["elapsed"])
                    if name == "sealgate":
                        expected += total
                        drained = await bubble.wait_outbox_empty(timeout=300)
                        end_to_end[client, size].append(total / (answer["elapsed"] + drained))
        deposited = count_relay_envelopes(bubble.root / "relay")
        if deposited != expected:
            raise BenchError(f"the relay holds {deposited} envelopes, expected {expected}")
    finally:
        baseline_server.close()
        await baseline_server.wait_closed()
        await bubble.stop()
    note = "delivery in the gateway's delivery process; relay in its own, on the same cores"
    results: list[Result] = []
    for client, size in cases:
        case = (f"{size // KB} KB x {SESSIONS} sessions, {client} client, "
                f"{SESSIONS * _per_session(size, settings.quick)} msgs")
        ours, base = rates[client, size]["sealgate"], rates[client, size]["baseline"]
        results += [
            Result(NAME, f"{case}: accepted (250)", "msg/s", ours, "aiosmtpd do-nothing", base,
                   rate_ratio(ours, base), TARGET, (note,)),
            Result(NAME, f"{case}: accepted + deposited", "msg/s", end_to_end[client, size],
                   "aiosmtpd do-nothing", base, rate_ratio(end_to_end[client, size], base),
                   None, ("submission start to empty outbox",)),
        ]
    return results


def _per_session(size: int, quick: bool) -> int:
    if size >= 100 * KB:
        return 5 if quick else 15
    return 15 if quick else 50


def run(settings: Settings) -> list[Result]:
    return asyncio.run(_measure(settings))
