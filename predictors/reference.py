"""Choosing the architectures to measure on a new device: a greedy D-optimal design."""

from __future__ import annotations

import numpy as np


def select_references(F: np.ndarray, n: int) -> list[int]:
    """Rows of F whose span best determines a linear fit on F's columns (greedy max log-det)."""
    if n > len(F):
        raise ValueError(f"cannot choose {n} references from a pool of {len(F)} architectures")
    Z = np.column_stack([F, np.ones(len(F))])
    Z = (Z - Z.mean(0)) / (Z.std(0) + 1e-12)
    Z[:, -1] = 1.0
    M = 1e-3 * np.eye(Z.shape[1])
    chosen: list[int] = []
    for _ in range(n):
        gain = np.einsum("ij,jk,ik->i", Z, np.linalg.inv(M), Z)
        gain[chosen] = -np.inf
        j = int(np.argmax(gain))
        chosen.append(j)
        M += np.outer(Z[j], Z[j])
    return chosen
