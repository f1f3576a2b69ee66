"""Every error the bubble side raises, under one root.

    BridgeError
    ├── CannotOpen            an envelope or sealed blob failed to open (never says why)
    ├── EnvelopeFormatError   bytes are not an envelope (relay-side structural check)
    ├── WrongPassphrase       sealed account keys did not open with that passphrase
    ├── DirectoryError        a directory record is missing, unsigned or does not match
    ├── HeaderError           (also a ValueError; bridge.headers) a header block unreadable
    │   ├── HeaderTooLarge    the header block is over its limit
    │   ├── AddressError      an address field does not parse strictly
    │   └── SenderRefused     (bridge.sender) the header names another author than the sender
    └── RelayError            a relay could not be used
        ├── RelayUnavailable  connection refused, timeout, 5xx: try again or another relay
        └── RelayRejected     4xx: the relay refused this request; retrying will not help
            └── BatchUnsupported  404/405 to a batch deposit: an older relay

Messages never carry message content, addresses or key material.
"""


class BridgeError(Exception):
    """Root of every error raised by `bridge`."""


class CannotOpen(BridgeError):
    """The sealed data could not be opened; the reason is deliberately not given."""

    def __init__(self, what: str = "envelope") -> None:
        super().__init__(f"cannot open {what}")


class EnvelopeFormatError(BridgeError):
    """The bytes are not a well-formed envelope (wrong magic, version, or length)."""


class WrongPassphrase(BridgeError):
    """The passphrase does not unlock these keys."""

    def __init__(self) -> None:
        super().__init__("wrong passphrase")


class DirectoryError(BridgeError):
    """A directory record is missing, not signed by a trusted root, or inconsistent."""


class RelayError(BridgeError):
    """A relay request failed."""


class RelayUnavailable(RelayError):
    """The relay could not be reached or failed on its side; another try may work."""


class RelayRejected(RelayError):
    """The relay answered with a 4xx status; the same request will fail again."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"relay rejected the request: {status} {reason}")
        self.status = status
        self.reason = reason


class BatchUnsupported(RelayRejected):
    """The relay has no batch deposit (404 or 405: an older relay); deposit one by one."""
