"""`hwnas bench ...`: each benchmark declares its arguments, runs nas.bench.<name> and prints its table."""

from __future__ import annotations

import argparse
from pathlib import Path

import devices
from nas.cli.base import Command, UserError, ints, print_table, space_arg


def _at_least_one(**values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise UserError(f"`{name} >= 1` must hold, but got {name}={value}")


class Device(Command):
    name, help = "device", "repeatability of profiling: naive vs interleaved, two passes"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--device", default="ort-cpu:threads=1")
        space_arg(parser, default="ofa_mbv3:resolutions=[160]")
        parser.add_argument("-n", type=int, default=30)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--group", type=int, default=10)

    def run(self, args: argparse.Namespace) -> None:
        from rich.table import Table

        from nas.bench.device import bench_device
        from nas.progress import console
        from search_spaces import load_space, sample_archs

        if args.n < 3:
            raise UserError(f"`-n >= 3` must hold (a rank agreement needs three architectures), but got -n {args.n}")
        space = load_space(args.space)
        device = devices.get(args.device)
        archs = sample_archs(space, args.n, args.seed)
        console.print(f"bench device: {len(archs)} {space.spec} architectures on {device.spec}, two passes per method")
        rows = bench_device(space, device, archs, group_size=args.group, log=console.print)
        table = Table(
            "timing method",
            "rank agreement (Spearman)",
            "median |diff| %",
            "s / pass",
            "mean ms",
            title=f"Repeatability on {device.spec} ({len(archs)} {space.spec} archs)",
        )
        for r in rows:
            table.add_row(
                r["method"],
                f"{r['spearman']:.3f}",
                f"{r['mdape_pct']:.2f}",
                f"{r['seconds_per_pass']:.0f}",
                f"{r['mean_ms']:.2f}",
            )
        print_table(table)


class Predictors(Command):
    name, help = "predictors", "HELP's 10-sample protocol on held-out devices, every predictor"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        space_arg(parser)
        parser.add_argument("--data", nargs="+", required=True)
        parser.add_argument(
            "--split",
            default="loho,dissimilar",
            help="comma list of: help, loho (leave one hardware out), loso (leave one source out: "
            "the devices of each table predicted from the other tables' devices), dissimilar",
        )
        parser.add_argument("--splits", help="HELP's splits.json (default: beside the first table)")
        parser.add_argument("--predictors", help="comma list (default: all)")
        parser.add_argument("--refs", type=int, default=10)

    def run(self, args: argparse.Namespace) -> None:
        import pandas as pd
        from rich.table import Table

        from nas.bench import predictors as bp
        from nas.latency.tables import read_tables
        from nas.progress import console
        from search_spaces import load_space

        space = load_space(args.space)
        table = read_tables(space, args.data)
        splits_file = Path(args.splits) if args.splits else Path(args.data[0]).parent / "splits.json"
        names = args.predictors.split(",") if args.predictors else list(bp.PREDICTORS)
        for which in args.split.split(","):
            rows = pd.DataFrame(bp.run(space, table, which, names, args.refs, splits_file, log=console.print))
            shown = [*names, "ceiling"]
            out = Table(
                "device",
                *shown,
                title=f"{space.spec}, split {which}: Spearman rho / Kendall tau / MAPE % with {args.refs} samples "
                "(ceiling: a model fitted on the device's own rows outside the query range)",
            )
            cell = "{:.3f} / {:.3f} / {:.1f}"
            for device, g in rows.groupby("device", sort=False):
                g = g.set_index("predictor")
                out.add_row(device, *(cell.format(*g.loc[n, ["spearman", "kendall", "mape"]]) for n in shown))
            for src, g in rows.groupby("source", sort=False):
                mean = g.groupby("predictor")[["spearman", "kendall", "mape"]].mean()
                out.add_row(f"[b]mean {src}[/b]", *(f"[b]{cell.format(*mean.loc[n])}[/b]" for n in shown))
            mean = rows.groupby("predictor")[["spearman", "kendall", "mape"]].mean()
            out.add_row("[b]mean[/b]", *(f"[b]{cell.format(*mean.loc[n])}[/b]" for n in shown))
            print_table(out)
            print(f"published, on HELP's own test devices (not these): {bp.PUBLISHED.get(space.name, 'n/a')}")


class Calibrate(Command):
    name, help = "calibrate", "the few-shot loop on a real device: 10 references, then fresh archs measured"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--device", default="ort-cpu:threads=1")
        space_arg(parser, default="ofa_mbv3")
        parser.add_argument("-n", type=int, default=60)
        parser.add_argument("--refs", type=int, default=10)
        parser.add_argument("--base")
        parser.add_argument("--seed", type=int, default=1)

    def run(self, args: argparse.Namespace) -> None:
        from rich.table import Table

        from nas.bench.calibrate import bench_calibrate
        from nas.progress import console

        if args.n < 3:
            raise UserError(f"`-n >= 3` must hold (fresh architectures to score on), but got -n {args.n}")
        _at_least_one(refs=args.refs)
        device = devices.get(args.device)
        rows = bench_calibrate(args.space, device, args.n, args.refs, args.base, args.seed, log=console.print)
        out = Table(
            "predictor",
            "Spearman",
            "Kendall",
            "MAPE %",
            "fresh archs",
            "mean ms",
            title=f"Calibrated from {args.refs} measurements on {device.spec}, scored on fresh {args.space} archs",
        )
        for r in rows:
            out.add_row(
                r["predictor"],
                f"{r['spearman']:.3f}",
                f"{r['kendall']:.3f}",
                f"{r['mape']:.1f}",
                str(r["test_archs"]),
                f"{r['mean_ms']:.2f}",
            )
        print_table(out)


class Supernet(Command):
    name, help = "supernet", "supernet training step vs the standalone largest subnet; a run's accuracy"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        space_arg(parser, default="ofa_mbv3:resolutions=[32],num_classes=10")
        parser.add_argument("--batch-size", type=int, default=64)
        parser.add_argument("--rounds", type=int, default=10)
        parser.add_argument("--device", default="cpu", help="cpu or cuda")
        parser.add_argument("--run", help="a trained run directory: print its largest and smallest subnets' test top-1")

    def run(self, args: argparse.Namespace) -> None:
        from rich.table import Table

        from nas.bench.supernet import bench_accuracy, bench_throughput

        _at_least_one(batch_size=args.batch_size, rounds=args.rounds)
        rows = bench_throughput(args.space, args.batch_size, args.rounds, device=args.device)
        out = Table(
            "training step",
            "ms",
            "images/s",
            "subnet passes",
            "ms per pass",
            "per pass vs standalone",
            title=f"Training step, {args.space}, batch {args.batch_size}, {args.device}, median of "
            f"{args.rounds} interleaved rounds",
        )
        for r in rows:
            out.add_row(
                r["step"],
                f"{r['ms']:.1f}",
                f"{r['images_per_s']:.0f}",
                str(r["passes"]),
                f"{r['ms_per_pass']:.1f}",
                f"{r['vs_standalone']:.2f}x",
            )
        print_table(out)
        if args.run:
            acc = Table("subnet", "test top-1", "arch", title=f"Accuracy after training: {args.run}")
            for r in bench_accuracy(args.run):
                acc.add_row(r["subnet"], f"{r['test_top1']:.4f}", r["arch"])
            print_table(acc)


class Hybrid(Command):
    name, help = "hybrid", "hybrid_lm: per-mixer prefill and decode latency against length; proxy rank agreement"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--device", default="ort-cpu:threads=1")
        parser.add_argument("--mixers", default=",".join(("attn", "swa", "mamba2", "deltanet", "gdn")))
        parser.add_argument("--contexts", default="256,1024,4096", help="decode contexts, comma-separated")
        parser.add_argument("--prompts", default="128,512", help="prefill lengths, comma-separated")
        parser.add_argument("--dim", type=int, default=256)
        parser.add_argument("--layers", type=int, default=4)
        parser.add_argument("--window", type=int, default=128, help="sliding-window attention's window")
        parser.add_argument("--archs", type=int, default=12, help="architectures for the proxy agreement (0: skip it)")
        parser.add_argument("--short", type=int, default=100, help="proxy training steps")
        parser.add_argument("--long", type=int, default=400, help="the longer training it is compared with")
        parser.add_argument("--seq-len", type=int, default=64, help="bytes per training window of the proxy agreement")
        parser.add_argument("--batch", type=int, default=16, help="windows per step of the proxy agreement")
        parser.add_argument("--text", help="a text file or directory (default: Python's bundled pydoc topics)")
        parser.add_argument(
            "--run", help="a finished hybrid_lm run: its winner against the baselines, decode measured afresh"
        )
        parser.add_argument(
            "--front",
            action="store_true",
            help="with --run: also every other hybrid on the run's front within the budget (trains their baselines)",
        )
        parser.add_argument(
            "--arch", action="append", help="with --run: also this architecture of the run's space (repeatable)"
        )
        parser.add_argument(
            "--seeds", type=int, default=1, help="with --run: bits per byte as the mean of this many proxy seeds"
        )
        parser.add_argument("--groups", type=int, default=3, help="with --run: interleaved decode timing groups")
        parser.add_argument("--time-on", help="with --run: time decode on this device spec instead of the run's")
        parser.add_argument("--out", default="runs/bench_hybrid")

    def run(self, args: argparse.Namespace) -> None:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        self.operators(args, out)
        if args.archs > 1:
            self.proxy(args, out)
        if args.run:
            self.found(args, out)
        print(f"tables and operator_latency.png in {out}")

    @staticmethod
    def operators(args: argparse.Namespace, out: Path) -> None:
        """Per-mixer decode and prefill latency against length: csv, plot and table."""
        import pandas as pd
        from rich.table import Table

        from nas.bench import hybrid as bh
        from nas.progress import console

        contexts, prompts, mixers = (
            ints(args.contexts, "--contexts"),
            ints(args.prompts, "--prompts"),
            args.mixers.split(","),
        )
        rows = bh.operator_latency(
            args.device, mixers, contexts, prompts, args.dim, layers=args.layers, window=args.window, log=console.print
        )
        pd.DataFrame(rows).to_csv(out / "operator_latency.csv", index=False)
        title = f"{args.layers} x (mixer + FFN), d{args.dim}, batch 1, {args.device}"
        bh.plot_operator_latency(rows, out / "operator_latency.png", title)
        table = Table(
            "mixer",
            *(f"decode ms @{c}" for c in contexts),
            *(f"prefill ms @{p}" for p in prompts),
            title=f"Per-operator latency: {title}",
        )
        for mixer in mixers:
            get = {(r["phase"], r["tokens"]): r["ms"] for r in rows if r["mixer"] == mixer}
            table.add_row(
                mixer, *(f"{get['decode', c]:.2f}" for c in contexts), *(f"{get['prefill', p]:.1f}" for p in prompts)
            )
        print_table(table)

    @staticmethod
    def proxy(args: argparse.Namespace, out: Path) -> None:
        """The proxy's rank agreement with the longer training."""
        import pandas as pd
        from rich.table import Table

        from nas.bench import hybrid as bh
        from nas.progress import console

        prows, agree = bh.proxy_agreement(
            args.archs, args.short, args.long, args.seq_len, args.batch, text=args.text, log=console.print
        )
        pd.DataFrame(prows).to_csv(out / "proxy_agreement.csv", index=False)
        t = Table(
            "arch",
            "params",
            f"bpb @{args.short} steps",
            f"bpb @{args.long} steps",
            title=f"Proxy rank agreement ({args.batch} x {args.seq_len} bytes a step) on "
            f"{args.text or 'pydoc topics'}: Spearman {agree['spearman']:.3f}, "
            f"Kendall {agree['kendall']:.3f} (Nemotron-Flash reported 0.888)",
        )
        for r in prows:
            t.add_row(r["arch"], f"{r['params']:,}", f"{r['short_bpb']:.3f}", f"{r['long_bpb']:.3f}")
        print_table(t)

    @staticmethod
    def found(args: argparse.Namespace, out: Path) -> None:
        """A finished run's winner (and more, as asked) against the all-attention and all-Mamba2 baselines."""
        import pandas as pd
        from rich.table import Table

        from nas.bench import hybrid as bh
        from nas.progress import console

        crows = bh.compare_run(
            args.run,
            groups=args.groups,
            front=args.front,
            archs=args.arch or (),
            seeds=args.seeds,
            device=args.time_on,
            log=console.print,
        )
        pd.DataFrame(crows).to_csv(out / "found_vs_baselines.csv", index=False)
        what = " and ".join(
            ["the winner"]
            + (["the other hybrids on the front within the budget"] if args.front else [])
            + (["the given architectures"] if args.arch else [])
        )
        t = Table(
            "model",
            "arch",
            "params",
            "val bits/byte",
            "decode ms/token",
            "the found model against it",
            "evidence",
            title=f"{args.run}: {what} against all-attention and all-Mamba2 stacks of its depth "
            f"and parameter count (bits/byte: mean of {args.seeds} seed(s); decode: median "
            f"of {args.groups} interleaved groups)",
        )
        for i, r in enumerate(crows):
            if i and r["model"] == "found":
                t.add_section()
            t.add_row(
                r["model"],
                r["arch"],
                f"{r['params']:,}",
                f"{r['val_bpb']:.3f}",
                f"{r['decode_ms']:.3f}",
                r.get("found_vs_this", ""),
                r.get("evidence", ""),
            )
        print_table(t)


class Quantize(Command):
    name, help = "quantize", "mixed precision against fp32, int8, Hessian-only and ILP on trained models"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--models", default="mobilenetv2,resnet", help="comma-separated: mobilenetv2, resnet")
        parser.add_argument("--run", help="also quantize this hwnas run's winner")
        parser.add_argument("--data", default="digits", help="digits, cifar10:PATH or cifar100:PATH")
        parser.add_argument("--resolution", type=int, default=64)
        parser.add_argument("--epochs", type=int, default=8)
        parser.add_argument("--device", default="ort-cpu:threads=1")
        parser.add_argument("--tolerance", type=float, default=0.5)
        parser.add_argument(
            "--methods",
            default="hessian+bisect,interlayer+bisect,interlayer+latency,hessian+ilp",
            help="sensitivity+search pairs to compare, comma-separated",
        )
        parser.add_argument(
            "--peer",
            choices=("inc",),
            help="also Intel Neural Compressor's accuracy-driven int8 tuning of the same fp32 model (needs .[peers])",
        )
        parser.add_argument(
            "--groups", type=int, default=5, help="with --peer: more interleaved timing groups for the paired verdict"
        )
        parser.add_argument("--out", default="runs/bench_quantize")

    def run(self, args: argparse.Namespace) -> None:
        from nas.bench.quantize import bench_quantize, parse_methods
        from nas.progress import console

        if args.groups < 1:
            raise ValueError(f"`--groups >= 1` must hold, but got --groups={args.groups}")

        models = [m for m in args.models.split(",") if m]
        rows, preds, verdicts = bench_quantize(
            models,
            args.data,
            args.resolution,
            args.epochs,
            args.device,
            args.tolerance,
            args.out,
            args.run,
            log=console.print,
            methods=parse_methods(args.methods),
            peer=args.peer,
            groups=args.groups,
        )
        _print_quantize_rows(rows, args)
        _print_peer_lines(rows, verdicts)
        _print_quantize_predictors(preds)


def _print_quantize_rows(rows: list[dict], args: argparse.Namespace) -> None:
    """`bench quantize`'s table: every configuration of every model (* marks hwnas's choice)."""
    from rich.table import Table

    t = Table(
        "model",
        "configuration",
        "form",
        "int8 layers",
        "latency (ms)",
        "vs fp32",
        "val top-1",
        "test top-1",
        "test drop",
        "within tolerance",
        "search (s)",
        title=f"{args.data} at {args.resolution} px on {args.device}, tolerance {args.tolerance} points "
        "(validation split); latency measured interleaved per model",
    )
    for r in rows:
        t.add_row(
            r["model"],
            r["config"] + (" *" if r["chosen"] else ""),
            r["format"],
            r["int8_layers"],
            f"{r['latency_ms']:.4f}",
            f"{r['speedup']:.2f}x",
            f"{100 * r['val_top1']:.2f}",
            f"{100 * r['test_top1']:.2f}",
            f"{r['test_drop']:+.2f}",
            "yes" if r["within"] else "no",
            f"{r['search_s']:.0f}",
        )
    print_table(t)
    print(
        "* the configuration hwnas quantize would choose: the fastest that holds the tolerance on the validation split"
    )


def _print_peer_lines(rows: list[dict], verdicts: list[dict]) -> None:
    """hwnas's choice against each peer: in the table's group, then the paired verdict over more groups."""
    import numpy as np

    for model in dict.fromkeys(r["model"] for r in rows):
        chosen = next(r for r in rows if r["model"] == model and r["chosen"])
        for peer in (r for r in rows if r["model"] == model and r["peer"]):
            print(
                f"{model}: hwnas's choice {chosen['config']} {chosen['latency_ms']:.4f} ms "
                f"(test drop {chosen['test_drop']:+.2f}) vs {peer['config']} {peer['latency_ms']:.4f} ms "
                f"(test drop {peer['test_drop']:+.2f}, {peer['tuning']}, {peer['search_s']:.0f} s): "
                f"{peer['latency_ms'] / chosen['latency_ms']:.2f}x"
            )
    for v in verdicts:
        ratio = np.median(np.array(v["peer_ms"]) / np.array(v["hwnas_ms"]))
        print(
            f"{v['model']}: hwnas's choice vs {v['peer_name']} over {v['groups']} more interleaved groups: "
            f"{v['verdict']} (median {v['peer_name']} / hwnas {ratio:.3f}x; "
            f"hwnas {', '.join(f'{x:.4f}' for x in v['hwnas_ms'])} ms, "
            f"{v['peer_name']} {', '.join(f'{x:.4f}' for x in v['peer_ms'])} ms)"
        )


def _print_quantize_predictors(preds: list[dict]) -> None:
    """The precision-aware latency model against HAWQ-V3's additive table, per model."""
    from rich.table import Table

    p = Table(
        "model",
        "layers",
        "additive table: measurements",
        "additive table: MAPE",
        "precision-aware: measurements",
        "precision-aware: MAPE",
        "held-out configs (max/min latency)",
        title="Latency of mixed-precision configurations, predicted vs measured (random held-out configurations)",
    )
    for r in preds:
        p.add_row(
            r["model"],
            f"{r['layers']}",
            f"{r['additive_measurements']}",
            f"{r['additive_mape']:.1f}%",
            f"{r['fit']}",
            f"{r['precision_mape']:.1f}%",
            f"{r['test']} ({r['spread']:.2f}x)",
        )
    print_table(p)


class Joint(Command):
    name, help = "joint", "joint architecture + precision search against fp32 search then quantize, one budget"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("run", help="a run directory with a trained supernet (RUN/supernet)")
        parser.add_argument(
            "--budget-fraction", type=float, default=0.6, help="of the largest subnet's measured fp32 latency"
        )
        parser.add_argument("--trials", type=int, help="candidates per search (default: the run's recipe)")
        parser.add_argument("--tolerance", type=float, default=0.5)
        parser.add_argument("--device", help="device spec (default: the run's)")
        parser.add_argument("--out", default="runs/bench_joint")

    def run(self, args: argparse.Namespace) -> None:
        from rich.table import Table

        from nas.bench.joint import bench_joint
        from nas.progress import console, progress_bar

        rows, info = bench_joint(
            args.run,
            args.out,
            args.budget_fraction,
            args.trials,
            args.tolerance,
            args.device,
            log=console.print,
            progress=progress_bar,
        )
        t = Table(
            "search",
            "winner",
            "searched on",
            "val top-1 (as searched)",
            "deployed precision",
            "int8 layers",
            "deployed latency (ms)",
            "within budget",
            "deployed test top-1",
            "fp32 test top-1",
            title=f"{info['dataset']} ({info['test_images']} test images), budget {info['budget_ms']:.3f} ms "
            f"deployed on {info['device']} (final group: {info['final_budget_ms']:.3f} ms), tolerance "
            f"{info['tolerance']} points; deployed winners measured interleaved with the largest subnet",
        )

        def pct(v: float | None) -> str:
            return "-" if v is None else f"{100 * v:.2f}"

        for r in rows:
            t.add_row(
                r["mode"],
                str(r["arch"]),
                r["search_device"],
                pct(r["search_val_top1"]),
                str(r["config"]),
                r["int8_layers"],
                "-" if r["deployed_ms"] is None else f"{r['deployed_ms']:.3f}",
                "yes" if r["within_budget"] else "no",
                pct(r["test_top1"]),
                pct(r["fp32_test_top1"]),
            )
        print_table(t)
        print(f"written to {args.out} (bench_joint.json, and a run directory per search)")


class Search(Command):
    name, help = "search", "strategies on a finished run: hypervolume of their fronts, winners measured"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("run")
        parser.add_argument("--strategies", default="random,evolution,nsga2,optuna-nsga2,optuna-tpe")
        parser.add_argument("--seeds", type=int, default=3)
        parser.add_argument("--trials", type=int, default=100, help="accuracy evaluations per search")
        parser.add_argument("--population", type=int, default=20)
        parser.add_argument(
            "--peer",
            choices=("ofa",),
            help="also run Once-for-All's EvolutionFinder (needs .[peers]); every search then looks for the most "
            "accurate subnet under the run's budget",
        )

    def run(self, args: argparse.Namespace) -> None:
        from rich.table import Table

        from nas.bench.search import bench_search
        from nas.progress import console

        _at_least_one(seeds=args.seeds, trials=args.trials, population=args.population)
        table, info = bench_search(
            args.run,
            args.strategies.split(","),
            args.seeds,
            args.trials,
            args.population,
            log=console.print,
            peer=args.peer,
        )
        out = Table(
            "strategy",
            "hypervolume (mean ± sd)",
            "hypervolume under the budget",
            "best feasible val top-1",
            "winners' test top-1",
            "winners' measured ms",
            "winners meeting the budget measured",
            "accuracy evaluations",
            "proposals",
            "distinct archs",
            title=f"{args.trials} candidates x {args.seeds} seeds on {args.run} (objective {info['objective']}); "
            f"budget {info['budget_ms']:.3f} ms on {info['device']}; reference point ({info['ref_accuracy']:.4f}, "
            f"{info['ref_latency_ms']:.3f} ms)",
        )
        for r in table:
            out.add_row(
                r["strategy"],
                f"{r['hv_mean']:.5f} ± {r['hv_std']:.5f}",
                f"{r['hv_budget_mean']:.5f}",
                f"{r['best_feasible_acc']:.4f}",
                f"{r['test_acc']:.4f}",
                f"{r['measured_ms']:.3f}",
                f"{r['winners_meet']}/{r['winners']}",
                f"{r['evaluations']:.0f}",
                "-" if r["peer"] else f"{r['proposals']:.0f}",
                f"{r['distinct']:.0f}",
            )
        print_table(out)
        print(f"accuracy evaluations: {info['evaluated']} new, {info['cached']} from the run's cache")
        for name, wins in info.get("seed_wins", {}).items():
            print(f"{name}: winner at least as accurate (val) as {table[-1]['strategy']}'s in {wins} seeds")


class Sampler(Command):
    name, help = "sampler", "trials per second of the search strategies as a study grows (dummy objective)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--strategies", default="nsga2,evolution,random")
        parser.add_argument("--storage", required=True, help="e.g. postgresql://user@host/db or sqlite:///s.db")
        parser.add_argument("--trials", type=int, default=5000)
        parser.add_argument("--window", type=int, default=100, help="trials per speed measurement")

    def run(self, args: argparse.Namespace) -> None:
        from rich.table import Table

        from nas.bench.sampler import bench_sampler
        from nas.progress import progress_bar
        from nas.recipes import check_storage

        _at_least_one(trials=args.trials, window=args.window)
        check_storage(args.storage, "--storage")
        with progress_bar("trials") as update:
            rows = bench_sampler(args.strategies.split(","), args.storage, args.trials, args.window, progress=update)
        table = Table(
            "strategy",
            f"trials/s, trials 1-{args.window}",
            f"trials/s, last {args.window} of {args.trials}",
            "ratio",
            title=f"Ask + tell speed in {args.storage.split('://')[0]} (nasbench201, dummy objective)",
        )
        for r in rows:
            table.add_row(r["strategy"], f"{r['first']:.1f}", f"{r['last']:.1f}", f"{r['last'] / r['first']:.2f}")
        print_table(table)


