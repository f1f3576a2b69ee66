"""The smarthost client (`gateway.pgp.smarthost`) against a real SMTP server on loopback
(aiosmtpd with STARTTLS and AUTH, a throwaway certificate): it insists on STARTTLS,
authenticates, hands the job's message over, and says what failed with codes only."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nacl.utils
import pytest
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from bridge.errors import RelayRejected, RelayUnavailable
from bridge.keys import GatewayCredential, RootKey
from gateway.pgp.smarthost import SmarthostClient, SmarthostSettings, job_box, seal_job
from gateway.tls import ensure_certificate, server_context

pytestmark = pytest.mark.integration

CREDENTIAL = GatewayCredential.issue(RootKey.generate())


@dataclass
class Smarthost:
    refuse: str | None = None  # the reply to RCPT, if it is to refuse
    received: list[tuple[str, list[str], bytes, Any]] = field(default_factory=list)

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, options: list[str]) -> str:
        if self.refuse:
            return self.refuse
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content
        assert isinstance(content, bytes)
        self.received.append((str(envelope.mail_from), list(envelope.rcpt_tos), content,
                              session.auth_data))
        return "250 OK queued"


def authenticate(server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                 data: Any) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"gw", b"s3cret")
    return AuthResult(success=ok, handled=False, auth_data=data.login if ok else None)


async def serve(handler: Smarthost, cert: Path, key: Path, tls: bool) -> asyncio.Server:
    context = server_context(cert, key)

    def make() -> SMTP:
        return SMTP(handler, tls_context=context if tls else None, require_starttls=tls,
                    authenticator=authenticate, auth_require_tls=True, hostname="smarthost.test")

    return await asyncio.get_running_loop().create_server(make, "127.0.0.1", 0)


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    return ensure_certificate(tmp_path / "tls", "localhost")


async def deliver(port: int, cert: Path, **settings: Any) -> None:
    box = job_box(nacl.utils.random(32))
    client = SmarthostClient(
        SmarthostSettings(host="localhost", port=port, ca_file=cert, timeout=10, **settings),
        box,
    )
    job = seal_job(box, "alice@bubble.test", "carol@partner.example", b"Subject: ...\r\n\r\nx\r\n")
    await client.deposit(job, CREDENTIAL)


def run(handler: Smarthost, tls_files: tuple[Path, Path], tls: bool, **settings: Any) -> None:
    cert, key = tls_files

    async def go() -> None:
        server = await serve(handler, cert, key, tls)
        try:
            await deliver(server.sockets[0].getsockname()[1], cert, **settings)
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(go())


def test_it_hands_the_message_over_after_starttls_and_auth(tls_files: tuple[Path, Path]) -> None:
    handler = Smarthost()
    run(handler, tls_files, True, user="gw", password="s3cret")
    [(sender, rcpts, content, auth)] = handler.received
    assert (sender, rcpts, auth) == ("alice@bubble.test", ["carol@partner.example"], b"gw")
    assert content.endswith(b"x\r\n")


def test_it_refuses_a_smarthost_without_starttls(tls_files: tuple[Path, Path]) -> None:
    with pytest.raises(RelayUnavailable, match="offers no STARTTLS"):
        run(Smarthost(), tls_files, False)


def test_a_wrong_password_is_a_refusal_with_its_code(tls_files: tuple[Path, Path]) -> None:
    with pytest.raises(RelayRejected) as refused:
        run(Smarthost(), tls_files, True, user="gw", password="wrong")
    assert refused.value.status == 535


@pytest.mark.parametrize(("reply", "error"), [
    ("550 5.1.1 <carol@partner.example>: no such user", RelayRejected),
    ("451 4.3.0 <carol@partner.example>: try later", RelayUnavailable),
])
def test_a_refused_recipient_is_told_by_code_without_the_address(
    tls_files: tuple[Path, Path], reply: str, error: type[Exception]
) -> None:
    with pytest.raises(error) as refused:
        run(Smarthost(refuse=reply), tls_files, True)
    assert "carol" not in str(refused.value) and reply[:3] in str(refused.value)


def test_nothing_listening_is_temporary(tls_files: tuple[Path, Path]) -> None:
    async def go() -> None:
        server = await serve(Smarthost(), *tls_files, True)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        await deliver(port, tls_files[0])

    with pytest.raises(RelayUnavailable):
        asyncio.run(go())


def test_queued_jobs_wait_when_no_smarthost_is_set_up_and_a_bad_job_is_refused() -> None:
    box = job_box(nacl.utils.random(32))
    job = seal_job(box, "alice@bubble.test", "carol@partner.example", b"x")
    with pytest.raises(RelayUnavailable, match="no smarthost is set up"):
        asyncio.run(SmarthostClient(None, box).deposit(job, CREDENTIAL))
    settings = SmarthostSettings(host="127.0.0.1", port=9)
    with pytest.raises(RelayRejected, match="does not open"):
        asyncio.run(SmarthostClient(settings, job_box(nacl.utils.random(32))).deposit(
            job, CREDENTIAL))
