"""Batch-norm recalibration: a subnet's statistics from a few training batches, before evaluating it."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable[torch.Tensor], num_batches: int = 20) -> None:
    """Reset every BatchNorm's running statistics and re-estimate them as an exact average."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.training) for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
    was_training = model.training
    model.eval()
    for m in norms:
        m.train()
    for i, x in enumerate(batches):
        if i >= num_batches:
            break
        model(x)
    for m, (momentum, training) in zip(norms, saved):
        m.momentum = momentum
        m.train(training)
    model.train(was_training)
