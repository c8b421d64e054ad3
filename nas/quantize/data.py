"""An image task's splits as quantization data: calibration images, validation and test batches."""

from __future__ import annotations

import itertools
import math
from typing import Any

from nas.data import batches, resize
from nas.quantize.mixed import QuantizeData


def task_data(data: Any, resolution: int, calib: int, batch: int = 32, extra: dict | None = None) -> QuantizeData:
    """Calibration images from the training split (in order, not augmented), validation and test
    splits, all at `resolution`."""
    if calib < 1:
        raise ValueError(f"`calib >= 1` must hold (calibration images), but got calib={calib}")
    n = math.ceil(min(calib, len(data.train)) / batch)
    at = lambda split, size, k=None: [
        (resize(x, resolution), y) for x, y in itertools.islice(batches(split, size, None, data), k)
    ]
    return QuantizeData(
        calib=at(data.train, batch, n),
        val=at(data.val, 128),
        test=at(data.test, 128),
        input_shape=(1, 3, resolution, resolution),
        extra={"dataset": data.name, **(extra or {})},
    )
