"""Handlers of the SELECTED state (RFC 3501 section 6.4; UNSELECT, UID EXPUNGE, MOVE): CHECK,
CLOSE, EXPUNGE, STORE, SEARCH, FETCH, COPY, MOVE, and the batched reading of message content they
share.

The protocol's `StoreMode` is mapped to storage's `FlagMode` here, so the protocol layer
never depends on the storage contract.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from itertools import chain
from typing import TYPE_CHECKING

from gateway.imap import protocol
from gateway.imap.backend import BackendError, CopyResult, FlagMode
from gateway.imap.protocol import (
    Code,
    Content,
    FetchAttribute,
    FetchKind,
    Raw,
    Response,
    SequenceSet,
    Status,
    StoreMode,
    Untagged,
    UntaggedStatus,
)
from gateway.imap.render import fetch
from gateway.imap.render.plan import (
    FetchPlan,
    Octets,
    candidate,
    degraded,
    header_octets,
    message_parser,
    raw_octets,
)
from gateway.imap.render.search import Candidate, Scope, compile_search, needs_content
from gateway.imap.session.reply import SEEN, Reply, backend_failure, ok
from gateway.imap.session.view import SelectedMailbox

if TYPE_CHECKING:
    from gateway.imap.session.connection import ImapState

log = logging.getLogger(__name__)

FLAG_MODES = {
    StoreMode.REPLACE: FlagMode.REPLACE,
    StoreMode.ADD: FlagMode.ADD,
    StoreMode.REMOVE: FlagMode.REMOVE,
}


def do_check(s: ImapState, cmd: protocol.Check) -> Reply:
    return Reply([*s.sync(allow_expunge=True), ok(cmd.tag, "CHECK completed.")])


def do_close(s: ImapState, cmd: protocol.Close) -> Reply:
    selected = s.view()
    if not selected.read_only:
        s.mail().expunge(selected.name)
    s.deselect()
    return Reply([ok(cmd.tag, "CLOSE completed.")])


def do_unselect(s: ImapState, cmd: protocol.Unselect) -> Reply:
    s.deselect()
    return Reply([ok(cmd.tag, "UNSELECT completed.")])


def do_expunge(s: ImapState, cmd: protocol.Expunge) -> Reply:
    selected = s.writable_view()
    if cmd.uids is None:
        s.mail().expunge(selected.name)
    else:
        uids = [selected.uids[i] for i in selected.resolve(cmd.uids, uid=True)]
        if uids:
            s.mail().expunge(selected.name, uids)
    return Reply([*s.sync(allow_expunge=True), ok(cmd.tag, "EXPUNGE completed.")])


def do_store(s: ImapState, cmd: protocol.Store) -> Reply:
    selected = s.writable_view()
    updates = s.sync(allow_expunge=cmd.uid)
    uids = [selected.uids[i] for i in selected.resolve(cmd.sequence_set, uid=cmd.uid)]
    responses: list[Response] = list(updates)
    if uids:
        metas = s.mail().store_flags(
            selected.name, uids, frozenset(cmd.flags), FLAG_MODES[cmd.mode]
        )
        changed, flag_updates = selected.apply(metas)
        responses += flag_updates
        if not cmd.silent:
            responses += [selected.flags_fetch(i) for i in changed]
    responses.append(ok(cmd.tag, "STORE completed."))
    return Reply(responses)


def do_copy(s: ImapState, cmd: protocol.Copy) -> Reply:
    """COPY and UID COPY, answering COPYUID (RFC 4315); copies into the selected folder
    itself are announced with EXISTS."""
    selected = s.view()
    responses = s.sync(allow_expunge=cmd.uid)
    uids = [selected.uids[i] for i in selected.resolve(cmd.sequence_set, uid=cmd.uid)]
    code = None
    if uids:
        code = _copyuid(s.mail().copy(selected.name, uids, cmd.mailbox))
        responses += s.sync(allow_expunge=cmd.uid)
    return Reply([*responses, ok(cmd.tag, "COPY completed.", code)])


def do_move(s: ImapState, cmd: protocol.Move) -> Reply:
    """MOVE and UID MOVE (RFC 6851): COPYUID in an untagged OK, then an EXPUNGE for each
    message moved (and any other expunge pending), then the tagged OK."""
    selected = s.writable_view()
    responses = s.sync(allow_expunge=cmd.uid)
    uids = [selected.uids[i] for i in selected.resolve(cmd.sequence_set, uid=cmd.uid)]
    if uids:
        code = _copyuid(s.mail().move(selected.name, uids, cmd.mailbox))
        if code is not None:
            responses.append(UntaggedStatus(Status.OK, "Moved.", code))
        responses += s.sync(allow_expunge=True)
    return Reply([*responses, ok(cmd.tag, "MOVE completed.")])


def _copyuid(result: CopyResult) -> Code | None:
    if not result.uids:
        return None
    sets = (SequenceSet.of(result.source_uids), SequenceSet.of(result.destination_uids))
    return Code("COPYUID", (result.uid_validity, *(Raw(str(u).encode()) for u in sets)))


def do_search(s: ImapState, cmd: protocol.Search) -> Reply:
    selected = s.view()
    updates = s.sync(allow_expunge=cmd.uid)
    scope = Scope(len(selected.messages), selected.uids[-1] if selected.uids else 0)
    matches = compile_search(cmd.key, cmd.charset, scope)
    content = needs_content(cmd.key)
    parse = message_parser(s.config)
    found: list[int] = []
    for i, data in _contents(s, selected, range(len(selected.messages)), content):
        meta = selected.shown(i)
        try:
            hit = matches(candidate(i, meta, data, content, parse))
        except Exception as exc:  # noqa: BLE001 -- one message must not fail the others
            degraded("SEARCH", meta.uid, exc)
            raw = raw_octets(data)
            opaque = fetch.opaque_message(raw) if raw is not None else None
            hit = matches(Candidate(i + 1, meta, opaque))
        if hit:
            found.append(meta.uid if cmd.uid else i + 1)
    return Reply([*updates, Untagged((Raw(b"SEARCH"), *found)), ok(cmd.tag, "SEARCH completed.")])


def do_fetch(s: ImapState, cmd: protocol.Fetch) -> Reply:
    selected = s.view()
    updates = s.sync(allow_expunge=cmd.uid)
    indexes = selected.resolve(cmd.sequence_set, uid=cmd.uid)
    attributes = cmd.attributes
    if cmd.uid and not any(a.kind is FetchKind.UID for a in attributes):
        attributes = (FetchAttribute(FetchKind.UID), *attributes)
    seen_now: set[int] = set()
    if any(a.sets_seen for a in attributes) and not selected.read_only:
        unseen = [selected.uids[i] for i in indexes if SEEN not in selected.messages[i].flags]
        if unseen:
            metas = s.mail().store_flags(selected.name, unseen, frozenset({SEEN}), FlagMode.ADD)
            changed, flag_updates = selected.apply(metas)
            updates += flag_updates
            seen_now = set(changed)
    return Reply(
        chain(updates, _fetch_responses(s, cmd.tag, selected, indexes, attributes, seen_now))
    )


def _fetch_responses(
    s: ImapState,
    tag: str,
    selected: SelectedMailbox,
    indexes: list[int],
    attributes: tuple[FetchAttribute, ...],
    seen_now: set[int],
) -> Iterator[Response]:
    """FETCH data message by message, decrypting in batches only what the items read
    (nothing, the header blocks, or whole messages); then the tagged status."""
    parse = message_parser(s.config)
    plain = FetchPlan(attributes, parse)
    has_flags = any(a.kind is FetchKind.FLAGS for a in attributes)
    with_flags = (*attributes, FetchAttribute(FetchKind.FLAGS))
    flagged = plain if has_flags else FetchPlan(with_flags, parse)
    content = plain.content
    fetch_word = Raw(b"FETCH")
    try:
        for i, data in _contents(s, selected, indexes, content):
            if data is None and content is not Content.NONE:
                continue  # expunged by another session since this one last looked
            plan = flagged if i in seen_now else plain
            yield Untagged((i + 1, fetch_word, plan.items(selected.shown(i), data)))
    except BackendError as error:
        yield backend_failure(error).response(tag)
        return
    yield ok(tag, "FETCH completed.")


def _contents(
    s: ImapState, selected: SelectedMailbox, indexes: Sequence[int], content: Content
) -> Iterator[tuple[int, Octets | None]]:
    """(index, octets or None), read in batches (`_batches`): for Content.FULL the whole
    message, for Content.HEADER its header block (`header_octets`); None when the message
    is gone (or always, for Content.NONE: nothing is read)."""
    if content is Content.NONE:
        for i in indexes:
            yield i, None
        return
    session = s.mail()
    config = s.config
    if content is Content.FULL:
        batches = _batches(selected, indexes, config.fetch_batch, config.fetch_batch_octets)
    else:
        batches = _batches(selected, indexes, config.header_batch, config.header_batch_octets)
    for chunk in batches:
        uids = [selected.uids[i] for i in chunk]
        found: dict[int, Octets]
        if content is Content.FULL:
            found = {m.meta.uid: m.body for m in session.fetch(selected.name, uids)}
        else:
            headers = session.fetch_headers(selected.name, uids)
            found = {h.uid: header_octets(h) for h in headers}
        for i in chunk:
            yield i, found.get(selected.uids[i])


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
