"""`hwnas bench hybrid`: what each hybrid_lm mixer costs on a device (prefill against prompt length,
per-token decode against context) and how well short proxy training ranks architectures."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from devices import get as get_device
from nas.metrics import rank_scores
from search_spaces.hybrid_lm.model import MIXERS, DecodeStep


def operator_latency(
    device_spec: str,
    mixers: Sequence[str] = MIXERS,
    contexts: Sequence[int] = (256, 1024, 4096),
    prompts: Sequence[int] = (128, 512),
    dim: int = 256,
    heads: int = 4,
    layers: int = 4,
    window: int = 128,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Per mixer, a stack of `layers` (mixer + FFN) blocks: ms of a prefill of each prompt length and
    of one decoding step at each context, all measured interleaved on the device."""
    from search_spaces.hybrid_lm.space import HybridLMSpace

    device = get_device(device_spec)
    space = HybridLMSpace(
        dims=(dim,),
        heads=(heads,),
        ffn_ratios=(3.0,),
        stages=1,
        max_repeat=layers,
        max_blocks=2 * layers,
        window=window,
    )
    models, shapes, rows = [], [], []
    for mixer in mixers:
        model = space.build(space.from_str(f"d{dim}h{heads}f3/{mixer},f1,x{layers}")).eval()
        for n in prompts:
            models.append(model)
            shapes.append((1, n))
            rows.append({"mixer": mixer, "phase": "prefill", "tokens": n})
        for n in contexts:
            models.append(DecodeStep(model, 1, n))
            shapes.append((1, 1))
            rows.append({"mixer": mixer, "phase": "decode", "tokens": n})
    log(f"timing {len(models)} models on {device.spec} (interleaved)")
    for row, m in zip(rows, device.measure_many(models, shapes)):
        row["ms"] = m.latency_ms
        row["ms_per_token"] = m.latency_ms / row["tokens"] if row["phase"] == "prefill" else m.latency_ms
    return rows


def plot_operator_latency(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    from nas.plots import pyplot

    plt = pyplot()

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, phase, xlabel, ylabel in (
        (axes[0], "decode", "context (tokens)", "ms per decoded token"),
        (axes[1], "prefill", "prompt (tokens)", "prefill ms"),
    ):
        for mixer in dict.fromkeys(r["mixer"] for r in rows):
            pts = [(r["tokens"], r["ms"]) for r in rows if r["mixer"] == mixer and r["phase"] == phase]
            ax.plot(*zip(*pts), marker="o", label=mixer)
        ax.set_xscale("log", base=2)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def proxy_agreement(
    n_archs: int = 12,
    short_steps: int = 100,
    long_steps: int = 400,
    seq_len: int = 64,
    batch: int = 16,
    seed: int = 0,
    text: str | None = None,
    log: Callable[[str], None] = print,
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Validation bits per byte of random small hybrids after short and after longer training (same
    seed, separate runs), and the rank agreement of the two."""
    import torch

    from nas.lm.proxy import TextData, load_text, train_proxy
    from nas.recipes import ProxyConfig
    from search_spaces.hybrid_lm.space import HybridLMSpace

    space = HybridLMSpace(dims=(64, 96, 128), heads=(2, 4), max_blocks=8, seq_len=seq_len)
    data = TextData.from_bytes(load_text(text))
    rng = np.random.default_rng(seed)
    archs = list(dict.fromkeys(space.sample(rng) for _ in range(n_archs * 3)))[:n_archs]
    rows = []
    for i, arch in enumerate(archs):
        row = {"arch": space.to_str(arch), "params": space.params(arch)}
        for name, steps in (("short", short_steps), ("long", long_steps)):
            torch.manual_seed(seed)
            config = ProxyConfig(steps=steps, batch=batch, seq_len=seq_len, seed=seed, val_windows=64)
            row[f"{name}_bpb"] = train_proxy(space.build(arch), data, config)["val_bpb"]
        log(
            f"[{i + 1}/{len(archs)}] {row['arch']}: {row['short_bpb']:.3f} bpb after {short_steps} steps, "
            f"{row['long_bpb']:.3f} after {long_steps}"
        )
        rows.append(row)
    s, l = [r["short_bpb"] for r in rows], [r["long_bpb"] for r in rows]
    scores = rank_scores(s, l)
    return rows, {"spearman": scores["spearman"], "kendall": scores["kendall"]}


def compare_run(
    run_dir: str | Path,
    groups: int = 3,
    front: bool = False,
    archs: Sequence[str] = (),
    seeds: int = 1,
    device: str | None = None,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """A finished hybrid run's winner against its parameter-matched all-attention and all-Mamba2 baselines:
    bits per byte from the run's proxy (the mean over `seeds` seeds from the recipe's on: the extra ones trained
    into the run's cache), decode ms per token as the median of `groups` fresh interleaved groups, and per figure
    a paired verdict (better or worse by a sign test over the seeds / groups, else a tie: `paired_verdict`).
    `front`: also every other hybrid (two or more mixer types) on the run's front within the budget; `archs`: also
    these architectures of the run's space. Each is compared with its own baselines (trained as the proxy trains).
    `device`: time decode on this device spec instead of the run's (e.g. with `static=true`)."""
    import dataclasses

    import pandas as pd

    from nas.lm.run import HybridRun
    from nas.lm.verdicts import compared_keys
    from nas.recipes import hybrid_recipe_from_dict
    from nas.rundir import PARETO, RECIPE, RESULT, RunDir

    if groups < 1 or seeds < 1:
        raise ValueError(f"`groups >= 1 and seeds >= 1` must hold, but got groups={groups}, seeds={seeds}")
    run_dir = RunDir(run_dir)
    if not (run_dir / RESULT).exists() or not (run_dir / RECIPE).exists():
        raise ValueError(f"{run_dir} is not a finished hybrid_lm run (no {RESULT} or {RECIPE})")
    result = run_dir.read_result()
    recipe = hybrid_recipe_from_dict(run_dir.read_recipe(), str(run_dir / RECIPE))
    members = pd.read_csv(run_dir / PARETO) if front else None
    if not result.get("compared"):
        raise ValueError(f"{run_dir / RESULT}: no winner to compare (no candidate met the budget)")
    run = HybridRun(dataclasses.replace(recipe, device=device) if device else recipe, run_dir.path, log=log)
    found = [result["compared"][0]["arch"]]
    if members is not None:
        feasible = members[members["latency_ms"] <= result["budget_ms"]].sort_values("val_bpb")
        found += [a for a in feasible["arch"] if a not in found and run.is_hybrid(a)]
    for arch in archs:
        try:
            arch = run.space.to_str(run.space.from_str(arch))
        except ValueError as err:
            raise ValueError(f"--arch {arch!r}: {err}") from None
        found += [arch] if arch not in found else []
    seed_list = [recipe.proxy.seed + i for i in range(seeds)]
    keys = [k for arch in found for _, k in compared_keys(arch)]
    todo = [(k, s) for k in keys for s in seed_list]
    for i, (k, s) in enumerate(todo):
        if not run.trained(k, s):
            log(f"training {k} with seed {s} ({i + 1} of {len(todo)})")
        run.bpb(k, s)
    log(
        f"decode at context {recipe.decode.context} on {run.device.spec}: {groups} interleaved groups of {len(keys)} "
        "models"
    )
    times = [run.decode_group(keys) for _ in range(groups)]
    return [{"found": arch, **row} for arch in found for row in run.compared(arch, times, seed_list)]
