"""The login throttling policy, driven by an explicit clock."""

from __future__ import annotations

import pytest

from gateway.login_limiter import LimiterSettings, LoginLimiter, client_key

ALICE = "alice@example.org"


def limiter(**settings: float) -> LoginLimiter:
    return LoginLimiter(LimiterSettings(**settings))  # type: ignore[arg-type]


def test_each_failure_doubles_the_delay_up_to_the_maximum() -> None:
    lim = limiter(failure_delay=0.5, failure_delay_max=3.0, block_failures=100)
    delays = [lim.failed("10.0.0.1", ALICE, now=float(i)).delay for i in range(6)]
    assert delays == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]


def test_zero_delay_means_no_slow_down() -> None:
    lim = limiter(failure_delay=0.0, block_failures=100)
    assert {lim.failed("10.0.0.1", ALICE, now=0.0).delay for _ in range(5)} == {0.0}


def test_a_client_is_blocked_after_block_failures_and_only_that_client() -> None:
    lim = limiter(block_failures=3, block_seconds=60.0)
    outcomes = [lim.failed("10.0.0.1", ALICE, now=0.0) for _ in range(3)]
    assert [o.blocked_for for o in outcomes] == [0.0, 0.0, 60.0]
    assert lim.blocked_for("10.0.0.1", now=1.0) == 59.0
    # The account itself is never blocked: from another address it may still try.
    assert lim.blocked_for("10.0.0.2", now=1.0) == 0.0


def test_guessing_from_many_clients_slows_the_account_but_never_blocks_a_client() -> None:
    lim = limiter(failure_delay=1.0, failure_delay_max=100.0, block_failures=3)
    outcomes = [lim.failed(f"10.0.0.{i}", ALICE, now=0.0) for i in range(1, 9)]
    assert [o.account_failures for o in outcomes] == list(range(1, 9))
    assert outcomes[3].delay == 8.0  # by the account's count: each client failed only once
    assert outcomes[-1].delay == 100.0  # 128 s, capped
    assert all(o.blocked_for == 0.0 for o in outcomes)
    assert all(lim.blocked_for(f"10.0.0.{i}", now=0.0) == 0.0 for i in range(1, 9))


def test_a_block_ends_after_block_seconds_and_the_client_starts_afresh() -> None:
    lim = limiter(block_failures=2, block_seconds=30.0, window_seconds=1000.0)
    lim.failed("10.0.0.1", ALICE, now=0.0)
    assert lim.failed("10.0.0.1", ALICE, now=0.0).blocked_for == 30.0
    assert lim.blocked_for("10.0.0.1", now=29.9) > 0
    assert lim.blocked_for("10.0.0.1", now=30.0) == 0.0
    assert lim.failed("10.0.0.1", ALICE, now=31.0).client_failures == 1


def test_a_login_in_flight_when_its_client_got_blocked_does_not_block_again() -> None:
    lim = limiter(block_failures=1, block_seconds=30.0)
    assert lim.failed("10.0.0.1", ALICE, now=0.0).blocked_for == 30.0
    assert lim.failed("10.0.0.1", ALICE, now=5.0).blocked_for == 0.0
    assert lim.blocked_for("10.0.0.1", now=29.0) == 1.0


def test_failures_are_forgotten_after_the_window() -> None:
    lim = limiter(block_failures=3, window_seconds=60.0)
    lim.failed("10.0.0.1", ALICE, now=0.0)
    lim.failed("10.0.0.1", ALICE, now=50.0)
    assert lim.failed("10.0.0.1", ALICE, now=100.0).client_failures == 3  # 50 s apart: kept
    later = lim.failed("10.0.0.1", ALICE, now=161.0)  # 61 s after the last one
    assert (later.client_failures, later.account_failures) == (1, 1)


def test_at_most_max_tracked_clients_and_accounts_are_remembered() -> None:
    lim = limiter(max_tracked=4, block_failures=100)
    lim.failed("10.0.0.1", ALICE, now=0.0)
    for i in range(2, 7):  # five more clients and accounts: more than the four remembered
        lim.failed(f"10.0.0.{i}", f"user{i}@example.org", now=0.0)
    assert lim.tracked == (4, 4)
    again = lim.failed("10.0.0.1", ALICE, now=0.0)
    assert (again.client_failures, again.account_failures) == (1, 1)  # the oldest went first


@pytest.mark.parametrize(
    "settings",
    [
        {"failure_delay": -1.0},
        {"failure_delay": 20.0, "failure_delay_max": 10.0},
        {"block_failures": 0},
        {"max_tracked": 0},
        {"block_seconds": 0.0},
        {"window_seconds": -5.0},
    ],
)
def test_nonsense_settings_are_refused(settings: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        LimiterSettings(**settings)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("peer", "key"),
    [
        (("127.0.0.2", 40000), "127.0.0.2"),
        (("::ffff:192.0.2.7", 1, 0, 0), "192.0.2.7"),
        (("2001:db8:1:2:aaaa::1", 1, 0, 0), "2001:db8:1:2::/64"),
        (("2001:db8:1:2:bbbb::9", 1, 0, 0), "2001:db8:1:2::/64"),  # the same /64: one client
        (("fe80::1%eth0", 1, 0, 2), "fe80::/64"),
        (None, "None"),
    ],
)
def test_client_key(peer: object, key: str) -> None:
    assert client_key(peer) == key
