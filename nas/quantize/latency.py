"""Latency of a precision configuration, predicted from a few measurements of the same model.

Int8 latency is not additive over layers: every border between an int8 and a float layer costs a
quantize/dequantize pair, and int8 kernels pay differently by operator. The model here is linear in
features that say so: multiply-accumulates in int8 and in float per operator kind (full conv,
depthwise, pointwise, dense), the number of precision borders along the forward order, and the
number of int8 layers. It is fitted by non-negative least squares on about ten measured
configurations; HAWQ-V3's additive table (one measurement per layer) is the baseline it is
compared with."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from nas.quantize.layers import trace_layers

KINDS = ("conv", "depthwise", "pointwise", "dense")


def layer_profile(model: nn.Module, layers: list[str], example: torch.Tensor) -> dict[str, tuple[str, float, float]]:
    """Each layer's kind, millions of multiply-accumulates at the example's shape, and millions of weights."""
    traced = trace_layers(model, example)
    out: dict[str, tuple[str, float, float]] = {}
    for name in layers:
        mod, shape = traced[name]
        outputs = shape.numel()
        weights = mod.weight.numel() / 1e6
        if isinstance(mod, nn.Linear):
            out[name] = ("dense", mod.in_features * outputs / 1e6, weights)
            continue
        k = mod.kernel_size[0] * mod.kernel_size[1]
        kind = "depthwise" if mod.groups > 1 and mod.groups == mod.in_channels else "pointwise" if k == 1 else "conv"
        out[name] = (kind, outputs * (mod.in_channels // mod.groups * k) / 1e6, weights)
    return out


class PrecisionLatency:
    """t(config) = b + sum_k a_k MACs_int8,k + sum_k f_k MACs_fp32,k + w_8 weights_int8 + w_32 weights_fp32
    + c * borders + e * border elements + d * int8 layers, all >= 0.

    Weights count apart from MACs because a layer with many weights and few outputs (a late, wide
    convolution at 2x2) is bound by reading its weights, four times the bytes in fp32: in ResNet-18 at
    64 px the two last convolutions cost 1.5 ms more in fp32, the first four 0.55 ms, at equal MACs.

    Borders are the data-flow edges (`layers.layer_edges`) whose two ends differ in precision, and the
    elements are what crosses them (each is quantized or dequantized); without edges, the forward order
    stands for the data flow and borders are counted only."""

    def __init__(self, layers: list[str], profile: dict[str, tuple[str, float]], edges: list | None = None) -> None:
        self.layers, self.profile, self.edges = list(layers), profile, edges

    def features(self, configs: Iterable[Iterable[str]]) -> np.ndarray:
        rows = []
        for config in configs:
            s = set(config)
            int8 = dict.fromkeys(KINDS, 0.0)
            fp32 = dict.fromkeys(KINDS, 0.0)
            weights = [0.0, 0.0]
            for n in self.layers:
                kind, macs, w = self.profile[n]
                (int8 if n in s else fp32)[kind] += macs
                weights[n not in s] += w
            flags = [n in s for n in self.layers]
            if self.edges is None:
                borders, elements = sum(a != b for a, b in zip(flags, flags[1:])) + flags[0] + flags[-1], 0.0
            else:
                low = lambda n: bool(n[1] & s) if isinstance(n, tuple) else n in s
                crossing = [e for e in self.edges if low(e[0]) != low(e[1])]
                borders, elements = len(crossing), sum(e[2] for e in crossing) / 1e6
            rows.append([1.0, *int8.values(), *fp32.values(), *weights, float(borders), elements, float(sum(flags))])
        return np.array(rows)

    def fit(self, configs: Sequence[Iterable[str]], latency_ms: Sequence[float]) -> PrecisionLatency:
        from scipy.optimize import nnls

        X = self.features(configs)
        scale = np.maximum(X.max(0), 1e-12)
        coef, _ = nnls(X / scale, np.asarray(latency_ms, dtype=float))
        self.coef_ = coef / scale
        return self

    def predict(self, configs: Iterable[Iterable[str]]) -> np.ndarray:
        return self.features(configs) @ self.coef_


def additive(fp32_ms: float, gains: dict[str, float], configs: Iterable[Iterable[str]]) -> np.ndarray:
    """HAWQ-V3's assumption: each int8 layer saves what it saves alone."""
    return np.array([fp32_ms - sum(gains[n] for n in set(c)) for c in configs])


def random_configs(layers: list[str], n: int, seed: int = 0) -> list[set[str]]:
    """Configurations with int8 fractions spread over [0, 1] (contiguous runs as often as scattered layers)."""
    rng = np.random.default_rng(seed)
    out: list[set[str]] = []
    while len(out) < n:
        p = rng.uniform(0.1, 0.9)
        if rng.random() < 0.5:
            c = {x for x in layers if rng.random() < p}
        else:
            k = max(1, int(p * len(layers)))
            start = int(rng.integers(0, len(layers) - k + 1))
            c = set(layers[start : start + k])
        if c and c not in out:
            out.append(c)
    return out
