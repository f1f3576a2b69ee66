"""The grammar of ESEARCH, BINARY, QUOTA and LIST-EXTENDED commands, literal8 in both
directions, BINARY's decoding of transfer encodings (round trips under Hypothesis), and
the quota settings."""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.settings import SettingsError, load_settings, read_toml
from gateway.config import GatewayConfig
from gateway.imap import protocol as wire
from gateway.imap.config import ImapConfig
from gateway.imap.protocol import (
    FetchAttribute,
    FetchKind,
    Literal8,
    RemoteProtocolError,
    Section,
    SequenceSet,
    Untagged,
)
from gateway.imap.render import binary, fetch
from gateway.imap.session.selected import esearch


def command(data: bytes) -> wire.Command:
    return wire.parse_command(data)


def bad(data: bytes) -> bytes:
    with pytest.raises(RemoteProtocolError) as info:
        wire.parse_command(data)
    return wire.serialize(info.value.response)


def test_list_extended_forms():
    assert command(b'a LIST "" *\r\n') == wire.List("a", "", "*")  # plain stays plain
    assert command(b'a LIST () "" %\r\n') == wire.ListExtended("a", "", ("%",))
    assert command(
        b'a LIST (subscribed RecursiveMatch) "" ("INBOX" Work/%) RETURN '
        b"(children STATUS (MESSAGES UNSEEN) SPECIAL-USE)\r\n"
    ) == wire.ListExtended(
        "a",
        "",
        ("INBOX", "Work/%"),
        frozenset({"SUBSCRIBED", "RECURSIVEMATCH"}),
        frozenset({"CHILDREN", "SPECIAL-USE"}),
        ("MESSAGES", "UNSEEN"),
    )
    assert command(b'a LIST "" * RETURN ()\r\n') == wire.ListExtended("a", "", ("*",))
    assert command(b'a LIST "" (*)\r\n') == wire.ListExtended("a", "", ("*",))


@pytest.mark.parametrize(
    ("data", "answer"),
    [
        (b'a LIST (SUBSCRIBED) "" * RETURN\r\n', b"a BAD Unexpected characters"),
        (b'a LIST "" * RETURN (STATUS)\r\n', b"a BAD Expected a space"),
        (b'a LIST (RECURSIVEMATCH REMOTE) "" *\r\n', b"a BAD RECURSIVEMATCH needs another"),
        (b'a LIST "" (INBOX "Sent"\r\n', b"a BAD Expected ) closing the patterns"),
        (b"a SEARCH RETURN (MIN\r\n", b"a BAD Expected a space"),
        (b"a SEARCH RETURN (min) \r\n", b"a BAD Incomplete SEARCH command: arguments are missing"),
        (b"a GETQUOTA\r\n", b"a BAD Incomplete GETQUOTA command: arguments are missing"),
        (b'a SETQUOTA "" STORAGE 1\r\n', b"a BAD Expected ( starting the resource limits"),
        (b'a SETQUOTA "" (STORAGE x)\r\n', b"a BAD Expected a number"),
        (b"a GETQUOTAROOT &Jjo\r\n", b"a BAD Invalid mailbox name"),
        (b"a APPEND INBOX ~3\r\n", b"a BAD Expected the message as a literal"),
        (b"a FETCH 1 BINARY.SIZE\r\n", b"a BAD BINARY.SIZE needs a section"),
    ],
)
def test_extension_syntax_errors(data: bytes, answer: bytes):
    assert bad(data).startswith(answer)


def test_search_return_and_quota_commands():
    search = command(b"a UID SEARCH RETURN (COUNT MIN COUNT) UNSEEN\r\n")
    assert isinstance(search, wire.Search)
    assert search.returns == ("COUNT", "MIN") and search.uid
    plain = command(b"a SEARCH UNSEEN\r\n")
    assert isinstance(plain, wire.Search) and plain.returns is None
    assert command(b'a SETQUOTA "" (STORAGE 512 MESSAGE 9223372036854775807)\r\n') == (
        wire.SetQuota("a", "", (("STORAGE", 512), ("MESSAGE", 2**63 - 1)))
    )
    assert command(b"a GETQUOTA quota\r\n") == wire.GetQuota("a", "quota")
    assert command(b"a GETQUOTAROOT inbox\r\n") == wire.GetQuotaRoot("a", "INBOX")


def test_literal8_in_and_out():
    append = command(b"a APPEND INBOX ~{3+}\r\nx\x00y\r\n")
    assert isinstance(append, wire.Append) and append.message == b"x\x00y"
    assert wire.serialize(Untagged((1, Literal8(b"\x00")))) == b"* 1 ~{1}\r\n\x00\r\n"
    size = FetchAttribute(FetchKind.BINARY_SIZE, Section((1, 2)))
    assert size.response_name == "BINARY.SIZE[1.2]" and not size.sets_seen
    peek = FetchAttribute(FetchKind.BINARY, Section(), (5, 9), peek=True)
    assert peek.response_name == "BINARY[]<5>" and not peek.sets_seen


