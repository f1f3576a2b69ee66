"""OpenPGP keys published in the bubble directory (`sealgate pgp publish`), with real
peers: GnuPG as the correspondents outside, Postfix's smtp-sink as the legacy smarthost
of two gateways (separate processes) that never imported the published key."""

from __future__ import annotations

import asyncio
import email
import email.policy
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.keys import RootKey
from bridge.published_key import PublishedKey
from gateway.homes import AdminHome, gateway_database_url
from gateway.provision import ProvisionError, publish
from gateway.store.db import open_engine
from gateway.store.directory_cache import DirectoryCache
from tests.bubble_processes import DOMAIN, Account, Bubble, files_containing
from tests.gpg import Gpg
from tests.integration.test_directory_lifecycle import rcpt
from tests.integration.test_end_to_end import submit
from tests.integration.test_openpgp_outside import (  # noqa: F401 - `sink` is a fixture
    SmtpSink,
    dumped_message,
    message,
    pgp,
    pgp_output,
    sink,
)

pytestmark = pytest.mark.integration

CAROL, DAVE = "carol@partner.example", "dave@partner.example"


@pytest.fixture(scope="module")
def bubble(tmp_path_factory: pytest.TempPathFactory, sink: SmtpSink) -> Iterator[Bubble]:  # noqa: F811
    """alice and bob, each on a gateway of their own with the smarthost."""
    bubble = Bubble(tmp_path_factory.mktemp("dirpgp"),
                    gateway_settings=("smarthost_starttls = false",))
    try:
        bubble.init()
        for user in ("alice", "bob"):
            bubble.add_account(user, f"{user}-{secrets.token_hex(6)}", settings={
                "smarthost_port": sink.port, "directory_sync_interval": 0.5, "retry_max": 2.0,
            })
            bubble.start_gateway(user)
        yield bubble
    finally:
        bubble.kill_all()


def gpg_of(factory: pytest.TempPathFactory, bubble: Bubble, address: str) -> tuple[Gpg, Path]:
    """A correspondent outside (Curve25519) who knows alice's and bob's keys; its key file."""
    gpg = Gpg(factory.mktemp("gpg"))
    gpg.generate(address)
    keyfile = gpg.home / "public.asc"
    keyfile.write_bytes(gpg.export(address))
    for account in bubble.accounts.values():
        gpg.import_key(pgp_output("export", account.address, "--gateway", account.home).encode())
    return gpg, keyfile


