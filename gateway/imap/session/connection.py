"""One IMAP connection's state machine: which command may run when, and what it answers.

Holds `ImapState`: the connection's state (NOT AUTHENTICATED -> AUTHENTICATED ->
SELECTED -> LOGOUT), the extensions this session enabled, its mail session and selected
mailbox view, dispatch through the one table `commands.COMMANDS`, the count of bad
commands, and the entry points the server calls for what it carried out itself
(`finish_login`, `tls_started`, `handle_continuation`, `idle_updates`, `finish_idle`).
The handlers themselves live by state in `any_state`, `not_authenticated`,
`authenticated` and `selected`.

It never imports asyncio and never touches a socket. Its storage calls are synchronous:
the server runs `handle`, and the consuming of lazy responses, off the event loop (one at
a time per connection, so nothing here needs a lock). It never logs message content,
user names or passwords.
"""

from __future__ import annotations

import logging

from gateway.imap.backend import BackendError, MailboxNotFound, MailSession
from gateway.imap.config import ImapConfig
from gateway.imap.protocol import (
    Code,
    Command,
    CommandFailed,
    LocalProtocolError,
    Raw,
    RemoteProtocolError,
    Response,
    Status,
    Tagged,
    UntaggedStatus,
)
from gateway.imap.session import not_authenticated
from gateway.imap.session.commands import CAPABILITIES, COMMANDS
from gateway.imap.session.reply import (
    CONDSTORE,
    IdleRequest,
    LoginFailure,
    LoginRequest,
    Reply,
    State,
    backend_failure,
    ok,
)
from gateway.imap.session.view import SelectedMailbox

log = logging.getLogger(__name__)


