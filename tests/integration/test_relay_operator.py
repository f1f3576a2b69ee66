"""What a relay operator reads: /healthz, /metrics, /status in Chromium, `sealgate relay status`,
and the client's separate connection pools, over real sockets."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from bridge.errors import RelayUnavailable
from bridge.keys import AccountKeys, GatewayCredential, RootKey
from bridge.relay.client import RelayClient
from bridge.relay.server import RelayServer
from tests.integration.test_relay import (
    Bubble,
    envelope_id_of,
    fake_relay,
    make_envelope,
    raw,
    relay,
    run,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def bubble() -> Bubble:
    root = RootKey.generate()
    alice, bob = AccountKeys.generate(), AccountKeys.generate()
    return Bubble(root, GatewayCredential.issue(root), alice, bob)


async def scrape(server: RelayServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics, keyed by name and sorted labels."""
    answer = await raw(server, "GET", "/metrics")
    assert answer.status == 200
    assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(answer.body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_healthz(tmp_path: Path, bubble: Bubble) -> None:
    async def scenario() -> None:
        async with relay(tmp_path, bubble) as (server, _):
            answer = await raw(server, "GET", "/healthz")
            assert (answer.status, json.loads(answer.body)) == (200, {"status": "ok"})

    run(scenario())


def test_metrics_follow_storage_deposits_fetches_and_routes(
    tmp_path: Path, bubble: Bubble
) -> None:
    async def scenario() -> None:
        async with relay(tmp_path, bubble) as (server, client):
            envelopes = [make_envelope(bubble.alice, size) for size in (1000, 2000, 3000)]
            for envelope in envelopes:
                await client.deposit(envelope, bubble.gateway)
            await client.deposit(envelopes[0], bubble.gateway)  # a retry stores nothing new
            await client.fetch(bubble.alice.mailbox, envelope_id_of(envelopes[1]))
            await client.ack(bubble.alice.mailbox, envelope_id_of(envelopes[0]))
            await raw(server, "GET", "/v1/mailboxes/zz/envelopes")  # a 400 is timed too

            samples = await scrape(server)
            assert samples[("sealgate_relay_stored_bytes", ())] == sum(map(len, envelopes[1:]))
            assert samples[("sealgate_relay_envelopes", ())] == 2
            assert samples[("sealgate_relay_quota_bytes", ())] == 0
            assert samples[("sealgate_relay_deposits_total", ())] == 3
            assert samples[("sealgate_relay_fetches_total", ())] == 1
            for reason in ("quota", "expired"):
                assert samples[("sealgate_relay_purged_total", (("reason", reason),))] == 0
            routes = {
                (dict(labels)["method"], dict(labels)["route"]): value
                for (name, labels), value in samples.items()
                if name == "sealgate_relay_request_seconds_count"
            }
            item = "/v1/mailboxes/{mailbox_id}/envelopes/{envelope_id}"
            assert routes[("POST", "/v1/envelopes")] == 4
            assert routes[("GET", item)] == routes[("DELETE", item)] == 1
            assert routes[("GET", "/v1/mailboxes/{mailbox_id}/envelopes")] == 1

            text = (await raw(server, "GET", "/metrics")).body.decode()
            assert bubble.alice.public.mailbox_id.hex()[:8] not in text
            assert envelope_id_of(envelopes[1]).hex()[:8] not in text
            assert "_created" not in text  # exact times of first events

    run(scenario())


def test_purge_hook_counts_by_reason(tmp_path: Path, bubble: Bubble) -> None:
    async def scenario() -> None:
        async with relay(tmp_path, bubble) as (server, client):
            server.metrics.count_purge("quota", 2)
            server.metrics.count_purge("expired")
            with pytest.raises(ValueError, match="unknown purge reason"):
                server.metrics.count_purge("whim")
            samples = await scrape(server)
            assert samples[("sealgate_relay_purged_total", (("reason", "quota"),))] == 2
            assert samples[("sealgate_relay_purged_total", (("reason", "expired"),))] == 1
            status = await client.status()
            assert status.purged_total == {"quota": 2, "expired": 1}
            assert status.purges_by_hour[-1] == 3

    run(scenario())


def test_two_relays_in_one_process_count_apart(tmp_path: Path, bubble: Bubble) -> None:
    async def scenario() -> None:
        async with relay(tmp_path / "a", bubble) as (first, client):
            async with relay(tmp_path / "b", bubble) as (second, _):
                await client.deposit(make_envelope(bubble.alice), bubble.gateway)
                assert (await scrape(first))[("sealgate_relay_deposits_total", ())] == 1
                assert (await scrape(second))[("sealgate_relay_deposits_total", ())] == 0

    run(scenario())


def _element_text(dom: str, element_id: str) -> str:
    found = re.search(rf'id="{element_id}"[^>]*>([^<]*)<', dom)
    assert found, f"no #{element_id} in the rendered page"
    return found.group(1).strip()


@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="Debian's chromium is not installed (scripts/system-packages)")
def test_status_page_renders_in_chromium(tmp_path: Path, bubble: Bubble) -> None:
    async def chromium(url: str, *flags: str) -> str:
        process = await asyncio.create_subprocess_exec(
            "chromium", "--headless", "--no-sandbox", "--disable-gpu",
            f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1000,1000",
            *flags, url,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )
        stdout, _ = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0
        return stdout.decode()

    async def scenario() -> None:
        async with relay(tmp_path / "relay", bubble) as (server, client):
            envelopes = [make_envelope(bubble.alice, 5000) for _ in range(4)]
            for envelope in envelopes:
                await client.deposit(envelope, bubble.gateway)
            await client.fetch(bubble.alice.mailbox, envelope_id_of(envelopes[0]))
            server.metrics.count_purge("quota", 3)

            html = (await raw(server, "GET", "/status")).body.decode()
            assert not re.search(r"""(src|href)\s*=|url\(|@import|<script""", html)

            dom = await chromium(server.url + "/status", "--dump-dom")
            assert "<title>Sealgate relay status</title>" in dom
            stored = sum(map(len, envelopes))
            assert re.search(rf'id="stored-bytes" data-value="{stored}"', dom)
            assert _element_text(dom, "stored-bytes") == f"{stored / 1024:.1f} KiB"
            assert _element_text(dom, "quota-bytes") == "none"
            assert _element_text(dom, "envelopes") == "4"
            assert _element_text(dom, "deposits-total") == "4"
            assert _element_text(dom, "fetches-total") == "1"
            assert _element_text(dom, "purged-quota") == "3"
            assert _element_text(dom, "purged-expired") == "0"
            assert re.match(r"\d+s$", _element_text(dom, "uptime"))
            bars = re.findall(r'<div title="(\d+)"', dom.split('id="purges-by-hour"')[1])
            assert len(bars) == 24 and bars[-1] == "3"

            shot = tmp_path / "status.png"
            await chromium(server.url + "/status", f"--screenshot={shot}")
            assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    run(scenario())


