"""A relay serving HTTPS, and gateways that pin its certificate."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bridge.errors import RelayUnavailable
from bridge.keys import RootKey
from bridge.relay.client import RelayClient
from bridge.relay.config import RelayConfig
from bridge.relay.server import RelayServer
from gateway.tls import ensure_certificate
from tests.bubble_processes import sealgate

pytestmark = pytest.mark.integration


def test_https_relay_with_a_pinned_certificate(tmp_path: Path) -> None:
    cert, key = ensure_certificate(tmp_path / "tls", "relay.example")
    other_cert, _ = ensure_certificate(tmp_path / "other", "relay.example")
    config = RelayConfig(home=tmp_path / "relay", trusted_roots=(RootKey.generate().public,),
                         tls_cert=cert, tls_key=key)

    async def scenario() -> None:
        server = RelayServer(config)
        await server.start()
        url = f"https://127.0.0.1:{server.port}"
        try:
            async with RelayClient(url, ca_file=cert) as pinned:
                assert await pinned.health()
                assert await pinned.directory() == []
            async with RelayClient(url, ca_file=other_cert) as wrong_pin:
                assert not await wrong_pin.health()
                with pytest.raises(RelayUnavailable):
                    await wrong_pin.directory()
            async with RelayClient(url.replace("https", "http")) as plain:
                assert not await plain.health()
        finally:
            await server.stop()

    asyncio.run(scenario())


def test_tls_flags_go_together(tmp_path: Path) -> None:
    sealgate("bubble", "init", "--home", tmp_path / "admin", "--domain", "tls.bubble")
    cert, _ = ensure_certificate(tmp_path / "tls", "relay.example")
    result = sealgate("relay", "serve", "--home", tmp_path / "relay", "--listen", "127.0.0.1:0",
                      "--trust-root", tmp_path / "admin" / "root.pub", "--tls-cert", cert,
                      check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == "sealgate: error: tls_cert and tls_key must be given together"
