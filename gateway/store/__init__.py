"""The gateway's local store: accounts, sealed mailboxes, the outbox, the directory replica.

    db               open_engine, transactions, the error tree (StoreError …)
    models           the SQLModel tables (nothing in clear that is message content)
    accounts         AccountStore: addresses, sealed seeds, public keys, relays
    mailbox          MailboxStore (deliver, dedup, refusal notices), StoreAuthenticator
    session          StoreSession: a logged-in account's MailSession
    folder_rows      folder rows, UID/modseq counters, the expunge log, filing a message
    flags            the flags column
    header_cache     header blocks of runs of messages, sealed together
    append           APPEND, sealed before it is written
    transfer         COPY and MOVE without opening a message
    folders          CREATE, DELETE, RENAME, SUBSCRIBE
    folder_state     folder names, UIDVALIDITY, the standard folders, subscriptions
    outbox           Outbox: sealed envelopes until a relay acknowledges them
    directory_cache  DirectoryCache: replica of signed directory records

The unlocked keys live in `gateway.keyring.KeyRing`, never here. This package never
writes or logs message content in clear.
"""

from gateway.store.accounts import AccountRow, AccountStore
from gateway.store.db import (
    AccountExists,
    DuplicateEnvelope,
    InvalidValue,
    KeyMismatch,
    SessionClosed,
    StoreError,
    UnknownAccount,
    open_engine,
)
from gateway.store.directory_cache import DirectoryCache
from gateway.store.mailbox import MailboxStore, StoreAuthenticator
from gateway.store.outbox import Outbox, OutboxEntry
from gateway.store.session import StoreSession

__all__ = [
    "AccountExists",
    "AccountRow",
    "AccountStore",
    "DirectoryCache",
    "DuplicateEnvelope",
    "InvalidValue",
    "KeyMismatch",
    "MailboxStore",
    "Outbox",
    "OutboxEntry",
    "SessionClosed",
    "StoreAuthenticator",
    "StoreError",
    "StoreSession",
    "UnknownAccount",
    "open_engine",
]
