"""`hwnas train-lm`: train one hybrid_lm architecture for real (a run's winner, or any string of the
space) on the CPU, one GPU, or several under `torchrun`.

Data-parallel as the supernet trains (nas.training.distributed): every rank takes its rows of each
global batch and gradients are averaged once per step, so N ranks take the steps one process would
take with the same global batch. Each step's windows come from a generator seeded by (seed, step),
and the checkpoint holds the weights, the optimizer and the step, so a run that is stopped resumes
and ends with the weights an uninterrupted run ends with."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from nas.export import export_checked
from nas.lm.proxy import TextData, bits_per_byte, next_byte_loss
from nas.rundir import CHECKPOINT, METRICS
from nas.training import distributed
from nas.training.checkpoints import load_checkpoint, save_checkpoint
from nas.training.metrics import append_metrics, trim_metrics
from nas.training.schedules import cosine
from search_spaces.hybrid_lm.baselines import build_key

# a checkpoint made with other values of these would not continue the same run
SAME_RUN = ("steps", "batch", "seq_len", "lr", "weight_decay", "warmup", "seed")


@dataclass
class LMTrainConfig:
    steps: int = 2000
    batch: int = 32  # the global batch, split over the ranks
    seq_len: int = 256
    lr: float = 3e-3
    weight_decay: float = 0.01
    warmup: float = 0.1  # fraction of the steps with a linear warm-up, then cosine decay
    seed: int = 0
    eval_every: int = 200
    checkpoint_every: int = 200
    val_windows: int = 64
    device: str = "auto"  # auto | cpu | cuda
    amp: bool = True  # bf16 autocast on CUDA


def lr_at(step: int, config: LMTrainConfig) -> float:
    """The learning rate of step `step` (0-based): linear warm-up, then cosine decay to 0, as the proxy trains."""
    return config.lr * cosine(step, config.steps, max(1, int(config.warmup * config.steps)))


def step_windows(data: TextData, config: LMTrainConfig, step: int, rank: int = 0, world: int = 1) -> torch.Tensor:
    """This rank's rows of step `step`'s global batch of (seq_len + 1)-byte windows."""
    return data.batch(np.random.default_rng([config.seed, step]), config.batch, config.seq_len)[rank::world]


def _check_config(config: LMTrainConfig, world: int) -> None:
    for name in ("steps", "batch", "seq_len", "eval_every", "checkpoint_every", "val_windows"):
        if getattr(config, name) < 1:
            raise ValueError(f"`{name} >= 1` must hold, but got {name}={getattr(config, name)}")
    if config.batch % world:
        raise ValueError(
            f"`batch % world_size == 0` must hold (each rank takes an equal share), "
            f"but got batch={config.batch}, world_size={world}"
        )


def _load_checkpoint(path: Path, arch: str, config: LMTrainConfig, device: torch.device) -> dict:
    state = load_checkpoint(path, device)
    if state["arch"] != arch:
        raise ValueError(f"{path}: trained architecture {state['arch']!r}, but got {arch!r}; use another --out")
    for name in SAME_RUN:
        if state["config"][name] != getattr(config, name):
            raise ValueError(
                f"{path}: trained with {name}={state['config'][name]}, but got {name}={getattr(config, name)}; "
                f"use another --out to start over"
            )
    return state


def train_lm(
    space: Any,
    arch: str,
    data: TextData,
    config: LMTrainConfig,
    out: str | Path,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Train (or resume) `arch` (a space string, or `STRING|MIXER-only` for its parameter-matched
    all-MIXER baseline, as `hwnas bench hybrid` compares) in `out`: checkpoint.pt as it goes, metrics.csv (train loss,
    validation bits per byte), and at the end weights.pt, model.onnx (checked with onnxruntime), model.json and
    metrics.png. Returns model.json's content on rank 0, {} on the others."""
    ctx = distributed.setup(config.device)
    _check_config(config, ctx.world)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt, metrics = out / CHECKPOINT, out / METRICS
    torch.manual_seed(config.seed)
    model = build_key(space, arch).to(ctx.device)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, betas=(0.9, 0.95))
    step = 0
    if ckpt.exists():
        state = _load_checkpoint(ckpt, arch, config, ctx.device)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step = int(state["step"])
        if ctx.main:
            trim_metrics(metrics, step)
    distributed.broadcast_state(model, ctx)
    autocast = distributed.autocast(ctx, config.amp)
    params = list(model.parameters())
    losses: list[float] = []
    started = time.perf_counter()
    model.train()
    while step < config.steps:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, config)
        window = step_windows(data, config, step, ctx.rank, ctx.world).to(ctx.device)
        with autocast:
            loss = next_byte_loss(model, window)
        opt.zero_grad()
        loss.backward()
        distributed.average_gradients(params, ctx)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        step += 1
        if step % config.eval_every == 0 or step == config.steps:
            _record(model, data, config, ctx, losses, step, time.perf_counter() - started, metrics)
            losses = []
        if ctx.main and (step % config.checkpoint_every == 0 or step == config.steps):
            save_checkpoint(
                {
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "step": step,
                    "arch": arch,
                    "space": space.spec,
                    "config": asdict(config),
                },
                ckpt,
            )
        if progress is not None and ctx.main:
            progress(step, config.steps)
    distributed.barrier(ctx)
    if not ctx.main:
        return {}
    return _write_model(model.to("cpu").eval(), space, arch, data, config, out, ctx.world)


