"""One IMAP connection's state machine: which command may run when, and what it answers.

Holds `ImapState` (NOT AUTHENTICATED -> AUTHENTICATED -> SELECTED -> LOGOUT, one `do_*` per
command, the table `COMMANDS` saying which command runs in which state), `SelectedMailbox`
(this session's view of the selected folder: message numbers, flags, what to report), and
the two requests the server must carry out for the state: `LoginRequest` (slow, off the
event loop) and `StartTlsRequest`.

It never imports asyncio and never touches a socket: it turns commands into responses by
calling the storage Protocols of `gateway.imap.backend`, which are fast, except login,
which the server runs and hands back through `finish_login`. It never logs message
content, user names or passwords.
"""

from __future__ import annotations

import base64
import binascii
import enum
import functools
import logging
import re
import traceback
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

from gateway.imap import fetch as render
from gateway.imap import wire
from gateway.imap.backend import (
    BackendError,
    FlagMode,
    FolderInfo,
    FolderSnapshot,
    MailboxNotFound,
    MailSession,
    MessageMeta,
)
from gateway.imap.config import ImapConfig
from gateway.imap.search import Candidate, Scope, compile_search, needs_content
from gateway.imap.wire import (
    Code,
    CommandFailed,
    Content,
    FetchAttribute,
    FetchKind,
    Raw,
    Response,
    Status,
    Tagged,
    Untagged,
    UntaggedStatus,
    Value,
)

log = logging.getLogger(__name__)


class State(enum.Enum):
    NOT_AUTHENTICATED = "not authenticated"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"
    LOGOUT = "logout"


@dataclass(frozen=True, slots=True)
class LoginRequest:
    """Run `Authenticator.login(username, password)` off the loop, then `finish_login`."""

    tag: str
    username: str
    password: str

    def __repr__(self) -> str:
        return f"LoginRequest(tag={self.tag!r}, username=..., password=...)"


@dataclass(frozen=True, slots=True)
class StartTlsRequest:
    """After sending the responses, upgrade the stream to TLS, then call `tls_started`."""


class LoginFailure(enum.Enum):
    BAD_CREDENTIALS = "bad credentials"  # AuthenticationFailed
    UNAVAILABLE = "unavailable"  # storage failed, or too many logins at once: try later
    BLOCKED = "blocked"  # too many failed logins from this client: NO, then BYE


@dataclass(frozen=True, slots=True)
class Reply:
    """What a command produced: responses to send in order, then an action for the server."""

    responses: Iterable[Response]
    action: LoginRequest | StartTlsRequest | None = None


SEEN = "\\Seen"
DELIMITER = "/"


def _flag_list(flags: Iterable[str]) -> tuple[Value, ...]:
    """Flags as atoms; a stored keyword that is not a valid atom is left out, not mangled."""
    return tuple(
        Raw.of(f) for f in sorted(flags) if f in wire.SYSTEM_FLAGS or (f and wire.is_atom(f))
    )


def _ok(tag: str, text: str, code: Code | None = None) -> Tagged:
    return Tagged(tag, Status.OK, text, code)


# ---------------------------------------------------------------------------------------
# The selected mailbox


