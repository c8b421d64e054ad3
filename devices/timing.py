"""How latency is timed: warm-up, round-robin rounds until stable, robust statistics, drift anchor."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


class Runner:
    """A model loaded on a device, ready to run. `run(n)` returns n latencies in ms."""

    def run(self, n: int) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        pass


@dataclass
class TimingPolicy:
    """Interleaved timing: every model `runs_per_round` times per round, rounds until stable.

    A model's latency is the `percentile` of its per-round minimum-free samples over rounds; the
    loop stops after `min_rounds` once no model's estimate moved more than `rel_tol` in the last
    round, or at `max_rounds`, or after `max_seconds`.
    """

    warmup_runs: int = 3
    warmup_seconds: float = 0.1
    runs_per_round: int = 5
    min_rounds: int = 6
    max_rounds: int = 12
    rel_tol: float = 0.005
    max_seconds: float = 600.0
    percentile: float = 25.0

    def __post_init__(self) -> None:
        if not 1 <= self.min_rounds <= self.max_rounds:
            raise ValueError(
                f"`1 <= min_rounds <= max_rounds` must hold, but got min_rounds={self.min_rounds}, "
                f"max_rounds={self.max_rounds}"
            )
        if self.runs_per_round < 1:
            raise ValueError(f"runs_per_round must be >= 1, but got {self.runs_per_round}")
        if not 0 <= self.percentile <= 100:
            raise ValueError(f"percentile must lie in [0, 100], but got {self.percentile}")
        for name in ("warmup_runs", "warmup_seconds", "rel_tol"):
            if getattr(self, name) < 0:
                raise ValueError(f"`{name} >= 0` must hold, but got {name}={getattr(self, name)}")
        if not self.max_seconds > 0:
            raise ValueError(f"`max_seconds > 0` must hold, but got max_seconds={self.max_seconds}")


MIN_WALL = 0.5


class LoadMeter:
    """CPU use while a block runs, in cores: `cores` by other processes (the system's busy time minus this
    process's, over the wall time), `own` by this process (NaN where psutil cannot tell)."""

    cores: float = math.nan
    own: float = math.nan

    def __enter__(self) -> LoadMeter:
        self._start = _cpu_clocks()
        return self

    def __exit__(self, *exc: object) -> None:
        end = _cpu_clocks()
        if self._start is None or end is None:
            return
        wall, busy, own = (b - a for a, b in zip(self._start, end))
        if wall >= MIN_WALL:  # CPU clocks tick in 10 ms: over a shorter block the shares mean nothing
            self.cores, self.own = max(0.0, (busy - own) / wall), own / wall


def _cpu_clocks() -> tuple[float, float, float] | None:
    """(wall seconds, the machine's busy CPU seconds, this process's CPU seconds)."""
    try:
        import psutil

        t = psutil.cpu_times()
        busy = sum(getattr(t, f, 0.0) for f in ("user", "nice", "system", "irq", "softirq", "steal"))
        own = psutil.Process().cpu_times()
        return time.perf_counter(), busy, own.user + own.system
    except Exception:  # no psutil support on this platform: the load is unknown, never an error
        return None


def _estimate(samples: np.ndarray, policy: TimingPolicy) -> float:
    return float(np.percentile(samples, policy.percentile))


def summarize(samples: np.ndarray, policy: TimingPolicy, rounds: int) -> dict[str, Any]:
    """Statistics of one model's samples (ms)."""
    q1, q3 = np.percentile(samples, [25, 75])
    fence = q3 + 3 * (q3 - q1)
    return {
        "latency_ms": _estimate(samples, policy),
        "median_ms": float(np.median(samples)),
        "p10_ms": float(np.percentile(samples, 10)),
        "p90_ms": float(np.percentile(samples, 90)),
        "cv": float(np.std(samples) / max(np.mean(samples), 1e-12)),
        "repeats": int(samples.size),
        "rounds": rounds,
        "outliers": int((samples > fence).sum()),
    }


def interleave(
    runners: Sequence[Runner],
    policy: TimingPolicy,
    anchor: int | None = None,
    on_round: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
    """Time `runners` round-robin; returns one statistics dict per runner.

    With `anchor`, each round's samples are divided by the anchor's drift in that round (its
    round minimum over its median round minimum), which removes machine-wide slow-downs.
    """
    n = len(runners)
    if n == 0:
        return []
    for r in runners:
        r.run(policy.warmup_runs)
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < policy.warmup_seconds:
            r.run(1)
    rounds: list[np.ndarray] = []  # each (n, runs_per_round)
    start = time.perf_counter()
    previous: np.ndarray | None = None
    order = np.arange(n)
    rng = np.random.default_rng(0)
    while True:
        block = np.empty((n, policy.runs_per_round))
        rng.shuffle(order)
        for i in order:
            block[i] = runners[i].run(policy.runs_per_round)
        rounds.append(block)
        if on_round is not None:
            on_round(len(rounds))
        data = _corrected(np.stack(rounds), anchor)  # (rounds, n, runs)
        current = np.array([_estimate(data[:, i].ravel(), policy) for i in range(n)])
        done = len(rounds) >= policy.max_rounds or time.perf_counter() - start > policy.max_seconds
        if len(rounds) >= policy.min_rounds and previous is not None:
            done = done or bool(np.max(np.abs(current / previous - 1)) <= policy.rel_tol)
        previous = current
        if done:
            break
    return [summarize(data[:, i].ravel(), policy, len(rounds)) for i in range(n)]


def _corrected(data: np.ndarray, anchor: int | None) -> np.ndarray:
    if anchor is None or data.shape[0] < 2:
        return data
    per_round = data[:, anchor].min(axis=1)
    drift = per_round / np.median(per_round)
    return data / drift[:, None, None]
