"""Turning what a user hands a device (module, ONNX path or bytes) into ONNX bytes."""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ARCH_KEY = "hwnas.arch"


def to_onnx(
    model: Any, input_shape: Sequence[int], arch: str | None = None, dynamic_batch: bool = True, opset: int = 17
) -> bytes:
    """ONNX bytes of `model`; an `nn.Module` is exported with input `input`, output `output`."""
    if isinstance(model, bytes):
        return model
    if isinstance(model, (str, Path)):
        path = Path(model)
        try:
            return path.read_bytes()
        except OSError as err:
            raise ValueError(f"cannot read ONNX file {str(path)!r}: {err.strerror}") from None
    import onnx
    import torch

    model = model.eval()
    buf = io.BytesIO()
    dummy = torch.zeros(tuple(int(s) for s in input_shape))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (dummy,),
            buf,
            dynamo=False,
            opset_version=opset,
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}} if dynamic_batch else None,
        )
    proto = onnx.load_from_string(buf.getvalue())
    if arch is not None:
        onnx.helper.set_model_props(proto, {ARCH_KEY: arch})
    return proto.SerializeToString()


def onnx_arch(data: bytes) -> str | None:
    """The architecture string stored in an ONNX model's metadata, if any."""
    import onnx

    proto = onnx.load_from_string(data)
    return next((p.value for p in proto.metadata_props if p.key == ARCH_KEY), None)
