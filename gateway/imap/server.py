"""The IMAP listener: the only module here that owns sockets.

Holds `ImapServer` (asyncio streams; STARTTLS and implicit TLS; connection limit; idle
timeout; BYE to everyone on stop). Per connection it pumps bytes between the socket and
`protocol.ImapServerConnection`, hands commands to `session.ImapState`, and carries out
what the session asks for: login (Argon2id, slow; only then may an APPEND literal grow
from `max_literal` to `max_append`) through the `LoginGate` with the
client's peer name (the gate throttles by it and runs Argon2id in its own pool), the TLS
upgrade, and IDLE (reading DONE while pushing what storage signals changed).

Nothing blocks the event loop. The storage Protocol is synchronous, and a call may wait
(a SQLite write lock another connection holds, up to the busy timeout; a slow
PostgreSQL), so every command a session handles, and every lazy response it yields
(FETCH reads and decrypts batch by batch as it is sent), runs in the server's own thread
pool of `ImapConfig.storage_threads` workers. A connection makes one such call at a
time and awaits it, so its `ImapState` is never touched by two threads at once; while
one connection waits on a lock, the loop goes on serving every other IMAP and SMTP
session, and at most `storage_threads` storage calls run at once (the rest queue). On
the loop run only the protocol layer's framing and parsing (bounded by the line and
command limits), the serializing of responses already built, and the moving of bytes;
IDLE waits there on `MailSession.wait_for_change`, which touches no database.

It never parses IMAP itself and never decides what a command means. Log lines carry a
connection number and event names, never message content, user names or addresses; an
unexpected exception is logged by type and stack frames (no message text) and the client
gets `* BYE`, never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import itertools
import logging
import ssl
import traceback
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from gateway.imap import protocol
from gateway.imap.backend import AuthenticationFailed, Authenticator, MailSession
from gateway.imap.config import ImapConfig
from gateway.imap.session import (
    IdleRequest,
    ImapState,
    LoginFailure,
    LoginRequest,
    Reply,
    StartTlsRequest,
    State,
)
from gateway.login_gate import LoginBlocked, LoginGate, LoginRefused

log = logging.getLogger(__name__)
_T = TypeVar("_T")

_READ_SIZE = 65_536
_WRITE_SIZE = 65_536  # octets of responses gathered into one write
_BYE_TIMEOUT = 2.0  # seconds to flush a last BYE before closing anyway


class _Closed(Exception):
    """The peer went away or the connection must end now."""


class _Connection:
    """One client: its streams, its wire framing and its state machine."""

    def __init__(
        self,
        number: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        config: ImapConfig,
        *,
        tls_available: bool,
        tls_active: bool,
        pool: ThreadPoolExecutor,
    ) -> None:
        self.config = config
        self.number = number
        self.reader = reader
        self.writer = writer
        self.pool = pool
        self.wire = protocol.ImapServerConnection(
            max_line=config.max_line,
            max_literal=config.max_literal,
            max_command=config.max_command,
            max_depth=config.max_nesting,
            max_append=config.max_literal,  # until login: no client stores mail before it
        )
        self.state = ImapState(
            config,
            tls_available=tls_available,
            tls_active=tls_active,
            loopback=_is_loopback(writer.get_extra_info("peername")),
        )

    @property
    def idle_timeout(self) -> float:
        """Seconds the client may stay silent (or not read): shorter before login."""
        if self.state.state is State.NOT_AUTHENTICATED:
            return self.config.login_idle_timeout
        return self.config.idle_timeout

    async def off_loop(self, call: Callable[[], _T]) -> _T:
        """Run a call that may reach storage in the server's pool, not on the loop."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, call)

    async def send(self, responses: Iterable[protocol.Response]) -> None:
        """Write responses as they are produced, gathered into writes of about
        _WRITE_SIZE octets: one TLS record batch and one send per write, not per
        response. A list is serialized here; a lazy iterable (FETCH yields message by
        message, reading storage as it goes) is consumed off the loop, one write's worth
        at a time, the next one built while the last is sent. A client that stops
        reading for its idle timeout is dropped."""
        pending = iter(responses)
        try:
            if isinstance(responses, list | tuple):
                while chunks := self._gather(pending):
                    await self._write(chunks)
                return
            gather = functools.partial(self._gather, pending)
            built = asyncio.ensure_future(self.off_loop(gather))
            try:
                while chunks := await built:
                    built = asyncio.ensure_future(self.off_loop(gather))
                    await self._write(chunks)
            finally:
                built.cancel()
        except TimeoutError:
            raise _Closed from None

    def _gather(self, responses: Iterator[protocol.Response]) -> list[bytes]:
        """The octets of the next responses, up to about _WRITE_SIZE."""
        chunks: list[bytes] = []
        size = 0
        for response in responses:
            data = self.wire.send(response)
            chunks.append(data)
            size += len(data)
            if size >= _WRITE_SIZE:
                break
        return chunks

    async def _write(self, chunks: list[bytes]) -> None:
        if chunks:
            self.writer.write(b"".join(chunks) if len(chunks) > 1 else chunks[0])
        async with asyncio.timeout(self.idle_timeout):
            await self.writer.drain()


