"""`table:PATH:COLUMN`: replays recorded latencies, so tests and benchmarks can "measure" devices."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from devices.base import Device, ModelLike, UnknownNameError
from devices.onnx_io import onnx_arch
from devices.registry import register
from devices.timing import Runner, TimingPolicy


class _Constant(Runner):
    def __init__(self, value: float) -> None:
        self.value = value

    def run(self, n: int) -> np.ndarray:
        return np.full(n, self.value)


@register("table")
class TableDevice(Device):
    """A wide table (arch + one column per device) or a long one (arch, device, latency_ms)."""

    options = {}
    drifts = False

    def __init__(self, spec: str, path: str, column: str) -> None:
        super().__init__(spec)
        self.path, self.column = path, column
        self.key: Callable[[str], str] = lambda s: s
        self.policy = TimingPolicy(warmup_runs=0, warmup_seconds=0.0, runs_per_round=1, min_rounds=1, max_rounds=1)
        self._lookup: dict[str, float] | None = None

    @classmethod
    def from_spec(cls, spec: str, rest: str) -> TableDevice:
        # the first prefix that is a file is the path: a column may hold ':' (a device spec of a profile CSV)
        for i, c in enumerate(rest):
            if c == ":" and i and Path(rest[:i]).is_file() and rest[i + 1 :]:
                return cls(spec, rest[:i], rest[i + 1 :])
        path, sep, column = rest.partition(".csv:") if ".csv:" in rest else rest.rpartition(":")
        if not sep or not path or not column:
            raise ValueError(f"device {spec!r} must be table:PATH:COLUMN")
        path += ".csv" if sep == ".csv:" else ""
        raise ValueError(f"device {spec!r}: latency table {path!r} does not exist")

    def set_key(self, key: Callable[[str], str]) -> None:
        """Normalise architecture strings (the table's and the queries') with `key`."""
        self.key, self._lookup = key, None

    def lookup(self) -> dict[str, float]:
        if self._lookup is None:
            import pandas as pd

            try:
                df = pd.read_csv(self.path)
            except Exception as err:  # any unreadable file gets the same message
                raise ValueError(f"cannot read latency table {self.path!r}: {err}") from None
            if "arch" not in df.columns:
                raise ValueError(f"latency table {self.path!r} has no 'arch' column")
            if self.column in df.columns:
                rows = df[["arch", self.column]].dropna()
                values = rows[self.column].astype(float)
            elif {"device", "latency_ms"} <= set(df.columns) and (df["device"] == self.column).any():
                rows = df[df["device"] == self.column]
                values = rows["latency_ms"].astype(float)
            else:
                known = [c for c in df.columns if c not in ("index", "arch")]
                if "device" in df.columns:
                    known = sorted(df["device"].astype(str).unique())
                raise ValueError(
                    f"latency table {self.path!r} has no device {self.column!r}; it has: {', '.join(map(str, known))}"
                )
            self._lookup = {self.key(a): float(v) for a, v in zip(rows["arch"], values)}
        return self._lookup

    def prepare(self, model: ModelLike, input_shape: Sequence[int], arch: str | None = None) -> Runner:
        if arch is None and isinstance(model, (bytes, str, Path)):
            from devices.onnx_io import to_onnx

            arch = onnx_arch(to_onnx(model, input_shape))
        if arch is None:
            raise ValueError(f"device {self.spec!r} replays a table and needs the architecture string of the model")
        value = self.lookup().get(self.key(arch))
        if value is None:
            raise UnknownNameError(f"latency table {self.path!r} has no row for architecture {arch!r}")
        return _Constant(value)

    def describe(self) -> dict[str, Any]:
        return {"table": str(self.path), "column": self.column, "gpu": ""}
