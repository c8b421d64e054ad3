"""Paired verdicts: the found model against a baseline, figure by figure, by a one-sided sign test over
seeds or timing groups; and the keys of the models compared."""

from __future__ import annotations

import math
from collections.abc import Sequence


def compared_keys(arch: str) -> list[tuple[str, str]]:
    """(model, key) of `arch` and of its parameter-matched all-attention and all-Mamba2 baselines."""
    return [("found", arch), ("all-attn", f"{arch}|attn-only"), ("all-mamba2", f"{arch}|mamba2-only")]


def sign_threshold(n: int, alpha: float = 0.05) -> int:
    """The fewest of `n` pairs that must agree for a one-sided sign test at level `alpha` (all `n` where even
    that is not significant, as for n < 5)."""
    tail = lambda k: sum(math.comb(n, i) for i in range(k, n + 1)) / 2**n
    return next((k for k in range(n + 1) if tail(k) <= alpha), n)


def paired_verdict(found: Sequence[float], other: Sequence[float]) -> str:
    """Lower is better, compared pair by pair (seeds, timing groups): `better` where the found model is lower in
    enough pairs for a sign test at 5% (in every pair when there are fewer than 8), `worse` where it is higher in
    as many, else `tie`."""
    diffs = [a - b for a, b in zip(found, other, strict=True)]
    need = max(1, sign_threshold(len(diffs)))
    if sum(d < 0 for d in diffs) >= need:
        return "better"
    if sum(d > 0 for d in diffs) >= need:
        return "worse"
    return "tie"


def overall(verdicts: Sequence[str]) -> str:
    """Per-figure `paired_verdict`s in one word: dominates (better in one, worse in none), dominated, equal or
    trade-off."""
    better, worse = "better" in verdicts, "worse" in verdicts
    if better and worse:
        return "trade-off"
    return "dominates" if better else "dominated" if worse else "equal"


def dominance(a: tuple[float, ...], b: tuple[float, ...]) -> str:
    """How `a` compares with `b` where lower is better in every figure: dominates, dominated, equal or trade-off."""
    return overall([paired_verdict([x], [y]) for x, y in zip(a, b)])
