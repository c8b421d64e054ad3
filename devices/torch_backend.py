"""PyTorch eager backends: torch-cpu and torch-cuda (CUDA events, synchronised)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from devices.base import CallableRunner, Device, DeviceError, ModelLike, Option, count, parse_bool, positive
from devices.registry import register
from devices.timing import Runner


def gpu_name() -> str:
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""
    except Exception:  # a broken CUDA install is "no GPU" for a fingerprint
        return ""


def _inference(
    model: ModelLike, shape: Sequence[int], device: str, dtype: Any = None, channels_last: bool = False
) -> Callable[[], None]:
    """A function running `model` once on a random input of `shape`, under inference mode."""
    import torch
    from torch import nn

    if not isinstance(model, nn.Module):
        raise TypeError(
            f"torch devices measure an nn.Module, but got {type(model).__name__}; use an ort-* device for ONNX files"
        )
    dtype = dtype or torch.float32
    module = model.eval().to(device=device, dtype=dtype)
    x = torch.randn(tuple(shape), device=device, dtype=dtype)
    if channels_last:
        module, x = module.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)

    def once() -> None:
        with torch.inference_mode():
            module(x)

    return once


@register("torch-cpu")
class TorchCPU(Device):
    """PyTorch eager on the CPU under `torch.inference_mode`."""

    cpu_bound = True
    options = {
        "threads": Option(count, 1, "torch.set_num_threads"),
        "batch": Option(positive, None, "batch size of the input"),
        "channels_last": Option(parse_bool, False, "NHWC memory format"),
    }

    def prepare(self, model: ModelLike, input_shape: Sequence[int], arch: str | None = None) -> Runner:
        import torch

        runner = CallableRunner(
            _inference(model, self.batch_shape(input_shape), "cpu", channels_last=self.config["channels_last"])
        )
        return _Threads(runner, self.config["threads"] or torch.get_num_threads())

    def describe(self) -> dict[str, Any]:
        return {"threads": self.config["threads"], "gpu": ""}


class _Threads(Runner):
    """Runs with torch's intra-op thread count set to `threads`, and gives the process back the count it had:
    a measurement must not leave every later training step of the process on one thread."""

    def __init__(self, inner: Runner, threads: int) -> None:
        self.inner, self.threads = inner, threads

    def run(self, n: int) -> np.ndarray:
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            return self.inner.run(n)
        finally:
            torch.set_num_threads(before)

    def close(self) -> None:
        self.inner.close()


class CudaEventRunner(Runner):
    """Times a CUDA callable with events on its stream; one synchronisation per run."""

    def __init__(self, fn: Any) -> None:
        import torch

        self.fn, self.torch = fn, torch
        self.start = torch.cuda.Event(enable_timing=True)
        self.end = torch.cuda.Event(enable_timing=True)

    def run(self, n: int) -> np.ndarray:
        out = np.empty(n)
        for i in range(n):
            self.start.record()
            self.fn()
            self.end.record()
            self.end.synchronize()
            out[i] = self.start.elapsed_time(self.end)
        return out


def cuda_graph(once: Callable[[], None], warmup: int = 3) -> Callable[[], None]:
    """`once` captured as a CUDA graph after `warmup` calls on a side stream; returns its replay."""
    import torch

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            once()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        once()
    return graph.replay


def require_cuda(spec: str) -> Any:
    import torch

    if not torch.cuda.is_available():
        raise DeviceError(f"device {spec!r} needs a CUDA GPU, but torch sees none (torch {torch.__version__})")
    return torch


@register("torch-cuda")
class TorchCUDA(Device):
    """PyTorch eager on GPU 0, optionally in fp16; timed with CUDA events."""

    options = {
        "batch": Option(positive, None, "batch size of the input"),
        "fp16": Option(parse_bool, False, "run in half precision"),
        "channels_last": Option(parse_bool, False, "NHWC memory format"),
        "graphs": Option(
            parse_bool, False, "capture one call as a CUDA graph and time its replay (how a decoder is deployed)"
        ),
    }

    def prepare(self, model: ModelLike, input_shape: Sequence[int], arch: str | None = None) -> Runner:
        torch = require_cuda(self.spec)
        dtype = torch.float16 if self.config["fp16"] else torch.float32
        once = _inference(model, self.batch_shape(input_shape), "cuda", dtype, self.config["channels_last"])
        return CudaEventRunner(cuda_graph(once) if self.config["graphs"] else once)

    def describe(self) -> dict[str, Any]:
        import torch

        return {"gpu": gpu_name(), "cuda": torch.version.cuda or ""}
