"""Every password check of the gateway, for SMTP AUTH and IMAP LOGIN/AUTHENTICATE alike.

`LoginGate.check(protocol, peer, login, verify)`:

1. a blocked client (see `gateway.login_limiter`) is refused at once with `LoginBlocked`,
   without spending Argon2id on it;
2. `verify` (an unlock: Argon2id, ~0.5 s and 256 MiB at the moderate cost) runs in
   `KdfPool`, a small thread pool of its own, so a login flood queues there and never in
   the default executor that sealing, the outbox and delivery use; a check that finds
   `workers + queue` checks already in the pool is refused at once with `LoginBusy`;
3. a failure (`AuthenticationFailed`) is counted by the `LoginLimiter`, logged as one
   line, waited out (`asyncio.sleep`, the loop keeps serving everyone else) and raised
   again; the failure that blocks its client is raised as `LoginBlocked` and logged too.

Log lines name the client and the account by short tags (BLAKE2b under a random key of
this process), never by address, and never carry the password. The key is per process
so that a log read with the gateway's disk still does not give addresses back (there
are only 2^32 IPv4 addresses to try against a hash); the price is that tags do not
match across restarts. The gate never sees a password (`verify` holds it) and never
decides the policy (the limiter does).

Errors, with their SMTP reply (`gateway.imap.session` words the IMAP ones, as
`LoginFailure.BLOCKED` and `UNAVAILABLE`):

    LoginRefused     a login refused before its password was looked at: 454 4.7.0
    ├── LoginBlocked   421 4.7.0, then the connection closes; IMAP NO [UNAVAILABLE], BYE
    └── LoginBusy      454 4.7.0; IMAP NO [UNAVAILABLE]
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import logging
import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from bridge.directory import normalize_address
from gateway.imap.backend import AuthenticationFailed
from gateway.login_limiter import LoginLimiter, client_key

log = logging.getLogger(__name__)

T = TypeVar("T")


class LoginRefused(Exception):
    smtp_reply = "454 4.7.0 Temporary authentication failure"


class LoginBlocked(LoginRefused):
    smtp_reply = "421 4.7.0 Too many failed logins from your address; try again later"


class LoginBusy(LoginRefused):
    smtp_reply = "454 4.7.0 Too many logins in progress; try again later"


class KdfPool:
    """Threads for Argon2id only: `workers` of them, and at most `queue` checks waiting."""

    def __init__(self, workers: int = 2, queue: int = 16) -> None:
        if workers < 1 or queue < 0:
            raise ValueError("KdfPool needs at least one worker and a queue of 0 or more")
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="argon2id"
        )
        self._capacity = workers + queue
        self._lock = threading.Lock()
        self._in_pool = 0
        self._full = False

    @property
    def in_pool(self) -> int:
        """Checks running or waiting now."""
        with self._lock:
            return self._in_pool

    def submit(self, fn: Callable[[], T]) -> concurrent.futures.Future[T]:
        """Run `fn` in the pool; `LoginBusy` when running and waiting checks fill it."""
        with self._lock:
            if self._in_pool >= self._capacity:
                if not self._full:
                    log.warning("login: Argon2id pool full; refusing logins until it drains")
                self._full = True
                raise LoginBusy()
            self._in_pool += 1
            self._full = False
        try:
            future = self._executor.submit(fn)
        except BaseException:
            self._release(None)
            raise
        future.add_done_callback(self._release)
        return future

    def _release(self, _: object) -> None:
        with self._lock:
            self._in_pool -= 1

    def close(self) -> None:
        """Drop waiting checks; running ones finish in their threads."""
        self._executor.shutdown(wait=False, cancel_futures=True)


class LoginGate:
    def __init__(
        self,
        limiter: LoginLimiter | None = None,
        pool: KdfPool | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.limiter = limiter or LoginLimiter()
        self.pool = pool or KdfPool()
        self._clock = clock
        self._sleep = sleep
        self._tag_key = secrets.token_bytes(32)

    async def check(
        self,
        protocol: str,
        peer: object,
        login: str,
        verify: Callable[[], T],
        *,
        orphan: Callable[[T], None] | None = None,
    ) -> T:
        """`verify()`'s result, checked in the pool; raises `AuthenticationFailed` (after the
        delay) or a `LoginRefused`. `orphan` gets a result whose caller was cancelled."""
        client = client_key(peer)
        if self.limiter.blocked_for(client, self._clock()) > 0:
            raise LoginBlocked()
        future = self.pool.submit(verify)
        try:
            return await asyncio.wrap_future(future)
        except AuthenticationFailed:
            pass
        except asyncio.CancelledError:
            if orphan is not None:
                future.add_done_callback(lambda f: _hand_over(f, orphan))
            raise
        account = _account_key(login)
        failure = self.limiter.failed(client, account, self._clock())
        log.info(
            "%s: login failed client=%s account=%s failures=%d account_failures=%d delay=%.1fs",
            protocol,
            self._tag(client),
            self._tag(account),
            failure.client_failures,
            failure.account_failures,
            failure.delay,
        )
        if failure.blocked_for:
            log.warning(
                "%s: client=%s blocked for %.0f s after %d failed logins",
                protocol,
                self._tag(client),
                failure.blocked_for,
                failure.client_failures,
            )
        await self._sleep(failure.delay)
        if failure.blocked_for:
            raise LoginBlocked()
        raise AuthenticationFailed()

    def close(self) -> None:
        self.pool.close()

    def _tag(self, value: str) -> str:
        digest = hashlib.blake2b(value.encode("utf-8", "replace"), key=self._tag_key, digest_size=4)
        return digest.hexdigest()


def _account_key(login: str) -> str:
    try:
        return normalize_address(login)
    except ValueError:
        return login.strip().casefold()[:320]


def _hand_over(future: concurrent.futures.Future[T], orphan: Callable[[T], None]) -> None:
    if not future.cancelled() and future.exception() is None:
        orphan(future.result())
