"""Deploying a precision configuration with onnxruntime.quantization: static int8 in QDQ or QOperator form
(weights per channel; activations uint8 or int8; the form and the activation type whichever the device runs
faster), after `quant_pre_process`, the layers that stay in float passed as `nodes_to_exclude`
(`devices.int8.quantize_int8`). Activation ranges
are calibrated once and reused for every configuration (`ranges.json`, and onnxruntime's calibration cache
where it has one); ranges that saturating consumers make too wide are tightened (`devices.int8`)."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import onnx

from devices.int8 import (
    activation_ranges,
    check_activations,
    check_calibration,
    check_format,
    prepare_int8,
    quantize_int8,
    saturation_bounds,
    tightened_ranges,
)
from nas.export import onnx_accuracy
from nas.quantize.layers import layer_edges, neighbour_layers, onnx_nodes

__all__ = ["Deployer", "int8_nodes", "onnx_accuracy", "onnx_format"]


class Deployer:
    """Writes int8 variants of one float ONNX model for any set of int8 layers."""

    def __init__(
        self,
        fp32_onnx: str | Path,
        layers: list[str],
        calibration: Sequence[np.ndarray],
        workdir: str | Path,
        activations: str = "u8",
        method: str = "minmax",
        fmt: str = "qdq",
    ) -> None:
        self.work = Path(workdir)
        self.work.mkdir(parents=True, exist_ok=True)
        self.fp32 = Path(fp32_onnx)
        self.pre = self.work / "model.pre.onnx"
        if not self.pre.exists():
            prepare_int8(self.fp32, self.pre)
        self.layers = list(layers)
        self.proto = onnx.load(str(self.pre))
        self.nodes = onnx_nodes(self.proto, self.layers)
        self.neighbours = neighbour_layers(self.proto, self.nodes)
        self.calibration = list(calibration)
        self.cache = self.work / "calibration.json"
        self.activations = check_activations(activations)
        self.method = check_calibration(method)
        self.format = check_format(fmt)

    @functools.cached_property
    def ranges(self) -> dict[str, tuple[float, float]]:
        """Every activation tensor's calibrated range (`devices.int8.activation_ranges`), kept in the work folder."""
        path = self.work / f"ranges.{self.method}.json"
        if path.exists():
            return {k: (lo, hi) for k, (lo, hi) in json.loads(path.read_text()).items()}
        ranges = activation_ranges(self.pre, self.calibration, self.method)
        path.write_text(json.dumps(ranges))
        return ranges

    @functools.cached_property
    def tight(self) -> dict[str, tuple[float, float]]:
        """The ranges that saturating consumers narrow, narrowed (`devices.int8.tightened_ranges`), for every
        configuration."""
        return tightened_ranges(self.ranges, saturation_bounds(self.proto))

    def layer_input_ranges(self) -> dict[str, tuple[float, float]]:
        """Each layer's input range as the deployment quantizes it, for the fake quantization to mirror."""
        inputs = {n.name: n.input[0] for n in self.proto.graph.node}
        return {
            layer: self.ranges[inputs[node]] for layer, node in self.nodes.items() if inputs.get(node) in self.ranges
        }

    @functools.cached_property
    def edges(self) -> list:
        """The data flow between the layers (`layers.layer_edges`) of the model that is quantized."""
        return layer_edges(self.proto, self.nodes)

    def write(self, int8: Iterable[str], name: str, activations: str | None = None, fmt: str | None = None) -> Path:
        """The model with exactly these layers in int8 (every other op onnxruntime would quantize stays float
        where it only touches float layers), in `fmt` (the deployer's format by default)."""
        int8 = set(int8)
        unknown = sorted(int8 - set(self.layers))
        if unknown:
            raise ValueError(f"unknown layer {unknown[0]!r}; layers: {', '.join(self.layers[:4])} ...")
        dst = self.work / f"{name}.onnx"
        if not int8:
            dst.write_bytes(self.fp32.read_bytes())
            return dst
        exclude = [self.nodes[n] for n in self.layers if n not in int8]
        exclude += [node for node, touches in self.neighbours.items() if not touches & int8]
        quantize_int8(
            self.pre,
            dst,
            self.calibration,
            exclude,
            self.cache.with_suffix(f".{self.method}.json"),
            activations or self.activations,
            self.tight,
            self.method,
            fmt or self.format,
        )
        return dst


def int8_nodes(path: str | Path) -> int:
    """How many Conv/Gemm/MatMul nodes of an ONNX file compute in int8: fed int8 weights through a DequantizeLinear
    (QDQ format), or quantized operators themselves (QOperator format: QLinearConv, QGemm, ...)."""
    proto = onnx.load(str(path))
    dq = {o for n in proto.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return sum(
        1
        for n in proto.graph.node
        if n.op_type in QUANTIZED_OPS
        or (n.op_type in ("Conv", "Gemm", "MatMul") and len(n.input) > 1 and n.input[1] in dq)
    )


QUANTIZED_OPS = ("QLinearConv", "QGemm", "QLinearMatMul", "ConvInteger", "MatMulInteger")


def onnx_format(path: str | Path) -> str:
    """An ONNX file's form: "qoperator" (quantized operators), "qdq" (QuantizeLinear / DequantizeLinear around
    float operators), or "float"."""
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    if ops & set(QUANTIZED_OPS) or any(op.startswith("QLinear") for op in ops):
        return "qoperator"
    return "qdq" if "DequantizeLinear" in ops else "float"
