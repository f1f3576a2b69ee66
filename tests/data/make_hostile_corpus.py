"""Make tests/data/hostile/: messages a bubble member could send to break a mailbox.

Each file is one message, named for what it attacks: charsets, MIME boundaries, deep
nesting, RFC 2231 parameters, huge parameter values, RFC 2047 encoded words, raw 8-bit
and non-UTF-8 octets in header values and continuation lines, bare CR, NUL, truncated
base64 and quoted-printable, header-only and empty messages. Most carry one From (alice,
the sender the tests use), To, Subject and Date, so they could pass a strict submission;
those named `sealed-*` break a header rule submission enforces (control characters in
header lines, no From, nothing at all) and are sealed and deposited directly by the tests.

    .venv/bin/python tests/data/make_hostile_corpus.py          # rewrite the files
    .venv/bin/python tests/data/make_hostile_corpus.py --check  # exit 1 if one differs
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

CORPUS = Path(__file__).with_name("hostile")
SENDER = b"alice@test.bubble"
RECIPIENT = b"bob@test.bubble"


def head(name: str, *extra: bytes, subject: bytes | None = None) -> bytes:
    fields = [
        b"From: Alice <" + SENDER + b">",
        b"To: " + RECIPIENT,
        b"Subject: " + (subject if subject is not None else b"hostile " + name.encode()),
        b"Date: Tue, 1 Dec 2026 08:00:00 +0000",
        b"Message-ID: <" + name.encode() + b"@test.bubble>",
        b"MIME-Version: 1.0",
        *extra,
    ]
    return b"".join(f + b"\r\n" for f in fields)


def mixed(boundary: bytes, *parts: bytes, close: bool = True) -> bytes:
    body = b"".join(b"--" + boundary + b"\r\n" + p + b"\r\n" for p in parts)
    return body + (b"--" + boundary + b"--\r\n" if close else b"")


TEXT = b"Content-Type: text/plain; charset=utf-8\r\n\r\nplain text part"


def nested_multiparts(levels: int) -> bytes:
    inner = b"Content-Type: text/plain\r\n\r\nthe bottom"
    for level in range(levels):
        b = b"n%d" % level
        inner = b'Content-Type: multipart/mixed; boundary="' + b + b'"\r\n\r\n' + mixed(b, inner)
    return inner


def nested_messages(levels: int) -> bytes:
    inner = b"Subject: bottom\r\n\r\nthe bottom\r\n"
    for level in range(levels):
        inner = b"Content-Type: message/rfc822\r\n\r\nSubject: level %d\r\n" % level + inner
    return inner


def nested_alternating(levels: int) -> bytes:
    inner = b"Content-Type: text/plain\r\n\r\nthe bottom"
    for level in range(levels):
        if level % 2:
            inner = b"Content-Type: message/rfc822\r\n\r\nSubject: s\r\n" + inner
        else:
            b = b"a%d" % level
            ctype = b'Content-Type: multipart/mixed; boundary="' + b + b'"\r\n\r\n'
            inner = ctype + mixed(b, inner)
    return inner


def multipart_message(name: str, boundary: bytes, body: bytes, *extra: bytes) -> bytes:
    ctype = b'Content-Type: multipart/mixed; boundary="' + boundary + b'"'
    return head(name, ctype, *extra) + b"\r\n" + body


def top(name: str, nested: bytes) -> bytes:
    """A message whose own header block continues with `nested`'s Content-* fields."""
    return head(name) + nested


