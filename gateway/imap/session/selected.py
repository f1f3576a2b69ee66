"""Handlers of the SELECTED state (RFC 3501 section 6.4; UNSELECT, UID EXPUNGE, MOVE): CHECK,
CLOSE, EXPUNGE, STORE, SEARCH, FETCH, COPY, MOVE, and the batched reading of message content they
share.

The protocol's `StoreMode` is mapped to storage's `FlagMode` here, so the protocol layer
never depends on the storage contract.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from itertools import chain
from typing import TYPE_CHECKING

from gateway.imap import protocol
from gateway.imap.backend import BackendError, CopyResult, FlagMode
from gateway.imap.protocol import (
    Code,
    CommandFailed,
    Content,
    FetchAttribute,
    FetchKind,
    Raw,
    Response,
    SequenceSet,
    Serialized,
    Status,
    StoreMode,
    Tagged,
    Untagged,
    UntaggedStatus,
    Value,
)
from gateway.imap.render import fetch
from gateway.imap.render.binary import UnknownEncoding
from gateway.imap.render.plan import (
    FetchPlan,
    Octets,
    candidate,
    degraded,
    header_octets,
    message_parser,
    raw_octets,
)
from gateway.imap.render.search import (
    Candidate,
    Scope,
    compile_search,
    needs_content,
    uses_modseq,
)
from gateway.imap.session import quota
from gateway.imap.session.reply import QRESYNC, SEEN, Reply, backend_failure, ok
from gateway.imap.session.view import SelectedMailbox, vanished_earlier

if TYPE_CHECKING:
    from gateway.imap.session.connection import ImapState

log = logging.getLogger(__name__)

FLAG_MODES = {
    StoreMode.REPLACE: FlagMode.REPLACE,
    StoreMode.ADD: FlagMode.ADD,
    StoreMode.REMOVE: FlagMode.REMOVE,
}


def do_check(s: ImapState, cmd: protocol.Check) -> Reply:
    updates = s.sync(allow_expunge=True)
    return Reply([*updates, ok(cmd.tag, "CHECK completed.", s.view().new_highest_modseq_code())])


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
    updates = s.sync(allow_expunge=True)
    return Reply([*updates, ok(cmd.tag, "EXPUNGE completed.", selected.highest_modseq_code())])


def do_store(s: ImapState, cmd: protocol.Store) -> Reply:
    """STORE, and with UNCHANGEDSINCE (RFC 7162 section 3.1.3) only where the modseq is
    not above it: the others (gone ones too) are named in the tagged OK's MODIFIED. Once
    CONDSTORE is on, even .SILENT tells the new modseqs (with the flags, which another
    session may have changed as well)."""
    selected = s.writable_view()
    conditional = cmd.unchanged_since is not None
    responses: list[Response] = s.enable_condstore() if conditional else []
    responses += s.sync(allow_expunge=cmd.uid)
    indexes = selected.resolve(cmd.sequence_set, uid=cmd.uid)
    uids = [selected.uids[i] for i in indexes]
    code = None
    if uids:
        metas = s.mail().store_flags(
            selected.name, uids, frozenset(cmd.flags), FLAG_MODES[cmd.mode], cmd.unchanged_since
        )
        bumped = {
            m.uid
            for m in metas
            if (i := selected.index_of(m.uid)) is not None
            and selected.messages[i].modseq != m.modseq
        }
        changed, flag_updates = selected.apply(metas)
        responses += flag_updates
        if not cmd.silent:
            responses += [selected.flags_fetch(i) for i in changed]
        elif selected.condstore:
            responses += [selected.flags_fetch(i) for i in changed if selected.uids[i] in bumped]
        if conditional:
            failed = {selected.uids[i] if cmd.uid else i + 1 for i in indexes}
            failed -= {selected.uids[i] if cmd.uid else i + 1 for i in changed}
            if failed:
                code = Code("MODIFIED", (Raw(str(SequenceSet.of(sorted(failed))).encode()),))
    text = "Conditional STORE failed." if code is not None else "STORE completed."
    responses.append(ok(cmd.tag, text, code))
    return Reply(responses)


def do_copy(s: ImapState, cmd: protocol.Copy) -> Reply:
    """COPY and UID COPY, answering COPYUID (RFC 4315); copies into the selected folder
    itself are announced with EXISTS; NO [OVERQUOTA] past the account's quota."""
    selected = s.view()
    if quota.limited(s.config):  # before the sync, whose updates a refusal would lose
        before: list[int] = []
        with contextlib.suppress(CommandFailed):  # a bad set: the resolve below says so
            before = selected.resolve(cmd.sequence_set, uid=cmd.uid)
        quota.check_room(s, len(before), sum(selected.messages[i].size for i in before))
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
    return Reply([*responses, ok(cmd.tag, "MOVE completed.", selected.highest_modseq_code())])


