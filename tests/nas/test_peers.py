"""The peers hwnas is compared with, on models of hwnas's own spaces (skipped without `.[peers]`)."""

from __future__ import annotations

import collections

import onnx
import pytest
import torch

from devices.onnx_io import to_onnx
from search_spaces import load_space


def test_inc_quantizes_a_mobilenetv3_with_hard_swish_and_squeeze_excite(tmp_path):
    pytest.importorskip("onnx_neural_compressor", reason="needs onnx-neural-compressor: pip install -e '.[peers]'")
    from nas.bench.inc_quantize import inc_quantize

    space = load_space("ofa_mbv3:resolutions=[32],width_mult=0.5,num_classes=10")
    model = space.build(space.supernet().largest()).eval()
    fp32 = tmp_path / "fp32.onnx"
    fp32.write_bytes(to_onnx(model, (1, 3, 32, 32), dynamic_batch=True, opset=18))
    g = torch.Generator().manual_seed(0)
    calib = [(torch.randn(8, 3, 32, 32, generator=g), torch.zeros(8, dtype=torch.long))]
    val = [(torch.randn(16, 3, 32, 32, generator=g), torch.randint(0, 10, (16,), generator=g))]
    # a tolerance of 100 points: the first configuration INC tries is accepted, so the quantized model is written
    tuned = inc_quantize(fp32, calib, val, 100.0, tmp_path / "inc.onnx", max_trials=2)
    ops = collections.Counter(n.op_type for n in onnx.load(str(tuned["path"])).graph.node)
    assert not tuned["fallback_fp32"] and tuned["trials"] == 1
    assert ops["QLinearConv"] > 0 and ops["HardSigmoid"] > 0  # int8 convolutions, the SE gates left in float
