"""The relay's HTTP side: the aiohttp application, `RelayServer` and `serve_forever`.

This is the only relay module that owns a socket. Policy lives in `RelayHandler`
(one `handle_*` method per route), which calls the pure checks of `auth` and runs
every storage call in a worker thread (`asyncio.to_thread`) so that fsync and
SQLite never stall the event loop. Every refusal is a JSON body `{"error": reason}`
with its status; an unexpected failure is a bare 500 `{"error": "internal error"}`,
never a traceback. Log lines name the route template (`/v1/mailboxes/{mailbox_id}/…`),
never an id, a body or an address; routine access lines are DEBUG. Each request's
duration goes to the app's `RelayMetrics` (`bridge.relay.metrics`), which the
operator routes of `bridge.relay.operator` serve.

Slow clients are cut off: a request head must arrive within `header_timeout`
seconds of the connection (or of the previous answer), which is also how long an
idle keep-alive connection stays open; a body must arrive within `body_timeout`
seconds, else `408`. At most `max_connections` connections are open at once
(`bridge.relay.capacity`); the next one gets `503` and is closed.

A listing with `?wait=N` is held open until its mailbox has an envelope or N seconds
(at most `max_wait`) have passed: a deposit through this process wakes it at once
(`bridge.relay.waiting`), and it looks at storage again every `wait_recheck` seconds
for deposits through other processes on the same database. Stopping the relay
answers every held listing at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import re
import ssl
import time
from collections.abc import AsyncIterator, Mapping

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.typedefs import Handler

from bridge.directory import LOOKUP_ID_LEN, DirectoryRecord
from bridge.envelope import ENVELOPE_ID_LEN, OuterHeader, parse_outer
from bridge.envelope_batch import BatchFormatError, BatchOutcome, parse_batch
from bridge.errors import DirectoryError, EnvelopeFormatError
from bridge.keys import MAILBOX_ID_LEN
from bridge.relay.auth import (
    RequestError,
    check_fresh,
    check_gateway_credential,
    check_mailbox_owner,
    read_signed_headers,
    verify_request,
)
from bridge.relay.capacity import ConnectionCap
from bridge.relay.config import RelayConfig
from bridge.relay.metrics import RelayMetrics
from bridge.relay.operator import OperatorPages
from bridge.relay.storage import (
    EnvelopeStorage,
    NewEnvelope,
    PutOutcome,
    StorageFull,
    coarse_hour,
    open_storage,
)
from bridge.relay.waiting import MailboxWaiters
from bridge.revocation import GatewayRevocation

logger = logging.getLogger("sealgate.relay")
access_logger = logging.getLogger("sealgate.relay.access")
http_logger = logging.getLogger("sealgate.relay.http")  # aiohttp's own protocol errors

_LOWER_HEX = re.compile(r"[0-9a-f]+")
_MAX_REVOCATION_BODY = 1024  # {"gateway_key": 64 hex, "signature": 88 base64}
_GATEWAY_KEY_LEN = 32
_ROUTE = web.RequestKey("sealgate_route", str)  # the route template, for log lines
METRICS = web.AppKey("sealgate_metrics", RelayMetrics)
_BODY_TIMEOUT = web.AppKey("sealgate_body_timeout", int)
_DEPOSIT_ROUTE = "/v1/envelopes"  # the route templates that _observe counts
_BATCH_ROUTE = "/v1/envelope-batches"  # counted by its handler, per envelope created
_FETCH_ROUTE = "/v1/mailboxes/{mailbox_id}/envelopes/{envelope_id}"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
_STATUS_REASONS = {
    400: "bad request",
    404: "not found",
    405: "method not allowed",
    408: "request body too slow",
    413: "request body too large",
}


class RelayHandler:
    """Every relay decision, one method per route. Holds no per-request state."""

    def __init__(self, config: RelayConfig, storage: EnvelopeStorage) -> None:
        self.config = config
        self.storage = storage
        self.waiters = MailboxWaiters()

    async def handle_health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def handle_deposit(self, request: web.Request) -> web.Response:
        config = self.config
        arrived = time.time()  # freshness is judged at arrival, however long the upload
        # Everything that does not need the body first, so a stranger cannot make
        # the relay buffer a large one.
        signed = read_signed_headers(request.headers)
        check_fresh(signed, arrived, config.max_clock_skew)
        check_gateway_credential(
            request.headers, signed.verify_key, config.trusted_roots,
            await self._revoked_gateways(),
        )
        body = await _read_body(request, config.max_envelope_bytes)
        header, outcome = await asyncio.to_thread(  # one thread hop: verify, then store
            self._verify_and_put, request.headers, request.method, request.raw_path, body,
            arrived, signed.verify_key,
        )
        if outcome is PutOutcome.CONFLICT:
            raise RequestError(409, "a different envelope is stored under this id")
        if outcome is PutOutcome.CREATED:
            self.waiters.notify(header.mailbox_id)
        status = 201 if outcome is PutOutcome.CREATED else 200
        return web.json_response({"id": header.envelope_id.hex()}, status=status)

    def _verify_and_put(
        self, headers: Mapping[str, str], method: str, raw_path: str, body: bytes,
        arrived: float, gateway_key: bytes,
    ) -> tuple[OuterHeader, PutOutcome]:
        verify_request(headers, method, raw_path, body, arrived, self.config.max_clock_skew)
        try:
            header = parse_outer(body)
        except EnvelopeFormatError as exc:
            raise RequestError(400, str(exc)) from None
        outcome = self.storage.put(
            header.mailbox_id, header.envelope_id, body, coarse_hour(time.time()), gateway_key,
        )
        return header, outcome

    async def handle_deposit_batch(self, request: web.Request) -> web.Response:
        """Many envelopes in one signed request: one outcome per envelope, in order."""
        config = self.config
        arrived = time.time()
        signed = read_signed_headers(request.headers)  # as a single deposit: before the body
        check_fresh(signed, arrived, config.max_clock_skew)
        check_gateway_credential(
            request.headers, signed.verify_key, config.trusted_roots,
            await self._revoked_gateways(),
        )
        body = await _read_body(request, config.max_batch_bytes)
        results = await asyncio.to_thread(
            self._verify_and_put_batch, request.headers, request.method, request.raw_path,
            body, arrived, signed.verify_key,
        )
        metrics = request.app[METRICS]
        for mailbox_id, result in results:
            if result["outcome"] == BatchOutcome.CREATED.value:
                self.waiters.notify(mailbox_id)
                metrics.count_deposit()
        return web.json_response({"results": [result for _, result in results]})

    def _verify_and_put_batch(
        self, headers: Mapping[str, str], method: str, raw_path: str, body: bytes,
        arrived: float, gateway_key: bytes,
    ) -> list[tuple[bytes, dict[str, str]]]:
        """Each envelope's (mailbox id, answer); a malformed one has no mailbox (b"")."""
        config = self.config
        verify_request(headers, method, raw_path, body, arrived, config.max_clock_skew)
        try:
            framed = parse_batch(body, max_envelopes=config.max_batch_envelopes,
                                 max_envelope_bytes=config.max_envelope_bytes)
        except BatchFormatError as exc:
            raise RequestError(413 if exc.too_large else 400, exc.reason) from None
        answers: list[tuple[bytes, dict[str, str]]] = []
        envelopes: list[NewEnvelope] = []
        for data in framed:
            try:
                header = parse_outer(data)
            except EnvelopeFormatError as exc:
                answers.append((b"", {"outcome": BatchOutcome.MALFORMED.value,
                                      "error": str(exc)}))
                continue
            envelopes.append(NewEnvelope(header.mailbox_id, header.envelope_id, data))
            answers.append((header.mailbox_id, {"id": header.envelope_id.hex()}))
        stored = iter(self.storage.put_many(envelopes, coarse_hour(time.time()), gateway_key))
        for _, answer in answers:
            if "id" in answer:
                result = next(stored)
                if isinstance(result, StorageFull):
                    answer.update(outcome=BatchOutcome.STORAGE_FULL.value, error=result.reason)
                else:
                    answer["outcome"] = BatchOutcome(result.value).value
        return answers

    async def handle_status(self, request: web.Request) -> web.Response:
        """What became of an envelope, told only to the gateway that deposited it."""
        envelope_id = _path_id(request, "envelope_id", ENVELOPE_ID_LEN)
        body = await _read_body(request, self.config.max_query_bytes)
        arrived = time.time()
        gateway_key = verify_request(
            request.headers, request.method, request.raw_path, body, arrived,
            self.config.max_clock_skew,
        )
        check_gateway_credential(
            request.headers, gateway_key, self.config.trusted_roots,
            await self._revoked_gateways(),
        )
        answer = await asyncio.to_thread(self.storage.status, envelope_id, gateway_key)
        payload: dict[str, object] = {"status": answer.status.value}
        if answer.hour is not None:
            payload["hour"] = answer.hour
        return web.json_response(payload)

    async def sweep_forever(self) -> None:
        """Remove expired envelopes and old tombstones every `sweep_interval` seconds."""
        while True:
            work = asyncio.ensure_future(asyncio.to_thread(self.storage.sweep, time.time()))
            try:
                result = await asyncio.shield(work)
            except asyncio.CancelledError:
                await asyncio.wait([work])  # the thread runs on: let it end before storage closes
                raise
            except Exception as exc:  # noqa: BLE001 - the sweep must outlive one failure
                logger.error("event=sweep_failed error=%s", type(exc).__name__)
            else:
                if result.expired or result.forgotten:
                    logger.info("event=sweep expired=%d forgotten=%d",
                                result.expired, result.forgotten)
            await asyncio.sleep(self.config.sweep_interval)

    async def handle_list(self, request: web.Request) -> web.Response:
        mailbox_id = await self._authorize_mailbox(request)
        wait = min(_wait_seconds(request), self.config.max_wait)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        held = request.app[METRICS].held_listings
        with held.track_inprogress() if wait else contextlib.nullcontext():
            while True:
                with self.waiters.watch(mailbox_id) as wakeup:  # before the read: none missed
                    stored = await asyncio.to_thread(
                        self.storage.list, mailbox_id, self.config.max_list
                    )
                    left = deadline - loop.time()
                    if stored or left <= 0 or self.waiters.closed or _gone(request):
                        break
                    await wakeup.wait(min(left, self.config.wait_recheck))
        return web.json_response({"envelopes": [
            {"id": item.envelope_id.hex(), "size": item.size, "received": item.received}
            for item in stored
        ]})

    async def handle_fetch(self, request: web.Request) -> web.Response:
        mailbox_id = await self._authorize_mailbox(request)
        envelope_id = _path_id(request, "envelope_id", ENVELOPE_ID_LEN)
        data = await asyncio.to_thread(self.storage.get, mailbox_id, envelope_id)
        if data is None:
            raise RequestError(404, "no such envelope")
        return web.Response(body=data, content_type="application/octet-stream")

    async def handle_ack(self, request: web.Request) -> web.Response:
        mailbox_id = await self._authorize_mailbox(request)
        envelope_id = _path_id(request, "envelope_id", ENVELOPE_ID_LEN)
        await asyncio.to_thread(self.storage.delete, mailbox_id, envelope_id)
        return web.Response(status=204)

    async def handle_publish(self, request: web.Request) -> web.Response:
        lookup_id = _path_id(request, "lookup_id", LOOKUP_ID_LEN)
        body = await _read_body(request, self.config.max_record_bytes)
        try:
            record = DirectoryRecord.from_json(json.loads(body))
        except (ValueError, RecursionError):
            raise RequestError(400, "malformed JSON") from None
        except DirectoryError as exc:
            raise RequestError(400, str(exc)) from None
        if record.lookup_id != lookup_id:
            raise RequestError(400, "lookup id does not match the path")
        try:
            record.verify_publisher(self.config.trusted_roots)
        except DirectoryError as exc:
            raise RequestError(403, str(exc)) from None
        if not await asyncio.to_thread(self.storage.put_directory, record):
            raise RequestError(409, "a record with this or a newer version is stored")
        return web.Response(status=204)

    async def handle_revoke_gateway(self, request: web.Request) -> web.Response:
        gateway_key = _path_id(request, "gateway_key", _GATEWAY_KEY_LEN)
        body = await _read_body(request, _MAX_REVOCATION_BODY)
        try:
            revocation = GatewayRevocation.from_json(json.loads(body))
        except (ValueError, RecursionError):
            raise RequestError(400, "malformed JSON") from None
        except DirectoryError as exc:
            raise RequestError(400, str(exc)) from None
        if revocation.gateway_key != gateway_key:
            raise RequestError(400, "gateway key does not match the path")
        try:
            revocation.verify(self.config.trusted_roots)
        except DirectoryError as exc:
            raise RequestError(403, str(exc)) from None
        await asyncio.to_thread(self.storage.put_gateway_revocation, revocation)
        return web.Response(status=204)

    async def handle_gateway_revocations(self, request: web.Request) -> web.Response:
        revocations = await asyncio.to_thread(self.storage.gateway_revocations)
        return web.json_response({"revocations": [r.to_json() for r in revocations]})

    async def _revoked_gateways(self) -> frozenset[bytes]:
        # Storage that alone writes its revocations keeps them in memory; a shared
        # database is read each time, so a revocation stored through another relay
        # process on it counts at once.
        known = self.storage.revoked_gateway_keys()
        if known is not None:
            return known
        stored = await asyncio.to_thread(self.storage.gateway_revocations)
        return frozenset(r.gateway_key for r in stored)

    async def handle_lookup(self, request: web.Request) -> web.Response:
        lookup_id = _path_id(request, "lookup_id", LOOKUP_ID_LEN)
        record = await asyncio.to_thread(self.storage.get_directory, lookup_id)
        if record is None:
            raise RequestError(404, "no such directory record")
        return web.json_response(record.to_json())

    async def handle_directory(self, request: web.Request) -> web.Response:
        records = await asyncio.to_thread(self.storage.all_directory)
        return web.json_response({"records": [record.to_json() for record in records]})

    async def _authorize_mailbox(self, request: web.Request) -> bytes:
        """The path's mailbox id, once the request is signed by that mailbox's key."""
        mailbox_id = _path_id(request, "mailbox_id", MAILBOX_ID_LEN)
        body = await _read_body(request, self.config.max_query_bytes)
        verify_key = verify_request(
            request.headers, request.method, request.raw_path, body, time.time(),
            self.config.max_clock_skew,
        )
        check_mailbox_owner(verify_key, mailbox_id)
        return mailbox_id


