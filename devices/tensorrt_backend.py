"""TensorRT backend: an engine built from ONNX, timed with CUDA events. TensorRT imports lazily."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from devices.base import Device, DeviceError, ModelLike, Option, parse_bool, positive
from devices.onnx_io import to_onnx
from devices.registry import register
from devices.timing import Runner
from devices.torch_backend import CudaEventRunner, gpu_name, require_cuda


def import_tensorrt() -> Any:
    try:
        import tensorrt as trt
    except ImportError:
        raise DeviceError(
            "the tensorrt device needs NVIDIA TensorRT: pip install 'hwnas[tensorrt]' on a machine with a CUDA GPU"
        ) from None
    return trt


def build_engine(
    data: bytes, input_shape: Sequence[int], fp16: bool = False, workspace_mb: int = 2048, int8: bool = False
) -> Any:
    """Parse ONNX bytes and build a serialized engine for exactly `input_shape`."""
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(data):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse the ONNX model: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    if int8:  # explicit quantization: the ONNX carries QuantizeLinear/DequantizeLinear pairs
        config.set_flag(trt.BuilderFlag.INT8)
    profile = builder.create_optimization_profile()
    name = network.get_input(0).name
    profile.set_shape(name, tuple(input_shape), tuple(input_shape), tuple(input_shape))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("TensorRT failed to build an engine (see the TensorRT log above)")
    return serialized


class EngineRunner(CudaEventRunner):
    """A deserialized engine with its I/O tensors bound to torch CUDA buffers."""

    def __init__(self, serialized: Any, input_shape: Sequence[int]) -> None:
        import torch

        trt = import_tensorrt()
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.ERROR))
        self.engine = self.runtime.deserialize_cuda_engine(serialized)
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream()
        self.buffers: dict[str, Any] = {}
        dtypes = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32, trt.int8: torch.int8}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            if self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                self.context.set_input_shape(name, tuple(input_shape))
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            shape = tuple(self.context.get_tensor_shape(name))
            buf = torch.randn(shape, device="cuda").to(dtypes[self.engine.get_tensor_dtype(name)])
            self.buffers[name] = buf
            self.context.set_tensor_address(name, buf.data_ptr())

        def once() -> None:
            self.context.execute_async_v3(self.stream.cuda_stream)

        super().__init__(once)

    def run(self, n: int):  # type: ignore[override]
        with self.torch.cuda.stream(self.stream):
            return super().run(n)

    def close(self) -> None:
        self.buffers.clear()
        self.context = None
        self.engine = None


@register("tensorrt")
class TensorRT(Device):
    """TensorRT on GPU 0: `tensorrt`, `tensorrt:fp16`."""

    options = {
        "batch": Option(positive, None, "batch size of the input"),
        "fp16": Option(parse_bool, False, "allow fp16 kernels"),
        "workspace_mb": Option(positive, 2048, "builder workspace"),
    }

    def prepare(self, model: ModelLike, input_shape: Sequence[int], arch: str | None = None) -> Runner:
        require_cuda(self.spec)
        shape = self.batch_shape(input_shape)
        serialized = build_engine(to_onnx(model, shape, arch), shape, self.config["fp16"], self.config["workspace_mb"])
        return EngineRunner(serialized, shape)

    def describe(self) -> dict[str, Any]:
        import torch

        trt = import_tensorrt()
        return {"gpu": gpu_name(), "cuda": torch.version.cuda or "", "tensorrt": trt.__version__}
