"""Supernet training: the sandwich rule with in-place distillation, checkpoints that resume exactly.

Every random choice is seeded by (seed, step) or (seed, epoch), so a run stopped after a
checkpoint and resumed from it takes the same steps as one that never stopped. Under `torchrun`
each rank takes its share of every batch and gradients are averaged (nas.training.distributed)."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from nas.data import TaskData, batches, resize
from nas.rundir import CHECKPOINT, METRICS
from nas.supernet.bn import recalibrate_bn
from nas.training import distributed
from nas.training.checkpoints import load_checkpoint, save_checkpoint
from nas.training.metrics import append_metrics, trim_metrics
from nas.training.schedules import cosine
from search_spaces import Supernet

CHECKPOINT_FORMAT = "hwnas-supernet/1"
EVAL_BATCH = 128
BN_IMAGES = 5 * EVAL_BATCH  # training images a subnet's BN statistics are recalibrated on by default


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 64
    lr: float = 0.05
    warmup_epochs: float = 0.0  # the learning rate rises linearly from 0 over these epochs, then decays (cosine)
    weight_decay: float = 3e-5
    grad_clip: float = 5.0
    random_subnets: int = 2
    distill_temperature: float = 1.0
    checkpoint_every: int = 200
    seed: int = 0
    device: str = "auto"
    amp: bool = True


def _device(net: torch.nn.Module) -> torch.device:
    return next(net.parameters()).device


@torch.no_grad()
def evaluate(
    net: Supernet,
    arch: tuple,
    data: TaskData,
    split: str = "val",
    calib_batches: int = 5,
    batch_size: int = EVAL_BATCH,
    int8: bool = False,
) -> float:
    """Top-1 of a subnet: BN statistics recalibrated on training batches first. With `int8`, of the
    subnet's uniform int8 deployment (`int8_accuracy`)."""
    if int8:
        _recalibrated(net, arch, data, calib_batches, batch_size)
        return int8_accuracy(net.extract(arch).cpu().eval(), data, split, net.resolution(arch))
    return float(correct_images(net, arch, data, split, calib_batches, batch_size).mean())


@torch.no_grad()
def correct_images(
    net: Supernet,
    arch: tuple,
    data: TaskData,
    split: str = "test",
    calib_batches: int = 5,
    batch_size: int = EVAL_BATCH,
) -> np.ndarray:
    """Which images of `split` the subnet classifies right, in the split's order (BN recalibrated as `evaluate`
    does): what a paired comparison of two subnets on the same images reads."""
    _recalibrated(net, arch, data, calib_batches, batch_size)
    dev, r = _device(net), net.resolution(arch)
    right = [
        (net(resize(x.to(dev), r)).argmax(1).cpu() == y).numpy()
        for x, y in batches(getattr(data, split), batch_size, None, data)
    ]
    return np.concatenate(right) if right else np.zeros(0, dtype=bool)


def _recalibrated(net: Supernet, arch: tuple, data: TaskData, calib_batches: int, batch_size: int) -> None:
    """The subnet active, its BN statistics recalibrated on fixed training batches, in eval mode."""
    dev = _device(net)
    net.set_active(arch)
    r = net.resolution(arch)
    recalibrate_bn(net, (resize(x.to(dev), r) for x, _ in batches(data.train, batch_size, 12345, data)), calib_batches)
    net.eval()


