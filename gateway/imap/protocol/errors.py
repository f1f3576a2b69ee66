"""The IMAP protocol's errors, one root; each knows the response it becomes.

    ImapError
    ├── RemoteProtocolError   the peer sent something that is not IMAP; carries the BAD
    │                         response to send and whether the connection must close
    ├── LocalProtocolError    the server tried to send or do something IMAP forbids (a bug)
    └── CommandFailed         a well-formed command failed: tagged NO or BAD with a code,
                              or BYE when the connection cannot go on

Pure: imports nothing from `gateway`.
"""

from __future__ import annotations

from gateway.imap.protocol.responses import Code, Status, Tagged, UntaggedStatus


class ImapError(Exception):
    """Root of every error raised by `gateway.imap`."""


class LocalProtocolError(ImapError):
    """The server tried to send or do something the protocol forbids."""


class RemoteProtocolError(ImapError):
    """The peer sent bytes that are not a valid IMAP command.

    `response` is what to answer (a tagged BAD when the tag could be read, else `* BAD`);
    `fatal` means the byte stream can no longer be trusted and the connection must close
    after the answer.
    """

    def __init__(self, response: Tagged | UntaggedStatus, *, fatal: bool = False) -> None:
        super().__init__(response.text)
        self.response = response
        self.fatal = fatal


class CommandFailed(ImapError):
    """A well-formed command cannot be carried out; renders as `tag NO [code] text`.

    Status BAD for arguments that make no sense here; status BYE when the session cannot go
    on (the selected mailbox vanished): that renders as `* BYE text` and the server closes.
    """

    def __init__(self, status: Status, text: str, code: Code | None = None) -> None:
        super().__init__(text)
        self.status = status
        self.text = text
        self.code = code

    def response(self, tag: str) -> Tagged | UntaggedStatus:
        if self.status is Status.BYE:
            return UntaggedStatus(Status.BYE, self.text, self.code)
        return Tagged(tag, self.status, self.text, self.code)
