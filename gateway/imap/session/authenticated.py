"""Handlers of the AUTHENTICATED state (RFC 3501 section 6.3; ENABLE, NAMESPACE): folders
(LIST, LSUB, CREATE, DELETE, RENAME, subscriptions), SELECT/EXAMINE, STATUS and APPEND.
Valid in SELECTED too, as the RFC says."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from gateway.imap import protocol
from gateway.imap.backend import FolderSnapshot, MailboxNotFound
from gateway.imap.protocol import (
    Code,
    CommandFailed,
    Raw,
    Response,
    Status,
    Untagged,
    UntaggedStatus,
    Value,
    encode_mailbox,
)
from gateway.imap.render import binary
from gateway.imap.session.folders import (
    extended_listing,
    folder_tree,
    list_pattern,
    subscribed_tree,
)
from gateway.imap.session.quota import check_room
from gateway.imap.session.reply import CONDSTORE, DELIMITER, QRESYNC, SEEN, Reply, State, ok
from gateway.imap.session.view import SelectedMailbox

DELETED = "\\Deleted"

if TYPE_CHECKING:
    from gateway.imap.session.connection import ImapState

# Extensions a client may ENABLE (RFC 5161); each changes response shapes for the session
# that enabled it, so handlers read `ImapState.enabled`.
ENABLEABLE: frozenset[str] = frozenset({CONDSTORE, QRESYNC})


def do_enable(s: ImapState, cmd: protocol.Enable) -> Reply:
    """ENABLE; QRESYNC implies CONDSTORE (RFC 7162 section 3.2.3), which is then on
    without being listed in ENABLED unless asked for."""
    new = list(dict.fromkeys(c for c in cmd.capabilities if c in ENABLEABLE and c not in s.enabled))
    s.enabled |= frozenset(new)
    if QRESYNC in s.enabled:
        s.enabled |= {CONDSTORE}
    return Reply([Untagged((Raw(b"ENABLED"), *map(Raw.of, new))), ok(cmd.tag, "ENABLE completed.")])


def do_namespace(s: ImapState, cmd: protocol.Namespace) -> Reply:
    return Reply(
        [
            Untagged((Raw(b"NAMESPACE"), (("", DELIMITER),), None, None)),
            ok(cmd.tag, "NAMESPACE completed."),
        ]
    )


def do_select(s: ImapState, cmd: protocol.Select | protocol.Examine) -> Reply:
    """SELECT/EXAMINE with the CONDSTORE and QRESYNC parameters (RFC 7162): QRESYNC with
    the folder's UIDVALIDITY answers what changed since the client's modseq; with another
    UIDVALIDITY it is ignored, as the RFC says."""
    read_only = isinstance(cmd, protocol.Examine)
    qresync = cmd.qresync
    if qresync is not None and QRESYNC not in s.enabled:
        raise CommandFailed(Status.BAD, "QRESYNC must be enabled first.")
    responses: list[Response] = []
    if s.selected is not None:
        s.deselect()
        responses.append(UntaggedStatus(Status.OK, "Previous mailbox closed.", Code("CLOSED")))
    if cmd.condstore:
        s.enable_condstore()
    snapshot = s.mail().snapshot(cmd.mailbox)
    # SELECT takes \Recent from the folder for this session; EXAMINE leaves it (6.3.2).
    # Nothing to take costs no write: mail arriving meanwhile is claimed at the next sync.
    recent = None
    if not read_only:
        nothing = range(snapshot.uid_next, snapshot.uid_next)
        new = snapshot.first_recent_uid < snapshot.uid_next
        recent = s.mail().claim_recent(cmd.mailbox) if new else nothing
    s.selected = SelectedMailbox(
        snapshot,
        read_only=read_only,
        recent=recent,
        condstore=CONDSTORE in s.enabled,
        qresync=QRESYNC in s.enabled,
    )
    s.state = State.SELECTED
    responses += s.selected.select_responses()
    if (
        qresync is not None
        and qresync.uid_validity == snapshot.uid_validity
        and qresync.modseq < snapshot.highest_modseq
    ):
        changes = s.mail().changes_since(snapshot.name, qresync.modseq)
        responses += s.selected.resync(qresync.modseq, qresync.known_uids, changes)
    code = Code("READ-ONLY" if read_only else "READ-WRITE")
    name = "EXAMINE" if read_only else "SELECT"
    responses.append(ok(cmd.tag, f"{name} completed.", code))
    return Reply(responses)


def do_list(s: ImapState, cmd: protocol.List | protocol.Lsub) -> Reply:
    """LIST with \\Noselect, \\HasChildren and \\HasNoChildren from the folder tree; LSUB
    the same over the subscribed names (one that does not exist is \\Noselect)."""
    lsub = isinstance(cmd, protocol.Lsub)
    kind = Raw(b"LSUB" if lsub else b"LIST")
    if not cmd.pattern:
        responses: list[Response] = [Untagged((kind, (Raw(b"\\Noselect"),), DELIMITER, ""))]
    else:
        regex = list_pattern(cmd.reference, cmd.pattern)
        tree = folder_tree(s.mail().list_folders())
        if lsub:
            tree = subscribed_tree(tree, s.mail().list_subscribed(), regex)
        responses = [
            Untagged((kind, tuple(Raw.of(a) for a in attrs), DELIMITER, encode_mailbox(name)))
            for name, attrs in tree.items()
            if regex.fullmatch(name)
        ]
    responses.append(ok(cmd.tag, f"{kind.data.decode()} completed."))
    return Reply(responses)


def do_list_extended(s: ImapState, cmd: protocol.ListExtended) -> Reply:
    """LIST-EXTENDED (RFC 5258) with the SPECIAL-USE selection (RFC 6154) and RETURN
    (STATUS (...)) (RFC 5819): each listed folder one can select is followed by its STATUS
    (a folder deleted meanwhile is left out)."""
    if cmd.status_items is not None:
        _check_status_items(cmd.status_items)
    patterns = [list_pattern(cmd.reference, p) for p in cmd.patterns if p]
    if not patterns:  # only "": the hierarchy delimiter, as plain LIST says it
        return do_list(s, protocol.List(cmd.tag, cmd.reference, ""))
    mark_subscribed = "SUBSCRIBED" in cmd.select or "SUBSCRIBED" in cmd.returns
    subscribed = s.mail().list_subscribed() if mark_subscribed else ()
    listing = extended_listing(
        s.mail().list_folders(), subscribed, patterns, cmd.select, mark_subscribed=mark_subscribed
    )
    responses: list[Response] = []
    for entry in listing:
        name = encode_mailbox(entry.name)
        values: tuple[Value, ...] = (
            Raw(b"LIST"), tuple(Raw.of(a) for a in entry.attributes), DELIMITER, name
        )
        if entry.child_info:
            values += (("CHILDINFO", entry.child_info),)
        responses.append(Untagged(values))
        if cmd.status_items is not None and entry.selectable:
            try:
                snapshot = s.mail().snapshot(entry.name)
            except MailboxNotFound:
                continue
            responses.append(_status_response(s, entry.name, snapshot, cmd.status_items))
    responses.append(ok(cmd.tag, "LIST completed."))
    return Reply(responses)


_STATUS_ITEMS: dict[str, Callable[[FolderSnapshot, SelectedMailbox | None], int]] = {
    "MESSAGES": lambda f, _: len(f.messages),
    "RECENT": lambda f, view: sum(
        m.uid >= f.first_recent_uid or (view is not None and view.is_recent(m.uid))
        for m in f.messages
    ),
    "UIDNEXT": lambda f, _: f.uid_next,
    "UIDVALIDITY": lambda f, _: f.uid_validity,
    "UNSEEN": lambda f, _: sum(SEEN not in m.flags for m in f.messages),
    "HIGHESTMODSEQ": lambda f, _: f.highest_modseq,
    # RFC 9051 and RFC 9208 (which QUOTA=RES-STORAGE asks for): what EXPUNGE would free,
    # in messages and in the STORAGE resource's units of 1024 octets.
    "DELETED": lambda f, _: sum(DELETED in m.flags for m in f.messages),
    "DELETED-STORAGE": lambda f, _: -(
        -sum(m.size for m in f.messages if DELETED in m.flags) // 1024
    ),
}


def _check_status_items(items: tuple[str, ...]) -> None:
    for item in items:
        if item not in _STATUS_ITEMS:
            raise CommandFailed(Status.BAD, f"Unknown status item {item}.")


def _status_response(
    s: ImapState, name: str, snapshot: FolderSnapshot, items: tuple[str, ...]
) -> Untagged:
    """STATUS of `snapshot`; RECENT counts what no session took yet, and what this
    session holds as \\Recent when the folder is the one it selected."""
    view = s.selected if s.selected is not None and s.selected.name == snapshot.name else None
    values: list[Value] = []
    for item in items:
        values += [Raw.of(item), _STATUS_ITEMS[item](snapshot, view)]
    return Untagged((Raw(b"STATUS"), encode_mailbox(name), tuple(values)))


def do_status(s: ImapState, cmd: protocol.StatusCommand) -> Reply:
    _check_status_items(cmd.items)
    responses: list[Response] = s.enable_condstore() if "HIGHESTMODSEQ" in cmd.items else []
    snapshot = s.mail().snapshot(cmd.mailbox)
    status = _status_response(s, cmd.mailbox, snapshot, cmd.items)
    return Reply([*responses, status, ok(cmd.tag, "STATUS completed.")])


def do_append(s: ImapState, cmd: protocol.Append) -> Reply:
    """APPEND (RFC 3501 6.3.11) answering APPENDUID (RFC 4315); a message into the selected
    folder is announced with EXISTS at once; NO [OVERQUOTA] past the account's quota. A
    message sent as a literal8 is kept with its binary parts in base64 (`binary.stored_form`)."""
    message = binary.stored_form(cmd.message) if cmd.binary else cmd.message
    check_room(s, 1, len(message))
    result = s.mail().append(cmd.mailbox, message, frozenset(cmd.flags), cmd.internal_date)
    updates = s.sync(allow_expunge=True) if s.selected else []
    code = Code("APPENDUID", (result.uid_validity, result.uid))
    return Reply([*updates, ok(cmd.tag, "APPEND completed.", code)])


def do_create(s: ImapState, cmd: protocol.Create) -> Reply:
    s.mail().create_folder(cmd.mailbox)
    return Reply([ok(cmd.tag, "CREATE completed.")])


def do_delete(s: ImapState, cmd: protocol.Delete) -> Reply:
    """DELETE; deleting the selected folder leaves the session AUTHENTICATED."""
    s.mail().delete_folder(cmd.mailbox)
    if s.selected is not None and s.selected.name == cmd.mailbox:
        s.deselect()
    return Reply([ok(cmd.tag, "DELETE completed.")])


def do_rename(s: ImapState, cmd: protocol.Rename) -> Reply:
    """RENAME; when the selected folder (or a superior) is renamed it gets a new
    UIDVALIDITY, so the session leaves it (renaming INBOX empties it: the next sync tells
    the client so with EXPUNGE)."""
    s.mail().rename_folder(cmd.mailbox, cmd.new_name)
    selected = s.selected
    if (
        selected is not None
        and cmd.mailbox != "INBOX"
        and (selected.name == cmd.mailbox or selected.name.startswith(cmd.mailbox + DELIMITER))
    ):
        s.deselect()
    return Reply([ok(cmd.tag, "RENAME completed.")])


def do_subscribe(s: ImapState, cmd: protocol.Subscribe) -> Reply:
    s.mail().subscribe(cmd.mailbox)
    return Reply([ok(cmd.tag, "SUBSCRIBE completed.")])


def do_unsubscribe(s: ImapState, cmd: protocol.Unsubscribe) -> Reply:
    s.mail().unsubscribe(cmd.mailbox)
    return Reply([ok(cmd.tag, "UNSUBSCRIBE completed.")])