class SelectedMailbox:
    """This session's view of one folder.

    `messages[n - 1]` is message number n as the client knows it. The view changes only
    when the client is told: new messages with EXISTS, removed ones with EXPUNGE (never
    during FETCH, STORE or SEARCH, RFC 3501 section 7.4.1), new flags with FETCH.
    """

    def __init__(self, snapshot: FolderSnapshot, *, read_only: bool) -> None:
        self.name = snapshot.name
        self.read_only = read_only
        self.uid_validity = snapshot.uid_validity
        self.uid_next = snapshot.uid_next
        self.highest_modseq = snapshot.highest_modseq
        self.messages: list[MessageMeta] = list(snapshot.messages)
        self.uids: list[int] = [m.uid for m in self.messages]
        self.keywords: set[str] = set()
        self._new_keywords(self.messages)

    # -- what the client is told on SELECT

    def flag_responses(self) -> list[Response]:
        flags = self.keywords | set(wire.SYSTEM_FLAGS)
        permanent = () if self.read_only else (*_flag_list(flags), Raw(b"\\*"))
        return [
            Untagged((Raw(b"FLAGS"), _flag_list(flags))),
            UntaggedStatus(Status.OK, "Flags permitted.", Code("PERMANENTFLAGS", (permanent,))),
        ]

    def select_responses(self) -> list[Response]:
        out = self.flag_responses()
        out += [
            Untagged((len(self.messages), Raw(b"EXISTS"))),
            Untagged((0, Raw(b"RECENT"))),
        ]
        unseen = next((n for n, m in enumerate(self.messages, 1) if SEEN not in m.flags), None)
        if unseen is not None:
            out.append(UntaggedStatus(Status.OK, "First unseen.", Code("UNSEEN", (unseen,))))
        out += [
            UntaggedStatus(Status.OK, "UIDs valid.", Code("UIDVALIDITY", (self.uid_validity,))),
            UntaggedStatus(Status.OK, "Predicted next UID.", Code("UIDNEXT", (self.uid_next,))),
            UntaggedStatus(
                Status.OK, "Highest modseq.", Code("HIGHESTMODSEQ", (self.highest_modseq,))
            ),
        ]
        return out

    # -- keeping the view in step with storage

    def sync(self, snapshot: FolderSnapshot, *, allow_expunge: bool) -> list[Response]:
        """Responses that bring the client from this view to `snapshot`; updates the view."""
        if snapshot.uid_validity != self.uid_validity:
            raise CommandFailed(Status.BYE, "Mailbox UIDVALIDITY changed; reconnect.")
        current = {m.uid: m for m in snapshot.messages}
        out: list[Response] = []
        if allow_expunge:
            for i in range(len(self.messages) - 1, -1, -1):
                if self.uids[i] not in current:
                    out.append(Untagged((i + 1, Raw(b"EXPUNGE"))))
                    del self.messages[i]
                    del self.uids[i]
        changed: list[int] = []
        for i, meta in enumerate(self.messages):
            new = current.get(meta.uid)
            if new is not None and new != meta:
                if new.flags != meta.flags:
                    changed.append(i)
                self.messages[i] = new
        last = self.uids[-1] if self.uids else 0
        added = [m for m in snapshot.messages if m.uid > last]
        self.messages += added
        self.uids += [m.uid for m in added]
        out = self._new_keywords(chain(added, (self.messages[i] for i in changed))) + out
        out += [self.flags_fetch(i) for i in changed]
        if added:
            out.append(Untagged((len(self.messages), Raw(b"EXISTS"))))
        self.uid_next = snapshot.uid_next
        self.highest_modseq = snapshot.highest_modseq
        return out

    def apply(self, metas: Iterable[MessageMeta]) -> tuple[list[int], list[Response]]:
        """Take new metadata from a STORE; the indexes changed and any new FLAGS response."""
        metas = list(metas)
        indexes = []
        for meta in metas:
            i = self.index_of(meta.uid)
            if i is not None:
                self.messages[i] = meta
                indexes.append(i)
        return sorted(indexes), self._new_keywords(metas)

    def _new_keywords(self, metas: Iterable[MessageMeta]) -> list[Response]:
        new = {f for m in metas for f in m.flags} - self.keywords - set(wire.SYSTEM_FLAGS)
        if not new:
            return []
        self.keywords |= new
        return self.flag_responses()

    # -- message numbers and UIDs

    def index_of(self, uid: int) -> int | None:
        i = bisect_left(self.uids, uid)
        return i if i < len(self.uids) and self.uids[i] == uid else None

    def resolve(self, sequence_set: wire.SequenceSet, *, uid: bool) -> list[int]:
        """Indexes into `messages` the set names, in message-number order."""
        if uid:
            last = self.uids[-1] if self.uids else 0
            return list(sequence_set.select(self.uids, last))
        count = len(self.messages)
        if sequence_set.highest_number() > count or (sequence_set.has_star() and not count):
            raise CommandFailed(Status.BAD, "No such message sequence number")
        return [i - 1 for lo, hi in sequence_set.intervals(count) for i in range(lo, hi + 1)]

    def flags_fetch(self, i: int) -> Untagged:
        meta = self.messages[i]
        return Untagged(
            (i + 1, Raw(b"FETCH"), (Raw(b"UID"), meta.uid, Raw(b"FLAGS"), _flag_list(meta.flags)))
        )


# ---------------------------------------------------------------------------------------
# Mailbox name patterns (LIST / LSUB)


def _pattern(reference: str, pattern: str) -> re.Pattern[str]:
    full = reference + pattern
    if full.upper().startswith("INBOX") and (len(full) == 5 or full[5] in (DELIMITER, "*", "%")):
        full = "INBOX" + full[5:]
    regex = "".join(
        ".*" if ch == "*" else f"[^{re.escape(DELIMITER)}]*" if ch == "%" else re.escape(ch)
        for ch in full
    )
    return re.compile(regex, re.DOTALL)


_CHILD_ATTRIBUTES = frozenset({"\\haschildren", "\\hasnochildren"})


def _tree(folders: Sequence[FolderInfo]) -> dict[str, tuple[str, ...]]:
    """Every folder and every missing parent (\\Noselect) with its LIST attributes.

    Whether a folder has children is decided here, from the whole tree, and always comes
    last; what storage said about it is dropped, so every backend lists alike.
    """
    names = {
        f.name: tuple(a for a in f.attributes if a.lower() not in _CHILD_ATTRIBUTES)
        for f in folders
    }
    parents = {
        DELIMITER.join(name.split(DELIMITER)[:i])
        for name in names
        for i in range(1, name.count(DELIMITER) + 1)
    }
    return {
        name: (
            *names.get(name, ("\\Noselect",)),
            "\\HasChildren" if name in parents else "\\HasNoChildren",
        )
        for name in sorted(names.keys() | parents, key=lambda n: (n != "INBOX", n))
    }


