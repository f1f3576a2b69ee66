"""Moving mailboxes from legacy IMAP servers, mbox files and Maildirs into the bubble.

    sealing    seal a read message to the account's public key; open it to file it
    folders    source folder names to bubble folders (special-use, delimiters, UTF-7)
    sources    mbox files and Maildirs (Maildir++ and LAYOUT=fs) as source folders
    imap       a legacy IMAP server as source folders (aioimaplib)
    imap_client  aioimaplib's client with a linear reader for bulk FETCH answers
    fetch_wire   that reader: the answer to one bulk UID FETCH, sans-I/O
    run        the migration: checkpoint, seal, store, verify, per source folder
    batch      many accounts from one CSV file (`--accounts`)
    report     the summary table and JSON object
    progress   a progress bar on a terminal, log lines otherwise
    filing     the gateway's job that files pending imports once an account unlocks
    cli        the `sealgate migrate` subcommands

The tool needs the gateway's state directory, never the user's password; no step
writes a message in clear (see `sealing` and `gateway.store.imports`).
"""
