"""The exported model's numeric check: a correct export never fails, whatever its output magnitude, and a wrong
one (a changed weight, a swapped layer) always does; model.json says what was compared and how."""

from __future__ import annotations

import json

import pytest
import torch

from nas.export import ExportConfig, check_onnx, export_model
from search_spaces import load_space

SPACE = load_space("ofa_mbv3:resolutions=[96]")
LARGEST = SPACE.make([7] * 20, [6] * 20, [4] * 5, 96)


@pytest.fixture(scope="module")
def largest(tmp_path_factory):
    """The largest ofa_mbv3 subnet with randomised batch-norm statistics and a scaled classifier: logits in the
    hundreds (up to 286; an elementwise rtol=1e-3, atol=1e-4 check rejected this correct export)."""
    torch.manual_seed(0)
    model = SPACE.build(LARGEST).eval()
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1, generator=gen)
            m.running_var.uniform_(0.5, 2.0, generator=gen)
            m.weight.data.uniform_(0.8, 1.2, generator=gen)
    with torch.no_grad():
        model.classifier.weight.mul_(2000)
    inputs = torch.randn(16, 3, 96, 96, generator=gen)
    out = tmp_path_factory.mktemp("export")
    meta = export_model(model, (1, 3, 96, 96), out, {"arch": SPACE.to_str(LARGEST)}, inputs, ExportConfig())
    return model, inputs, out, meta


def test_a_correct_export_of_large_logits_passes_and_says_how_it_was_checked(largest):
    model, inputs, out, meta = largest
    check = json.loads((out / "model.json").read_text())["check"]["onnxruntime"]
    assert check == meta["check"]["onnxruntime"]
    assert 100 < check["output_max_abs"] < 1000
    assert check["max_rel_diff"] <= check["tolerance"] and check["top1_agreement"] == 1.0
    assert "max |runtime - PyTorch float32| / max |PyTorch float32|" in check["compared"]


def test_a_changed_weight_fails_the_check(largest):
    model, inputs, out, _ = largest
    changed = SPACE.build(LARGEST).eval()
    changed.load_state_dict(model.state_dict())
    with torch.no_grad():
        changed.blocks[3][0].conv_pwl.weight.mul_(1.5)
    with pytest.raises(
        RuntimeError, match=r"model.onnx under onnxruntime: output differs from PyTorch by .* must hold"
    ):
        check_onnx(out / "model.onnx", changed, inputs)


def test_a_swapped_layer_fails_the_check(largest):
    model, inputs, out, _ = largest
    swapped = SPACE.build(LARGEST).eval()
    swapped.load_state_dict(model.state_dict())
    stage = swapped.blocks[2]  # blocks of one stage with equal shapes: the swap runs, the function changes
    stage[1], stage[2] = stage[2], stage[1]
    with pytest.raises(RuntimeError, match="output differs from PyTorch"):
        check_onnx(out / "model.onnx", swapped, inputs)
