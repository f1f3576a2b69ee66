from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from bridge.settings import SettingsError, load_settings, parse_host_port, read_toml


@dataclass(frozen=True)
class Sample:
    home: Path
    count: int = 1
    ratio: float = 0.5
    enabled: bool = False
    name: str = "x"
    names: tuple[str, ...] = ()
    max_items: int = 0

    def __post_init__(self) -> None:
        if self.count < 0:
            raise ValueError("setting 'count': must not be negative")


def test_file_values_then_overrides(tmp_path: Path) -> None:
    s = load_settings(Sample, {"count": 3, "ratio": 2, "names": ["a", "b"], "enabled": True},
                      {"home": tmp_path, "count": 4, "name": None})
    assert s == Sample(home=tmp_path, count=4, ratio=2.0, enabled=True, names=("a", "b"))


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"count": "three"}, "setting 'count': expected a whole number"),
        ({"count": True}, "setting 'count': expected a whole number"),
        ({"ratio": "fast"}, "setting 'ratio': expected a number"),
        ({"enabled": "yes"}, "setting 'enabled': expected true or false"),
        ({"names": [1, 2]}, "setting 'names': expected a list of text"),
        ({"name": 5}, "setting 'name': expected text"),
        ({"colour": "red"}, "unknown setting 'colour' in test.toml"),
        ({"count": -1}, "setting 'count': must not be negative"),
    ],
)
def test_bad_values_are_one_line_errors(
    tmp_path: Path, values: dict[str, object], message: str
) -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(Sample, values, {"home": tmp_path}, source="test.toml")
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_dashes_in_file_keys_are_accepted(tmp_path: Path) -> None:
    assert load_settings(Sample, {"max-items": 2}, {"home": tmp_path}).max_items == 2


def test_read_toml_errors(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="cannot read config file"):
        read_toml(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("a = [\n")
    with pytest.raises(SettingsError, match="is not valid TOML"):
        read_toml(bad)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:25", ("127.0.0.1", 25)), ("[::1]:0", ("::1", 0)), ("host:65535", ("host", 65535))],
)
def test_host_port(text: str, expected: tuple[str, int]) -> None:
    assert parse_host_port(text, "listen") == expected


@pytest.mark.parametrize("text", ["127.0.0.1", ":25", "h:x", "h:65536", "h:-1"])
def test_bad_host_port(text: str) -> None:
    with pytest.raises(SettingsError, match="setting 'listen'"):
        parse_host_port(text, "listen")