HELP = "benchmarks, printed as tables"


class Tabular(Command):
    name, help = "tabular", "search scored exactly: tabular accuracy x replayed device latency, regret per method"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--data", nargs="+", required=True, help="latency tables (devices replayed from them)")
        parser.add_argument("--accuracy", default="table:nasbench201:cifar10", help="table:NAME|PATH:COLUMN")
        space_arg(parser, default="nasbench201")
        parser.add_argument("--devices", help="comma list (default: every device of the tables)")
        parser.add_argument("--quantiles", default="0.1,0.3,0.5", help="budgets as quantiles of each device's latency")
        parser.add_argument("--seeds", type=int, default=3)
        parser.add_argument("--queries", type=int, default=100, help="accuracy queries per search")
        parser.add_argument("--strategies", default="surrogate,evolution,nsga2,random,optuna-tpe,optuna-nsga2")
        parser.add_argument(
            "--peer",
            choices=["ofa"],
            help="also Once-for-All's EvolutionFinder on the space's genes (ofa-evolution; needs .[peers])",
        )
        parser.add_argument("--no-ablations", action="store_true", help="skip the true-latency and FLOPs ablations")
        parser.add_argument("--population", type=int, default=20)
        parser.add_argument("--out", help="a folder for rows.csv and regret.png")

    def run(self, args: argparse.Namespace) -> None:
        from nas.bench import tabular
        from nas.progress import console, progress_bar

        _at_least_one(seeds=args.seeds, queries=args.queries)
        try:
            quantiles = [float(q) for q in args.quantiles.split(",")]
        except ValueError:
            raise UserError(f"--quantiles must be a comma list of numbers, but got {args.quantiles!r}") from None
        with progress_bar("searches") as update:
            rows, info = tabular.bench_tabular(
                args.data,
                args.accuracy,
                args.space,
                args.devices.split(",") if args.devices else None,
                quantiles,
                args.seeds,
                args.queries,
                [*args.strategies.split(","), *([tabular.OFA] if args.peer == "ofa" else [])],
                not args.no_ablations,
                args.population,
                log=console.print,
                progress=update,
            )
        methods = list(dict.fromkeys(r["method"] for r in rows))
        self.print_summary(rows, methods, info, args)
        if args.out:
            self.write(rows, methods, Path(args.out))

    @staticmethod
    def print_summary(rows: list[dict], methods: list[str], info: dict, args: argparse.Namespace) -> None:
        """Mean regret, winners within the budget and the paired verdict per budget quantile and method."""
        from rich.table import Table

        from nas.bench import tabular

        table = Table(
            "budget quantile",
            "method",
            "mean regret (points)",
            "winners within budget %",
            "best believed within budget %",
            f"{tabular.reference_method(rows, methods)} vs it",
            title=f"{info['accuracy']}: {len({r['device'] for r in rows})} devices x {args.seeds} seeds, "
            f"{args.queries} accuracy queries, {info['refs']} references",
        )
        for s in tabular.summary(rows, methods):
            table.add_row(
                f"{s['quantile']:g}",
                s["method"],
                f"{s['regret']:.3f}",
                f"{s['meets_pct']:.0f}",
                f"{s['unverified_meets_pct']:.0f}",
                s["default_vs"],
            )
        print_table(table)
        print("regret is scored against the same table the search queried (NAS-Bench-201 publishes test accuracy only)")

    @staticmethod
    def write(rows: list[dict], methods: list[str], out: Path) -> None:
        """rows.csv (without the regret curves) and regret.png in `out`."""
        import pandas as pd

        from nas.bench import tabular

        out.mkdir(parents=True, exist_ok=True)
        pd.DataFrame([{k: v for k, v in r.items() if k != "curve"} for r in rows]).to_csv(out / "rows.csv", index=False)
        tabular.plot_regret(rows, methods, out / "regret.png")
        print(f"rows and plot in {out}")


COMMANDS = [
    Device(),
    Predictors(),
    Supernet(),
    Hybrid(),
    Quantize(),
    Joint(),
    Search(),
    Calibrate(),
    Sampler(),
    Tabular(),
]
