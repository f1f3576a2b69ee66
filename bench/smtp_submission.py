"""smtp_submission: messages per second accepted by the gateway's SMTP submission.

Ours: a real `gateway.service.Gateway` in this process on 127.0.0.1 (a bubble made
with `AdminHome.create`, a relay in its own `sealgate relay serve` process, as operators
run it, and `add_account`), the sender alice and
the recipient bob both its accounts. Each accepted message is checked against the
From policy, sanitized, sealed for bob and committed to the SQLite outbox
(synchronous=FULL, so fsynced; concurrent sessions share commits) before the 250. The
delivery worker deposits the envelopes on the relay meanwhile, from the same process
and event loop, and the relay process competes for the same two cores: that is real
load and it is in the figure. bob is never unlocked, so nothing is
fetched back. Logging runs at INFO into a file, as `sealgate` runs by default
(aiosmtpd's own logger at WARNING: see `bench.bubble`).

Baseline: aiosmtpd's `SMTP` with a handler that does nothing (250 for every DATA), on
the same loop, with the same TLS certificate and the same settings (STARTTLS required,
AUTH required and only over TLS, same size limit and SMTPUTF8), and an authenticator
that compares the credentials.

Load: one client process (`bench.clients`), 20 concurrent sessions, each doing
STARTTLS and AUTH PLAIN once and then sending its messages one transaction at a time;
10 KB (10,000-byte) text messages. The clock runs from the moment all sessions are
authenticated to the last 250. Every message must get 250, or the benchmark errors.
Before each repetition the gateway's outbox is drained, so every repetition starts
from the same state; the time that takes after a repetition gives the second row.

Ratio: our msg/s over the baseline's. Target: >= 0.5 for accepted messages (the
baseline is the ceiling of any aiosmtpd-based server; sealing, policy and a durable
commit per message may cost at most half of it). The "accepted and deposited" row
(submission start to empty outbox) is shown without a target.
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
SIZE = 10 * KB
SESSIONS = 20
TARGET = Target(">=", 0.5)


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
    # alice sends thousands of messages here: no per-account submission limit in the way.
    bubble: Bubble = await start_bubble(
        settings.workdir / "bubble", ("alice", "bob"), submission_limit=2**31
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
    per_session = 15 if settings.quick else 50
    total = SESSIONS * per_session
    rates: dict[str, list[float]] = {"baseline": [], "sealgate": []}
    end_to_end: list[float] = []
    try:
        for rep in range(settings.reps):
            order = ["baseline", "sealgate"] if rep % 2 == 0 else ["sealgate", "baseline"]
            for name in order:
                await bubble.wait_outbox_empty(timeout=300)
                answer = await run_client({
                    "kind": "smtp",
                    "host": "127.0.0.1",
                    "port": ports[name],
                    "cafile": str(bubble.cert),
                    "user": sender,
                    "password": bubble.passwords[sender],
                    "sender": sender,
                    "recipient": recipient,
                    "sessions": SESSIONS,
                    "per_session": per_session,
                    "size": SIZE,
                })
                if "error" in answer:
                    raise BenchError(f"{name}: client failed: {answer['error']}")
                if answer["accepted"] != total:
                    raise BenchError(
                        f"{name}: {answer['accepted']} of {total} messages got 250; "
                        f"first other reply: {answer['first_error']}"
                    )
                rates[name].append(total / answer["elapsed"])
                if name == "sealgate":
                    drained = await bubble.wait_outbox_empty(timeout=300)
                    end_to_end.append(total / (answer["elapsed"] + drained))
        deposited = count_relay_envelopes(bubble.root / "relay")
        if deposited != total * settings.reps:
            raise BenchError(f"the relay holds {deposited} envelopes, expected "
                             f"{total * settings.reps}")
    finally:
        baseline_server.close()
        await baseline_server.wait_closed()
        await bubble.stop()
    case = f"10 KB x {SESSIONS} sessions, {total} msgs"
    note = "delivery worker in the gateway's loop; relay in its own process on the same cores"
    return [
        Result(NAME, f"{case}: accepted (250)", "msg/s", rates["sealgate"],
               "aiosmtpd do-nothing", rates["baseline"],
               rate_ratio(rates["sealgate"], rates["baseline"]), TARGET, (note,)),
        Result(NAME, f"{case}: accepted + deposited", "msg/s", end_to_end,
               "aiosmtpd do-nothing", rates["baseline"],
               rate_ratio(end_to_end, rates["baseline"]), None,
               ("submission start to empty outbox",)),
    ]


def run(settings: Settings) -> list[Result]:
    return asyncio.run(_measure(settings))