def _copyuid(result: CopyResult) -> Code | None:
    if not result.uids:
        return None
    sets = (SequenceSet.of(result.source_uids), SequenceSet.of(result.destination_uids))
    return Code("COPYUID", (result.uid_validity, *(Raw(str(u).encode()) for u in sets)))


def do_search(s: ImapState, cmd: protocol.Search) -> Reply:
    """SEARCH; with a MODSEQ key (RFC 7162 section 3.1.5) the answer ends with the
    highest modseq of the messages found."""
    selected = s.view()
    with_modseq = uses_modseq(cmd.key)
    updates = s.enable_condstore() if with_modseq else []
    updates += s.sync(allow_expunge=cmd.uid)
    scope = Scope(len(selected.messages), selected.uids[-1] if selected.uids else 0)
    matches = compile_search(cmd.key, cmd.charset, scope)
    content = needs_content(cmd.key)
    parse = message_parser(s.config)
    found: list[int] = []
    highest = 0
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
            highest = max(highest, meta.modseq)
    # RFC 7162 section 3.1.5: the highest modseq of what was found, after the numbers
    # (SEARCH) or as an ESEARCH result item.
    modseq: tuple[Value, ...] = (Raw(b"MODSEQ"), highest) if with_modseq and found else ()
    if cmd.returns is None:
        result = Untagged((Raw(b"SEARCH"), *found, *((modseq,) if modseq else ())))
    else:
        result = esearch(cmd.tag, found, cmd.returns, uid=cmd.uid)
        result = Untagged((*result.values, *modseq))
    return Reply([*updates, result, ok(cmd.tag, "SEARCH completed.")])


def esearch(tag: str, found: list[int], returns: tuple[str, ...], *, uid: bool) -> Untagged:
    """`* ESEARCH (TAG "a1") [UID] MIN 2 MAX 9 COUNT 3 ALL 2,8:9` (RFC 4731): what RETURN
    asked for, in its order (`RETURN ()` is ALL); MIN, MAX and ALL are left out when
    nothing matched, COUNT never is."""
    values: list[Value] = [Raw(b"ESEARCH"), (Raw(b"TAG"), tag)]
    if uid:
        values.append(Raw(b"UID"))
    for option in returns or ("ALL",):
        if option == "COUNT":
            values += [Raw(b"COUNT"), len(found)]
        elif found:
            value: Value = {"MIN": found[0], "MAX": found[-1]}.get(option)
            if option == "ALL":
                value = Raw.of(str(SequenceSet.of(found)))
            values += [Raw.of(option), value]
    return Untagged(tuple(values))


def do_fetch(s: ImapState, cmd: protocol.Fetch) -> Reply:
    """FETCH; with CHANGEDSINCE (RFC 7162 section 3.1.4) only the messages whose modseq is
    above it, MODSEQ implied, and with VANISHED (UID FETCH, QRESYNC on) first the UIDs of
    the set expunged since, as `VANISHED (EARLIER)`."""
    selected = s.view()
    if cmd.vanished and QRESYNC not in s.enabled:
        raise CommandFailed(Status.BAD, "QRESYNC must be enabled first.")
    attributes = cmd.attributes
    has_modseq = any(a.kind is FetchKind.MODSEQ for a in attributes)
    updates = s.enable_condstore() if has_modseq or cmd.changed_since is not None else []
    updates += s.sync(allow_expunge=cmd.uid)
    indexes = selected.resolve(cmd.sequence_set, uid=cmd.uid)
    since = cmd.changed_since
    if since is not None:
        indexes = [i for i in indexes if selected.messages[i].modseq > since]
        if not has_modseq:
            attributes = (*attributes, FetchAttribute(FetchKind.MODSEQ))
        if cmd.vanished:
            updates += _vanished_since(s, selected, cmd.sequence_set, since)
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


