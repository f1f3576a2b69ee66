from __future__ import annotations

import pytest

from gateway.delivery import backoff
from gateway.smtp.policy import (
    SmtpRefusal,
    check_envelope_sender,
    check_header_from,
    complete_headers,
    header_facts,
)

ACCOUNT = "alice@demo.bubble"


def message(headers: str, body: str = "hi\r\n") -> bytes:
    return (headers.replace("\n", "\r\n") + "\r\n" + body).encode()


def test_from_header_must_name_exactly_the_account() -> None:
    check_header_from(
        header_facts(message("From: Alice <Alice@Demo.Bubble>\nTo: b@demo.bubble\n")), ACCOUNT
    )
    for headers in (
        "From: Bob <bob@demo.bubble>\n",
        "From: alice@demo.bubble, bob@demo.bubble\n",
        "From: alice@demo.bubble\nFrom: bob@demo.bubble\n",
        "To: alice@demo.bubble\n",
    ):
        with pytest.raises(SmtpRefusal) as err:
            check_header_from(header_facts(message(headers)), ACCOUNT)
        assert err.value.reply.startswith("550 5.7.1")


def test_from_in_the_body_does_not_count() -> None:
    msg = message("Subject: x\n", "From: alice@demo.bubble\r\n")
    assert header_facts(msg).from_addresses == ()


def test_envelope_sender() -> None:
    check_envelope_sender("ALICE@demo.bubble", ACCOUNT)
    with pytest.raises(SmtpRefusal, match="^553 5.7.1"):
        check_envelope_sender("bob@demo.bubble", ACCOUNT)


def test_complete_headers_adds_only_what_is_missing() -> None:
    bare = message("From: alice@demo.bubble\n")
    done = complete_headers(bare, header_facts(bare), "demo.bubble", now=0)
    assert done.endswith(bare)
    assert b"Date: Thu, 01 Jan 1970 00:00:00 -0000\r\n" in done
    assert b"@demo.bubble>\r\n" in done.split(b"Message-ID: ", 1)[1]
    full = message("From: a@demo.bubble\nDate: Mon, 1 Jan 2024 00:00:00 +0000\nMessage-ID: <x@y>\n")
    assert complete_headers(full, header_facts(full), "demo.bubble") == full


def test_backoff_doubles_up_to_the_maximum() -> None:
    assert [backoff(n, 1.0, 10.0) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
