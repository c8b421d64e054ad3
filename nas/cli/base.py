"""What every command shares: the Command contract, the user-error type, common arguments, table output."""

from __future__ import annotations

import argparse
import os
from typing import Any

import devices


class UserError(Exception):
    """An error caused by the user's input: printed as one line, exit status 2."""


class Command:
    """One `hwnas` command (Optuna's _BaseCommand): it declares its own arguments beside its code."""

    name: str = ""
    help: str = ""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Declare the command's arguments."""

    def run(self, args: argparse.Namespace) -> None:
        raise NotImplementedError


def ints(text: str, option: str) -> list[int]:
    """A comma-separated list of whole numbers given to `option`."""
    try:
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise UserError(f"{option} must be whole numbers separated by commas, but got {text!r}") from None


def space_arg(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    parser.add_argument(
        "--space",
        required=default is None,
        default=default,
        help="search space, optionally with options: ofa_mbv3:resolutions=[160]",
    )


def timing_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs-per-round", type=int)
    parser.add_argument("--min-rounds", type=int)
    parser.add_argument("--max-rounds", type=int)


def timing_policy(args: argparse.Namespace) -> devices.TimingPolicy | None:
    fields = {k: getattr(args, k) for k in ("runs_per_round", "min_rounds", "max_rounds") if getattr(args, k, None)}
    return devices.TimingPolicy(**fields) if fields else None


def is_main_rank() -> bool:
    """Rank 0 under torchrun (or a plain process): the one that prints."""
    return int(os.environ.get("RANK", "0")) == 0


def print_table(table: Any) -> None:
    """A rich table on stdout, never cut or wrapped to a narrow width when stdout is a file or a pipe."""
    from rich.console import Console
    from rich.measure import Measurement

    console = Console()
    if not console.is_terminal:
        width = Measurement.get(console, console.options.update(width=10_000), table).maximum
        console = Console(width=max(80, width))
    console.print(table)
