"""The SMTP protocol object of the gateway: aiosmtpd's SMTP with AUTH off the event loop.

aiosmtpd decodes AUTH PLAIN and LOGIN, then checks credentials through a
synchronous hook. Checking a password here means Argon2id (~0.5 s and 256 MiB), which
must not stall every other session, so this subclass lets aiosmtpd decode, takes
the credentials from that hook, and verifies them with the client's peer name through
the handler (which runs them through `gateway.login_gate`). After `max_auth_failures`
failures on one connection, or when the client's address is blocked, it answers 421
and closes; when the Argon2id pool is full it answers 454 and keeps the connection.

`GatewaySMTP`, the base of the submission and inbound sessions, holds what both say on
the wire: EHLO adds PIPELINING and ENHANCEDSTATUSCODES to aiosmtpd's SIZE, 8BITMIME and
SMTPUTF8 (`ehlo_lines`, called from each handler's `handle_EHLO`); aiosmtpd's own size
refusals get their enhanced code (`552 5.3.4`); and a connection that is TLS from its
first byte (implicit TLS, port 465 style) counts as encrypted, as after STARTTLS.

DATA is read in chunks of up to `DATA_CHUNK` bytes through `gateway.smtp.data`
instead of aiosmtpd's loop of one `readuntil` per line (about a third of a
do-nothing aiosmtpd's time at 10 KB): the same end of DATA (never after a bare LF),
the same dot-unstuffing and the same size and line-length refusals, answered after
the end of DATA as aiosmtpd answers them. Bytes the client pipelined after the end go
back to the front of the session's stream for the command reader. MAIL and RCPT parse
a plain `<local@domain>` path with one regular expression (the answer aiosmtpd's own
parser gives, at a fraction of its cost) and anything else with aiosmtpd's parser.

The session timeout (`smtp_timeout`) counts silence: every command and every chunk of
DATA starts it again (aiosmtpd's own counts from the last command, so a long upload was
cut at the timeout however fast its bytes came). Starting it again only moves a
deadline; one timer per session, when it fires early, waits out the rest (aiosmtpd
cancels and makes a timer per command, a good share of a small message's loop time).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any, AnyStr

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, LoginPassword, Session, syntax

from gateway.login_gate import LoginBlocked, LoginRefused
from gateway.smtp.data import DataReader, DataState

Verifier = Callable[[LoginPassword, object], Awaitable[str | None]]  # credentials, peer name


class _Pending(AuthResult):
    """Credentials decoded by aiosmtpd, not yet verified."""


EXTENSIONS = ("PIPELINING", "ENHANCEDSTATUSCODES")

# aiosmtpd's size refusals, with the enhanced status code RFC 3463 gives them.
_REPLIES = {
    "552 Error: Too much mail data": "552 5.3.4 Message too big for this gateway",
    "552 Error: message size exceeds fixed maximum message size":
        "552 5.3.4 Message size exceeds this gateway's limit",
}


def ehlo_lines(session: Session, hostname: str, responses: list[str], *, auth: bool) -> list[str]:
    """What a handler's `handle_EHLO` answers: aiosmtpd's lines with `EXTENSIONS` added
    (and without AUTH when `auth` is False). aiosmtpd leaves the name to the hook."""
    session.host_name = hostname
    lines = [r for r in responses[:-1] if auth or not r.startswith("250-AUTH")]
    return [*lines, *(f"250-{name}" for name in EXTENSIONS), responses[-1]]


DATA_CHUNK = 256 * 1024

# A path as nearly every client writes it: <dot-atom@domain>, then parameters or nothing.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_PLAIN_PATH = re.compile(
    rf"<({_ATOM}(?:\.{_ATOM})*)@({_LABEL}(?:\.{_LABEL})*)>(?:$|(?= ))", re.ASCII
)
_PLAIN_REST = re.compile(r"[ -'*-~]*", re.ASCII)  # printable, no comment: nothing to unfold


class _Session(Session):
    """aiosmtpd's Session without the deprecation warning that aiosmtpd's own AUTH code
    sets off on every login (it assigns `login_data`, which only warns)."""

    @property
    def login_data(self) -> Any:
        return self._login_data

    @login_data.setter
    def login_data(self, value: Any) -> None:
        self._login_data = value


class GatewaySMTP(SMTP):
    _deadline = 0.0  # loop time at which the silent session is closed

    def _create_session(self) -> Session:
        return _Session(self.loop)

    def _reset_timeout(self, duration: float | None = None) -> None:
        self._deadline = self.loop.time() + (duration or self._timeout_duration)
        handle = self._timeout_handle
        if handle is None or handle.cancelled() or handle.when() > self._deadline:
            if handle is not None:
                handle.cancel()
            self._timeout_handle = self.loop.call_at(self._deadline, self._on_deadline)

    def _on_deadline(self) -> None:
        if self.loop.time() < self._deadline:  # heard from since: wait out the rest
            self._timeout_handle = self.loop.call_at(self._deadline, self._on_deadline)
            return
        self._timeout_cb()  # type: ignore[no-untyped-call]

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """aiosmtpd's parse of a MAIL or RCPT path, without its cost for a plain
        `<local@domain>` (it builds a class and runs the RFC 5322 parser every time):
        the same answer, the parser for anything else."""
        plain = _PLAIN_PATH.match(arg)
        if plain is None or not _PLAIN_REST.fullmatch(arg, plain.end()):
            return super()._getaddr(arg)
        if self.local_part_limit and len(plain[1]) > self.local_part_limit:
            return None, None
        return f"{plain[1]}@{plain[2]}", arg[plain.end():].lstrip(" ")

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        if self._decode_data:  # text content: aiosmtpd's own reader (no listener here asks)
            await super().smtp_DATA(arg)
            return
        if await self.check_helo_needed():
            return
        if await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None  # noqa: S101 - aiosmtpd makes one per connection
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        reader = DataReader(size_limit=self.data_size_limit, line_limit=self.line_length_limit)
        while True:
            try:
                chunk = await self._reader.read(DATA_CHUNK)
            except asyncio.CancelledError:  # the connection went during DATA
                self._writer.close()
                raise
            if not chunk:
                return  # end of stream: aiosmtpd's session ends with it
            self._reset_timeout()
            if reader.feed(chunk):
                break
        if reader.leftover:
            # aiosmtpd reaches into its reader's buffer as well (after STARTTLS); the
            # command loop reads these bytes next, before anything newer.
            self._reader._buffer[:0] = reader.leftover  # type: ignore[attr-defined]
        if reader.state is not DataState.NOMINAL:
            self._set_post_data_state()  # type: ignore[no-untyped-call]
            await self.push(
                "552 Error: Too much mail data" if reader.state is DataState.TOO_MUCH
                else "500 Line too long (see RFC5321 4.5.3.1.6)"
            )
            return
        self.envelope.content = self.envelope.original_content = reader.content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push("250 OK" if status is MISSING else status)

    async def push(self, status: AnyStr) -> None:
        if isinstance(status, str):
            status = _REPLIES.get(status, status)
        await super().push(status)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        # A listener with ssl=...: the transport is TLS already (not after STARTTLS).
        tls = getattr(transport, "_ssl_protocol", None)
        if tls is not None and self._tls_protocol is None and self.session is not None:
            self._tls_protocol = tls
            self.session.ssl = tls._extra


class SubmissionSMTP(GatewaySMTP):
    def __init__(
        self, handler: Any, *, verify: Verifier, max_auth_failures: int = 3, **kwargs: Any
    ) -> None:
        super().__init__(handler, **kwargs)
        self._verify = verify
        self._max_auth_failures = max_auth_failures
        self._auth_failures = 0

    def _authenticate(self, mechanism: str, auth_data: Any) -> AuthResult:
        return _Pending(success=False, handled=False, auth_data=auth_data)

    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self._finish(await super().auth_PLAIN(_, args))

    async def auth_LOGIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self._finish(await super().auth_LOGIN(_, args))

    async def _finish(self, result: AuthResult) -> AuthResult:
        if not isinstance(result, _Pending) or not isinstance(result.auth_data, LoginPassword):
            return result  # aiosmtpd already answered (bad base64, aborted with '*')
        try:
            peer = self.session.peer if self.session is not None else None
            account = await self._verify(result.auth_data, peer)
        except LoginRefused as refused:
            await self.push(refused.smtp_reply)
            if isinstance(refused, LoginBlocked):
                self._hang_up()
            return AuthResult(success=False, handled=True)
        if account is not None:
            return AuthResult(success=True, auth_data=account)
        self._auth_failures += 1
        if self._auth_failures >= self._max_auth_failures:
            await self.push("421 4.7.0 Too many failed authentication attempts")
            self._hang_up()
            return AuthResult(success=False, handled=True)
        return AuthResult(success=False, handled=False)  # 535 5.7.8

    def _hang_up(self) -> None:
        if self.transport is not None:
            self.transport.close()
