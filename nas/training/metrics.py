"""metrics.csv: one row per evaluation, appended as training goes, trimmed back to a checkpoint on resume."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pandas as pd

from nas.rundir import drop_partial_line


def append_metrics(path: Path, row: dict[str, Any]) -> None:
    """Append `row` to the CSV at `path`, with a header when the file is new (a row cut by a kill dropped first)."""
    drop_partial_line(path)
    new = not path.exists() or path.stat().st_size == 0
    with path.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)


def trim_metrics(path: Path, step: int) -> None:
    """Drop the rows after the checkpoint's `step`: the resumed run writes them again."""
    if path.exists():
        df = pd.read_csv(path)
        if (df["step"] > step).any():
            df[df["step"] <= step].to_csv(path, index=False)
