"""`RelayClient`: what a gateway calls to deposit, list, fetch, ack and publish.

One client talks to one relay. Failures come out as two errors only:

    RelayUnavailable   connection refused, timeout, 5xx, an answer that makes no
                       sense (wrong envelope, malformed JSON, too large): another
                       try, or another relay, may work
    RelayRejected      4xx with the relay's short reason: the same request will fail

Requests are signed with `bridge.relay.auth`; redirects are never followed (the
signature covers the path). Answers are read up to `max_response_bytes`. This
module keeps nothing on disk and logs nothing.

Deposits travel on connections of their own, never shared with mailbox reads or
directory lookups: a keep-alive connection that carried both would tell the relay
which mailbox the depositing gateway reads. Held listings (`list(wait=N)`) have a
third pool of at most `max_waiting` connections, so that they never keep fetches,
acks or directory lookups waiting for a connection.
"""

from __future__ import annotations

import builtins
import io
import json
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import aiohttp
import nacl.signing
import yarl

from bridge.directory import LOOKUP_ID_LEN, DirectoryRecord
from bridge.envelope import ENVELOPE_ID_LEN, parse_outer
from bridge.envelope_batch import BatchOutcome, pack_batch
from bridge.errors import (
    BatchUnsupported,
    BridgeError,
    RelayError,
    RelayRejected,
    RelayUnavailable,
)
from bridge.keys import GatewayCredential, mailbox_id_for
from bridge.relay.auth import sign_deposit, sign_gateway_request, sign_request
from bridge.relay.config import (
    DEFAULT_MAX_BATCH_BYTES,
    DEFAULT_MAX_BATCH_ENVELOPES,
    DEFAULT_MAX_ENVELOPE_BYTES,
)
from bridge.revocation import GatewayRevocation

if TYPE_CHECKING:
    from bridge.relay.metrics import RelayStatus

_REASON_MAX = 200
_CHUNK = 64 * 1024
# Below the relay's header_timeout (default 15 s), so that the client, not the
# relay, closes an idle connection and a request never races the relay's close.
_KEEPALIVE = 5.0
_ID_AT = slice(4, 4 + ENVELOPE_ID_LEN)  # an envelope's id, after its magic (bridge.envelope)
_DEPOSITS, _READS, _WAITS = "deposits", "reads", "waits"  # the connection pools


@dataclass(frozen=True)
class EnvelopeInfo:
    """One envelope waiting in a mailbox, as the relay lists it."""

    envelope_id: bytes
    size: int
    received: int  # unix time rounded down to the hour


ENVELOPE_STATUSES = frozenset({"pending", "delivered", "purged", "expired", "unknown"})


@dataclass(frozen=True)
class DepositStatus:
    """What a relay says became of an envelope this gateway deposited."""

    status: str  # one of ENVELOPE_STATUSES
    hour: int | None  # when it was delivered, purged or expired (unix time, to the hour)


