"""sanitize: `bridge.sanitize.sanitize` against a trivial pass over the same bytes.

Ours: `sanitize(message, policy=SanitizePolicy(message_id_domain=...), message_id_key=...)`
on a message whose header block looks like one that crossed a few servers: three
Received fields, a folded DKIM-Signature, Authentication-Results, Exchange and
client fields (all stripped), References and In-Reply-To (ids rewritten), the
usual From/To/Subject/Date/Message-ID/MIME fields (kept), about 2 KB in all. The
body is CRLF text.

Baseline: `b"\\r\\n".join(message.split(b"\\r\\n"))`, a pass that touches every line
of the same message and builds a new one of the same size, and does nothing else.

Sizes: 10 KB and 1 MB (10,000 and 1,000,000 bytes).

Ratio: our median time per call over the baseline's. Targets: <= 10 at 10 KB, where
the fixed cost of taking some twenty header fields apart in Python dominates a
line split of a small message; <= 1 at 1 MB, where the body must cost no more than
one pass at memory speed (the body is never split into lines), so sanitizing a large
message is no slower than looking at each of its lines once.
"""

from __future__ import annotations

from bench.common import KB, MB, Result, Settings, Target, make_message, paired_timings, time_ratio
from bridge.keys import AccountKeys
from bridge.sanitize import SanitizePolicy, sanitize

NAME = "sanitize"
DOMAIN = "bench.bubble"
CASES = ((10 * KB, "10 KB", Target("<=", 10.0)), (1 * MB, "1 MB", Target("<=", 1.0)))

TRAVELLED_HEADERS: tuple[tuple[str, str], ...] = (
    ("Received", "from mail-eopbgr70100.outbound.protection.outlook.com (40.107.7.100)\r\n"
                 "\tby mx.example.org (Postfix) with ESMTPS id 4SV7Jk0Zq8z9sWn\r\n"
                 "\tfor <bob@bench.bubble>; Tue, 14 Nov 2023 11:48:07 +0100 (CET)"),
    ("Received", "from DB9PR04MB8429.eurprd04.prod.outlook.com (2603:10a6:10:2c3::11)\r\n"
                 " by AM0PR04MB6451.eurprd04.prod.outlook.com with HTTPS; Tue, 14 Nov 2023\r\n"
                 " 10:48:05 +0000"),
    ("Received", "from [192.168.1.23] (dslb-088-074-112-023.088.074.pools.example.net.\r\n"
                 " [88.74.112.23]) by smtp.example.com with ESMTPSA id a1b2c3d4e5"),
    ("DKIM-Signature", "v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.com; s=selector1;\r\n"
                       " h=From:Date:Subject:Message-ID:Content-Type:MIME-Version;\r\n"
                       " bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=;\r\n"
                       " b=dzdVyOfAKCdLXdJOc9G2q8LoXSlEniSbav+yuU4zGeeruD00lszZVoG4ZHRNiYzR"),
    ("Authentication-Results", "mx.example.org; dkim=pass header.d=example.com;\r\n"
                               " spf=pass smtp.mailfrom=example.com; dmarc=pass"),
    ("X-MS-Exchange-Organization-SCL", "1"),
    ("X-MS-Has-Attach", ""),
    ("Thread-Index", "AdoW6Q3YFhJ5r9mVQ0Ks1Yx7bB2hTQ=="),
    ("X-Originating-IP", "[88.74.112.23]"),
    ("In-Reply-To", "<b7c1e0d2-5a43-4f1e-9d2a-6c8e0f3b1a27@jonas-thinkpad.fabrikam.example>"),
    ("References", "<DB9PR04MB8429C236BA95EE007E9FDC64B21E8@DB9PR04MB8429.eurprd04.prod"
                   ".outlook.com>\r\n"
                   " <b7c1e0d2-5a43-4f1e-9d2a-6c8e0f3b1a27@jonas-thinkpad.fabrikam.example>"),
    ("Content-Language", "en-GB"),
)


def run(settings: Settings) -> list[Result]:
    policy = SanitizePolicy(message_id_domain=DOMAIN)
    key = AccountKeys.generate().message_id_key
    budget = 0.05 if settings.quick else 0.2
    results: list[Result] = []
    for size, label, target in CASES:
        message = make_message(size, sender="alice@example.com", recipient=f"bob@{DOMAIN}",
                               number=size, extra_headers=TRAVELLED_HEADERS)
        cleaned = sanitize(message, policy=policy, message_id_key=key)
        removed = sorted(set(cleaned.removed))
        if "received" not in removed or b"\r\nReceived:" in cleaned.message:
            raise AssertionError("sanitize kept the Received fields")
        if b"\r\n".join(message.split(b"\r\n")) != message:
            raise AssertionError("the baseline does not round-trip")

        def ours(message: bytes = message) -> object:
            return sanitize(message, policy=policy, message_id_key=key)

        def baseline(message: bytes = message) -> object:
            return b"\r\n".join(message.split(b"\r\n"))

        t = paired_timings({"ours": ours, "baseline": baseline}, reps=settings.reps,
                           budget=budget)
        header_bytes = message.index(b"\r\n\r\n") + 4
        results.append(Result(
            NAME, label, "s", t["ours"], "split+join", t["baseline"],
            time_ratio(t["ours"], t["baseline"]), target,
            (f"header block {header_bytes:,} bytes, {len(cleaned.removed)} fields removed",),
        ))
    return results
