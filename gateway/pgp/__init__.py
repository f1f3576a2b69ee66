"""OpenPGP at the border of the bubble (docs/openpgp.md).

    lib        pgpy, imported with its known warnings silenced by message; bounded
               decompression
    keys       accounts' keys (made, sealed under the seed), correspondents' keys
               (read, checked), armor
    keyring    the keys in use: opened while an account is unlocked; the job that gives
               every unlocked account its key
    mime       PGP/MIME with protected headers, both ways (pure functions)
    directory  correspondents' keys the bubble's root publishes, read from the replica
    outside    RCPT policy for recipients outside the bubble
    outbound   the outbox item for one recipient outside (PGP/MIME or allowed plaintext)
    smarthost  sealed smarthost jobs and the SMTP client that hands them over
    inbound    decrypting mail from outside as the fetcher files it
    wiring     settings for the parts, read at start-up
    cli        `sealgate pgp ...`

Nothing here writes plaintext anywhere or logs an address or content.
"""
