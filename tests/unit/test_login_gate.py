"""The login gate: limiter verdicts, delays, log lines and the bounded Argon2id pool."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

import pytest

from gateway.imap.backend import AuthenticationFailed
from gateway.login_gate import KdfPool, LoginBlocked, LoginBusy, LoginGate
from gateway.login_limiter import LimiterSettings, LoginLimiter

PEER = ("192.0.2.7", 51000)
OTHER_PEER = ("192.0.2.8", 51001)
ALICE = "alice@example.org"
SECRET = "correct horse battery staple"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Harness:
    """A gate with a hand-set clock and a sleep that records instead of waiting."""

    def __init__(self, **settings: float) -> None:
        self.clock = Clock()
        self.slept: list[float] = []
        self.checked: list[str] = []
        self.gate = LoginGate(
            LoginLimiter(LimiterSettings(**settings)),  # type: ignore[arg-type]
            KdfPool(1, 4),
            clock=self.clock,
            sleep=self._sleep,
        )

    async def _sleep(self, seconds: float) -> None:
        self.slept.append(seconds)

    def verifier(self, password: str) -> Callable[[], str]:
        def verify() -> str:
            self.checked.append(password)
            if password != SECRET:
                raise AuthenticationFailed()
            return "keys"

        return verify

    def login(self, password: str, peer: object = PEER, account: str = ALICE) -> str:
        return asyncio.run(self.gate.check("imap", peer, account, self.verifier(password)))


def test_failures_wait_the_limiters_delay_and_success_waits_nothing() -> None:
    h = Harness(failure_delay=0.25, failure_delay_max=1.0)
    for _ in range(4):
        with pytest.raises(AuthenticationFailed):
            h.login("wrong")
    assert h.slept == [0.25, 0.5, 1.0, 1.0]
    assert h.login(SECRET) == "keys"
    assert h.slept == [0.25, 0.5, 1.0, 1.0]  # a correct password is never delayed
    h.gate.close()


def test_a_blocked_client_is_refused_without_a_check_until_the_block_ends() -> None:
    h = Harness(failure_delay=0.0, block_failures=3, block_seconds=60.0)
    for _ in range(2):
        with pytest.raises(AuthenticationFailed):
            h.login("wrong")
    with pytest.raises(LoginBlocked):
        h.login("wrong")  # the failure that blocks says so at once
    with pytest.raises(LoginBlocked):
        h.login(SECRET)  # even the right password is not looked at
    assert h.checked == ["wrong"] * 3
    # The same account from another address logs in, at once.
    assert h.login(SECRET, peer=OTHER_PEER) == "keys"
    h.clock.now += 60.0
    assert h.login(SECRET) == "keys"
    h.gate.close()


def test_a_failed_login_is_one_log_line_without_password_address_or_account(
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = Harness(failure_delay=0.0, block_failures=2)
    with caplog.at_level(logging.INFO, logger="gateway.login_gate"):
        with pytest.raises(AuthenticationFailed):
            h.login("hunter2-wrong")
        with pytest.raises(LoginBlocked):
            h.login("hunter2-wrong")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3
    assert lines[0].startswith("imap: login failed client=")
    assert "failures=1 account_failures=1" in lines[0]
    assert "blocked for 900 s after 2 failed logins" in lines[2]
    tags = {part for line in lines for part in line.split() if part.startswith("client=")}
    assert len(tags) == 1 and len(tags.pop()) == len("client=") + 8  # one short tag
    for line in lines:
        assert "\n" not in line
        for secret in ("hunter2", "192.0.2.7", "alice", "example.org"):
            assert secret not in line
    h.gate.close()


def test_tags_are_keyed_per_process() -> None:
    first, second = Harness(), Harness()
    assert first.gate._tag("192.0.2.7") != second.gate._tag("192.0.2.7")
    assert first.gate._tag("192.0.2.7") == first.gate._tag("192.0.2.7")
    first.gate.close()
    second.gate.close()


def held_pool_run(workers: int, queue: int, checks: int) -> tuple[set[str], int, list[str]]:
    """Start `checks` checks that hold their thread until every worker runs one and every
    check is in the pool or refused; return the names of the threads they ran in, how many
    were refused, and the results."""
    pool = KdfPool(workers, queue)
    gate = LoginGate(LoginLimiter(), pool)
    running = threading.Condition()
    release = threading.Event()
    threads: list[str] = []

    def verify() -> str:
        with running:
            threads.append(threading.current_thread().name)
            running.notify_all()
        release.wait(30)
        return "ok"

    def wait_for_workers() -> None:
        with running:
            running.wait_for(lambda: len(threads) >= min(workers, checks), 30)

    async def flood() -> list[BaseException | str]:
        check = gate.check
        tasks = [asyncio.create_task(check("smtp", PEER, ALICE, verify)) for _ in range(checks)]
        await asyncio.sleep(0)  # each task has now reached the pool or been refused
        await asyncio.to_thread(wait_for_workers)
        release.set()
        return await asyncio.gather(*tasks, return_exceptions=True)

    outcomes = asyncio.run(flood())
    gate.close()
    refused = sum(isinstance(o, LoginBusy) for o in outcomes)
    return set(threads), refused, [o for o in outcomes if isinstance(o, str)]


def test_the_pool_runs_checks_in_kdf_workers_threads_of_its_own() -> None:
    threads, refused, results = held_pool_run(workers=2, queue=10, checks=6)
    assert len(threads) == 2  # six checks held at once, yet only two threads
    assert all(name.startswith("argon2id") for name in threads)
    assert (refused, results) == (0, ["ok"] * 6)


def test_checks_beyond_workers_and_queue_are_refused_busy_at_once() -> None:
    threads, refused, results = held_pool_run(workers=1, queue=2, checks=5)
    assert (len(threads), refused, results) == (1, 2, ["ok"] * 3)


def test_a_busy_pool_takes_checks_again_once_it_drains() -> None:
    pool = KdfPool(1, 0)
    release = threading.Event()
    held = pool.submit(lambda: release.wait(30))
    with pytest.raises(LoginBusy):
        pool.submit(lambda: True)
    release.set()
    held.result(30)
    assert pool.submit(lambda: True).result(30) is True
    assert pool.in_pool == 0
    pool.close()


def test_a_result_whose_caller_was_cancelled_goes_to_orphan() -> None:
    gate = LoginGate()
    started, release, handed_over = threading.Event(), threading.Event(), threading.Event()
    orphans: list[str] = []

    def orphan(session: str) -> None:
        orphans.append(session)
        handed_over.set()

    def verify() -> str:
        started.set()
        release.wait(30)
        return "session"

    async def cancel_mid_check() -> None:
        task = asyncio.create_task(gate.check("imap", PEER, ALICE, verify, orphan=orphan))
        await asyncio.to_thread(started.wait, 30)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        release.set()

    asyncio.run(cancel_mid_check())
    gate.close()  # not waiting: the running check finishes in its thread
    assert handed_over.wait(30)
    assert orphans == ["session"]
