"""Learning-rate schedules."""

from __future__ import annotations

import math


def cosine(step: int, total: int, warmup: int = 0) -> float:
    """The learning-rate factor of step `step` (0-based) of `total`: a linear warm-up over `warmup` steps,
    then cosine decay to 0."""
    ramp = min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
    return ramp * 0.5 * (1 + math.cos(math.pi * min(step, total) / max(total, 1)))
