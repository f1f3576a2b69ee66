"""The load generators, run as a separate process: `python -m bench.clients < job.json`.

The servers under test run in the benchmark's own process; the clients run here so
that they never share an interpreter lock with a server. The same client code drives
Sealgate and its baseline. The job (JSON on stdin) names the kind, "smtp" or "imap";
the answer is one JSON object on stdout.

smtp  N sessions on one asyncio loop. Each connects, says EHLO, STARTTLS, EHLO, AUTH
      PLAIN, then waits until every session is authenticated. The clock starts there;
      each session then sends its messages one transaction at a time (MAIL, RCPT, DATA)
      and the clock stops at the last reply. Answer: elapsed seconds, replies 250 and
      the first other reply. With "client": "smtplib", the same sessions are N threads
      each driving its own `smtplib.SMTP` (starttls, login, sendmail), as a threaded
      application would; same answer.

imap  imaplib, one connection per server: STARTTLS, LOGIN, EXAMINE INBOX, one untimed
      round (the "cold" figures), then `reps` rounds alternating between the servers:
      header sync, then full body fetch, through imaplib; then the same two commands
      "raw", reading the answer's bytes up to the tagged OK without parsing them. The
      job's "ops" may leave out the body fetch ("header" only).
      Every answer is checked for the expected number of messages and body bytes.

qresync
      imaplib, one connection per server: STARTTLS, LOGIN, ENABLE QRESYNC, EXAMINE INBOX
      for its UIDVALIDITY and HIGHESTMODSEQ; then `reps` rounds alternating between the
      servers of `EXAMINE INBOX (QRESYNC (uidvalidity modseq))`, read raw up to the
      tagged OK: a client resyncing a mailbox that did not change. Each answer must
      hold the expected EXISTS and no VANISHED or FETCH.
"""

from __future__ import annotations

import asyncio
import base64
import imaplib
import io
import itertools
import json
import smtplib
import ssl
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import make_message

HEADER_SYNC = (
    "(UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (FROM TO SUBJECT DATE MESSAGE-ID)])"
)
BODY_FETCH = "(BODY.PEEK[])"