def build_app(
    config: RelayConfig, storage: EnvelopeStorage, metrics: RelayMetrics | None = None
) -> web.Application:
    """The relay's aiohttp application over `storage`, counting into `metrics` (its sweep
    runs while it is up)."""
    handler = RelayHandler(config, storage)
    pages = OperatorPages(metrics or RelayMetrics(storage.usage))
    # Each route reads its body through `_read_body` with its own limit, or not at all;
    # client_max_size only backs that up for anything that would call request.read().
    app = web.Application(
        middlewares=[_observe, _json_errors],
        client_max_size=max(
            config.max_envelope_bytes, config.max_batch_bytes, config.max_record_bytes
        ),
    )
    app[METRICS] = pages.metrics
    app[_BODY_TIMEOUT] = config.body_timeout
    app.router.add_get("/healthz", pages.handle_healthz)
    app.router.add_get("/metrics", pages.handle_metrics)
    app.router.add_get("/status", pages.handle_status)
    app.router.add_get("/status.json", pages.handle_status_json)
    mailbox = "/v1/mailboxes/{mailbox_id}/envelopes"
    router = app.router
    router.add_get("/v1/health", handler.handle_health)
    router.add_post("/v1/envelopes", handler.handle_deposit)
    router.add_post(_BATCH_ROUTE, handler.handle_deposit_batch)
    router.add_get("/v1/envelopes/{envelope_id}/status", handler.handle_status, allow_head=False)
    router.add_get(mailbox, handler.handle_list, allow_head=False)
    router.add_get(mailbox + "/{envelope_id}", handler.handle_fetch, allow_head=False)
    router.add_delete(mailbox + "/{envelope_id}", handler.handle_ack)
    router.add_put("/v1/directory/{lookup_id}", handler.handle_publish)
    router.add_get("/v1/directory/{lookup_id}", handler.handle_lookup)
    router.add_get("/v1/directory", handler.handle_directory)
    router.add_put("/v1/revocations/gateways/{gateway_key}", handler.handle_revoke_gateway)
    router.add_get("/v1/revocations/gateways", handler.handle_gateway_revocations)
    app.cleanup_ctx.append(functools.partial(_sweeping, handler))

    async def answer_held_listings(_app: web.Application) -> None:
        handler.waiters.close()

    app.on_shutdown.append(answer_held_listings)
    return app