# ---------------------------------------------------------------------------------------
# The connection state


class ImapState:
    """What one connection may do now, and the responses each command produces."""

    def __init__(self, config: ImapConfig, *, tls_available: bool, tls_active: bool) -> None:
        self.config = config
        self.tls_available = tls_available
        self.tls_active = tls_active
        self.state = State.NOT_AUTHENTICATED
        self.session: MailSession | None = None
        self.selected: SelectedMailbox | None = None
        self._bad_count = 0
        self._login_failures = 0
        self._sasl_tag: str | None = None

    # -- capabilities and greetings

    @property
    def login_allowed(self) -> bool:
        return self.tls_active or not self.config.require_tls_for_login

    def capabilities(self) -> tuple[str, ...]:
        caps = [
            "IMAP4rev1",
            "LITERAL+",
            "SASL-IR",
            "ID",
            "ENABLE",
            "UNSELECT",
            "UIDPLUS",
            "NAMESPACE",
            "SPECIAL-USE",
        ]
        if self.state is State.NOT_AUTHENTICATED:
            if self.tls_available and not self.tls_active:
                caps.append("STARTTLS")
            caps.append("AUTH=PLAIN" if self.login_allowed else "LOGINDISABLED")
        return tuple(caps)

    def _capability_code(self) -> Code:
        return Code("CAPABILITY", tuple(Raw.of(c) for c in self.capabilities()))

    def greeting(self) -> Reply:
        text = f"{self.config.server_name} IMAP ready."
        return Reply([UntaggedStatus(Status.OK, text, self._capability_code())])

    def bye(self, text: str) -> Reply:
        """End the session from the server side (idle timeout, shutdown, internal error)."""
        self.state = State.LOGOUT
        return Reply([UntaggedStatus(Status.BYE, text)])

    # -- dispatch

    def handle(self, command: wire.Command) -> Reply:
        allowed, handler = COMMANDS[type(command)]
        if self.state not in allowed:
            return self._bad(command.tag, self._wrong_state_text(allowed))
        try:
            reply = handler(self, command)
        except CommandFailed as failure:
            return self._failed(command.tag, failure)
        except BackendError as error:
            return self._failed(command.tag, _backend_failure(error))
        self._bad_count = 0
        return reply

    def reject(self, error: wire.RemoteProtocolError) -> Reply:
        """Answer a command the wire layer could not parse."""
        if error.fatal:
            self.state = State.LOGOUT
            return Reply([error.response, UntaggedStatus(Status.BYE, "Protocol error.")])
        return self._count_bad([error.response])

    def _wrong_state_text(self, allowed: frozenset[State]) -> str:
        if self.state is State.NOT_AUTHENTICATED:
            return "Log in first."
        if allowed == {State.SELECTED}:
            return "No mailbox selected."
        if allowed == {State.NOT_AUTHENTICATED}:
            return "Already logged in."
        return f"Command not allowed in the {self.state.value} state."

    def _bad(self, tag: str, text: str) -> Reply:
        return self._count_bad([Tagged(tag, Status.BAD, text)])

    def _count_bad(self, responses: list[Response]) -> Reply:
        self._bad_count += 1
        if self._bad_count >= self.config.bad_command_limit:
            self.state = State.LOGOUT
            responses.append(UntaggedStatus(Status.BYE, "Too many invalid commands."))
        return Reply(responses)

    def _failed(self, tag: str, failure: CommandFailed) -> Reply:
        if failure.status is Status.BAD:
            return self._count_bad([failure.response(tag)])
        if failure.status is Status.BYE:
            self.state = State.LOGOUT
        return Reply([failure.response(tag)])

    # -- any state

    def do_capability(self, cmd: wire.Capability) -> Reply:
        caps = tuple(Raw.of(c) for c in self.capabilities())
        return Reply([Untagged((Raw(b"CAPABILITY"), *caps)), _ok(cmd.tag, "CAPABILITY completed.")])

    def do_noop(self, cmd: wire.Noop) -> Reply:
        updates = self._sync(allow_expunge=True) if self.selected else []
        return Reply([*updates, _ok(cmd.tag, "NOOP completed.")])

    def do_logout(self, cmd: wire.Logout) -> Reply:
        self.state = State.LOGOUT
        self.close()
        return Reply(
            [UntaggedStatus(Status.BYE, "Logging out."), _ok(cmd.tag, "LOGOUT completed.")]
        )

    def do_id(self, cmd: wire.Id) -> Reply:
        return Reply(
            [
                Untagged((Raw(b"ID"), ("name", self.config.server_name))),
                _ok(cmd.tag, "ID completed."),
            ]
        )

    # -- not authenticated

    def do_starttls(self, cmd: wire.StartTls) -> Reply:
        if self.tls_active:
            raise CommandFailed(Status.BAD, "TLS is already active.")
        if not self.tls_available:
            raise CommandFailed(Status.BAD, "STARTTLS is not available.")
        return Reply([_ok(cmd.tag, "Begin TLS negotiation now.")], StartTlsRequest())

    def tls_started(self) -> None:
        """The stream is now TLS: capabilities change (RFC 3501 section 6.2.1)."""
        self.tls_active = True

    def _require_login_allowed(self) -> None:
        if not self.login_allowed:
            raise CommandFailed(
                Status.NO, "Log in over TLS: use STARTTLS first.", Code("PRIVACYREQUIRED")
            )

    def do_login(self, cmd: wire.Login) -> Reply:
        self._require_login_allowed()
        return Reply([], LoginRequest(cmd.tag, cmd.userid, cmd.password))

    def do_authenticate(self, cmd: wire.Authenticate) -> Reply:
        if cmd.mechanism != "PLAIN":
            raise CommandFailed(Status.NO, "Unsupported authentication mechanism.", Code("CANNOT"))
        self._require_login_allowed()
        if cmd.initial_response is None:
            self._sasl_tag = cmd.tag
            return Reply([wire.Continuation("")])
        return self._plain(cmd.tag, cmd.initial_response)

    def handle_continuation(self, line: bytes) -> Reply:
        """The client's answer to a `+` challenge (AUTHENTICATE without initial response)."""
        tag, self._sasl_tag = self._sasl_tag, None
        if tag is None:
            return self._count_bad([UntaggedStatus(Status.BAD, "Unexpected continuation.")])
        if line.strip() == b"*":
            return self._bad(tag, "Authentication cancelled.")
        try:
            response = base64.b64decode(line.strip(), validate=True)
        except binascii.Error:
            return self._bad(tag, "Invalid base64 in the authentication response.")
        try:
            return self._plain(tag, response)
        except CommandFailed as failure:
            return self._failed(tag, failure)

    def _plain(self, tag: str, response: bytes) -> Reply:
        """SASL PLAIN (RFC 4616): authzid NUL authcid NUL password."""
        pieces = response.split(b"\0")
        if len(pieces) != 3:
            raise CommandFailed(Status.BAD, "Malformed PLAIN response.")
        try:
            authzid, authcid, password = (p.decode("utf-8") for p in pieces)
        except UnicodeDecodeError as exc:
            raise CommandFailed(Status.BAD, "PLAIN response is not UTF-8.") from exc
        if authzid and authzid != authcid:
            raise CommandFailed(
                Status.NO, "Acting as another user is not supported.", Code("AUTHORIZATIONFAILED")
            )
        return Reply([], LoginRequest(tag, authcid, password))

    def finish_login(self, request: LoginRequest, result: MailSession | LoginFailure) -> Reply:
        """The outcome of a LoginRequest the server carried out."""
        if isinstance(result, LoginFailure):
            if result is LoginFailure.UNAVAILABLE:
                text = "Login is unavailable; try again later."
                return Reply([Tagged(request.tag, Status.NO, text, Code("UNAVAILABLE"))])
            if result is LoginFailure.BLOCKED:
                self.state = State.LOGOUT
                text = "Too many failed logins from your address; try again later."
                return Reply(
                    [
                        Tagged(request.tag, Status.NO, text, Code("UNAVAILABLE")),
                        UntaggedStatus(Status.BYE, "Too many failed logins."),
                    ]
                )
            self._login_failures += 1
            responses: list[Response] = [
                Tagged(
                    request.tag,
                    Status.NO,
                    "Authentication failed.",
                    Code("AUTHENTICATIONFAILED"),
                )
            ]
            if self._login_failures >= self.config.max_login_failures:
                self.state = State.LOGOUT
                responses.append(UntaggedStatus(Status.BYE, "Too many failed logins."))
            return Reply(responses)
        self.session = result
        self.state = State.AUTHENTICATED
        return Reply([_ok(request.tag, "Logged in.", self._capability_code())])

    # -- authenticated

    def _session(self) -> MailSession:
        if self.session is None:
            raise wire.LocalProtocolError("no mail session in an authenticated state")
        return self.session

    def do_enable(self, cmd: wire.Enable) -> Reply:
        return Reply([Untagged((Raw(b"ENABLED"),)), _ok(cmd.tag, "ENABLE completed.")])

    def do_namespace(self, cmd: wire.Namespace) -> Reply:
        return Reply(
            [
                Untagged((Raw(b"NAMESPACE"), (("", DELIMITER),), None, None)),
                _ok(cmd.tag, "NAMESPACE completed."),
            ]
        )

    def do_select(self, cmd: wire.Select | wire.Examine) -> Reply:
        read_only = isinstance(cmd, wire.Examine)
        responses: list[Response] = []
        if self.selected is not None:
            self._deselect()
            responses.append(UntaggedStatus(Status.OK, "Previous mailbox closed.", Code("CLOSED")))
        snapshot = self._session().snapshot(cmd.mailbox)
        self.selected = SelectedMailbox(snapshot, read_only=read_only)
        self.state = State.SELECTED
        responses += self.selected.select_responses()
        code = Code("READ-ONLY" if read_only else "READ-WRITE")
        name = "EXAMINE" if read_only else "SELECT"
        responses.append(_ok(cmd.tag, f"{name} completed.", code))
        return Reply(responses)

    do_examine = do_select

    def do_list(self, cmd: wire.List | wire.Lsub) -> Reply:
        kind = Raw(b"LSUB" if isinstance(cmd, wire.Lsub) else b"LIST")
        if not cmd.pattern:
            responses: list[Response] = [Untagged((kind, (Raw(b"\\Noselect"),), DELIMITER, ""))]
        else:
            regex = _pattern(cmd.reference, cmd.pattern)
            responses = [
                Untagged(
                    (kind, tuple(Raw.of(a) for a in attrs), DELIMITER, wire.encode_mailbox(name))
                )
                for name, attrs in _tree(self._session().list_folders()).items()
                if regex.fullmatch(name)
            ]
        responses.append(_ok(cmd.tag, f"{kind.data.decode()} completed."))
        return Reply(responses)

    do_lsub = do_list

    def do_status(self, cmd: wire.StatusCommand) -> Reply:
        snapshot = self._session().snapshot(cmd.mailbox)
        values: dict[str, Callable[[FolderSnapshot], int]] = {
            "MESSAGES": lambda s: len(s.messages),
            "RECENT": lambda s: 0,
            "UIDNEXT": lambda s: s.uid_next,
            "UIDVALIDITY": lambda s: s.uid_validity,
            "UNSEEN": lambda s: sum(SEEN not in m.flags for m in s.messages),
            "HIGHESTMODSEQ": lambda s: s.highest_modseq,
        }
        items: list[Value] = []
        for item in cmd.items:
            if item not in values:
                raise CommandFailed(Status.BAD, f"Unknown status item {item}.")
            items += [Raw.of(item), values[item](snapshot)]
        return Reply(
            [
                Untagged((Raw(b"STATUS"), wire.encode_mailbox(cmd.mailbox), tuple(items))),
                _ok(cmd.tag, "STATUS completed."),
            ]
        )

    def do_subscribe(self, cmd: wire.Subscribe) -> Reply:
        self._session().snapshot(cmd.mailbox)  # every existing folder is subscribed
        return Reply([_ok(cmd.tag, "SUBSCRIBE completed.")])

    def do_unsubscribe(self, cmd: wire.Unsubscribe) -> Reply:
        raise CommandFailed(Status.NO, "Every folder stays subscribed.", Code("CANNOT"))

    def do_create(self, cmd: wire.Create) -> Reply:
        names = {f.name for f in self._session().list_folders()}
        if cmd.mailbox in names:
            raise CommandFailed(Status.NO, "Mailbox already exists.", Code("ALREADYEXISTS"))
        raise CommandFailed(Status.NO, "Folders are managed by the gateway.", Code("CANNOT"))

    def do_delete(self, cmd: wire.Delete | wire.Rename) -> Reply:
        raise CommandFailed(Status.NO, "Folders are managed by the gateway.", Code("CANNOT"))

    do_rename = do_delete

    # -- selected

    def _selected(self) -> SelectedMailbox:
        if self.selected is None:
            raise wire.LocalProtocolError("no mailbox in the selected state")
        return self.selected

    def _sync(self, *, allow_expunge: bool) -> list[Response]:
        selected = self._selected()
        try:
            snapshot = self._session().snapshot(selected.name)
        except MailboxNotFound as exc:
            raise CommandFailed(Status.BYE, "The selected mailbox no longer exists.") from exc
        return selected.sync(snapshot, allow_expunge=allow_expunge)

    def _deselect(self) -> None:
        self.selected = None
        self.state = State.AUTHENTICATED

    def _require_writable(self) -> SelectedMailbox:
        selected = self._selected()
        if selected.read_only:
            raise CommandFailed(Status.NO, "Mailbox is read-only.", Code("READ-ONLY"))
        return selected

    def do_check(self, cmd: wire.Check) -> Reply:
        return Reply([*self._sync(allow_expunge=True), _ok(cmd.tag, "CHECK completed.")])

    def do_close(self, cmd: wire.Close) -> Reply:
        selected = self._selected()
        if not selected.read_only:
            self._session().expunge(selected.name)
        self._deselect()
        return Reply([_ok(cmd.tag, "CLOSE completed.")])

    def do_unselect(self, cmd: wire.Unselect) -> Reply:
        self._deselect()
        return Reply([_ok(cmd.tag, "UNSELECT completed.")])

    def do_expunge(self, cmd: wire.Expunge) -> Reply:
        selected = self._require_writable()
        if cmd.uids is None:
            self._session().expunge(selected.name)
        else:
            uids = [selected.uids[i] for i in selected.resolve(cmd.uids, uid=True)]
            if uids:
                self._session().expunge(selected.name, uids)
        return Reply([*self._sync(allow_expunge=True), _ok(cmd.tag, "EXPUNGE completed.")])

    def do_store(self, cmd: wire.Store) -> Reply:
        selected = self._require_writable()
        updates = self._sync(allow_expunge=cmd.uid)
        uids = [selected.uids[i] for i in selected.resolve(cmd.sequence_set, uid=cmd.uid)]
        responses: list[Response] = list(updates)
        if uids:
            metas = self._session().store_flags(selected.name, uids, frozenset(cmd.flags), cmd.mode)
            changed, flag_updates = selected.apply(metas)
            responses += flag_updates
            if not cmd.silent:
                responses += [selected.flags_fetch(i) for i in changed]
        responses.append(_ok(cmd.tag, "STORE completed."))
        return Reply(responses)

    def do_search(self, cmd: wire.Search) -> Reply:
        selected = self._selected()
        updates = self._sync(allow_expunge=cmd.uid)
        scope = Scope(len(selected.messages), selected.uids[-1] if selected.uids else 0)
        matches = compile_search(cmd.key, cmd.charset, scope)
        content = needs_content(cmd.key)
        parse = _parser(self.config)
        found: list[int] = []
        for i, data in self._contents(selected, range(len(selected.messages)), content):
            meta = selected.messages[i]
            try:
                hit = matches(_candidate(i, meta, data, content, parse))
            except Exception as exc:  # noqa: BLE001 -- one message must not fail the others
                _degraded("SEARCH", meta.uid, exc)
                opaque = render.opaque_message(data) if data is not None else None
                hit = matches(Candidate(i + 1, meta, opaque))
            if hit:
                found.append(meta.uid if cmd.uid else i + 1)
        return Reply(
            [
                *updates,
                Untagged((Raw(b"SEARCH"), *found)),
                _ok(cmd.tag, "SEARCH completed."),
            ]
        )

    def _contents(
        self, selected: SelectedMailbox, indexes: Sequence[int], content: Content
    ) -> Iterator[tuple[int, bytes | None]]:
        """(index, octets or None), read in batches (`_batches`): for Content.FULL the whole
        message, for Content.HEADER its header block; None when the message is gone (or
        always, for Content.NONE: nothing is read)."""
        if content is Content.NONE:
            for i in indexes:
                yield i, None
            return
        session = self._session()
        config = self.config
        if content is Content.FULL:
            batches = _batches(selected, indexes, config.fetch_batch, config.fetch_batch_octets)
        else:
            batches = _batches(selected, indexes, config.header_batch, config.header_batch_octets)
        for chunk in batches:
            uids = [selected.uids[i] for i in chunk]
            if content is Content.FULL:
                found = {m.meta.uid: m.body for m in session.fetch(selected.name, uids)}
            else:
                found = {h.uid: h.header for h in session.fetch_headers(selected.name, uids)}
            for i in chunk:
                yield i, found.get(selected.uids[i])

    def do_fetch(self, cmd: wire.Fetch) -> Reply:
        selected = self._selected()
        updates = self._sync(allow_expunge=cmd.uid)
        indexes = selected.resolve(cmd.sequence_set, uid=cmd.uid)
        attributes = cmd.attributes
        if cmd.uid and not any(a.kind is FetchKind.UID for a in attributes):
            attributes = (FetchAttribute(FetchKind.UID), *attributes)
        seen_now: set[int] = set()
        if any(a.sets_seen for a in attributes) and not selected.read_only:
            unseen = [selected.uids[i] for i in indexes if SEEN not in selected.messages[i].flags]
            if unseen:
                metas = self._session().store_flags(
                    selected.name, unseen, frozenset({SEEN}), FlagMode.ADD
                )
                changed, flag_updates = selected.apply(metas)
                updates += flag_updates
                seen_now = set(changed)
        return Reply(
            chain(updates, self._fetch_responses(cmd.tag, selected, indexes, attributes, seen_now))
        )

    def _fetch_responses(
        self,
        tag: str,
        selected: SelectedMailbox,
        indexes: list[int],
        attributes: tuple[FetchAttribute, ...],
        seen_now: set[int],
    ) -> Iterator[Response]:
        """FETCH data message by message, decrypting in batches only what the items read
        (nothing, the header blocks, or whole messages); then the tagged status."""
        parse = _parser(self.config)
        plain = FetchPlan(attributes, parse)
        has_flags = any(a.kind is FetchKind.FLAGS for a in attributes)
        with_flags = (*attributes, FetchAttribute(FetchKind.FLAGS))
        flagged = plain if has_flags else FetchPlan(with_flags, parse)
        content = plain.content
        fetch_word = Raw(b"FETCH")
        try:
            for i, data in self._contents(selected, indexes, content):
                if data is None and content is not Content.NONE:
                    continue  # expunged by another session since this one last looked
                plan = flagged if i in seen_now else plain
                yield Untagged((i + 1, fetch_word, plan.items(selected.messages[i], data)))
        except BackendError as error:
            yield _backend_failure(error).response(tag)
            return
        yield _ok(tag, "FETCH completed.")

    # -- end of the connection

    def close(self) -> None:
        """Release the mail session (LOGOUT, connection lost, server stopping)."""
        session, self.session, self.selected = self.session, None, None
        if session is not None:
            session.close()