def test_esearch_response_shapes():
    assert wire.serialize(esearch("t", [1, 2, 3, 7], ("MIN", "ALL"), uid=True)) == (
        b'* ESEARCH (TAG "t") UID MIN 1 ALL 1:3,7\r\n'
    )
    assert wire.serialize(esearch("t", [], (), uid=False)) == b'* ESEARCH (TAG "t")\r\n'
    assert str(SequenceSet.of([4, 5, 6, 9, 11, 12])) == "4:6,9,11:12"


def _part(encoding: str, body: bytes) -> bytes:
    return (
        b'Content-Type: multipart/mixed; boundary="z"\r\n\r\n--z\r\n'
        b"Content-Transfer-Encoding: " + encoding.encode() + b"\r\n\r\n" + body + b"\r\n--z--\r\n"
    )


def _decoded(message: bytes, part: tuple[int, ...] = (1,)) -> bytes:
    return binary.decoded(message, lambda: fetch.parse_message(message), part)


@given(st.binary(max_size=600))
def test_base64_parts_decode_to_their_octets(data: bytes):
    encoded = base64.encodebytes(data).replace(b"\n", b"\r\n").removesuffix(b"\r\n")
    assert _decoded(_part("BASE64", encoded)) == data


@given(st.binary(max_size=600))
def test_quoted_printable_parts_decode_to_their_octets(data: bytes):
    encoded = binascii.b2a_qp(data, istext=False).replace(b"\n", b"\r\n")
    assert _decoded(_part("quoted-printable", encoded)) == data


@given(st.binary(max_size=200), st.sampled_from(["7bit", "8bit", "binary"]))
def test_identity_encodings_are_given_as_they_are(data: bytes, encoding: str):
    message = _part(encoding, data.replace(b"--z", b""))
    assert _decoded(message) == fetch.parse_message(message).children[0].body


def test_lenient_base64_and_unknown_encodings():
    assert _decoded(_part("base64", b"aGVs bG8*\r\nh")) == b"hello!"
    assert _decoded(_part("base64", b"aGVsbG8=trailing")) == b"hello"
    with pytest.raises(binary.UnknownEncoding):
        _decoded(_part("x-uuencode", b"begin 644 x"))
    assert _decoded(_part("x-uuencode", b"x"), (2,)) == b""  # no part 2: empty
    message = _part("base64", b"AA==")
    assert _decoded(message, ()) == message  # BINARY[]: the whole message


def test_quota_settings_reach_the_imap_config(tmp_path: Path):
    text = "imap_quota_storage = 1048576\nimap_quota_messages = 0\n"
    (tmp_path / "gateway.toml").write_text(text)
    config = load_settings(GatewayConfig, read_toml(tmp_path / "gateway.toml"), {"home": tmp_path})
    imap = config.imap_config()
    assert (imap.quota_storage, imap.quota_messages) == (1048576, None)
    default = load_settings(GatewayConfig, {}, {"home": tmp_path}).imap_config()
    assert (default.quota_storage, default.quota_messages) == (10 * 1024**3, None)
    with pytest.raises(SettingsError, match="setting 'imap_quota_messages': must be a whole"):
        load_settings(GatewayConfig, {"imap_quota_messages": -1}, {"home": tmp_path})
    with pytest.raises(ValueError, match="quota limits must be positive"):
        ImapConfig(quota_storage=0)


def test_stored_form_base64s_binary_leaves_only():
    octets = b"a\x00b\r\nc" * 40
    inner = b"Subject: in\r\nContent-Transfer-Encoding: binary\r\n\r\n" + octets
    message = (
        b'Content-Type: multipart/mixed; boundary="x"\r\nContent-Transfer-Encoding: binary\r\n\r\n'
        b"--x\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: binary\r\n\r\n"
        + inner + b"\r\n--x\r\nContent-Transfer-Encoding: 8bit\r\n\r\n8\x00bit\r\n--x--\r\n"
    )
    stored = binary.stored_form(message)
    tree = fetch.parse_message(stored)
    embedded = tree.children[0].embedded
    assert embedded is not None and embedded.content.transfer_encoding == "base64"
    assert b"\x00" not in embedded.body and max(map(len, embedded.body.split(b"\r\n"))) == 76
    # The multipart and the message/rfc822 part keep their label; an 8bit part is as sent.
    assert stored.count(b"Content-Transfer-Encoding: binary\r\n") == 2
    assert stored.endswith(b"8\x00bit\r\n--x--\r\n")
    assert binary.decoded(stored, lambda: tree, (1, 1)) == octets
    plain = b"Subject: s\r\n\r\nno\x00label\r\n"
    assert binary.stored_form(plain) is plain
    # A NUL never reaches a plain literal; the length stays.
    assert wire.literal(b"a\x00b") == b"{3}\r\na\x80b"
