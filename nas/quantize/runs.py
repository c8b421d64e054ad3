"""`hwnas quantize RUN`: the run's winner (or --arch) extracted from its supernet, quantized for a
device, written to RUN/quantized/ beside best/."""
from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any, Callable

from nas.quantize.mixed import MixedPrecision, QuantizeConfig, QuantizeData


def task_data(data: Any, resolution: int, calib: int, batch: int = 32, extra: dict | None = None) -> QuantizeData:
    """Calibration images from the training split (in order, not augmented), validation and test
    splits, all at `resolution`."""
    from nas.data import batches, resize

    if calib < 1:
        raise ValueError(f"`calib >= 1` must hold (calibration images), but got calib={calib}")
    n = math.ceil(min(calib, len(data.train)) / batch)
    at = lambda split, size, k=None: [(resize(x, resolution), y) for x, y in itertools.islice(batches(split, size, None, data), k)]  # noqa: E731
    return QuantizeData(calib=at(data.train, batch, n), val=at(data.val, 128), test=at(data.test, 128),
                        input_shape=(1, 3, resolution, resolution), extra={"dataset": data.name, **(extra or {})})


def quantize_run_inputs(run_dir: str | Path, arch: str | None = None, calib: int = 256, sn: Any = None
                        ) -> tuple[Any, QuantizeData, dict]:
    """The run's winner (or `arch`) as a standalone model with BN recalibrated, its data, and result.json."""
    from nas.runs import run_subnet
    from nas.supernet.train import evaluate

    sn, a, result = run_subnet(run_dir, arch, "quantize", sn)
    evaluate(sn.net, a, sn.data, "val")  # BN statistics recalibrated for this subnet
    space = sn.net.space
    data = task_data(sn.data, space.input_shape(a)[-1], calib,
                     extra={"normalisation": sn.data.normalisation(), "arch": space.to_str(a)})
    return sn.net.extract(a).eval(), data, result


def quantize_run(run_dir: str | Path, device: str | None = None, arch: str | None = None, tolerance: float = 0.5,
                 calib: int = 256, method: str = "interlayer", search: str = "bisect", out: str | Path | None = None,
                 log: Callable[[str], None] = print, sn: Any = None, activations: str = "auto", calibration: str = "minmax") -> dict[str, Any]:
    """`sn`: the run's supernet, when the caller has it loaded."""
    import devices

    cfg = QuantizeConfig(tolerance=tolerance, method=method, search=search, activations=activations, calibration=calibration)
    model, data, result = quantize_run_inputs(run_dir, arch, calib, sn)
    spec = device or result.get("device")
    if not spec:
        raise ValueError(f"{run_dir} names no device; pass --device")
    job = MixedPrecision(model, data, devices.get(spec), Path(out) if out else Path(run_dir) / "quantized", cfg, log)
    return job.run()
