"""How well predicted figures rank and match measured ones: Spearman's rho, Kendall's tau, MAPE (%)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import kendalltau, spearmanr


def mape(pred: Sequence[float], true: Sequence[float]) -> float:
    """Mean absolute percentage error, in percent."""
    p, t = np.asarray(pred, np.float64), np.asarray(true, np.float64)
    return float(np.mean(np.abs(p - t) / t) * 100)


def rank_scores(pred: Sequence[float], true: Sequence[float]) -> dict[str, float]:
    """{"spearman", "kendall", "mape"}; the rank correlations are NaN for fewer than three pairs."""
    p, t = np.asarray(pred, np.float64), np.asarray(true, np.float64)
    if len(p) < 3:
        return {"spearman": float("nan"), "kendall": float("nan"), "mape": mape(p, t)}
    return {
        "spearman": float(spearmanr(p, t).statistic),
        "kendall": float(kendalltau(p, t).statistic),
        "mape": mape(p, t),
    }
