"""`hwnas spaces` and `hwnas sample`: what the search spaces hold."""

from __future__ import annotations

import argparse
import sys

import numpy as np

import search_spaces
from nas.cli.base import Command, UserError, print_table, space_arg


class Spaces(Command):
    name, help = "spaces", "list the search spaces"

    def run(self, args: argparse.Namespace) -> None:
        from rich.table import Table

        table = Table("space", "architectures", "encoding", "input", "about")
        for name in search_spaces.names():
            space = search_spaces.create(name)
            arch = space.sample(np.random.default_rng(0))
            size = space.size()
            about = (sys.modules[type(space).__module__].__doc__ or "").strip().splitlines()[0]
            table.add_row(
                name,
                f"{size:.3g}" if size > 1e6 else str(size),
                str(space.encoding_size),
                "x".join(map(str, space.input_shape(arch)[1:])),
                about,
            )
        print_table(table)


class Sample(Command):
    name, help = "sample", "print N distinct random architectures, one per line"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        space_arg(parser)
        parser.add_argument("-n", type=int, required=True)
        parser.add_argument("--seed", type=int, default=0)

    def run(self, args: argparse.Namespace) -> None:
        if args.n < 1:
            raise UserError(f"`-n >= 1` must hold, but got -n {args.n}")
        space = search_spaces.load_space(args.space)
        for arch in search_spaces.sample_archs(space, args.n, args.seed):
            print(space.to_str(arch))


COMMANDS = [Spaces(), Sample()]
