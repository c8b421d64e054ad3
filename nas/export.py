"""Export a subnet: ONNX (checked against PyTorch with onnxruntime), optionally int8 (QDQ, static
calibration, per-channel weights) and TensorRT engines (checked the same way on the GPU).

The export folder is self-describing: model.onnx / model.engine, and model.json with the
architecture, input shape, normalisation, class count, accuracy and the measured latency."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from devices.int8 import prepare_int8, quantize_int8
from devices.onnx_io import to_onnx

OPSET = 18
# float32 through two runtimes differs by summation order only: about 1e-5 of the output's magnitude (measured:
# 2.6e-5 for the largest ofa_mbv3 subnet with logits up to 276, where an elementwise rtol=1e-3 rejected a correct
# export); a changed weight or a swapped layer moves outputs by 1e-2 of it and more. So the check scales with the
# magnitude of each sample's output.
SCALED_TOL = 1e-3
FORMATS = ("onnx", "tensorrt")
WEIGHTS = "weights.safetensors"  # the PyTorch weights: with model.json's `timm` entry, timm alone rebuilds the model
COMPARED = (
    "max over samples of max |runtime - PyTorch float32| / max |PyTorch float32| of that sample's output; "
    f"passes when <= {SCALED_TOL:g}"
)


def compare_outputs(got: np.ndarray, ref: np.ndarray, what: str, tol: float | None = SCALED_TOL) -> dict[str, Any]:
    """Compare a runtime's outputs with PyTorch's, relative to each sample's output magnitude; raises when they
    differ by more than `tol` of it (`None`: recorded, not judged). Returns what model.json records."""
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    if got.shape != ref.shape:
        raise RuntimeError(f"{what}: output shape {got.shape} differs from PyTorch's {ref.shape}")
    rows_got, rows_ref = got.reshape(len(got), -1), ref.reshape(len(ref), -1)
    diff = np.abs(rows_got - rows_ref).max(axis=1)
    scale = np.maximum(np.abs(rows_ref).max(axis=1), np.finfo(np.float32).tiny)
    rel = float((diff / scale).max()) if np.all(np.isfinite(rows_got)) else float("inf")
    record = {
        "compared": COMPARED,
        "max_rel_diff": rel,
        "max_abs_diff": float(diff.max()),
        "output_max_abs": float(scale.max()),
        "tolerance": tol,
        "samples": len(got),
        "top1_agreement": float(np.mean(rows_got.argmax(1) == rows_ref.argmax(1))),
    }
    if tol is not None and not rel <= tol:
        raise RuntimeError(
            f"{what}: output differs from PyTorch by {rel:.3g} of its magnitude (max |diff| "
            f"{record['max_abs_diff']:.3g} on outputs up to {record['output_max_abs']:.3g}); "
            f"`max_rel_diff <= {tol:g}` must hold"
        )
    return record


@dataclass
class ExportConfig:
    """What `hwnas export` and a recipe's `export:` section ask for."""

    format: str = "onnx"
    fp16: bool = False  # TensorRT fp16 kernels
    int8: bool = False  # static int8 (QDQ, per-channel weights), calibrated on training images


def _session(model: str | Path | bytes) -> Any:
    """A quiet onnxruntime CPU session on an ONNX file or ONNX bytes."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(
        model if isinstance(model, bytes) else str(model), opts, providers=["CPUExecutionProvider"]
    )


def _ort_run(path: Path, x: np.ndarray) -> np.ndarray:
    sess = _session(path)
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def check_onnx(path: Path, model: nn.Module, inputs: torch.Tensor) -> dict[str, Any]:
    """Run the ONNX file with onnxruntime and PyTorch on the same inputs; raise if they differ (`compare_outputs`)."""
    with torch.no_grad():
        ref = model.eval()(inputs).numpy()
    got = _ort_run(path, inputs.numpy())
    return compare_outputs(got, ref, f"{path} under onnxruntime")


def onnx_accuracy(path: str | Path | bytes, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Top-1 of an ONNX model (file or bytes) under onnxruntime on (normalised images, labels) batches: what a user
    gets."""
    sess = _session(path)
    name = sess.get_inputs()[0].name
    correct = total = 0
    for x, y in batches:
        out = sess.run(None, {name: x.numpy()})[0]
        correct += int((out.argmax(1) == y.numpy()).sum())
        total += len(y)
    return correct / max(total, 1)


