"""Static int8 of an ONNX model with onnxruntime.quantization: QDQ, per-channel int8 weights,
activations uint8 or int8 (`quantize_int8`); and a device's `precision=int8` option (`int8_onnx`),
which times the int8 deployment of whatever model it is handed."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Iterable, Sequence

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


ACTIVATIONS = ("u8", "s8", "s8sym")


def check_activations(text: str, name: str = "activations") -> str:
    if text not in ACTIVATIONS:
        raise ValueError(f"{name} must be one of {', '.join(ACTIVATIONS)}, but got {text!r}")
    return text


def quantize_int8(prepared: Path, dst: Path, calibration: Iterable[np.ndarray], exclude: list[str] | None = None,
                  cache: Path | None = None, activations: str = "u8") -> None:
    """Static QDQ int8 of a `prepare_int8` output: per-channel int8 weights, activation ranges from the
    calibration batches (or from onnxruntime's calibration cache `cache`, where this onnxruntime has one),
    the nodes in `exclude` left in float.

    `activations`: "u8" (U8S8: x86's VNNI / VPMADDUBSW kernels; ResNet-18 at 224 px ran 3.4x faster
    than fp32 on onnxruntime's CPU provider here, against 1.3x with S8S8), "s8" (S8S8, asymmetric) or "s8sym" (symmetric int8, zero point 0, what
    TensorRT requires). Weights use 7 bits for U8S8 on an x86 CPU without VNNI, where VPMADDUBSW's
    16-bit sums saturate (onnxruntime's `reduce_range`)."""
    import inspect

    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    check_activations(activations)
    kwargs: dict[str, Any] = {}
    if cache is not None and "calibration_cache_path" in inspect.signature(quantize_static).parameters:
        kwargs["calibration_cache_path"] = str(cache)
    extra = {"ActivationSymmetric": True} if activations == "s8sym" else {}
    quantize_static(str(prepared), str(dst), _Reader(_input_name(prepared), calibration), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8 if activations == "u8" else QuantType.QInt8,
                    weight_type=QuantType.QInt8, nodes_to_exclude=exclude or [],
                    reduce_range=activations == "u8" and saturating_u8s8(), extra_options=extra, **kwargs)


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

    return any(n.op_type == "QuantizeLinear" or n.op_type.startswith("QLinear") for n in onnx.load_from_string(data).graph.node)


def int8_onnx(data: bytes, input_shape: Sequence[int], activations: str = "u8",
              calibration: Iterable[np.ndarray] | None = None) -> bytes:
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
        quantize_int8(pre, dst, calibration, activations=activations)
        return dst.read_bytes()
