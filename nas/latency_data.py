"""Latency tables into one in-memory form: architectures x devices, in milliseconds."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd


@dataclass
class LatencyTable:
    """Y[i, j] is the latency of archs[i] on devices[j] (NaN where not measured)."""

    archs: list[str]
    devices: list[str]
    Y: np.ndarray
    index: np.ndarray  # the HELP release index of each arch, -1 where it has none

    def column(self, device: str) -> np.ndarray:
        if device not in self.devices:
            raise KeyError(f"Unknown device {device!r}; the tables have: {', '.join(self.devices)}")
        return self.Y[:, self.devices.index(device)]


def _read(path: str | Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except FileNotFoundError:
        raise ValueError(f"latency table {str(path)!r} does not exist") from None
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"cannot read latency table {str(path)!r}: {err}") from None


def read_tables(space: Any, paths: Sequence[str | Path]) -> LatencyTable:
    """Wide tables (arch + one column per device, HELP's) and long ones (`hwnas profile` CSVs)."""
    frames = []
    for path in paths:
        df = _read(path)
        if "arch" not in df.columns:
            raise ValueError(f"latency table {str(path)!r} has no 'arch' column")
        try:
            canon = [space.to_str(space.from_str(s)) for s in df["arch"]]
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None
        df = df.assign(arch=canon)
        if {"device", "latency_ms"} <= set(df.columns):
            wide = df.pivot_table(index="arch", columns="device", values="latency_ms", aggfunc="mean")
            wide["index"] = -1
        else:
            devs = [c for c in df.columns if c not in ("index", "arch")]
            if "index" not in df.columns:
                df["index"] = -1
            wide = df.groupby("arch").agg({**{d: "mean" for d in devs}, "index": "min"})
        frames.append(wide)
    merged = pd.concat(frames, axis=1)
    index = merged["index"].max(axis=1) if isinstance(merged["index"], pd.DataFrame) else merged["index"]
    merged = merged.drop(columns="index")
    merged = merged.T.groupby(level=0, sort=False).mean().T  # the same device in two tables: one column
    Y = merged.to_numpy(np.float64)
    if np.any(Y[~np.isnan(Y)] <= 0):
        raise ValueError(f"latency tables {', '.join(map(str, paths))} hold non-positive latencies")
    return LatencyTable(list(merged.index), [str(c) for c in merged.columns], Y, index.fillna(-1).astype(int).to_numpy())
