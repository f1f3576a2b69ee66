"""RelayConfig validation and reading a root public key from a file."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.envelope import MAX_ENVELOPE_LEN
from bridge.keys import RootKey
from bridge.relay.config import DEFAULT_MAX_ENVELOPE_BYTES, RelayConfig, load_root_public
from bridge.settings import SettingsError, load_settings


def test_defaults(tmp_path: Path) -> None:
    config = RelayConfig(home=tmp_path)
    assert (config.host, config.port, config.trusted_roots) == ("127.0.0.1", 0, ())
    assert config.max_envelope_bytes == DEFAULT_MAX_ENVELOPE_BYTES == MAX_ENVELOPE_LEN
    assert (config.max_clock_skew, config.max_list) == (300, 1000)
    assert (config.max_batch_envelopes, config.max_batch_bytes) == (100, 8 * 1024 * 1024)


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("home", "relay-home"),
        ("host", ""),
        ("port", -1),
        ("port", 65536),
        ("port", True),
        ("trusted_roots", [b"\x01" * 32]),
        ("trusted_roots", (b"\x01" * 31,)),
        ("trusted_roots", ("01" * 32,)),
        ("max_envelope_bytes", 55),
        ("max_envelope_bytes", 1.5),
        ("max_clock_skew", 0),
        ("max_list", 0),
        ("max_record_bytes", 10),
        ("max_wait", -1),
        ("max_wait", 3601),
        ("wait_recheck", 0),
        ("max_connections", 0),
        ("max_batch_envelopes", 0),
        ("max_batch_bytes", 100),
    ],
)
def test_invalid_setting_is_named(tmp_path: Path, setting: str, value: object) -> None:
    settings: dict[str, object] = {"home": tmp_path, setting: value}
    with pytest.raises(ValueError, match=f"^{setting} "):
        RelayConfig(**settings)  # type: ignore[arg-type]


def test_root_public_key_raw_or_hex(tmp_path: Path) -> None:
    root = RootKey.generate().public
    raw, text, upper = tmp_path / "raw", tmp_path / "hex", tmp_path / "HEX"
    raw.write_bytes(root)
    text.write_text(root.hex() + "\n")
    upper.write_text("  " + root.hex().upper() + "\r\n")
    assert load_root_public(raw) == load_root_public(text) == load_root_public(upper) == root


@pytest.mark.parametrize(
    "content",
    [
        b"", b"\x01" * 31, b"\x01" * 33, b"zz" * 32, b"ab" * 31, b"ab" * 33,
        ("ab" * 32).encode("utf-16"),
    ],
)
def test_anything_else_is_a_clear_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "root.pub"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="not a root public key"):
        load_root_public(path)


def test_missing_file_is_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read root public key"):
        load_root_public(tmp_path / "absent")


def test_db_takes_a_postgresql_url_from_toml_and_keeps_it_out_of_repr(tmp_path: Path) -> None:
    url = "postgresql://relay:s3cret-pw@db.internal:5433/relay"
    config = load_settings(RelayConfig, {"db": url}, {"home": tmp_path})
    assert config.db == url and "s3cret-pw" not in repr(config)
    assert RelayConfig(home=tmp_path, db="postgresql+psycopg://relay@db/relay").db
    assert RelayConfig(home=tmp_path).db is None  # SQLite + files in home
    for bad in ("mysql://relay@db/relay", "relay.db", "postgresql://has space", ""):
        with pytest.raises(SettingsError, match="db must be a postgresql:// URL"):
            load_settings(RelayConfig, {"db": bad}, {"home": tmp_path})


def test_batch_limits_from_toml(tmp_path: Path) -> None:
    config = load_settings(
        RelayConfig, {"max_batch_envelopes": 20, "max_batch_bytes": 1048576}, {"home": tmp_path}
    )
    assert (config.max_batch_envelopes, config.max_batch_bytes) == (20, 1048576)
