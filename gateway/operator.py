"""What the operator commands share without importing the stores, the relay client or
OpenPGP: the one-line error and the names of the Argon2id costs (`--kdf-cost`)."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable

from bridge.keys import KdfCost


class ProvisionError(Exception):
    """An operator action could not be done; the message is one line for the operator."""


# The Argon2id cost an account's keys are sealed with (`account add --kdf-cost`).
KDF_COSTS: dict[str, Callable[[], KdfCost]] = {
    "moderate": KdfCost.moderate,
    "interactive": KdfCost.interactive,
    "minimum": KdfCost.minimum,
}


def command(module: str, name: str) -> Callable[[argparse.Namespace], None]:
    """The subcommand function `module.name`, imported when the command runs: building the
    parser imports no store, relay or OpenPGP code, so each process loads what it uses."""

    def run(args: argparse.Namespace) -> None:
        getattr(importlib.import_module(module), name)(args)

    return run
