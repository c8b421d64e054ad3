"""Accuracy-latency fronts and their hypervolume."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def pareto_front(accuracy: Sequence[float], latency: Sequence[float]) -> np.ndarray:
    """Indices of the points no other point beats in both accuracy (higher) and latency (lower),
    sorted by latency; ties keep the first."""
    acc, lat = np.asarray(accuracy, float), np.asarray(latency, float)
    order = np.lexsort((-acc, lat))
    front, best = [], -np.inf
    for i in order:
        if acc[i] > best:
            front.append(i)
            best = acc[i]
    return np.array(front, int)


def hypervolume(accuracy: Sequence[float], latency: Sequence[float], ref_accuracy: float, ref_latency: float) -> float:
    """Area dominated by the front and bounded by the reference point (ref_accuracy, ref_latency)."""
    acc, lat = np.asarray(accuracy, float), np.asarray(latency, float)
    keep = (acc > ref_accuracy) & (lat < ref_latency)
    if not keep.any():
        return 0.0
    idx = pareto_front(acc[keep], lat[keep])
    a, t = acc[keep][idx], lat[keep][idx]
    area = 0.0
    for k in range(len(idx)):
        right = t[k + 1] if k + 1 < len(idx) else ref_latency
        area += (right - t[k]) * (a[k] - ref_accuracy)
    return float(area)
