"""Supernet training: the sandwich rule with in-place distillation, checkpoints that resume exactly.

Every random choice is seeded by (seed, step) or (seed, epoch), so a run stopped after a
checkpoint and resumed from it takes the same steps as one that never stopped."""
from __future__ import annotations

import csv
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from nas.data import Split, TaskData
from nas.supernet.bn import recalibrate_bn
from nas.supernet.ofa_mbv3 import OFASupernet


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 64
    lr: float = 0.05
    weight_decay: float = 3e-5
    grad_clip: float = 5.0
    random_subnets: int = 2
    distill_temperature: float = 1.0
    checkpoint_every: int = 200
    seed: int = 0


def _resize(x: torch.Tensor, r: int) -> torch.Tensor:
    return x if x.shape[-1] == r else F.interpolate(x, size=(r, r), mode="bilinear", align_corners=False)


def _normalise(x: torch.Tensor, data: TaskData) -> torch.Tensor:
    mean = torch.tensor(data.mean).view(1, -1, 1, 1)
    std = torch.tensor(data.std).view(1, -1, 1, 1)
    return (x - mean) / std


def batches(split: Split, batch_size: int, seed: int | None, data: TaskData):
    """Normalised batches; shuffled with `seed`, in order when seed is None."""
    n = len(split)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)) if seed is not None else torch.arange(n)
    for i in range(0, n - (batch_size - 1 if seed is not None else 0), batch_size):
        idx = order[i : i + batch_size]
        yield _normalise(split.images[idx], data), split.labels[idx]


@torch.no_grad()
def evaluate(net: OFASupernet, arch: tuple, data: TaskData, split: str = "val", calib_batches: int = 10,
             batch_size: int = 128) -> float:
    """Top-1 of a subnet: BN statistics recalibrated on training batches first."""
    net.set_active(arch)
    r = net.space.resolution(arch)
    recalibrate_bn(net, (_resize(x, r) for x, _ in batches(data.train, batch_size, 12345, data)), calib_batches)
    net.eval()
    correct = total = 0
    for x, y in batches(getattr(data, split), batch_size, None, data):
        correct += int((net(_resize(x, r)).argmax(1) == y).sum())
        total += len(y)
    return correct / max(total, 1)


def _lr(step: int, total: int, base: float) -> float:
    return 0.5 * base * (1 + math.cos(math.pi * min(step, total) / max(total, 1)))


def train(net: OFASupernet, data: TaskData, config: TrainConfig, run_dir: str | Path,
          progress: Callable[[int, int], None] | None = None) -> list[dict]:
    """Train (or resume) in `run_dir`; writes checkpoint.pt and metrics.csv, returns the metrics."""
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    ckpt = run / "checkpoint.pt"
    opt = torch.optim.SGD(net.parameters(), lr=config.lr, momentum=0.9, nesterov=True, weight_decay=config.weight_decay)
    steps_per_epoch = max(1, len(data.train) // config.batch_size)
    total = steps_per_epoch * config.epochs
    step = 0
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=True)
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step = int(state["step"])
    metrics: list[dict] = []
    losses: list[float] = []
    net.train()
    while step < total:
        epoch = step // steps_per_epoch
        for i, (x, y) in enumerate(batches(data.train, config.batch_size, config.seed * 100003 + epoch, data)):
            if i < step - epoch * steps_per_epoch:
                continue  # resumed mid-epoch: these batches were already taken
            for g in opt.param_groups:
                g["lr"] = _lr(step, total, config.lr)
            rng = np.random.default_rng([config.seed, step])
            opt.zero_grad()
            largest = net.largest()
            net.set_active(largest)
            logits = net(_resize(x, net.space.resolution(largest)))
            loss = F.cross_entropy(logits, y)
            loss.backward()
            soft = F.softmax(logits.detach() / config.distill_temperature, dim=1)
            for arch in [net.smallest()] + [net.space.sample(rng) for _ in range(config.random_subnets)]:
                net.set_active(arch)
                out = net(_resize(x, net.space.resolution(arch)))
                kd = F.kl_div(F.log_softmax(out / config.distill_temperature, 1), soft, reduction="batchmean")
                kd.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), config.grad_clip)
            opt.step()
            losses.append(float(loss.detach()))
            step += 1
            if progress:
                progress(step, total)
            if step % config.checkpoint_every == 0 or step == total:
                torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(), "step": step,
                            "config": asdict(config)}, ckpt)
            if step % steps_per_epoch == 0:
                metrics.append({"epoch": epoch + 1, "step": step, "loss": float(np.mean(losses)),
                                "acc_largest": evaluate(net, net.largest(), data),
                                "acc_smallest": evaluate(net, net.smallest(), data)})
                net.train()
                losses = []
                _append_metrics(run / "metrics.csv", metrics[-1])
                break
    return metrics


def _append_metrics(path: Path, row: dict) -> None:
    new = not path.exists()
    with path.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)
