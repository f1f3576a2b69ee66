"""RelayHealth: a failing relay rests for an exponential backoff, a success resets it."""

from __future__ import annotations

from gateway.delivery import RelayHealth

A, B = "http://a.example", "http://b.example"


def test_a_failed_relay_rests_longer_each_time_until_it_succeeds() -> None:
    now = [100.0]
    health = RelayHealth(1.0, 8.0, clock=lambda: now[0])
    assert health.ready(A) and health.wait([A]) == 0.0
    assert [health.failed(A) for _ in range(5)] == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert not health.ready(A) and health.ready(B)
    assert health.wait([A]) == 8.0 and health.wait([A, B]) == 0.0
    now[0] += 8.0
    assert health.ready(A)
    health.succeeded(A)
    assert health.failed(A) == 1.0  # the count starts again
