"""Choosing which layers run in int8.

`bisect`: layers in sensitivity order (least sensitive first); bisection on how many go to int8 so
the accuracy stays within the tolerance (the seed paper's method).
`latency`: from the bisection's answer, a greedy search over residual blocks measured on the device:
each round tries moving every block wholly to int8 or back to float (float islands inside an int8
graph cost a quantize/dequantize pair at each border, and some operators are slower in int8), keeps
the fastest configuration that stays within the tolerance if a second measurement confirms it, and
stops when nothing is faster by `min_gain`.
`ilp`: HAWQ-V3's baseline: per-layer latency gains measured one layer at a time and assumed additive,
an integer linear program (scipy's milp) minimising total sensitivity for a required gain, the gain
bisected to the tolerance."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

SEARCHES = ("bisect", "latency", "ilp")

Accuracy = Callable[[Sequence[str]], float]


def bisect(
    order: list[str], accuracy: Accuracy, floor: float, lo: int = 0, hi: int | None = None, tried: list | None = None
) -> int:
    """The largest k with accuracy(order[:k]) >= floor, assuming accuracy falls as k grows."""
    hi = len(order) if hi is None else hi
    best = lo
    while lo <= hi:
        mid = (lo + hi) // 2
        acc = accuracy(order[:mid])
        if tried is not None:
            tried.append((mid, acc))
        if acc >= floor:
            best, lo = mid, mid + 1
        else:
            hi = mid - 1
    return best


def ilp_select(scores: dict[str, float], gains: dict[str, float], required: float) -> list[str]:
    """Layers in int8 minimising total sensitivity with sum(gain) >= required (HAWQ-V3's ILP)."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    names = list(scores)
    c = np.array([max(scores[n], 0.0) for n in names]) + 1e-12
    g = np.array([gains[n] for n in names])
    res = milp(
        c,
        constraints=[LinearConstraint(g[None, :], lb=required, ub=np.inf)],
        integrality=np.ones(len(names)),
        bounds=Bounds(0, 1),
    )
    if res.x is None:
        return [n for n in names if gains[n] > 0]
    return [n for n, x in zip(names, res.x) if x > 0.5]


def ilp_search(
    scores: dict[str, float],
    gains: dict[str, float],
    accuracy: Accuracy,
    floor: float,
    steps: int = 8,
    tried: list | None = None,
) -> list[str]:
    """The largest required gain whose ILP answer stays within the tolerance (bisection on the gain)."""
    top = sum(v for v in gains.values() if v > 0)
    lo, hi, best = 0.0, top, []
    for _ in range(steps):
        mid = (lo + hi) / 2
        chosen = ilp_select(scores, gains, mid)
        acc = accuracy(chosen)
        if tried is not None:
            tried.append((mid, acc))
        if acc >= floor:
            best, lo = chosen, mid
        else:
            hi = mid
    return best


def greedy_blocks(
    start: set[str],
    groups: list[list[str]],
    accuracy: Accuracy,
    floor: float,
    measure: Callable[[list[set[str]]], list[float]],
    rounds: int = 4,
    min_gain: float = 0.02,
    log: Callable[[str], None] = lambda s: None,
    screen: Callable[[list[set[str]]], list[float]] | None = None,
    keep: int = 8,
) -> tuple[set[str], list[tuple[set[str], float]]]:
    """Greedy block moves measured on the device, each confirmed by a second measurement; returns the
    final set and every (set, latency) measured.
    With `screen` (predicted latencies), only the `keep` moves predicted fastest are measured each round."""
    current = set(start)
    history: list[tuple[set[str], float]] = []
    for r in range(rounds):
        candidates: list[set[str]] = []
        for g in groups:
            up, down = current | set(g), current - set(g)
            for cand in (up, down):
                if cand != current and cand not in candidates and (cand <= current or accuracy(sorted(cand)) >= floor):
                    candidates.append(cand)
        if not candidates:
            break
        if screen is not None and len(candidates) > keep:
            predicted = screen(candidates)
            candidates = [candidates[i] for i in np.argsort(predicted)[:keep]]
        times = measure([current] + candidates)
        history += list(zip([current] + candidates, times))
        best = int(np.argmin(times[1:])) + 1
        log(
            f"latency search, round {r + 1}: {len(candidates)} moves measured; current {times[0]:.4f} ms, best "
            f"{times[best]:.4f} ms"
        )
        if times[best] > times[0] * (1 - min_gain):
            break
        # the fastest of several noisy measurements is biased low: the move is taken only if a second,
        # separate measurement against the current set confirms it
        again = measure([current, candidates[best - 1]])
        history += list(zip([current, candidates[best - 1]], again))
        if again[1] > again[0] * (1 - min_gain):
            log(
                f"latency search, round {r + 1}: the best move did not hold when measured again ({again[1]:.4f} vs "
                f"{again[0]:.4f} ms)"
            )
            break
        current = candidates[best - 1]
    return current, history
