"""Deploying a precision configuration with onnxruntime.quantization: static QDQ int8 (S8S8, weights
per channel), after `quant_pre_process`, the layers that stay in float passed as `nodes_to_exclude`.
Activation ranges are calibrated once and reused for every configuration (onnxruntime's
calibration cache where it has one)."""
from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import onnx
import torch

from nas.quantize.layers import onnx_nodes


class _Reader:
    def __init__(self, name: str, arrays: Iterable[np.ndarray]) -> None:
        self.name, self.it = name, iter(arrays)

    def get_next(self) -> dict[str, np.ndarray] | None:
        x = next(self.it, None)
        return None if x is None else {self.name: x}


class Deployer:
    """Writes int8 variants of one float ONNX model for any set of int8 layers."""

    def __init__(self, fp32_onnx: str | Path, layers: list[str], calibration: Sequence[np.ndarray], workdir: str | Path) -> None:
        from onnxruntime.quantization.shape_inference import quant_pre_process

        self.work = Path(workdir)
        self.work.mkdir(parents=True, exist_ok=True)
        self.fp32 = Path(fp32_onnx)
        self.pre = self.work / "model.pre.onnx"
        if not self.pre.exists():
            quant_pre_process(str(self.fp32), str(self.pre), skip_symbolic_shape=True)
        self.layers = list(layers)
        self.nodes = onnx_nodes(onnx.load(str(self.pre)), self.layers)
        self.calibration = list(calibration)
        self.cache = self.work / "calibration.json"
        self._ranges: Any = None

    def _quantize(self, dst: Path, exclude: list[str], nodes: list[str]) -> None:
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

        kwargs: dict[str, Any] = {}
        if "calibration_cache_path" in inspect.signature(quantize_static).parameters:
            kwargs["calibration_cache_path"] = str(self.cache)
        quantize_static(str(self.pre), str(dst), _Reader("input", self.calibration), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        nodes_to_exclude=exclude, nodes_to_quantize=nodes or None, **kwargs)

    def write(self, int8: Iterable[str], name: str) -> Path:
        """The model with exactly these layers in int8 (every other op onnxruntime would quantize stays float
        where it only touches float layers)."""
        int8 = set(int8)
        unknown = sorted(int8 - set(self.layers))
        if unknown:
            raise ValueError(f"unknown layer {unknown[0]!r}; layers: {', '.join(self.layers[:4])} ...")
        dst = self.work / f"{name}.onnx"
        if not int8:
            dst.write_bytes(self.fp32.read_bytes())
            return dst
        exclude = [self.nodes[n] for n in self.layers if n not in int8]
        self._quantize(dst, exclude, [])
        return dst


def onnx_accuracy(path: str | Path, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Top-1 of an ONNX file under onnxruntime on (normalised images, labels) batches."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    correct = total = 0
    for x, y in batches:
        out = sess.run(None, {name: x.numpy()})[0]
        correct += int((out.argmax(1) == y.numpy()).sum())
        total += len(y)
    return correct / max(total, 1)


def int8_nodes(path: str | Path) -> int:
    """How many Conv/Gemm/MatMul nodes of an ONNX file read int8 weights (a DequantizeLinear feeds them)."""
    proto = onnx.load(str(path))
    dq = {o for n in proto.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return sum(1 for n in proto.graph.node if n.op_type in ("Conv", "Gemm", "MatMul") and len(n.input) > 1 and n.input[1] in dq)


def save_config(path: Path, config: dict[str, Any]) -> None:
    path.write_text(json.dumps(config, indent=2))