def wait_for_log(bubble: Bubble, user: str, text: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in bubble.log_text(user):
        assert time.monotonic() < deadline, f"{user}'s gateway never logged {text!r}"
        time.sleep(0.2)


def opened_by(gpg: Gpg, dump: bytes) -> email.message.EmailMessage | None:
    """The inner message of a PGP/MIME dump if `gpg` decrypts it (signature good)."""
    encrypted = dumped_message(dump).get_payload()[1].get_payload(decode=True)  # type: ignore[index]
    opened = gpg.decrypt(encrypted)
    if opened.returncode != 0:
        return None
    assert "GOODSIG" in opened.stderr.decode()
    inner = email.message_from_bytes(opened.stdout, policy=email.policy.default)
    assert isinstance(inner, email.message.EmailMessage)
    return inner


def send_and_dump(sink: SmtpSink, sender: Account, canary: str) -> bytes:  # noqa: F811
    """What reached the smarthost from `sender` for CAROL with `canary` inside (encrypted)."""
    before = set(sink.files())
    assert submit(sender, message(sender, [CAROL], canary, "subject " + canary)) == {}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for path in set(sink.files()) - before:
            data = path.read_bytes()
            if f"X-Rcpt-Args: <{CAROL}>".encode() in data and sender.address.encode() in data:
                return data
        time.sleep(0.2)
    raise AssertionError(f"the smarthost never got {sender.address}'s mail for {CAROL}")


def test_a_published_key_serves_every_gateway_an_import_overrides_it_unpublish_withdraws_it(
    tmp_path_factory: pytest.TempPathFactory, bubble: Bubble, sink: SmtpSink,  # noqa: F811
) -> None:
    alice, bob = bubble.accounts["alice"], bubble.accounts["bob"]
    published, published_file = gpg_of(tmp_path_factory, bubble, CAROL)
    own, own_file = gpg_of(tmp_path_factory, bubble, CAROL)  # another key of carol's
    assert pgp_output("import", CAROL, own_file, "--gateway", bob.home).startswith("imported")

    out = pgp_output("publish", CAROL, published_file, "--bubble", bubble.admin,
                     "--relay", bubble.relay_url)
    assert out.startswith("published key ") and f"for {CAROL} (statement version 1)" in out
    fingerprint = out.split()[2]
    for user in ("alice", "bob"):
        wait_for_log(bubble, user, f"the directory publishes key {fingerprint}")
    listing = pgp_output("list", "--gateway", alice.home)
    assert f"directory {CAROL} {fingerprint}\n" in listing
    assert f"directory {CAROL} {fingerprint} (not used: imported here)" in pgp_output(
        "list", "--gateway", bob.home)

    # alice's gateway never imported a key for carol: the directory's is used.
    canary = "published-" + secrets.token_hex(6)
    dump = send_and_dump(sink, alice, canary)
    assert canary.encode() not in dump and dumped_message(dump)["Subject"] == "..."
    inner = opened_by(published, dump)
    assert inner is not None and canary in inner.get_body().get_content()  # type: ignore[union-attr]
    assert opened_by(own, dump) is None
    # bob's gateway imported a key of its own for carol: that one wins.
    canary_bob = "imported-" + secrets.token_hex(6)
    dump = send_and_dump(sink, bob, canary_bob)
    assert canary_bob.encode() not in dump
    assert opened_by(published, dump) is None
    inner = opened_by(own, dump)
    assert inner is not None and canary_bob in inner.get_body().get_content()  # type: ignore[union-attr]

    out = pgp_output("unpublish", CAROL, "--bubble", bubble.admin, "--relay", bubble.relay_url)
    assert out.startswith(f"withdrew the published key of {CAROL} (statement version 2)")
    wait_for_log(bubble, "alice", f"the directory no longer publishes key {fingerprint}")
    code, reply = rcpt(alice, CAROL)
    assert code == 550 and reply.startswith(b"5.7.1 ") and b"no OpenPGP key" in reply
    assert f"directory {CAROL}" not in pgp_output("list", "--gateway", alice.home)
    assert files_containing(bubble.state_dirs, [canary.encode(), canary_bob.encode()]) == []
    for user in ("alice", "bob"):
        log = bubble.log_text(user)
        assert CAROL not in log and "Traceback" not in log


def test_a_record_not_signed_by_the_root_is_refused_by_relays_and_ignored_by_gateways(
    tmp_path_factory: pytest.TempPathFactory, bubble: Bubble,
) -> None:
    """Someone with the directory key (any gateway of the bubble) but not the root key
    forges a key for dave: the relay will not take it, and written into a gateway's
    replica directly it is ignored and logged; dave stays refused."""
    alice = bubble.accounts["alice"]
    _, keyfile = gpg_of(tmp_path_factory, bubble, DAVE)
    admin = AdminHome.load(bubble.admin)
    forged = PublishedKey(DAVE, "00" * 20, keyfile.read_bytes(), 7).to_record(
        RootKey.generate(), admin.directory_key)
    with pytest.raises(ProvisionError, match="cannot publish"):
        asyncio.run(publish(forged, [bubble.relay_url], "a forged key"))
    engine = open_engine(gateway_database_url(alice.home))
    try:
        assert DirectoryCache(engine).put_many([forged]) == 1
    finally:
        engine.dispose()
    wait_for_log(bubble, "alice", "a published key record that is not signed by the pinned "
                 "root; ignored")
    code, reply = rcpt(alice, DAVE)
    assert code == 550 and b"no OpenPGP key" in reply
    assert f"directory {DAVE}" not in pgp_output("list", "--gateway", alice.home)


@pytest.mark.parametrize(("args", "error"), [
    (["publish", f"x@{DOMAIN}", "KEY"], "members have bubble keys"),
    (["unpublish", f"x@{DOMAIN}"], "members have bubble keys"),
    (["publish", CAROL, "PRIVATE"], "this is a private key"),
    (["publish", CAROL, "BAD"], "not an OpenPGP key"),
    (["publish", "not-an-address", "KEY"], "bad address"),
    (["publish", CAROL, "KEY", "--relay", "http://127.0.0.1:9"], "cannot publish"),
])
def test_publish_refuses_in_one_line(
    tmp_path_factory: pytest.TempPathFactory, bubble: Bubble, args: list[str], error: str,
) -> None:
    gpg, keyfile = gpg_of(tmp_path_factory, bubble, CAROL)
    private = gpg.home / "private.asc"
    private.write_bytes(gpg.run("--armor", "--export-secret-keys", f"<{CAROL}>").stdout)
    files = {"KEY": keyfile, "PRIVATE": private, "BAD": bubble.root / "alice.toml"}
    relay = [] if "--relay" in args else ["--relay", bubble.relay_url]
    code, _out, err = pgp(*[files.get(a, a) for a in args], "--bubble", bubble.admin, *relay)
    assert code == 1, err
    assert err.startswith("sealgate: error: ") and error in err
    assert err.count("\n") == 1 and "Traceback" not in err
