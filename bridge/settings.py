"""Build a frozen, typed settings dataclass from a TOML file plus command-line overrides.

Every service (relay, gateway) has one frozen dataclass; this module fills it and
turns any bad value into a one-line `SettingsError` naming the setting. It knows the
field types int, float, bool, str, Path, tuple[str, ...] and `X | None` of those, plus
`Size` and `Duration` (ints that a file or flag may also write in human units: "20GiB",
"30d", parsed by `parse_quantity`); the dataclass's own `__post_init__` checks ranges and
raises ValueError, reported the same way.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, eq=False)  # hashed by identity: Annotated metadata must hash
class Units:
    """How a quantity may be written: unit suffix -> multiplier; `example` for errors."""

    kind: str
    example: str
    factors: Mapping[str, int]


BYTE_UNITS = Units("size", "20GiB", {
    "": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
})
SECOND_UNITS = Units("duration", "30d", {
    "": 1, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400,
})
Size = Annotated[int, BYTE_UNITS]  # bytes
Duration = Annotated[int, SECOND_UNITS]  # seconds

_QUANTITY_RE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-z]*)\s*")


def parse_quantity(text: str, units: Units, name: str) -> int:
    """'20GiB' -> 21474836480, '30d' -> 2592000 (a whole number of the base unit).

    SettingsError naming the setting for anything else: no number, an unknown unit,
    a negative or fractional result.
    """
    match = _QUANTITY_RE.fullmatch(text.lower())
    factor = units.factors.get(match.group(2)) if match else None
    if match is None or factor is None:
        raise SettingsError(
            f"setting '{name}': expected a {units.kind} like {units.example}, got {text!r}"
        )
    value = Fraction(match.group(1)) * factor
    if value.denominator != 1:
        raise SettingsError(f"setting '{name}': {text!r} is not a whole number of units")
    return int(value)


class SettingsError(Exception):
    """A setting is unknown or has a bad value; the message is one line for the operator."""


def _coerce(name: str, kind: Any, value: Any) -> Any:
    if typing.get_origin(kind) in (typing.Union, types.UnionType):  # X | None: an optional X
        options = [a for a in typing.get_args(kind) if a is not type(None)]
        if len(options) == 1:
            kind = options[0]
    if typing.get_origin(kind) is Annotated:
        base, *extras = typing.get_args(kind)
        units = next((e for e in extras if isinstance(e, Units)), None)
        if units is not None and isinstance(value, str):
            return parse_quantity(value, units, name)
        kind = base
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise SettingsError(f"setting '{name}': expected true or false, got {value!r}")
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        raise SettingsError(f"setting '{name}': expected a whole number, got {value!r}")
    if kind is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise SettingsError(f"setting '{name}': expected a number, got {value!r}")
    if kind is str:
        if isinstance(value, str):
            return value
        raise SettingsError(f"setting '{name}': expected text, got {value!r}")
    if kind is Path:
        if isinstance(value, str | Path):
            return Path(value)
        raise SettingsError(f"setting '{name}': expected a path, got {value!r}")
    if typing.get_origin(kind) is tuple and typing.get_args(kind)[0] is str:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise SettingsError(f"setting '{name}': expected a list of text, got {value!r}")
    raise SettingsError(f"setting '{name}' cannot be set in a config file; use its flag")


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise SettingsError(f"cannot read config file {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise SettingsError(f"config file {path} is not valid TOML: {e}") from None


def load_settings(
    cls: type[T],
    file_values: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    source: str = "config",
) -> T:
    """Merge file values and overrides (overrides win; None means "not given")."""
    assert dataclasses.is_dataclass(cls)  # noqa: S101 - programming error only
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    values: dict[str, Any] = {}
    for key, value in (file_values or {}).items():
        name = key.replace("-", "_")
        if name not in fields:
            raise SettingsError(f"unknown setting '{key}' in {source}")
        values[name] = _coerce(name, hints[name], value)
    for name, value in (overrides or {}).items():
        if value is not None:
            values[name] = _coerce(name, hints[name], value)
    try:
        return cls(**values)
    except ValueError as e:
        raise SettingsError(str(e)) from None
    except TypeError as e:  # a required setting is missing
        raise SettingsError(f"missing setting: {e}") from None


def parse_host_port(text: str, name: str) -> tuple[str, int]:
    """'HOST:PORT' (or '[v6]:PORT') -> (host, port); SettingsError otherwise."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise SettingsError(f"setting '{name}': expected HOST:PORT, got {text!r}")
    return host, int(port)
