"""relay_storage: deposit, list, fetch and ack of 10 KB envelopes by 20 concurrent clients,
on a relay over SQLite + files, over PostgreSQL, and on two relays sharing PostgreSQL.

Relays: `sealgate relay serve` processes as an operator runs them, each with a quota
(1 GiB, never reached) so that every deposit takes the quota path (on PostgreSQL the
quota lock, held to the commit). PostgreSQL is the server at 127.0.0.1:5432 (trust
auth; SEALGATE_BENCH_POSTGRES overrides the URL), in a database of its own per run.

Clients: two load processes of ten clients each (`RelayClient`, signed HTTP on
loopback), each client with its own mailbox, repeating one cycle: deposit one
envelope of 10,000 bytes (10 KB), list its mailbox, fetch what is listed, acknowledge
it: four requests, the envelope durable on the relay (fsync) before its deposit is
answered. Clients are spread round robin over the relays of a case. The figure is
cycles per second over a timed window after a warm-up, one sample per repetition,
the cases measured in alternating order. A note gives the CPU time the relay
processes of each case spent per cycle (from /proc), which moves less than the rate
on a machine whose cores other work shares.

Rows and ratios:
- "postgresql, 1 relay": its rate over SQLite + files' (one relay process each).
  Target >= 0.5: the database adds a network round trip and a server process per
  statement, and keeps the bytes in its own WAL and heap, but must stay within a
  factor two of the embedded backend.
- "postgresql storage, quota": `PostgresStorage.put` of 10 KB envelopes from six
  threads (a relay's worker threads) under a quota never reached, over the same
  without a quota: what the quota lock, held to each deposit's commit, costs. No
  target; it bounds the deposits per second of all relays on one database together.
- "postgresql, 2 relays": its rate over one relay's on the same database. No target
  on this machine: relays, database and load generators share two cores, so a second
  relay process can only take CPU from the others; the row shows whether the shared
  database (one quota lock, counter rows) costs anything when processes are added.
  On separate hosts the relays' CPU, not the database, is what a second relay adds.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

from bench.common import KB, BenchError, Result, Settings, Target, median, rate_ratio
from bridge.envelope import OUTER_HEADER_LEN, OuterHeader
from bridge.keys import AccountKeys, GatewayCredential, RootKey
from bridge.relay.client import RelayClient

NAME = "relay_storage"
CLIENTS = 20
LOAD_PROCESSES = 2
ENVELOPE_BYTES = 10 * KB
TARGET_POSTGRES = Target(">=", 0.5)
STORAGE_THREADS = 6  # asyncio's default executor on two cores: a relay's storage threads
POSTGRES = os.environ.get(
    "SEALGATE_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def _envelope(mailbox_id: bytes) -> tuple[bytes, bytes]:
    envelope_id = os.urandom(16)
    ciphertext = os.urandom(ENVELOPE_BYTES - OUTER_HEADER_LEN)
    return envelope_id, OuterHeader(envelope_id, mailbox_id, len(ciphertext)).pack() + ciphertext


async def _cycles(
    urls: list[str], gateway: GatewayCredential, seeds: list[bytes], start: float,
    warmup: float, duration: float,
) -> int:
    done = 0
    window = (start + warmup, start + warmup + duration)

    async def one(n: int, seed: bytes) -> None:
        nonlocal done
        account = AccountKeys(seed)
        mailbox = account.mailbox
        async with RelayClient(urls[n % len(urls)], timeout=60) as client:
            await asyncio.sleep(max(0.0, start - time.time()))
            while time.time() < window[1]:
                envelope_id, data = _envelope(account.public.mailbox_id)
                await client.deposit(data, gateway)
                for info in await client.list(mailbox):
                    if await client.fetch(mailbox, info.envelope_id) != data:
                        raise BenchError("a fetched envelope differs from the deposit")
                    await client.ack(mailbox, info.envelope_id)
                if window[0] <= time.time() <= window[1]:
                    done += 1

    await asyncio.gather(*(one(n, seed) for n, seed in enumerate(seeds)))
    return done


def load(
    urls: list[str], gateway: GatewayCredential, seeds: list[bytes], start: float,
    warmup: float, duration: float,
) -> int:
    """Cycles that `seeds`' clients completed in the timed window (a load process)."""
    return asyncio.run(_cycles(urls, gateway, seeds, start, warmup, duration))


class Relays:
    """Relay processes of one case, started on free ports, stopped together."""

    def __init__(self, workdir: Path, root_file: Path, name: str, count: int,
                 db: str | None) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.urls: list[str] = []
        for n in range(count):
            home = workdir / f"{name}-{n}"
            log = (workdir / f"{name}-{n}.log").open("wb")
            args = [sys.executable, "-m", "gateway.cli", "relay", "serve", "--home", str(home),
                    "--listen", "127.0.0.1:0", "--trust-root", str(root_file),
                    "--quota", "1GiB"]
            if db is not None:
                args += ["--db", db]
            proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log)  # noqa: S603
            self.procs.append(proc)
            assert proc.stdout is not None
            line = proc.stdout.readline().decode()  # "relay listening on http://HOST:PORT"
            if "listening on" not in line:
                self.stop()
                raise BenchError(f"relay {name} did not start: see {log.name}")
            self.urls.append(line.split()[-1])

    def cpu_seconds(self) -> float:
        """User plus system CPU time the relay processes have used so far (Linux /proc)."""
        total = 0
        for proc in self.procs:
            fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
        return total / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.wait(timeout=30)


