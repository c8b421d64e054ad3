"""A tabular accuracy source: the trained accuracy of each architecture of a space, read from a CSV with an `arch`
column (NAS-Bench-201's ships with hwnas), so a search can be run without training and scored exactly."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

DATA = Path(__file__).resolve().parent / "data"
# tables that ship inside the package, by name: `table:nasbench201:cifar10`
SHIPPED = {"nasbench201": DATA / "nasbench201_accuracy.csv.gz"}


@dataclass
class AccuracyTable:
    """accuracy[arch string] in percent; `source` says where it was read from."""

    space: str
    column: str
    source: str
    accuracy: dict[str, float]

    def __call__(self, arch_str: str) -> float:
        try:
            return self.accuracy[arch_str]
        except KeyError:
            raise ValueError(f"accuracy table {self.source} has no row for architecture {arch_str!r}") from None

    def best_within(self, latency: dict[str, float], budget_ms: float) -> float:
        """The best accuracy among the architectures whose latency is within the budget (the exact optimum)."""
        ok = [self.accuracy[a] for a, ms in latency.items() if ms <= budget_ms and a in self.accuracy]
        return float(max(ok)) if ok else float("nan")


def parse_table_spec(spec: str) -> tuple[str, str]:
    """'table:NAME:COLUMN' or 'table:PATH:COLUMN' -> (NAME or PATH, COLUMN); the path may hold ':'."""
    body = spec[len("table:") :] if spec.startswith("table:") else spec
    where, sep, column = body.rpartition(":")
    if not sep or not where or not column:
        raise ValueError(f"accuracy must be 'table:NAME:COLUMN' or 'table:PATH:COLUMN', but got {spec!r}")
    return where, column


def load_accuracy_table(spec: str, space: Any) -> AccuracyTable:
    """The table `spec` names, its arch strings canonical in `space`; one line naming the file, column or row."""
    where, column = parse_table_spec(spec)
    path = SHIPPED.get(where, Path(where))
    if not Path(path).is_file():
        known = ", ".join(SHIPPED)
        raise ValueError(f"accuracy table {where!r} is neither a shipped table ({known}) nor a file")
    try:
        df = pd.read_csv(path)
    except Exception as err:
        raise ValueError(f"cannot read accuracy table {path}: {err}") from None
    if "arch" not in df.columns or column not in df.columns:
        cols = ", ".join(c for c in df.columns if c not in ("arch", "index"))
        raise ValueError(
            f"accuracy table {path} has no {'arch' if 'arch' not in df else column!r} column; it has {cols}"
        )
    values = pd.to_numeric(df[column], errors="coerce").to_numpy(float)
    accuracy = {}
    for line, (s, v) in enumerate(zip(df["arch"].astype(str), values), start=2):
        try:
            key = space.to_str(space.from_str(s))
        except ValueError as err:
            raise ValueError(f"{path}:{line}: {err}") from None
        if np.isfinite(v):
            accuracy[key] = float(v)
    if not accuracy:
        raise ValueError(f"accuracy table {path} has no numeric {column!r} values")
    return AccuracyTable(space.spec, column, f"{path}:{column}", accuracy)
