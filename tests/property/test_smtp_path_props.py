"""`GatewaySMTP._getaddr`, the quick parse of MAIL and RCPT paths, answers exactly what
aiosmtpd's own parser answers, for plain paths and for everything near them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiosmtpd.smtp import SMTP
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gateway.smtp.server import GatewaySMTP

FAST = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


async def _protocol(limit: int) -> GatewaySMTP:
    protocol = GatewaySMTP(object())
    protocol.local_part_limit = limit  # a class attribute of aiosmtpd's, 0 by default
    return protocol


PROTOCOLS = [asyncio.run(_protocol(limit)) for limit in (0, 8)]

_pieces = st.sampled_from([
    "<", ">", "@", ".", "..", "a", "Z", "9", "-", "_", "+", "=", "'", "~", "`", "{", "|",
    '"', "\\", "(", ")", "[", "]", ":", ";", ",", " ", "  ", "\t", "\r", "\n", "é", "\x00",
    "bob", "demo.bubble", "SIZE=1000", "BODY=8BITMIME", "SMTPUTF8", "NOTIFY=NEVER",
    "xn--bcher-kva.example", "[127.0.0.1]", "(comment)", "averyveryverylongname",
])
_plain = st.builds(
    lambda local, domain, rest: f"<{local}@{domain}>{rest}",
    st.from_regex(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,12}(\.[a-z0-9+-]{1,5}){0,2}", fullmatch=True),
    st.from_regex(r"[a-z0-9]([a-z0-9-]{0,6}[a-z0-9])?(\.[a-z0-9-]{1,6}){0,3}", fullmatch=True),
    st.lists(_pieces, max_size=6).map("".join),
)
_near = st.lists(_pieces, max_size=12).map("".join)


@FAST
@given(st.one_of(_plain, _near))
@example("<alice@demo.bubble>")
@example("<alice@demo.bubble> SIZE=10000 BODY=8BITMIME")
@example("<alice@demo.bubble>  SIZE=1  ")
@example("<alice@demo.bubble> (comment) SIZE=1")
@example("<alice@-demo.bubble>")
@example("<averyveryverylongname@demo.bubble>")
@example("<a..b@demo.bubble>")
@example("<>")
def test_the_quick_parse_answers_as_aiosmtpd_does(arg: str) -> None:
    for protocol in PROTOCOLS:
        assert _outcome(protocol._getaddr, arg) == _outcome(
            lambda a: SMTP._getaddr(protocol, a), arg  # noqa: B023 - called at once
        )


def _outcome(parse: Callable[[str], object], arg: str) -> object:
    """What `parse` answers, or the type of what it raises (aiosmtpd's parser raises
    IndexError on some paths, such as "<": the quick parse leaves those to it)."""
    try:
        return parse(arg)
    except Exception as e:  # noqa: BLE001
        return type(e)
