from __future__ import annotations

from pathlib import Path

import pytest

from bridge.headers import parse_header
from gateway.delivery import backoff
from gateway.smtp.policy import (
    SmtpRefusal,
    check_envelope_sender,
    check_headers,
    check_transaction_size,
    complete_headers,
    declared_size,
)

ACCOUNT = "alice@demo.bubble"


def message(headers: str, body: str = "hi\r\n") -> bytes:
    return (headers.replace("\n", "\r\n") + "\r\n" + body).encode()


def reply(raw: bytes, account: str = ACCOUNT) -> str | None:
    """What submission answers to this message's header block: None (accepted) or the reply."""
    try:
        check_headers(parse_header(raw), account)
    except SmtpRefusal as refusal:
        return refusal.reply
    return None


GOOD = "From: Alice <Alice@Demo.Bubble>\nTo: b@demo.bubble\nSubject: s\n"


@pytest.mark.parametrize(
    "headers",
    [
        GOOD,
        "From: alice@demo.bubble\n",
        '"alice@demo.bubble" <alice@demo.bubble>\n'.join(["From: ", ""]),
        "From: Alice <alice@demo.bubble>\nSender: alice@demo.bubble\n",
        "From: Alice\n <alice@demo.bubble>\nReply-To: Team list <team@demo.bubble>\n",
        "From: =?utf-8?q?J=C3=B6rg?= <alice@demo.bubble>\nSubject: caf\u00e9\tok\n",
        "From: alice@demo.bubble\nTo: undisclosed-recipients:;\nReceived: x\nReceived: y\n",
    ],
)
def test_headers_that_name_the_account_are_accepted(headers: str) -> None:
    assert reply(message(headers)) is None


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        # the compat32 hole: "From :" was an mbox line to the policy, the From to everyone else
        ("From : bob@demo.bubble\nFrom: alice@demo.bubble\n", "white space"),
        ("From\t: alice@demo.bubble\n", "white space"),
        ("From: alice@demo.bubble\nSubject : s\n", "white space"),
        ("From: Bob <bob@demo.bubble>\n", "From address must be the sending account"),
        ("To: alice@demo.bubble\n", "must have a From field"),
        ("From: alice@demo.bubble, bob@demo.bubble\n", "exactly one address"),
        ("From: Team: alice@demo.bubble;\n", "exactly one address"),
        ("From: \n", "exactly one address"),
        ("From: alice@demo.bubble <bob@demo.bubble>\n", "one valid address"),
        ("From: alice@demo.bubble\nFrom: bob@demo.bubble\n", "more than one From field"),
        ("From: alice@demo.bubble\nFrom: alice@demo.bubble\n", "more than one From field"),
        ("From: alice@demo.bubble\nSender: bob@demo.bubble\n", "Sender address must be"),
        ("From: alice@demo.bubble\nSender: a@demo.bubble, b@demo.bubble\n", "exactly one"),
        ('From: "bob@demo.bubble" <alice@demo.bubble>\n', "display name"),
        ("From: bob@demo.bubble <alice@demo.bubble>\n", "one valid address"),
        ('From: "Bob (bob@demo.bubble)" <alice@demo.bubble>\n', "display name"),
        ('From: "bob\uff20demo.bubble" <alice@demo.bubble>\n', "display name"),
        ("From: =?utf-8?q?bob=40demo.bubble?= <alice@demo.bubble>\n", "display name"),
        ("From: alice@demo.bubble (bob@demo.bubble)\n", "display name"),
        ('From: alice@demo.bubble\nSender: "bob@x" <alice@demo.bubble>\n', "display name"),
        ('From: alice@demo.bubble\nReply-To: "bob@demo.bubble" <me@x.y>\n', "Reply-To display"),
        ("From: alice@demo.bubble\nReply-To: a@b <c@d>\n", "Reply-To field must be a valid"),
        ("From: alice@demo.bubble\nSubject: a\x00b\n", "control characters"),
        ("From: alice@demo.bubble\x1b[2J\n", "control characters"),
        ("From: alice@demo.bubble\rFrom: bob@demo.bubble\n", "control characters"),
        ("From: alice@demo.bubble\nX-Note: a\x7f\n", "control characters"),
        ("From alice@demo.bubble Mon Jan  1 00:00:00 2024\nFrom: alice@demo.bubble\n", "belong"),
        (" From: bob@demo.bubble\nFrom: alice@demo.bubble\n", "belong"),
        ("From: alice@demo.bubble\nnot a field\nFrom: bob@demo.bubble\n", "belong"),
    ]
    + [
        (f"From: alice@demo.bubble\n{name}: x\n{name.upper()}: y\n", f"more than one {name}")
        for name in ("Sender", "Date", "Subject", "To", "Cc", "Message-ID", "Reply-To")
    ],
)
def test_forged_or_ambiguous_headers_are_refused_with_a_reason(headers: str, why: str) -> None:
    answer = reply(message(headers))
    assert answer is not None and answer.startswith("550 5.7.1 ")
    assert why in answer
    assert "bob" not in answer  # the reply says why, it does not echo header values


