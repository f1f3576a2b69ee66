"""OpenPGP across the border, with real peers: Postfix's smtp-sink as the legacy smarthost
(it dumps what it receives to files), GnuPG as the correspondents outside (one Curve25519
key, one RSA key), a real Postfix as the MX in front of alice's `--inbound` listener,
and imaplib reading alice's mailbox. Gateways run as separate processes."""

from __future__ import annotations

import contextlib
import email
import email.policy
import io
import os
import secrets
import shutil
import smtplib
import subprocess
import tempfile
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from gateway.cli import main
from tests.bubble_processes import (
    DOMAIN,
    Account,
    Bubble,
    files_containing,
    free_port,
    wait_for_port,
)
from tests.gpg import Gpg, pgp_mime
from tests.integration.test_end_to_end import imap_login, submit, wait_for_messages
from tests.integration.test_inbound import Postfix, postfix_mx  # noqa: F401 - a fixture
from tests.integration.test_submission_extras import folder

pytestmark = pytest.mark.integration

CAROL, DAVE = "carol@partner.example", "dave@rsa.example"
PLAIN = "erin@plain.example"  # a domain allow_plaintext_to lists
NOKEY = "frank@nokey.example"


class SmtpSink:
    """Postfix's smtp-sink on a loopback port, dumping each message into `dump`, with
    smtp-sink's `options` (such as refusals)."""

    def __init__(self, root: Path, *options: str) -> None:
        if shutil.which("smtp-sink") is None and not Path("/usr/sbin/smtp-sink").exists():
            pytest.skip("needs Debian's postfix for smtp-sink (scripts/system-packages)")
        self.dump = Path(tempfile.mkdtemp(prefix="sealgate-sink-", dir="/tmp"))
        os.chmod(self.dump, 0o777)  # noqa: S103 - smtp-sink writes as user postfix
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = root / "smtp-sink.log"
        self.options = options  # e.g. ("-f", "RCPT"): refuse RCPT with 5xx

    def start(self) -> None:
        user = ["-u", "postfix"] if os.geteuid() == 0 else []
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                ["/usr/sbin/smtp-sink", *user, *self.options, "-d", f"{self.dump}/%M.",
                 f"127.0.0.1:{self.port}", "10"], stdout=out, stderr=subprocess.STDOUT,
            )
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None

    def files(self) -> list[Path]:
        return sorted(self.dump.iterdir())

    def wait_for(self, recipient: str, timeout: float = 30.0) -> bytes:
        """The dump of the (one) message whose RCPT was `recipient`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for path in self.files():
                data = path.read_bytes()
                if f"X-Rcpt-Args: <{recipient}>".encode() in data:
                    return data
            time.sleep(0.2)
        raise AssertionError(f"the smarthost never got mail for {recipient}")


def dumped_message(dump: bytes) -> email.message.EmailMessage:
    """The message of an smtp-sink dump, without the lines smtp-sink adds on top."""
    lines = dump.split(b"\n")
    while lines and lines[0].startswith((b"X-Client-", b"X-Helo-", b"X-Mail-", b"X-Rcpt-")):
        lines.pop(0)
    message = email.message_from_bytes(b"\n".join(lines), policy=email.policy.default)
    assert isinstance(message, email.message.EmailMessage)
    return message


@pytest.fixture(scope="module")
def sink(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmtpSink]:
    sink = SmtpSink(tmp_path_factory.mktemp("sink"))
    sink.start()
    try:
        yield sink
    finally:
        sink.stop()
        shutil.rmtree(sink.dump, ignore_errors=True)


@pytest.fixture(scope="module")
def inbound_bubble(tmp_path_factory: pytest.TempPathFactory, sink: SmtpSink) -> Iterator[Bubble]:
    """alice's gateway: the smarthost, an inbound listener (last of its ports, as
    test_inbound's `postfix_mx` expects) and allow_plaintext_to = plain.example."""
    bubble = Bubble(tmp_path_factory.mktemp("pgp"))
    try:
        bubble.init()
        port = free_port()
        bubble.add_account("alice", "alice-" + secrets.token_hex(6), settings={
            "inbound_port": port, "smarthost_port": sink.port, "retry_max": 2.0,
        })
        bubble.services["alice"].ports.append(port)
        config = bubble.root / "alice.toml"
        config.write_text(config.read_text() + 'smarthost_starttls = false\n'
                          'allow_plaintext_to = ["plain.example"]\n')
        bubble.add_account("bob", "bob-" + secrets.token_hex(6))
        bubble.start_gateway("alice", "bob")
        yield bubble
    finally:
        bubble.kill_all()


