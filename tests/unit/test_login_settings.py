"""The login settings: reachable from TOML, refused when nonsense, in one line each."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.settings import SettingsError, load_settings
from gateway.config import GatewayConfig

LOGIN_TOML = {
    "login_failure_delay": 0.1,
    "login_failure_delay_max": 2,
    "login_block_failures": 3,
    "login_block_seconds": 60,
    "login_failure_window": 120,
    "login_tracked_max": 100,
    "kdf_workers": 1,
    "kdf_queue": 0,
}


def test_every_login_setting_comes_from_toml(tmp_path: Path) -> None:
    config = load_settings(GatewayConfig, LOGIN_TOML, {"home": tmp_path}, source="gw.toml")
    assert {name: getattr(config, name) for name in LOGIN_TOML} == LOGIN_TOML


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"login_failure_delay": -0.5}, "setting 'login_failure_delay'"),
        ({"login_failure_delay": 20.0}, "setting 'login_failure_delay'"),  # above the max
        ({"login_block_failures": 0}, "setting 'login_block_failures': must be positive"),
        ({"login_tracked_max": 0}, "setting 'login_tracked_max': must be positive"),
        ({"kdf_workers": 0}, "setting 'kdf_workers': must be positive"),
        ({"kdf_queue": -1}, "setting 'kdf_queue': must not be negative"),
        ({"login_block_seconds": 0}, "setting 'login_block_seconds': must be a positive"),
        ({"login_failure_window": -1}, "setting 'login_failure_window': must be a positive"),
    ],
)
def test_bad_login_settings_are_one_line_errors(
    tmp_path: Path, values: dict[str, float], message: str
) -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(GatewayConfig, values, {"home": tmp_path}, source="gw.toml")
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)
