"""The example configuration files in deploy/ load, and each sets only its defaults."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest

from bridge.relay.config import RelayConfig
from bridge.settings import SettingsError, load_settings, read_toml
from gateway.config import GatewayConfig

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


@pytest.mark.parametrize(
    ("name", "cls"), [("gateway.example.toml", GatewayConfig), ("relay.example.toml", RelayConfig)]
)
def test_example_config_is_the_defaults(tmp_path: Path, name: str, cls: type) -> None:
    text = (DEPLOY / "config" / name).read_text()
    values = read_toml(DEPLOY / "config" / name)
    loaded = load_settings(cls, values, {"home": tmp_path}, source=name)
    assert loaded == cls(home=tmp_path)
    # optional settings (no default value to write in TOML) stand as commented examples
    commented = set(re.findall(r"^# (\w+) = ", text, re.MULTILINE))
    documented = set(values) | commented
    settable = {f.name for f in fields(cls)} - {"home", "host", "port", "trusted_roots"}
    assert documented == settable  # every setting an operator can put in the file is shown


def test_relay_roots_come_from_flags_not_the_file(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="'trusted_roots' cannot be set in a config file"):
        load_settings(RelayConfig, {"trusted_roots": ["00" * 32]}, {"home": tmp_path})


def test_units_run_the_documented_commands() -> None:
    relay = (DEPLOY / "systemd" / "sealgate-relay.service").read_text()
    gateway = (DEPLOY / "systemd" / "sealgate-gateway@.service").read_text()
    assert "sealgate relay serve --home" in relay and "--trust-root" in relay
    assert "sealgate gateway serve --home" in gateway