MESSAGES: dict[str, Callable[[str], bytes]] = {
    # -- charsets
    "charset-unknown": lambda n: head(n, b"Content-Type: text/plain; charset=x-no-such-set")
    + b"\r\nd\xe9j\xe0 vu\r\n",
    "charset-refuses-replace": lambda n: head(n, b"Content-Type: text/plain; charset=idna")
    + b"\r\n\xff\xfe\xfd caf\xc3\xa9\r\n",
    "charset-not-a-text-codec": lambda n: head(n, b"Content-Type: text/plain; charset=rot13")
    + b"\r\nuryyb\r\n",
    "charset-raw-octets": lambda n: head(n, b'Content-Type: text/plain; charset="\xff\xfe"')
    + b"\r\n\xff\xfe\r\n",
    "charset-utf7-and-utf16": lambda n: multipart_message(
        n,
        b"cs",
        mixed(
            b"cs",
            b"Content-Type: text/plain; charset=utf-7\r\n\r\n+AGEAYgBj-+++",
            b"Content-Type: text/plain; charset=utf-16\r\n\r\n\xff\xfe\x00",
        ),
    ),
    # -- boundaries
    "boundary-missing": lambda n: head(n, b"Content-Type: multipart/mixed")
    + b"\r\n--x\r\n\r\nno boundary parameter\r\n--x--\r\n",
    "boundary-empty": lambda n: head(n, b'Content-Type: multipart/mixed; boundary=""')
    + b"\r\n--\r\n\r\nempty\r\n----\r\n",
    "boundary-never-used": lambda n: multipart_message(n, b"unused", b"just text\r\n"),
    "boundary-unterminated": lambda n: multipart_message(
        n, b"open", mixed(b"open", TEXT, b"\r\nsecond, never closed", close=False)
    ),
    "boundary-huge": lambda n: multipart_message(n, b"B" * 900, mixed(b"B" * 900, TEXT, TEXT)),
    "boundary-prefix-of-another": lambda n: multipart_message(
        n, b"b", b"--b\r\n\r\none\r\n--bb\r\n\r\nnot a part\r\n--b--\r\n"
    ),
    "boundary-raw-octets-continuation": lambda n: head(
        n, b"Content-Type: multipart/mixed; boundary=x", b" \xd7\x80\xff\xfe\xc3"
    )
    + b"\r\n--x\r\n\r\nbehind a broken boundary\r\n--x--\r\n",
    "boundary-many-parts": lambda n: multipart_message(
        n, b"m", mixed(b"m", *([b"\r\np"] * 3000))
    ),
    # -- nesting
    "nesting-multipart-200": lambda n: top(n, nested_multiparts(200)),
    "nesting-rfc822-200": lambda n: top(n, nested_messages(200)),
    "nesting-alternating-200": lambda n: top(n, nested_alternating(200)),
    "digest-of-non-messages": lambda n: head(n, b'Content-Type: multipart/digest; boundary="d"')
    + b"\r\n"
    + mixed(b"d", b"\r\nnot a message", b"Content-Type: text/plain\r\n\r\ntext"),
    "rfc822-base64": lambda n: head(
        n, b"Content-Type: message/rfc822", b"Content-Transfer-Encoding: base64"
    )
    + b"\r\nU3ViamVjdDogaW5uZXIKCmJvZHk=\r\n",
    # -- RFC 2231 parameters
    "rfc2231-numbered-and-unnumbered": lambda n: multipart_message(
        n,
        b"p",
        mixed(
            b"p",
            b"Content-Type: application/pdf\r\n"
            b"Content-Disposition: attachment; filename*=a.pdf; filename*0=b.pdf\r\n\r\nPDF",
            TEXT,
        ),
    ),
    "rfc2231-huge-section-number": lambda n: multipart_message(
        n,
        b"p",
        mixed(
            b"p",
            b"Content-Type: application/pdf\r\n"
            b"Content-Disposition: attachment;\r\n filename*" + b"9" * 900 + b"=x.pdf\r\n\r\nPDF",
        ),
    ),
    "rfc2231-bad-charsets": lambda n: multipart_message(
        n,
        b"p",
        mixed(
            b"p",
            b"Content-Type: text/plain; charset*=idna''%FF%FE\r\n"
            b"Content-Disposition: attachment; filename*=x-unknown'en'%FF%00.txt\r\n\r\nt",
            b"Content-Type: application/x; name*=utf-8''%ED%A0%80%FF\r\n\r\nx",
        ),
    ),
    "rfc2231-junk": lambda n: multipart_message(
        n,
        b"p",
        mixed(
            b"p",
            b"Content-Type: application/octet-stream; name*0*=zz'%ZZ; name*1*=%%%;\r\n"
            b" title*=''; x*=; *=; =; ;;\r\n"
            b"Content-Disposition: inline; filename*1=\"b\"; filename*3=\"d\"\r\n\r\nz",
        ),
    ),
    "param-huge-values": lambda n: multipart_message(
        n,
        b"h",
        mixed(
            b"h",
            b'Content-Type: application/x; name="'
            + b"\r\n ".join([b"N" * 900] * 60)
            + b'"\r\nContent-Disposition: attachment;\r\n'
            + b";\r\n".join(b" filename*%d=%s" % (i, b"F" * 900) for i in range(60))
            + b"\r\n\r\nhuge",
        ),
    ),
    # -- encoded words and raw octets in header values
    "encoded-word-junk": lambda n: head(
        n,
        b"Content-Type: text/plain; name==?utf-8?b?!!!?=",
        subject=b"=?x-unknown?q?a=FF?= =?utf-8?b?!!!?= =?idna?q?=FF?= =?utf-8?q?open"
        b" =?=?utf-8?q?x?=?= =?utf-16?b?2D3eAA==?=",
    )
    + b"\r\nbody\r\n",
    "encoded-word-in-display-name": lambda n: head(n).replace(
        b"From: Alice <", b"From: =?utf-8?b?!!!?= =?x-unknown?q?=FF?= <"
    )
    + b"\r\nbody\r\n",
    "header-raw-latin1": lambda n: head(
        n,
        b'Content-Type: application/pdf; name="caf\xe9.pdf"',
        b'Content-Disposition: attachment; filename="r\xe9sum\xe9.pdf"',
        subject=b"Gr\xfc\xdfe aus Z\xfcrich",
    )
    + b"\r\nPDF\r\n",
    "header-nonutf8-continuation": lambda n: head(
        n,
        b"Content-Type: text/plain;",
        b" charset=utf-8;",
        b"\t\xff\xfe\xfd\x80",
        b"Content-Disposition: inline;",
        b" \xc3\x28\xa0\xa1",
        subject=b"split\r\n \xff\xfe subject",
    )
    + b"\r\nbody\r\n",
    "header-valid-and-invalid-utf8": lambda n: head(
        n,
        b"Content-Type: text/plain; charset=utf-8; x=\xd7\x80\xff",
        b"Content-Language: d\xc3\xa9, \xff",
        b"Content-ID: <\xff@x>",
        b"Content-Description: \xe2\x82\xac \x80",
        subject=b"\xd7\x80\xff",
    )
    + b"\r\nbody\r\n",
    "content-type-garbage": lambda n: multipart_message(
        n,
        b"g",
        mixed(
            b"g",
            b"Content-Type: ;;;=\r\n\r\none",
            b"Content-Type: text\r\n\r\ntwo",
            b"Content-Type: \xff/\xfe\r\n\r\nthree",
            b"Content-Type: multipart/\r\n\r\nfour",
            b"Content-Transfer-Encoding: \xff\r\n\r\nfive",
        ),
    ),
    # -- bodies
    "body-bare-cr": lambda n: head(n) + b"\r\nline\rwith bare\rCRs\r\n",
    "body-nul": lambda n: head(n) + b"\r\nbefore\x00after\x00\x00\r\n",
    "base64-truncated": lambda n: multipart_message(
        n,
        b"e",
        mixed(
            b"e",
            b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\nSGVsbG8gV29y",
            b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!*===",
            b"Content-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0",
        ),
    ),
    "quoted-printable-truncated": lambda n: head(
        n, b"Content-Type: text/plain", b"Content-Transfer-Encoding: quoted-printable"
    )
    + b"\r\ncaf=C3=A=\r\n=Z9=\r\nend=",
    "header-only": lambda n: head(n).rstrip(b"\r\n") + b"\r\n",
    "header-only-multipart": lambda n: head(n, b"Content-Type: multipart/mixed; boundary=z"),
    # -- break a submission rule: sealed and deposited directly
    "sealed-bare-cr-in-header": lambda n: head(n, b"Content-Type: text/plain;\r charset=utf-8")
    + b"\r\nbody\r\n",
    "sealed-nul-in-header": lambda n: head(n, b"Content-Description: a\x00b") + b"\r\nbody\r\n",
    "sealed-control-in-continuation": lambda n: head(
        n, b"Content-Type: multipart/mixed; boundary=x", b" \xc4\x1c\xd7\x80\xec"
    )
    + b"\r\n--x\r\n\r\nhi\r\n--x--\r\n",
    "sealed-no-from": lambda n: b"Subject: nobody sent this\r\n\r\nno From at all\r\n",
    "sealed-empty": lambda n: b"",
}


def corpus() -> dict[str, bytes]:
    return {name: make(name) for name, make in MESSAGES.items()}


def main(argv: list[str]) -> int:
    messages = {f"{name}.eml": raw for name, raw in corpus().items()}
    present = {p.name: p for p in CORPUS.glob("*.eml")}
    if argv[1:] == ["--check"]:
        same = present.keys() == messages.keys() and all(
            present[name].read_bytes() == raw for name, raw in messages.items()
        )
        if not same:
            print("tests/data/hostile differs from make_hostile_corpus.py; rerun it")
        return 0 if same else 1
    CORPUS.mkdir(exist_ok=True)
    for name in present.keys() - messages.keys():
        present[name].unlink()
    for name, raw in messages.items():
        (CORPUS / name).write_bytes(raw)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
