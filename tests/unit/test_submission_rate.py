"""The per-account submission rate (`gateway.smtp.rate`), on a clock the test moves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.config import GatewayConfig
from gateway.smtp.policy import SmtpRefusal
from gateway.smtp.rate import SubmissionRate


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_message_past_the_limit_is_451_until_the_window_moves_on() -> None:
    clock = Clock()
    rate = SubmissionRate(3, 60.0, clock)
    for _ in range(3):
        rate.check("a@x")
        rate.accepted("a@x")
        clock.now += 10
    with pytest.raises(SmtpRefusal) as refused:
        rate.check("a@x")
    assert refused.value.reply.startswith("451 4.7.1 This account has sent 3 messages")
    assert "try again in 30 seconds" in refused.value.reply
    rate.check("b@x")  # other accounts are not held up
    clock.now += 30  # the first message leaves the window
    rate.check("a@x")


def test_refused_attempts_do_not_count() -> None:
    clock = Clock()
    rate = SubmissionRate(1, 60.0, clock)
    rate.accepted("a@x")
    for _ in range(5):
        with pytest.raises(SmtpRefusal):
            rate.check("a@x")
    clock.now += 61
    rate.check("a@x")


@pytest.mark.parametrize("values", [{"submission_limit": 0}, {"submission_window": 0.0}])
def test_the_rate_settings_must_be_positive(tmp_path: Path, values: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="submission_"):
        GatewayConfig(home=tmp_path, **values)
