"""Run commands: `run` (image or hybrid_lm recipe), `search` (a worker of a shared study), `export`, `quantize`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from nas.cli.base import Command, print_table


def _run_dir(args: argparse.Namespace) -> Path:
    return Path(args.out or Path("runs") / Path(args.recipe).stem)


class Run(Command):
    name, help = "run", "the whole job: calibrate, train, search, verify on the device, export, report"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("recipe")
        parser.add_argument("--out", help="run directory (default runs/<recipe name>); an existing one resumes")

    def run(self, args: argparse.Namespace) -> None:
        from nas.lm.run import HybridRun
        from nas.pipeline.tabular import pipeline_for
        from nas.progress import console, progress_bar
        from nas.recipes import HybridRecipe, load_any_recipe
        from nas.rundir import BEST, REPORT

        recipe = load_any_recipe(args.recipe)
        kind = HybridRun if isinstance(recipe, HybridRecipe) else pipeline_for
        job = kind(recipe, _run_dir(args), log=console.print, progress=progress_bar)
        result = job.execute()
        first, *rest = job.summary(result)
        console.print(f"{first} -> {job.run / BEST}" if result["winner"] else first)
        for line in rest:
            console.print(line)
        console.print(f"report: {job.run / REPORT}")


class Search(Command):
    name, help = "search", "a search worker: join the recipe's study (several may share one storage)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("recipe")
        parser.add_argument("--out", help="run directory (default runs/<recipe name>)")
        parser.add_argument(
            "--storage", help="Optuna storage URL shared by the workers, e.g. postgresql://user@host/db"
        )
        parser.add_argument("--study-name")

    def run(self, args: argparse.Namespace) -> None:
        from nas.pipeline.tabular import pipeline_for
        from nas.progress import console, progress_bar
        from nas.recipes import load_recipe

        recipe = load_recipe(args.recipe)
        recipe.search.storage = args.storage or recipe.search.storage
        recipe.search.study_name = args.study_name or recipe.search.study_name
        trials = pipeline_for(recipe, _run_dir(args), log=console.print, progress=progress_bar).search_worker()
        console.print(f"study {recipe.search.study_name!r} holds {len(trials)} finished candidates")


class Export(Command):
    name, help = "export", "export a run's winner (or --arch) to ONNX or TensorRT, checked against PyTorch"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("run")
        parser.add_argument("--arch")
        parser.add_argument("--format", choices=("onnx", "tensorrt"), default="onnx")
        parser.add_argument("--fp16", action="store_true", help="TensorRT fp16 kernels")
        parser.add_argument(
            "--int8", action="store_true", help="static int8 (QDQ, per-channel weights, calibrated on training images)"
        )
        parser.add_argument("--out", help="folder (default RUN/best)")

    def run(self, args: argparse.Namespace) -> None:
        from nas.export import ExportConfig
        from nas.pipeline.export import export_run

        meta = export_run(
            args.run, ExportConfig(format=args.format, fp16=args.fp16, int8=args.int8), args.arch, args.out
        )
        check = meta["check"]["onnxruntime"]
        print(
            f"exported {meta['arch']} to {args.out or args.run + '/best'}: {', '.join(meta['files'].values())}; "
            f"onnxruntime vs PyTorch: max |diff| {check['max_abs_diff']:.2e} on outputs up to "
            f"{check['output_max_abs']:.3g} ({check['max_rel_diff']:.1e} of them; tolerance {check['tolerance']:g})"
        )
        if "int8_test_top1" in meta:
            print(f"int8 ONNX test top-1 {meta['int8_test_top1']:.4f} (float {meta['test_top1']:.4f})")


class Quantize(Command):
    name = "quantize"
    help = "mixed-precision int8 of a run's winner: fastest on the device within an accuracy tolerance"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("run")
        parser.add_argument("--device", help="device spec (default: the run's device)")
        parser.add_argument("--arch", help="architecture string (default: the run's winner)")
        parser.add_argument(
            "--tolerance", type=float, default=0.5, help="accuracy points below fp32 allowed (validation split)"
        )
        parser.add_argument("--calib", type=int, default=256, help="calibration images from the training split")
        parser.add_argument("--method", default="interlayer", choices=["hessian", "interlayer"])
        parser.add_argument("--search", default="bisect", choices=["bisect", "latency", "ilp"])
        parser.add_argument(
            "--activations",
            default="auto",
            choices=["auto", "u8", "s8", "s8sym"],
            help="int8 activation type (auto: the faster of u8 and s8 on the device; TensorRT: s8sym)",
        )
        parser.add_argument(
            "--format",
            default="auto",
            choices=["auto", "qdq", "qoperator"],
            help="int8 form in onnxruntime (auto: each configuration in both, the faster that holds the tolerance; "
            "TensorRT: qdq)",
        )
        parser.add_argument(
            "--calibration",
            default="minmax",
            choices=["minmax", "percentile", "entropy"],
            help="activation ranges: onnxruntime's calibrator (ranges that saturating consumers cut are tightened)",
        )
        parser.add_argument("--out", help="output folder (default: RUN/quantized)")

    def run(self, args: argparse.Namespace) -> None:
        from nas.pipeline.quantize import quantize_run
        from nas.progress import console
        from nas.quantize import QuantizeConfig

        config = QuantizeConfig(
            tolerance=args.tolerance,
            method=args.method,
            search=args.search,
            activations=args.activations,
            format=args.format,
            calibration=args.calibration,
        )
        r = quantize_run(args.run, config, args.device, args.arch, args.calib, args.out, log=console.print)
        print_quantized(r, args.out or str(Path(args.run) / "quantized"))


def print_quantized(r: dict[str, Any], out: str) -> None:
    from rich.table import Table

    t = Table(
        "configuration",
        "form",
        "int8 layers",
        "latency (ms)",
        "vs fp32",
        "val top-1",
        "test top-1",
        "within tolerance",
        title=f"{r.get('dataset', '')} on {r['device']}, tolerance {r['tolerance_points']} points "
        f"({r['method']}, {r['search']})",
    )
    fp32 = r["configs"][0]["latency_ms"]
    for c in r["configs"]:
        name = f"{c['config']} (chosen)" if c["config"] == r["chosen"] else c["config"]
        t.add_row(
            name,
            c.get("format", ""),
            f"{c['int8_layers']}",
            f"{c['latency_ms']:.4f}",
            f"{fp32 / c['latency_ms']:.2f}x",
            f"{100 * c['val_top1']:.2f}",
            f"{100 * c['test_top1']:.2f}",
            "yes" if c["within_tolerance"] else "no",
        )
    print_table(t)
    print(
        f"int8 activations: {r.get('int8_activations')}; form: {r.get('int8_format_reason') or 'float'}\n"
        f"chosen: {r['chosen']}, {r['speedup_vs_fp32']:.2f}x the "
        f"speed of fp32, test drop {r['test_drop_points']:.2f} points; written to {out} (model.onnx, model.json, "
        "quantize.png)"
    )


COMMANDS = [Run(), Search(), Export(), Quantize()]