class RelayClient:
    """An HTTP client for one relay; its two aiohttp sessions (deposits, everything
    else) are created on first use.

    `takes_batches` is True until the relay answers a batch deposit with 404 or 405;
    a batch is at most `max_batch_envelopes` envelopes and `max_batch_bytes` of body
    (the relay's documented defaults).
    """

    max_batch_envelopes = DEFAULT_MAX_BATCH_ENVELOPES
    max_batch_bytes = DEFAULT_MAX_BATCH_BYTES

    def __init__(
        self, url: str, *, timeout: float = 10.0,
        max_response_bytes: int = DEFAULT_MAX_ENVELOPE_BYTES,
        ca_file: Path | None = None, max_waiting: int = 100,
    ) -> None:
        base = yarl.URL(url)
        if base.scheme not in ("http", "https") or not base.host:
            raise ValueError("relay url must be http:// or https:// with a host")
        if base.query_string or base.fragment:
            raise ValueError("relay url must not have a query or fragment")
        if timeout <= 0 or max_response_bytes <= 0 or max_waiting <= 0:
            raise ValueError("timeout, max_response_bytes and max_waiting must be positive")
        self._max_waiting = max_waiting
        self.takes_batches = True
        self.url = url
        self._base = base
        self._prefix = base.path.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._max_response = max_response_bytes
        self._sessions: dict[str, aiohttp.ClientSession] = {}
        # https: the system's trust store, or only the certificates in ca_file (pinning).
        self._ssl = ssl.create_default_context(cafile=ca_file) if ca_file is not None else True

    async def __aenter__(self) -> RelayClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        sessions, self._sessions = self._sessions, {}
        for session in sessions.values():
            await session.close()

    async def health(self) -> bool:
        """True if the relay answers its health check; never raises a RelayError."""
        try:
            _, body = await self._call("GET", "/v1/health", expect=(200,))
            return bool(_json(body) == {"status": "ok"})
        except RelayError:
            return False

    async def deposit(self, envelope: bytes, credential: GatewayCredential) -> None:
        """Hand one envelope to the relay; returns once the relay has stored it durably."""
        url = self._url("/v1/envelopes")
        headers = sign_deposit(credential, url.raw_path_qs, envelope, time.time())
        headers["Content-Type"] = "application/octet-stream"
        await self._call(
            "POST", url, body=envelope, headers=headers, expect=(200, 201), pool=_DEPOSITS,
        )

    async def deposit_many(
        self, envelopes: builtins.list[bytes], credential: GatewayCredential
    ) -> builtins.list[BatchOutcome]:
        """Hand envelopes to the relay in one request: what it did with each, in order
        (CREATED and DUPLICATE ones are stored durably). BatchUnsupported from a relay
        without batch deposits (`takes_batches` is False from then on)."""
        if not self.takes_batches:
            raise BatchUnsupported(404, "relay has no batch deposit")
        body = pack_batch(envelopes)
        url = self._url("/v1/envelope-batches")
        headers = sign_deposit(credential, url.raw_path_qs, body, time.time())
        headers["Content-Type"] = "application/octet-stream"
        try:
            _, answer = await self._call(
                "POST", url, body=body, headers=headers, expect=(200,), pool=_DEPOSITS,
            )
        except RelayRejected as e:
            if e.status in (404, 405):
                self.takes_batches = False
                raise BatchUnsupported(e.status, e.reason) from None
            raise
        return _batch_outcomes(_json(answer), envelopes)

    async def envelope_status(
        self, envelope_id: bytes, credential: GatewayCredential
    ) -> DepositStatus:
        """What became of an envelope this gateway deposited (signed like a deposit)."""
        _check_len(envelope_id, ENVELOPE_ID_LEN, "envelope id")
        url = self._url(f"/v1/envelopes/{envelope_id.hex()}/status")
        headers = sign_gateway_request(credential, "GET", url.raw_path_qs, b"", time.time())
        _, body = await self._call("GET", url, headers=headers, expect=(200,))
        data = _json(body)
        status = data.get("status") if isinstance(data, dict) else None
        hour = data.get("hour") if isinstance(data, dict) else None
        if status not in ENVELOPE_STATUSES or not (hour is None or type(hour) is int):
            raise RelayUnavailable("malformed relay answer")
        return DepositStatus(str(status), hour)

    async def list(
        self, mailbox_key: nacl.signing.SigningKey, *, wait: int = 0
    ) -> builtins.list[EnvelopeInfo]:
        """The envelopes waiting in this key's mailbox, oldest first (at most the relay's cap).

        With `wait` seconds, the relay holds the request until the mailbox has one or the
        time is up (an empty list then); the request may take `wait` plus the timeout.
        """
        if wait < 0:
            raise ValueError("wait must not be negative")
        if wait:
            _, body = await self._signed(
                mailbox_key, "GET", f"?wait={wait}", expect=(200,), pool=_WAITS,
                extra_time=wait,
            )
        else:
            _, body = await self._signed(mailbox_key, "GET", "", expect=(200,))
        data = _json(body)
        items = data.get("envelopes") if isinstance(data, dict) else None
        if not isinstance(items, builtins.list):
            raise RelayUnavailable("malformed relay answer")
        try:
            return [_envelope_info(item) for item in items]
        except (KeyError, TypeError, ValueError):
            raise RelayUnavailable("malformed relay answer") from None

    async def fetch(self, mailbox_key: nacl.signing.SigningKey, envelope_id: bytes) -> bytes:
        """One envelope's bytes; RelayRejected(404) if the mailbox does not hold it."""
        _check_len(envelope_id, ENVELOPE_ID_LEN, "envelope id")
        _, body = await self._signed(mailbox_key, "GET", "/" + envelope_id.hex(), expect=(200,))
        try:
            header = parse_outer(body)
        except BridgeError:
            raise RelayUnavailable("relay returned something that is not an envelope") from None
        if (header.envelope_id, header.mailbox_id) != (
            envelope_id, mailbox_id_for(bytes(mailbox_key.verify_key))
        ):
            raise RelayUnavailable("relay returned a different envelope")
        return body

    async def ack(self, mailbox_key: nacl.signing.SigningKey, envelope_id: bytes) -> None:
        """Tell the relay to delete an envelope (done also if it was already gone)."""
        _check_len(envelope_id, ENVELOPE_ID_LEN, "envelope id")
        await self._signed(mailbox_key, "DELETE", "/" + envelope_id.hex(), expect=(204,))

    async def status(self) -> RelayStatus:
        """The relay's operator figures (`GET /status.json`)."""
        # Imported here: the metrics module brings prometheus_client and the relay's
        # storage, which a gateway never uses.
        from bridge.relay.metrics import RelayStatus

        _, body = await self._call("GET", "/status.json", expect=(200,))
        try:
            return RelayStatus.from_json(_json(body))
        except ValueError:
            raise RelayUnavailable("malformed relay answer") from None

    async def publish(self, record: DirectoryRecord) -> None:
        """Store a root-signed directory record (the record's signature authorizes it).

        RelayRejected(409) if the relay holds this or a newer version of the record.
        """
        body = json.dumps(record.to_json()).encode("ascii")
        await self._call(
            "PUT", f"/v1/directory/{record.lookup_id.hex()}", body=body,
            headers={"Content-Type": "application/json"}, expect=(204,),
        )

    async def revoke_gateway(self, revocation: GatewayRevocation) -> None:
        """Store a root-signed gateway revocation (its signature authorizes it)."""
        body = json.dumps(revocation.to_json()).encode("ascii")
        await self._call(
            "PUT", f"/v1/revocations/gateways/{revocation.gateway_key.hex()}", body=body,
            headers={"Content-Type": "application/json"}, expect=(204,),
        )

    async def gateway_revocations(self) -> builtins.list[GatewayRevocation]:
        """Every gateway revocation the relay holds. Signatures unchecked."""
        _, body = await self._call("GET", "/v1/revocations/gateways", expect=(200,))
        data = _json(body)
        items = data.get("revocations") if isinstance(data, dict) else None
        if not isinstance(items, builtins.list):
            raise RelayUnavailable("malformed relay answer")
        try:
            return [GatewayRevocation.from_json(item) for item in items]
        except BridgeError:
            raise RelayUnavailable("relay returned a malformed revocation") from None

    async def lookup(self, lookup_id: bytes) -> DirectoryRecord | None:
        """The record stored under `lookup_id`, or None. The caller verifies its signature."""
        _check_len(lookup_id, LOOKUP_ID_LEN, "lookup id")
        status, body = await self._call(
            "GET", f"/v1/directory/{lookup_id.hex()}", expect=(200, 404),
        )
        if status == 404:
            return None
        record = _record(_json(body))
        if record.lookup_id != lookup_id:
            raise RelayUnavailable("relay returned a different directory record")
        return record

    async def directory(self) -> builtins.list[DirectoryRecord]:
        """Every record the relay holds (for a gateway's replica). Signatures unchecked."""
        _, body = await self._call("GET", "/v1/directory", expect=(200,))
        data = _json(body)
        if not isinstance(data, dict) or not isinstance(data.get("records"), builtins.list):
            raise RelayUnavailable("malformed relay answer")
        return [_record(item) for item in data["records"]]

    # internals

    def _url(self, path: str) -> yarl.URL:
        return self._base.with_path(self._prefix + path, encoded=True)

    async def _signed(
        self, key: nacl.signing.SigningKey, method: str, suffix: str, expect: tuple[int, ...],
        pool: str = _READS, extra_time: float = 0.0,
    ) -> tuple[int, bytes]:
        mailbox_id = mailbox_id_for(bytes(key.verify_key))
        path, _, query = suffix.partition("?")
        url = self._url(f"/v1/mailboxes/{mailbox_id.hex()}/envelopes{path}")
        if query:
            url = url.with_query(query)
        headers = sign_request(key, method, url.raw_path_qs, b"", time.time())
        return await self._call(
            method, url, headers=headers, expect=expect, pool=pool, extra_time=extra_time
        )

    async def _call(
        self, method: str, target: str | yarl.URL, *, body: bytes | None = None,
        headers: dict[str, str] | None = None, expect: tuple[int, ...], pool: str = _READS,
        extra_time: float = 0.0,
    ) -> tuple[int, bytes]:
        url = self._url(target) if isinstance(target, str) else target
        session = self._sessions.get(pool)
        if session is None:
            limit = self._max_waiting if pool == _WAITS else 100  # 100: aiohttp's default
            session = self._sessions[pool] = aiohttp.ClientSession(
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(
                    ssl=self._ssl, keepalive_timeout=_KEEPALIVE, limit=limit
                ),
            )
        timeout = self._timeout
        if extra_time:
            timeout = aiohttp.ClientTimeout(total=(timeout.total or 0) + extra_time)
        try:
            async with session.request(
                method, url, data=None if body is None else io.BytesIO(body), headers=headers,
                allow_redirects=False, timeout=timeout,
            ) as response:
                status = response.status
                payload = await self._read(response)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise RelayUnavailable(f"relay request failed ({type(exc).__name__})") from None
        if status in expect:
            return status, payload
        if 400 <= status < 500:
            raise RelayRejected(status, _reason(payload, status))
        raise RelayUnavailable(f"relay answered {status}")

    async def _read(self, response: aiohttp.ClientResponse) -> bytes:
        limit = self._max_response
        if response.content_length is not None and response.content_length > limit:
            raise RelayUnavailable("relay answer too large")
        chunks: builtins.list[bytes] = []
        total = 0
        async for chunk in response.content.iter_chunked(_CHUNK):
            total += len(chunk)
            if total > limit:
                raise RelayUnavailable("relay answer too large")
            chunks.append(chunk)
        return b"".join(chunks)


