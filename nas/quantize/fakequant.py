"""Fake quantization in PyTorch, as onnxruntime's QDQ int8 does it: weights per output channel,
symmetric; activations (each quantized layer's input) per tensor, asymmetric, over min/max ranges
calibrated here, or over the deployment's own ranges once they are set (`MixedPrecision.prepare`).
Used to score a precision configuration's accuracy quickly; the deployed model confirms it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch
from torch import nn

QMIN, QMAX = -128, 127


def quantize_weight(w: torch.Tensor) -> torch.Tensor:
    """Per-output-channel symmetric int8, dequantized."""
    flat = w.detach().reshape(w.shape[0], -1)
    scale = (flat.abs().amax(1) / QMAX).clamp_min(1e-12).view(-1, *([1] * (w.dim() - 1)))
    return (w / scale).round().clamp(-QMAX, QMAX) * scale


def quantize_activation(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Per-tensor asymmetric int8 over [lo, hi] (the range always holds 0), dequantized."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = max(hi - lo, 1e-12) / (QMAX - QMIN)
    zero = round(QMIN - lo / scale)
    return ((x / scale).round() + zero).clamp(QMIN, QMAX).sub(zero).mul(scale)


class FakeQuant:
    """Activation ranges calibrated once; `active(int8_layers)` runs the model with those layers in int8."""

    def __init__(self, model: nn.Module, layers: list[str]) -> None:
        self.model, self.layers = model, list(layers)
        self.modules = dict(model.named_modules())
        self.ranges_: dict[str, tuple[float, float]] = {}
        self._weights: dict[str, torch.Tensor] = {}

    def calibrate(self, inputs: Iterable[torch.Tensor]) -> FakeQuant:
        ranges: dict[str, list[float]] = {}

        def hook(name: str):
            def record(_mod: nn.Module, args: tuple) -> None:
                x = args[0].detach()
                lo, hi = float(x.min()), float(x.max())
                r = ranges.setdefault(name, [lo, hi])
                r[0], r[1] = min(r[0], lo), max(r[1], hi)

            return record

        hooks = [self.modules[n].register_forward_pre_hook(hook(n)) for n in self.layers]
        try:
            with torch.no_grad():
                for x in inputs:
                    self.model.eval()(x)
        finally:
            for h in hooks:
                h.remove()
        self.ranges_ = {n: (r[0], r[1]) for n, r in ranges.items()}
        return self

    @contextlib.contextmanager
    def active(self, int8: Iterable[str]) -> Iterator[nn.Module]:
        int8 = [n for n in int8]
        unknown = [n for n in int8 if n not in self.ranges_]
        if unknown:
            raise ValueError(f"layer {unknown[0]!r} is not a calibrated quantizable layer")
        saved, hooks = {}, []
        try:
            for name in int8:
                mod = self.modules[name]
                saved[name] = mod.weight.data
                mod.weight.data = quantize_weight(mod.weight.data)
                lo, hi = self.ranges_[name]
                hooks.append(
                    mod.register_forward_pre_hook(
                        lambda _m, args, lo=lo, hi=hi: (quantize_activation(args[0], lo, hi), *args[1:])
                    )
                )
            yield self.model
        finally:
            for h in hooks:
                h.remove()
            for name, w in saved.items():
                self.modules[name].weight.data = w
