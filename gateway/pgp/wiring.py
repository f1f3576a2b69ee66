"""The gateway's OpenPGP settings as the parts need them (read once at start-up)."""

from __future__ import annotations

from bridge.settings import SettingsError
from gateway.config import GatewayConfig
from gateway.pgp.smarthost import SmarthostSettings


def smarthost_settings(cfg: GatewayConfig) -> SmarthostSettings | None:
    """None when no smarthost is set up (`smarthost_port`)."""
    if cfg.smarthost_port is None:
        return None
    password = ""
    if cfg.smarthost_password_file is not None:
        try:
            password = cfg.smarthost_password_file.read_text("utf-8").splitlines()[0]
        except (OSError, UnicodeDecodeError, IndexError):
            raise SettingsError(
                f"setting 'smarthost_password_file': cannot read a password from "
                f"{cfg.smarthost_password_file}"
            ) from None
    return SmarthostSettings(
        host=cfg.smarthost_host, port=cfg.smarthost_port, starttls=cfg.smarthost_starttls,
        ca_file=cfg.smarthost_ca_file, user=cfg.smarthost_user, password=password,
        timeout=cfg.smarthost_timeout, local_hostname=cfg.hostname,
    )
