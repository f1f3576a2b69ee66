"""The files that make a bubble admin home and a gateway home.

    ADMIN/root.key        the bubble root's Ed25519 seed (hex, mode 0600)
    ADMIN/root.pub        its public key (hex) - what relays and gateways pin
    ADMIN/bubble.json     domain and the directory key (mode 0600)
    ADMIN/versions.json   the last directory record version signed per lookup id
                          (no address), so every record the root signs is newer

    GW/membership.json    domain, pinned root, directory key, this gateway's relay
                          credential and known relays (mode 0600)
    GW/requests/          enrolment requests waiting for the admin's signature:
                          the account's sealed seed and the gateway key (mode 0600)
    GW/gateway.db         the store (SQLite)
    GW/tls/               the self-signed certificate for SMTP and IMAP

Secrets are written with mode 0600 through a temp file, fsync and rename.
Nothing here holds mail content; account keys live sealed in the store.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import nacl.utils

from bridge.directory import DIRECTORY_KEY_LEN
from bridge.keys import GatewayCredential, RootKey

DATABASE_FILE = "gateway.db"


def gateway_database_url(home: Path) -> str:
    return f"sqlite:///{home / DATABASE_FILE}"


class HomeError(Exception):
    """A home directory is missing, already initialised, or holds unreadable files."""


def write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write a file atomically and durably with restrictive permissions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _read_json(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise HomeError(f"{path} does not exist") from None
    except (OSError, ValueError) as e:
        raise HomeError(f"cannot read {path}: {e}") from None
    if not isinstance(data, dict):
        raise HomeError(f"{path} is not a JSON object")
    return data


def _hex_field(data: dict[str, object], key: str, path: Path, length: int | None = 32) -> bytes:
    value = data.get(key)
    try:
        raw = bytes.fromhex(value) if isinstance(value, str) else None
    except ValueError:
        raw = None
    if raw is None or (length is not None and len(raw) != length):
        raise HomeError(f"{path}: field '{key}' is missing or malformed")
    return raw


def load_root_public(path: Path) -> bytes:
    """Read a root public key file: 64 hex characters (or 32 raw bytes)."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise HomeError(f"cannot read root key {path}: {e.strerror}") from None
    try:
        key = bytes.fromhex(data.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        key = data
    if len(key) != 32:
        raise HomeError(f"{path} does not hold a root public key")
    return key


@dataclass(frozen=True)
class AdminHome:
    path: Path
    domain: str
    root: RootKey
    directory_key: bytes

    @property
    def root_public_file(self) -> Path:
        return self.path / "root.pub"

    @classmethod
    def exists(cls, path: Path) -> bool:
        return (path / "bubble.json").exists()

    @classmethod
    def create(cls, path: Path, domain: str) -> AdminHome:
        if cls.exists(path):
            raise HomeError(f"{path} already holds a bubble")
        root = RootKey.generate()
        directory_key = nacl.utils.random(DIRECTORY_KEY_LEN)
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, 0o700)
        write_private(path / "root.key", root.seed.hex().encode() + b"\n")
        write_private(path / "root.pub", root.public.hex().encode() + b"\n", mode=0o644)
        body = {"domain": domain, "directory_key": directory_key.hex()}
        write_private(path / "bubble.json", json.dumps(body, indent=2).encode())
        return cls(path=path, domain=domain, root=root, directory_key=directory_key)

    @property
    def versions_file(self) -> Path:
        return self.path / "versions.json"

    def claim_version(self, lookup_id: bytes, floor: int = 0) -> int:
        """A record version above `floor` and above every version signed here before.

        Written down before it is used: a version is never handed out twice.
        """
        versions = self._versions()
        version = max(self.last_version(lookup_id), floor) + 1
        versions[lookup_id.hex()] = version
        write_private(self.versions_file, json.dumps(versions, indent=2, sort_keys=True).encode())
        return version

    def last_version(self, lookup_id: bytes) -> int:
        """The highest record version signed here for `lookup_id` (0 if none)."""
        last = self._versions().get(lookup_id.hex(), 0)
        if isinstance(last, bool) or not isinstance(last, int):
            raise HomeError(f"{self.versions_file} is malformed")
        return last

    def _versions(self) -> dict[str, object]:
        return _read_json(self.versions_file) if self.versions_file.exists() else {}

    @classmethod
    def load(cls, path: Path) -> AdminHome:
        meta = _read_json(path / "bubble.json")
        domain = meta.get("domain")
        if not isinstance(domain, str):
            raise HomeError(f"{path / 'bubble.json'}: field 'domain' is missing")
        try:
            seed = bytes.fromhex((path / "root.key").read_text("ascii").strip())
        except (OSError, ValueError):
            raise HomeError(f"cannot read {path / 'root.key'}") from None
        if len(seed) != 32:
            raise HomeError(f"{path / 'root.key'} is malformed")
        return cls(
            path=path,
            domain=domain,
            root=RootKey(seed),
            directory_key=_hex_field(meta, "directory_key", path / "bubble.json"),
        )


@dataclass(frozen=True)
class Membership:
    """What a gateway knows of its bubble; written by `sealgate account add` or `import`."""

    domain: str
    root_public: bytes
    directory_key: bytes
    credential: GatewayCredential
    relays: tuple[str, ...]

    FILE = "membership.json"

    @classmethod
    def path_in(cls, home: Path) -> Path:
        return home / cls.FILE

    @classmethod
    def load(cls, home: Path) -> Membership:
        path = cls.path_in(home)
        data = _read_json(path)
        domain, relays = data.get("domain"), data.get("relays")
        if not isinstance(domain, str):
            raise HomeError(f"{path}: field 'domain' is missing")
        if not isinstance(relays, list) or not all(isinstance(r, str) for r in relays):
            raise HomeError(f"{path}: field 'relays' is malformed")
        return cls(
            domain=domain,
            root_public=_hex_field(data, "root_public", path),
            directory_key=_hex_field(data, "directory_key", path),
            credential=GatewayCredential(
                seed=_hex_field(data, "gateway_seed", path),
                certificate=_hex_field(data, "gateway_certificate", path, 64),
            ),
            relays=tuple(relays),
        )

    @classmethod
    def join(cls, home: Path, admin: AdminHome, relays: tuple[str, ...]) -> Membership:
        """Load the gateway's membership, creating it from the admin home on first use."""
        if cls.path_in(home).exists():
            current = cls.load(home)
            if current.root_public != admin.root.public:
                raise HomeError(f"{home} belongs to another bubble")
            merged = current.relays + tuple(r for r in relays if r not in current.relays)
            updated = cls(
                current.domain,
                current.root_public,
                current.directory_key,
                current.credential,
                merged,
            )
        else:
            updated = cls(
                domain=admin.domain,
                root_public=admin.root.public,
                directory_key=admin.directory_key,
                credential=GatewayCredential.issue(admin.root),
                relays=relays,
            )
        updated.save(home)
        return updated

    def save(self, home: Path) -> None:
        home.mkdir(parents=True, exist_ok=True)
        os.chmod(home, 0o700)
        body = {
            "domain": self.domain,
            "root_public": self.root_public.hex(),
            "directory_key": self.directory_key.hex(),
            "gateway_seed": self.credential.seed.hex(),
            "gateway_certificate": self.credential.certificate.hex(),
            "relays": list(self.relays),
        }
        write_private(self.path_in(home), json.dumps(body, indent=2).encode())