def export_tensorrt(
    onnx_path: Path, out: Path, model: nn.Module, inputs: torch.Tensor, fp16: bool, int8: bool
) -> dict[str, Any]:
    """Build an engine for the input shape and compare its output with PyTorch's (on the GPU)."""
    from devices.tensorrt_backend import EngineRunner, build_engine, import_tensorrt
    from devices.torch_backend import require_cuda

    require_cuda("tensorrt export")
    import_tensorrt()
    shape = tuple(inputs.shape)
    serialized = build_engine(onnx_path.read_bytes(), shape, fp16=fp16, int8=int8)
    out.write_bytes(bytes(serialized))
    runner = EngineRunner(serialized, shape)
    try:
        runner.buffers["input"].copy_(inputs.cuda())
        runner.context.execute_async_v3(runner.stream.cuda_stream)
        runner.stream.synchronize()
        got = runner.buffers["output"].float().cpu().numpy()
    finally:
        runner.close()
    with torch.no_grad():
        ref = model.eval()(inputs).numpy()
    # fp16 and int8 engines are meant to differ: recorded, judged by their accuracy
    return compare_outputs(got, ref, f"{out} under TensorRT", tol=None if fp16 or int8 else SCALED_TOL)


def export_model(
    model: nn.Module,
    input_shape: tuple[int, ...],
    out_dir: str | Path,
    info: dict[str, Any],
    check_inputs: torch.Tensor,
    config: ExportConfig,
    calibration: Iterable[np.ndarray] | None = None,
) -> dict[str, Any]:
    """Write model.onnx (and model.int8.onnx / model.engine, as `config` asks), the PyTorch weights
    (weights.safetensors) and model.json into `out_dir`;
    `calibration` batches are needed for int8."""
    fmt, fp16, int8 = config.format, config.fp16, config.int8
    if fmt not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}, but got {fmt!r}")
    if fp16 and fmt != "tensorrt":
        raise ValueError("--fp16 applies to --format tensorrt (onnxruntime on CPU has no fp16 kernels worth using)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    onnx_path = out / "model.onnx"
    onnx_path.write_bytes(to_onnx(model, input_shape, info.get("arch"), dynamic_batch=True, opset=OPSET))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / WEIGHTS))
    meta = {
        **info,
        "format": fmt,
        "files": {"onnx": onnx_path.name, "weights": WEIGHTS},
        "opset": OPSET,
        "dynamic_batch": True,
        "input_name": "input",
        "output_name": "output",
        "check": {"onnxruntime": check_onnx(onnx_path, model, check_inputs)},
    }
    deployed = onnx_path
    if int8:
        if calibration is None:
            raise ValueError("--int8 needs calibration batches")
        deployed = out / "model.int8.onnx"
        prepared = out / "model.pre.onnx"
        prepare_int8(onnx_path, prepared)
        activations = "s8sym" if fmt == "tensorrt" else "u8"
        quantize_int8(prepared, deployed, calibration, activations=activations)
        meta["int8_activations"] = activations
        prepared.unlink(missing_ok=True)
        meta["files"]["int8"] = deployed.name
    if fmt == "tensorrt":
        engine = out / "model.engine"
        meta["check"]["tensorrt"] = export_tensorrt(deployed, engine, model, check_inputs[: input_shape[0]], fp16, int8)
        meta["files"]["engine"] = engine.name
        meta["engine_input_shape"] = list(input_shape)
        meta["precision"] = "int8" if int8 else "fp16" if fp16 else "fp32"
    (out / "model.json").write_text(json.dumps(meta, indent=2))
    return meta


def export_checked(
    model: torch.nn.Module, space: Any, arch: str, val: np.ndarray, seq_len: int, out: Path
) -> dict[str, Any]:
    """A language model's `out/model.onnx` at `seq_len` (dynamic batch), checked against PyTorch with onnxruntime
    on held-out bytes `val`; raises when they differ. Returns the model card's fields."""
    import onnxruntime as ort

    shape = (1, seq_len)
    (out / "model.onnx").write_bytes(to_onnx(model, shape, arch, dynamic_batch=True, opset=18))
    tokens = torch.from_numpy(val[:seq_len].astype(np.int64))[None]
    with torch.no_grad():
        want = model(tokens).numpy()
    got = ort.InferenceSession(str(out / "model.onnx")).run(None, {"input": tokens.float().numpy()})[0]
    check = compare_outputs(got[0], want[0], f"{out / 'model.onnx'} under onnxruntime")  # one row per position
    return {
        "arch": arch,
        "space": space.spec,
        "input_shape": list(shape),
        "input": "byte ids (float in the ONNX graph; cast to int64 inside)",
        "weights": "weights.pt (a state_dict; torch.load(..., weights_only=True))",
        "onnxruntime_max_abs_diff": check["max_abs_diff"],
        "onnxruntime_matches": True,
        "check": {"onnxruntime": check},
    }
