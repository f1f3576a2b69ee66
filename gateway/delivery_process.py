"""The delivery worker in a process of its own, beside the gateway's.

The gateway's event loop answers SMTP and IMAP. Depositing envelopes on relays (HTTP
requests, their signatures, the outbox's transactions) on the same loop took a third
to a half of submission's throughput: it competes for the interpreter lock and for
the core. `DeliveryProcess` runs `gateway.delivery.DeliveryWorker` in a child process
(`python -m gateway.delivery_process`: a fresh interpreter, no inherited threads, loop
or connections) over the same store; SQLite in WAL mode and PostgreSQL both serve two
processes, and the outbox's guarantees do not depend on which process delivers (an
entry goes only once a relay acknowledged it).

The child also holds what deposits need and nothing else does: the relay clients, the
smarthost client (`gateway.pgp.smarthost`) and the relay drains read from the
directory replica (`gateway.drains`).

The gateway sends the child its settings and then wakes it through the child's
standard input, one byte per turn of the event loop that accepted messages; a wake
that finds the pipe full is dropped, since one is pending then anyway. The child ends
when the pipe closes: when the gateway stops, or when it dies. It runs `delivery_nice`
steps below the gateway's CPU priority: when both want the cores (a burst of
submissions), the gateway answers its clients first and the deposits follow as soon
as it leaves CPU to spare; with CPU to spare, nothing waits. Its log records go to
standard error at the gateway's level, in the CLI's format.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import signal
import subprocess
import sys

from bridge.relay.client import RelayClient
from gateway.config import GatewayConfig
from gateway.delivery import DeliveryWorker
from gateway.drains import RelayDrains
from gateway.homes import Membership, gateway_database_url
from gateway.pgp.smarthost import SMARTHOST, SmarthostClient, job_box
from gateway.pgp.wiring import smarthost_settings
from gateway.store.accounts import AccountStore
from gateway.store.db import open_engine
from gateway.store.directory_cache import DirectoryCache
from gateway.store.outbox import Outbox

log = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
STOP_SECONDS = 5.0  # for the child to finish the deposits in flight; killing it loses nothing
_LENGTH = 8  # bytes of the settings' length, before them on the pipe


class DeliveryProcess:
    def __init__(self, config: GatewayConfig) -> None:
        self._config = config
        self._process: subprocess.Popen[bytes] | None = None
        self._wake_fd: int | None = None
        self._wake_due = False

    def start(self) -> None:
        """Start the child: `python -m gateway.delivery_process`, its standard input the
        pipe that carries its settings, then the wakes."""
        self._process = process = subprocess.Popen(  # noqa: S603 - our own module
            [sys.executable, "-m", "gateway.delivery_process"], stdin=subprocess.PIPE,
        )
        assert process.stdin is not None  # noqa: S101 - stdin=PIPE
        # Set here, not by the child, so that it holds from the child's first instruction.
        nice = min(19, os.getpriority(os.PRIO_PROCESS, 0) + self._config.delivery_nice)
        os.setpriority(os.PRIO_PROCESS, process.pid, nice)
        settings = pickle.dumps((self._config, logging.getLogger().level))
        process.stdin.write(len(settings).to_bytes(_LENGTH, "big") + settings)
        process.stdin.flush()
        self._wake_fd = process.stdin.fileno()
        os.set_blocking(self._wake_fd, False)

    def wake(self) -> None:
        """Wake the child once for all messages accepted in this turn of the event loop
        (a group commit answers many at once)."""
        if self._wake_fd is None or self._wake_due:
            return
        self._wake_due = True
        asyncio.get_running_loop().call_soon(self._send_wake)

    def _send_wake(self) -> None:
        self._wake_due = False
        if self._wake_fd is None:
            return
        with contextlib.suppress(BlockingIOError, BrokenPipeError):  # full: one is pending
            os.write(self._wake_fd, b"\0")

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        self._wake_fd = None
        assert process.stdin is not None  # noqa: S101 - stdin=PIPE
        with contextlib.suppress(OSError):
            process.stdin.close()  # the child's end of input: it stops
        try:
            await asyncio.to_thread(process.wait, STOP_SECONDS)
        except subprocess.TimeoutExpired:
            log.warning("delivery: the delivery process did not stop; killing it")
            process.kill()
            await asyncio.to_thread(process.wait)


def _read_exactly(fd: int, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        if not chunk:
            raise SystemExit(0)  # the gateway went before it sent the settings
        data += chunk
    return data


def main() -> None:
    # Ctrl-C reaches the whole process group: the gateway stops this process itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    fd = sys.stdin.fileno()
    size = int.from_bytes(_read_exactly(fd, _LENGTH), "big")
    # The settings come from the parent gateway, over a pipe only it holds.
    config, level = pickle.loads(_read_exactly(fd, size))  # noqa: S301
    logging.basicConfig(level=level, stream=sys.stderr, format=LOG_FORMAT)
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    asyncio.run(_deliver(config, fd))


async def _deliver(config: GatewayConfig, fd: int) -> None:
    membership = Membership.load(config.home)
    engine = open_engine(gateway_database_url(config.home))
    accounts = AccountStore(engine)
    clients: dict[str, RelayClient] = {}
    smarthost = SmarthostClient(smarthost_settings(config), job_box(membership.credential.seed))
    drains = RelayDrains(
        DirectoryCache(engine),
        lambda: [*membership.relays, *(url for a in accounts.all() for url in a.relays)],
        membership.directory_key,
        (membership.root_public,),
        interval=config.directory_sync_interval,
    )

    def depositor_for(url: str) -> RelayClient | SmarthostClient:
        """Where an outbox entry goes: a relay, or the smarthost."""
        if url == SMARTHOST:
            return smarthost
        if url not in clients:
            clients[url] = RelayClient(
                url, timeout=config.relay_timeout, ca_file=config.relay_ca_file
            )
        return clients[url]

    worker = DeliveryWorker(
        Outbox(engine),
        membership.credential,
        depositor_for,
        retry_initial=config.retry_initial,
        retry_max=config.retry_max,
        concurrency=config.delivery_concurrency,
        batch_bytes=config.delivery_batch_bytes,
        status_check_interval=config.status_check_interval,
        give_up=config.delivery_give_up,
        drained=drains.drained,
        is_smarthost=lambda url: url == SMARTHOST,
    )
    loop = asyncio.get_running_loop()
    closed = loop.create_future()
    os.set_blocking(fd, False)

    def readable() -> None:
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return
        if data:
            worker.wake()
        elif not closed.done():
            loop.remove_reader(fd)
            closed.set_result(None)

    loop.add_reader(fd, readable)
    tasks = [
        asyncio.create_task(drains.run(), name="relay-drains"),
        asyncio.create_task(worker.run(), name="delivery"),
    ]
    try:
        await closed
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for client in clients.values():
            await client.close()
        engine.dispose()


if __name__ == "__main__":
    main()
