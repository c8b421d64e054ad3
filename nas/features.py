"""Predictor features of architectures: one-hot encoding, per-operation counts, FLOPs and params."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def _count_groups(space: Any) -> list[list[int]]:
    """Encoding columns to sum per (gene option set, option): genes sharing options are counted together."""
    offsets = np.cumsum([0] + [len(g.options) for g in space.genes])
    groups: dict[tuple, list[int]] = {}
    for i, gene in enumerate(space.genes):
        groups.setdefault(gene.options, []).append(i)
    cols = []
    for options, genes in groups.items():
        if len(genes) > 1:
            cols.extend([int(offsets[g] + k) for g in genes] for k in range(len(options)))
    return cols


def features(space: Any, archs: Sequence[tuple]) -> tuple[np.ndarray, dict[str, list[int]]]:
    """(X, layout): X rows are [onehot | counts | MFLOPs, M params]."""
    onehot = np.stack([space.encode(a) for a in archs]).astype(np.float64)
    counts = np.column_stack([onehot[:, c].sum(1) for c in _count_groups(space)])
    agnostic = np.array([space.flops_params(a) for a in archs], dtype=np.float64) / 1e6
    a, b = onehot.shape[1], onehot.shape[1] + counts.shape[1]
    layout = {"onehot": [0, a], "counts": [a, b], "agnostic": [b, b + 2]}
    return np.column_stack([onehot, counts, agnostic]), layout
