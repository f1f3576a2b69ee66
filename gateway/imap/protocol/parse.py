"""One complete command (lines and literals) to its typed event: `parse_command`.

The table `PARSERS` holds one parser per command name, grouped by the state the command
belongs to (the session's table decides whether it may run now). Pure: no I/O.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Iterator

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
    GetQuota,
    GetQuotaRoot,
    Id,
    Idle,
    List,
    ListExtended,
    Login,
    Logout,
    Lsub,
    Move,
    Namespace,
    Noop,
    Qresync,
    Rename,
    Search,
    Select,
    SetQuota,
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


def _reference(r: Reader) -> str:
    raw = r.astring()
    try:
        return decode_mailbox(raw)
    except ValueError as exc:
        r.fail(f"Invalid reference name: {exc}")


def _parse_lsub(r: Reader, tag: str) -> Command:
    r.sp()
    reference = _reference(r)
    r.sp()
    pattern = r.list_mailbox()
    r.end()
    return Lsub(tag, reference, pattern)


LIST_SELECT_OPTIONS = frozenset({"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"})
LIST_RETURN_OPTIONS = frozenset({"SUBSCRIBED", "CHILDREN", "SPECIAL-USE", "STATUS"})


def _atom_list(r: Reader, what: str) -> list[str]:
    """`(A B ...)`, possibly empty, upper case."""
    r.expect(b"(", f"( starting the {what}")
    items: list[str] = []
    while not r.at(b")"):
        if items:
            r.sp()
        items.append(r.atom().upper())
    r.pos += 1
    return items


def _parse_list(r: Reader, tag: str) -> Command:
    """LIST, and LIST-EXTENDED (RFC 5258): `LIST [(select-opts)] ref (pat pat) [RETURN
    (return-opts)]` with RETURN (STATUS (...)) (RFC 5819); plain when it uses none of it."""
    r.sp()
    select: list[str] | None = None
    if r.at(b"("):
        select = _atom_list(r, "selection options")
        unknown = set(select) - LIST_SELECT_OPTIONS
        if unknown:
            r.fail(f"Unknown LIST selection option {sorted(unknown)[0]}")
        if "RECURSIVEMATCH" in select and not set(select) - {"RECURSIVEMATCH", "REMOTE"}:
            r.fail("RECURSIVEMATCH needs another selection option")
        r.sp()
    reference = _reference(r)
    r.sp()
    extended = select is not None
    if r.at(b"("):
        extended = True
        r.pos += 1
        patterns = [r.list_mailbox()]
        while r.at(b" "):
            r.pos += 1
            patterns.append(r.list_mailbox())
        r.expect(b")", ") closing the patterns")
    else:
        patterns = [r.list_mailbox()]
    returns: set[str] = set()
    status_items: tuple[str, ...] | None = None
    if r.at_ci(b" RETURN "):
        extended = True
        r.pos += len(b" RETURN ")
        r.expect(b"(", "( starting the return options")
        while not r.at(b")"):
            if returns or status_items is not None:
                r.sp()
            option = r.atom().upper()
            if option not in LIST_RETURN_OPTIONS:
                r.fail(f"Unknown LIST return option {option}")
            if option == "STATUS":
                r.sp()
                status_items = tuple(_atom_list(r, "status items"))
                if not status_items:
                    r.fail("RETURN (STATUS) needs at least one status item")
            else:
                returns.add(option)
        r.pos += 1
    r.end()
    if not extended:
        return List(tag, reference, patterns[0])
    return ListExtended(
        tag, reference, tuple(patterns), frozenset(select or ()), frozenset(returns), status_items
    )


def _parse_getquota(r: Reader, tag: str) -> Command:
    r.sp()
    root = r.utf8(r.astring())
    r.end()
    return GetQuota(tag, root)


def _parse_setquota(r: Reader, tag: str) -> Command:
    """SETQUOTA root (resource limit ...) (RFC 9208 section 4.3)."""
    r.sp()
    root = r.utf8(r.astring())
    r.sp()
    r.expect(b"(", "( starting the resource limits")
    limits: list[tuple[str, int]] = []
    while not r.at(b")"):
        if limits:
            r.sp()
        resource = r.atom().upper()
        r.sp()
        limits.append((resource, r.number64()))
    r.pos += 1
    r.end()
    return SetQuota(tag, root, tuple(limits))


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
        value = r.nstring_text()
        # RFC 2971: at most 30 pairs, fields of 30 octets, values of 1024
        if len(key.encode()) > 30 or (value is not None and len(value.encode()) > 1024):
            r.fail("ID fields are at most 30 octets, values at most 1024")
        params.append((key, value))
        if len(params) > 30:
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


def _parse_select(cls: type[Select] | type[Examine]) -> Callable[[Reader, str], Command]:
    """SELECT/EXAMINE mailbox [SP "(" select-param *(SP select-param) ")"] (RFC 4466), the
    parameters being CONDSTORE and QRESYNC (RFC 7162)."""

    def parse(r: Reader, tag: str) -> Command:
        r.sp()
        mailbox = r.mailbox()
        condstore = False
        qresync = None
        for name in _parameters(r):
            if name == "CONDSTORE" and not condstore:
                condstore = True
            elif name == "QRESYNC" and qresync is None:
                r.sp()
                qresync = _qresync(r)
            else:
                r.fail(f"Unknown or repeated select parameter {name}")
        r.end()
        return cls(tag, mailbox, condstore, qresync)

    return parse


def _parameters(r: Reader) -> Iterator[str]:
    """The names, upper case, of an optional ` (name [value] *(SP name [value]))`: RFC
    4466's select-params, fetch-modifiers and store-modifiers. The caller reads each
    value before asking for the next name."""
    if not r.at(b" ("):
        return
    r.pos += 2
    while True:
        yield r.atom().upper()
        if r.at(b")"):
            r.pos += 1
            return
        r.sp()


def _qresync(r: Reader) -> Qresync:
    """`(uidvalidity mod-sequence [known-uids] [(known-numbers known-uids)])`."""
    r.expect(b"(", "( starting the QRESYNC parameters")
    uid_validity = r.number(nonzero=True)
    r.sp()
    modseq = r.mod_sequence()
    known_uids = None
    seq_match = None
    if r.at(b" ") and r.data[r.pos + 1 : r.pos + 2] != b"(":
        r.pos += 1
        known_uids = r.sequence_set()
        if known_uids.has_star():
            r.fail("Known UIDs may not contain *")
    if r.at(b" ("):
        r.pos += 2
        numbers = r.sequence_set()
        r.sp()
        uids = r.sequence_set()
        r.expect(b")", ") closing the sequence match data")
        seq_match = (numbers, uids)
    r.expect(b")", ") closing the QRESYNC parameters")
    return Qresync(uid_validity, modseq, known_uids, seq_match)


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
    binary = r.at(b"~{")  # literal8 (RFC 3516): the message may hold NUL
    if binary:
        r.pos += 1
    elif r.peek() != 0x7B:  # {
        r.fail("Expected the message as a literal")
    message = r.literal()
    r.end()
    return Append(tag, mailbox, flags, internal_date, message, binary)


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


SEARCH_RETURN_OPTIONS = frozenset({"MIN", "MAX", "ALL", "COUNT"})


def _parse_search(uid: bool) -> Callable[[Reader, str], Command]:
    def parse(r: Reader, tag: str) -> Command:
        r.sp()
        returns: tuple[str, ...] | None = None
        if r.at_ci(b"RETURN "):  # ESEARCH (RFC 4731)
            r.pos += len(b"RETURN ")
            options = _atom_list(r, "return options")
            unknown = set(options) - SEARCH_RETURN_OPTIONS
            if unknown:
                r.fail(f"Unknown SEARCH return option {sorted(unknown)[0]}")
            returns = tuple(dict.fromkeys(options))
            r.sp()
        charset, key = r.search_program()
        r.end()
        return Search(tag, key, charset, uid, returns)

    return parse


def _parse_fetch(uid: bool) -> Callable[[Reader, str], Command]:
    def parse(r: Reader, tag: str) -> Command:
        r.sp()
        sequence_set = r.sequence_set()
        r.sp()
        attributes = r.fetch_attributes()
        changed_since = None
        vanished = False
        for name in _parameters(r):
            if name == "CHANGEDSINCE" and changed_since is None:
                r.sp()
                changed_since = r.mod_sequence()
            elif name == "VANISHED" and uid and not vanished:
                vanished = True
            else:
                r.fail(f"Unknown or repeated fetch modifier {name}")
        if vanished and changed_since is None:
            r.fail("VANISHED needs CHANGEDSINCE")
        r.end()
        return Fetch(tag, sequence_set, attributes, uid, changed_since, vanished)

    return parse


def _parse_store(uid: bool) -> Callable[[Reader, str], Command]:
    def parse(r: Reader, tag: str) -> Command:
        r.sp()
        sequence_set = r.sequence_set()
        unchanged_since = None
        for name in _parameters(r):
            if name != "UNCHANGEDSINCE" or unchanged_since is not None:
                r.fail(f"Unknown or repeated store modifier {name}")
            r.sp()
            unchanged_since = r.mod_sequence(zero=True)
        r.sp()
        item = r.take(FETCH_NAME_CHARS | frozenset(b"+-"), "FLAGS, +FLAGS or -FLAGS")
        m = re.fullmatch(rb"([+-]?)FLAGS(\.SILENT)?", item.upper())
        if m is None:
            r.fail("Expected FLAGS, +FLAGS or -FLAGS")
        mode = {b"": StoreMode.REPLACE, b"+": StoreMode.ADD, b"-": StoreMode.REMOVE}[m[1]]
        r.sp()
        flags = r.flags()
        r.end()
        silent = m[2] is not None
        return Store(tag, sequence_set, mode, flags, silent, uid, unchanged_since)

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
    "SELECT": _parse_select(Select),
    "EXAMINE": _parse_select(Examine),
    "CREATE": _one_mailbox(Create),
    "DELETE": _one_mailbox(Delete),
    "RENAME": _parse_rename,
    "SUBSCRIBE": _one_mailbox(Subscribe),
    "UNSUBSCRIBE": _one_mailbox(Unsubscribe),
    "LIST": _parse_list,
    "LSUB": _parse_lsub,
    "GETQUOTA": _parse_getquota,
    "GETQUOTAROOT": _one_mailbox(GetQuotaRoot),
    "SETQUOTA": _parse_setquota,
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


def parse_command(
    data: bytes, *, max_depth: int = 16, literals: list[bytes] | None = None
) -> Command:
    """One complete command (its final CRLF included) to a typed event; `literals`, when
    given, are the contents of its literals in order, left out of `data`."""
    r = Reader(data, max_depth, literals)
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