def _batches(
    selected: SelectedMailbox, indexes: Sequence[int], count: int, octets: int
) -> Iterator[list[int]]:
    """Batches of at most `count` messages whose sizes (RFC822.SIZE, the decrypted octets)
    add up to at most `octets`; a message bigger than that goes alone."""
    chunk: list[int] = []
    total = 0
    for i in indexes:
        size = selected.messages[i].size
        if chunk and (len(chunk) >= count or total + size > octets):
            yield chunk
            chunk, total = [], 0
        chunk.append(i)
        total += size
    if chunk:
        yield chunk


def _parser(config: ImapConfig) -> Callable[[bytes], render.MimePart]:
    return functools.partial(
        render.parse_message, max_depth=config.max_mime_depth, max_parts=config.max_mime_parts
    )


def _candidate(
    i: int,
    meta: MessageMeta,
    data: bytes | None,
    content: Content,
    parse: Callable[[bytes], render.MimePart],
) -> Candidate:
    message: render.MimePart | render.HeaderBlock | None = None
    if data is not None and content is Content.HEADER:
        message = render.HeaderBlock.parse(data)
    elif data is not None:
        message = parse(data)
    return Candidate(i + 1, meta, message)


def _degraded(command: str, uid: int, exc: Exception) -> None:
    """Log that one message was served opaque: the error's type and the frame that raised
    it, never its text (which could quote the message)."""
    frame = traceback.extract_tb(exc.__traceback__)[-1]
    log.warning(
        "imap %s: message uid=%d shown opaque after %s at %s:%d:%s",
        command,
        uid,
        type(exc).__name__,
        frame.filename.rsplit("/", 1)[-1],
        frame.lineno,
        frame.name,
    )


