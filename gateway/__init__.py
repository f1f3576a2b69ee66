"""The legacy-facing side of Sealgate: SMTP and IMAP listeners, the local store, the CLI."""
