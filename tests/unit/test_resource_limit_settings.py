"""The resource bounds are settings: read from TOML, checked, named in one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.relay.config import RelayConfig
from bridge.settings import SettingsError, load_settings, read_toml
from gateway.config import GatewayConfig

GATEWAY_BOUNDS = {
    "max_transaction_bytes": 7 * 1024 * 1024,
    "outbox_part_bytes": 3 * 1024 * 1024,
    "delivery_batch_bytes": 5 * 1024 * 1024,
    "max_smtp_connections": 9,
    "notice_fold_seconds": 60.0,
    "push_connections": 4,
}


def test_gateway_bounds_load_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text("".join(f"{name} = {value}\n" for name, value in GATEWAY_BOUNDS.items()))
    config = load_settings(GatewayConfig, read_toml(path), {"home": tmp_path})
    assert {name: getattr(config, name) for name in GATEWAY_BOUNDS} == GATEWAY_BOUNDS


@pytest.mark.parametrize("name", sorted(GATEWAY_BOUNDS))
@pytest.mark.parametrize("value", [0, -1])
def test_gateway_bounds_must_be_positive(tmp_path: Path, name: str, value: int) -> None:
    with pytest.raises(SettingsError, match=f"setting '{name}': must be (a )?positive"):
        load_settings(GatewayConfig, {name: value}, {"home": tmp_path})


def test_relay_query_limit_loads_and_is_checked(tmp_path: Path) -> None:
    relay = load_settings(RelayConfig, {"max_query_bytes": 0}, {"home": tmp_path})
    assert relay.max_query_bytes == 0
    with pytest.raises(SettingsError, match="max_query_bytes must be an integer from 0 to"):
        load_settings(RelayConfig, {"max_query_bytes": 2 * 1024 * 1024}, {"home": tmp_path})


def test_push_settings_load_and_are_checked(tmp_path: Path) -> None:
    gateway = load_settings(GatewayConfig, {"push_wait": 0}, {"home": tmp_path})
    assert gateway.push_wait == 0  # polling only
    for bad in (-1, 3601):
        with pytest.raises(SettingsError, match="setting 'push_wait': must be whole seconds"):
            load_settings(GatewayConfig, {"push_wait": bad}, {"home": tmp_path})
    relay = load_settings(
        RelayConfig, {"max_wait": "2m", "wait_recheck": "1s", "max_connections": 8},
        {"home": tmp_path},
    )
    assert (relay.max_wait, relay.wait_recheck, relay.max_connections) == (120, 1, 8)
