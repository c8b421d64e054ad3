"""`hwnas quantize RUN`: the run's winner (or --arch) extracted from its supernet, quantized for a
device, written to RUN/quantized/ beside best/."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import devices
from nas.quantize import MixedPrecision, QuantizeConfig, QuantizeData
from nas.quantize.data import task_data
from nas.rundir import QUANTIZED
from nas.supernet.run import run_subnet
from nas.supernet.train import evaluate


def quantize_run_inputs(
    run_dir: str | Path, arch: str | None = None, calib: int = 256, sn: Any = None
) -> tuple[Any, QuantizeData, dict]:
    """The run's winner (or `arch`) as a standalone model with BN recalibrated, its data, and result.json."""
    sn, a, result = run_subnet(run_dir, arch, "quantize", sn)
    evaluate(sn.net, a, sn.data, "val")  # BN statistics recalibrated for this subnet
    space = sn.net.space
    data = task_data(
        sn.data,
        space.input_shape(a)[-1],
        calib,
        extra={"normalisation": sn.data.normalisation(), "arch": space.to_str(a)},
    )
    return sn.net.extract(a).eval(), data, result


def quantize_run(
    run_dir: str | Path,
    config: QuantizeConfig,
    device: str | None = None,
    arch: str | None = None,
    calib: int = 256,
    out: str | Path | None = None,
    log: Callable[[str], None] = print,
    sn: Any = None,
) -> dict[str, Any]:
    """The run's winner (or `arch`) quantized for `device` (default: the run's) into `out` (default:
    RUN/quantized); `sn`: the run's supernet, when the caller has it loaded."""
    model, data, result = quantize_run_inputs(run_dir, arch, calib, sn)
    spec = device or result.get("device")
    if not spec:
        raise ValueError(f"{run_dir} names no device; pass --device")
    job = MixedPrecision(model, data, devices.get(spec), Path(out) if out else Path(run_dir) / QUANTIZED, config, log)
    return job.run()