async def _sweeping(handler: RelayHandler, app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(handler.sweep_forever(), name="relay-sweep")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


class RelayServer:
    """A relay listening on `config.host:config.port` (port 0: the OS picks; see `.port`).

    Without a `storage`, it opens the storage the config names (`open_storage`: SQLite
    plus files in `config.home`, or PostgreSQL at `config.db`) with the config's quota
    and retention on start and closes it on stop. While it runs, expired
    envelopes are swept every `config.sweep_interval` seconds.
    """

    def __init__(self, config: RelayConfig, storage: EnvelopeStorage | None = None) -> None:
        self.config = config
        self._storage = storage
        self._owns_storage = storage is None
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None
        self._port: int | None = None
        # Exists before storage is opened, so storage can be given `count_purge`.
        self.metrics = RelayMetrics(
            lambda: self._opened_storage().usage(), quota_bytes=config.quota or 0
        )

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("relay server already started")
        if self._storage is None:
            self._storage = await asyncio.to_thread(
                open_storage, self.config, self.metrics.count_purge
            )
        runner = web.AppRunner(
            build_app(self.config, self._storage, self.metrics),
            access_log_class=_TerseAccessLogger, access_log=access_logger,
            keepalive_timeout=self.config.header_timeout, logger=http_logger,
        )
        try:
            await runner.setup()
            assert runner.server is not None  # noqa: S101 - set by setup()
            cap = ConnectionCap(self.config.max_connections)
            try:
                listener = await asyncio.get_running_loop().create_server(
                    cap.protocol_factory(runner.server), self.config.host, self.config.port,
                    ssl=self._tls_context(),
                )
            except BaseException:
                await runner.cleanup()
                raise
        except BaseException:
            await self.stop()
            raise
        self._runner, self._listener = runner, listener
        self._port = int(listener.sockets[0].getsockname()[1])

    def _tls_context(self) -> ssl.SSLContext | None:
        if self.config.tls_cert is None or self.config.tls_key is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.config.tls_cert, self.config.tls_key)
        return context

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("relay server is not started")
        return self._port

    def _opened_storage(self) -> EnvelopeStorage:
        if self._storage is None:
            raise RuntimeError("relay server is not started")
        return self._storage

    @property
    def url(self) -> str:
        host = self.config.host
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    async def stop(self) -> None:
        """Stop listening, let running requests finish, close owned storage."""
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            self._port = None
        if self._owns_storage and self._storage is not None:
            await asyncio.to_thread(self._storage.close)
            self._storage = None


