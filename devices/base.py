"""The Device protocol: a model (module or ONNX) and an input shape in, a Measurement out."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Union

import numpy as np

from devices.timing import LoadMeter, Runner, TimingPolicy, interleave

# a CPU device's timings are contended when other processes used more than OTHER_CORES cores while the measuring
# process got less than OWN_SHARE of the cores the device runs on (measured on a 2-core machine: one other busy
# process beside threads=1 changed nothing, two slowed it and spread its timings 4x, and took it to 0.68-0.82 cores)
OTHER_CORES = 0.5
OWN_SHARE = 0.9

ModelLike = Union["Any", str, Path, bytes]  # nn.Module, ONNX path, or ONNX bytes


class UnknownNameError(KeyError, ValueError):
    """An unknown name: a KeyError for lookups, and a ValueError, the kind of error bad user input raises."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class DeviceError(RuntimeError):
    """A device that cannot measure here (no GPU, no TensorRT, an agent that cannot be reached or refuses):
    the user fixes it, so the CLI prints it as one line."""


@dataclass
class Measurement:
    """Latency of one model on one device, in milliseconds."""

    latency_ms: float
    median_ms: float
    p10_ms: float
    p90_ms: float
    cv: float
    repeats: int
    rounds: int = 1
    outliers: int = 0
    load: float = math.nan  # other processes' CPU use while measuring, in cores (NaN: unknown)
    contended: bool = False  # other processes wanted cores this device needs: the timings are not the device's

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Measurement:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass(frozen=True)
class Option:
    kind: Callable[[str], Any]
    default: Any
    help: str = ""


def count(text: str) -> int:
    """A whole number >= 0 (threads: 0 means the runtime's default)."""
    value = int(text)
    if value < 0:
        raise ValueError(f"`>= 0` must hold, but got {value}")
    return value


def positive(text: str) -> int:
    """A whole number >= 1 (a batch size, a workspace)."""
    value = int(text)
    if value < 1:
        raise ValueError(f"`>= 1` must hold, but got {value}")
    return value


def one_of(choices: Sequence[str]) -> Callable[[str], str]:
    """An option kind that takes one of `choices` as it is."""

    def kind(text: str) -> str:
        if text not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return text

    return kind


def parse_bool(text: str) -> bool:
    if str(text).lower() in ("1", "true", "yes", "on"):
        return True
    if str(text).lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true/false, but got {text!r}")


class Device:
    """Base class. A backend implements `prepare` (load a model, return a Runner) and `describe`."""

    name: ClassVar[str] = ""
    options: ClassVar[dict[str, Option]] = {}
    drifts: ClassVar[bool] = True  # False where timings cannot drift (replayed tables)
    cpu_bound: ClassVar[bool] = False  # True where other processes' CPU load slows the timings (CPU backends)

    def __init__(self, spec: str = "", **options: Any) -> None:
        self.spec = spec or self.name
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            allowed = ", ".join(sorted(self.options)) or "none"
            raise ValueError(f"device {self.spec!r}: unknown option {unknown[0]!r}; allowed: {allowed}")
        self.config: dict[str, Any] = {}
        for key, opt in self.options.items():
            raw = options.get(key, opt.default)
            try:
                self.config[key] = opt.kind(raw) if raw is not None and isinstance(raw, str) else raw
            except ValueError as err:
                raise ValueError(f"device {self.spec!r}: option {key}={raw!r} is invalid: {err}") from None
        self.policy = TimingPolicy()

    # ---- to implement ----------------------------------------------------------------------
    def prepare(self, model: ModelLike, input_shape: Sequence[int], arch: str | None = None) -> Runner:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """Backend-specific fingerprint fields (runtime versions, threads, GPU)."""
        return {}

    # ---- shared ----------------------------------------------------------------------------
    def batch_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        shape = tuple(int(s) for s in input_shape)
        batch = self.config.get("batch")
        return (int(batch),) + shape[1:] if batch else shape

    def fingerprint(self) -> dict[str, Any]:
        from devices.fingerprint import host_fingerprint

        return {"spec": self.spec, **host_fingerprint(), **self.describe()}

    def contended(self, other_cores: float, own_cores: float) -> bool:
        """Whether other processes took cores this device needed while it was measured (CPU-bound devices only)."""
        if not self.cpu_bound or math.isnan(other_cores) or math.isnan(own_cores):
            return False
        total = os.cpu_count() or 1
        used = min(int(self.config.get("threads") or total), total)
        return other_cores > OTHER_CORES and own_cores < OWN_SHARE * used

    def set_key(self, key: Callable[[str], str]) -> None:
        """How architecture strings compare (a space's canonical form): only a device that looks measurements
        up by architecture (a replayed table) uses it."""

    def measure(
        self, model: ModelLike, input_shape: Sequence[int], arch: str | None = None, policy: TimingPolicy | None = None
    ) -> Measurement:
        return self.measure_many([model], [input_shape], [arch], policy=policy)[0]

    def measure_many(
        self,
        models: Sequence[ModelLike],
        input_shapes: Sequence[Sequence[int]],
        archs: Sequence[str | None] | None = None,
        policy: TimingPolicy | None = None,
        anchor: int | None = None,
    ) -> list[Measurement]:
        """Measure several models interleaved (round-robin), so slow drift hits all alike.

        With `anchor` (an index into `models`), every round is rescaled by that model's time in it.
        """
        archs = list(archs) if archs is not None else [None] * len(models)
        runners = []
        try:
            for model, shape, arch in zip(models, input_shapes, archs):
                runners.append(self.prepare(model, shape, arch))
            with LoadMeter() as meter:
                stats = interleave(runners, policy or self.policy, anchor=anchor)
        finally:
            for r in runners:
                r.close()
        busy = self.contended(meter.cores, meter.own)
        return [Measurement(**s, load=meter.cores, contended=busy) for s in stats]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"


def sample_input(shape: Sequence[int], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(tuple(shape)).astype(np.float32)


@dataclass
class CallableRunner(Runner):
    """A Runner around a zero-argument function that runs the model once."""

    fn: Callable[[], Any]
    on_close: Callable[[], None] | None = None
    sync: Callable[[], None] | None = None
    extra: dict = field(default_factory=dict)

    def run(self, n: int) -> np.ndarray:
        import time

        out = np.empty(n)
        for i in range(n):
            t = time.perf_counter()
            self.fn()
            if self.sync is not None:
                self.sync()
            out[i] = (time.perf_counter() - t) * 1e3
        return out

    def close(self) -> None:
        if self.on_close is not None:
            self.on_close()
