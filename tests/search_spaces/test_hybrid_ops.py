"""Hybrid language-model mixers: chunked forms equal their per-token recurrences; ONNX export."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from search_spaces.hybrid_lm.ops import (
    causal_attention,
    causal_attention_recurrent,
    delta_rule_chunked,
    delta_rule_recurrent,
    ssd_chunked,
    ssd_recurrent,
)


@pytest.fixture
def g():
    return torch.Generator().manual_seed(0)


@pytest.mark.parametrize("window", [None, 5])
def test_grouped_query_attention_matches_token_by_token_decoding(g, window):
    q = torch.randn(2, 24, 4, 8, generator=g)
    k, v = torch.randn(2, 24, 2, 8, generator=g), torch.randn(2, 24, 2, 8, generator=g)
    torch.testing.assert_close(
        causal_attention(q, k, v, window), causal_attention_recurrent(q, k, v, window), atol=1e-5, rtol=1e-5
    )


def test_sliding_window_forgets_what_is_out_of_the_window(g):
    q, k, v = (torch.randn(1, 12, 2, 4, generator=g) for _ in range(3))
    k2, v2 = k.clone(), v.clone()
    k2[:, 0], v2[:, 0] = 9.0, 9.0  # token 0 is outside the 4-token window of tokens 4..11
    a, b = causal_attention(q, k, v, 4), causal_attention(q, k2, v2, 4)
    torch.testing.assert_close(a[:, 4:], b[:, 4:])
    assert not torch.allclose(a[:, :4], b[:, :4])


def _ssd_inputs(g, l=32):
    x = torch.randn(2, l, 3, 4, generator=g)
    dt = F.softplus(torch.randn(2, l, 3, generator=g))
    a = -torch.rand(3, generator=g) - 0.1
    b, c = torch.randn(2, l, 3, 5, generator=g), torch.randn(2, l, 3, 5, generator=g)
    return x, dt, a, b, c


@pytest.mark.parametrize("chunk", [4, 8, 32])
def test_mamba2_chunked_scan_equals_the_recurrence(g, chunk):
    args = _ssd_inputs(g)
    y, s = ssd_chunked(*args, chunk=chunk)
    y_ref, s_ref = ssd_recurrent(*args)
    torch.testing.assert_close(y, y_ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(s, s_ref, atol=1e-4, rtol=1e-4)


def _delta_inputs(g, l=32, gated=False):
    q = torch.randn(2, l, 3, 6, generator=g)
    k = F.normalize(torch.randn(2, l, 3, 6, generator=g), dim=-1)
    v = torch.randn(2, l, 3, 5, generator=g)
    beta = torch.sigmoid(torch.randn(2, l, 3, generator=g))
    gate = F.logsigmoid(torch.randn(2, l, 3, generator=g) + 2) if gated else None
    return q, k, v, beta, gate


@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("chunk", [4, 16])
def test_delta_rule_chunked_equals_the_recurrence(g, gated, chunk):
    q, k, v, beta, gate = _delta_inputs(g, gated=gated)
    o, s = delta_rule_chunked(q, k, v, beta, gate, chunk=chunk)
    o_ref, s_ref = delta_rule_recurrent(q, k, v, beta, gate)
    torch.testing.assert_close(o, o_ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(s, s_ref, atol=1e-4, rtol=1e-4)


def test_the_delta_rule_overwrites_a_key_instead_of_adding_to_it():
    k = F.normalize(torch.ones(1, 2, 1, 4), dim=-1)
    v = torch.tensor([1.0, 0, 0]).repeat(1, 2, 1, 1)
    v[:, 1] = torch.tensor([0.0, 1, 0])
    o, _ = delta_rule_recurrent(k, k, v, torch.ones(1, 2, 1))
    torch.testing.assert_close(o[0, 1, 0], torch.tensor([0.0, 1, 0]))  # the second value replaced the first


@pytest.mark.parametrize("op", ["attention", "swa", "mamba2", "deltanet", "gated_deltanet"])
def test_mixers_export_to_onnx_at_a_fixed_length(op, g, tmp_path):
    ort = pytest.importorskip("onnxruntime")

    class Mixer(torch.nn.Module):
        def forward(self, *xs):
            if op in ("attention", "swa"):
                return causal_attention(*xs, window=4 if op == "swa" else None)
            if op == "mamba2":
                return ssd_chunked(*xs, chunk=8)[0]
            return delta_rule_chunked(*xs, chunk=8)[0]

    if op in ("attention", "swa"):
        inputs = (
            torch.randn(1, 16, 2, 4, generator=g),
            torch.randn(1, 16, 1, 4, generator=g),
            torch.randn(1, 16, 1, 4, generator=g),
        )
    elif op == "mamba2":
        inputs = _ssd_inputs(g, 16)
    else:
        inputs = tuple(t for t in _delta_inputs(g, 16, gated=op == "gated_deltanet") if t is not None)
    path = tmp_path / f"{op}.onnx"
    names = [f"in{i}" for i in range(len(inputs))]
    torch.onnx.export(Mixer().eval(), inputs, str(path), dynamo=False, opset_version=18, input_names=names)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {n: t.numpy() for n, t in zip(names, inputs)})[0]
    with torch.no_grad():
        ref = Mixer()(*inputs).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", ["attention", "swa", "mamba2", "deltanet", "gated_deltanet"])
def test_decoding_one_token_at_a_time_with_a_cache_equals_the_full_forward(kind):
    from search_spaces.hybrid_lm.layers import Attention, DeltaNet, Mamba2

    torch.manual_seed(0)
    dim = 32
    layer = {
        "attention": lambda: Attention(dim, 4, 2),
        "swa": lambda: Attention(dim, 4, 2, window=5),
        "mamba2": lambda: Mamba2(dim, 4, state=8, chunk=8),
        "deltanet": lambda: DeltaNet(dim, 4, chunk=8),
        "gated_deltanet": lambda: DeltaNet(dim, 4, gated=True, chunk=8),
    }[kind]().eval()
    x = torch.randn(2, 21, dim)  # not a multiple of the chunk: the forward pads
    with torch.no_grad():
        full = layer(x)
        cache, steps = None, []
        for t in range(x.shape[1]):
            y, cache = layer.step(x[:, t : t + 1], cache)
            steps.append(y)
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-4, rtol=1e-4)
    if kind == "swa":
        assert cache["k"].shape[1] == 5  # the windowed cache keeps only the window
    if kind in ("mamba2", "deltanet", "gated_deltanet"):
        assert all(v.shape[1] <= 4 for k, v in cache.items() if k == "conv")  # constant-size state


def test_a_decode_step_moves_its_caches_with_the_weights():
    from search_spaces.hybrid_lm.model import DecodeStep, HybridLM

    model = HybridLM(["attn", "ffn", "mamba2", "gdn"], 32, 2, 2.0, 8)
    step = DecodeStep(model, 1, 16).to(torch.float64)  # torch-cuda moves it to the GPU the same way
    tensors = [v for c in step.caches if c for v in c.values() if torch.is_tensor(v)]
    assert tensors and all(t.dtype == torch.float64 for t in tensors)
    assert step.caches[0]["pos"] == 16
    assert step(torch.zeros(1, 1)).dtype == torch.float64
