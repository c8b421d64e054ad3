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


def _encode_as(space: Any, like: Any, arch: tuple) -> np.ndarray:
    """`arch`'s one-hot in the columns of `like` (a variant of the same space: other resolutions,
    classes or widths): genes match by name, and a value `like` does not know sets no column."""
    values = dict(zip((g.name for g in space.genes), arch))
    active = dict(zip((g.name for g in space.genes), space.active(arch)))
    out = []
    for gene in like.genes:
        col = np.zeros(len(gene.options), np.float32)
        v = values.get(gene.name)
        if active.get(gene.name, False) and v in gene.options:
            col[gene.options.index(v)] = 1.0
        out.append(col)
    return np.concatenate(out)


def features(space: Any, archs: Sequence[tuple], like: Any = None) -> tuple[np.ndarray, dict[str, list[int]]]:
    """(X, layout): X rows are [onehot | counts | MFLOPs, M params]. With `like` (the space a base
    predictor was meta-trained on), the encoding takes that space's columns; FLOPs stay `space`'s own."""
    enc = space if like is None or like.genes == space.genes else like
    onehot = np.stack([space.encode(a) if enc is space else _encode_as(space, enc, a) for a in archs]).astype(np.float64)
    counts = np.column_stack([onehot[:, c].sum(1) for c in _count_groups(enc)])
    agnostic = np.array([space.flops_params(a) for a in archs], dtype=np.float64) / 1e6
    a, b = onehot.shape[1], onehot.shape[1] + counts.shape[1]
    layout = {"onehot": [0, a], "counts": [a, b], "agnostic": [b, b + 2]}
    return np.column_stack([onehot, counts, agnostic]), layout
