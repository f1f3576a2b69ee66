"""The SMTP protocol object of the gateway: aiosmtpd's SMTP with AUTH off the event loop.

aiosmtpd decodes AUTH PLAIN and LOGIN, then checks credentials through a
synchronous hook. Checking a password here means Argon2id (~0.5 s and 256 MiB), which
must not stall every other session, so this subclass lets aiosmtpd decode, takes
the credentials from that hook, and verifies them with the client's peer name through
the handler (which runs them through `gateway.login_gate`). After `max_auth_failures`
failures on one connection, or when the client's address is blocked, it answers 421
and closes; when the Argon2id pool is full it answers 454 and keeps the connection.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from gateway.login_gate import LoginBlocked, LoginRefused

Verifier = Callable[[LoginPassword, object], Awaitable[str | None]]  # credentials, peer name


class _Pending(AuthResult):
    """Credentials decoded by aiosmtpd, not yet verified."""


class SubmissionSMTP(SMTP):
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
