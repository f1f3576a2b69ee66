"""Handlers of the commands valid in every state (RFC 3501 section 6.1) and IDLE.

Each takes the connection's `ImapState` and the parsed command and returns a `Reply`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.imap import protocol
from gateway.imap.protocol import Continuation, Raw, Status, Untagged, UntaggedStatus
from gateway.imap.session.reply import IdleRequest, Reply, State, ok

if TYPE_CHECKING:
    from gateway.imap.session.connection import ImapState


def do_capability(s: ImapState, cmd: protocol.Capability) -> Reply:
    caps = tuple(Raw.of(c) for c in s.capabilities())
    return Reply([Untagged((Raw(b"CAPABILITY"), *caps)), ok(cmd.tag, "CAPABILITY completed.")])


def do_noop(s: ImapState, cmd: protocol.Noop) -> Reply:
    if s.selected is None:
        return Reply([ok(cmd.tag, "NOOP completed.")])
    updates = s.sync(allow_expunge=True)
    return Reply([*updates, ok(cmd.tag, "NOOP completed.", s.selected.new_highest_modseq_code())])


def do_logout(s: ImapState, cmd: protocol.Logout) -> Reply:
    s.state = State.LOGOUT
    s.close()
    return Reply([UntaggedStatus(Status.BYE, "Logging out."), ok(cmd.tag, "LOGOUT completed.")])


def do_id(s: ImapState, cmd: protocol.Id) -> Reply:
    return Reply(
        [Untagged((Raw(b"ID"), ("name", s.config.server_name))), ok(cmd.tag, "ID completed.")]
    )


def do_idle(s: ImapState, cmd: protocol.Idle) -> Reply:
    """IDLE (RFC 2177): report what is pending, then `+`; the server pushes changes as
    storage signals them until DONE."""
    updates = s.sync(allow_expunge=True) if s.selected else []
    return Reply([*updates, Continuation("idling")], IdleRequest(cmd.tag))