async def serve_forever(config: RelayConfig) -> None:
    """Run a relay until the task is cancelled."""
    server = RelayServer(config)
    await server.start()
    logger.info("event=listening url=%s", server.url)
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop()
        logger.info("event=stopped")


@web.middleware
async def _observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Name the route, time the answer and count deposits and fetches."""
    resource = request.match_info.route.resource
    route = "-" if resource is None else resource.canonical
    request[_ROUTE] = route
    started = time.perf_counter()
    response = await handler(request)
    metrics = request.app[METRICS]
    metrics.observe_request(_method(request), route, time.perf_counter() - started)
    if response.status == 201 and route == _DEPOSIT_ROUTE:
        metrics.count_deposit()
    elif response.status == 200 and route == _FETCH_ROUTE and request.method == "GET":
        metrics.count_fetch()
    return response


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except RequestError as exc:
        response = web.json_response(exc.to_json(), status=exc.status)
        if exc.status in (408, 413):  # the rest of the body is unread: do not reuse the connection
            response.force_close()
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = web.json_response(
            {"error": _STATUS_REASONS.get(exc.status, exc.reason.lower())}, status=exc.status
        )
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception as exc:
        # One line per event; the traceback (SQL parameters hidden) only at DEBUG.
        logger.error(
            "event=internal_error method=%s route=%s error=%s",
            _method(request), request[_ROUTE], type(exc).__name__,
        )
        logger.debug("traceback of the internal error", exc_info=True)
        return web.json_response({"error": "internal error"}, status=500)


class _OneLineProtocolErrors(logging.Filter):
    """Turn aiohttp's record of bytes that are not HTTP into one INFO line.

    aiohttp logs those with the peer address and a traceback; the line kept names
    only the parser's error.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.exc_info:
            return True
        record.msg, record.args = "event=bad_http error=%s", (type(record.exc_info[1]).__name__,)
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        if record.levelno > logging.INFO:
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


