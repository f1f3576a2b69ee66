"""Sequence sets (`2,4:6,10:*`, RFC 3501 section 9) and the largest IMAP number."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

MAX_NUMBER = 0xFFFF_FFFF  # number = 32-bit unsigned (RFC 3501 section 4.2)


@dataclass(frozen=True, slots=True)
class SequenceSet:
    """`2,4:6,10:*` as ranges of (first, last); None stands for `*`."""

    ranges: tuple[tuple[int | None, int | None], ...]

    @classmethod
    def of(cls, values: Sequence[int]) -> SequenceSet:
        """The compact set of these numbers in their order, runs as ranges (`3:5,9`), as
        COPYUID and APPENDUID write UID sets."""
        ranges: list[tuple[int | None, int | None]] = []
        for n in values:
            if ranges and ranges[-1][1] == n - 1:
                ranges[-1] = (ranges[-1][0], n)
            else:
                ranges.append((n, n))
        return cls(tuple(ranges))

    def __str__(self) -> str:
        def one(n: int | None) -> str:
            return "*" if n is None else str(n)

        return ",".join(one(a) if a == b else f"{one(a)}:{one(b)}" for a, b in self.ranges)

    def intervals(self, star: int) -> list[tuple[int, int]]:
        """Sorted, merged closed intervals, with `*` standing for `star`."""
        spans = sorted(
            (min(a, b), max(a, b))
            for a, b in (
                (star if x is None else x, star if y is None else y) for x, y in self.ranges
            )
        )
        merged: list[tuple[int, int]] = []
        for lo, hi in spans:
            if merged and lo <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
            else:
                merged.append((lo, hi))
        return merged

    def select(self, sorted_values: Sequence[int], star: int) -> Iterator[int]:
        """Indexes into `sorted_values` (ascending) of the values this set contains."""
        for lo, hi in self.intervals(star):
            yield from range(bisect_left(sorted_values, lo), bisect_right(sorted_values, hi))

    def highest_number(self) -> int:
        """The largest explicit number, 0 when the set is only `*`."""
        return max((n for pair in self.ranges for n in pair if n is not None), default=0)

    def has_star(self) -> bool:
        return any(n is None for pair in self.ranges for n in pair)
