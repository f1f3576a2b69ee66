"""`delivery_give_up` for mail outside the bubble, with real peers: Postfix's smtp-sink as
a smarthost that refuses (5xx at RCPT, 4xx at DATA), GnuPG as the correspondent whose
key alice's gateway holds. The gateway (a `sealgate gateway serve` process) gives the
PGP/MIME job up and puts the same "undeliverable" notice in alice's INBOX as for mail
in the bubble, naming the recipient and the subject from her own sealed note; the
sink never got the message."""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path

import pytest

from tests.bubble_processes import Bubble
from tests.integration.test_delivery_give_up import undelivered_notice
from tests.integration.test_end_to_end import submit
from tests.integration.test_openpgp_outside import CAROL, SmtpSink, correspondent, message

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("refusal", [("-f", "RCPT"), ("-r", "DATA")], ids=["5xx", "4xx"])
def test_a_job_the_smarthost_refuses_past_give_up_gets_a_notice(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, refusal: tuple[str, str]
) -> None:
    sink = SmtpSink(tmp_path, *refusal)
    sink.start()
    bubble = Bubble(tmp_path / "bubble")
    try:
        bubble.init()
        alice = bubble.add_account("alice", "alice-" + secrets.token_hex(4), settings={
            "smarthost_port": sink.port, "delivery_give_up": 2.0,
            "retry_initial": 0.5, "retry_max": 0.5,
        })
        config = bubble.root / "alice.toml"
        config.write_text(config.read_text() + "smarthost_starttls = false\n")
        correspondent(tmp_path_factory, bubble, CAROL, "future-default")
        bubble.start_gateway("alice")
        canary = "refused-" + secrets.token_hex(6)
        subject = f"offer {secrets.token_hex(3)}"
        assert submit(alice, message(alice, [CAROL], canary, subject)) == {}
        body = undelivered_notice(alice)
        assert f"To:        {CAROL}" in body and f"Subject:   {subject}" in body
        assert "the smarthost that sends this gateway's mail outside the bubble" in body
        assert canary not in body
        log = bubble.log_text("alice")
        assert "given up" in log and "not deposited" in log
        assert CAROL not in log and "Traceback" not in log
        assert sink.files() == []  # refused every time: nothing was taken
    finally:
        bubble.kill_all()
        sink.stop()
        shutil.rmtree(sink.dump, ignore_errors=True)
