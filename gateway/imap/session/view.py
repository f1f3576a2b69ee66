"""This session's view of the selected folder, kept in step by modseq changes.

Holds `SelectedMailbox`: message numbers as the client knows them, their metadata, the
keywords announced, the modseq up to which changes were reported. It never reads the
folder again after SELECT: `sync` applies a `FolderChanges` (what storage says changed
after `highest_modseq`), so keeping a large folder in step costs O(changes). No storage
call is made here; `connection.ImapState` asks storage and hands the changes in.

The session's enabled extensions change the shapes it answers in (RFC 7162): with
`condstore` every flag FETCH carries MODSEQ; with `qresync` expunges are told as one
`VANISHED uid-set` instead of an `EXPUNGE` per message, and `resync` answers SELECT's
QRESYNC parameter from one `FolderChanges`, so an unchanged folder costs nothing more.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable

from gateway.imap.backend import FolderChanges, FolderSnapshot, MessageMeta
from gateway.imap.protocol import (
    SYSTEM_FLAGS,
    Code,
    CommandFailed,
    Raw,
    Response,
    SequenceSet,
    Status,
    Untagged,
    UntaggedStatus,
    Value,
    flag_list,
)
from gateway.imap.render.plan import with_recent
from gateway.imap.session.reply import SEEN


class SelectedMailbox:
    """This session's view of one folder.

    `messages[n - 1]` is message number n as the client knows it. The view changes only
    when the client is told: new messages with EXISTS, removed ones with EXPUNGE (never
    during FETCH, STORE or SEARCH, RFC 3501 section 7.4.1: those are kept in
    `pending_expunge` until a command may report them), new flags with FETCH.

    \\Recent is the session's own (RFC 3501 2.3.2): a read-write view holds the UIDs its
    claims took (`claim_recent` at SELECT and whenever new mail shows up, so `claimed_until`
    is how far it claimed). A read-only one claims nothing (EXAMINE must not take \\Recent
    from the next session): it holds what the folder still held as recent when the message
    was first told to it (`add_unclaimed`), so mail a read-write session saw first is not
    recent here, and `claimed_until` is how far it looked.
    """

    def __init__(
        self,
        snapshot: FolderSnapshot,
        *,
        read_only: bool,
        recent: range | None = None,
        condstore: bool = False,
        qresync: bool = False,
    ) -> None:
        self.name = snapshot.name
        self.read_only = read_only
        self.condstore = condstore
        self.qresync = qresync
        self.uid_validity = snapshot.uid_validity
        self.uid_next = snapshot.uid_next
        self.highest_modseq = snapshot.highest_modseq  # changes asked for up to here
        # ... and told up to here: while an expunge waits, HIGHESTMODSEQ must stay below
        # its modseq (RFC 7162 section 3.2), or a client resyncing from it would miss it.
        self.told_modseq = snapshot.highest_modseq
        # ... and last given as HIGHESTMODSEQ (SELECT's, or a code since).
        self.reported_modseq = snapshot.highest_modseq
        self.messages: list[MessageMeta] = list(snapshot.messages)
        self.uids: list[int] = [m.uid for m in self.messages]
        self.pending_expunge: set[int] = set()
        self.keywords: set[str] = set()
        self._new_keywords(self.messages)
        self._recent: list[range] = []
        self.claimed_until = 0
        if recent is None:  # read-only: what no session took yet
            first = snapshot.first_recent_uid
            self.add_unclaimed(range(first, max(first, self.uid_next)), self.uid_next)
        else:
            self.add_recent(recent)

    # -- \Recent

    def add_recent(self, claimed: range) -> None:
        self.claimed_until = max(self.claimed_until, claimed.stop)
        if not claimed:
            return
        if self._recent and self._recent[-1].stop == claimed.start:
            claimed = range(self._recent.pop().start, claimed.stop)
        self._recent.append(claimed)

    def add_unclaimed(self, unclaimed: range, until: int) -> None:
        """Read-only: of the UIDs from `claimed_until` up to `until` (the UID next of the
        changes this view takes in), those still in `unclaimed` (`peek_recent`) are
        recent; later ones are decided when they are told."""
        start, stop = max(unclaimed.start, self.claimed_until), min(unclaimed.stop, until)
        self.add_recent(range(start, stop) if start < stop else range(until, until))

    def is_recent(self, uid: int) -> bool:
        for claimed in self._recent:  # a loop, not any(): a header sync asks per message
            if uid in claimed:
                return True
        return False

    def recent_count(self) -> int:
        uids = self.uids
        return sum(bisect_left(uids, r.stop) - bisect_left(uids, r.start) for r in self._recent)

    def shown(self, i: int) -> MessageMeta:
        """Message i's metadata as the client sees it: \\Recent among the flags if it is."""
        meta = self.messages[i]
        return with_recent(meta) if self.is_recent(meta.uid) else meta

    # -- what the client is told on SELECT

    def flag_responses(self) -> list[Response]:
        flags = self.keywords | set(SYSTEM_FLAGS)
        permanent = () if self.read_only else (*flag_list(flags), Raw(b"\\*"))
        return [
            Untagged((Raw(b"FLAGS"), flag_list(flags))),
            UntaggedStatus(Status.OK, "Flags permitted.", Code("PERMANENTFLAGS", (permanent,))),
        ]

    def select_responses(self) -> list[Response]:
        out = self.flag_responses()
        out += [
            Untagged((len(self.messages), Raw(b"EXISTS"))),
            Untagged((self.recent_count(), Raw(b"RECENT"))),
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

    def sync(self, changes: FolderChanges, *, allow_expunge: bool) -> list[Response]:
        """Responses that bring the client up to `changes`; updates the view.

        Flags are reported only when they differ from what the client was last told
        (its own STORE was applied already); expunges wait in `pending_expunge` unless
        `allow_expunge`; a message that came and went unseen is never mentioned."""
        if changes.uid_validity != self.uid_validity:
            raise CommandFailed(Status.BYE, "Mailbox UIDVALIDITY changed; reconnect.")
        last = self.uids[-1] if self.uids else 0
        self.pending_expunge.update(uid for uid in changes.expunged if uid <= last)
        out: list[Response] = []
        if allow_expunge and self.pending_expunge:
            vanished: list[int] = []
            for uid in sorted(self.pending_expunge, reverse=True):
                i = self.index_of(uid)
                if i is not None:
                    if not self.qresync:
                        out.append(Untagged((i + 1, Raw(b"EXPUNGE"))))
                    vanished.append(uid)
                    del self.messages[i]
                    del self.uids[i]
            self.pending_expunge.clear()
            if vanished and self.qresync:
                out.append(Untagged((Raw(b"VANISHED"), _uid_set(reversed(vanished)))))
        gone = set(changes.expunged)
        changed: list[int] = []
        added: list[MessageMeta] = []
        for meta in changes.changed:
            if meta.uid > last:
                if meta.uid not in gone:
                    added.append(meta)
                continue
            i = self.index_of(meta.uid)
            if i is None or meta.uid in self.pending_expunge:
                continue
            old = self.messages[i]
            if meta != old:
                if meta.flags != old.flags:
                    changed.append(i)
                self.messages[i] = meta
        self.messages += added
        self.uids += [m.uid for m in added]
        updated = (self.messages[i] for i in changed)
        out = self._new_keywords([*added, *updated]) + out
        out += [self.flags_fetch(i) for i in changed]
        if added:
            out.append(Untagged((len(self.messages), Raw(b"EXISTS"))))
            out.append(Untagged((self.recent_count(), Raw(b"RECENT"))))
        self.uid_next = max(self.uid_next, changes.uid_next)
        self.highest_modseq = max(self.highest_modseq, changes.highest_modseq)
        if not self.pending_expunge:
            self.told_modseq = self.highest_modseq
        return out

    def resync(
        self, modseq: int, known_uids: SequenceSet | None, changes: FolderChanges
    ) -> list[Response]:
        """SELECT's QRESYNC answer (RFC 7162 section 3.2.5): `VANISHED (EARLIER)` for the
        UIDs expunged after `modseq`, then the flags of the messages changed after it,
        both only among `known_uids` when given. `changes` is what storage says changed
        after `modseq`; what happened after this view's snapshot is left to `sync`. The
        expunge log is complete, so the client's sequence match data is never needed."""

        def known(uids: list[int]) -> list[int]:
            return uids if known_uids is None else [uids[i] for i in known_uids.select(uids, 0)]

        gone = known([uid for uid in changes.expunged if self.index_of(uid) is None])
        out: list[Response] = [vanished_earlier(gone)] if gone else []
        for uid in known([m.uid for m in changes.changed]):
            i = self.index_of(uid)
            if i is not None and self.messages[i].modseq > modseq:
                out.append(self.flags_fetch(i))
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
        new = {f for m in metas for f in m.flags} - self.keywords - set(SYSTEM_FLAGS)
        if not new:
            return []
        self.keywords |= new
        return self.flag_responses()

    # -- message numbers and UIDs

    def index_of(self, uid: int) -> int | None:
        i = bisect_left(self.uids, uid)
        return i if i < len(self.uids) and self.uids[i] == uid else None

    def resolve(self, sequence_set: SequenceSet, *, uid: bool) -> list[int]:
        """Indexes into `messages` the set names, in message-number order."""
        if uid:
            last = self.uids[-1] if self.uids else 0
            return list(sequence_set.select(self.uids, last))
        count = len(self.messages)
        if sequence_set.highest_number() > count or (sequence_set.has_star() and not count):
            raise CommandFailed(Status.BAD, "No such message sequence number")
        return [i - 1 for lo, hi in sequence_set.intervals(count) for i in range(lo, hi + 1)]

    def flags_fetch(self, i: int) -> Untagged:
        meta = self.shown(i)
        items: tuple[Value, ...] = (Raw(b"UID"), meta.uid, Raw(b"FLAGS"), flag_list(meta.flags))
        if self.condstore:
            items += (Raw(b"MODSEQ"), (meta.modseq,))
        return Untagged((i + 1, Raw(b"FETCH"), items))

    def highest_modseq_code(self) -> Code | None:
        """HIGHESTMODSEQ for the tagged OK of a command that told expunges, once CONDSTORE
        is on (as Dovecot does; RFC 7162 section 3.2 asks clients to keep it)."""
        if not self.condstore:
            return None
        self.reported_modseq = self.told_modseq
        return Code("HIGHESTMODSEQ", (self.told_modseq,))

    def new_highest_modseq_code(self) -> Code | None:
        """HIGHESTMODSEQ for the tagged OK of NOOP, CHECK and IDLE, once CONDSTORE is on,
        only when what the client was told has gone past the last one it was given (new
        mail, flag changes, expunges told since), as Dovecot does: a client that keeps it
        resyncs from there (RFC 7162 section 3.2.5) without asking STATUS."""
        if self.told_modseq <= self.reported_modseq:
            return None
        return self.highest_modseq_code()


def vanished_earlier(uids: list[int]) -> Untagged:
    """`* VANISHED (EARLIER) uids` (RFC 7162 section 3.2.10): expunged before now, which
    changes no message number."""
    return Untagged((Raw(b"VANISHED"), (Raw(b"EARLIER"),), _uid_set(uids)))


def _uid_set(uids: Iterable[int]) -> Raw:
    """Ascending UIDs as a compact set (`3:5,9`)."""
    return Raw(str(SequenceSet.of(list(uids))).encode())
