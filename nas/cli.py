"""The `hwnas` command."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

import devices
import search_spaces
from nas.spaces import load_space, read_archs, sample_archs


class UserError(Exception):
    """An error caused by the user's input: printed as one line, exit status 2."""


def _space(args: argparse.Namespace) -> Any:
    return load_space(args.space)


def _policy(args: argparse.Namespace) -> devices.TimingPolicy | None:
    fields = {k: getattr(args, k) for k in ("runs_per_round", "min_rounds", "max_rounds") if getattr(args, k, None)}
    return devices.TimingPolicy(**fields) if fields else None


def cmd_spaces(args: argparse.Namespace) -> None:
    from rich.table import Table

    from nas.progress import Console

    table = Table("space", "architectures", "encoding", "input", "about")
    for name in search_spaces.names():
        space = search_spaces.create(name)
        arch = space.sample(np.random.default_rng(0))
        size = space.size()
        about = (sys.modules[type(space).__module__].__doc__ or "").strip().splitlines()[0]
        table.add_row(name, f"{size:.3g}" if size > 1e6 else str(size), str(space.encoding_size),
                      "x".join(map(str, space.input_shape(arch)[1:])), about)
    Console(width=120).print(table)


def cmd_sample(args: argparse.Namespace) -> None:
    space = _space(args)
    for arch in sample_archs(space, args.n, args.seed):
        print(space.to_str(arch))


def cmd_profile(args: argparse.Namespace) -> None:
    from nas.profile import check_output, profile
    from nas.progress import console, progress_bar

    space = _space(args)
    if (args.archs is None) == (args.n is None):
        raise UserError("profile needs exactly one of --archs FILE or -n N")
    archs = read_archs(space, args.archs) if args.archs else sample_archs(space, args.n, args.seed)
    device = devices.get(args.device)
    check_output(args.out)
    with progress_bar(f"profiling on {device.spec}") as update:
        rows = profile(space, device, archs, args.out, group_size=args.group, policy=_policy(args), progress=update)
    console.print(f"{len(rows)} new rows in {args.out} ({len(archs) - len(rows)} already there)")


