"""Intel Neural Compressor's accuracy-driven post-training quantization (its ONNX Runtime line,
`onnx-neural-compressor`: `tuning.autotune` over `StaticQuantConfig`'s tuning set) of an fp32 ONNX model, with
hwnas's calibration images, validation split and tolerance, for onnxruntime's CPU provider."""

from __future__ import annotations

import contextlib
import io
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

from nas.bench.peers import need
from nas.export import onnx_accuracy

Batch = tuple[torch.Tensor, torch.Tensor]


def named_basic(fp32: Path, dst: Path) -> Path:
    """What INC's `autotune` does first (onnxruntime's basic graph optimisations: Identity nodes folded, which
    INC's weight quantizer needs), with every node named: onnxruntime leaves the HardSigmoid and Mul it splits
    HardSwish into unnamed, and INC, which maps its configuration by node name, then quantizes every unnamed node
    as the unnamed Mul and fails (onnx-neural-compressor 1.0: KeyError 'HardSigmoid')."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    ort.InferenceSession(str(fp32), options, providers=["CPUExecutionProvider"])
    proto, names = onnx.load(str(dst)), set()
    for i, node in enumerate(proto.graph.node):
        if not node.name or node.name in names:
            node.name = f"{node.op_type}_{i}"
        names.add(node.name)
    onnx.save(proto, str(dst))
    return dst


def inc_quantize(
    fp32: Path, calib: Sequence[Batch], val: Sequence[Batch], tolerance_points: float, out: Path, max_trials: int = 100
) -> dict[str, Any]:
    """INC's tuned int8 model written to `out` (the fp32 model when no configuration holds the tolerance: INC's
    fallback), with what INC needed: trials, seconds, its criterion."""
    need("inc")
    from onnx_neural_compressor import data_reader
    from onnx_neural_compressor.quantization import config, tuning

    class Reader(data_reader.CalibrationDataReader):
        def __init__(self) -> None:
            self.name = onnx.load(str(fp32), load_external_data=False).graph.input[0].name
            self.rewind()

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self.it, None)
            return None if x is None else {self.name: x}

        def rewind(self) -> None:
            self.it = iter([x.numpy() for x, _ in calib])

    trials: list[float] = []

    def evaluate(path: str) -> float:
        acc = onnx_accuracy(path, val)
        trials.append(acc)
        return acc

    baseline = onnx_accuracy(fp32, val)
    # INC's ONNX criterion is relative ((baseline - int8) / baseline <= tolerable_loss): hwnas's points, converted
    relative = tolerance_points / 100 / max(baseline, 1e-9)
    configs = config.StaticQuantConfig.get_config_set_for_tuning(
        execution_provider="CPUExecutionProvider",
        calibration_sampling_size=sum(len(x) for x, _ in calib),
    )
    start = time.perf_counter()
    quiet = logging.getLogger("onnx_neural_compressor")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # INC warns once per configuration it skips as already tried
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            best = tuning.autotune(
                str(named_basic(fp32, out.parent / f"{out.stem}.input.onnx")),
                tuning.TuningConfig(config_set=configs, tolerable_loss=relative, max_trials=max_trials),
                eval_fn=evaluate,
                calibration_data_reader=Reader(),
                optimization_level=ort.GraphOptimizationLevel.ORT_DISABLE_ALL,  # done by `named_basic`
            )
    except SystemExit:  # onnx-neural-compressor 1.0 calls exit(0) when no configuration holds the tolerance
        best = None
    finally:
        quiet.setLevel(level)
    seconds = time.perf_counter() - start
    out.parent.mkdir(parents=True, exist_ok=True)
    if best is None:
        out.write_bytes(fp32.read_bytes())
    else:
        onnx.save(best, str(out))
    return {
        "path": out,
        "fallback_fp32": best is None,
        "trials": max(len(trials) - 1, 0),  # the first evaluation is INC's fp32 baseline
        "max_trials": max_trials,
        "configurations": len(configs),
        "tolerable_loss": relative,
        "baseline_val": baseline,
        "seconds": seconds,
    }