class ImapState:
    """What one connection may do now, and the responses each command produces."""

    def __init__(
        self,
        config: ImapConfig,
        *,
        tls_available: bool,
        tls_active: bool,
        loopback: bool = False,
    ) -> None:
        self.config = config
        self.tls_available = tls_available
        self.tls_active = tls_active
        self.loopback = loopback  # the peer's address is a loopback one (127/8, ::1)
        self.state = State.NOT_AUTHENTICATED
        self.session: MailSession | None = None
        self.selected: SelectedMailbox | None = None
        self.enabled: frozenset[str] = frozenset()  # ENABLE'd extensions (RFC 5161)
        self.bad_count = 0
        self.login_failures = 0
        self.sasl_tag: str | None = None

    # -- capabilities and greetings

    @property
    def login_allowed(self) -> bool:
        """Passwords in clear only where no network sees them (Dovecot's rule)."""
        return self.tls_active or (self.loopback and self.config.loopback_plaintext_login)

    def capabilities(self) -> tuple[str, ...]:
        caps = list(CAPABILITIES)
        if self.state is State.NOT_AUTHENTICATED:
            if self.tls_available and not self.tls_active:
                caps.append("STARTTLS")
            caps.append("AUTH=PLAIN" if self.login_allowed else "LOGINDISABLED")
        return tuple(caps)

    def capability_code(self) -> Code:
        return Code("CAPABILITY", tuple(Raw.of(c) for c in self.capabilities()))

    def greeting(self) -> Reply:
        text = f"{self.config.server_name} IMAP ready."
        return Reply([UntaggedStatus(Status.OK, text, self.capability_code())])

    def bye(self, text: str) -> Reply:
        """End the session from the server side (idle timeout, shutdown, internal error)."""
        self.state = State.LOGOUT
        return Reply([UntaggedStatus(Status.BYE, text)])

    # -- dispatch

    def handle(self, command: Command) -> Reply:
        allowed, handler = COMMANDS[type(command)]
        if self.state not in allowed:
            return self.bad(command.tag, self._wrong_state_text(allowed))
        try:
            reply = handler(self, command)
        except CommandFailed as failure:
            return self.failed(command.tag, failure)
        except BackendError as error:
            return self.failed(command.tag, backend_failure(error))
        self.bad_count = 0
        return reply

    def reject(self, error: RemoteProtocolError) -> Reply:
        """Answer a command the protocol layer could not parse."""
        if error.fatal:
            self.state = State.LOGOUT
            return Reply([error.response, UntaggedStatus(Status.BYE, "Protocol error.")])
        return self.count_bad([error.response])

    def _wrong_state_text(self, allowed: frozenset[State]) -> str:
        if self.state is State.NOT_AUTHENTICATED:
            return "Log in first."
        if allowed == {State.SELECTED}:
            return "No mailbox selected."
        if allowed == {State.NOT_AUTHENTICATED}:
            return "Already logged in."
        return f"Command not allowed in the {self.state.value} state."

    def bad(self, tag: str, text: str) -> Reply:
        return self.count_bad([Tagged(tag, Status.BAD, text)])

    def count_bad(self, responses: list[Response]) -> Reply:
        self.bad_count += 1
        if self.bad_count >= self.config.bad_command_limit:
            self.state = State.LOGOUT
            responses.append(UntaggedStatus(Status.BYE, "Too many invalid commands."))
        return Reply(responses)

    def failed(self, tag: str, failure: CommandFailed) -> Reply:
        if failure.status is Status.BAD:
            return self.count_bad([failure.response(tag)])
        if failure.status is Status.BYE:
            self.state = State.LOGOUT
        return Reply([failure.response(tag)])

    # -- what the server carried out

    def tls_started(self) -> None:
        """The stream is now TLS: capabilities change (RFC 3501 section 6.2.1)."""
        self.tls_active = True

    def handle_continuation(self, line: bytes) -> Reply:
        """The client's answer to a `+` challenge (AUTHENTICATE without initial response)."""
        return not_authenticated.continuation(self, line)

    def finish_login(self, request: LoginRequest, result: MailSession | LoginFailure) -> Reply:
        """The outcome of a LoginRequest the server carried out."""
        return not_authenticated.finish_login(self, request, result)

    def idle_updates(self) -> Reply:
        """During IDLE: what changed in the selected mailbox, expunges included (RFC 2177).
        A storage failure ends nothing: it is reported at DONE's next check."""
        if self.selected is None:
            return Reply([])
        try:
            return Reply(self.sync(allow_expunge=True))
        except BackendError:
            return Reply([])
        except CommandFailed as failure:
            return self.failed("*", failure)

    def finish_idle(self, request: IdleRequest, line: bytes) -> Reply:
        """The line that ended IDLE: DONE completes it; anything else is BAD."""
        if line.strip().upper() != b"DONE":
            return self.bad(request.tag, "Expected DONE to end IDLE.")
        code = self.selected.new_highest_modseq_code() if self.selected else None
        return Reply([ok(request.tag, "IDLE terminated.", code)])

    # -- helpers the handlers share

    def mail(self) -> MailSession:
        if self.session is None:
            raise LocalProtocolError("no mail session in an authenticated state")
        return self.session

    def view(self) -> SelectedMailbox:
        if self.selected is None:
            raise LocalProtocolError("no mailbox in the selected state")
        return self.selected

    def writable_view(self) -> SelectedMailbox:
        selected = self.view()
        if selected.read_only:
            raise CommandFailed(Status.NO, "Mailbox is read-only.", Code("READ-ONLY"))
        return selected

    def sync(self, *, allow_expunge: bool) -> list[Response]:
        """Bring the client up to date with what changed since it was last told."""
        selected = self.view()
        try:
            changes = self.mail().changes_since(selected.name, selected.highest_modseq)
            if changes.uid_next > selected.claimed_until:  # new mail
                if selected.read_only:
                    unclaimed = self.mail().peek_recent(selected.name)
                    selected.add_unclaimed(unclaimed, changes.uid_next)
                else:
                    selected.add_recent(self.mail().claim_recent(selected.name))
        except MailboxNotFound as exc:
            raise CommandFailed(Status.BYE, "The selected mailbox no longer exists.") from exc
        return selected.sync(changes, allow_expunge=allow_expunge)

    def enable_condstore(self) -> list[Response]:
        """A CONDSTORE enabling command ran (RFC 7162 section 3.1: ENABLE, SELECT's
        CONDSTORE, STATUS HIGHESTMODSEQ, FETCH MODSEQ or CHANGEDSINCE, SEARCH MODSEQ,
        STORE UNCHANGEDSINCE): from now on flag FETCHes carry MODSEQ. The first one in
        the selected state is answered with the view's HIGHESTMODSEQ."""
        if CONDSTORE in self.enabled:
            return []
        self.enabled |= {CONDSTORE}
        if self.selected is None:
            return []
        self.selected.condstore = True
        code = self.selected.highest_modseq_code()
        return [UntaggedStatus(Status.OK, "Highest modseq.", code)]

    def deselect(self) -> None:
        self.selected = None
        self.state = State.AUTHENTICATED

    # -- end of the connection

    def close(self) -> None:
        """Release the mail session (LOGOUT, connection lost, server stopping)."""
        session, self.session, self.selected = self.session, None, None
        if session is not None:
            session.close()
