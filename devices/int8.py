"""Static int8 of an ONNX model with onnxruntime.quantization: QDQ or QOperator, per-channel int8 weights,
activations uint8 or int8 (`quantize_int8`); and a device's `precision=int8` option (`int8_onnx`),
which times the int8 deployment of whatever model it is handed.

Activation ranges are calibrated (`activation_ranges`), then tightened where every consumer of a tensor
saturates (`saturation_bounds`): a convolution feeding hard-swish needs no values below -3, where
hard-swish is 0 whatever its input. onnxruntime quantizes such a convolution's output over its whole
calibrated range; in MobileNetV3 that range reached -229 at the head, a step of 0.9, and the uniform
int8 model fell from 65% to 12% top-1. Tightened, it keeps 64.7%."""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _input_name(path: Path) -> str:
    import onnx

    return onnx.load(str(path), load_external_data=False).graph.input[0].name


class _Reader:
    """onnxruntime.quantization's CalibrationDataReader over normalised training batches."""

    def __init__(self, name: str, batches: Iterable[np.ndarray]) -> None:
        self.name, self.it = name, iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        x = next(self.it, None)
        return None if x is None else {self.name: x}


def prepare_int8(src: Path, dst: Path) -> None:
    """onnxruntime's `quant_pre_process` (shape inference, graph optimisation) before quantizing."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)


# Bumped whenever the int8 deployment changes, so accuracies cached for an older one are not reused.
DEPLOYMENT = "int8-ort-v2"  # v2: ranges tightened at saturating consumers

ACTIVATIONS = ("u8", "s8", "s8sym")


def check_activations(text: str, name: str = "activations") -> str:
    if text not in ACTIVATIONS:
        raise ValueError(f"{name} must be one of {', '.join(ACTIVATIONS)}, but got {text!r}")
    return text


FORMATS = ("qdq", "qoperator")
"""onnxruntime's two int8 forms: QuantizeLinear/DequantizeLinear pairs around float operators, which the session
fuses where it has a kernel (what TensorRT reads), or quantized operators themselves (QLinearConv, QLinearAdd,
QGemm, ...), with a DequantizeLinear / QuantizeLinear only where an int8 region meets a float one."""


def check_format(text: str, name: str = "format") -> str:
    if text not in FORMATS:
        raise ValueError(f"{name} must be one of {', '.join(FORMATS)}, but got {text!r}")
    return text


CALIBRATIONS = ("minmax", "percentile", "entropy")


def check_calibration(text: str, name: str = "calibration") -> str:
    if text not in CALIBRATIONS:
        raise ValueError(f"{name} must be one of {', '.join(CALIBRATIONS)}, but got {text!r}")
    return text


def _method(name: str) -> Any:
    from onnxruntime.quantization import CalibrationMethod

    return {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }[check_calibration(name)]


def activation_ranges(
    prepared: Path, calibration: Iterable[np.ndarray], method: str = "minmax"
) -> dict[str, tuple[float, float]]:
    """Every activation tensor's calibrated (low, high), by onnxruntime's calibrator for `method`."""
    from onnxruntime.quantization import create_calibrator

    with tempfile.TemporaryDirectory(prefix="hwnas-calib-") as tmp:
        calibrator = create_calibrator(
            Path(prepared),
            None,
            augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=_method(method),
        )
        calibrator.collect_data(_Reader(_input_name(Path(prepared)), calibration))
        data = calibrator.compute_data()
    return {name: (float(np.min(t.range_value[0])), float(np.max(t.range_value[1]))) for name, t in data.data.items()}


def _flat_outside(
    node: Any, tensor: str, producers: dict[str, Any], constants: dict[str, np.ndarray]
) -> tuple[float, float] | None:
    """The interval of `tensor` outside which `node`'s output no longer changes, if it has one."""
    if node.op_type == "Relu":
        return 0.0, math.inf
    if node.op_type == "HardSwish":
        return -3.0, math.inf
    if node.op_type == "HardSigmoid":
        attrs = {a.name: a.f for a in node.attribute}
        alpha, beta = attrs.get("alpha", 0.2), attrs.get("beta", 0.5)
        return -beta / alpha, (1 - beta) / alpha
    if node.op_type == "Clip" and node.input[0] == tensor:
        low, high = (float(constants[i]) if i in constants else None for i in (list(node.input[1:]) + ["", ""])[:2])
        return (-math.inf if low is None else low), (math.inf if high is None else high)
    if node.op_type == "Mul" and len(node.input) == 2:  # x * hard_sigmoid(x): hard-swish, 0 below the gate's zero
        other = producers.get(node.input[1] if node.input[0] == tensor else node.input[0])
        if other is not None and other.op_type == "HardSigmoid" and other.input[0] == tensor:
            low, _ = _flat_outside(other, tensor, producers, constants)
            return low, math.inf
    return None