@pytest.fixture(scope="module")
def carol(tmp_path_factory: pytest.TempPathFactory, inbound_bubble: Bubble) -> Gpg:
    """A correspondent outside with a Curve25519 key; alice's gateway holds it."""
    return correspondent(tmp_path_factory, inbound_bubble, CAROL, "future-default")


@pytest.fixture(scope="module")
def dave(tmp_path_factory: pytest.TempPathFactory, inbound_bubble: Bubble) -> Gpg:
    """A correspondent outside with an RSA key."""
    return correspondent(tmp_path_factory, inbound_bubble, DAVE, "rsa3072")


def pgp(*args: str | Path) -> tuple[int, str, str]:
    """`sealgate pgp ...` run in this process (the `main` the command runs, to spare
    an interpreter start): exit status, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["pgp", *map(str, args)])
    return code, out.getvalue(), err.getvalue()


def pgp_output(*args: str | Path) -> str:
    code, out, err = pgp(*args)
    assert code == 0, err
    return out


def correspondent(
    factory: pytest.TempPathFactory, bubble: Bubble, address: str, algo: str
) -> Gpg:
    gpg = Gpg(factory.mktemp("gpg"))
    gpg.generate(address, algo)
    keyfile = gpg.home / "public.asc"
    keyfile.write_bytes(gpg.export(address))
    alice = bubble.accounts["alice"]
    out = pgp_output("import", address, keyfile, "--gateway", alice.home)
    assert out.startswith("imported key ") and address in out
    exported = pgp_output("export", alice.address, "--gateway", alice.home)
    assert exported.startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----")
    gpg.import_key(exported.encode())
    return gpg


def alice_fingerprint(bubble: Bubble) -> str:
    alice = bubble.accounts["alice"]
    listing = pgp_output("list", "--gateway", alice.home)
    line = next(x for x in listing.splitlines() if x.startswith(f"account {alice.address} "))
    return line.split()[-1]


def message(sender: Account, to: list[str], canary: str, subject: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender.address
    msg["To"] = ", ".join(to)
    msg["Subject"] = subject
    msg["Message-ID"] = email.utils.make_msgid(domain="alice-laptop.corp.example")
    msg["X-Mailer"] = "Canary Mail 1.0"
    msg.set_content(f"Hello,\n\nthe code word is {canary}.\n")
    return msg


def test_mail_outside_reaches_the_smarthost_as_pgp_mime_that_gpg_opens(
    inbound_bubble: Bubble, sink: SmtpSink, carol: Gpg, dave: Gpg
) -> None:
    alice, bob = inbound_bubble.accounts["alice"], inbound_bubble.accounts["bob"]
    canary = "outside-" + secrets.token_hex(6)
    subject = "merger " + secrets.token_hex(3)
    sent = message(alice, [CAROL, DAVE, bob.address], canary, subject)
    assert submit(alice, sent) == {}
    fingerprint = alice_fingerprint(inbound_bubble)
    for gpg, address in ((carol, CAROL), (dave, DAVE)):
        dump = sink.wait_for(address)
        assert canary.encode() not in dump and subject.encode() not in dump
        outer = dumped_message(dump)
        assert outer["Subject"] == "..."
        assert outer.get_content_type() == "multipart/encrypted"
        assert outer["X-Mailer"] is None and b"alice-laptop" not in dump
        assert f"addr={alice.address}" in outer["Autocrypt"]
        encrypted = outer.get_payload()[1].get_payload(decode=True)  # type: ignore[index]
        opened = gpg.decrypt(encrypted)
        status = opened.stderr.decode()
        assert opened.returncode == 0, status
        assert f"[GNUPG:] VALIDSIG {fingerprint}" in status and "GOODSIG" in status
        inner = email.message_from_bytes(opened.stdout, policy=email.policy.default)
        assert inner["Subject"] == subject
        assert canary in inner.get_body().get_content()  # type: ignore[union-attr]
    assert len(wait_for_messages(bob, token=canary)) == 1  # the bubble copy, as ever
    (copy,) = [m for m in folder(alice, "Sent") if canary.encode() in m]  # alice's, in clear
    kept = email.message_from_bytes(copy, policy=email.policy.default)
    assert kept["Subject"] == subject and CAROL in kept["To"] and DAVE in kept["To"]
    assert files_containing(inbound_bubble.state_dirs, [canary.encode(), subject.encode()]) == []
    log = inbound_bubble.log_text("alice")
    assert CAROL not in log and DAVE not in log and "Traceback" not in log


def test_a_recipient_outside_without_a_key_is_refused_with_a_sentence(
    inbound_bubble: Bubble,
) -> None:
    alice = inbound_bubble.accounts["alice"]
    with smtplib.SMTP("127.0.0.1", alice.smtp_port, timeout=30) as smtp:
        smtp.starttls(context=alice.tls_context())
        smtp.login(alice.address, alice.password)
        smtp.mail(alice.address)
        code, reply = smtp.rcpt(NOKEY)
    assert code == 550 and reply.startswith(b"5.7.1 ")
    text = reply.decode()
    assert NOKEY in text and "no OpenPGP key" in text and "sealgate pgp import" in text


def test_plaintext_goes_only_to_allowed_domains_and_says_so(
    inbound_bubble: Bubble, sink: SmtpSink
) -> None:
    alice = inbound_bubble.accounts["alice"]
    canary = "plain-" + secrets.token_hex(6)
    assert submit(alice, message(alice, [PLAIN], canary, "in clear, as allowed")) == {}
    got = dumped_message(sink.wait_for(PLAIN))
    assert got["Sealgate-Warning"].startswith("this message left the bubble without encryption")
    assert canary in got.get_body().get_content()  # type: ignore[union-attr]
    assert files_containing(inbound_bubble.state_dirs, [canary.encode()]) == []
    log = inbound_bubble.log_text("alice")
    assert "queued for the smarthost in clear" in log and PLAIN not in log


def test_smarthost_down_the_mail_waits_in_the_outbox_then_goes(
    inbound_bubble: Bubble, sink: SmtpSink, carol: Gpg
) -> None:
    alice = inbound_bubble.accounts["alice"]
    canary = "later-" + secrets.token_hex(6)
    sink.stop()
    try:
        assert submit(alice, message(alice, [CAROL], canary, "while it was down")) == {}
        time.sleep(1.5)  # at least one failed attempt (retry_max = 2 s)
        assert "not deposited" in inbound_bubble.log_text("alice")
    finally:
        sink.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = [p for p in sink.files() if CAROL.encode() in p.read_bytes()]
        opened = [carol.decrypt(dumped_message(p.read_bytes()).get_payload()[1]  # type: ignore[index]
                                .get_payload(decode=True)).stdout for p in found]
        if any(canary.encode() in o for o in opened):
            break
        time.sleep(0.3)
    else:
        raise AssertionError("the queued message never reached the smarthost")


def test_gpg_mail_through_the_mx_is_read_decrypted_over_imap(
    inbound_bubble: Bubble, postfix_mx: Postfix, carol: Gpg  # noqa: F811
) -> None:
    """carol (gpg) -> Postfix (the MX) -> alice's --inbound -> alice's IMAP, decrypted."""
    alice = inbound_bubble.accounts["alice"]
    canary = "reply-" + secrets.token_hex(6)
    inner = ('Content-Type: text/plain; charset=utf-8; protected-headers="v1"\r\n'
             f"Subject: re: merger\r\nFrom: {CAROL}\r\nTo: {alice.address}\r\n\r\n"
             f"the answer is {canary}\r\n").encode()
    armored = carol.encrypt_and_sign(inner, alice.address, CAROL)
    mime = pgp_mime(CAROL, alice.address, armored)
    with smtplib.SMTP("127.0.0.1", postfix_mx.port, timeout=30) as smtp:
        assert smtp.sendmail(CAROL, [alice.address], mime) == {}
    postfix_mx.wait_for_log("status=sent (250 2.0.0 Sealed for 1 recipient(s)")
    mails = wait_for_messages(alice, token=canary, timeout=30)
    assert len(mails) == 1
    got = email.message_from_bytes(mails[0], policy=email.policy.default)
    assert got["Subject"] == "re: merger"
    assert got["Sealgate-Origin"].startswith("external;")
    assert "signature good" in got["Sealgate-OpenPGP"]
    assert got.get_content_type() == "text/plain"
    assert files_containing(inbound_bubble.state_dirs, [canary.encode()]) == []


@pytest.mark.parametrize(("args", "error"), [
    (["import", f"x@{DOMAIN}", "KEY"], "is in the bubble"),
    (["import", CAROL, "BAD"], "not an OpenPGP key"),
    (["import", CAROL, "MISSING"], "cannot read"),
    (["export", f"nobody@{DOMAIN}"], "is not an account of this gateway"),
    (["remove", "nobody@partner.example"], "no correspondent key"),
])
def test_pgp_commands_fail_in_one_line(
    inbound_bubble: Bubble, carol: Gpg, args: list[str], error: str
) -> None:
    alice = inbound_bubble.accounts["alice"]
    files = {"KEY": carol.home / "public.asc", "BAD": inbound_bubble.root / "alice.toml",
             "MISSING": inbound_bubble.root / "missing.asc"}
    code, _out, err = pgp(*[files.get(a, a) for a in args], "--gateway", alice.home)
    assert code == 1
    assert err.startswith("sealgate: error: ") and error in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_an_account_enrolled_in_two_steps_gets_its_key_at_first_login(
    inbound_bubble: Bubble,
) -> None:
    password = "gina-" + secrets.token_hex(6)
    gina = inbound_bubble.enrol_two_step("gina", password)
    code, _out, err = pgp("export", gina.address, "--gateway", gina.home)
    assert code == 1 and "has no OpenPGP key yet" in err and "sealgate pgp keygen" in err
    wrong = inbound_bubble.password_file("gina", "not-" + password)
    code, _out, err = pgp("keygen", gina.address, "--gateway", gina.home,
                          "--password-file", wrong)
    assert code == 1 and "wrong password" in err
    wrong.unlink()
    inbound_bubble.start_gateway("gina")
    imap_login(gina).logout()  # unlocks gina's keys: her OpenPGP key is made now
    deadline = time.monotonic() + 20
    while "(no key yet" in (listing := pgp_output("list", "--gateway", gina.home)):
        assert time.monotonic() < deadline, listing
        time.sleep(0.2)
    fingerprint = next(x for x in listing.splitlines() if x.startswith("account ")).split()[-1]
    right = inbound_bubble.password_file("gina", password)
    out = pgp_output("keygen", gina.address, "--gateway", gina.home, "--password-file", right)
    right.unlink()
    assert out.strip() == f"{gina.address} already had OpenPGP key {fingerprint}"
    assert pgp_output("export", gina.address, "--gateway", gina.home).startswith(
        "-----BEGIN PGP PUBLIC KEY BLOCK-----")
