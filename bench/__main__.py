"""`python -m bench [--quick] [--only NAME]... [--reps N] [--idle-seconds S] [--check]
[--verbose] [--keep]`.

Runs the benchmarks one after the other, each in a fresh temporary directory, and
prints one table: median of our figure, median of the baseline's, their ratio and
the target. Exit status: 0; 1 if a benchmark failed to run, or, with --check, if a
ratio misses its target; 2 for a bad command line.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from bench import BENCHMARKS, run_benchmark
from bench.common import BenchError, Result, Settings, format_value, median


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Sealgate's speed as ratios against baselines measured in the same run.",
    )
    parser.add_argument("--quick", action="store_true", help="a short run (under a minute)")
    parser.add_argument(
        "--only", action="append", choices=sorted(BENCHMARKS), metavar="NAME",
        help=f"run only this benchmark (repeatable): {', '.join(BENCHMARKS)}",
    )
    parser.add_argument("--reps", type=int, help="repetitions per measurement "
                        "(default 3 with --quick, else 5)")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when a ratio misses its target")
    parser.add_argument("--verbose", action="store_true", help="print every repetition")
    parser.add_argument("--idle-seconds", type=float, metavar="S",
                        help="window of the idle CPU measurement (push: default 60, "
                        "20 with --quick; the target is stated over 600)")
    parser.add_argument("--keep", action="store_true",
                        help="keep each benchmark's temporary directory (and its log)")
    return parser


def _row(result: Result) -> list[str]:
    ours = format_value(median(result.ours), result.unit)
    if result.baseline is None:
        baseline = f"missing ({result.baseline_name})"
    else:
        baseline = f"{format_value(median(result.baseline), result.unit)} {result.baseline_name}"
    ratio = "-" if result.ratio is None else f"{result.ratio:.2f}"
    target = "-" if result.target is None else str(result.target)
    met = {True: "met", False: "MISSED", None: ""}[result.met]
    return [result.benchmark, result.case, ours, baseline, ratio, target, met]


def print_table(results: Sequence[Result], *, verbose: bool) -> None:
    header = ["benchmark", "case", "sealgate (median)", "baseline (median)", "ratio",
              "target", ""]
    rows = [header] + [_row(r) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for n, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))
    notes = [(r, note) for r in results for note in r.notes]
    if notes:
        print()
        for result, note in notes:
            print(f"  {result.benchmark} / {result.case}: {note}")
    if verbose:
        print()
        for r in results:
            ours = ", ".join(format_value(x, r.unit) for x in r.ours)
            print(f"  {r.benchmark} / {r.case}: sealgate [{ours}]")
            if r.baseline is not None:
                base = ", ".join(format_value(x, r.unit) for x in r.baseline)
                print(f"  {r.benchmark} / {r.case}: baseline [{base}]")


def _in_child(name: str, settings: Settings) -> list[Result]:
    """Run one benchmark in a fresh interpreter and return its rows."""
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
        return pool.submit(run_benchmark, name, settings).result()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    reps = args.reps if args.reps is not None else (3 if args.quick else 5)
    if reps < 1:
        parser.error("--reps must be at least 1")
    names = args.only or list(BENCHMARKS)
    print(
        f"Sealgate benchmarks ({'quick' if args.quick else 'full'} run, {reps} repetitions; "
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.machine()})",
        flush=True,
    )
    results: list[Result] = []
    failed: list[str] = []
    started = time.perf_counter()
    for name in names:
        workdir = Path(tempfile.mkdtemp(prefix=f"sealgate-bench-{name}-"))
        print(f"  running {name} ...", end="", flush=True)
        t0 = time.perf_counter()
        try:
            rows = _in_child(name, Settings(quick=args.quick, reps=reps, workdir=workdir,
                                            idle_seconds=args.idle_seconds))
        except BenchError as e:
            print(f" ERROR: {e}", flush=True)
            failed.append(name)
        except Exception:  # noqa: BLE001 - report it and go on with the next benchmark
            print(" ERROR:", flush=True)
            traceback.print_exc(file=sys.stdout)
            failed.append(name)
        else:
            print(f" {time.perf_counter() - t0:.1f} s", flush=True)
            results.extend(rows)
        finally:
            if args.keep:
                print(f"    kept {workdir}", flush=True)
            else:
                shutil.rmtree(workdir, ignore_errors=True)
    print(f"\n(total {time.perf_counter() - started:.1f} s)\n")
    print_table(results, verbose=args.verbose)
    missed = [f"{r.benchmark} / {r.case}" for r in results if r.met is False]
    if failed:
        print(f"\nfailed to run: {', '.join(failed)}")
    if missed:
        print(f"\nmissed target: {'; '.join(missed)}")
    if failed or (args.check and missed):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
