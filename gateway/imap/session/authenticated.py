"""Handlers of the AUTHENTICATED state (RFC 3501 section 6.3; ENABLE, NAMESPACE): folders,
SELECT/EXAMINE and STATUS. Valid in SELECTED too, as the RFC says."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from gateway.imap import protocol
from gateway.imap.backend import FolderSnapshot
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
from gateway.imap.session.folders import folder_tree, list_pattern
from gateway.imap.session.reply import DELIMITER, SEEN, Reply, State, ok
from gateway.imap.session.view import SelectedMailbox

if TYPE_CHECKING:
    from gateway.imap.session.connection import ImapState

# Extensions a client may ENABLE (RFC 5161); each changes response shapes for the session
# that enabled it, so handlers read `ImapState.enabled`.
ENABLEABLE: frozenset[str] = frozenset()


def do_enable(s: ImapState, cmd: protocol.Enable) -> Reply:
    new = [c for c in cmd.capabilities if c in ENABLEABLE and c not in s.enabled]
    s.enabled |= frozenset(new)
    return Reply([Untagged((Raw(b"ENABLED"), *map(Raw.of, new))), ok(cmd.tag, "ENABLE completed.")])


def do_namespace(s: ImapState, cmd: protocol.Namespace) -> Reply:
    return Reply(
        [
            Untagged((Raw(b"NAMESPACE"), (("", DELIMITER),), None, None)),
            ok(cmd.tag, "NAMESPACE completed."),
        ]
    )


def do_select(s: ImapState, cmd: protocol.Select | protocol.Examine) -> Reply:
    read_only = isinstance(cmd, protocol.Examine)
    responses: list[Response] = []
    if s.selected is not None:
        s.deselect()
        responses.append(UntaggedStatus(Status.OK, "Previous mailbox closed.", Code("CLOSED")))
    snapshot = s.mail().snapshot(cmd.mailbox)
    s.selected = SelectedMailbox(snapshot, read_only=read_only)
    s.state = State.SELECTED
    responses += s.selected.select_responses()
    code = Code("READ-ONLY" if read_only else "READ-WRITE")
    name = "EXAMINE" if read_only else "SELECT"
    responses.append(ok(cmd.tag, f"{name} completed.", code))
    return Reply(responses)


def do_list(s: ImapState, cmd: protocol.List | protocol.Lsub) -> Reply:
    kind = Raw(b"LSUB" if isinstance(cmd, protocol.Lsub) else b"LIST")
    if not cmd.pattern:
        responses: list[Response] = [Untagged((kind, (Raw(b"\\Noselect"),), DELIMITER, ""))]
    else:
        regex = list_pattern(cmd.reference, cmd.pattern)
        responses = [
            Untagged((kind, tuple(Raw.of(a) for a in attrs), DELIMITER, encode_mailbox(name)))
            for name, attrs in folder_tree(s.mail().list_folders()).items()
            if regex.fullmatch(name)
        ]
    responses.append(ok(cmd.tag, f"{kind.data.decode()} completed."))
    return Reply(responses)


_STATUS_ITEMS: dict[str, Callable[[FolderSnapshot], int]] = {
    "MESSAGES": lambda f: len(f.messages),
    "RECENT": lambda f: 0,
    "UIDNEXT": lambda f: f.uid_next,
    "UIDVALIDITY": lambda f: f.uid_validity,
    "UNSEEN": lambda f: sum(SEEN not in m.flags for m in f.messages),
    "HIGHESTMODSEQ": lambda f: f.highest_modseq,
}


def do_status(s: ImapState, cmd: protocol.StatusCommand) -> Reply:
    snapshot = s.mail().snapshot(cmd.mailbox)
    items: list[Value] = []
    for item in cmd.items:
        value = _STATUS_ITEMS.get(item)
        if value is None:
            raise CommandFailed(Status.BAD, f"Unknown status item {item}.")
        items += [Raw.of(item), value(snapshot)]
    return Reply(
        [
            Untagged((Raw(b"STATUS"), encode_mailbox(cmd.mailbox), tuple(items))),
            ok(cmd.tag, "STATUS completed."),
        ]
    )


def do_subscribe(s: ImapState, cmd: protocol.Subscribe) -> Reply:
    s.mail().snapshot(cmd.mailbox)  # every existing folder is subscribed
    return Reply([ok(cmd.tag, "SUBSCRIBE completed.")])


def do_unsubscribe(s: ImapState, cmd: protocol.Unsubscribe) -> Reply:
    raise CommandFailed(Status.NO, "Every folder stays subscribed.", Code("CANNOT"))


def do_create(s: ImapState, cmd: protocol.Create) -> Reply:
    names = {f.name for f in s.mail().list_folders()}
    if cmd.mailbox in names:
        raise CommandFailed(Status.NO, "Mailbox already exists.", Code("ALREADYEXISTS"))
    raise CommandFailed(Status.NO, "Folders are managed by the gateway.", Code("CANNOT"))


def do_delete(s: ImapState, cmd: protocol.Delete | protocol.Rename) -> Reply:
    raise CommandFailed(Status.NO, "Folders are managed by the gateway.", Code("CANNOT"))
