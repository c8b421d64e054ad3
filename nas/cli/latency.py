"""Latency commands: profile a device, meta-train a base, choose references, calibrate, predict."""

from __future__ import annotations

import argparse
import csv
import sys

import numpy as np

import devices
from nas.cli.base import Command, UserError, space_arg, timing_args, timing_policy
from search_spaces import load_space, read_archs, sample_archs


class Profile(Command):
    name, help = "profile", "measure architectures on a device into a CSV (resumable)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        space_arg(parser)
        parser.add_argument(
            "--device", required=True, help="e.g. ort-cpu:threads=1, torch-cuda, tensorrt:fp16, remote:http://host:8600"
        )
        parser.add_argument("--archs", help="file with one architecture string per line")
        parser.add_argument("-n", type=int, help="number of random architectures instead of --archs")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--out", required=True)
        parser.add_argument("--group", type=int, default=10, help="architectures measured interleaved per group")
        parser.add_argument(
            "--retries", type=int, default=2, help="times a row flagged noisy (a busy machine) is measured again"
        )
        timing_args(parser)

    def run(self, args: argparse.Namespace) -> None:
        from nas.latency.profile import check_output, profile
        from nas.progress import console, progress_bar

        space = load_space(args.space)
        if (args.archs is None) == (args.n is None):
            raise UserError("profile needs exactly one of --archs FILE or -n N")
        if args.n is not None and args.n < 1:
            raise UserError(f"`-n >= 1` must hold, but got -n {args.n}")
        if args.retries < 0:
            raise UserError(f"`--retries >= 0` must hold, but got --retries {args.retries}")
        archs = read_archs(space, args.archs) if args.archs else sample_archs(space, args.n, args.seed)
        device = devices.get(args.device)
        check_output(args.out)
        with progress_bar(f"profiling on {device.spec}") as update:
            rows = profile(
                space,
                device,
                archs,
                args.out,
                group_size=args.group,
                policy=timing_policy(args),
                progress=update,
                retries=args.retries,
                log=console.print,
            )
        latest = {r["arch"]: r["noisy"] for r in rows}  # an architecture measured again: its last row counts
        noisy = sum(latest.values())
        console.print(f"{len(rows)} rows of {len(latest)} architectures written to {args.out}")
        if noisy:
            console.print(
                f"{noisy} stayed flagged noisy: calibrate refuses them; run the same command on a quiet machine "
                "to measure only those again"
            )


class MetaTrain(Command):
    name, help = "meta-train", "meta-train a latency predictor base on every device of the tables"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        space_arg(parser)
        parser.add_argument(
            "--data", nargs="+", required=True, help="latency tables: HELP's wide CSVs and/or hwnas profile CSVs"
        )
        parser.add_argument("--out", required=True)
        parser.add_argument("--predictor", default="hwnas")
        parser.add_argument(
            "--all-rows", action="store_true", help="also train on HELP's query range (default: rows below it)"
        )

    def run(self, args: argparse.Namespace) -> None:
        from nas.latency.calibration import meta_train

        meta = meta_train(args.space, args.data, args.out, args.predictor, args.all_rows)
        print(
            f"meta-trained {args.predictor} on {len(meta['devices'])} devices x {meta['rows']} architectures "
            f"-> {args.out}"
        )


class Reference(Command):
    name, help = "reference", "the architectures worth measuring on a new device"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        space_arg(parser)
        parser.add_argument("-n", type=int, default=10)
        parser.add_argument("--pool", help="choose only among these architectures (one per line)")
        parser.add_argument("--base", help="base predictor (default: the one hwnas ships for the space)")

    def run(self, args: argparse.Namespace) -> None:
        from nas.latency.calibration import reference

        if args.n < 1:
            raise UserError(f"`-n >= 1` must hold, but got -n {args.n}")
        space = load_space(args.space)
        pool = read_archs(space, args.pool) if args.pool else None
        for arch in reference(args.space, args.n, pool, args.base):
            print(space.to_str(arch))


class Calibrate(Command):
    name, help = "calibrate", "adapt a base predictor to a device from measured rows"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        space_arg(parser)
        parser.add_argument(
            "--measurements", required=True, help="CSV with columns arch, latency_ms (hwnas profile output works)"
        )
        parser.add_argument("--base")
        parser.add_argument("--device", help="the device whose rows to use, when the file holds several")
        parser.add_argument("--out", required=True)
        parser.add_argument(
            "--accept-noisy",
            action="store_true",
            help="fit on rows flagged noisy too (measured while the machine was busy; refused by default)",
        )

    def run(self, args: argparse.Namespace) -> None:
        from nas.latency.calibration import calibrate

        meta = calibrate(args.space, args.measurements, args.out, args.base, args.device, args.accept_noisy)
        for line in meta["outliers"]:
            print(f"warning: {args.measurements}: {line}; measure it again or remove the row", file=sys.stderr)
        print(f"calibrated on {meta['samples']} measurements -> {args.out}")


class Predict(Command):
    name, help = "predict", "predicted latency of architectures with a calibrated predictor"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--predictor", required=True)
        parser.add_argument("--archs", required=True)
        parser.add_argument("--out")

    def run(self, args: argparse.Namespace) -> None:
        from nas.latency.calibration import predict

        names, ms = predict(args.predictor, args.archs)
        f = open(args.out, "w", newline="", encoding="utf-8") if args.out else sys.stdout
        try:
            w = csv.writer(f)
            w.writerow(["arch", "latency_ms"])
            w.writerows(zip(names, np.round(ms, 5)))
        finally:
            if args.out:
                f.close()


COMMANDS = [Profile(), MetaTrain(), Reference(), Calibrate(), Predict()]
