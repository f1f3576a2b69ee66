"""GnuPG (Debian's `gpg`) as a real OpenPGP peer in tests: its own throwaway home."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


def need_gpg() -> None:
    if shutil.which("gpg") is None:
        pytest.skip("needs Debian's gnupg (scripts/system-packages)")


class Gpg:
    def __init__(self, home: Path) -> None:
        need_gpg()
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.home = home

    def run(
        self, *args: str, data: bytes = b"", check: bool = True
    ) -> subprocess.CompletedProcess[bytes]:
        result = subprocess.run(
            ["gpg", "--homedir", str(self.home), "--batch", "--yes", "--pinentry-mode",
             "loopback", "--passphrase", "", "--trust-model", "always", *args],
            input=data, capture_output=True, timeout=60, check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"gpg {' '.join(args)} failed:\n{result.stderr.decode()}")
        return result

    def generate(self, address: str, algo: str = "future-default", prefs: str = "") -> str:
        """A key for `address` without passphrase ('rsa3072', 'future-default' = 25519),
        with the cipher preferences `prefs` if given; returns its fingerprint."""
        listed = ["--default-preference-list", prefs] if prefs else []
        self.run(*listed, "--quick-generate-key", f"<{address}>", algo, "default", "never")
        listing = self.run("--with-colons", "--list-keys", f"<{address}>").stdout.decode()
        fingerprint = next(line.split(":")[9] for line in listing.splitlines()
                           if line.startswith("fpr:"))
        if algo != "future-default":  # an explicit algorithm makes a signing key only
            self.run("--quick-add-key", fingerprint, algo, "encr", "never")
        return fingerprint

    def export(self, address: str, armor: bool = True) -> bytes:
        return self.run(*(["--armor"] if armor else []), "--export", f"<{address}>").stdout

    def import_key(self, data: bytes) -> None:
        self.run("--import", data=data)

    def decrypt(self, data: bytes) -> subprocess.CompletedProcess[bytes]:
        """`gpg --decrypt` with machine-readable status lines on stderr (--status-fd 2)."""
        return self.run("--status-fd", "2", "--decrypt", data=data, check=False)

    def encrypt_and_sign(self, data: bytes, recipient: str, signer: str) -> bytes:
        return self.run("--armor", "--sign", "--encrypt", "--recipient", f"<{recipient}>",
                        "--local-user", f"<{signer}>", data=data).stdout


def pgp_mime(sender: str, recipient: str, armored: bytes) -> bytes:
    """A PGP/MIME message (RFC 3156) around what `gpg --armor --encrypt` wrote, as a mail
    client with GnuPG sends it: outer Subject "...", the real one inside."""
    return (
        f"From: {sender}\r\nTo: {recipient}\r\nSubject: ...\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; '
        'boundary="b1"\r\n\r\n--b1\r\nContent-Type: application/pgp-encrypted\r\n\r\n'
        "Version: 1\r\n\r\n--b1\r\nContent-Type: application/octet-stream\r\n\r\n"
    ).encode() + armored + b"\r\n--b1--\r\n"
