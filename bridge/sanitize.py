"""Metadata stripping: the header block of a message, cleaned before it is sealed.

`sanitize` removes the header fields that reveal infrastructure and habits (trace
fields, client software, legacy-server verdicts and signatures, Microsoft and Google
internals, Bcc) and rewrites every Message-ID to ``<H@domain>``, H a keyed hash of
the original id, so the same id always maps to the same new one and replies still
thread. docs/metadata.md is the one list of what goes, what stays, and why.

The header block is read by `bridge.headers.parse_header` (the gateway's one header
parser): a kept field leaves byte for byte (folding included) and in its place; the body
leaves byte for byte, except that bare LF line ends become CRLF. A line that ends the
header block without an empty line gets one inserted before it.

This module parses no MIME, does no I/O, keeps no state but a cache of compiled
policies, never logs, and never puts a header value into an exception message.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from bridge.headers import (
    MAX_HEADER_BLOCK,
    Field,
    HeaderBlock,
    HeaderTooLarge,
    parse_addresses,
    parse_header,
)

__all__ = [
    "DEFAULT_STRIPPED", "MAX_HEADER_BLOCK", "PROTECTED", "HeaderTooLarge", "SanitizePolicy",
    "Sanitized", "rewrite_message_id", "sanitize",
]

MIN_KEY_LEN = 16
MAX_KEY_LEN = 64  # BLAKE2b's key limit
ID_DIGEST_LEN = 20  # 160 bits; 32 base32 characters

DEFAULT_STRIPPED: tuple[str, ...] = (
    # trace and delivery: hosts, addresses, times of every hop
    "Received", "X-Received", "Return-Path", "Delivered-To", "X-Original-To",
    "X-Envelope-*", "X-Forwarded-*",
    # the sending client and where it ran
    "User-Agent", "X-Mailer", "X-MimeOLE", "X-Originating-*", "X-PHP-Originating-Script",
    "X-Authenticated-*", "X-AntiAbuse", "X-Get-Message-Sender-Via", "X-Source", "X-Source-*",
    # Microsoft Exchange / Exchange Online / Outlook internals
    "X-MS-*", "X-Microsoft-*", "X-Forefront-*", "X-EOPAttributedMessage",
    "X-EOPTenantAttributedMessage", "X-OriginatorOrg", "X-ClientProxiedBy", "Thread-Index",
    "msip_labels",
    # Google internals
    "X-Google-*", "X-Gm-*",
    # verdicts and signatures of legacy servers
    "Authentication-Results", "ARC-*", "DKIM-Signature", "DomainKey-Signature", "Received-SPF",
    "X-Spam-*", "X-Rspamd-*", "X-Amavis-*", "X-Virus-Scanned",
    # blind recipients (their addresses are returned in `Sanitized.bcc`)
    "Bcc", "Resent-Bcc",
)
"""Field names removed by default; a trailing ``*`` makes the entry a prefix."""

PROTECTED: frozenset[str] = frozenset({
    "from", "sender", "reply-to", "to", "cc", "date", "subject",
    "message-id", "in-reply-to", "references",
    "mime-version", "content-type", "content-transfer-encoding",
})
"""Fields an operator's policy may not remove: without them the message breaks."""

_BCC_FIELDS = frozenset({"bcc", "resent-bcc"})
_SINGLE_ID_FIELDS = frozenset({"message-id", "resent-message-id"})
_ID_LIST_FIELDS = frozenset({"in-reply-to", "references"})

_PATTERN = re.compile(r"[\x21-\x39\x3b-\x7e]+\*?")
_ID_TOKEN = re.compile(r"<([^<>]*)>")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_PERSON = b"sg-message-id"


@dataclass(frozen=True)
class SanitizePolicy:
    """What to strip beyond `DEFAULT_STRIPPED`, and the host part of rewritten ids."""

    extra_headers: tuple[str, ...] = ()
    message_id_domain: str = "sealgate.invalid"

    def __post_init__(self) -> None:
        _compile(self.extra_headers)
        _check_domain(self.message_id_domain)


@dataclass(frozen=True)
class Sanitized:
    """A cleaned message. `removed` is for tests and metrics: never log it with values."""

    message: bytes
    removed: tuple[str, ...]
    bcc: tuple[str, ...]


def sanitize(
    message: bytes,
    *,
    policy: SanitizePolicy,
    message_id_key: bytes,
    header: HeaderBlock | None = None,
) -> Sanitized:
    """Strip the policy's fields, rewrite message ids, return the CRLF message.

    `header` is `parse_header(message)` when the caller has parsed it already (the
    gateway parses once for policy and for this). Raises `HeaderTooLarge` (a
    `ValueError`) when the header block exceeds `MAX_HEADER_BLOCK`, and `ValueError` for
    a key of the wrong length.
    """
    _check_key(message_id_key)
    strip = _compile(policy.extra_headers)
    domain = policy.message_id_domain
    if header is None:
        header = parse_header(message)
    body_start = header.body_start
    crlf_only = message.count(b"\n", 0, header.end) == message.count(b"\r\n", 0, header.end)

    parts: list[bytes | memoryview] = []
    removed: list[str] = []
    bcc: list[str] = []
    for field in header.fields:
        if strip(field.name):
            removed.append(field.name)
            if field.name in _BCC_FIELDS:
                bcc.extend(_addresses(field))
            continue
        if field.name in _SINGLE_ID_FIELDS or field.name in _ID_LIST_FIELDS:
            rewritten = _rewrite_ids(field, message_id_key, domain)
            if rewritten is not None:
                parts.append(rewritten)
                continue
        raw = field.raw
        if not raw.endswith(b"\n"):  # the input ends inside this field: terminate it
            raw += b"\n" if raw.endswith(b"\r") else b"\r\n"
        parts.append(raw if crlf_only else _crlf(raw))

    if body_start is not None:
        parts.append(b"\r\n")
        lf = message.count(b"\n", body_start)
        crlf = message.count(b"\r\n", body_start) if lf else 0
        if lf == crlf:
            parts.append(memoryview(message)[body_start:])
        elif crlf == 0:  # bare LF line ends become CRLF; nothing else in the body changes
            parts.append(message[body_start:].replace(b"\n", b"\r\n"))
        else:
            parts.append(_crlf(message[body_start:]))
    return Sanitized(message=b"".join(parts), removed=tuple(removed), bcc=tuple(bcc))


