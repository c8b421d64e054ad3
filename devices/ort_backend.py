"""onnxruntime backends: ort-cpu and ort-cuda."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from devices.base import (
    CallableRunner,
    Device,
    DeviceError,
    ModelLike,
    Option,
    count,
    one_of,
    parse_bool,
    positive,
    sample_input,
)
from devices.int8 import FORMATS, int8_onnx
from devices.onnx_io import to_onnx
from devices.registry import register

_OPT_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}


PRECISIONS = ("fp32", "int8", "int8-s8")


class _OrtDevice(Device):
    provider = "CPUExecutionProvider"
    options = {
        "threads": Option(count, 1, "intra-op threads (0: onnxruntime's default)"),
        "batch": Option(positive, None, "batch size of the input"),
        "opt": Option(one_of(tuple(_OPT_LEVELS)), "all", "graph optimisation level"),
        "precision": Option(
            one_of(PRECISIONS),
            "fp32",
            "fp32, or time the model's uniform int8 deployment: int8 (uint8 "
            "activations, x86's fast path) or int8-s8 (int8 activations)",
        ),
        "int8_format": Option(
            one_of(FORMATS), "qdq", "the int8 deployment's onnxruntime form: qdq or qoperator (quantized operators)"
        ),
        "static": Option(
            parse_bool,
            False,
            "export at the timed input shape, batch included, so onnxruntime folds the "
            "shape arithmetic (a fixed-shape deployment); by default the batch axis is dynamic",
        ),
    }

    def _session(self, data: bytes) -> Any:
        import onnxruntime as ort

        if self.provider not in ort.get_available_providers():
            raise DeviceError(
                f"device {self.spec!r} needs onnxruntime's {self.provider}, but this onnxruntime offers "
                f"{', '.join(ort.get_available_providers())} (install onnxruntime-gpu on a CUDA machine)"
            )
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.config["threads"]
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _OPT_LEVELS[self.config["opt"]])
        so.log_severity_level = 3
        return ort.InferenceSession(data, so, providers=[self.provider])

    def export(self, model: ModelLike, shape: Sequence[int], arch: str | None = None) -> bytes:
        """The ONNX this device times for `model` at `shape` (a given ONNX file or bytes as it is)."""
        return to_onnx(model, shape, arch, dynamic_batch=not self.config["static"])

    def prepare(self, model: ModelLike, input_shape: Sequence[int], arch: str | None = None) -> CallableRunner:
        shape = self.batch_shape(input_shape)
        data = self.export(model, shape, arch)
        if self.config["precision"] != "fp32":
            activations = "u8" if self.config["precision"] == "int8" else "s8"
            data = int8_onnx(data, shape, activations, fmt=self.config["int8_format"])
        sess = self._session(data)
        name = sess.get_inputs()[0].name
        x = sample_input(shape)
        return self._runner(sess, name, x)

    def _runner(self, sess: Any, name: str, x: np.ndarray) -> CallableRunner:
        return CallableRunner(lambda: sess.run(None, {name: x}))

    def describe(self) -> dict[str, Any]:
        precision = self.config["precision"]
        if precision != "fp32" and self.config["int8_format"] != "qdq":
            precision += f" ({self.config['int8_format']})"
        return {"threads": self.config["threads"], "gpu": "", "precision": precision}


@register("ort-cpu")
class OrtCPU(_OrtDevice):
    """onnxruntime on the CPU, one thread by default."""

    cpu_bound = True


@register("ort-cuda")
class OrtCUDA(_OrtDevice):
    """onnxruntime's CUDA execution provider; input and output stay on the GPU (I/O binding)."""

    provider = "CUDAExecutionProvider"

    def _runner(self, sess: Any, name: str, x: np.ndarray) -> CallableRunner:
        import onnxruntime as ort

        binding = sess.io_binding()
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0))
        for out in sess.get_outputs():
            binding.bind_output(out.name, "cuda")
        return CallableRunner(lambda: sess.run_with_iobinding(binding), sync=binding.synchronize_outputs)

    def describe(self) -> dict[str, Any]:
        from devices.torch_backend import gpu_name

        return {"threads": self.config["threads"], "gpu": gpu_name(), "precision": self.config["precision"]}
