"""Data-parallel training under `torchrun` (NCCL on GPUs, gloo on CPU); a plain process is rank 0 of 1.

The sandwich rule runs several forward/backward passes per step, each over a different subset of
the weights. DistributedDataParallel's wrapper reduces gradients inside every backward and needs
`find_unused_parameters` for such steps; here gradients are averaged once per step instead, after
all passes, as one flat all-reduce: the same arithmetic as DDP, one collective per step."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class Context:
    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup(device: str = "auto") -> Context:
    """Join the process group that torchrun describes in the environment, or run alone."""
    want = torch.device(
        "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
    )
    if want.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"train.device={device!r} needs a CUDA GPU, and torch sees none")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Context(0, 1, want)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if want.type == "cuda" else "gloo")
    if want.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        want = torch.device("cuda", local)
    return Context(dist.get_rank(), dist.get_world_size(), want)


def broadcast_state(module: nn.Module, ctx: Context) -> None:
    """Every rank starts from rank 0's parameters and buffers."""
    if ctx.world == 1:
        return
    for t in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(t.data, 0)


def average_gradients(params: list[nn.Parameter], ctx: Context) -> None:
    """Average .grad over ranks. Every rank runs the same subnets in a step, so the parameters
    with a gradient are the same on every rank."""
    if ctx.world == 1:
        return
    params = [p for p in params if p.grad is not None]
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat)
    flat /= ctx.world
    offset = 0
    for p in params:
        n = p.numel()
        p.grad.copy_(flat[offset : offset + n].view_as(p))
        offset += n


def autocast(ctx: Context, amp: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on a CUDA device when `amp`, else nothing: what every training step runs under."""
    if ctx.device.type == "cuda" and amp:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def barrier(ctx: Context) -> None:
    if ctx.world > 1:
        dist.barrier()