class ImapServer:
    """IMAP4rev1 over asyncio streams for one `Authenticator`."""

    def __init__(
        self,
        config: ImapConfig,
        authenticator: Authenticator,
        ssl_context: ssl.SSLContext | None,
        gate: LoginGate | None = None,
    ) -> None:
        if not config.loopback_plaintext_login and ssl_context is None:
            raise ValueError("without loopback_plaintext_login, logins need an ssl_context")
        self.config = config
        self.authenticator = authenticator
        self._own_gate = gate is None
        self.gate = gate or LoginGate()
        self.ssl_context = ssl_context
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._numbers = itertools.count(1)
        self._pool = ThreadPoolExecutor(config.storage_threads, thread_name_prefix="imap-storage")

    async def start(self, host: str, port: int, *, implicit_tls: bool = False) -> int:
        """Listen on host:port (0 picks a free port); return the port. Call again to add a
        listener, e.g. one with implicit TLS (port 993 style)."""
        if implicit_tls and self.ssl_context is None:
            raise ValueError("implicit_tls needs an ssl_context")

        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._serve(reader, writer, tls_active=implicit_tls)

        server = await asyncio.start_server(
            accept,
            host,
            port,
            ssl=self.ssl_context if implicit_tls else None,
            ssl_handshake_timeout=self.config.tls_handshake_timeout if implicit_tls else None,
            limit=_READ_SIZE,
        )
        self._servers.append(server)
        bound: int = server.sockets[0].getsockname()[1]
        log.info("imap listening port=%d implicit_tls=%s", bound, implicit_tls)
        return bound

    async def stop(self) -> None:
        """Stop listening, say BYE to every connection, wait for them to close."""
        for server in self._servers:
            server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._own_gate:
            self.gate.close()

    # -- one connection

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, tls_active: bool
    ) -> None:
        task = asyncio.current_task()
        assert task is not None  # noqa: S101 -- always inside the streams' task
        number = next(self._numbers)
        conn = _Connection(
            number,
            reader,
            writer,
            self.config,
            tls_available=self.ssl_context is not None,
            tls_active=tls_active,
            pool=self._pool,
        )
        self._tasks.add(task)
        log.debug("imap connection=%d opened", number)
        try:
            if len(self._tasks) > self.config.max_connections:
                await conn.send(conn.state.bye("Too many connections; try later.").responses)
                return
            await self._run(conn)
        except asyncio.CancelledError:
            await self._last_words(conn, "Server shutting down.")
        except (_Closed, ConnectionError, ssl.SSLError):
            pass
        except Exception as exc:  # every other failure: log it without content, say BYE
            log.error(
                "imap connection=%d failed: %s at %s", number, type(exc).__name__, _where(exc)
            )
            await self._last_words(conn, "Internal server error.")
        finally:
            self._tasks.discard(task)
            writer.close()
            try:
                conn.state.close()
            except Exception as exc:
                log.error(
                    "imap connection=%d: closing the mail session failed: %s",
                    number,
                    type(exc).__name__,
                )
            with contextlib.suppress(Exception):
                async with asyncio.timeout(_BYE_TIMEOUT):
                    await writer.wait_closed()
            log.debug("imap connection=%d closed", number)

    async def _last_words(self, conn: _Connection, text: str) -> None:
        if conn.state.state is State.LOGOUT or conn.writer.is_closing():
            return
        with contextlib.suppress(Exception):
            for response in conn.state.bye(text).responses:
                conn.writer.write(conn.wire.send(response))
            async with asyncio.timeout(_BYE_TIMEOUT):
                await conn.writer.drain()

    async def _run(self, conn: _Connection) -> None:
        await conn.send(conn.state.greeting().responses)
        while conn.state.state is not State.LOGOUT:
            try:
                event = conn.wire.next_event()
            except protocol.RemoteProtocolError as error:
                await conn.send(conn.state.reject(error).responses)
                continue
            if isinstance(event, protocol.NeedData):
                await self._read(conn)
            elif isinstance(event, protocol.ConnectionClosed):
                return
            elif isinstance(event, protocol.LiteralContinuation):
                await conn.send([protocol.Continuation("Ready for literal data.")])
            elif isinstance(event, protocol.ContinuationLine):
                await self._carry_out(conn, conn.state.handle_continuation(event.data))
            else:  # no name outlives the command: an APPENDed message is freed once stored
                reply = await conn.off_loop(functools.partial(conn.state.handle, event))
                del event
                await self._carry_out(conn, reply)

    async def _read(self, conn: _Connection) -> None:
        try:
            async with asyncio.timeout(conn.idle_timeout):
                data = await conn.reader.read(_READ_SIZE)
        except TimeoutError:
            await conn.send(conn.state.bye("Autologout; idle for too long.").responses)
            raise _Closed from None
        conn.wire.receive_data(data)

    async def _carry_out(self, conn: _Connection, reply: Reply) -> None:
        await conn.send(reply.responses)
        action = reply.action
        if isinstance(action, LoginRequest):
            result = await self._login(action, conn.writer.get_extra_info("peername"))
            reply = conn.state.finish_login(action, result)
            if conn.state.session is not None:
                conn.wire.max_append = self.config.max_append
            await self._carry_out(conn, reply)
        elif isinstance(action, StartTlsRequest):
            await self._start_tls(conn)
        elif isinstance(action, IdleRequest):
            await self._carry_out(conn, await self._idle(conn, action))

    async def _idle(self, conn: _Connection, request: IdleRequest) -> Reply:
        """IDLE (RFC 2177): until the client's DONE line, push what changed in the selected
        mailbox each time storage signals a commit (`wait_for_change`), and at least every
        `idle_poll` seconds for commits of other processes. A client silent for
        idle_timeout is logged out."""
        state = conn.state
        read: asyncio.Task[bytes] | None = None
        try:
            async with asyncio.timeout(self.config.idle_timeout) as deadline:
                while True:
                    try:
                        event = conn.wire.next_event()
                    except protocol.RemoteProtocolError as error:
                        return state.reject(error)
                    if isinstance(event, protocol.ContinuationLine):
                        return state.finish_idle(request, event.data)
                    if not isinstance(event, protocol.NeedData):
                        raise _Closed  # end of stream
                    read = read or asyncio.ensure_future(conn.reader.read(_READ_SIZE))
                    changed = self._wait_for_change(state)
                    done, _ = await asyncio.wait(
                        {read, changed}, return_when=asyncio.FIRST_COMPLETED
                    )
                    if changed not in done:
                        changed.cancel()
                    if read in done:
                        data, read = read.result(), None
                        conn.wire.receive_data(data)
                        deadline.reschedule(
                            asyncio.get_running_loop().time() + self.config.idle_timeout
                        )
                        continue
                    await conn.send((await conn.off_loop(state.idle_updates)).responses)
                    if state.state is State.LOGOUT:
                        raise _Closed
        except TimeoutError:
            await conn.send(state.bye("Autologout; idle for too long.").responses)
            raise _Closed from None
        finally:
            if read is not None:
                read.cancel()

    def _wait_for_change(self, state: ImapState) -> asyncio.Task[bool]:
        """A task that ends when the selected mailbox may have changed (or to poll)."""
        selected, session = state.selected, state.session
        poll = self.config.idle_poll

        async def wait() -> bool:
            if selected is None or session is None:
                await asyncio.sleep(self.config.idle_timeout)
                return False
            try:
                return await session.wait_for_change(selected.name, selected.highest_modseq, poll)
            except Exception:  # noqa: BLE001 -- the next look at the mailbox reports it
                return True

        return asyncio.ensure_future(wait())

    async def _login(self, request: LoginRequest, peer: object) -> MailSession | LoginFailure:
        try:
            return await self.gate.check(
                "imap",
                peer,
                request.username,
                lambda: self.authenticator.login(request.username, request.password),
                orphan=MailSession.close,
            )
        except AuthenticationFailed:
            return LoginFailure.BAD_CREDENTIALS
        except LoginBlocked:
            return LoginFailure.BLOCKED
        except LoginRefused:
            return LoginFailure.UNAVAILABLE
        except Exception as exc:
            log.error("imap login failed in storage: %s", type(exc).__name__)
            return LoginFailure.UNAVAILABLE

    async def _start_tls(self, conn: _Connection) -> None:
        """Upgrade to TLS; plaintext the client sent after STARTTLS is an attack: hang up."""
        if conn.wire.buffered or _stream_buffered(conn.reader):
            raise _Closed
        assert self.ssl_context is not None  # noqa: S101 -- the state checked tls_available
        await conn.writer.start_tls(
            self.ssl_context, ssl_handshake_timeout=self.config.tls_handshake_timeout
        )
        conn.state.tls_started()


def _where(exc: BaseException) -> str:
    """Where an exception came from, as file:line:function frames: no source text, no
    exception message (either could quote message content)."""
    return " < ".join(
        f"{frame.filename.rsplit('/', 1)[-1]}:{frame.lineno}:{frame.name}"
        for frame in reversed(traceback.extract_tb(exc.__traceback__))
    )


def _is_loopback(peer: object) -> bool:
    """Whether a peername (host, port, ...) is a loopback address; ::ffff:127.0.0.1 too."""
    if not isinstance(peer, tuple) or not peer or not isinstance(peer[0], str):
        return False
    try:
        address = ipaddress.ip_address(peer[0].split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def _stream_buffered(reader: asyncio.StreamReader) -> int:
    """Octets the StreamReader holds that were not read yet (CPython keeps them in
    `_buffer`); STARTTLS must not let them through as if they had come over TLS."""
    buffer = getattr(reader, "_buffer", b"")
    return len(buffer)
