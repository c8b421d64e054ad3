"""`hwnas quantize RUN`: the run's winner (or --arch) extracted from its supernet, quantized for a
device, written to RUN/quantized/ beside best/."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from nas.quantize.mixed import MixedPrecision, QuantizeConfig, QuantizeData


def _resized(batches: Any, r: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x if x.shape[-1] == r else F.interpolate(x, size=(r, r), mode="bilinear", align_corners=False), y) for x, y in batches]


def run_data(sn: Any, arch: tuple, calib: int, batch: int = 32) -> QuantizeData:
    """Calibration images from the training split (not augmented), validation and test splits."""
    from nas.data import batches

    if calib < 1:
        raise ValueError(f"`calib >= 1` must hold (calibration images), but got calib={calib}")
    shape = tuple(sn.net.space.input_shape(arch))
    r = shape[-1]
    n = math.ceil(min(calib, len(sn.data.train)) / batch)
    cal = _resized([b for _, b in zip(range(n), batches(sn.data.train, batch, None, sn.data))], r)
    return QuantizeData(calib=cal, val=_resized(batches(sn.data.val, 128, None, sn.data), r),
                        test=_resized(batches(sn.data.test, 128, None, sn.data), r), input_shape=shape,
                        extra={"dataset": sn.data.name, "normalisation": sn.data.normalisation(), "arch": sn.net.space.to_str(arch)})


def quantize_run_inputs(run_dir: str | Path, arch: str | None = None, calib: int = 256) -> tuple[Any, QuantizeData, dict]:
    """The run's winner (or `arch`) as a standalone model with BN recalibrated, its data, and result.json."""
    from nas.runs import load_supernet_run
    from nas.supernet.train import evaluate

    run = Path(run_dir)
    if not run.is_dir():
        raise ValueError(f"{run}: no such run directory")
    result = json.loads((run / "result.json").read_text()) if (run / "result.json").exists() else {}
    sub = run / "supernet" if (run / "supernet" / "checkpoint.pt").exists() else Path(result.get("supernet", run))
    sn = load_supernet_run(sub)
    if arch is None:
        if not result.get("winner"):
            raise ValueError(f"{run} has no winner to quantize (no result.json with a winner); pass --arch")
        arch = result["winner"]["arch"]
    a = sn.net.space.from_str(arch)
    evaluate(sn.net, a, sn.data, "val")  # BN statistics recalibrated for this subnet
    return sn.net.extract(a).eval(), run_data(sn, a, calib), result


def quantize_run(run_dir: str | Path, device: str | None = None, arch: str | None = None, tolerance: float = 0.5,
                 calib: int = 256, method: str = "interlayer", search: str = "bisect", out: str | Path | None = None,
                 log: Callable[[str], None] = print) -> dict[str, Any]:
    import devices

    cfg = QuantizeConfig(tolerance=tolerance, method=method, search=search)
    model, data, result = quantize_run_inputs(run_dir, arch, calib)
    spec = device or result.get("device")
    if not spec:
        raise ValueError(f"{run_dir} names no device; pass --device")
    job = MixedPrecision(model, data, devices.get(spec), Path(out) if out else Path(run_dir) / "quantized", cfg, log)
    return job.run()
