"""relay_deposit: the CPU a relay spends per deposit of a 10 KB envelope, over bare HTTP's.

Relay: a `sealgate relay serve` process over SQLite + files, as an operator runs it,
with a quota (1 GiB, never reached) so that every deposit takes the quota path.
Baseline: a bare aiohttp server in its own process that reads the same POST and
answers it 201 with the same JSON, storing nothing: the floor of HTTP handling that
any relay on aiohttp pays. Clients, the same for both: 20 `RelayClient`s in two load
processes, each depositing signed envelopes of 10,000 bytes (10 KB) to its own
mailbox and waiting for each answer (on the relay: the envelope durable, fsync)
before the next. The figure is the server process's user plus system CPU time (from
/proc) per deposit, one sample per repetition, the two measured in alternating
order. CPU rather than time: on a machine whose cores other work shares, it moves
much less than a rate.

Ratio: the relay's CPU per deposit over the bare server's. Target <= 15: what a
deposit adds to HTTP handling (two signature checks, the file written and synced, its
row committed; deposits arriving together share a commit and their directories'
fsyncs, see `bridge.relay.storage.group_commit`) may cost at most fourteen times the
HTTP handling itself. Before commits were shared, statements compiled once and a
deposit took one thread hop instead of three, it was about 30 (docs/performance.md).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from bench.common import BenchError, Result, Settings, Target, time_ratio
from bench.relay_storage import Relays, _envelope
from bridge.keys import AccountKeys, GatewayCredential, RootKey
from bridge.relay.client import RelayClient

NAME = "relay_deposit"
CLIENTS = 20
LOAD_PROCESSES = 2
TARGET = Target("<=", 15.0)


async def _deposits(url: str, gateway: GatewayCredential, mailboxes: list[bytes],
                    each: int) -> int:
    async def one(mailbox_id: bytes) -> None:
        async with RelayClient(url, timeout=60) as client:
            for _ in range(each):
                await client.deposit(_envelope(mailbox_id)[1], gateway)

    await asyncio.gather(*(one(mailbox_id) for mailbox_id in mailboxes))
    return each * len(mailboxes)


def load(url: str, gateway: GatewayCredential, mailboxes: list[bytes], each: int) -> int:
    """Deposits made by one client per mailbox, `each` apiece (a load process)."""
    return asyncio.run(_deposits(url, gateway, mailboxes, each))


def _cpu_per_deposit(
    server: Relays | BareServer, pool: ProcessPoolExecutor, gateway: GatewayCredential,
    groups: list[list[bytes]], each: int,
) -> float:
    before = server.cpu_seconds()
    futures = [pool.submit(load, server.urls[0], gateway, group, each) for group in groups]
    deposits = sum(future.result() for future in futures)
    return (server.cpu_seconds() - before) / deposits


def run(settings: Settings) -> list[Result]:
    root = RootKey.generate()
    gateway = GatewayCredential.issue(root)
    mailboxes = [AccountKeys.generate().public.mailbox_id for _ in range(CLIENTS)]
    root_file = settings.workdir / "root.pub"
    root_file.write_text(root.public.hex())
    per_process = CLIENTS // LOAD_PROCESSES
    groups = [mailboxes[n * per_process:(n + 1) * per_process] for n in range(LOAD_PROCESSES)]
    each = (600 if settings.quick else 2000) // CLIENTS  # deposits per client and sample
    servers = {"relay": Relays(settings.workdir, root_file, "sqlite", 1, None)}
    try:
        servers["bare"] = BareServer()
        samples: dict[str, list[float]] = {name: [] for name in servers}
        with ProcessPoolExecutor(LOAD_PROCESSES) as pool:
            for server in servers.values():  # warm-up
                _cpu_per_deposit(server, pool, gateway, groups, 5)
            for rep in range(settings.reps):
                names = list(servers) if rep % 2 == 0 else list(reversed(servers))
                for name in names:
                    samples[name].append(
                        _cpu_per_deposit(servers[name], pool, gateway, groups, each)
                    )
    finally:
        for server in servers.values():
            server.stop()
    relay, bare = samples["relay"], samples["bare"]
    note = f"{CLIENTS} depositors in {LOAD_PROCESSES} processes, {os.cpu_count()} cores"
    return [Result(NAME, "sqlite + files, 20 depositors", "s", relay, "bare aiohttp POST",
                   bare, time_ratio(relay, bare), TARGET, (note,))]


_BARE_SERVER = """
import sys
from aiohttp import web

async def deposit(request):
    await request.read()
    return web.json_response({"id": "00" * 16}, status=201)

app = web.Application(client_max_size=1 << 20)
app.router.add_post("/v1/envelopes", deposit)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


class BareServer:
    """The baseline: an aiohttp server in its own process answering deposits unstored."""

    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        self.urls = [f"http://127.0.0.1:{port}"]
        self.proc = subprocess.Popen(  # noqa: S603 - fixed arguments
            [sys.executable, "-c", _BARE_SERVER, str(port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise BenchError("the bare HTTP server did not start") from None
                time.sleep(0.05)

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
