"""Training commands: `train-supernet`, `eval-subnet`, `train-lm` (each runs under torchrun too)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from nas.cli.base import Command, is_main_rank


class TrainSupernet(Command):
    name, help = "train-supernet", "train a weight-sharing supernet from a recipe"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("recipe")
        parser.add_argument("--out", help="run directory (default runs/<recipe name>); an existing one resumes")

    def run(self, args: argparse.Namespace) -> None:
        from nas.progress import console, progress_bar
        from nas.recipes import load_recipe
        from nas.supernet.run import train_supernet

        recipe = load_recipe(args.recipe)
        run = Path(args.out or Path("runs") / Path(args.recipe).stem)
        if not is_main_rank():
            train_supernet(recipe, run)
            return
        with progress_bar("training supernet") as update:
            metrics = train_supernet(recipe, run, update)
        for m in metrics:
            console.print(
                f"epoch {m['epoch']}: loss {m['loss']:.3f}, largest {m['acc_largest']:.3f}, "
                f"smallest {m['acc_smallest']:.3f}"
            )
        console.print(f"run directory: {run}")


class EvalSubnet(Command):
    name, help = "eval-subnet", "a subnet's accuracy from a trained run (BN recalibrated)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("run")
        parser.add_argument("--arch", required=True)
        parser.add_argument("--split", choices=("val", "test"), default="val")

    def run(self, args: argparse.Namespace) -> None:
        from nas.supernet.run import load_supernet_run

        run = load_supernet_run(args.run)
        arch = run.net.space.from_str(args.arch)
        acc = run.accuracy(args.split)
        print(f"{args.split} top-1 of {args.arch}: {acc(arch):.4f}{' (cached)' if acc.hits else ''}")


class ImportSupernet(Command):
    name = "import-supernet"
    help = "a supernet trained elsewhere (Once-for-All's OFAMobileNetV3 checkpoints) as an hwnas supernet run"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("path", help="the checkpoint: OFA's state dict (alone or under 'state_dict')")
        parser.add_argument("--from", dest="source", choices=("ofa",), required=True, help="whose format it is")
        parser.add_argument(
            "--width", type=float, choices=(1.0, 1.2), help="OFA's width multiplier (default: read off the weights)"
        )
        parser.add_argument("--data", help="the ImageNet folder (train/<wnid>/, val/<wnid>/) subnets are scored on")
        parser.add_argument("--data-resolution", type=int, default=224, help="the size images are loaded at")
        parser.add_argument(
            "--resolutions", help="input sizes to search, e.g. 160,192,224 (default: OFA's 128 to 224 in steps of 4)"
        )
        parser.add_argument("--out", required=True, help="the run directory to write (a new one)")

    def run(self, args: argparse.Namespace) -> None:
        from nas.cli.base import ints
        from nas.progress import console
        from nas.supernet.imports import import_supernet

        resolutions = ints(args.resolutions, "--resolutions") if args.resolutions else None
        done = import_supernet(
            args.path, args.out, args.source, args.width, args.data, args.data_resolution, resolutions
        )
        console.print(
            f"imported {done.tensors} tensors of OFA's width-{done.width} supernet ({done.num_classes} classes, "
            f"sha256 {done.sha256[:12]}) as {done.space} -> {done.run}"
        )
        if not args.data:
            console.print(
                f"set data.path in {done.run / 'recipe.yaml'} to the ImageNet folder before eval-subnet, run or "
                "quantize (subnets are scored and their BN statistics recalibrated on it)"
            )


class TrainLM(Command):
    name = "train-lm"
    help = "train a hybrid_lm architecture (a run's winner or --arch); CPU, GPU or torchrun"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("run", nargs="?", help="a hybrid_lm run directory: its winner, space and text")
        parser.add_argument(
            "--arch",
            help="the architecture string (default: the run's winner); STRING|mamba2-only "
            "or STRING|attn-only: its parameter-matched baseline",
        )
        parser.add_argument("--space", help="the hybrid_lm space spec (default: the run's)")
        parser.add_argument("--text", help="a text file or directory (default: the run's, else the bundled pydoc text)")
        parser.add_argument("--steps", type=int, default=2000)
        parser.add_argument("--batch", type=int, default=32, help="the global batch, split over torchrun's ranks")
        parser.add_argument("--seq-len", type=int, default=256)
        parser.add_argument("--lr", type=float, default=3e-3)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--eval-every", type=int, default=200)
        parser.add_argument("--checkpoint-every", type=int, default=200)
        parser.add_argument("--val-windows", type=int, default=64)
        parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
        parser.add_argument("--out", required=True, help="output directory; an existing one resumes")

    def run(self, args: argparse.Namespace) -> None:
        from nas.lm.proxy import TextData, load_text
        from nas.lm.train import LMTrainConfig, train_lm, training_job
        from nas.progress import console, progress_bar

        space, arch, text = training_job(args.run, args.arch, args.space, args.text)
        config = LMTrainConfig(
            steps=args.steps,
            batch=args.batch,
            seq_len=args.seq_len,
            lr=args.lr,
            seed=args.seed,
            eval_every=args.eval_every,
            checkpoint_every=args.checkpoint_every,
            val_windows=args.val_windows,
            device=args.device,
        )
        data = TextData.from_bytes(load_text(text))
        out = Path(args.out)
        if not is_main_rank():
            train_lm(space, arch, data, config, out)
            return
        console.print(
            f"train-lm: {arch}, {config.steps} steps of {config.batch} x {config.seq_len} bytes, "
            f"world size {os.environ.get('WORLD_SIZE', '1')} -> {out}"
        )
        with progress_bar("training") as update:
            meta = train_lm(space, arch, data, config, out, update)
        if meta["best_step"] < meta["trained_steps"]:
            console.print(
                f"validation bits per byte were lowest at step {meta['best_step']} "
                f"({meta['best_val_bpb']:.3f}), not at the end ({meta['val_bpb']:.3f}): the model is likely "
                "overfitting the text; give it more (--text) or fewer steps"
            )
        console.print(
            f"{meta['params']:,} parameters: validation {meta['val_bpb']:.3f} bits per byte after "
            f"{meta['trained_steps']} steps; {out / 'model.onnx'} matches PyTorch "
            f"(max abs diff {meta['onnxruntime_max_abs_diff']:.1e})"
        )


COMMANDS = [TrainSupernet(), EvalSubnet(), ImportSupernet(), TrainLM()]
