"""What every benchmark shares: settings, results, targets, timing loops and test messages.

A benchmark measures Sealgate and a baseline in the same run on the same machine and
reports the ratio of the two; absolute figures are printed for reading, never judged.
Nothing here asserts a time.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.dovecot import Dovecot

KB = 1000
MB = 1000 * 1000


class BenchError(Exception):
    """A benchmark could not produce a valid measurement (the message says why)."""


async def start_dovecot(server: Dovecot) -> None:
    """Start a baseline Dovecot off the event loop; a failure is a BenchError."""
    try:
        await asyncio.to_thread(server.start)
    except (RuntimeError, OSError) as e:
        raise BenchError(f"dovecot did not start: {e}") from None


@dataclass(frozen=True)
class Settings:
    quick: bool
    reps: int  # repetitions of every measurement; the table shows their median
    workdir: Path  # an empty directory this benchmark may fill
    idle_seconds: float | None = None  # the window of idle measurements (None: the default)


@dataclass(frozen=True)
class Target:
    """The ratio we aim at: `ratio >= value` or `ratio <= value`."""

    op: str  # ">=" or "<="
    value: float

    def __post_init__(self) -> None:
        if self.op not in (">=", "<="):
            raise ValueError("Target.op must be '>=' or '<='")

    def met(self, ratio: float) -> bool:
        return ratio >= self.value if self.op == ">=" else ratio <= self.value

    def __str__(self) -> str:
        return f"{self.op} {self.value:g}"


@dataclass(frozen=True)
class Result:
    """One row of the table.

    `unit` is "msg/s" (higher is better) or "s" (a duration per operation). `ratio` is
    defined by the benchmark (its docstring says how); None when no baseline ran.
    """

    benchmark: str
    case: str
    unit: str
    ours: list[float]
    baseline_name: str
    baseline: list[float] | None
    ratio: float | None
    target: Target | None
    notes: tuple[str, ...] = field(default=())

    @property
    def met(self) -> bool | None:
        if self.ratio is None or self.target is None:
            return None
        return self.target.met(self.ratio)


def median(samples: Sequence[float]) -> float:
    return float(statistics.median(samples))


def time_ratio(ours: Sequence[float], baseline: Sequence[float]) -> float:
    """Our median time over the baseline's: 2.0 means we take twice as long."""
    return median(ours) / median(baseline)


def rate_ratio(ours: Sequence[float], baseline: Sequence[float]) -> float:
    """Our median rate over the baseline's: 0.5 means we do half as much per second."""
    return median(ours) / median(baseline)


def format_value(value: float, unit: str) -> str:
    if unit == "msg/s":
        return f"{value:,.0f} msg/s"
    if unit == "s":
        if value >= 1.0:
            return f"{value:.2f} s"
        if value >= 1e-3:
            return f"{value * 1e3:.2f} ms"
        return f"{value * 1e6:.1f} µs"
    if unit == "%":
        return f"{value:.3f} %"
    return f"{value:g} {unit}"


def paired_timings(
    cases: dict[str, Callable[[], object]], *, reps: int, budget: float
) -> dict[str, list[float]]:
    """Seconds per call of each function, one sample per repetition.

    Every function is calibrated to run about `budget` seconds per repetition; within a
    repetition the functions run one after the other (the order alternates between
    repetitions) so that the machine's drift hits them alike. The garbage collector is
    off while a loop runs, as in `timeit`.
    """
    loops: dict[str, int] = {}
    for name, func in cases.items():
        func()  # warm caches and lazy imports
        start = time.perf_counter()
        func()
        once = max(time.perf_counter() - start, 1e-7)
        loops[name] = max(1, int(budget / once))
    samples: dict[str, list[float]] = {name: [] for name in cases}
    names = list(cases)
    for rep in range(reps):
        for name in names if rep % 2 == 0 else reversed(names):
            func, n = cases[name], loops[name]
            gc_was_on = gc.isenabled()
            gc.disable()
            try:
                start = time.perf_counter()
                for _ in range(n):
                    func()
                elapsed = time.perf_counter() - start
            finally:
                if gc_was_on:
                    gc.enable()
            samples[name].append(elapsed / n)
    return samples


# -- test messages ---------------------------------------------------------------------

_WORDS = (
    "budget review quarter figures meeting agenda minutes contract supplier invoice "
    "delivery schedule project milestone report draft final approval team office "
    "customer request support ticket update release plan notes summary action item"
).split()


def body_lines(n_bytes: int, seed: int) -> list[bytes]:
    """Plain-text lines of at most 76 characters (no line starts with '.'), about n_bytes."""
    lines: list[bytes] = []
    total = 0
    i = seed
    while total < n_bytes:
        words: list[str] = []
        width = 0
        while width < 68:
            word = _WORDS[(i * 7 + len(words) * 13) % len(_WORDS)]
            words.append(word)
            width += len(word) + 1
            i += 1
        line = " ".join(words).encode("ascii")
        lines.append(line)
        total += len(line) + 2
    return lines


def make_message(
    size: int,
    *,
    sender: str,
    recipient: str,
    number: int,
    extra_headers: Sequence[tuple[str, str]] = (),
) -> bytes:
    """A CRLF text/plain message of exactly `size` bytes (size must exceed its header block).

    The header block looks like a mail client's: From, To, Subject, Date, Message-ID,
    MIME fields and a User-Agent, plus `extra_headers`.
    """
    headers = [
        ("From", f"Bench Sender <{sender}>"),
        ("To", f"Bench Recipient <{recipient}>"),
        ("Subject", f"Benchmark message {number}: {_WORDS[number % len(_WORDS)]} follow-up"),
        ("Date", f"Tue, 14 Nov 2023 {number // 3600 % 24:02d}:{number // 60 % 60:02d}:"
                 f"{number % 60:02d} +0100"),
        ("Message-ID", f"<bench-{number}-{size}@client.example.org>"),
        ("MIME-Version", "1.0"),
        ("Content-Type", "text/plain; charset=utf-8; format=flowed"),
        ("Content-Transfer-Encoding", "7bit"),
        ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64; rv:115.0) Thunderbird/115.4.1"),
        *extra_headers,
    ]
    head = b"".join(f"{name}: {value}\r\n".encode() for name, value in headers) + b"\r\n"
    room = size - len(head)
    if room < 4:
        raise ValueError(f"a {size}-byte message cannot hold its {len(head)}-byte header")
    body = b"\r\n".join(body_lines(room, number))[: room - 2].rstrip(b"\r")
    message = head + body + b"x" * (room - 2 - len(body)) + b"\r\n"
    assert len(message) == size
    assert b"\r\n." not in message
    return message
