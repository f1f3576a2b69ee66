"""Request signing and the relay's authorization checks, bytes in, verdict out."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import nacl.signing
import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict

from bridge.errors import BridgeError
from bridge.keys import AccountKeys, GatewayCredential, RootKey
from bridge.relay.auth import (
    HEADER_CREDENTIAL,
    HEADER_KEY,
    HEADER_SIGNATURE,
    HEADER_TIME,
    RequestAuthError,
    RequestError,
    check_gateway_credential,
    check_mailbox_owner,
    read_signed_headers,
    sign_deposit,
    sign_request,
    signing_input,
    verify_request,
)

NOW = 1_700_000_000
PATH = "/v1/mailboxes/" + "ab" * 32 + "/envelopes"
KEY = nacl.signing.SigningKey(bytes(range(32)))


def signed(
    method: str = "GET", path: str = PATH, body: bytes = b"", now: int = NOW
) -> dict[str, str]:
    return sign_request(KEY, method, path, body, now)


def test_signature_covers_the_documented_bytes() -> None:
    body = b"envelope bytes"
    headers = signed("POST", "/v1/envelopes", body)
    expected = (
        b"sealgate-request-v1\nPOST\n/v1/envelopes\n1700000000\n"
        + hashlib.sha256(body).hexdigest().encode()
    )
    assert signing_input("POST", "/v1/envelopes", NOW, body) == expected
    # Checked with nacl directly, independent of verify_request.
    KEY.verify_key.verify(expected, base64.b64decode(headers[HEADER_SIGNATURE]))
    assert base64.b64decode(headers[HEADER_KEY]) == bytes(KEY.verify_key)
    assert headers[HEADER_TIME] == "1700000000"


VECTORS = json.loads(
    (Path(__file__).parents[1] / "data" / "relay_request_v1.json").read_text()
)["vectors"]


@pytest.mark.parametrize("vector", VECTORS, ids=[v["comment"] for v in VECTORS])
def test_known_answer_vectors(vector: dict[str, Any]) -> None:
    body = bytes.fromhex(vector["body"])
    spelled_out = "\n".join([
        "sealgate-request-v1", vector["method"], vector["path"], str(vector["time"]),
        hashlib.sha256(body).hexdigest(),
    ])
    assert vector["signing_input"] == spelled_out
    key = nacl.signing.SigningKey(bytes.fromhex(vector["seed"]))
    method, path, now = vector["method"], vector["path"], vector["time"]
    if "root_seed" in vector:
        root = RootKey(bytes.fromhex(vector["root_seed"]))
        assert root.public.hex() == vector["root_public"]
        credential = GatewayCredential(key.encode(), root.certify_gateway(bytes(key.verify_key)))
        assert sign_deposit(credential, path, body, now) == vector["headers"]
        roots = (root.public,)
        assert check_gateway_credential(vector["headers"], credential.verify_key, roots)
    else:
        assert sign_request(key, method, path, body, now) == vector["headers"]
    assert verify_request(vector["headers"], method, path, body, now, 300) == bytes(key.verify_key)


def test_round_trip_returns_the_signing_key() -> None:
    body = b"\x00" * 100
    headers = signed("DELETE", PATH + "/" + "cd" * 16, body)
    key = verify_request(headers, "DELETE", PATH + "/" + "cd" * 16, body, NOW + 10, 300)
    assert key == bytes(KEY.verify_key)


def test_header_names_are_case_insensitive() -> None:
    headers = {name.lower(): value for name, value in signed().items()}
    assert verify_request(headers, "GET", PATH, b"", NOW, 300) == bytes(KEY.verify_key)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [("DELETE", PATH, b""), ("GET", PATH + "?x=1", b""), ("GET", PATH, b"x"),
     ("GET", PATH.replace("ab", "ac", 1), b"")],
)
def test_any_change_to_the_request_breaks_the_signature(
    method: str, path: str, body: bytes
) -> None:
    with pytest.raises(RequestAuthError) as caught:
        verify_request(signed(), method, path, body, NOW, 300)
    assert (caught.value.status, caught.value.reason) == (401, "bad request signature")


def test_changed_time_header_or_key_breaks_the_signature() -> None:
    moved = signed() | {HEADER_TIME: str(NOW + 1)}
    other_key = nacl.signing.SigningKey.generate()
    swapped = signed() | {HEADER_KEY: base64.b64encode(bytes(other_key.verify_key)).decode()}
    for headers in (moved, swapped):
        with pytest.raises(RequestAuthError, match="bad request signature"):
            verify_request(headers, "GET", PATH, b"", NOW, 300)


def test_flipped_signature_bit_is_rejected() -> None:
    headers = signed()
    raw = bytearray(base64.b64decode(headers[HEADER_SIGNATURE]))
    raw[10] ^= 1
    headers[HEADER_SIGNATURE] = base64.b64encode(bytes(raw)).decode()
    with pytest.raises(RequestAuthError, match="bad request signature"):
        verify_request(headers, "GET", PATH, b"", NOW, 300)


@pytest.mark.parametrize("offset", [-301, 301, -10_000])
def test_request_outside_the_skew_is_stale(offset: int) -> None:
    with pytest.raises(RequestAuthError, match="clock skew") as caught:
        verify_request(signed(), "GET", PATH, b"", NOW + offset, 300)
    assert caught.value.status == 401


@pytest.mark.parametrize("offset", [-300, 300, 0])
def test_request_at_the_skew_limit_passes(offset: int) -> None:
    assert verify_request(signed(), "GET", PATH, b"", NOW + offset, 300)


@pytest.mark.parametrize("missing", [HEADER_KEY, HEADER_TIME, HEADER_SIGNATURE])
def test_missing_header_is_named(missing: str) -> None:
    headers = signed()
    del headers[missing]
    with pytest.raises(RequestAuthError, match=f"missing {missing}"):
        verify_request(headers, "GET", PATH, b"", NOW, 300)


@pytest.mark.parametrize("value", ["", "12a", "-5", "+5", " 5", "0123", "1" * 13, "١٢٣", "1.0"])
def test_malformed_time_is_rejected(value: str) -> None:
    with pytest.raises(RequestAuthError, match=f"malformed {HEADER_TIME}"):
        read_signed_headers(signed() | {HEADER_TIME: value})


def _unpadded(text: str) -> str:
    return text.rstrip("=")


@pytest.mark.parametrize(
    ("name", "mangle"),
    [
        (HEADER_KEY, _unpadded),  # 32 bytes -> base64 ends with "="
        (HEADER_KEY, lambda v: v[:-2] + "B="),  # non-canonical trailing bits
        (HEADER_KEY, lambda v: "!" + v[1:]),
        (HEADER_KEY, lambda v: base64.b64encode(b"short").decode()),
        (HEADER_KEY, lambda v: v.replace("A", "é")),
        (HEADER_KEY, lambda v: v.replace("+", "-").replace("/", "_") + "-_"),
        (HEADER_SIGNATURE, _unpadded),
        (HEADER_SIGNATURE, lambda v: base64.b64encode(b"x" * 63).decode()),
        (HEADER_SIGNATURE, lambda v: " " + v),
    ],
)
def test_malformed_base64_is_rejected(name: str, mangle: object) -> None:
    headers = signed()
    assert callable(mangle)
    headers[name] = mangle(headers[name])
    with pytest.raises(RequestAuthError, match=f"malformed {name}"):
        verify_request(headers, "GET", PATH, b"", NOW, 300)


def test_duplicate_header_is_rejected() -> None:
    headers: CIMultiDict[str] = CIMultiDict(signed())
    headers.add(HEADER_SIGNATURE.lower(), signed(now=NOW + 1)[HEADER_SIGNATURE])
    with pytest.raises(RequestAuthError, match=f"duplicate {HEADER_SIGNATURE}"):
        verify_request(headers, "GET", PATH, b"", NOW, 300)


@pytest.mark.parametrize("path", ["/v1/\u00e9", "/v1/a b", "/v1/a\nb", "v1/health"])
def test_request_targets_that_cannot_be_signed(path: str) -> None:
    with pytest.raises(ValueError, match="request target"):
        sign_request(KEY, "GET", path, b"", NOW)
    headers = signed()
    with pytest.raises(RequestAuthError, match="cannot be signed"):
        verify_request(headers, "GET", path, b"", NOW, 300)


def test_errors_carry_status_and_belong_to_the_bridge_root() -> None:
    error = RequestAuthError("nope", 403)
    assert isinstance(error, RequestError) and isinstance(error, BridgeError)
    assert (error.status, error.reason, error.to_json()) == (403, "nope", {"error": "nope"})
    assert RequestAuthError("who").status == 401


# gateway credentials


def test_certified_gateway_is_accepted() -> None:
    root = RootKey.generate()
    other_root = RootKey.generate()
    credential = GatewayCredential.issue(root)
    headers = sign_deposit(credential, "/v1/envelopes", b"body", NOW)
    key = verify_request(headers, "POST", "/v1/envelopes", b"body", NOW, 300)
    assert key == credential.verify_key
    trusted = (other_root.public, root.public)
    assert check_gateway_credential(headers, key, trusted) == root.public


def test_gateway_from_an_untrusted_root_is_forbidden() -> None:
    credential = GatewayCredential.issue(RootKey.generate())
    headers = sign_deposit(credential, "/v1/envelopes", b"", NOW)
    with pytest.raises(RequestAuthError) as caught:
        check_gateway_credential(headers, credential.verify_key, (RootKey.generate().public,))
    assert caught.value.status == 403


def test_revoked_gateway_is_forbidden() -> None:
    root = RootKey.generate()
    revoked, kept = GatewayCredential.issue(root), GatewayCredential.issue(root)
    headers = sign_deposit(revoked, "/v1/envelopes", b"", NOW)
    with pytest.raises(RequestAuthError) as caught:
        check_gateway_credential(headers, revoked.verify_key, (root.public,),
                                 frozenset({revoked.verify_key}))
    assert (caught.value.status, caught.value.reason) == (403, "gateway credential is revoked")
    headers = sign_deposit(kept, "/v1/envelopes", b"", NOW)
    revoked_set = frozenset({revoked.verify_key})
    assert check_gateway_credential(headers, kept.verify_key, (root.public,), revoked_set)


def test_certificate_of_another_gateway_is_forbidden() -> None:
    root = RootKey.generate()
    mine, theirs = GatewayCredential.issue(root), GatewayCredential.issue(root)
    headers = sign_request(mine.signing_key, "POST", "/v1/envelopes", b"", NOW)
    headers[HEADER_CREDENTIAL] = base64.b64encode(theirs.certificate).decode()
    with pytest.raises(RequestAuthError) as caught:
        check_gateway_credential(headers, mine.verify_key, (root.public,))
    assert caught.value.status == 403


def test_missing_or_malformed_credential_is_unauthenticated() -> None:
    root = RootKey.generate()
    credential = GatewayCredential.issue(root)
    headers = sign_request(credential.signing_key, "POST", "/v1/envelopes", b"", NOW)
    with pytest.raises(RequestAuthError, match=f"missing {HEADER_CREDENTIAL}") as caught:
        check_gateway_credential(headers, credential.verify_key, (root.public,))
    assert caught.value.status == 401
    headers[HEADER_CREDENTIAL] = "not base64!"
    with pytest.raises(RequestAuthError, match=f"malformed {HEADER_CREDENTIAL}"):
        check_gateway_credential(headers, credential.verify_key, (root.public,))


def test_no_trusted_roots_means_no_gateway_is_certified() -> None:
    credential = GatewayCredential.issue(RootKey.generate())
    headers = sign_deposit(credential, "/v1/envelopes", b"", NOW)
    with pytest.raises(RequestAuthError):
        check_gateway_credential(headers, credential.verify_key, ())


# mailbox ownership


def test_mailbox_key_owns_only_its_mailbox() -> None:
    alice, bob = AccountKeys.generate(), AccountKeys.generate()
    check_mailbox_owner(alice.public.mailbox_key, alice.public.mailbox_id)
    for key in (bob.public.mailbox_key, alice.public.signing_key):
        with pytest.raises(RequestAuthError) as caught:
            check_mailbox_owner(key, alice.public.mailbox_id)
        assert caught.value.status == 403


# whatever arrives, the verdict is a key or a RequestAuthError


_header_names = st.sampled_from(
    [HEADER_KEY, HEADER_TIME, HEADER_SIGNATURE, HEADER_KEY.upper(), "Other"]
)


@given(
    headers=st.dictionaries(_header_names, st.text(max_size=100), max_size=5),
    method=st.text(max_size=10),
    path=st.text(max_size=30),
    body=st.binary(max_size=50),
)
def test_arbitrary_input_verifies_or_raises_request_auth_error(
    headers: dict[str, str], method: str, path: str, body: bytes
) -> None:
    try:
        verify_request(headers, method, path, body, NOW, 300)
    except RequestAuthError as error:
        assert error.status == 401


@given(
    mangled=st.binary(min_size=1, max_size=96).map(lambda b: base64.b64encode(b).decode()),
    which=st.sampled_from([HEADER_KEY, HEADER_SIGNATURE]),
)
def test_valid_base64_of_other_bytes_never_verifies(mangled: str, which: str) -> None:
    headers = signed()
    if headers[which] == mangled:
        return
    headers[which] = mangled
    with pytest.raises(RequestAuthError):
        verify_request(headers, "GET", PATH, b"", NOW, 300)