def test_from_in_the_body_does_not_count() -> None:
    assert reply(message("Subject: x\n", "From: alice@demo.bubble\r\n")) is not None
    assert reply(message("From: alice@demo.bubble\n", "From: bob@demo.bubble\r\n")) is None


def test_address_fields_past_the_parser_limit_are_refused() -> None:
    from bridge.headers import MAX_ADDRESS_FIELD

    fits = "A" * (MAX_ADDRESS_FIELD - len(" <alice@demo.bubble>"))
    assert reply(message(f"From: {fits} <alice@demo.bubble>\n")) is None
    answer = reply(message(f"From: {fits}A <alice@demo.bubble>\n"))
    assert answer is not None and "From field must be one valid address" in answer


def test_envelope_sender() -> None:
    check_envelope_sender("ALICE@demo.bubble", ACCOUNT)
    with pytest.raises(SmtpRefusal, match="^553 5.7.1"):
        check_envelope_sender("bob@demo.bubble", ACCOUNT)


def test_complete_headers_adds_only_what_is_missing() -> None:
    bare = message("From: alice@demo.bubble\n")
    done = complete_headers(bare, parse_header(bare), "demo.bubble", now=0)
    assert done.endswith(bare)
    assert b"Date: Thu, 01 Jan 1970 00:00:00 -0000\r\n" in done
    assert b"@demo.bubble>\r\n" in done.split(b"Message-ID: ", 1)[1]
    full = message("From: a@demo.bubble\nDate: Mon, 1 Jan 2024 00:00:00 +0000\nMessage-ID: <x@y>\n")
    assert complete_headers(full, parse_header(full), "demo.bubble") == full


def test_backoff_doubles_up_to_the_maximum() -> None:
    assert [backoff(n, 1.0, 10.0) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


@pytest.mark.parametrize("name", ["outlook-exchange", "thunderbird", "neomutt", "postfix-relayed"])
def test_real_client_header_sets_pass_as_their_own_sender(name: str) -> None:
    from bridge.headers import parse_addresses

    raw = (Path(__file__).parents[1] / "data" / "headers" / f"{name}.eml").read_bytes()
    header = parse_header(raw.replace(b"\n", b"\r\n"))
    author = header.first("from")
    assert author is not None
    address = parse_addresses(author.text).mailboxes[0].address
    assert reply(raw.replace(b"\n", b"\r\n"), address) is None


@pytest.mark.parametrize("name", ["max_header_block", "max_address_field"])
def test_header_limits_must_be_positive(name: str, tmp_path: Path) -> None:
    from bridge.settings import SettingsError, load_settings
    from gateway.config import GatewayConfig

    assert load_settings(GatewayConfig, {"home": str(tmp_path), name: 10}).header_limits()
    with pytest.raises(SettingsError, match=f"setting '{name}': must be positive"):
        load_settings(GatewayConfig, {"home": str(tmp_path), name: 0})


@pytest.mark.parametrize("value", [-1, 20, 2.5, True])
def test_delivery_nice_must_be_a_nice_increment(tmp_path: Path, value: object) -> None:
    from bridge.settings import SettingsError, load_settings
    from gateway.config import GatewayConfig

    assert load_settings(GatewayConfig, {"home": str(tmp_path), "delivery_nice": 0})
    refused = "setting 'delivery_nice': (must be|expected) a whole number"
    with pytest.raises(SettingsError, match=refused):
        load_settings(GatewayConfig, {"home": str(tmp_path), "delivery_nice": value})


def test_address_field_limit_is_passed_to_the_rules() -> None:
    from bridge.headers import HeaderLimits

    raw = message("From: Alice <alice@demo.bubble>\n")
    check_headers(parse_header(raw), ACCOUNT, HeaderLimits(max_address_field=25))
    with pytest.raises(SmtpRefusal, match="From field must be one valid address"):
        check_headers(parse_header(raw), ACCOUNT, HeaderLimits(max_address_field=24))


@pytest.mark.parametrize(
    ("options", "size"),
    [([], None), (["BODY=8BITMIME"], None), (["SIZE=1024"], 1024),
     (["BODY=8BITMIME", "size=77"], 77), (["SIZE=-1"], None), (["SIZE="], None)],
)
def test_declared_size_reads_the_mail_from_parameter(options: list[str], size: int | None) -> None:
    assert declared_size(options) == size


def test_transaction_size_is_size_times_recipients() -> None:
    check_transaction_size(100, 10, 1000)
    with pytest.raises(SmtpRefusal) as refused:
        check_transaction_size(101, 10, 1000)
    assert refused.value.reply.startswith("552 5.3.4 Message size times recipients")