def client_tls(cafile: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.check_hostname = False  # the certificate is pinned by cafile
    return ctx


# -- SMTP ------------------------------------------------------------------------------


_SETUP_FAILED = "another session failed during set-up"


class SmtpFailure(Exception):
    pass


async def _reply(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    while True:
        line = await reader.readline()
        if not line:
            raise SmtpFailure("connection closed by the server")
        if not line[:3].isdigit():
            raise SmtpFailure(f"not an SMTP reply: {line[:40]!r}")
        if line[3:4] != b"-":
            return int(line[:3]), line.rstrip()


async def _command(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: bytes, expect: int
) -> None:
    writer.write(line + b"\r\n")
    code, text = await _reply(reader)
    if code != expect:
        raise SmtpFailure(f"{line.split()[0].decode()} answered {text.decode(errors='replace')}")


async def _smtp_session(
    job: dict[str, Any],
    ctx: ssl.SSLContext,
    messages: list[bytes],
    ready: asyncio.Barrier,
) -> tuple[int, str | None]:
    accepted, error = 0, None
    writer: asyncio.StreamWriter | None = None
    try:
        reader, writer = await asyncio.open_connection(job["host"], job["port"])
        code, text = await _reply(reader)
        if code != 220:
            raise SmtpFailure(f"greeting {text!r}")
        await _command(reader, writer, b"EHLO bench.client", 250)
        await _command(reader, writer, b"STARTTLS", 220)
        await writer.start_tls(ctx)
        await _command(reader, writer, b"EHLO bench.client", 250)
        token = base64.b64encode(f"\0{job['user']}\0{job['password']}".encode())
        await _command(reader, writer, b"AUTH PLAIN " + token, 235)
        await ready.wait()
        mail = f"MAIL FROM:<{job['sender']}>".encode()
        rcpt = f"RCPT TO:<{job['recipient']}>".encode()
        for message in messages:
            await _command(reader, writer, mail, 250)
            await _command(reader, writer, rcpt, 250)
            await _command(reader, writer, b"DATA", 354)
            writer.write(message)
            writer.write(b".\r\n")
            code, text = await _reply(reader)
            if code != 250:
                raise SmtpFailure(f"end of DATA answered {text.decode(errors='replace')}")
            accepted += 1
        writer.write(b"QUIT\r\n")
        await _reply(reader)
    except asyncio.BrokenBarrierError:
        error = _SETUP_FAILED
    except (SmtpFailure, OSError) as e:
        error = str(e) or type(e).__name__
        await ready.abort()  # if set-up is not over, nobody waits for this session
    finally:
        if writer is not None:
            writer.close()
    return accepted, error


def smtp_batches(job: dict[str, Any]) -> list[list[bytes]]:
    """Each session's messages."""
    per_session: int = job["per_session"]
    return [
        [
            make_message(job["size"], sender=job["sender"], recipient=job["recipient"],
                         number=s * per_session + i)
            for i in range(per_session)
        ]
        for s in range(job["sessions"])
    ]


async def run_smtp(job: dict[str, Any], batches: list[list[bytes]]) -> dict[str, Any]:
    ctx = client_tls(job["cafile"])
    sessions = len(batches)
    ready = asyncio.Barrier(sessions + 1)
    tasks = [asyncio.create_task(_smtp_session(job, ctx, b, ready)) for b in batches]
    try:
        async with asyncio.timeout(job.get("setup_timeout", 60)):
            await ready.wait()
    except asyncio.BrokenBarrierError:
        pass  # a session failed during set-up; its error is in the results
    start = time.perf_counter()
    results = await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    return _smtp_answer(elapsed, list(results))


def _smtplib_session(
    job: dict[str, Any], ctx: ssl.SSLContext, messages: list[bytes], ready: threading.Barrier,
    results: list[tuple[int, str | None]],
) -> None:
    accepted, error = 0, None
    try:
        with smtplib.SMTP(job["host"], job["port"], timeout=300) as client:
            client.starttls(context=ctx)
            client.login(job["user"], job["password"])
            ready.wait()
            for message in messages:
                client.sendmail(job["sender"], [job["recipient"]], message)
                accepted += 1
    except threading.BrokenBarrierError:
        error = _SETUP_FAILED
    except (smtplib.SMTPException, OSError) as e:
        error = str(e) or type(e).__name__
        ready.abort()
    results.append((accepted, error))


def run_smtplib(job: dict[str, Any], batches: list[list[bytes]]) -> dict[str, Any]:
    ctx = client_tls(job["cafile"])
    ready = threading.Barrier(len(batches) + 1)
    results: list[tuple[int, str | None]] = []
    threads = [
        threading.Thread(target=_smtplib_session, args=(job, ctx, b, ready, results))
        for b in batches
    ]
    for thread in threads:
        thread.start()
    try:
        ready.wait(timeout=job.get("setup_timeout", 60))
    except threading.BrokenBarrierError:
        pass  # a session failed during set-up; its error is in the results
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    return _smtp_answer(elapsed, results)


def _smtp_answer(elapsed: float, results: list[tuple[int, str | None]]) -> dict[str, Any]:
    errors = [e for _, e in results if e is not None]
    errors.sort(key=lambda e: e == _SETUP_FAILED)  # the cause first
    return {
        "elapsed": elapsed,
        "accepted": sum(n for n, _ in results),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
    }


# -- IMAP ------------------------------------------------------------------------------


def _imap_connect(server: dict[str, Any], ctx: ssl.SSLContext) -> tuple[imaplib.IMAP4, int]:
    conn = imaplib.IMAP4(server["host"], server["port"], timeout=300)
    conn.starttls(ssl_context=ctx)
    conn.login(server["user"], server["password"])
    typ, data = conn.select("INBOX", readonly=True)
    if typ != "OK" or not data or not isinstance(data[0], bytes):
        raise RuntimeError(f"{server['name']}: EXAMINE INBOX failed")
    return conn, int(data[0])


def _fetch(conn: imaplib.IMAP4, items: str) -> tuple[float, int, int]:
    """One UID FETCH 1:* ITEMS: (seconds, messages answered, literal bytes received)."""
    start = time.perf_counter()
    typ, data = conn.uid("FETCH", "1:*", items)
    elapsed = time.perf_counter() - start
    if typ != "OK":
        raise RuntimeError(f"UID FETCH answered {typ}")
    literals = [part[1] for part in data if isinstance(part, tuple)]
    return elapsed, len(literals), sum(len(x) for x in literals)


def _raw_fetch(conn: imaplib.IMAP4, tag: bytes, items: str) -> tuple[float, int, int]:
    """UID FETCH 1:* ITEMS read as bytes up to the tagged reply, with no parsing.

    Returns (seconds, FETCH responses, bytes received). The count relies on the test
    messages never containing " FETCH (" themselves.
    """
    elapsed, data = _raw_command(conn, tag, b"UID FETCH 1:* " + items.encode())
    return elapsed, data.count(b" FETCH ("), len(data)


def _raw_command(conn: imaplib.IMAP4, tag: bytes, command: bytes) -> tuple[float, bytes]:
    """Send `tag command` on imaplib's connection and read the answer's bytes up to the
    tagged OK, parsing nothing: (seconds, every byte of the answer)."""
    end = b"\r\n" + tag + b" "
    file = conn.file
    if not isinstance(file, io.BufferedReader):
        raise RuntimeError("imaplib's connection is not a buffered byte stream")
    chunks: list[bytes] = []
    tail = b""
    start = time.perf_counter()
    conn.send(tag + b" " + command + b"\r\n")
    while True:
        chunk = file.read1(1 << 20)
        if not chunk:
            raise RuntimeError("connection closed during FETCH")
        chunks.append(chunk)
        window = tail + chunk
        at = window.find(end)
        if at >= 0 and window.endswith(b"\r\n"):
            break
        tail = window[-64:]
    elapsed = time.perf_counter() - start
    data = b"".join(chunks)
    last = data[data.rindex(end) + 2 :]
    if not last.startswith(tag + b" OK"):
        raise RuntimeError(f"{command[:20]!r} answered {last[:60]!r}")
    return elapsed, data


def run_imap(job: dict[str, Any]) -> dict[str, Any]:
    ctx = client_tls(job["cafile"])
    count, total_bytes = job["messages"], job["body_bytes"]
    conns: dict[str, imaplib.IMAP4] = {}
    out: dict[str, dict[str, list[float]]] = {}
    try:
        for server in job["servers"]:
            conn, exists = _imap_connect(server, ctx)
            conns[server["name"]] = conn
            if exists != count:
                raise RuntimeError(f"{server['name']}: INBOX holds {exists}, expected {count}")
            out[server["name"]] = {
                key: [] for op in ("header", "body")
                for key in (op, "cold_" + op, "raw_" + op)
            }
        tags = (b"R%d" % n for n in itertools.count())

        commands = [(op, items) for op, items in (("header", HEADER_SYNC), ("body", BODY_FETCH))
                    if op in job.get("ops", ("header", "body"))]

        def once(name: str, prefix: str) -> None:
            conn, result = conns[name], out[name]
            for op, items in commands:
                seconds, n, size = _fetch(conn, items)
                if n != count or (op == "body" and size != total_bytes):
                    raise RuntimeError(
                        f"{name}: {op} fetch answered {n} messages, {size} literal bytes; "
                        f"expected {count}, {total_bytes}"
                    )
                result[prefix + op].append(seconds)
            if prefix:
                return
            for op, items in commands:
                seconds, n, size = _raw_fetch(conn, next(tags), items)
                if n != count or (op == "body" and size < total_bytes):
                    raise RuntimeError(f"{name}: raw {op} fetch answered {n} messages")
                result["raw_" + op].append(seconds)

        names = list(conns)
        for name in names:
            once(name, "cold_")
        for rep in range(job["reps"]):
            for name in names if rep % 2 == 0 else reversed(names):
                once(name, "")
    finally:
        for conn in conns.values():
            try:
                conn.logout()
            except (imaplib.IMAP4.error, OSError):
                pass
    return out


def _code_number(conn: imaplib.IMAP4, code: str) -> int:
    typ, data = conn.response(code)
    if typ != code or not data or not isinstance(data[0], bytes):
        raise RuntimeError(f"no {code} response code")
    return int(data[0])


def run_qresync(job: dict[str, Any]) -> dict[str, Any]:
    ctx = client_tls(job["cafile"])
    conns: dict[str, tuple[imaplib.IMAP4, bytes]] = {}
    out: dict[str, list[float]] = {}
    tags = (b"Q%d" % n for n in itertools.count())
    try:
        for server in job["servers"]:
            conn, exists = _imap_connect(server, ctx)
            if exists != job["messages"]:
                raise RuntimeError(f"{server['name']}: INBOX holds {exists}")
            conn.unselect()  # ENABLE is for the authenticated state only
            typ, _ = conn.enable("QRESYNC")
            if typ != "OK":
                raise RuntimeError(f"{server['name']}: ENABLE QRESYNC answered {typ}")
            conn.select("INBOX", readonly=True)
            validity = _code_number(conn, "UIDVALIDITY")
            modseq = _code_number(conn, "HIGHESTMODSEQ")
            command = b"EXAMINE INBOX (QRESYNC (%d %d))" % (validity, modseq)
            conns[server["name"]] = conn, command
            out[server["name"]] = []
        names = list(conns)
        for rep in range(job["reps"] + 1):  # the first round is untimed
            for name in names if rep % 2 == 0 else reversed(names):
                conn, command = conns[name]
                seconds, data = _raw_command(conn, next(tags), command)
                if b"* %d EXISTS" % job["messages"] not in data or b"VANISHED" in data or (
                    b" FETCH (" in data
                ):
                    raise RuntimeError(f"{name}: unexpected resync answer {data[:200]!r}")
                if rep:
                    out[name].append(seconds)
    finally:
        for conn, _ in conns.values():
            try:
                conn.logout()
            except (imaplib.IMAP4.error, OSError):
                pass
    return out


def main() -> int:
    job = json.load(sys.stdin)
    try:
        if job["kind"] == "smtp" and job.get("client") == "smtplib":
            result = run_smtplib(job, smtp_batches(job))
        elif job["kind"] == "smtp":
            result = asyncio.run(run_smtp(job, smtp_batches(job)))
        elif job["kind"] == "imap":
            result = run_imap(job)
        elif job["kind"] == "qresync":
            result = run_qresync(job)
        else:
            raise RuntimeError(f"unknown job kind {job['kind']!r}")
    except (RuntimeError, OSError, imaplib.IMAP4.error, TimeoutError) as e:
        json.dump({"error": f"{type(e).__name__}: {e}"}, sys.stdout)
        return 1
    json.dump(result, sys.stdout)
    return 0


async def run_client(job: dict[str, Any], timeout: float = 600) -> dict[str, Any]:
    """Run a job in a fresh client process (from the benchmark's event loop)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.clients",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate(json.dumps(job).encode())
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    try:
        answer: dict[str, Any] = json.loads(out)
    except ValueError:
        tail = err.decode(errors="replace").strip().splitlines()[-3:]
        raise RuntimeError(f"client process failed: {' | '.join(tail)}") from None
    return answer


if __name__ == "__main__":
    sys.exit(main())