def test_relay_status_command(tmp_path: Path, bubble: Bubble) -> None:
    async def sealgate(*args: str) -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.cli", *args,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode is not None
        return process.returncode, stdout.decode(), stderr.decode()

    async def scenario() -> None:
        async with relay(tmp_path, bubble) as (server, client):
            envelope = make_envelope(bubble.alice, 2048)
            await client.deposit(envelope, bubble.gateway)

            code, out, err = await sealgate("relay", "status", "--url", server.url)
            assert (code, err) == (0, "")
            table = dict(re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in out.splitlines())
            assert table["stored"] == f"2.1 KiB ({len(envelope)} bytes)"
            assert table["envelopes"] == "1"
            assert table["quota"] == "none"
            assert table["deposits"].startswith("1 (")
            assert table["purged"] == "quota 0, expired 0"

            code, out, err = await sealgate("relay", "status", "--url", server.url, "--json")
            assert code == 0
            figures = json.loads(out)
            assert (figures["stored_bytes"], figures["envelopes"]) == (len(envelope), 1)
            assert figures["purged_total"] == {"quota": 0, "expired": 0}
            url = server.url

        code, out, err = await sealgate("relay", "status", "--url", url)
        assert code == 1 and out == ""
        assert err.startswith(f"sealgate: error: relay {url} unreachable") and err.count("\n") == 1

        code, _, err = await sealgate("relay", "status", "--url", "ftp://relay")
        assert code == 1 and err.count("\n") == 1 and "http://" in err

    run(scenario())


def _recording_routes(peers: dict[str, set[int]]) -> web.RouteTableDef:
    """A stand-in relay that notes which client port each kind of request came from."""
    routes = web.RouteTableDef()

    def note(kind: str, request: web.Request) -> None:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        assert peer is not None
        peers.setdefault(kind, set()).add(peer[1])

    @routes.post("/v1/envelopes")
    async def deposit(request: web.Request) -> web.Response:
        note("deposit", request)
        body = await request.read()
        return web.json_response({"id": envelope_id_of(body).hex()}, status=201)

    @routes.get("/v1/mailboxes/{mailbox_id}/envelopes")
    async def listing(request: web.Request) -> web.Response:
        note("read", request)
        return web.json_response({"envelopes": []})

    @routes.get("/v1/directory")
    async def directory(request: web.Request) -> web.Response:
        note("read", request)
        return web.json_response({"records": []})

    return routes


def test_deposits_and_mailbox_reads_never_share_a_connection(bubble: Bubble) -> None:
    async def scenario() -> None:
        peers: dict[str, set[int]] = {}
        async with fake_relay(_recording_routes(peers)) as url, RelayClient(url) as client:
            for _ in range(3):
                await client.deposit(make_envelope(bubble.alice), bubble.gateway)
                await client.list(bubble.alice.mailbox)
                await client.directory()
        assert peers["deposit"] and peers["read"]
        assert peers["deposit"].isdisjoint(peers["read"])
        assert len(peers["deposit"]) == 1  # keep-alive still serves each pool

    run(scenario())


def test_client_refuses_a_malformed_status(bubble: Bubble) -> None:
    routes = web.RouteTableDef()

    @routes.get("/status.json")
    async def status(request: web.Request) -> web.Response:
        return web.json_response({"stored_bytes": "lots"})

    async def scenario() -> None:
        async with fake_relay(routes) as url, RelayClient(url) as client:
            with pytest.raises(RelayUnavailable, match="malformed relay answer"):
                await client.status()

    run(scenario())


def test_operator_routes_refuse_other_methods(tmp_path: Path, bubble: Bubble) -> None:
    async def scenario() -> None:
        async with relay(tmp_path, bubble) as (server, _):
            for path in ("/healthz", "/metrics", "/status", "/status.json"):
                answer = await raw(server, "POST", path, b"x")
                assert (answer.status, answer.error()) == (405, "method not allowed")
            async with aiohttp.ClientSession() as session, session.head(
                server.url + "/status"
            ) as response:
                assert response.status == 200

    run(scenario())
