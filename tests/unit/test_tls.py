from __future__ import annotations

import stat
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from gateway.tls import ensure_certificate, server_context


def test_first_start_makes_a_self_signed_leaf_not_a_ca(tmp_path: Path) -> None:
    cert_path, key_path = ensure_certificate(tmp_path / "tls", "gw.example.org")
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    assert cert.issuer == cert.subject
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca is False
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_cert_sign and not usage.crl_sign
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "gw.example.org" in names.get_values_for_type(x509.DNSName)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    server_context(cert_path, key_path)  # loads as a TLS server identity


def test_existing_certificate_is_kept(tmp_path: Path) -> None:
    first = ensure_certificate(tmp_path, "a.example")
    before = first[0].read_bytes()
    assert ensure_certificate(tmp_path, "b.example") == first
    assert first[0].read_bytes() == before
