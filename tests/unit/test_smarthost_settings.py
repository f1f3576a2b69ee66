"""The smarthost and allow_plaintext_to settings: bad values are one line naming the
setting; the password comes from its file's first line."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.settings import SettingsError, load_settings
from gateway.config import GatewayConfig
from gateway.pgp.wiring import smarthost_settings


@pytest.mark.parametrize(("values", "error"), [
    ({"smarthost_port": 70000}, "'smarthost_port': must be a port number"),
    ({"smarthost_user": "gw"}, "'smarthost_user': needs smarthost_password_file"),
    ({"smarthost_user": "gw", "smarthost_password_file": "p", "smarthost_starttls": False},
     "AUTH needs smarthost_starttls"),
    ({"allow_plaintext_to": ["x@plain.example"]}, "'allow_plaintext_to': 'x@plain.example'"),
    ({"allow_plaintext_to": "plain example"}, "is not a domain"),
    ({"smarthost_timeout": 0}, "'smarthost_timeout': must be a positive number"),
])
def test_bad_smarthost_settings_name_the_setting(
    tmp_path: Path, values: dict[str, object], error: str
) -> None:
    with pytest.raises(SettingsError, match=error):
        load_settings(GatewayConfig, values, {"home": tmp_path})


def test_off_by_default_and_the_password_is_the_files_first_line(tmp_path: Path) -> None:
    assert smarthost_settings(GatewayConfig(home=tmp_path)) is None
    secret = tmp_path / "smarthost.password"
    secret.write_text("s3cret\nignored\n")
    cfg = load_settings(GatewayConfig, {
        "smarthost_port": 587, "smarthost_user": "gw", "smarthost_password_file": str(secret),
        "allow_plaintext_to": ["plain.example"],
    }, {"home": tmp_path})
    settings = smarthost_settings(cfg)
    assert settings is not None
    assert (settings.port, settings.user, settings.password, settings.starttls) == (
        587, "gw", "s3cret", True)
    secret.unlink()
    with pytest.raises(SettingsError, match="'smarthost_password_file': cannot read"):
        smarthost_settings(cfg)
