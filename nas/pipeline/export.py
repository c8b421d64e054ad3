"""`hwnas export`: a run's winner (or any subnet) extracted from its supernet, BN recalibrated, exported to
ONNX or TensorRT and checked against PyTorch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nas.data import batches, resize
from nas.export import ExportConfig, export_model, onnx_accuracy
from nas.rundir import BEST
from nas.supernet.run import SupernetRun, run_subnet
from nas.supernet.train import evaluate


def export_run(
    run_dir: str | Path,
    config: ExportConfig,
    arch: str | None = None,
    out: str | Path | None = None,
    sn: SupernetRun | None = None,
) -> dict[str, Any]:
    """Extract a subnet of a run (default: its winner, with its measured latency and device), recalibrate BN,
    export it as `config` says and check it (`sn`: the run's supernet, when the caller has it loaded)."""
    run = Path(run_dir)
    sn, a, result = run_subnet(run, arch, "export", sn)
    winner = arch is None  # the run's winner carries its measured latency and device
    measured_ms = result["winner"].get("measured_ms") if winner else None
    device, fingerprint = (result.get("device"), result.get("fingerprint")) if winner else (None, None)
    int8 = config.int8
    space = sn.net.space
    val = evaluate(sn.net, a, sn.data, "val")  # leaves the subnet's BN statistics recalibrated
    test = evaluate(sn.net, a, sn.data, "test")
    model = sn.net.extract(a).eval()
    shape = space.input_shape(a)
    r = shape[-1]
    check = resize(next(batches(sn.data.val, 16, None, sn.data))[0], r)
    calib = (resize(x, r).numpy() for x, _ in batches(sn.data.train, 32, 7, sn.data, augment=False)) if int8 else None
    info = {
        "arch": space.to_str(a),
        "space": space.spec,
        "input_shape": list(shape),
        "normalisation": sn.data.normalisation(),
        "num_classes": sn.data.num_classes,
        "classes_from": sn.data.name,
        "val_top1": val,
        "test_top1": test,
        "latency_ms": measured_ms,
        "device": device,
        "fingerprint": fingerprint,
        "timm": space.timm_config(a, sn.data.num_classes),
    }
    out_dir = Path(out) if out else run / BEST
    meta = export_model(model, shape, out_dir, info, check, config, calib)
    if int8:
        test_batches = ((resize(x, r), y) for x, y in batches(sn.data.test, 64, None, sn.data))
        meta["int8_test_top1"] = onnx_accuracy(out_dir / meta["files"]["int8"], test_batches)
        (out_dir / "model.json").write_text(json.dumps(meta, indent=2))
    return meta