def _record(
    model: torch.nn.Module,
    data: TextData,
    config: LMTrainConfig,
    ctx: distributed.Context,
    losses: list[float],
    step: int,
    seconds: float,
    metrics: Path,
) -> None:
    """The mean training loss since the last row (over every rank) and, on rank 0, the validation bits per byte:
    one metrics.csv row."""
    total = torch.tensor([float(np.mean(losses))])
    if ctx.world > 1:
        torch.distributed.all_reduce(total)
    if not ctx.main:
        return
    bpb = bits_per_byte(model, data.val, config.seq_len, config.val_windows, device=str(ctx.device))
    mean = float(total) / ctx.world
    append_metrics(
        metrics,
        {
            "step": step,
            "train_loss": mean,
            "train_bpb": mean / math.log(2),
            "val_bpb": bpb,
            "lr": lr_at(step - 1, config),
            "seconds": seconds,
        },
    )
    model.train()


def _write_model(
    model: torch.nn.Module, space: Any, arch: str, data: TextData, config: LMTrainConfig, out: Path, world: int
) -> dict[str, Any]:
    """A trained model's weights.pt, checked model.onnx, model.json and metrics.png; model.json's content."""
    torch.save(model.state_dict(), out / "weights.pt")
    rows = pd.read_csv(out / METRICS)
    meta = export_checked(model, space, arch, data.val, config.seq_len, out)
    best = rows.loc[rows["val_bpb"].idxmin()]
    meta.update(
        {
            "val_bpb": float(rows["val_bpb"].iloc[-1]),
            "best_val_bpb": float(best["val_bpb"]),
            "best_step": int(best["step"]),
            "trained_steps": config.steps,
            "world_size": world,
            "config": asdict(config),
            "params": int(sum(p.numel() for p in model.parameters())),
        }
    )
    (out / "model.json").write_text(json.dumps(meta, indent=2))
    plot_metrics(rows, out / "metrics.png", arch)
    return meta


def plot_metrics(rows: pd.DataFrame, path: Path, title: str) -> None:
    from nas.plots import pyplot

    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.plot(rows["step"], rows["train_bpb"], "-o", ms=3, label="training (bits per byte)")
    ax.plot(rows["step"], rows["val_bpb"], "-o", ms=3, label="validation (bits per byte)")
    ax.set_xlabel("step")
    ax.set_ylabel("bits per byte")
    ax.set_title(title, fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def training_job(
    run_dir: str | Path | None, arch: str | None, space_spec: str | None, text: str | None
) -> tuple[Any, str, str | None]:
    """(space, arch key, text) of a `train-lm` job: a finished hybrid_lm run's winner, space and text, each
    overridden by what is given; `arch` may end in `|MIXER-only` (the parameter-matched baseline)."""
    from nas.rundir import RESULT, RunDir
    from search_spaces import load_space

    if run_dir is not None:
        run = RunDir(run_dir)
        if not run.path.is_dir() or not (run / RESULT).exists():
            raise ValueError(f"{run}: not a finished hybrid_lm run (no {RESULT})")
        recipe = run.read_recipe()
        space_spec = space_spec or recipe.get("space")
        text = text or (recipe.get("proxy") or {}).get("text")
        if arch is None:
            winner = run.read_result().get("winner")
            if not winner:
                raise ValueError(f"{run / RESULT}: the run has no winner; name one with --arch")
            arch = winner["arch"]
    if not arch or not space_spec:
        raise ValueError("train-lm needs a hybrid_lm run directory, or --arch and --space")
    space = load_space(space_spec)
    if space.name != "hybrid_lm":
        raise ValueError(f"train-lm trains hybrid_lm architectures, but got space {space.spec!r}")
    text_arch, bar, variant = arch.partition("|")
    return space, space.to_str(space.from_str(text_arch)) + bar + variant, text