def saturation_bounds(proto: Any) -> dict[str, tuple[float, float]]:
    """Per activation tensor, an interval outside which every consumer's output is constant (Relu, Clip,
    HardSigmoid, HardSwish, x * HardSigmoid(x)): quantizing the tensor over more than that interval only
    coarsens the values that matter."""
    from onnx import numpy_helper

    constants = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer if not i.dims}
    for node in proto.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].t.ByteSize():
            constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    producers = {o: n for n in proto.graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for node in proto.graph.node:
        for i in set(node.input):
            consumers.setdefault(i, []).append(node)
    outputs = {o.name for o in proto.graph.output}
    bounds = {}
    for tensor, nodes in consumers.items():
        if tensor in outputs or tensor in constants:
            continue
        flat = [_flat_outside(n, tensor, producers, constants) for n in nodes]
        if all(f is not None for f in flat):
            low, high = min(f[0] for f in flat), max(f[1] for f in flat)
            if math.isfinite(low) or math.isfinite(high):
                bounds[tensor] = (low, high)
    return bounds


def tightened_ranges(
    ranges: dict[str, tuple[float, float]], bounds: dict[str, tuple[float, float]]
) -> dict[str, tuple[float, float]]:
    """The calibrated ranges that `bounds` narrows, narrowed."""
    out = {}
    for tensor, (lo, hi) in ranges.items():
        if tensor in bounds:
            low, high = max(lo, bounds[tensor][0]), min(hi, bounds[tensor][1])
            if (low, high) != (lo, hi) and low < high:
                out[tensor] = (low, high)
    return out


def quantize_int8(
    prepared: Path,
    dst: Path,
    calibration: Iterable[np.ndarray],
    exclude: list[str] | None = None,
    cache: Path | None = None,
    activations: str = "u8",
    tight: dict[str, tuple[float, float]] | None = None,
    method: str = "minmax",
    fmt: str = "qdq",
) -> None:
    """Static int8 (`fmt`: "qdq" or "qoperator", `FORMATS`) of a `prepare_int8` output: per-channel int8 weights,
    activation ranges from the calibration batches (or from onnxruntime's calibration cache `cache`, where this
    onnxruntime has one), the nodes in `exclude` left in float.

    `activations`: "u8" (U8S8: x86's VNNI / VPMADDUBSW kernels; ResNet-18 at 224 px ran 3.4x faster
    than fp32 on onnxruntime's CPU provider here, against 1.3x with S8S8), "s8" (S8S8, asymmetric) or "s8sym"
    (symmetric int8, zero point 0, what
    TensorRT requires). Weights use 7 bits for U8S8 on an x86 CPU without VNNI, where VPMADDUBSW's
    16-bit sums saturate (onnxruntime's `reduce_range`).

    `tight`: the `tightened_ranges` of `prepared` for `method`, when the caller has them (computed otherwise);
    handed to onnxruntime as tensor overrides."""
    import inspect

    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    check_activations(activations)
    check_format(fmt)
    calibration = list(calibration)
    if tight is None:
        import onnx

        proto = onnx.load(str(prepared), load_external_data=False)
        tight = tightened_ranges(activation_ranges(prepared, calibration, method), saturation_bounds(proto))
    kwargs: dict[str, Any] = {}
    if cache is not None and "calibration_cache_path" in inspect.signature(quantize_static).parameters:
        kwargs["calibration_cache_path"] = str(cache)
    extra: dict[str, Any] = {"ActivationSymmetric": True} if activations == "s8sym" else {}
    if tight:
        extra["TensorQuantOverrides"] = {
            t: [{"rmin": np.float32(lo), "rmax": np.float32(hi)}] for t, (lo, hi) in tight.items()
        }
    quantize_static(
        str(prepared),
        str(dst),
        _Reader(_input_name(prepared), calibration),
        quant_format=QuantFormat.QDQ if fmt == "qdq" else QuantFormat.QOperator,
        per_channel=True,
        activation_type=QuantType.QUInt8 if activations == "u8" else QuantType.QInt8,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=exclude or [],
        reduce_range=activations == "u8" and saturating_u8s8(),
        extra_options=extra,
        calibrate_method=_method(method),
        **kwargs,
    )


def saturating_u8s8() -> bool:
    """True on an x86 CPU whose U8S8 dot products go through VPMADDUBSW (no VNNI): 16-bit sums saturate."""
    import platform

    from devices.fingerprint import host_fingerprint

    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "x86"):
        return False
    flags = host_fingerprint()["cpu_int8"].split("+")
    return not any(f in flags for f in ("avx512_vnni", "avx_vnni", "amx_int8"))


def is_quantized(data: bytes) -> bool:
    """Whether an ONNX model already holds QuantizeLinear nodes (or QLinear operators)."""
    import onnx

    return any(
        n.op_type == "QuantizeLinear" or n.op_type.startswith("QLinear") for n in onnx.load_from_string(data).graph.node
    )


def int8_onnx(
    data: bytes,
    input_shape: Sequence[int],
    activations: str = "u8",
    calibration: Iterable[np.ndarray] | None = None,
    fmt: str = "qdq",
) -> bytes:
    """The uniform int8 deployment of a float ONNX model. Activation ranges come from `calibration`, or,
    for timing only, from standard-normal inputs (onnxruntime's int8 kernels take the same time whatever
    the ranges). A model that is already quantized is returned as it is."""
    if is_quantized(data):
        return data
    if calibration is None:
        rng = np.random.default_rng(0)
        calibration = [rng.standard_normal(tuple(input_shape)).astype(np.float32) for _ in range(4)]
    with tempfile.TemporaryDirectory(prefix="hwnas-int8-") as tmp:
        src, pre, dst = Path(tmp) / "model.onnx", Path(tmp) / "model.pre.onnx", Path(tmp) / "model.int8.onnx"
        src.write_bytes(data)
        prepare_int8(src, pre)
        quantize_int8(pre, dst, calibration, activations=activations, fmt=fmt)
        return dst.read_bytes()
