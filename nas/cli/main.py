"""The `hwnas` command: one parser built from every command module; a user error is one line (exit 2),
anything else a one-line internal error (exit 1) whose traceback `--debug` shows."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from types import ModuleType

from nas.cli import bench, devices, latency, runs, spaces, train
from nas.cli.base import Command, UserError

TOP = [*spaces.COMMANDS, *latency.COMMANDS, *train.COMMANDS, *runs.COMMANDS]
GROUPS: dict[str, ModuleType] = {"device": devices, "bench": bench}


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors caused by what the user gave: bad values (ValueError; unknown names are one too), files that
    cannot be read or written (OSError), devices that cannot measure here."""
    from devices import DeviceError

    return UserError, ValueError, OSError, DeviceError


def _add(sub: argparse._SubParsersAction, command: Command) -> None:
    parser = sub.add_parser(command.name, help=command.help)
    command.add_arguments(parser)
    parser.set_defaults(command=command)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hwnas", description="Hardware-aware neural architecture search.")
    p.add_argument("--debug", action="store_true", help="show the traceback of any error")
    sub = p.add_subparsers(dest="name", required=True)
    for command in TOP:
        _add(sub, command)
    for name, module in GROUPS.items():
        group = sub.add_parser(name, help=module.HELP).add_subparsers(dest=f"{name}_command", required=True)
        for command in module.COMMANDS:
            _add(group, command)
    return p


def redacted(message: str) -> str:
    """A message with every `token=...` (a device spec's agent token) masked: a token is never printed."""
    return re.sub(r"(tok\w*=)[^,'\"\s)]+", r"\1***", message)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.command.run(args)
    except KeyboardInterrupt:
        print("hwnas: interrupted; rows already written are kept", file=sys.stderr)
        return 130
    except Exception as err:
        if args.debug:
            raise
        if isinstance(err, user_errors()):
            print(f"hwnas: error: {redacted(str(err))}", file=sys.stderr)
            return 2
        print(
            f"hwnas: internal error: {type(err).__name__}: {redacted(str(err))} (run again with --debug for the "
            "traceback)",
            file=sys.stderr,
        )
        return 1
    return 0