def int8_accuracy(
    model: torch.nn.Module, data: TaskData, split: str, resolution: int, calib_images: int = 256
) -> float:
    """Top-1 of the model's uniform int8 deployment under onnxruntime (QDQ, per-channel weights, uint8
    activations calibrated on training images, as `hwnas quantize` deploys it): what fake quantization
    in PyTorch only approximates, since onnxruntime also quantizes residual adds, gates and activations."""
    from devices.int8 import int8_onnx
    from devices.onnx_io import to_onnx
    from nas.export import onnx_accuracy

    shape = (1, 3, resolution, resolution)
    calib = [
        resize(x, resolution).numpy()
        for x, _ in itertools.islice(batches(data.train, 32, None, data), max(1, calib_images // 32))
    ]
    deployed = int8_onnx(to_onnx(model, shape, dynamic_batch=True, opset=18), shape, "u8", calib)
    return onnx_accuracy(
        deployed, ((resize(x, resolution), y) for x, y in batches(getattr(data, split), 256, None, data))
    )


def checkpoint_meta(net: Supernet, data: TaskData) -> dict:
    """What a reader needs to use the weights without our code: space, classes, input normalisation."""
    return {
        "format": CHECKPOINT_FORMAT,
        **net.config(),
        "resolutions": list(net.resolutions),
        "dataset": data.name,
        **data.normalisation(),
    }


def sandwich_step(
    net: Supernet,
    x: torch.Tensor,
    y: torch.Tensor,
    rng: np.random.Generator,
    config: TrainConfig,
    autocast: contextlib.AbstractContextManager | None = None,
) -> float:
    """One sandwich step's gradients (largest with labels; smallest and random subnets distilled from it)."""
    autocast = autocast or contextlib.nullcontext()
    largest = net.largest()
    net.set_active(largest)
    with autocast:
        logits = net(resize(x, net.resolution(largest)))
        loss = F.cross_entropy(logits.float(), y)
    loss.backward()
    soft = F.softmax(logits.detach().float() / config.distill_temperature, dim=1)
    for arch in [net.smallest()] + [net.space.sample(rng) for _ in range(config.random_subnets)]:
        net.set_active(arch)
        with autocast:
            out = net(resize(x, net.resolution(arch)))
        kd = F.kl_div(F.log_softmax(out.float() / config.distill_temperature, 1), soft, reduction="batchmean")
        kd.backward()
    return float(loss.detach())


def train(
    net: Supernet,
    data: TaskData,
    config: TrainConfig,
    run_dir: str | Path,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict]:
    """Train (or resume) in `run_dir`; writes checkpoint.pt and metrics.csv, returns the metrics."""
    ctx = distributed.setup(config.device)
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    ckpt = run / CHECKPOINT
    net.to(ctx.device)
    opt = torch.optim.SGD(net.parameters(), lr=config.lr, momentum=0.9, nesterov=True, weight_decay=config.weight_decay)
    if config.batch_size < 1 or config.batch_size * ctx.world > len(data.train):
        raise ValueError(
            f"`1 <= train.batch_size <= {len(data.train) // ctx.world}` must hold ({data.name} has {len(data.train)} "
            f"training images over {ctx.world} process(es)), but got train.batch_size={config.batch_size}"
        )
    steps_per_epoch = len(data.train) // (config.batch_size * ctx.world)
    total = steps_per_epoch * config.epochs
    step = _resume(net, opt, run, ctx)
    distributed.broadcast_state(net, ctx)
    autocast = distributed.autocast(ctx, config.amp)
    params = list(net.parameters())
    metrics: list[dict] = []
    losses: list[float] = []
    net.train()
    while step < total:
        epoch = step // steps_per_epoch
        for i, (x, y) in enumerate(
            batches(data.train, config.batch_size, config.seed * 100003 + epoch, data, ctx.rank, ctx.world)
        ):
            if i < step - epoch * steps_per_epoch:
                continue  # resumed mid-epoch: these batches were already taken
            for g in opt.param_groups:
                g["lr"] = config.lr * cosine(step, total, round(config.warmup_epochs * steps_per_epoch))
            opt.zero_grad()
            x, y = x.to(ctx.device, non_blocking=True), y.to(ctx.device, non_blocking=True)
            losses.append(sandwich_step(net, x, y, np.random.default_rng([config.seed, step]), config, autocast))
            distributed.average_gradients(params, ctx)
            torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            opt.step()
            step += 1
            if progress and ctx.main:
                progress(step, total)
            if ctx.main and (step % config.checkpoint_every == 0 or step == total):
                state = {"model": net.state_dict(), "optimizer": opt.state_dict(), "step": step}
                save_checkpoint({**state, "config": asdict(config), "meta": checkpoint_meta(net, data)}, ckpt)
            if step % steps_per_epoch == 0:
                if ctx.main:
                    metrics.append(
                        {"epoch": epoch + 1, "step": step, "loss": float(np.mean(losses)), **_ends(net, data)}
                    )
                    append_metrics(run / METRICS, metrics[-1])
                distributed.barrier(ctx)
                net.train()
                losses = []
                break
    return metrics


def _resume(net: Supernet, opt: torch.optim.Optimizer, run: Path, ctx: distributed.Context) -> int:
    """The step the checkpoint in `run` reached (0 without one), its weights and optimizer state loaded and the
    metrics rows after it dropped."""
    if not (run / CHECKPOINT).exists():
        return 0
    state = load_checkpoint(run / CHECKPOINT, ctx.device)
    net.load_state_dict(state["model"])
    if "optimizer" in state:  # an imported supernet (hwnas import-supernet) starts its optimizer afresh
        opt.load_state_dict(state["optimizer"])
    if ctx.main:
        trim_metrics(run / METRICS, int(state["step"]))
    return int(state["step"])


def _ends(net: Supernet, data: TaskData) -> dict[str, float]:
    """The validation top-1 of the largest and the smallest subnet: an epoch's metrics row."""
    return {"acc_largest": evaluate(net, net.largest(), data), "acc_smallest": evaluate(net, net.smallest(), data)}
