"""A legacy IMAP server as a migration source (aioimaplib as the client).

Connects with TLS, STARTTLS (upgraded on aioimaplib's own transport) or in plain
(only when asked), logs in, and lists every selectable folder with its SPECIAL-USE
attributes, hierarchy delimiter, UIDVALIDITY and message count. A folder is read in
UID order: one UID FETCH of the UIDs and sizes plans the batches (`batch_messages`,
`batch_bytes`), then one UID FETCH each: UID, FLAGS, INTERNALDATE, RFC822.SIZE and
the body (BODY.PEEK[]: the source's \\Seen flags are left as they were) up to
one octet over the size limit. A message the server does not return comes back
with `problem` set, for the report. aioimaplib runs the connection and every
command; the answer to a bulk FETCH alone is read by `fetch_wire.FetchReader`
(`imap_client`), whose work grows with the answer's length where aioimaplib's
grows with its square.

A dropped connection (or a command that takes longer than `imap_timeout`) is
retried: reconnect, select the folder again, check that its UIDVALIDITY did not
change, go on with the same batch; after `imap_retries` the migration stops with a
one-line error and the next run resumes from the checkpoint. A FETCH the server
refuses (NO, BAD, or a BYE on every retry) is asked again one message at a time, so
that only the message it cannot return is left out (`problem` says why). `delete`
marks the given UIDs \\Deleted and removes exactly those with UID EXPUNGE (UIDPLUS),
or moves them to the --move-to folder (MOVE; else COPY, \\Deleted, UID EXPUNGE); a
server without UIDPLUS is never expunged from, as a plain EXPUNGE could remove
other mail.

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

from gateway.imap.protocol import encode_mailbox
from gateway.migrate.errors import SourceError
from gateway.migrate.fetch_wire import FetchedMessage, internal_date
from gateway.migrate.folders import FolderNameError, decode_mutf7, target_folder
from gateway.migrate.imap_client import BulkFetch, Client
from gateway.migrate.settings import MigrateSettings
from gateway.migrate.sources import OVERSIZE, SourceFolder, SourceMessage

log = logging.getLogger("sealgate.migrate")

SECURITY = ("tls", "starttls", "plain")
_LIST = re.compile(rb'^\((?P<attrs>[^)]*)\) (?:"(?P<delim>(?:\\.|[^"\\])*)"|NIL) (?P<name>.*)$')
_STATUS_ITEM = re.compile(rb"(MESSAGES|UIDVALIDITY) (\d+)")
_LITERAL = re.compile(rb"\{(\d+)\}$")
_T = TypeVar("_T")
_IN_ONE_COMMAND = 500  # UIDs per STORE/EXPUNGE


class _Dropped(Exception):
    """The connection is gone or a command timed out: reconnect and retry."""


class _Refused(_Dropped):
    """The server answered NO or BAD to a FETCH, or hung up on it every time (not
    retried as it is: `read` asks for the batch's messages one by one)."""


class _HungUp(_Dropped):
    """The server said BYE during a FETCH and hung up: retried as a dropped connection
    (an operator may have kicked the session); if it does so every time, it is taken
    for a refusal (Dovecot hangs up on a message file it cannot read)."""


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
    return internal_date(raw) or datetime.now(UTC)


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
        move_to: str | None = None,
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
        self._move_to = move_to  # the folder (levels split by "/") deleted mail goes to
        self._move_wire: str | None = None  # its wire name, once the listing gave the delimiter
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
            raise SourceError(f"the server {where} refused the login of {self._user}: "
                              f"{_said(response.lines)}")

    async def _open(
        self, context: ssl.SSLContext | None, on_lost: Callable[[Exception | None], None]
    ) -> Any:
        where = f"{self._host}:{self._port}"
        try:
            self._client = Client(
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
            except _Refused:
                if self._lost is None or self._lost.done():
                    self._client = None  # the next command reconnects
                raise  # the server said no: asking again would not change its mind
            except (_Dropped, _Unreachable) as e:
                if isinstance(e, _Unreachable) and attempt == 0:
                    raise  # the first connection: say why at once
                if attempt == self._settings.imap_retries:
                    if isinstance(e, _HungUp):
                        self._client = None
                        raise _Refused(str(e)) from None
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
            listed = _parse_list(response.lines)
            if self._move_to is not None:
                delimiter = next((d for _, d, _ in listed if d), None)
                self._move_wire = _wire_name(self._move_to, delimiter)
            for name, delimiter, attributes in listed:
                if {"\\noselect", "\\nonexistent"} & {a.lower() for a in attributes}:
                    continue
                try:
                    parts = [decode_mutf7(p) for p in (name.split(delimiter) if delimiter
                                                      else [name])]
                except FolderNameError:
                    raise SourceError(f"folder name {name!r} is not modified UTF-7") from None
                if "/".join(parts) == self._move_to:
                    log.info("migrate: folder %s is the --move-to folder; not migrated",
                             self._move_to)
                    continue
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
        async def sizes() -> list[tuple[int, int]]:
            try:
                items = await self._bulk_fetch(f"{after_uid + 1}:*", "(UID RFC822.SIZE)", 0)
            except _Refused:
                if folder.count == 0:
                    return []  # some servers refuse `N:*` in an empty folder
                raise SourceError(f"the server refused FETCH in {folder.display}") from None
            return sorted((item.uid, item.size) for item in items.values()
                          if item.uid is not None and item.size is not None
                          and item.uid > after_uid)  # N:* always has the last message

        for chunk in _batches(await self._retrying(folder, sizes), self._settings):

            def step(chunk: list[int] = chunk) -> Awaitable[list[SourceMessage]]:
                return self._fetch(chunk)

            try:
                batch = await self._retrying(folder, step)
            except _Refused as e:
                log.warning("migrate: folder %s: the server refused a FETCH (%s); reading "
                            "its messages one by one", folder.display, e)
                batch = await self._one_by_one(folder, chunk)
            yield batch

    async def _one_by_one(self, folder: SourceFolder, uids: list[int]) -> list[SourceMessage]:
        """A refused batch, one FETCH a message: the one the server cannot return comes
        with `problem` set (and the server's words), the others as usual."""
        found: list[SourceMessage] = []
        for uid in uids:

            def step(uid: int = uid) -> Awaitable[list[SourceMessage]]:
                return self._fetch([uid])

            try:
                found += await self._retrying(folder, step)
            except _Refused as e:
                found.append(SourceMessage(uid, None, (), datetime.now(UTC), 0,
                                           f"the server could not return it ({e})"))
        return found

    async def _bulk_fetch(self, uids: str, items: str, max_literal: int
                          ) -> dict[int, FetchedMessage]:
        protocol = self._client.protocol
        command = BulkFetch(protocol.new_tag(), uids, items, max_literal=max_literal,
                             loop=protocol.loop)
        try:
            response = await self._call(protocol.execute(command))
        except _Dropped:
            if command.reader.bye is None:
                raise
            raise _HungUp(_said([command.reader.bye])) from None
        if response.result != "OK":
            raise _Refused(_said(response.lines) or f"FETCH {response.result}")
        return command.reader.messages

    async def _fetch(self, uids: list[int]) -> list[SourceMessage]:
        """One UID FETCH for the batch: metadata and body together. The body is
        fetched up to one octet over `max_message_bytes`, so a message over the limit
        is never read in full."""
        limit = self._settings.max_message_bytes
        items = f"(UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[]<0.{limit + 1}>)"
        found: dict[int, SourceMessage] = {}
        for item in (await self._bulk_fetch(uid_set(uids), items, limit + 1)).values():
            if item.uid is None or item.flags is None or not item.internal_date \
                    or item.size is None:
                continue
            flags = tuple(sorted(
                f for f in item.flags.decode("utf-8", "replace").split()
                if f.lower() != "\\recent"
            ))
            date = _internal_date(item.internal_date)
            if item.size > limit:
                found[item.uid] = SourceMessage(item.uid, None, flags, date, item.size, OVERSIZE)
            elif item.body is None:
                found[item.uid] = SourceMessage(item.uid, None, flags, date, item.size,
                                                "the server did not return it")
            else:
                found[item.uid] = SourceMessage(item.uid, item.body, flags, date, len(item.body))
        # A UID not answered was expunged meanwhile: no longer in the folder.
        return [found[uid] for uid in uids if uid in found]

    async def delete(self, folder: SourceFolder, uids: Sequence[int]) -> str | None:
        """Remove exactly `uids` from `folder`: MOVE them to the --move-to folder (COPY,
        then \\Deleted and UID EXPUNGE, on a server without MOVE), or without one mark
        them \\Deleted and UID EXPUNGE them. A server without UIDPLUS is never
        expunged from, as a plain EXPUNGE could remove other mail."""

        async def remove() -> None:
            capabilities = self._client.protocol.capabilities
            target = self._move_wire
            if target is not None:
                await self._ensure_folder(target)
            if (target is None or "MOVE" not in capabilities) and "UIDPLUS" not in capabilities:
                raise SourceError(f"{self._host} lacks UIDPLUS: nothing deleted from it")
            for start in range(0, len(uids), _IN_ONE_COMMAND):
                chunk = uid_set(list(uids[start : start + _IN_ONE_COMMAND]))
                if target is not None and "MOVE" in capabilities:
                    moved = await self._call(self._client.uid("move", chunk, quote(target)))
                    if moved.result != "OK":
                        raise SourceError(f"{folder.display}: the server refused MOVE")
                    continue
                if target is not None:
                    copied = await self._call(self._client.uid("copy", chunk, quote(target)))
                    if copied.result != "OK":
                        raise SourceError(f"{folder.display}: the server refused COPY: "
                                          "nothing deleted")
                stored = await self._call(
                    self._client.uid("store", chunk, "+FLAGS.SILENT", "(\\Deleted)")
                )
                expunged = await self._call(self._client.uid("expunge", chunk))
                if stored.result != "OK" or expunged.result != "OK":
                    raise SourceError(f"{folder.display}: the server refused STORE or EXPUNGE")

        await self._retrying(folder, remove)
        return self._move_to

    async def _ensure_folder(self, wire: str) -> None:
        """Create the --move-to folder unless the server lists it."""
        listed = await self._call(self._client.list('""', quote(wire)))
        if listed.result == "OK" and any(name == wire for name, _, _ in
                                         _parse_list(listed.lines)):
            return
        created = await self._call(self._client.create(quote(wire)))
        if created.result != "OK":
            raise SourceError(f"cannot create the --move-to folder {self._move_to}: "
                              f"{_said(created.lines)}")


def _wire_name(folder: str, delimiter: str | None) -> str:
    """An operator's folder name ("/" between levels) as the server names it."""
    parts = folder.split("/")
    if delimiter is None and len(parts) > 1:
        raise SourceError(f"--move-to {folder}: the server has no folder hierarchy")
    return (delimiter or "/").join(encode_mailbox(part) for part in parts)


def _batches(sizes: Sequence[tuple[int, int]], settings: MigrateSettings) -> list[list[int]]:
    """UIDs in batches of at most `batch_messages` messages and `batch_bytes` octets
    (a message is counted up to the size limit, as only that much is fetched; a
    batch holds at least one)."""
    batches: list[list[int]] = []
    octets = 0
    for uid, size in sizes:
        size = min(size, settings.max_message_bytes + 1)
        if not batches or len(batches[-1]) >= settings.batch_messages \
                or octets + size > settings.batch_bytes:
            batches.append([])
            octets = 0
        batches[-1].append(uid)
        octets += size
    return batches


def _said(lines: Sequence[object]) -> str:
    """What the server said, on one line and at most 200 characters."""
    text = b" ".join(_text(line) for line in lines).decode("utf-8", "replace")
    return " ".join(text.split())[:200]


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