def _json(body: bytes) -> object:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise RelayUnavailable("malformed relay answer") from None


def _reason(payload: bytes, status: int) -> str:
    """The relay's `{"error": ...}` text, printable and short; a generic one otherwise."""
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError):
        data = None
    text = data.get("error") if isinstance(data, dict) else None
    if not isinstance(text, str) or not text:
        return f"HTTP {status}"
    return "".join(c if c.isprintable() else "?" for c in text[:_REASON_MAX])


def _batch_outcomes(data: object, envelopes: builtins.list[bytes]) -> builtins.list[BatchOutcome]:
    """The outcomes of a batch answer, checked against the envelopes sent."""
    items = data.get("results") if isinstance(data, dict) else None
    if not isinstance(items, builtins.list) or len(items) != len(envelopes):
        raise RelayUnavailable("malformed relay answer")
    outcomes = []
    for item, envelope in zip(items, envelopes, strict=True):
        try:
            outcome = BatchOutcome(item["outcome"])
            if outcome is not BatchOutcome.MALFORMED and item["id"] != envelope[_ID_AT].hex():
                raise ValueError("a different envelope's answer")
        except (KeyError, TypeError, ValueError):
            raise RelayUnavailable("malformed relay answer") from None
        outcomes.append(outcome)
    return outcomes


def _envelope_info(item: object) -> EnvelopeInfo:
    """One listing entry; KeyError, TypeError or ValueError if it is malformed."""
    if not isinstance(item, dict):
        raise TypeError("listing entry is not an object")
    envelope_id = bytes.fromhex(item["id"])
    size, received = item["size"], item["received"]
    if len(envelope_id) != ENVELOPE_ID_LEN or type(size) is not int or type(received) is not int:
        raise ValueError("malformed envelope listing")
    return EnvelopeInfo(envelope_id=envelope_id, size=size, received=received)


def _record(data: object) -> DirectoryRecord:
    try:
        return DirectoryRecord.from_json(data)
    except BridgeError:
        raise RelayUnavailable("relay returned a malformed directory record") from None


def _check_len(value: bytes, length: int, name: str) -> None:
    if len(value) != length:
        raise ValueError(f"{name} must be {length} bytes")
