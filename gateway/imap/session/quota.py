"""QUOTA (RFC 9208): the account's usage against the limits of `ImapConfig`, and the
OVERQUOTA check APPEND and COPY make before writing.

Every folder of an account shares one quota root, named "". STORAGE is reported in
units of 1024 octets (rounded up), MESSAGE in messages; a resource without a limit is
not reported, and with neither there is no quota root. Limits are the administrator's:
SETQUOTA always answers NO. The check reads the usage just before the write, so two
sessions writing at once may each pass it and together go past the limit by one
command's worth.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.imap import protocol
from gateway.imap.backend import MailboxNotFound, Usage
from gateway.imap.protocol import Code, CommandFailed, Raw, Status, Untagged, Value, encode_mailbox
from gateway.imap.session.reply import Reply, ok

if TYPE_CHECKING:
    from gateway.imap.config import ImapConfig
    from gateway.imap.session.connection import ImapState

ROOT = ""


def _kib(octets: int) -> int:
    return -(-octets // 1024)


def _resources(config: ImapConfig, usage: Usage) -> tuple[Value, ...]:
    values: list[Value] = []
    if config.quota_storage is not None:
        values += [Raw(b"STORAGE"), _kib(usage.octets), _kib(config.quota_storage)]
    if config.quota_messages is not None:
        values += [Raw(b"MESSAGE"), usage.messages, config.quota_messages]
    return tuple(values)


def limited(config: ImapConfig) -> bool:
    """Whether the account has a quota root (a limit on either resource)."""
    return config.quota_storage is not None or config.quota_messages is not None


def _quota(s: ImapState) -> Untagged:
    return Untagged((Raw(b"QUOTA"), ROOT, _resources(s.config, s.mail().usage())))


def do_getquotaroot(s: ImapState, cmd: protocol.GetQuotaRoot) -> Reply:
    """`* QUOTAROOT mailbox ""` and that root's QUOTA; NO [NONEXISTENT] for a mailbox
    that does not exist."""
    if cmd.mailbox not in {f.name for f in s.mail().list_folders()}:
        raise MailboxNotFound(cmd.mailbox)
    name = encode_mailbox(cmd.mailbox)
    if not limited(s.config):
        return Reply([Untagged((Raw(b"QUOTAROOT"), name)), ok(cmd.tag, "GETQUOTAROOT completed.")])
    return Reply(
        [
            Untagged((Raw(b"QUOTAROOT"), name, ROOT)),
            _quota(s),
            ok(cmd.tag, "GETQUOTAROOT completed."),
        ]
    )


def do_getquota(s: ImapState, cmd: protocol.GetQuota) -> Reply:
    if cmd.root != ROOT or not limited(s.config):
        raise CommandFailed(Status.NO, "No such quota root.", Code("NONEXISTENT"))
    return Reply([_quota(s), ok(cmd.tag, "GETQUOTA completed.")])


def do_setquota(s: ImapState, cmd: protocol.SetQuota) -> Reply:
    raise CommandFailed(Status.NO, "Quotas are set by the administrator.", Code("NOPERM"))


def check_room(s: ImapState, messages: int, octets: int) -> None:
    """NO [OVERQUOTA] if adding these messages and octets would pass a limit."""
    config = s.config
    if not limited(config):
        return
    usage = s.mail().usage()
    storage, count = config.quota_storage, config.quota_messages
    if (storage is not None and usage.octets + octets > storage) or (
        count is not None and usage.messages + messages > count
    ):
        raise CommandFailed(Status.NO, "Over the account's quota.", Code("OVERQUOTA"))
