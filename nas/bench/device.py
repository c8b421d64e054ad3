"""`hwnas bench device`: how repeatable is a profile? Two passes, naive and interleaved, compared."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from devices import Device, TimingPolicy
from nas.latency.profile import profile
from nas.metrics import rank_scores

NAIVE = TimingPolicy(warmup_runs=3, warmup_seconds=0.05, runs_per_round=25, min_rounds=1, max_rounds=1, percentile=50)


def naive_pass(space: Any, device: Device, archs: list[tuple]) -> np.ndarray:
    """One model after another: warm-up, 25 runs, median."""
    return np.array([device.measure(*space.latency_model(a), space.to_str(a), policy=NAIVE).latency_ms for a in archs])


def agreement(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(Spearman rho, median absolute percentage difference) between two passes."""
    rho = rank_scores(a, b)["spearman"]
    mdape = float(np.median(np.abs(a - b) / ((a + b) / 2)) * 100)
    return rho, mdape


def bench_device(
    space: Any, device: Device, archs: list[tuple], group_size: int = 10, log: Callable[[str], None] = print
) -> list[dict[str, Any]]:
    """Runs naive and interleaved passes alternately (naive, method, naive, method)."""
    passes: dict[str, list[np.ndarray]] = {"naive": [], "raw": [], "anchor": []}
    seconds: dict[str, float] = {"naive": 0.0, "method": 0.0}
    anchor_ref = None
    with tempfile.TemporaryDirectory() as tmp:
        for p in range(2):
            t = time.perf_counter()
            passes["naive"].append(naive_pass(space, device, archs))
            seconds["naive"] += time.perf_counter() - t
            log(f"pass {p + 1}: naive done in {time.perf_counter() - t:.0f}s")
            t = time.perf_counter()
            rows = profile(
                space, device, archs, Path(tmp) / f"pass{p}.csv", group_size=group_size, anchor_ref_ms=anchor_ref
            )
            seconds["method"] += time.perf_counter() - t
            log(f"pass {p + 1}: interleaved done in {time.perf_counter() - t:.0f}s")
            anchor_ref = rows[0]["anchor_ref_ms"]
            by_arch = {r["arch"]: r for r in rows}
            passes["raw"].append(np.array([by_arch[space.to_str(a)]["raw_ms"] for a in archs]))
            passes["anchor"].append(np.array([by_arch[space.to_str(a)]["latency_ms"] for a in archs]))
    labels = {
        "naive": "one after another, 25 runs, median",
        "raw": "interleaved groups, rounds until stable, p25",
        "anchor": "interleaved + anchor drift correction (hwnas)",
    }
    table = []
    for key, label in labels.items():
        rho, mdape = agreement(*passes[key])
        secs = seconds["naive" if key == "naive" else "method"] / 2
        table.append(
            {
                "method": label,
                "spearman": rho,
                "mdape_pct": mdape,
                "seconds_per_pass": secs,
                "mean_ms": float(np.mean(passes[key][0])),
            }
        )
    return table
