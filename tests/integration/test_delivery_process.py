"""The delivery worker's own process (`gateway.delivery_process`), beside a real
`sealgate gateway serve`: it delivers what the gateway accepts at a lower CPU
priority than the gateway's, stops with the gateway, and does not outlive a gateway
that is killed."""

from __future__ import annotations

import os
import re
import secrets
import signal
import time
import urllib.request
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.bubble_processes import Bubble
from tests.integration.test_end_to_end import submit, wait_for_messages

pytestmark = pytest.mark.integration


def children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as listing:
        return [int(child) for child in listing.read().split()]


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def wait_until_gone(pid: int, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_the_delivery_process_delivers_stops_and_never_outlives_its_gateway(
    tmp_path: Path,
) -> None:
    bubble = Bubble(tmp_path)
    try:
        bubble.init()
        alice = bubble.add_account("alice", "alice-" + secrets.token_hex(4))
        bob = bubble.add_account("bob", "bob-" + secrets.token_hex(4))
        bubble.start_gateway("alice", "bob")
        gateway = bubble.services["alice"].proc
        assert gateway is not None
        (delivery,) = children(gateway.pid)
        # delivery_nice (10 by default) steps below the gateway: submissions go first.
        nice = os.getpriority(os.PRIO_PROCESS, gateway.pid)
        assert os.getpriority(os.PRIO_PROCESS, delivery) == min(19, nice + 10)
        token = "child-" + secrets.token_hex(6)
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = alice.address, bob.address, token
        message.set_content(token)
        assert submit(alice, message) == {}
        assert len(wait_for_messages(bob, token=token, timeout=30)) == 1
        assert bubble.stop_gateway("alice") == 0
        assert wait_until_gone(delivery)  # stopped with its gateway
        bubble.start_gateway("alice")
        gateway = bubble.services["alice"].proc
        assert gateway is not None
        (delivery,) = children(gateway.pid)
        os.kill(gateway.pid, signal.SIGKILL)
        gateway.wait()
        assert wait_until_gone(delivery)  # its input closed with the killed gateway
    finally:
        bubble.kill_all()


def relay_counts(bubble: Bubble) -> tuple[float, float]:
    """The relay's batch requests so far and the envelopes deposited, from /metrics."""
    with urllib.request.urlopen(f"{bubble.relay_url}/metrics", timeout=10) as r:  # noqa: S310
        metrics = r.read().decode()
    batches = re.search(r'sealgate_relay_request_seconds_count\{method="POST",'
                        r'route="/v1/envelope-batches"\} ([0-9.e+]+)', metrics)
    deposits = re.search(r"^sealgate_relay_deposits_total ([0-9.e+]+)$", metrics, re.MULTILINE)
    assert deposits is not None, metrics
    return (float(batches[1]) if batches else 0.0), float(deposits[1])


def test_the_envelopes_of_a_message_to_several_recipients_travel_in_one_batch(
    shared_bubble: Bubble,
) -> None:
    """One message to two recipients: its envelopes are written together, so the
    delivery process deposits them in one batch request, and each arrives once."""
    alice, others = shared_bubble.accounts["alice"], [
        shared_bubble.accounts[name] for name in ("bob", "carol")
    ]
    batches, deposits = relay_counts(shared_bubble)
    token = "batch-" + secrets.token_hex(6)
    message = EmailMessage()
    message["From"], message["Subject"] = alice.address, token
    message["To"] = ", ".join(account.address for account in others)
    message.set_content(token)
    assert submit(alice, message) == {}
    for account in others:
        assert len(wait_for_messages(account, token=token, timeout=30)) == 1
    batches_after, deposits_after = relay_counts(shared_bubble)
    assert batches_after >= batches + 1  # a batch holds two envelopes or more
    assert deposits_after >= deposits + 2
