"""The IMAP server's one configuration object: every limit it enforces, validated once.

Holds `ImapConfig` only. It never reads files or the environment: the CLI builds it once
and passes it down; tests override single fields with `dataclasses.replace`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class ImapConfig:
    """Limits and policy of one IMAP listener.

    max_line            octets in one command line (literals not counted); RFC 7162 asks
                        servers to accept at least 8,192
    max_literal         octets in one literal `{n}` / `{n+}` of any command but APPEND
    max_command         octets in one command, lines and literals together (APPEND's
                        message literal is bounded by max_append alone); a literal that
                        would cross it is refused with [TOOBIG] like one over max_literal
    max_append          octets of one APPENDed message once logged in (before, max_literal):
                        a larger synchronizing literal is refused with NO [TOOBIG] before
                        the client sends it (a LITERAL+ one with BAD [TOOBIG] and BYE, its
                        octets being on their way)
    max_nesting         depth of parenthesised lists and search keys
    bad_command_limit   consecutive BAD responses before the server says BYE
    max_login_failures  failed LOGIN/AUTHENTICATE attempts per connection before BYE
    max_connections     simultaneous connections per server; more are greeted with BYE
    fetch_batch         messages decrypted per storage call while answering FETCH/SEARCH
    fetch_batch_octets  a batch also ends before the sizes of its messages (their decrypted
                        octets) add up to more than this; a bigger message goes alone
    max_mime_depth      multipart and message/rfc822 parts nested deeper than this are
                        shown as opaque leaves (application/octet-stream)
    max_mime_parts      parts one message is cut into at most; the last holds the rest
    header_batch        header blocks decrypted per storage call, for FETCH/SEARCH items
                        that read only headers (a header block is usually under 4 KB);
                        a FETCH's batches start smaller and double up to this (and to
                        fetch_batch), so that its answer starts early
    header_batch_octets  a header batch also ends before the sizes of its messages (which
                        bound their header blocks) add up to more than this
    idle_timeout        seconds without a complete command before BYE once logged in
                        (RFC 3501: at least 30 min; shorter values are for tests)
    login_idle_timeout  the same before login: a client that connects and never logs in
                        holds a connection slot only this long (RFC 3501 section 5.4
                        asks for 30 min of logged-in clients only)
    idle_poll           seconds between IDLE's looks at the mailbox when no commit of this
                        process signalled a change (commits of other processes, such as a
                        migration run, are seen this way)
    storage_threads     worker threads that make the server's storage calls, so that none
                        runs on the event loop; more calls at once wait their turn
    tls_handshake_timeout  seconds a STARTTLS or implicit-TLS handshake may take
    loopback_plaintext_login  LOGIN and AUTHENTICATE PLAIN without TLS from a loopback
                        peer address (as Dovecot's disable_plaintext_auth); from any other
                        address LOGINDISABLED and no AUTH=PLAIN until TLS is active. False:
                        TLS before login on loopback too
    server_name         the name in the greeting and in the ID response
    quota_storage       octets one account may hold over all its folders (QUOTA, RFC 9208,
                        reports it in KiB as STORAGE); an APPEND or COPY past it gets
                        NO [OVERQUOTA]. None: no limit, and STORAGE is not reported
    quota_messages      messages one account may hold (MESSAGE), likewise
    """

    max_line: int = 65_536
    max_literal: int = 65_536
    max_command: int = 262_144
    max_append: int = 52_428_800
    max_nesting: int = 16
    bad_command_limit: int = 10
    max_login_failures: int = 3
    max_connections: int = 512
    fetch_batch: int = 64
    fetch_batch_octets: int = 8_388_608
    max_mime_depth: int = 32
    max_mime_parts: int = 10_000
    header_batch: int = 1024
    header_batch_octets: int = 16_777_216
    idle_timeout: float = 1800.0
    login_idle_timeout: float = 60.0
    idle_poll: float = 30.0
    storage_threads: int = 8
    tls_handshake_timeout: float = 30.0
    loopback_plaintext_login: bool = True
    server_name: str = "Sealgate"
    quota_storage: int | None = None
    quota_messages: int | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type in ("int", "float"):
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise ValueError(f"ImapConfig.{f.name} must be a number, not {value!r}")
                if value <= 0:
                    raise ValueError(f"ImapConfig.{f.name} must be positive, not {value!r}")
        if self.max_line < 1024:
            raise ValueError("ImapConfig.max_line must be at least 1024 octets")
        if self.max_command < self.max_line:
            raise ValueError("ImapConfig.max_command must be at least max_line")
        for limit in (self.quota_storage, self.quota_messages):
            if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                                      or limit <= 0):
                raise ValueError("ImapConfig quota limits must be positive integers or None")
        if not isinstance(self.loopback_plaintext_login, bool):
            raise ValueError("ImapConfig.loopback_plaintext_login must be a bool")
        name = self.server_name
        if not name or not name.isascii() or not name.isprintable() or len(name) > 64:
            raise ValueError("ImapConfig.server_name must be 1-64 printable ASCII characters")
