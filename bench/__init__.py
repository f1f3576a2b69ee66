"""Sealgate's benchmarks: speed as a ratio against a baseline measured in the same run.

`python -m bench` (or `make bench`) runs them all and prints one table; `--quick`
makes a short run, `--only NAME` picks benchmarks, `--check` exits 1 when a ratio
misses its target. Each module's docstring says what it measures, what the baseline
is and what ratio we aim at; docs/performance.md has the figures measured so far.

Each benchmark runs in a fresh interpreter, so that what ran before it (heap layout,
caches, threads) does not change its figures; `--only NAME` measures what the full
run measures.

Absolute figures depend on the machine and its load; only the ratios are compared
with targets, and nothing here fails because something took long.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.common import Result, Settings

BENCHMARKS: dict[str, str] = {
    "smtp_submission": "bench.smtp_submission",
    "seal_open": "bench.seal_open",
    "imap_fetch": "bench.imap_fetch",
    "imap_qresync": "bench.imap_qresync",
    "sanitize": "bench.sanitize",
    "login_flood": "bench.login_flood",
    "migrate_imap": "bench.migrate_imap",
    "relay_storage": "bench.relay_storage",
    "relay_deposit": "bench.relay_deposit",
    "push": "bench.push",
    "openpgp": "bench.openpgp",
}
"""Benchmark name -> module; every module has NAME and run(Settings) -> list[Result]."""


def run_benchmark(name: str, settings: Settings) -> list[Result]:
    """Import the benchmark's module and run it (the entry point of the child process)."""
    import importlib

    module = importlib.import_module(BENCHMARKS[name])
    results: list[Result] = module.run(settings)
    return results
