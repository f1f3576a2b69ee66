"""The per-account submission rate: at most `limit` messages per `window` seconds.

`SubmissionRate.check(account)` at MAIL raises `SmtpRefusal` (`451 4.7.1`, temporary:
the client keeps the message and tries again later) once the account has had `limit`
messages accepted within the last `window` seconds; `accepted(account)` counts a
message after its 250. Only accepted messages count, so refusals cost nothing. It keeps
at most `limit` times per account and forgets an account whose window is empty.
In memory only: a restart starts every count over. No I/O, never logs.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from gateway.smtp.policy import SmtpRefusal


class SubmissionRate:
    def __init__(
        self, limit: int, window: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if limit <= 0 or window <= 0:
            raise ValueError("the submission rate needs a positive limit and window")
        self._limit = limit
        self._window = window
        self._clock = clock
        self._times: dict[str, deque[float]] = {}

    def _recent(self, account: str) -> deque[float]:
        times = self._times.get(account)
        if times is None:
            return deque()
        horizon = self._clock() - self._window
        while times and times[0] <= horizon:
            times.popleft()
        if not times:
            del self._times[account]
        return times

    def check(self, account: str) -> None:
        times = self._recent(account)
        if len(times) >= self._limit:
            wait = max(1, round(times[0] + self._window - self._clock()))
            raise SmtpRefusal(
                f"451 4.7.1 This account has sent {self._limit} messages in the last "
                f"{round(self._window)} seconds, the most this gateway allows; "
                f"try again in {wait} seconds"
            )

    def accepted(self, account: str) -> None:
        times = self._times.setdefault(account, deque())
        times.append(self._clock())
        while len(times) > self._limit:
            times.popleft()
