"""`hwnas train-lm`: train one hybrid_lm architecture for real (a run's winner, or any string of the
space) on the CPU, one GPU, or several under `torchrun`.

Data-parallel as the supernet trains (nas.supernet.distributed): every rank takes its rows of each
global batch and gradients are averaged once per step, so N ranks take the steps one process would
take with the same global batch. Each step's windows come from a generator seeded by (seed, step),
and the checkpoint holds the weights, the optimizer and the step, so a run that is stopped resumes
and ends with the weights an uninterrupted run ends with."""
from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from nas.hybrid_run import build_key
from nas.lm_proxy import TextData, bits_per_byte, next_byte_loss
from nas.supernet import distributed
from nas.supernet.train import append_metrics

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
    warm = max(1, int(config.warmup * config.steps))
    return config.lr * min(1.0, (step + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(step, config.steps) / config.steps))


def step_windows(data: TextData, config: LMTrainConfig, step: int, rank: int = 0, world: int = 1) -> torch.Tensor:
    """This rank's rows of step `step`'s global batch of (seq_len + 1)-byte windows."""
    return data.batch(np.random.default_rng([config.seed, step]), config.batch, config.seq_len)[rank::world]


def _check_config(config: LMTrainConfig, world: int) -> None:
    for name in ("steps", "batch", "seq_len", "eval_every", "checkpoint_every", "val_windows"):
        if getattr(config, name) < 1:
            raise ValueError(f"`{name} >= 1` must hold, but got {name}={getattr(config, name)}")
    if config.batch % world:
        raise ValueError(f"`batch % world_size == 0` must hold (each rank takes an equal share), "
                         f"but got batch={config.batch}, world_size={world}")


def _load_checkpoint(path: Path, arch: str, config: LMTrainConfig, device: torch.device) -> dict:
    state = torch.load(path, weights_only=True, map_location=device)
    if state["arch"] != arch:
        raise ValueError(f"{path}: trained architecture {state['arch']!r}, but got {arch!r}; use another --out")
    for name in SAME_RUN:
        if state["config"][name] != getattr(config, name):
            raise ValueError(f"{path}: trained with {name}={state['config'][name]}, but got {name}={getattr(config, name)}; "
                             f"use another --out to start over")
    return state


def _trim_metrics(path: Path, step: int) -> None:
    """Drop the rows after the checkpoint's step: the resumed run writes them again."""
    if path.exists():
        df = pd.read_csv(path)
        if (df["step"] > step).any():
            df[df["step"] <= step].to_csv(path, index=False)


def train_lm(space: Any, arch: str, data: TextData, config: LMTrainConfig, out: str | Path,
             progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Train (or resume) `arch` (a space string, or `STRING|MIXER-only` for its parameter-matched
    all-MIXER baseline, as `hwnas bench hybrid` compares) in `out`: checkpoint.pt as it goes, metrics.csv (train loss, validation
    bits per byte), and at the end weights.pt, model.onnx (checked with onnxruntime), model.json and
    metrics.png. Returns model.json's content on rank 0, {} on the others."""
    ctx = distributed.setup(config.device)
    _check_config(config, ctx.world)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt, metrics = out / "checkpoint.pt", out / "metrics.csv"
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
            _trim_metrics(metrics, step)
    distributed.broadcast_state(model, ctx)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if ctx.device.type == "cuda" and config.amp
                else contextlib.nullcontext())
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
            total = torch.tensor([float(np.mean(losses))])
            if ctx.world > 1:
                torch.distributed.all_reduce(total)
            if ctx.main:
                bpb = bits_per_byte(model, data.val, config.seq_len, config.val_windows, device=str(ctx.device))
                mean = float(total) / ctx.world
                append_metrics(metrics, {"step": step, "train_loss": mean, "train_bpb": mean / math.log(2), "val_bpb": bpb,
                                         "lr": lr_at(step - 1, config), "seconds": time.perf_counter() - started})
                model.train()
            losses = []
        if ctx.main and (step % config.checkpoint_every == 0 or step == config.steps):
            tmp = ckpt.with_suffix(".tmp")
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step, "arch": arch,
                        "space": space.spec, "config": asdict(config)}, tmp)
            tmp.replace(ckpt)
        if progress is not None and ctx.main:
            progress(step, config.steps)
    distributed.barrier(ctx)
    if not ctx.main:
        return {}
    model.to("cpu").eval()
    torch.save(model.state_dict(), out / "weights.pt")
    rows = pd.read_csv(metrics)
    meta = export_checked(model, space, arch, data, config.seq_len, out)
    best = rows.loc[rows["val_bpb"].idxmin()]
    meta.update({"val_bpb": float(rows["val_bpb"].iloc[-1]), "best_val_bpb": float(best["val_bpb"]), "best_step": int(best["step"]),
                 "trained_steps": config.steps, "world_size": ctx.world,
                 "config": asdict(config), "params": int(sum(p.numel() for p in model.parameters()))})
    (out / "model.json").write_text(json.dumps(meta, indent=2))
    plot_metrics(rows, out / "metrics.png", arch)
    return meta


def export_checked(model: torch.nn.Module, space: Any, arch: str, data: TextData, seq_len: int, out: Path) -> dict[str, Any]:
    """`out/model.onnx` at `seq_len` (dynamic batch), checked against PyTorch with onnxruntime on held-out
    text; raises when they differ. Returns the model card's fields."""
    import onnxruntime as ort

    from devices.onnx_io import to_onnx

    shape = (1, seq_len)
    (out / "model.onnx").write_bytes(to_onnx(model, shape, arch, dynamic_batch=True, opset=18))
    tokens = torch.from_numpy(data.val[:seq_len].astype(np.int64))[None]
    with torch.no_grad():
        want = model(tokens).numpy()
    got = ort.InferenceSession(str(out / "model.onnx")).run(None, {"input": tokens.float().numpy()})[0]
    err = float(np.max(np.abs(got - want)))
    ok = bool(np.allclose(got, want, rtol=1e-3, atol=1e-4))
    if not ok:
        raise RuntimeError(f"{out / 'model.onnx'}: onnxruntime differs from PyTorch by {err:.2e} (rtol 1e-3, atol 1e-4)")
    return {"arch": arch, "space": space.spec, "input_shape": list(shape),
            "input": "byte ids (float in the ONNX graph; cast to int64 inside)",
            "weights": "weights.pt (a state_dict; torch.load(..., weights_only=True))",
            "onnxruntime_max_abs_diff": err, "onnxruntime_matches": ok}


def plot_metrics(rows: pd.DataFrame, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