def cmd_device_serve(args: argparse.Namespace) -> None:
    from devices.agent import make_server, new_token
    from devices.remote import TOKEN_ENV

    device = devices.get(args.device)
    token = args.token or os.environ.get(TOKEN_ENV) or new_token()
    server = make_server(device, token, args.host, args.port)
    host, port = server.server_address[:2]
    print(f"hwnas device agent for {device.spec} on http://{host}:{port}", flush=True)
    if not (args.token or os.environ.get(TOKEN_ENV)):
        print(f"token: {token}   (clients: export {TOKEN_ENV}={token})", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def cmd_device_info(args: argparse.Namespace) -> None:
    print(json.dumps(devices.get(args.device).fingerprint(), indent=2))


def cmd_bench_device(args: argparse.Namespace) -> None:
    from rich.table import Table

    from nas.bench_device import bench_device
    from nas.progress import Console, console

    space = _space(args)
    device = devices.get(args.device)
    archs = sample_archs(space, args.n, args.seed)
    console.print(f"bench device: {len(archs)} {space.spec} architectures on {device.spec}, two passes per method")
    rows = bench_device(space, device, archs, group_size=args.group, log=console.print)
    table = Table("timing method", "rank agreement (Spearman)", "median |diff| %", "s / pass", "mean ms",
                  title=f"Repeatability on {device.spec} ({len(archs)} {space.spec} archs)")
    for r in rows:
        table.add_row(r["method"], f"{r['spearman']:.3f}", f"{r['mdape_pct']:.2f}", f"{r['seconds_per_pass']:.0f}", f"{r['mean_ms']:.2f}")
    Console(width=120).print(table)


def cmd_meta_train(args: argparse.Namespace) -> None:
    from nas.calibration import meta_train

    meta = meta_train(args.space, args.data, args.out, args.predictor, args.all_rows)
    print(f"meta-trained {args.predictor} on {len(meta['devices'])} devices x {meta['rows']} architectures -> {args.out}")


def cmd_reference(args: argparse.Namespace) -> None:
    from nas.calibration import reference

    space = _space(args)
    pool = read_archs(space, args.pool) if args.pool else None
    for arch in reference(args.space, args.n, pool, args.base):
        print(space.to_str(arch))


def cmd_calibrate(args: argparse.Namespace) -> None:
    from nas.calibration import calibrate

    meta = calibrate(args.space, args.measurements, args.out, args.base, args.device)
    print(f"calibrated on {meta['samples']} measurements -> {args.out}")


def cmd_predict(args: argparse.Namespace) -> None:
    import csv

    from nas.calibration import predict

    names, ms = predict(args.predictor, args.archs)
    f = open(args.out, "w", newline="", encoding="utf-8") if args.out else sys.stdout
    try:
        w = csv.writer(f)
        w.writerow(["arch", "latency_ms"])
        w.writerows(zip(names, np.round(ms, 5)))
    finally:
        if args.out:
            f.close()


def cmd_bench_predictors(args: argparse.Namespace) -> None:
    from pathlib import Path

    import pandas as pd
    from rich.table import Table

    from nas import bench_predictors as bp
    from nas.latency_data import read_tables
    from nas.progress import Console, console

    space = _space(args)
    table = read_tables(space, args.data)
    splits_file = Path(args.splits) if args.splits else Path(args.data[0]).parent / "splits.json"
    names = args.predictors.split(",") if args.predictors else list(bp.PREDICTORS)
    for which in args.split.split(","):
        rows = pd.DataFrame(bp.run(space, table, which, names, args.refs, splits_file, log=console.print))
        out = Table("device", *names, title=f"{space.spec}, split {which}: Spearman rho / Kendall tau / MAPE % with {args.refs} samples")
        for device, g in rows.groupby("device", sort=False):
            g = g.set_index("predictor")
            out.add_row(device, *(f"{g.loc[n, 'spearman']:.3f} / {g.loc[n, 'kendall']:.3f} / {g.loc[n, 'mape']:.1f}" for n in names))
        mean = rows.groupby("predictor")[["spearman", "kendall", "mape"]].mean()
        out.add_row("[b]mean[/b]", *(f"[b]{mean.loc[n, 'spearman']:.3f} / {mean.loc[n, 'kendall']:.3f} / {mean.loc[n, 'mape']:.1f}[/b]" for n in names))
        Console(width=160).print(out)
        print(f"published, on HELP's own test devices (not these): {bp.PUBLISHED.get(space.name, 'n/a')}")


def cmd_bench_calibrate(args: argparse.Namespace) -> None:
    from rich.table import Table

    from nas.bench_calibrate import bench_calibrate
    from nas.progress import Console, console

    device = devices.get(args.device)
    rows = bench_calibrate(args.space, device, args.n, args.refs, args.base, args.seed, log=console.print)
    out = Table("predictor", "Spearman", "Kendall", "MAPE %", "fresh archs", "mean ms",
                title=f"Calibrated from {args.refs} measurements on {device.spec}, scored on fresh {args.space} archs")
    for r in rows:
        out.add_row(r["predictor"], f"{r['spearman']:.3f}", f"{r['kendall']:.3f}", f"{r['mape']:.1f}", str(r["test_archs"]), f"{r['mean_ms']:.2f}")
    Console(width=120).print(out)


def cmd_train_supernet(args: argparse.Namespace) -> None:
    from pathlib import Path

    from nas.progress import console, progress_bar
    from nas.recipes import load_recipe
    from nas.runs import train_supernet

    recipe = load_recipe(args.recipe)
    run = Path(args.out or Path("runs") / Path(args.recipe).stem)
    if int(os.environ.get("RANK", "0")) == 0:
        with progress_bar("training supernet") as update:
            metrics = train_supernet(recipe, run, update)
        for m in metrics:
            console.print(f"epoch {m['epoch']}: loss {m['loss']:.3f}, largest {m['acc_largest']:.3f}, smallest {m['acc_smallest']:.3f}")
        console.print(f"run directory: {run}")
    else:
        train_supernet(recipe, run)


def cmd_train_lm(args: argparse.Namespace) -> None:
    import yaml

    from nas.lm_proxy import TextData, load_text
    from nas.lm_train import LMTrainConfig, train_lm
    from nas.progress import console, progress_bar

    space_spec, arch, text = args.space, args.arch, args.text
    if args.run:
        run = Path(args.run)
        try:
            recipe = yaml.safe_load((run / "recipe.yaml").read_text())
            result = json.loads((run / "result.json").read_text())
        except (OSError, ValueError, yaml.YAMLError) as err:
            raise UserError(f"{run}: not a finished hybrid_lm run ({getattr(err, 'strerror', None) or err})") from None
        space_spec = space_spec or recipe.get("space")
        text = text or (recipe.get("proxy") or {}).get("text")
        if arch is None:
            if not result.get("winner"):
                raise UserError(f"{run / 'result.json'}: the run has no winner; name one with --arch")
            arch = result["winner"]["arch"]
    if not arch or not space_spec:
        raise UserError("train-lm needs a hybrid_lm run directory, or --arch and --space")
    space = load_space(space_spec)
    if space.name != "hybrid_lm":
        raise UserError(f"train-lm trains hybrid_lm architectures, but got space {space.spec!r}")
    text_arch, bar, variant = arch.partition("|")
    arch = space.to_str(space.from_str(text_arch)) + bar + variant
    config = LMTrainConfig(steps=args.steps, batch=args.batch, seq_len=args.seq_len, lr=args.lr, seed=args.seed,
                           eval_every=args.eval_every, checkpoint_every=args.checkpoint_every, val_windows=args.val_windows,
                           device=args.device)
    data = TextData.from_bytes(load_text(text))
    out = Path(args.out)
    if int(os.environ.get("RANK", "0")) != 0:
        train_lm(space, arch, data, config, out)
        return
    console.print(f"train-lm: {arch}, {config.steps} steps of "
                  f"{config.batch} x {config.seq_len} bytes, world size {os.environ.get('WORLD_SIZE', '1')} -> {out}")
    with progress_bar("training") as update:
        meta = train_lm(space, arch, data, config, out, update)
    if meta["best_step"] < meta["trained_steps"]:
        console.print(f"validation bits per byte were lowest at step {meta['best_step']} ({meta['best_val_bpb']:.3f}), not at the "
                      f"end ({meta['val_bpb']:.3f}): the model is likely overfitting the text; give it more (--text) or fewer steps")
    console.print(f"{meta['params']:,} parameters: validation {meta['val_bpb']:.3f} bits per byte after {meta['trained_steps']} steps; "
                  f"{out / 'model.onnx'} matches PyTorch (max abs diff {meta['onnxruntime_max_abs_diff']:.1e})")


def cmd_eval_subnet(args: argparse.Namespace) -> None:
    from nas.runs import load_supernet_run

    run = load_supernet_run(args.run)
    arch = run.net.space.from_str(args.arch)
    acc = run.accuracy(args.split)
    print(f"{args.split} top-1 of {args.arch}: {acc(arch):.4f}{' (cached)' if acc.hits else ''}")


def cmd_bench_supernet(args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    from nas.bench_supernet import bench_accuracy, bench_throughput

    rows = bench_throughput(args.space, args.batch_size, args.rounds, device=args.device)
    out = Table("training step", "ms", "images/s", "subnet passes", "ms per pass", "per pass vs standalone",
                title=f"Training step, {args.space}, batch {args.batch_size}, {args.device}, median of {args.rounds} interleaved rounds")
    for r in rows:
        out.add_row(r["step"], f"{r['ms']:.1f}", f"{r['images_per_s']:.0f}", str(r["passes"]), f"{r['ms_per_pass']:.1f}",
                    f"{r['vs_standalone']:.2f}x")
    Console(width=140).print(out)
    if args.run:
        acc = Table("subnet", "test top-1", "arch", title=f"Accuracy after training: {args.run}")
        for r in bench_accuracy(args.run):
            acc.add_row(r["subnet"], f"{r['test_top1']:.4f}", r["arch"])
        Console(width=200).print(acc)


def _pipeline(args: argparse.Namespace) -> Any:
    from nas.pipeline import Pipeline
    from nas.progress import console, progress_bar
    from nas.recipes import load_recipe

    recipe = load_recipe(args.recipe)
    if getattr(args, "storage", None):
        recipe.search.storage = args.storage
    if getattr(args, "study_name", None):
        recipe.search.study_name = args.study_name
    run = Path(args.out or Path("runs") / Path(args.recipe).stem)
    return Pipeline(recipe, run, log=console.print, progress=progress_bar), console


def cmd_run(args: argparse.Namespace) -> None:
    import yaml

    from nas.hybrid_run import HybridRun, hybrid_recipe_from_dict, is_hybrid_recipe

    try:
        raw = yaml.safe_load(Path(args.recipe).read_text())
    except (OSError, yaml.YAMLError):
        raw = None  # load_recipe reports it
    if is_hybrid_recipe(raw):
        from nas.progress import console, progress_bar

        recipe = hybrid_recipe_from_dict(raw, args.recipe)
        if getattr(args, "storage", None):
            recipe.search.storage = args.storage
        run = HybridRun(recipe, args.out or Path("runs") / Path(args.recipe).stem, log=console.print, progress=progress_bar)
        result, run_dir = run.execute(), run.run
        w = result["winner"]
        found = w and (f"winner: {w['arch']}: {w['val_bpb']:.3f} bits/byte, {w['decode_ms']:.3f} ms per token "
                       f"(budget {result['budget_ms']:.3f} ms)")
        missed = f"no candidate met the {result['budget_ms']:.3f} ms budget"
        for row in result["compared"]:
            console.print(f"  {row['model']}: {row['params']:,} params, {row['val_bpb']:.3f} bits/byte, {row['decode_ms']:.3f} ms "
                          f"per token (one interleaved group){'; the found model against it: ' + row['found_vs_this'] if 'found_vs_this' in row else ''}")
    else:
        pipe, console = _pipeline(args)
        result, run_dir = pipe.execute(), pipe.run
        w = result["winner"]
        found = w and (f"winner: test top-1 {w['test_top1']:.4f}, measured {w['measured_ms']:.3f} ms "
                       f"(budget {result['budget_ms']:.3f} ms, predicted {w['predicted_ms']:.3f} ms)")
        missed = f"no candidate met the {result['budget_ms']:.3f} ms budget when measured"
    console.print(f"{found} -> {run_dir / 'best'}" if found else missed)
    console.print(f"report: {run_dir / 'report.md'}")


def cmd_search(args: argparse.Namespace) -> None:
    from nas.search import Objective

    pipe, console = _pipeline(args)
    sn = pipe.supernet()
    pred, pred_meta = pipe.predictor(sn.net.space)
    budget, _ = pipe.budget(sn.net.space, sn.net)
    cfg = pipe.recipe.search
    trials = pipe.search(sn, pred, pred_meta, Objective(cfg.objective, budget_ms=budget, w=cfg.soft_w))
    console.print(f"study {cfg.study_name!r} holds {len(trials)} finished candidates")


def cmd_export(args: argparse.Namespace) -> None:
    from nas.pipeline import export_run

    meta = export_run(args.run, args.arch, args.format, args.fp16, args.int8, args.out)
    check = meta["check"]["onnxruntime"]
    print(f"exported {meta['arch']} to {args.out or args.run + '/best'}: {', '.join(meta['files'].values())}; "
          f"onnxruntime vs PyTorch max |diff| {check['max_abs_diff']:.2e} (rtol {check['rtol']}, atol {check['atol']})")
    if "int8_test_top1" in meta:
        print(f"int8 ONNX test top-1 {meta['int8_test_top1']:.4f} (float {meta['test_top1']:.4f})")


def cmd_quantize(args: argparse.Namespace) -> None:
    from nas.progress import console
    from nas.quantize.runs import quantize_run

    r = quantize_run(args.run, args.device, args.arch, args.tolerance, args.calib, args.method, args.search, args.out,
                     log=console.print, activations=args.activations, calibration=args.calibration)
    _print_quantized(r, args.out or str(Path(args.run) / "quantized"))


def _print_quantized(r: dict, out: str) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table("configuration", "int8 layers", "latency (ms)", "vs fp32", "val top-1", "test top-1", "within tolerance",
              title=f"{r.get('dataset', '')} on {r['device']}, tolerance {r['tolerance_points']} points ({r['method']}, {r['search']})")
    fp32 = r["configs"][0]["latency_ms"]
    for c in r["configs"]:
        name = f"{c['config']} (chosen)" if c["config"] == r["chosen"] else c["config"]
        t.add_row(name, f"{c['int8_layers']}", f"{c['latency_ms']:.4f}", f"{fp32 / c['latency_ms']:.2f}x", f"{100 * c['val_top1']:.2f}",
                  f"{100 * c['test_top1']:.2f}", "yes" if c["within_tolerance"] else "no")
    Console(width=150).print(t)
    print(f"int8 activations: {r.get('int8_activations')}; chosen: {r['chosen']}, {r['speedup_vs_fp32']:.2f}x the speed of fp32, test drop {r['test_drop_points']:.2f} points; "
          f"written to {out} (model.onnx, model.json, quantize.png)")


def cmd_bench_hybrid(args: argparse.Namespace) -> None:
    import pandas as pd
    from rich.table import Table

    from nas import bench_hybrid as bh
    from nas.progress import Console, console

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ints = lambda text: [int(x) for x in text.split(",")]  # noqa: E731
    rows = bh.operator_latency(args.device, args.mixers.split(","), ints(args.contexts), ints(args.prompts),
                               args.dim, layers=args.layers, window=args.window, log=console.print)
    pd.DataFrame(rows).to_csv(out / "operator_latency.csv", index=False)
    title = f"{args.layers} x (mixer + FFN), d{args.dim}, batch 1, {args.device}"
    bh.plot_operator_latency(rows, out / "operator_latency.png", title)
    table = Table("mixer", *(f"decode ms @{c}" for c in ints(args.contexts)), *(f"prefill ms @{p}" for p in ints(args.prompts)),
                  title=f"Per-operator latency: {title}")
    for mixer in args.mixers.split(","):
        get = {(r["phase"], r["tokens"]): r["ms"] for r in rows if r["mixer"] == mixer}
        table.add_row(mixer, *(f"{get['decode', c]:.2f}" for c in ints(args.contexts)),
                      *(f"{get['prefill', p]:.1f}" for p in ints(args.prompts)))
    Console(width=160).print(table)
    if args.archs > 1:
        prows, agree = bh.proxy_agreement(args.archs, args.short, args.long, args.seq_len, args.batch, text=args.text,
                                          log=console.print)
        pd.DataFrame(prows).to_csv(out / "proxy_agreement.csv", index=False)
        t = Table("arch", "params", f"bpb @{args.short} steps", f"bpb @{args.long} steps",
                  title=f"Proxy rank agreement ({args.batch} x {args.seq_len} bytes a step) on {args.text or 'pydoc topics'}: Spearman {agree['spearman']:.3f}, "
                        f"Kendall {agree['kendall']:.3f} (Nemotron-Flash reported 0.888)")
        for r in prows:
            t.add_row(r["arch"], f"{r['params']:,}", f"{r['short_bpb']:.3f}", f"{r['long_bpb']:.3f}")
        Console(width=160).print(t)
    if args.run:
        crows = bh.compare_run(args.run, groups=args.groups, front=args.front, archs=args.arch or (), seeds=args.seeds,
                               device=args.time_on, log=console.print)
        pd.DataFrame(crows).to_csv(out / "found_vs_baselines.csv", index=False)
        what = " and ".join(["the winner"] + (["the other hybrids on the front within the budget"] if args.front else [])
                            + (["the given architectures"] if args.arch else []))
        t = Table("model", "arch", "params", "val bits/byte", "decode ms/token", "the found model against it", "evidence",
                  title=f"{args.run}: {what} against all-attention and all-Mamba2 stacks of its depth and parameter count "
                        f"(bits/byte: mean of {args.seeds} seed(s); decode: median of {args.groups} interleaved groups)")
        for i, r in enumerate(crows):
            if i and r["model"] == "found":
                t.add_section()
            t.add_row(r["model"], r["arch"], f"{r['params']:,}", f"{r['val_bpb']:.3f}", f"{r['decode_ms']:.3f}",
                      r.get("found_vs_this", ""), r.get("evidence", ""))
        Console(width=200).print(t)
    print(f"tables and operator_latency.png in {out}")


def cmd_bench_quantize(args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    from nas.bench_quantize import bench_quantize
    from nas.progress import console

    rows, preds = bench_quantize(args.models.split(","), args.data, args.resolution, args.epochs, args.device, args.tolerance,
                                 args.out, args.run, log=console.print)
    t = Table("model", "configuration", "int8 layers", "latency (ms)", "vs fp32", "val top-1", "test top-1", "test drop",
              "within tolerance", "search (s)", title=f"{args.data} at {args.resolution} px on {args.device}, tolerance "
              f"{args.tolerance} points (validation split); latency measured interleaved per model")
    for r in rows:
        t.add_row(r["model"], r["config"] + (" *" if r["chosen"] else ""), r["int8_layers"], f"{r['latency_ms']:.4f}",
                  f"{r['speedup']:.2f}x", f"{100 * r['val_top1']:.2f}", f"{100 * r['test_top1']:.2f}", f"{r['test_drop']:+.2f}",
                  "yes" if r["within"] else "no", f"{r['search_s']:.0f}")
    Console(width=170).print(t)
    print("* the configuration hwnas quantize would choose: the fastest that holds the tolerance on the validation split")
    p = Table("model", "layers", "additive table: measurements", "additive table: MAPE", "precision-aware: measurements",
              "precision-aware: MAPE", "held-out configs (max/min latency)",
              title="Latency of mixed-precision configurations, predicted vs measured (random held-out configurations)")
    for r in preds:
        p.add_row(r["model"], f"{r['layers']}", f"{r['additive_measurements']}", f"{r['additive_mape']:.1f}%", f"{r['fit']}",
                  f"{r['precision_mape']:.1f}%", f"{r['test']} ({r['spread']:.2f}x)")
    Console(width=170).print(p)


def cmd_bench_search(args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    from nas.bench_search import bench_search
    from nas.progress import console

    table, info = bench_search(args.run, args.strategies.split(","), args.seeds, args.trials, args.population,
                               log=console.print)
    out = Table("strategy", "hypervolume (mean ± sd)", "best feasible val top-1", "winners meeting the budget measured",
                "distinct archs", title=f"{args.trials} candidates x {args.seeds} seeds on {args.run}; budget "
                f"{info['budget_ms']:.3f} ms on {info['device']}; reference point ({info['ref_accuracy']:.4f}, {info['ref_latency_ms']:.3f} ms)")
    for r in table:
        out.add_row(r["strategy"], f"{r['hv_mean']:.5f} ± {r['hv_std']:.5f}", f"{r['best_feasible_acc']:.4f}",
                    f"{r['winners_meet']}/{r['winners']}", f"{r['distinct']:.0f}")
    Console(width=160).print(out)
    print(f"accuracy evaluations: {info['evaluated']} new, {info['cached']} from the run's cache")


def cmd_bench_joint(args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    from nas.bench_joint import bench_joint
    from nas.progress import console, progress_bar

    rows, info = bench_joint(args.run, args.out, args.budget_fraction, args.trials, args.tolerance, args.device,
                             log=console.print, progress=progress_bar)
    t = Table("search", "winner", "searched on", "val top-1 (as searched)", "deployed precision", "int8 layers",
              "deployed latency (ms)", "within budget", "deployed test top-1", "fp32 test top-1",
              title=f"{info['dataset']} ({info['test_images']} test images), budget {info['budget_ms']:.3f} ms deployed on "
                    f"{info['device']} (final group: {info['final_budget_ms']:.3f} ms), tolerance {info['tolerance']} points; "
                    "deployed winners measured interleaved with the largest subnet")
    pct = lambda v: "-" if v is None else f"{100 * v:.2f}"  # noqa: E731
    for r in rows:
        t.add_row(r["mode"], str(r["arch"]), r["search_device"], pct(r["search_val_top1"]), str(r["config"]), r["int8_layers"],
                  "-" if r["deployed_ms"] is None else f"{r['deployed_ms']:.3f}", "yes" if r["within_budget"] else "no",
                  pct(r["test_top1"]), pct(r["fp32_test_top1"]))
    Console(width=200).print(t)
    print(f"written to {args.out} (bench_joint.json, and a run directory per search)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hwnas", description="Hardware-aware neural architecture search.")
    sub = p.add_subparsers(dest="command", required=True)

    def space_arg(sp: argparse.ArgumentParser, default: str | None = None) -> None:
        sp.add_argument("--space", required=default is None, default=default,
                        help="search space, optionally with options: ofa_mbv3:resolutions=[160]")

    s = sub.add_parser("spaces", help="list the search spaces")
    s.set_defaults(func=cmd_spaces)

    s = sub.add_parser("sample", help="print N distinct random architectures, one per line")
    space_arg(s)
    s.add_argument("-n", type=int, required=True)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_sample)

    s = sub.add_parser("profile", help="measure architectures on a device into a CSV (resumable)")
    space_arg(s)
    s.add_argument("--device", required=True, help="e.g. ort-cpu:threads=1, torch-cuda, tensorrt:fp16, remote:http://host:8600")
    s.add_argument("--archs", help="file with one architecture string per line")
    s.add_argument("-n", type=int, help="number of random architectures instead of --archs")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", required=True)
    s.add_argument("--group", type=int, default=10, help="architectures measured interleaved per group")
    s.add_argument("--runs-per-round", type=int)
    s.add_argument("--min-rounds", type=int)
    s.add_argument("--max-rounds", type=int)
    s.set_defaults(func=cmd_profile)

    d = sub.add_parser("device", help="device agent and information").add_subparsers(dest="device_command", required=True)
    s = d.add_parser("serve", help="run a measuring agent that remote:URL devices talk to")
    s.add_argument("--device", default="ort-cpu:threads=1")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=8600)
    s.add_argument("--token", help="required bearer token (default: $HWNAS_DEVICE_TOKEN or a new random one)")
    s.set_defaults(func=cmd_device_serve)
    s = d.add_parser("info", help="print a device's fingerprint")
    s.add_argument("--device", required=True)
    s.set_defaults(func=cmd_device_info)

    s = sub.add_parser("meta-train", help="meta-train a latency predictor base on every device of the tables")
    space_arg(s)
    s.add_argument("--data", nargs="+", required=True, help="latency tables: HELP's wide CSVs and/or hwnas profile CSVs")
    s.add_argument("--out", required=True)
    s.add_argument("--predictor", default="hwnas")
    s.add_argument("--all-rows", action="store_true", help="also train on HELP's query range (default: rows below it)")
    s.set_defaults(func=cmd_meta_train)

    s = sub.add_parser("reference", help="the architectures worth measuring on a new device")
    space_arg(s)
    s.add_argument("-n", type=int, default=10)
    s.add_argument("--pool", help="choose only among these architectures (one per line)")
    s.add_argument("--base", help="base predictor (default: the one hwnas ships for the space)")
    s.set_defaults(func=cmd_reference)

    s = sub.add_parser("calibrate", help="adapt a base predictor to a device from measured rows")
    space_arg(s)
    s.add_argument("--measurements", required=True, help="CSV with columns arch, latency_ms (hwnas profile output works)")
    s.add_argument("--base")
    s.add_argument("--device", help="the device whose rows to use, when the file holds several")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_calibrate)

    s = sub.add_parser("predict", help="predicted latency of architectures with a calibrated predictor")
    s.add_argument("--predictor", required=True)
    s.add_argument("--archs", required=True)
    s.add_argument("--out")
    s.set_defaults(func=cmd_predict)

    s = sub.add_parser("train-supernet", help="train a weight-sharing supernet from a recipe")
    s.add_argument("recipe")
    s.add_argument("--out", help="run directory (default runs/<recipe name>); an existing one resumes")
    s.set_defaults(func=cmd_train_supernet)

    s = sub.add_parser("train-lm", help="train a hybrid_lm architecture (a run's winner or --arch); CPU, GPU or torchrun")
    s.add_argument("run", nargs="?", help="a hybrid_lm run directory: its winner, space and text")
    s.add_argument("--arch", help="the architecture string (default: the run's winner); STRING|mamba2-only or "
                   "STRING|attn-only: its parameter-matched baseline")
    s.add_argument("--space", help="the hybrid_lm space spec (default: the run's)")
    s.add_argument("--text", help="a text file or directory (default: the run's, else the bundled pydoc text)")
    s.add_argument("--steps", type=int, default=2000)
    s.add_argument("--batch", type=int, default=32, help="the global batch, split over torchrun's ranks")
    s.add_argument("--seq-len", type=int, default=256)
    s.add_argument("--lr", type=float, default=3e-3)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--eval-every", type=int, default=200)
    s.add_argument("--checkpoint-every", type=int, default=200)
    s.add_argument("--val-windows", type=int, default=64)
    s.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    s.add_argument("--out", required=True, help="output directory; an existing one resumes")
    s.set_defaults(func=cmd_train_lm)

    s = sub.add_parser("eval-subnet", help="a subnet's accuracy from a trained run (BN recalibrated)")
    s.add_argument("run")
    s.add_argument("--arch", required=True)
    s.add_argument("--split", choices=("val", "test"), default="val")
    s.set_defaults(func=cmd_eval_subnet)

    s = sub.add_parser("run", help="the whole job: calibrate, train, search, verify on the device, export, report")
    s.add_argument("recipe")
    s.add_argument("--out", help="run directory (default runs/<recipe name>); an existing one resumes")
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("search", help="a search worker: join the recipe's study (several may share one storage)")
    s.add_argument("recipe")
    s.add_argument("--out", help="run directory (default runs/<recipe name>)")
    s.add_argument("--storage", help="Optuna storage URL shared by the workers, e.g. postgresql://user@host/db")
    s.add_argument("--study-name")
    s.set_defaults(func=cmd_search)

    s = sub.add_parser("export", help="export a run's winner (or --arch) to ONNX or TensorRT, checked against PyTorch")
    s.add_argument("run")
    s.add_argument("--arch")
    s.add_argument("--format", choices=("onnx", "tensorrt"), default="onnx")
    s.add_argument("--fp16", action="store_true", help="TensorRT fp16 kernels")
    s.add_argument("--int8", action="store_true", help="static int8 (QDQ, per-channel weights, calibrated on training images)")
    s.add_argument("--out", help="folder (default RUN/best)")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("quantize", help="mixed-precision int8 of a run's winner: fastest on the device within an accuracy tolerance")
    s.add_argument("run")
    s.add_argument("--device", help="device spec (default: the run's device)")
    s.add_argument("--arch", help="architecture string (default: the run's winner)")
    s.add_argument("--tolerance", type=float, default=0.5, help="accuracy points below fp32 allowed (validation split)")
    s.add_argument("--calib", type=int, default=256, help="calibration images from the training split")
    s.add_argument("--method", default="interlayer", choices=["hessian", "interlayer"])
    s.add_argument("--search", default="bisect", choices=["bisect", "latency", "ilp"])
    s.add_argument("--activations", default="auto", choices=["auto", "u8", "s8", "s8sym"],
                   help="int8 activation type (auto: the faster of u8 and s8 on the device; TensorRT: s8sym)")
    s.add_argument("--calibration", default="minmax", choices=["minmax", "percentile", "entropy"],
                   help="activation ranges: onnxruntime's calibrator (ranges that saturating consumers cut are tightened)")
    s.add_argument("--out", help="output folder (default: RUN/quantized)")
    s.set_defaults(func=cmd_quantize)

    b = sub.add_parser("bench", help="benchmarks, printed as tables").add_subparsers(dest="bench_command", required=True)
    s = b.add_parser("device", help="repeatability of profiling: naive vs interleaved, two passes")
    s.add_argument("--device", default="ort-cpu:threads=1")
    space_arg(s, default="ofa_mbv3:resolutions=[160]")
    s.add_argument("-n", type=int, default=30)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--group", type=int, default=10)
    s.set_defaults(func=cmd_bench_device)
    s = b.add_parser("predictors", help="HELP's 10-sample protocol on held-out devices, every predictor")
    space_arg(s)
    s.add_argument("--data", nargs="+", required=True)
    s.add_argument("--split", default="loho,dissimilar", help="comma list of: help, loho (leave one hardware out), dissimilar")
    s.add_argument("--splits", help="HELP's splits.json (default: beside the first table)")
    s.add_argument("--predictors", help=f"comma list (default: all)")
    s.add_argument("--refs", type=int, default=10)
    s.set_defaults(func=cmd_bench_predictors)
    s = b.add_parser("supernet", help="supernet training step vs the standalone largest subnet; a run's accuracy")
    space_arg(s, default="ofa_mbv3:resolutions=[32],num_classes=10")
    s.add_argument("--batch-size", type=int, default=64)
    s.add_argument("--rounds", type=int, default=10)
    s.add_argument("--device", default="cpu", help="cpu or cuda")
    s.add_argument("--run", help="a trained run directory: print its largest and smallest subnets' test top-1")
    s.set_defaults(func=cmd_bench_supernet)
    s = b.add_parser("hybrid", help="hybrid_lm: per-mixer prefill and decode latency against length; proxy rank agreement")
    s.add_argument("--device", default="ort-cpu:threads=1")
    s.add_argument("--mixers", default=",".join(("attn", "swa", "mamba2", "deltanet", "gdn")))
    s.add_argument("--contexts", default="256,1024,4096", help="decode contexts, comma-separated")
    s.add_argument("--prompts", default="128,512", help="prefill lengths, comma-separated")
    s.add_argument("--dim", type=int, default=256)
    s.add_argument("--layers", type=int, default=4)
    s.add_argument("--window", type=int, default=128, help="sliding-window attention's window")
    s.add_argument("--archs", type=int, default=12, help="architectures for the proxy agreement (0: skip it)")
    s.add_argument("--short", type=int, default=100, help="proxy training steps")
    s.add_argument("--long", type=int, default=400, help="the longer training it is compared with")
    s.add_argument("--seq-len", type=int, default=64, help="bytes per training window of the proxy agreement")
    s.add_argument("--batch", type=int, default=16, help="windows per step of the proxy agreement")
    s.add_argument("--text", help="a text file or directory (default: Python's bundled pydoc topics)")
    s.add_argument("--run", help="a finished hybrid_lm run: its winner against the baselines, decode measured afresh")
    s.add_argument("--front", action="store_true",
                   help="with --run: also every other hybrid on the run's front within the budget (trains their baselines)")
    s.add_argument("--arch", action="append", help="with --run: also this architecture of the run's space (repeatable)")
    s.add_argument("--seeds", type=int, default=1, help="with --run: bits per byte as the mean of this many proxy seeds")
    s.add_argument("--groups", type=int, default=3, help="with --run: interleaved decode timing groups")
    s.add_argument("--time-on", help="with --run: time decode on this device spec instead of the run's")
    s.add_argument("--out", default="runs/bench_hybrid")
    s.set_defaults(func=cmd_bench_hybrid)
    s = b.add_parser("quantize", help="mixed precision against fp32, int8, Hessian-only and ILP on trained models")
    s.add_argument("--models", default="mobilenetv2,resnet", help="comma-separated: mobilenetv2, resnet")
    s.add_argument("--run", help="also quantize this hwnas run's winner")
    s.add_argument("--data", default="digits", help="digits, cifar10:PATH or cifar100:PATH")
    s.add_argument("--resolution", type=int, default=64)
    s.add_argument("--epochs", type=int, default=8)
    s.add_argument("--device", default="ort-cpu:threads=1")
    s.add_argument("--tolerance", type=float, default=0.5)
    s.add_argument("--out", default="runs/bench_quantize")
    s.set_defaults(func=cmd_bench_quantize)
    s = b.add_parser("joint", help="joint architecture + precision search against fp32 search then quantize, one budget")
    s.add_argument("run", help="a run directory with a trained supernet (RUN/supernet)")
    s.add_argument("--budget-fraction", type=float, default=0.6, help="of the largest subnet's measured fp32 latency")
    s.add_argument("--trials", type=int, help="candidates per search (default: the run's recipe)")
    s.add_argument("--tolerance", type=float, default=0.5)
    s.add_argument("--device", help="device spec (default: the run's)")
    s.add_argument("--out", default="runs/bench_joint")
    s.set_defaults(func=cmd_bench_joint)
    s = b.add_parser("search", help="strategies on a finished run: hypervolume of their fronts, winners measured")
    s.add_argument("run")
    s.add_argument("--strategies", default="random,evolution,nsga2,optuna-nsga2,optuna-tpe")
    s.add_argument("--seeds", type=int, default=3)
    s.add_argument("--trials", type=int, default=100)
    s.add_argument("--population", type=int, default=20)
    s.set_defaults(func=cmd_bench_search)
    s = b.add_parser("calibrate", help="the few-shot loop on a real device: 10 references, then fresh archs measured")
    s.add_argument("--device", default="ort-cpu:threads=1")
    space_arg(s, default="ofa_mbv3")
    s.add_argument("-n", type=int, default=60)
    s.add_argument("--refs", type=int, default=10)
    s.add_argument("--base")
    s.add_argument("--seed", type=int, default=1)
    s.set_defaults(func=cmd_bench_calibrate)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (UserError, ValueError, KeyError, RuntimeError, TypeError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        print(f"hwnas: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hwnas: interrupted; rows already written are kept", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