def _database(name: str, action: str) -> str:
    """Create or drop a database `name` on the bench's PostgreSQL; its URL."""
    import sqlalchemy as sa

    from bridge.relay.storage.postgres import engine_url

    admin = sa.create_engine(engine_url(POSTGRES), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f"{action} DATABASE {name}"))
    except sa.exc.OperationalError as exc:
        raise BenchError(f"PostgreSQL at {POSTGRES}: {str(exc.orig).splitlines()[0]}") from None
    finally:
        admin.dispose()
    return str(sa.make_url(POSTGRES).set(database=name).render_as_string(hide_password=False))


def storage_puts(quota: int | None, count: int) -> float:
    """Deposits per second into PostgresStorage, in a database of its own, from
    STORAGE_THREADS threads."""
    from bridge.relay.storage.postgres import PostgresStorage

    name = f"sg_bench_{secrets.token_hex(4)}_storage"
    store = PostgresStorage(_database(name, "CREATE"), quota=quota)
    gateway, mailbox_id = os.urandom(32), os.urandom(32)
    items = [_envelope(mailbox_id) for _ in range(count)]
    try:
        with ThreadPoolExecutor(STORAGE_THREADS) as pool:
            start = time.perf_counter()
            list(pool.map(lambda item: store.put(mailbox_id, item[0], item[1], 0, gateway),
                          items))
            return count / (time.perf_counter() - start)
    finally:
        store.close()
        _database(name, "DROP")


def run(settings: Settings) -> list[Result]:
    root = RootKey.generate()
    gateway = GatewayCredential.issue(root)
    seeds = [AccountKeys.generate().seed for _ in range(CLIENTS)]
    root_file = settings.workdir / "root.pub"
    root_file.write_text(root.public.hex())
    warmup, duration = (1.0, 3.0) if settings.quick else (2.0, 8.0)
    databases = [f"sg_bench_{secrets.token_hex(4)}_{n}" for n in (1, 2)]
    urls = [_database(name, "CREATE") for name in databases]
    cases: dict[str, Relays] = {}
    cases_stopped = False
    try:
        cases["sqlite, 1 relay"] = Relays(settings.workdir, root_file, "sqlite", 1, None)
        cases["postgresql, 1 relay"] = Relays(settings.workdir, root_file, "pg1", 1, urls[0])
        cases["postgresql, 2 relays"] = Relays(settings.workdir, root_file, "pg2", 2, urls[1])
        samples: dict[str, list[float]] = {name: [] for name in cases}
        cpu_per_cycle: dict[str, list[float]] = {name: [] for name in cases}
        per_process = CLIENTS // LOAD_PROCESSES
        with ProcessPoolExecutor(LOAD_PROCESSES) as pool:
            for rep in range(settings.reps):
                names = list(cases) if rep % 2 == 0 else list(reversed(cases))
                for name in names:
                    start = time.time() + 0.5
                    futures = [
                        pool.submit(load, cases[name].urls, gateway,
                                    seeds[n * per_process:(n + 1) * per_process], start,
                                    warmup, duration)
                        for n in range(LOAD_PROCESSES)
                    ]
                    cpu = cases[name].cpu_seconds()
                    cycles = sum(f.result() for f in futures)
                    samples[name].append(cycles / duration)
                    # Over the whole run of the load (warm-up included), per timed cycle.
                    cpu_per_cycle[name].append(
                        (cases[name].cpu_seconds() - cpu) / max(cycles, 1)
                        * duration / (warmup + duration)
                    )
        for relays in cases.values():
            relays.stop()
        cases_stopped = True
        puts = 100 if settings.quick else 300
        locked: list[float] = []
        unlocked: list[float] = []
        for rep in range(settings.reps):  # the two alternate
            order = [(locked, 2**40), (unlocked, None)]
            for samples_of, quota in order if rep % 2 == 0 else reversed(order):
                samples_of.append(storage_puts(quota, puts))
    finally:
        if not cases_stopped:
            for relays in cases.values():
                relays.stop()
        for name in databases:
            _database(name, "DROP")
    sqlite, pg1, pg2 = (samples[name] for name in cases)
    note = f"{CLIENTS} clients in {LOAD_PROCESSES} processes; a cycle is 4 requests"
    cpu = "relay CPU per cycle (all its processes): " + ", ".join(
        f"{name} {median(values) * 1e3:.1f} ms" for name, values in cpu_per_cycle.items()
    )
    return [
        Result(NAME, "postgresql, 1 relay", "msg/s", pg1, "sqlite + files, 1 relay", sqlite,
               rate_ratio(pg1, sqlite), TARGET_POSTGRES, (note,)),
        Result(NAME, "postgresql storage, quota", "msg/s", locked,
               "postgresql storage, no quota", unlocked, rate_ratio(locked, unlocked), None,
               (f"PostgresStorage.put, 10 KB, {STORAGE_THREADS} threads",)),
        Result(NAME, "postgresql, 2 relays", "msg/s", pg2, "postgresql, 1 relay", pg1,
               rate_ratio(pg2, pg1), None, (cpu,)),
    ]