class FetchPlan:
    """The items of one FETCH command, worked out once for all its messages: their
    response names, how much of a message they read together (`content`), and the flag
    lists already rendered (most messages share a few sets of flags). `parse` takes a
    whole message apart (`render.parse_message` with the connection's MIME limits)."""

    def __init__(
        self,
        attributes: Sequence[FetchAttribute],
        parse: Callable[[bytes], render.MimePart] = render.parse_message,
    ) -> None:
        self.attributes = tuple(attributes)
        self._parse = parse
        self._items = tuple((a, Raw.of(a.response_name), a.content) for a in self.attributes)
        self.content = max((a.content for a in self.attributes), default=Content.NONE)
        self._flag_lists: dict[frozenset[str], tuple[Value, ...]] = {}

    def _flags(self, flags: frozenset[str]) -> tuple[Value, ...]:
        rendered = self._flag_lists.get(flags)
        if rendered is None:
            rendered = _flag_list(flags)
            if len(self._flag_lists) < _FLAG_LISTS_KEPT:
                self._flag_lists[flags] = rendered
        return rendered

    def items(self, meta: MessageMeta, data: bytes | None) -> tuple[Value, ...]:
        """The parenthesised FETCH data of one message. `data` is what `content` says:
        the whole message, its header block alone, or None. A message whose rendering
        fails is served opaque (`render.opaque_message`): the session and the other
        messages go on."""
        try:
            return self._render(meta, data, self._parse, render.HeaderBlock.parse)
        except Exception as exc:  # noqa: BLE001 -- one message must not end the session
            _degraded("FETCH", meta.uid, exc)
            opaque = render.opaque_message
            return self._render(meta, data, opaque, opaque)

    def _render(
        self,
        meta: MessageMeta,
        data: bytes | None,
        parse: Callable[[bytes], render.MimePart],
        parse_header: Callable[[bytes], render.MimePart | render.HeaderBlock],
    ) -> tuple[Value, ...]:
        body = data if self.content is Content.FULL else None
        tree: render.MimePart | None = None
        head: render.MimePart | render.HeaderBlock | None = None

        def parsed() -> render.MimePart:
            nonlocal tree
            if tree is None:
                tree = parse(body or b"")
            return tree

        def headers() -> render.MimePart | render.HeaderBlock:
            nonlocal head
            if body is not None:
                return parsed()
            if head is None:
                head = parse_header(data or b"")
            return head

        raw = body or b""
        out: list[Value] = []
        for attr, name, content in self._items:
            kind = attr.kind
            value: Value
            if kind is FetchKind.UID:
                value = meta.uid
            elif kind is FetchKind.FLAGS:
                value = self._flags(meta.flags)
            elif kind is FetchKind.INTERNALDATE:
                value = render.internal_date(meta.internal_date)
            elif kind is FetchKind.RFC822_SIZE:
                value = meta.size
            elif kind is FetchKind.ENVELOPE:
                value = render.envelope(headers())
            elif kind is FetchKind.BODYSTRUCTURE:
                value = render.body_structure(parsed())
            elif kind is FetchKind.BODY:
                value = render.body_structure(parsed(), extensible=False)
            elif kind is FetchKind.RFC822:
                value = raw
            elif kind is FetchKind.RFC822_HEADER:
                value = headers().header
            elif kind is FetchKind.RFC822_TEXT:
                value = render.section_octets(raw, parsed(), _TEXT_SECTION)
            else:
                section = attr.section or _WHOLE_SECTION
                if content is Content.HEADER:
                    octets = render.header_section(headers(), section)
                elif section == _WHOLE_SECTION:
                    octets = raw
                else:
                    octets = render.section_octets(raw, parsed(), section)
                if attr.partial is not None:
                    origin, length = attr.partial
                    octets = octets[origin : origin + length]
                value = octets
            out += [name, value]
        return tuple(out)


