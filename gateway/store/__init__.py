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
writes or logs message content in clear. Import the modules themselves: the package
imports none of them, so a process that needs the outbox does not load the mailboxes.
"""
