"""The login throttling policy shared by SMTP AUTH and IMAP LOGIN/AUTHENTICATE.

Failed logins are counted twice: per client (an IPv4 address, or the /64 network of an
IPv6 address, since one host gets a whole /64) and per account name. Every failure's
answer waits `delay`, which doubles with the larger of the two counts, from
`failure_delay` up to `failure_delay_max`. A client that reaches `block_failures` is
blocked for `block_seconds`: its logins are refused without looking at the password.

An account is never blocked, only slowed: guessing a victim's password from elsewhere
must not lock the victim out, and a correct password is never delayed, so its owner
still logs in at once from their own address. Counts are forgotten `window_seconds`
after their last failure, and a block's end starts its client afresh. At most
`max_tracked` clients and as many accounts are remembered; the least recently failed
are forgotten first, so the tables stay bounded whatever an attacker sends.

Pure bookkeeping: it never does I/O, never sleeps and never reads a clock (callers pass
`now`, in seconds of a monotonic clock). Not thread-safe: use it from one event loop.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True)
class LimiterSettings:
    failure_delay: float = 0.5
    failure_delay_max: float = 15.0
    block_failures: int = 10
    block_seconds: float = 900.0
    window_seconds: float = 900.0
    max_tracked: int = 65_536

    def __post_init__(self) -> None:
        if not 0 <= self.failure_delay <= self.failure_delay_max:
            raise ValueError("failure_delay must be between 0 and failure_delay_max")
        if min(self.block_failures, self.max_tracked) < 1:
            raise ValueError("block_failures and max_tracked must be positive")
        if min(self.block_seconds, self.window_seconds) <= 0:
            raise ValueError("block_seconds and window_seconds must be positive")


@dataclass(frozen=True, slots=True)
class Failure:
    """What one failed login leads to."""

    delay: float  # seconds to wait before answering it
    client_failures: int
    account_failures: int
    blocked_for: float  # > 0: this failure blocked the client for that many seconds


@dataclass(slots=True)
class _Count:
    failures: int
    last: float
    blocked_until: float = 0.0


class _Table:
    """Counts by key, least recently failed first, at most `limit` of them."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._counts: OrderedDict[str, _Count] = OrderedDict()

    def __len__(self) -> int:
        return len(self._counts)

    def get(self, key: str) -> _Count | None:
        return self._counts.get(key)

    def forget(self, key: str) -> None:
        self._counts.pop(key, None)

    def fail(self, key: str, now: float, window: float) -> _Count:
        count = self._counts.pop(key, None)
        if count is None or now - count.last > window:
            count = _Count(0, now)
        count.failures += 1
        count.last = now
        self._counts[key] = count
        while len(self._counts) > self._limit:
            self._counts.popitem(last=False)
        return count


class LoginLimiter:
    def __init__(self, settings: LimiterSettings | None = None) -> None:
        self.settings = settings or LimiterSettings()
        self._clients = _Table(self.settings.max_tracked)
        self._accounts = _Table(self.settings.max_tracked)

    def blocked_for(self, client: str, now: float) -> float:
        """Seconds left of this client's block; 0.0 when it may try to log in."""
        count = self._clients.get(client)
        if count is None or not count.blocked_until:
            return 0.0
        if now >= count.blocked_until:
            self._clients.forget(client)
            return 0.0
        return count.blocked_until - now

    def failed(self, client: str, account: str, now: float) -> Failure:
        """Count one failed login of `account` from `client`.

        A login that was already running when its client got blocked still counts, but
        does not block it again.
        """
        s = self.settings
        by_client = self._clients.fail(client, now, s.window_seconds)
        by_account = self._accounts.fail(account, now, s.window_seconds)
        blocked_for = 0.0
        if by_client.failures >= s.block_failures and by_client.blocked_until <= now:
            by_client.blocked_until = now + s.block_seconds
            blocked_for = s.block_seconds
        worst = max(by_client.failures, by_account.failures)
        delay = min(s.failure_delay_max, s.failure_delay * 2.0 ** min(worst - 1, 64))
        return Failure(delay, by_client.failures, by_account.failures, blocked_for)

    @property
    def tracked(self) -> tuple[int, int]:
        """How many clients and accounts are remembered now."""
        return len(self._clients), len(self._accounts)


def client_key(peername: object) -> str:
    """The client a connection's peer name counts as: its IPv4 address, or its IPv6 /64."""
    host = peername[0] if isinstance(peername, tuple) and peername else peername
    try:
        address = ipaddress.ip_address(str(host).partition("%")[0])
    except ValueError:
        return str(host)
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)
