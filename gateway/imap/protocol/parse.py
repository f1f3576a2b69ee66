"""One complete command (lines and literals) to its typed event: `parse_command`.

The table `PARSERS` holds one parser per command name, grouped by the state the command
belongs to (the session's table decides whether it may run now). Pure: no I/O.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable

from gateway.imap.protocol.chars import BASE64_CHARS
from gateway.imap.protocol.errors import RemoteProtocolError
from gateway.imap.protocol.events import (
    Append,
    Authenticate,
    Capability,
    Check,
    Close,
    Command,
    Copy,
    Create,
    Delete,
    Enable,
    Examine,
    Expunge,
    Fetch,
    Id,
    Idle,
    List,
    Login,
    Logout,
    Lsub,
    Move,
    Namespace,
    Noop,
    Rename,
    Search,
    Select,
    StartTls,
    StatusCommand,
    Store,
    StoreMode,
    Subscribe,
    Unselect,
    Unsubscribe,
)
from gateway.imap.protocol.grammar import FETCH_NAME_CHARS, Reader
from gateway.imap.protocol.mutf7 import decode_mailbox

# -- one parser per command: reader positioned after the command name


def _no_args(cls: type[Command]) -> Callable[[Reader, str], Command]:
    def parse(r: Reader, tag: str) -> Command:
        r.end()
        return cls(tag)

    return parse


def _one_mailbox(cls: Callable[[str, str], Command]) -> Callable[[Reader, str], Command]:
    def parse(r: Reader, tag: str) -> Command:
        r.sp()
        mailbox = r.mailbox()
        r.end()
        return cls(tag, mailbox)

    return parse


def _list_like(cls: Callable[[str, str, str], Command]) -> Callable[[Reader, str], Command]:
    def parse(r: Reader, tag: str) -> Command:
        r.sp()
        raw = r.astring()
        try:
            reference = decode_mailbox(raw)
        except ValueError as exc:
            r.fail(f"Invalid reference name: {exc}")
        r.sp()
        pattern = r.list_mailbox()
        r.end()
        return cls(tag, reference, pattern)

    return parse


def _parse_login(r: Reader, tag: str) -> Command:
    r.sp()
    userid = r.utf8(r.astring())
    r.sp()
    password = r.utf8(r.astring())
    r.end()
    return Login(tag, userid, password)


def _parse_authenticate(r: Reader, tag: str) -> Command:
    r.sp()
    mechanism = r.atom().upper()
    initial: bytes | None = None
    if r.at(b" "):
        r.pos += 1
        token = r.take(BASE64_CHARS, "a base64 initial response")
        if token == b"=":
            initial = b""
        else:
            try:
                initial = base64.b64decode(token, validate=True)
            except binascii.Error:
                r.fail("Invalid base64 in the initial response")
    r.end()
    return Authenticate(tag, mechanism, initial)


def _parse_id(r: Reader, tag: str) -> Command:
    r.sp()
    if r.at_ci(b"NIL"):
        r.pos += 3
        r.end()
        return Id(tag, None)
    r.expect(b"(", "( or NIL")
    params: list[tuple[str, str | None]] = []
    while not r.at(b")"):
        if params:
            r.sp()
        key = r.utf8(r.string())
        r.sp()
        params.append((key, r.nstring_text()))
        if len(params) > 30:  # RFC 2971: at most 30 pairs
            r.fail("Too many ID parameters")
    r.pos += 1
    r.end()
    return Id(tag, tuple(params))


def _parse_enable(r: Reader, tag: str) -> Command:
    capabilities: list[str] = []
    while r.at(b" "):
        r.pos += 1
        capabilities.append(r.atom().upper())
    if not capabilities:
        r.fail("ENABLE needs at least one capability")
    r.end()
    return Enable(tag, tuple(capabilities))


def _parse_rename(r: Reader, tag: str) -> Command:
    r.sp()
    old = r.mailbox()
    r.sp()
    new = r.mailbox()
    r.end()
    return Rename(tag, old, new)


def _parse_status(r: Reader, tag: str) -> Command:
    r.sp()
    mailbox = r.mailbox()
    r.sp()
    r.expect(b"(", "( starting the status items")
    items: list[str] = []
    while True:
        items.append(r.atom().upper())
        if r.at(b")"):
            r.pos += 1
            break
        r.sp()
    r.end()
    return StatusCommand(tag, mailbox, tuple(items))


def _parse_append(r: Reader, tag: str) -> Command:
    """APPEND mailbox [flag-list] [date-time] literal (RFC 3501 section 6.3.11)."""
    r.sp()
    mailbox = r.mailbox()
    r.sp()
    flags: tuple[str, ...] = ()
    if r.at(b"("):
        flags = r.flags()
        r.sp()
    internal_date = None
    if r.at(b'"'):
        internal_date = r.date_time()
        r.sp()
    if r.peek() != 0x7B:  # {
        r.fail("Expected the message as a literal")
    message = r.literal()
    r.end()
    return Append(tag, mailbox, flags, internal_date, message)


def _parse_copy(cls: type[Copy] | type[Move], uid: bool) -> Callable[[Reader, str], Command]:
    def parse(r: Reader, tag: str) -> Command:
        r.sp()
        sequence_set = r.sequence_set()
        r.sp()
        mailbox = r.mailbox()
        r.end()
        return cls(tag, sequence_set, mailbox, uid)

    return parse


def _parse_expunge(uid: bool) -> Callable[[Reader, str], Command]:
    def parse(r: Reader, tag: str) -> Command:
        uids = None
        if uid:
            r.sp()
            uids = r.sequence_set()
        r.end()
        return Expunge(tag, uids)

    return parse


def _parse_search(uid: bool) -> Callable[[Reader, str], Command]:
    def parse(r: Reader, tag: str) -> Command:
        r.sp()
        charset, key = r.search_program()
        r.end()
        return Search(tag, key, charset, uid)

    return parse


def _parse_fetch(uid: bool) -> Callable[[Reader, str], Command]:
    def parse(r: Reader, tag: str) -> Command:
        r.sp()
        sequence_set = r.sequence_set()
        r.sp()
        attributes = r.fetch_attributes()
        r.end()
        return Fetch(tag, sequence_set, attributes, uid)

    return parse


def _parse_store(uid: bool) -> Callable[[Reader, str], Command]:
    def parse(r: Reader, tag: str) -> Command:
        r.sp()
        sequence_set = r.sequence_set()
        r.sp()
        item = r.take(FETCH_NAME_CHARS | frozenset(b"+-"), "FLAGS, +FLAGS or -FLAGS")
        m = re.fullmatch(rb"([+-]?)FLAGS(\.SILENT)?", item.upper())
        if m is None:
            r.fail("Expected FLAGS, +FLAGS or -FLAGS")
        mode = {b"": StoreMode.REPLACE, b"+": StoreMode.ADD, b"-": StoreMode.REMOVE}[m[1]]
        r.sp()
        flags = r.flags()
        r.end()
        return Store(tag, sequence_set, mode, flags, silent=m[2] is not None, uid=uid)

    return parse


PARSERS: dict[str, Callable[[Reader, str], Command]] = {
    "CAPABILITY": _no_args(Capability),
    "NOOP": _no_args(Noop),
    "LOGOUT": _no_args(Logout),
    "STARTTLS": _no_args(StartTls),
    "LOGIN": _parse_login,
    "AUTHENTICATE": _parse_authenticate,
    "ID": _parse_id,
    "ENABLE": _parse_enable,
    "NAMESPACE": _no_args(Namespace),
    "SELECT": _one_mailbox(Select),
    "EXAMINE": _one_mailbox(Examine),
    "CREATE": _one_mailbox(Create),
    "DELETE": _one_mailbox(Delete),
    "RENAME": _parse_rename,
    "SUBSCRIBE": _one_mailbox(Subscribe),
    "UNSUBSCRIBE": _one_mailbox(Unsubscribe),
    "LIST": _list_like(List),
    "LSUB": _list_like(Lsub),
    "STATUS": _parse_status,
    "APPEND": _parse_append,
    "IDLE": _no_args(Idle),
    "CHECK": _no_args(Check),
    "CLOSE": _no_args(Close),
    "UNSELECT": _no_args(Unselect),
    "EXPUNGE": _parse_expunge(uid=False),
    "SEARCH": _parse_search(uid=False),
    "FETCH": _parse_fetch(uid=False),
    "STORE": _parse_store(uid=False),
    "COPY": _parse_copy(Copy, uid=False),
    "MOVE": _parse_copy(Move, uid=False),
    "UID EXPUNGE": _parse_expunge(uid=True),
    "UID SEARCH": _parse_search(uid=True),
    "UID FETCH": _parse_fetch(uid=True),
    "UID STORE": _parse_store(uid=True),
    "UID COPY": _parse_copy(Copy, uid=True),
    "UID MOVE": _parse_copy(Move, uid=True),
}


def _command_head(r: Reader) -> str:
    """Read `tag SP name [SP subname]` for UID commands; return the command's table key."""
    r.tag_()
    r.sp()
    name = r.atom().upper()
    if name == "UID":
        r.sp()
        name = "UID " + r.atom().upper()
    return name


def parse_command(data: bytes, *, max_depth: int = 16) -> Command:
    """One complete command (its final CRLF included) to a typed event."""
    r = Reader(data, max_depth)
    name = _command_head(r)
    parse = PARSERS.get(name)
    if parse is None:
        r.fail(f"Unknown command {name}")
    r.command = name
    return parse(r, r.tag or "")


def head_of(data: bytes) -> tuple[str | None, str]:
    """Best-effort tag and command name of a partial command, for early errors."""
    r = Reader(data, 1)
    try:
        name = _command_head(r)
    except RemoteProtocolError:
        return r.tag, ""
    return r.tag, name
