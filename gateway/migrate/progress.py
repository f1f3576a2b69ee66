"""Progress of a migration: a bar per folder on a terminal (tqdm: messages/s, bytes,
ETA), one log line per folder and every `LOG_EVERY` messages otherwise. Never shows
a subject, an address or any other part of a message."""

from __future__ import annotations

import logging
import sys
from typing import Protocol

from tqdm import tqdm

log = logging.getLogger("sealgate.migrate")
LOG_EVERY = 1000
DESC_MAX = 32  # a bar's folder name at most (its end), so that rate, octets and ETA fit


class FolderProgress(Protocol):
    def advance(self, messages: int, octets: int) -> None: ...

    def close(self) -> None: ...


class _Bar:
    def __init__(self, name: str, total: int) -> None:
        if len(name) > DESC_MAX:  # an mbox file's full path, say
            name = "…" + name[1 - DESC_MAX:]
        self._bar = tqdm(total=total, desc=name, unit="msg", file=sys.stderr, leave=True,
                         dynamic_ncols=True)
        self._octets = 0

    def advance(self, messages: int, octets: int) -> None:
        self._octets += octets
        self._bar.set_postfix_str(tqdm.format_sizeof(self._octets, "B", 1024), refresh=False)
        self._bar.update(messages)

    def close(self) -> None:
        self._bar.close()


class _Lines:
    def __init__(self, name: str, total: int) -> None:
        self._name, self._total = name, total
        self._done = self._octets = self._logged = 0
        log.info("migrate: folder %s: %d message(s) to read", name, total)

    def advance(self, messages: int, octets: int) -> None:
        self._done += messages
        self._octets += octets
        if self._done - self._logged >= LOG_EVERY:
            self._logged = self._done
            log.info("migrate: folder %s: %d/%d read", self._name, self._done, self._total)

    def close(self) -> None:
        log.info("migrate: folder %s: %d read (%d octets)", self._name, self._done, self._octets)


def folder_progress(name: str, total: int, *, bar: bool) -> FolderProgress:
    return _Bar(name, total) if bar else _Lines(name, total)
