"""How much quantizing each layer hurts.

`hessian`: HAWQ's second-order estimate, Omega_i = Tr(H_i) / n_i * ||Q(W_i) - W_i||^2, with the
Hessian trace of the loss in each layer's weights estimated by Hutchinson's method (Rademacher
probes, Hessian-vector products by double backpropagation) on calibration batches. Half of Omega is
the loss increase a second-order Taylor expansion predicts.

`interlayer`: the Hessian scores augmented with inter-layer dependencies, after "Augmenting Hessians
with Inter-Layer Dependencies for Mixed-Precision Post-Training Quantization" (2023): quantizing two
neighbouring layers together is measured against quantizing each alone (fake quantization, weights
and activations, loss on calibration batches), and each layer carries half of the excess loss of
its pairs. A layer that is harmless alone but harmful beside its neighbour moves up the order."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nas.quantize.fakequant import FakeQuant, quantize_weight

Batch = tuple[torch.Tensor, torch.Tensor]
METHODS = ("hessian", "interlayer")


class _HardSigmoid(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x + 3).clamp(0, 6) / 6


class _HardSwish(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (x + 3).clamp(0, 6) / 6


@contextlib.contextmanager
def twice_differentiable(model: nn.Module) -> Iterator[nn.Module]:
    """PyTorch's hard-sigmoid and hard-swish kernels have no second derivative: swap in equal
    clamp formulations for the Hessian-vector products, then put the originals back."""
    swaps = []
    for parent in model.modules():
        for name, child in parent.named_children():
            if isinstance(child, (nn.Hardsigmoid, nn.Hardswish)):
                swaps.append((parent, name, child))
                setattr(parent, name, _HardSigmoid() if isinstance(child, nn.Hardsigmoid) else _HardSwish())
    try:
        yield model
    finally:
        for parent, name, child in swaps:
            setattr(parent, name, child)


def hessian_traces(
    model: nn.Module, layers: list[str], batches: Sequence[Batch], probes: int = 8, seed: int = 0
) -> dict[str, float]:
    """Mean diagonal of the loss Hessian in each layer's weights, Tr(H_i) / n_i (Hutchinson)."""
    modules = dict(model.named_modules())
    params = [modules[n].weight for n in layers]
    g = torch.Generator().manual_seed(seed)
    totals = np.zeros(len(layers))
    model.eval()
    for x, y in batches:
        with twice_differentiable(model):
            loss = F.cross_entropy(model(x), y)
        grads = torch.autograd.grad(loss, params, create_graph=True)
        for _ in range(probes):
            vs = [torch.randint(0, 2, p.shape, generator=g).to(p.dtype).mul_(2).sub_(1) for p in params]
            hvs = torch.autograd.grad(grads, params, grad_outputs=vs, retain_graph=True)
            totals += np.array([float((hv * v).sum()) for hv, v in zip(hvs, vs)])
    totals /= probes * len(batches)
    return {n: float(t) / params[i].numel() for i, (n, t) in enumerate(zip(layers, totals))}


def hessian_scores(model: nn.Module, layers: list[str], batches: Sequence[Batch], probes: int = 8) -> dict[str, float]:
    """Omega_i / 2: the predicted loss increase of quantizing layer i alone."""
    traces = hessian_traces(model, layers, batches, probes)
    modules = dict(model.named_modules())
    out = {}
    for n in layers:
        w = modules[n].weight.detach()
        out[n] = 0.5 * max(traces[n], 0.0) * float((quantize_weight(w) - w).pow(2).sum())
    return out


def quantized_loss(fq: FakeQuant, int8: Sequence[str], batches: Sequence[Batch]) -> float:
    with torch.no_grad(), fq.active(int8) as model:
        return float(np.mean([float(F.cross_entropy(model(x), y)) for x, y in batches]))


def interlayer_scores(
    fq: FakeQuant, layers: list[str], batches: Sequence[Batch], base: dict[str, float], window: int = 1
) -> tuple[dict[str, float], dict[str, float]]:
    """Hessian scores plus each layer's half share of the measured joint excess loss with its neighbours
    (up to `window` layers away in forward order). Also returns the measured single-layer loss increases."""
    ref = quantized_loss(fq, [], batches)
    single = {n: quantized_loss(fq, [n], batches) - ref for n in layers}
    extra = dict.fromkeys(layers, 0.0)
    for i, a in enumerate(layers):
        for b in layers[i + 1 : i + 1 + window]:
            excess = quantized_loss(fq, [a, b], batches) - ref - single[a] - single[b]
            extra[a] += 0.5 * excess
            extra[b] += 0.5 * excess
    return {n: base[n] + extra[n] for n in layers}, single


def order(scores: dict[str, float]) -> list[str]:
    """Least sensitive first: the order in which layers go to int8."""
    return sorted(scores, key=lambda n: (scores[n], n))
