"""IMAP4rev1 on the wire, server side, sans-I/O: pure, it imports nothing from `gateway`
outside this package, never asyncio, never a socket, never storage.

    errors       the error root and the errors that carry their response
    responses    response types and values;  serialize  responses to octets
    events       what the framing hands up: events and one typed event per command
    framing      `ImapServerConnection`: lines, literals (sync and LITERAL+), line mode
    grammar      the productions (`Reader`);  parse  one parser per command
    fetch_items  FETCH attributes;  search_keys  SEARCH keys;  sequence  sequence sets
    mutf7        modified UTF-7 mailbox names;  chars  character classes, system flags

The names below are the package's public face; `session` and `server` import from here.
"""

from __future__ import annotations

from gateway.imap.protocol.chars import (
    RECENT,
    SYSTEM_FLAGS,
    flag_list,
    is_atom,
)
from gateway.imap.protocol.errors import (
    CommandFailed,
    ImapError,
    LocalProtocolError,
    RemoteProtocolError,
)
from gateway.imap.protocol.events import (
    Append,
    Authenticate,
    Capability,
    Check,
    Close,
    Command,
    ConnectionClosed,
    ContinuationLine,
    Copy,
    Create,
    Delete,
    Enable,
    Event,
    Examine,
    Expunge,
    Fetch,
    Id,
    Idle,
    List,
    LiteralContinuation,
    Login,
    Logout,
    Lsub,
    Move,
    Namespace,
    NeedData,
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
from gateway.imap.protocol.fetch_items import (
    MACROS,
    SIMPLE_ATTRIBUTES,
    Content,
    FetchAttribute,
    FetchKind,
    Section,
    SectionText,
)
from gateway.imap.protocol.framing import (
    ImapServerConnection,
)
from gateway.imap.protocol.mutf7 import (
    decode_mailbox,
    encode_mailbox,
    normalize_mailbox,
)
from gateway.imap.protocol.parse import (
    parse_command,
)
from gateway.imap.protocol.responses import (
    Adjacent,
    Code,
    Continuation,
    Raw,
    Response,
    Status,
    Tagged,
    Untagged,
    UntaggedStatus,
    Value,
)
from gateway.imap.protocol.search_keys import (
    DateField,
    DateRelation,
    SearchAll,
    SearchAnd,
    SearchDate,
    SearchFlag,
    SearchHeader,
    SearchKey,
    SearchNot,
    SearchOr,
    SearchRecent,
    SearchSet,
    SearchSize,
    SearchText,
)
from gateway.imap.protocol.sequence import (
    MAX_NUMBER,
    SequenceSet,
)
from gateway.imap.protocol.serialize import (
    serialize,
)

__all__ = [
    "flag_list",
    "Adjacent",
    "Append",
    "Authenticate",
    "Capability",
    "Check",
    "Close",
    "Code",
    "Command",
    "CommandFailed",
    "ConnectionClosed",
    "Content",
    "Continuation",
    "ContinuationLine",
    "Copy",
    "Create",
    "DateField",
    "DateRelation",
    "Delete",
    "Enable",
    "Event",
    "Examine",
    "Expunge",
    "Fetch",
    "FetchAttribute",
    "FetchKind",
    "Id",
    "Idle",
    "ImapError",
    "ImapServerConnection",
    "List",
    "LiteralContinuation",
    "LocalProtocolError",
    "Login",
    "Logout",
    "Lsub",
    "MACROS",
    "MAX_NUMBER",
    "Move",
    "Namespace",
    "NeedData",
    "Noop",
    "RECENT",
    "Raw",
    "RemoteProtocolError",
    "Rename",
    "Response",
    "SIMPLE_ATTRIBUTES",
    "SYSTEM_FLAGS",
    "Search",
    "SearchAll",
    "SearchAnd",
    "SearchDate",
    "SearchFlag",
    "SearchHeader",
    "SearchKey",
    "SearchNot",
    "SearchOr",
    "SearchRecent",
    "SearchSet",
    "SearchSize",
    "SearchText",
    "Section",
    "SectionText",
    "Select",
    "SequenceSet",
    "StartTls",
    "Status",
    "StatusCommand",
    "Store",
    "StoreMode",
    "Subscribe",
    "Tagged",
    "Unselect",
    "Unsubscribe",
    "Untagged",
    "UntaggedStatus",
    "Value",
    "decode_mailbox",
    "encode_mailbox",
    "is_atom",
    "normalize_mailbox",
    "parse_command",
    "serialize",
]