def _vanished_since(
    s: ImapState, selected: SelectedMailbox, uid_set: SequenceSet, modseq: int
) -> list[Response]:
    """`VANISHED (EARLIER)` for the UIDs of `uid_set` expunged after `modseq` that this
    view no longer holds (RFC 7162 section 3.2.6)."""
    expunged = s.mail().changes_since(selected.name, modseq).expunged
    gone = [uid for uid in expunged if selected.index_of(uid) is None]
    last = selected.uids[-1] if selected.uids else 0
    gone = [gone[i] for i in uid_set.select(gone, max(last, selected.uid_next - 1))]
    return [vanished_earlier(gone)] if gone else []


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
    # A FETCH that sets \Seen tells the new flags (RFC 3501 6.4.5), and the new modseq
    # once CONDSTORE is on.
    implied = [FetchKind.FLAGS] + ([FetchKind.MODSEQ] if selected.condstore else [])
    missing = [k for k in implied if not any(a.kind is k for a in attributes)]
    with_flags = (*attributes, *(FetchAttribute(k) for k in missing))
    flagged = FetchPlan(with_flags, parse) if missing else plain
    content = plain.content
    fetch_word = Raw(b"FETCH")
    unknown_encoding = False
    try:
        if plain.writes_directly and flagged.writes_directly:
            yield from _serialized(s, selected, indexes, content, (plain, flagged), seen_now)
            yield ok(tag, "FETCH completed.")
            return
        for i, data in _contents(s, selected, indexes, content):
            if data is None and content is not Content.NONE:
                continue  # expunged by another session since this one last looked
            plan = flagged if i in seen_now else plain
            try:
                items = plan.items(selected.shown(i), data)
            except UnknownEncoding:  # BINARY of a part it cannot decode: the others go on
                unknown_encoding = True
                continue
            yield Untagged((i + 1, fetch_word, items))
    except BackendError as error:
        yield backend_failure(error).response(tag)
        return
    if unknown_encoding:
        text = "A part has a content transfer encoding this server cannot decode."
        yield Tagged(tag, Status.NO, text, Code("UNKNOWN-CTE"))
        return
    yield ok(tag, "FETCH completed.")


def _serialized(
    s: ImapState,
    selected: SelectedMailbox,
    indexes: list[int],
    content: Content,
    plans: tuple[FetchPlan, FetchPlan],
    seen_now: set[int],
) -> Iterator[Serialized]:
    """The FETCH responses of plans that write directly (a header sync), one `Serialized`
    per batch of messages: no response object per message."""
    plain, flagged = plans
    messages, uids, recent = selected.messages, selected.uids, selected.is_recent
    if content is Content.NONE:
        for start in range(0, len(indexes), s.config.header_batch):
            chunk = indexes[start : start + s.config.header_batch]
            yield Serialized(b"".join([
                (flagged if i in seen_now else plain).line(
                    i + 1, messages[i], recent(uids[i]), None
                )
                for i in chunk
            ]))
        return
    session = s.mail()
    config = s.config
    for chunk in _batches(selected, indexes, config.header_batch, config.header_batch_octets):
        headers = session.fetch_headers(selected.name, [uids[i] for i in chunk])
        if len(headers) == len(chunk) and not seen_now:  # the common case: all there, in order
            yield Serialized(plain.lines(
                [i + 1 for i in chunk], [messages[i] for i in chunk],
                [recent(uids[i]) for i in chunk], headers,
            ))
            continue
        found = {h.uid: h for h in headers}
        lines = []
        for i in chunk:
            stored = found.get(uids[i])
            if stored is not None:  # else expunged by another session since this one looked
                plan = flagged if i in seen_now else plain
                lines.append(plan.line(i + 1, messages[i], recent(uids[i]), stored))
        yield Serialized(b"".join(lines))


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


# The first batch of a FETCH: its answer starts after this many messages are read, and
# each batch after it is twice the one before, up to the configured count. A client
# reads and parses the first messages while the server reads the next.
FIRST_BATCH = 128


def _batches(
    selected: SelectedMailbox, indexes: Sequence[int], count: int, octets: int
) -> Iterator[list[int]]:
    """Batches of at most `count` messages (from `FIRST_BATCH`, doubling) whose sizes
    (RFC822.SIZE, the decrypted octets) add up to at most `octets`; a message bigger
    than that goes alone."""
    chunk: list[int] = []
    total = 0
    limit = min(count, FIRST_BATCH)
    for i in indexes:
        size = selected.messages[i].size
        if chunk and (len(chunk) >= limit or total + size > octets):
            yield chunk
            chunk, total = [], 0
            limit = min(count, 2 * limit)
        chunk.append(i)
        total += size
    if chunk:
        yield chunk