http_logger.addFilter(_OneLineProtocolErrors())


class _TerseAccessLogger(AbstractAccessLogger):
    """One DEBUG line per request: method, route template, status, duration.

    No ids, no peer address. Routine access is DEBUG so that the default log level
    keeps no per-request record with an exact time.
    """

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.debug(
            "event=request method=%s route=%s status=%d seconds=%.3f",
            _method(request), request.get(_ROUTE, "-"), response.status, time,
        )


def _method(request: web.BaseRequest) -> str:
    """The method for a log line or a metric label: a known one, or `other`."""
    return request.method if request.method in _METHODS else "other"


def _wait_seconds(request: web.Request) -> int:
    """The listing's `?wait=` in whole seconds (0 without one); 400 if malformed."""
    values = request.query.getall("wait", [])
    if not values:
        return 0
    if len(values) > 1 or not values[0].isdigit() or not values[0].isascii() \
            or len(values[0]) > 6:
        raise RequestError(400, "malformed wait")
    return int(values[0])


def _gone(request: web.Request) -> bool:
    """True once the client of a held listing has closed its connection."""
    transport = request.transport
    return transport is None or transport.is_closing()


def _path_id(request: web.Request, name: str, length: int) -> bytes:
    text = request.match_info[name]
    if len(text) != 2 * length or not _LOWER_HEX.fullmatch(text):
        raise RequestError(400, f"malformed {name.replace('_', ' ')}")
    return bytes.fromhex(text)


async def _read_body(request: web.Request, limit: int) -> bytes:
    """The request body, or 413 as soon as it is known to exceed `limit` bytes.

    A declared Content-Length is judged before reading; a chunked body is read as it
    arrives and refused at the first byte over the limit, so no route ever buffers
    more than its own limit (aiohttp then drains the rest for a few seconds, without
    keeping it, so that the client sees the 413, and closes the connection).
    """
    declared = request.content_length
    if declared is not None and declared > limit:
        raise RequestError(413, "request body too large")
    body = bytearray()
    try:
        async with asyncio.timeout(request.app[_BODY_TIMEOUT]):
            while chunk := await request.content.read(limit + 1 - len(body)):
                body += chunk
                if len(body) > limit:
                    raise RequestError(413, "request body too large")
    except TimeoutError:
        raise RequestError(408, "request body too slow") from None
    return bytes(body)
