"""One gateway process: SMTP submission (STARTTLS, and implicit TLS when `smtps_port` is
set), the inbound listener for the MX (when `inbound_port` is set), IMAP (STARTTLS, and
implicit TLS when `imaps_port` is set) and fetch on one asyncio loop; delivery to relays
in a process of its own (`gateway.delivery_process`).

This module wires the parts together and owns their lifetimes; it holds no policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bridge.external import InboundIdentity
from bridge.relay.client import RelayClient
from bridge.sanitize import SanitizePolicy
from gateway.config import GatewayConfig
from gateway.delivery_process import DeliveryProcess
from gateway.fetcher import Fetcher
from gateway.homes import Membership, gateway_database_url
from gateway.imap.backend import MailSession
from gateway.imap.server import ImapServer
from gateway.keyring import KeyRing
from gateway.login_gate import KdfPool, LoginGate
from gateway.login_limiter import LimiterSettings, LoginLimiter
from gateway.memory import return_large_buffers
from gateway.migrate.filing import ImportFiler
from gateway.pgp.directory import DirectoryKeys
from gateway.pgp.inbound import InboundDecryption
from gateway.pgp.keyring import AccountKeyJob, OpenPgpKeys
from gateway.pgp.outbound import OutsideMail
from gateway.pgp.outside import OutsidePolicy
from gateway.pgp.smarthost import job_box
from gateway.pgp.wiring import smarthost_settings
from gateway.recipients import Recipients
from gateway.smtp.capacity import CappedInboundSMTP, CappedSubmissionSMTP, ConnectionCap
from gateway.smtp.handler import SubmissionHandler
from gateway.smtp.inbound import InboundHandler
from gateway.smtp.queueing import OutboxWriter
from gateway.smtp.rate import SubmissionRate
from gateway.smtp.sent import SentCopies
from gateway.store.accounts import AccountStore
from gateway.store.db import open_engine
from gateway.store.directory_cache import DirectoryCache
from gateway.store.imports import ImportStore
from gateway.store.mailbox import MailboxStore, StoreAuthenticator
from gateway.store.openpgp import OpenPgpStore
from gateway.store.outbox import Outbox
from gateway.store.sent import SentLog
from gateway.tls import ensure_certificate, server_context
from gateway.undelivered import UndeliveredChecker
from gateway.worker import PeriodicJob

log = logging.getLogger(__name__)

# How long a gateway start waits for its first directory sync.
STARTUP_SYNC_SECONDS = 5.0


@dataclass
class Gateway:
    config: GatewayConfig
    smtp_port: int = 0
    imap_port: int = 0
    smtps_port: int | None = None
    imaps_port: int | None = None
    inbound_port: int | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _servers: list[asyncio.base_events.Server] = field(default_factory=list)
    _imap: ImapServer | None = None
    _clients: dict[str, RelayClient] = field(default_factory=dict)
    _delivery: DeliveryProcess | None = None
    gate: LoginGate | None = None

    def client_for(self, url: str) -> RelayClient:
        if url not in self._clients:
            self._clients[url] = RelayClient(
                url, timeout=self.config.relay_timeout, ca_file=self.config.relay_ca_file,
                max_waiting=self.config.push_connections,
            )
        return self._clients[url]

    async def start(self) -> None:
        cfg = self.config
        return_large_buffers()
        membership = Membership.load(cfg.home)
        engine = open_engine(gateway_database_url(cfg.home))
        accounts = AccountStore(engine)
        keyring = KeyRing(accounts)
        mailboxes = MailboxStore(engine, max_message_bytes=cfg.max_message_bytes)
        outbox = Outbox(engine)
        discarded = outbox.discard_held()
        if discarded:
            log.warning("gateway: %d envelope(s) of an unfinished submission discarded", discarded)
        relay_urls = list(membership.relays)
        for account in accounts.all():
            relay_urls += [u for u in account.relays if u not in relay_urls]
        directory_cache = DirectoryCache(engine)
        recipients = Recipients(
            directory_cache,
            [self.client_for(u) for u in relay_urls],
            membership.directory_key,
            (membership.root_public,),
            sync_interval=cfg.directory_sync_interval,
        )
        box = job_box(membership.credential.seed)
        settings = smarthost_settings(cfg)
        openpgp = OpenPgpKeys(OpenPgpStore(engine))
        pgp_keys = AccountKeyJob(openpgp, keyring, interval=cfg.poll_interval)
        published = DirectoryKeys(directory_cache, membership.directory_key,
                                  (membership.root_public,), cfg.directory_sync_interval)
        # Deposits to relays and the smarthost, and the drains they heed, run in a
        # process of their own (`gateway.delivery_process`).
        self._delivery = delivery = DeliveryProcess(cfg)
        delivery.start()  # the child starts up while the listeners are bound
        undelivered = UndeliveredChecker(
            sent=SentLog(engine),
            keyring=keyring,
            mailboxes=mailboxes,
            credential=membership.credential,
            client_for=self.client_for,
            domain=membership.domain,
            interval=min(cfg.poll_interval, cfg.status_check_interval),
            check_interval=cfg.status_check_interval,
            forget_after=cfg.status_forget_after,
            recipients=recipients,
            outbox=outbox,
        )
        fetcher = Fetcher(
            accounts=accounts,
            keyring=keyring,
            mailboxes=mailboxes,
            recipients=recipients,
            client_for=self.client_for,
            domain=membership.domain,
            poll_interval=cfg.poll_interval,
            header_limits=cfg.header_limits(),
            notice_fold_seconds=cfg.notice_fold_seconds,
            trusted_roots=(membership.root_public,),
            push_wait=cfg.push_wait,
            push_connections=cfg.push_connections,
            openpgp=InboundDecryption(openpgp),
        )
        filer = ImportFiler(
            accounts=accounts, keyring=keyring, imports=ImportStore(engine),
            interval=cfg.poll_interval, batch_messages=cfg.import_batch_messages,
            batch_bytes=cfg.import_batch_bytes,
        )

        def on_unlock() -> None:
            fetcher.wake()
            filer.wake()
            pgp_keys.wake()

        self.gate = gate = LoginGate(
            LoginLimiter(
                LimiterSettings(
                    failure_delay=cfg.login_failure_delay,
                    failure_delay_max=cfg.login_failure_delay_max,
                    block_failures=cfg.login_block_failures,
                    block_seconds=cfg.login_block_seconds,
                    window_seconds=cfg.login_failure_window,
                    max_tracked=cfg.login_tracked_max,
                )
            ),
            KdfPool(cfg.kdf_workers, cfg.kdf_queue),
        )
        handler = SubmissionHandler(
            keyring=keyring,
            recipients=recipients,
            outbox=OutboxWriter(outbox, part_bytes=cfg.outbox_part_bytes),
            domain=membership.domain,
            policy=SanitizePolicy(
                extra_headers=cfg.strip_headers,
                message_id_domain=membership.domain,
            ),
            max_recipients=cfg.max_recipients,
            max_transaction_bytes=cfg.max_transaction_bytes,
            wake_delivery=delivery.wake,
            on_unlock=on_unlock,
            header_limits=cfg.header_limits(),
            gate=gate,
            sent_copies=SentCopies(accounts) if cfg.sent_copy else None,
            rate=SubmissionRate(cfg.submission_limit, cfg.submission_window),
            outside=OutsideMail(
                OutsidePolicy(openpgp, smarthost=settings is not None,
                              allow_plaintext_to=cfg.allow_plaintext_to,
                              published=published.peer),
                openpgp, box,
            ),
        )
        cert, key = ensure_certificate(cfg.home / "tls", cfg.hostname)
        tls = server_context(cert, key)

        cap = ConnectionCap(cfg.max_smtp_connections)

        def submission(**tls_options: Any) -> asyncio.BaseProtocol:
            return CappedSubmissionSMTP(
                handler,
                cap=cap,
                verify=handler.verify,
                hostname=cfg.hostname,
                ident="Sealgate ESMTP",
                auth_required=True,
                auth_require_tls=True,
                data_size_limit=cfg.max_message_bytes,
                enable_SMTPUTF8=True,
                timeout=cfg.smtp_timeout,
                **tls_options,
            )

        # One directory sync before the listeners open: on a first start the replica is
        # empty, and RCPT would refuse every member (550) until the periodic sync ran. A
        # relay that does not answer in time leaves the replica as it is on disk.
        try:
            await asyncio.wait_for(recipients.sync(), timeout=STARTUP_SYNC_SECONDS)
        except TimeoutError:
            log.info("directory sync: no relay answered at start; using the replica on disk")
        self.smtp_port = await self._listen(
            lambda: submission(tls_context=tls, require_starttls=True), cfg.smtp_host,
            cfg.smtp_port, cap,
        )
        if cfg.smtps_port is not None:  # the same sessions, TLS from the first byte
            self.smtps_port = await self._listen(
                submission, cfg.smtps_host, cfg.smtps_port, cap, implicit_tls=tls
            )
        if cfg.inbound_port is not None:
            inbound = InboundHandler(
                identity=InboundIdentity(
                    membership.credential.seed, membership.credential.certificate
                ),
                recipients=recipients,
                outbox=OutboxWriter(outbox, part_bytes=cfg.outbox_part_bytes),
                domain=membership.domain,
                policy=SanitizePolicy(
                    extra_headers=cfg.strip_headers, message_id_domain=membership.domain
                ),
                max_recipients=cfg.max_recipients,
                max_transaction_bytes=cfg.max_transaction_bytes,
                wake_delivery=delivery.wake,
                authserv_id=cfg.inbound_authserv_id,
                header_limits=cfg.header_limits(),
            )
            inbound_cap = ConnectionCap(cfg.max_smtp_connections)
            self.inbound_port = await self._listen(
                lambda: CappedInboundSMTP(
                    inbound,
                    cap=inbound_cap,
                    hostname=cfg.hostname,
                    ident="Sealgate inbound ESMTP",
                    tls_context=tls,
                    data_size_limit=cfg.max_message_bytes,
                    enable_SMTPUTF8=True,
                    timeout=cfg.smtp_timeout,
                ),
                cfg.inbound_host, cfg.inbound_port, inbound_cap,
            )

        imap_config = cfg.imap_config()
        authenticator = UnlockingAuthenticator(
            StoreAuthenticator(keyring, mailboxes), fetcher, filer, pgp_keys
        )
        self._imap = ImapServer(imap_config, authenticator, tls, gate)
        self.imap_port = await self._imap.start(cfg.imap_host, cfg.imap_port)
        if cfg.imaps_port is not None:
            self.imaps_port = await self._imap.start(
                cfg.imaps_host, cfg.imaps_port, implicit_tls=True
            )

        self._tasks += [
            asyncio.create_task(fetcher.run(), name="fetcher"),
            asyncio.create_task(filer.run(), name="import-filing"),
            asyncio.create_task(recipients.run(), name="directory-sync"),
            asyncio.create_task(undelivered.run(), name="undelivered"),
            asyncio.create_task(pgp_keys.run(), name="openpgp-keys"),
            asyncio.create_task(published.run(), name="published-openpgp-keys"),
        ]
        log.info(
            "gateway: smtp on %s:%d, imap on %s:%d",
            cfg.smtp_host,
            self.smtp_port,
            cfg.imap_host,
            self.imap_port,
        )
        if self.smtps_port is not None:
            log.info("gateway: smtps on %s:%d", cfg.smtps_host, self.smtps_port)
        if self.imaps_port is not None:
            log.info("gateway: imaps on %s:%d", cfg.imaps_host, self.imaps_port)
        if self.inbound_port is not None:
            log.info("gateway: inbound smtp on %s:%d", cfg.inbound_host, self.inbound_port)

    async def _listen(
        self, make: Callable[[], asyncio.BaseProtocol], host: str, port: int, cap: ConnectionCap,
        implicit_tls: ssl.SSLContext | None = None,
    ) -> int:
        """Serve SMTP sessions made by `make` under `cap`; the port bound."""
        server = await asyncio.get_running_loop().create_server(
            cap.protocol_factory(make), host, port, ssl=implicit_tls
        )
        self._servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for server in self._servers:
            server.close()
            await server.wait_closed()
        if self._imap is not None:
            await self._imap.stop()
        if self._delivery is not None:
            await self._delivery.stop()
        for client in self._clients.values():
            await client.close()
        if self.gate is not None:
            self.gate.close()


class UnlockingAuthenticator:
    """An IMAP login also starts fetching (and filing imports of) that account at once."""

    def __init__(self, inner: StoreAuthenticator, *jobs: PeriodicJob) -> None:
        self._inner = inner
        self._jobs = jobs
        self._loop = asyncio.get_running_loop()

    def login(self, username: str, password: str) -> MailSession:
        session = self._inner.login(username, password)
        for job in self._jobs:
            self._loop.call_soon_threadsafe(job.wake)
        return session
