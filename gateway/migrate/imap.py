"""A legacy IMAP server as a migration source (aioimaplib as the client).

Connects with TLS, STARTTLS (upgraded on aioimaplib's own transport) or in plain
(only when asked), logs in, and lists every selectable folder with its SPECIAL-USE
attributes, hierarchy delimiter, UIDVALIDITY and message count. A folder is read in
UID order, in batches: first UID, FLAGS, INTERNALDATE and RFC822.SIZE, then the
bodies (BODY.PEEK[]: the source's \\Seen flags are left as they were) of the
messages within the size limit. A message the server does not return comes back
with `problem` set, for the report.

A dropped connection (or a command that takes longer than `imap_timeout`) is
retried: reconnect, select the folder again, check that its UIDVALIDITY did not
change, go on with the same batch; after `imap_retries` the migration stops with a
one-line error and the next run resumes from the checkpoint. `delete` marks the
given UIDs \\Deleted and removes exactly those with UID EXPUNGE (UIDPLUS); a server
without UIDPLUS is never deleted from, as a plain EXPUNGE could remove other mail.

Errors are one line (`SourceError`): wrong credentials, an untrusted certificate
(`--ca-file`, or `--insecure`), a refused connection. Nothing here logs a message,
a password or a folder's content.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import aioimaplib

from gateway.migrate.errors import SourceError
from gateway.migrate.folders import FolderNameError, decode_mutf7, target_folder
from gateway.migrate.settings import MigrateSettings
from gateway.migrate.sources import OVERSIZE, SourceFolder, SourceMessage

log = logging.getLogger("sealgate.migrate")

SECURITY = ("tls", "starttls", "plain")
_LIST = re.compile(rb'^\((?P<attrs>[^)]*)\) (?:"(?P<delim>(?:\\.|[^"\\])*)"|NIL) (?P<name>.*)$')
_STATUS_ITEM = re.compile(rb"(MESSAGES|UIDVALIDITY) (\d+)")
_META = {
    "uid": re.compile(rb"UID (\d+)"),
    "flags": re.compile(rb"FLAGS \(([^)]*)\)"),
    "date": re.compile(rb'INTERNALDATE "([^"]+)"'),
    "size": re.compile(rb"RFC822\.SIZE (\d+)"),
}
_LITERAL = re.compile(rb"\{(\d+)\}$")
_FETCH_START = re.compile(rb"\d+ FETCH \(")
_T = TypeVar("_T")
_IN_ONE_COMMAND = 500  # UIDs per STORE/EXPUNGE


class _Dropped(Exception):
    """The connection is gone or a command timed out: reconnect and retry."""


class _Unreachable(SourceError):
    """The server cannot be reached now (refused, reset, timed out): worth a retry."""


def quote(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def uid_set(uids: Sequence[int]) -> str:
    """`1:3,7,9:10` for [1, 2, 3, 7, 9, 10]."""
    ranges: list[str] = []
    ordered = sorted(uids)
    start = prev = ordered[0]
    for uid in ordered[1:] + [0]:
        if uid == prev + 1:
            prev = uid
            continue
        ranges.append(str(start) if start == prev else f"{start}:{prev}")
        start = prev = uid
    return ",".join(ranges)


def _text(line: object) -> bytes:
    return bytes(line) if isinstance(line, bytes | bytearray) else b""


def _internal_date(raw: bytes) -> datetime:
    try:
        return datetime.strptime(raw.decode("ascii").strip(), "%d-%b-%Y %H:%M:%S %z")
    except (UnicodeDecodeError, ValueError):
        return datetime.now(UTC)


class ImapSource:
    kind = "imap"

    def __init__(
        self,
        *,
        host: str,
        port: int | None,
        security: str,
        user: str,
        password: str,
        settings: MigrateSettings,
        ca_file: Path | None = None,
        insecure: bool = False,
    ) -> None:
        if security not in SECURITY:
            raise ValueError(f"security must be one of {SECURITY}")
        self._host = host
        self._port = port or (993 if security == "tls" else 143)
        self._security = security
        self._user = user
        self._password = password
        self._settings = settings
        self._ca_file = ca_file
        self._insecure = insecure
        self._client: Any = None
        self._lost: asyncio.Future[None] | None = None
        self._selected: str | None = None

    @property
    def identity(self) -> str:
        return f"imap://{self._user}@{self._host}:{self._port}"

    # -- the connection ------------------------------------------------------------------

    def _tls_context(self) -> ssl.SSLContext:
        try:
            context = ssl.create_default_context(
                cafile=str(self._ca_file) if self._ca_file else None
            )
        except (OSError, ssl.SSLError) as e:
            raise SourceError(f"cannot read --ca-file {self._ca_file}: {e}") from None
        if self._insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    async def connect(self) -> None:
        """Connect and log in; `SourceError` with the reason in one line."""
        await self.close()
        loop = asyncio.get_running_loop()
        lost: asyncio.Future[None] = loop.create_future()

        def on_lost(_error: Exception | None) -> None:
            if not lost.done():
                lost.set_result(None)

        self._lost = lost
        self._selected = None
        context = self._tls_context() if self._security != "plain" else None
        where = f"{self._host}:{self._port}"
        try:
            response = await self._open(context, on_lost)
        except BaseException:
            self._abort()
            raise
        if response.result != "OK":
            self._abort()
            await asyncio.sleep(0)  # the aborted transport closes its socket
            said = b" ".join(_text(line) for line in response.lines).decode("utf-8", "replace")
            raise SourceError(f"the server {where} refused the login of {self._user}: {said}")

    async def _open(
        self, context: ssl.SSLContext | None, on_lost: Callable[[Exception | None], None]
    ) -> Any:
        where = f"{self._host}:{self._port}"
        try:
            self._client = aioimaplib.IMAP4(
                host=self._host, port=self._port, timeout=self._settings.imap_timeout,
                conn_lost_cb=on_lost, ssl_context=context if self._security == "tls" else None,
            )
            await self._client.wait_hello_from_server()
            if context is not None and self._security == "starttls":
                await self._starttls(context)
            return await self._call(self._client.login(self._user, self._password))
        except ssl.SSLCertVerificationError as e:
            raise SourceError(
                f"TLS: the certificate of {where} is not trusted ({e.verify_message}); "
                "give its CA with --ca-file, or --insecure to skip the check"
            ) from None
        except ssl.SSLError as e:
            raise SourceError(f"TLS with {where} failed: {e.reason or e}") from None
        except (OSError, TimeoutError, _Dropped) as e:
            raise _Unreachable(f"cannot connect to {where}: {_reason(e)}") from None
        except aioimaplib.AioImapException as e:
            raise SourceError(f"IMAP with {where} failed: {e}") from None

    def _abort(self) -> None:
        """Drop a connection that failed before it was usable (no LOGOUT to wait for)."""
        client, self._client = self._client, None
        transport = getattr(getattr(client, "protocol", None), "transport", None)
        if transport is not None:
            transport.abort()

    async def _starttls(self, context: ssl.SSLContext) -> None:
        protocol = self._client.protocol
        if "STARTTLS" not in protocol.capabilities:
            await protocol.capability()
        if "STARTTLS" not in protocol.capabilities:
            raise SourceError(f"{self._host}:{self._port} does not offer STARTTLS")
        command = aioimaplib.Command("STARTTLS", protocol.new_tag(), loop=protocol.loop)
        response = await self._call(protocol.execute(command))
        if response.result != "OK":
            raise SourceError(f"{self._host}:{self._port} refused STARTTLS")
        loop = asyncio.get_running_loop()
        protocol.transport = await loop.start_tls(
            protocol.transport, protocol, context, server_hostname=self._host
        )
        await protocol.capability()

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            if self._lost is not None and not self._lost.done():
                await asyncio.wait_for(client.logout(), 5)
        except (aioimaplib.AioImapException, OSError, TimeoutError):
            pass
        # Abort, not close: LOGOUT said goodbye already, and a TLS close waits for the
        # peer's close_notify, which may come after the event loop is gone (leaving the
        # socket beneath open). One loop turn lets the transport close its socket.
        transport = getattr(client.protocol, "transport", None)
        if transport is not None:
            transport.abort()
            await asyncio.sleep(0)

    async def _call(self, awaitable: Awaitable[_T]) -> _T:
        """The command's result, or `_Dropped` when the connection goes or it takes
        longer than `imap_timeout`."""
        task: asyncio.Future[Any] = asyncio.ensure_future(awaitable)
        assert self._lost is not None  # noqa: S101 - connect() made it
        waiting: set[asyncio.Future[Any]] = {task, self._lost}
        done, _ = await asyncio.wait(
            waiting, timeout=self._settings.imap_timeout,
            return_when=asyncio.FIRST_COMPLETED,
        )
        if task in done:
            try:
                result: _T = task.result()
                return result
            except (aioimaplib.Abort, aioimaplib.CommandTimeout, TimeoutError, OSError) as e:
                raise _Dropped(_reason(e)) from None
        task.cancel()
        raise _Dropped("connection lost" if self._lost.done() else "command timed out")

    async def _retrying(self, folder: SourceFolder | None, step: Callable[[], Awaitable[_T]]) -> _T:
        """`step`, reconnecting (and selecting `folder` again) when the connection drops."""
        delay = self._settings.imap_retry_delay
        for attempt in range(self._settings.imap_retries + 1):
            try:
                if self._client is None:
                    await self.connect()
                if folder is not None:
                    await self._select(folder)
                return await step()
            except (_Dropped, _Unreachable) as e:
                if isinstance(e, _Unreachable) and attempt == 0:
                    raise  # the first connection: say why at once
                if attempt == self._settings.imap_retries:
                    raise SourceError(
                        f"connection to {self._host}:{self._port} lost ({e}), "
                        f"{self._settings.imap_retries} retries failed; run again to resume"
                    ) from None
                log.warning("migrate: connection lost (%s); reconnecting", e)
                self._client = None
                await asyncio.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    async def _select(self, folder: SourceFolder) -> None:
        if self._selected == folder.name:
            return
        response = await self._call(self._client.select(quote(folder.name)))
        if response.result != "OK":
            raise SourceError(f"cannot select folder {folder.display}")
        for line in response.lines:
            match = re.search(rb"\[UIDVALIDITY (\d+)\]", _text(line))
            if match and int(match.group(1)) != folder.uid_validity:
                raise SourceError(
                    f"UIDVALIDITY of {folder.display} changed during the migration; run again"
                )
        self._selected = folder.name

    # -- the Source contract -------------------------------------------------------------

    async def folders(self) -> list[SourceFolder]:
        async def listing() -> list[SourceFolder]:
            response = await self._call(self._client.list('""', "*"))
            if response.result != "OK":
                raise SourceError("the server refused LIST")
            found = []
            for name, delimiter, attributes in _parse_list(response.lines):
                if {"\\noselect", "\\nonexistent"} & {a.lower() for a in attributes}:
                    continue
                try:
                    parts = [decode_mutf7(p) for p in (name.split(delimiter) if delimiter
                                                      else [name])]
                except FolderNameError:
                    raise SourceError(f"folder name {name!r} is not modified UTF-7") from None
                target = target_folder(parts, attributes)
                if target is None:
                    log.info("migrate: folder %s is virtual (%s); skipped", "/".join(parts),
                             " ".join(attributes))
                    continue
                count, uid_validity = await self._status(name)
                found.append(SourceFolder(name, "/".join(parts), target, uid_validity, count))
            return found

        return await self._retrying(None, listing)

    async def _status(self, name: str) -> tuple[int, int]:
        response = await self._call(self._client.status(quote(name), "(MESSAGES UIDVALIDITY)"))
        items = {key: int(value) for line in response.lines
                 for key, value in _STATUS_ITEM.findall(_text(line))}
        if response.result != "OK" or len(items) != 2:
            raise SourceError(f"the server refused STATUS of {name}")
        return items[b"MESSAGES"], items[b"UIDVALIDITY"]

    async def read(
        self, folder: SourceFolder, after_uid: int
    ) -> AsyncGenerator[list[SourceMessage], None]:
        async def search() -> list[int]:
            response = await self._call(self._client.uid_search(f"UID {after_uid + 1}:*"))
            if response.result != "OK":
                raise SourceError(f"the server refused SEARCH in {folder.display}")
            uids = []
            for line in response.lines[:-1]:  # the last is the tagged line's text
                words = _text(line).split()
                if words[:1] == [b"SEARCH"]:  # aioimaplib strips it, a future one may not
                    words = words[1:]
                if all(word.isdigit() for word in words):
                    uids += [int(word) for word in words]
            return sorted(uid for uid in set(uids) if uid > after_uid)  # N:* always has the last

        uids = await self._retrying(folder, search)
        batch = self._settings.batch_messages
        for start in range(0, len(uids), batch):
            chunk = uids[start : start + batch]

            def step(chunk: list[int] = chunk) -> Awaitable[list[SourceMessage]]:
                return self._fetch(chunk)

            yield await self._retrying(folder, step)

    async def _fetch(self, uids: list[int]) -> list[SourceMessage]:
        """One UID FETCH for the batch: metadata and body together (aioimaplib's work on
        an answer grows with its lines squared: one answer costs less than two). The
        body is fetched up to one octet over `max_message_bytes`, so a message over
        the limit is never read in full."""
        limit = self._settings.max_message_bytes
        items = f"(UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[]<0.{limit + 1}>)"
        response = await self._call(self._client.uid("fetch", uid_set(uids), items))
        if response.result != "OK":
            raise _Dropped("FETCH refused")
        found: dict[int, SourceMessage] = {}
        for text, body in _fetch_records(response.lines):
            matches = {key: pattern.search(text) for key, pattern in _META.items()}
            m_uid, m_flags, m_date, m_size = (matches[k] for k in ("uid", "flags", "date", "size"))
            if not (m_uid and m_flags is not None and m_date and m_size):
                continue
            flags = tuple(sorted(
                f for f in m_flags.group(1).decode("utf-8", "replace").split()
                if f.lower() != "\\recent"
            ))
            uid, date, size = int(m_uid.group(1)), _internal_date(m_date.group(1)), \
                int(m_size.group(1))
            if size > limit:
                found[uid] = SourceMessage(uid, None, flags, date, size, OVERSIZE)
            elif body is None:
                found[uid] = SourceMessage(uid, None, flags, date, size,
                                           "the server did not return it")
            else:
                found[uid] = SourceMessage(uid, body, flags, date, len(body))
        # A UID not answered was expunged meanwhile: no longer in the folder.
        return [found[uid] for uid in uids if uid in found]

    async def delete(self, folder: SourceFolder, uids: Sequence[int]) -> None:
        async def remove() -> None:
            if "UIDPLUS" not in self._client.protocol.capabilities:
                raise SourceError(f"{self._host} lacks UIDPLUS: nothing deleted from it")
            for start in range(0, len(uids), _IN_ONE_COMMAND):
                chunk = uid_set(list(uids[start : start + _IN_ONE_COMMAND]))
                stored = await self._call(
                    self._client.uid("store", chunk, "+FLAGS.SILENT", "(\\Deleted)")
                )
                expunged = await self._call(self._client.uid("expunge", chunk))
                if stored.result != "OK" or expunged.result != "OK":
                    raise SourceError(f"{folder.display}: the server refused STORE or EXPUNGE")

        await self._retrying(folder, remove)


def _fetch_records(lines: Sequence[object]) -> list[tuple[bytes, bytes | None]]:
    """A FETCH answer as (the text of one message's items, its body literal or None).
    A record starts at a `N FETCH (` line; items may follow the literal on later lines."""
    records: list[tuple[bytearray, list[bytes]]] = []
    for line in lines:
        if isinstance(line, bytearray):
            if records:
                records[-1][1].append(bytes(line))
        elif isinstance(line, bytes):
            if _FETCH_START.match(line):
                records.append((bytearray(line), []))
            elif records:
                records[-1][0].extend(b" " + line)
    return [(bytes(text), bodies[0] if bodies else None) for text, bodies in records]


def _reason(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


def _parse_list(lines: Sequence[object]) -> list[tuple[str, str | None, list[str]]]:
    """(name, delimiter, attributes) of each LIST line (quoted, atom or literal names)."""
    found: list[tuple[str, str | None, list[str]]] = []
    items = list(lines)
    for index, line in enumerate(items):
        if not isinstance(line, bytes):
            continue
        match = _LIST.match(line)
        if match is None:
            continue
        raw = match.group("name")
        literal = _LITERAL.search(raw)
        if literal and index + 1 < len(items):
            name = bytes(_text(items[index + 1]))
        elif raw.startswith(b'"') and raw.endswith(b'"'):
            name = re.sub(rb"\\(.)", rb"\1", raw[1:-1])
        else:
            name = raw
        delimiter = match.group("delim")
        found.append((
            name.decode("utf-8", "replace"),
            re.sub(rb"\\(.)", rb"\1", delimiter).decode() if delimiter is not None else None,
            match.group("attrs").decode("ascii", "replace").split(),
        ))
    return found