def _crlf(data: bytes) -> bytes:
    """Every LF not preceded by CR becomes CRLF; lone CRs stay."""
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def rewrite_message_id(value: str, *, key: bytes, domain: str) -> str:
    """Map one Message-ID value to ``<H@domain>``, the same value always to the same id.

    The id is the first ``<...>`` in `value`, or, when there is none, the whole value
    stripped of surrounding white space (a malformed id is mapped, never refused).
    H is base32 of keyed BLAKE2b-160 over that id. An id whose host part is `domain`
    or ends in ``.invalid`` is returned unchanged in angle brackets: it names no host
    and may already be a rewritten id, which must survive the next hop so replies thread.
    """
    _check_key(key)
    _check_domain(domain)
    tokens = _ID_TOKEN.findall(value)
    return _map_id(tokens[0] if tokens else value.strip(), key, domain)


def _map_id(original: str, key: bytes, domain: str) -> str:
    at = original.rfind("@")
    if at >= 0:
        host = original[at + 1 :].strip().rstrip(".").lower()
        if host == domain.lower() or host == "invalid" or host.endswith(".invalid"):
            return f"<{original}>"
    digest = hashlib.blake2b(
        original.encode("utf-8", "surrogateescape"),
        digest_size=ID_DIGEST_LEN, key=key, person=_PERSON,
    ).digest()
    return f"<{base64.b32encode(digest).decode('ascii').lower()}@{domain}>"


def _rewrite_ids(field: Field, key: bytes, domain: str) -> bytes | None:
    """The field with every id mapped, CRLF-terminated; None if no id changes."""
    value = field.value.decode("utf-8", "surrogateescape")
    tokens: list[str] = _ID_TOKEN.findall(value)
    if field.name in _SINGLE_ID_FIELDS:
        tokens = tokens[:1]
    if tokens:
        mapped = [_map_id(token, key, domain) for token in tokens]
        if all(new == f"<{old}>" for new, old in zip(mapped, tokens, strict=True)):
            return None
    elif value.strip():
        mapped = [_map_id(value.strip(), key, domain)]
    else:
        return None
    ids = b"\r\n ".join(m.encode("utf-8", "surrogateescape") for m in mapped)
    return field.raw[: field.head_len] + b" " + ids + b"\r\n"


def _addresses(field: Field) -> list[str]:
    value = field.value.decode("utf-8", "replace")
    return [m.address for m in parse_addresses(value, strict=False).mailboxes if m.address]


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes) or not MIN_KEY_LEN <= len(key) <= MAX_KEY_LEN:
        raise ValueError(f"message_id_key must be {MIN_KEY_LEN} to {MAX_KEY_LEN} bytes")


def _check_domain(domain: str) -> None:
    if not isinstance(domain, str) or len(domain) > 253 or not _DOMAIN.fullmatch(domain):
        raise ValueError("message_id_domain must be a host name of letters, digits, '-' and '.'")


def _compile(extra: tuple[str, ...]) -> Callable[[str], bool]:
    """Validate the operator's list and return a predicate on lower-case field names."""
    if not isinstance(extra, tuple) or not all(isinstance(p, str) for p in extra):
        raise ValueError("extra_headers must be a tuple of field names")
    return _compile_valid_types(extra)


@lru_cache(maxsize=64)
def _compile_valid_types(extra: tuple[str, ...]) -> Callable[[str], bool]:
    for pattern in extra:
        if not _PATTERN.fullmatch(pattern):
            raise ValueError(
                f"extra_headers entry {pattern!r} is not a field name"
                " (a trailing '*' makes it a prefix)"
            )
        hit = _matches(pattern.lower())
        blocked = sorted(name for name in PROTECTED if hit(name))
        if blocked:
            raise ValueError(f"extra_headers entry {pattern!r} would remove {', '.join(blocked)}")
    patterns = [p.lower() for p in (*DEFAULT_STRIPPED, *extra)]
    exact = frozenset(p for p in patterns if not p.endswith("*"))
    prefixes = tuple(p[:-1] for p in patterns if p.endswith("*"))
    return lambda name: name in exact or name.startswith(prefixes)


def _matches(pattern: str) -> Callable[[str], bool]:
    if pattern.endswith("*"):
        return lambda name: name.startswith(pattern[:-1])
    return lambda name: name == pattern