_FLAG_LISTS_KEPT = 256
_WHOLE_SECTION = wire.Section()
_TEXT_SECTION = wire.Section(text=wire.SectionText.TEXT)


_BACKEND_TEXTS = {
    "NONEXISTENT": "No such mailbox.",
    "AUTHENTICATIONFAILED": "Authentication failed.",
    "UNAVAILABLE": "The mail store is busy or unreachable; try again.",
}


def _backend_failure(error: BackendError) -> CommandFailed:
    text = _BACKEND_TEXTS.get(error.code, "The mail store failed.")
    return CommandFailed(Status.NO, text, Code(error.code))


# ---------------------------------------------------------------------------------------
# Which command may run in which state, and who answers it: the one table.

_ANY = frozenset({State.NOT_AUTHENTICATED, State.AUTHENTICATED, State.SELECTED})
_NOT_AUTH = frozenset({State.NOT_AUTHENTICATED})
_AUTH = frozenset({State.AUTHENTICATED, State.SELECTED})
_SELECTED = frozenset({State.SELECTED})

Handler = Callable[[ImapState, Any], Reply]

COMMANDS: Mapping[type[wire.Command], tuple[frozenset[State], Handler]] = {
    wire.Capability: (_ANY, ImapState.do_capability),
    wire.Noop: (_ANY, ImapState.do_noop),
    wire.Logout: (_ANY, ImapState.do_logout),
    wire.Id: (_ANY, ImapState.do_id),
    wire.StartTls: (_NOT_AUTH, ImapState.do_starttls),
    wire.Login: (_NOT_AUTH, ImapState.do_login),
    wire.Authenticate: (_NOT_AUTH, ImapState.do_authenticate),
    wire.Enable: (frozenset({State.AUTHENTICATED}), ImapState.do_enable),
    wire.Namespace: (_AUTH, ImapState.do_namespace),
    wire.Select: (_AUTH, ImapState.do_select),
    wire.Examine: (_AUTH, ImapState.do_examine),
    wire.List: (_AUTH, ImapState.do_list),
    wire.Lsub: (_AUTH, ImapState.do_lsub),
    wire.StatusCommand: (_AUTH, ImapState.do_status),
    wire.Subscribe: (_AUTH, ImapState.do_subscribe),
    wire.Unsubscribe: (_AUTH, ImapState.do_unsubscribe),
    wire.Create: (_AUTH, ImapState.do_create),
    wire.Delete: (_AUTH, ImapState.do_delete),
    wire.Rename: (_AUTH, ImapState.do_rename),
    wire.Check: (_SELECTED, ImapState.do_check),
    wire.Close: (_SELECTED, ImapState.do_close),
    wire.Unselect: (_SELECTED, ImapState.do_unselect),
    wire.Expunge: (_SELECTED, ImapState.do_expunge),
    wire.Search: (_SELECTED, ImapState.do_search),
    wire.Fetch: (_SELECTED, ImapState.do_fetch),
    wire.Store: (_SELECTED, ImapState.do_store),
}
