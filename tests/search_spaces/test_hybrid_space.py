"""The hybrid_lm space beyond the shared conformance suite: structure, decoding, export, the proxy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import search_spaces
from nas.lm.proxy import TextData, bits_per_byte, load_text, train_proxy
from nas.recipes import ProxyConfig


@pytest.fixture(scope="module")
def space():
    return search_spaces.create("hybrid_lm", dims=[64, 96], seq_len=32, window=8)


def test_strings_spell_the_stage_units(space):
    arch = space.from_str("d64h2f2/attn+mamba2@1:3,f1,x1/gdn,f0,x2/-")
    assert space.blocks(arch) == ["attn", "ffn"] + ["mamba2", "ffn"] * 3 + ["gdn", "gdn"]
    assert space.to_str(arch) == "d64h2f2/attn+mamba2@1:3,f1,x1/gdn,f0,x2/-"
    # a pair in ratio 0:1 is its second type alone; genes that do not matter are normalised
    assert space.to_str(space.from_str("d64h2f2/swa+deltanet@0:1,f2,x1/-/-")) == "d64h2f2/deltanet,f2,x1/-/-"
    assert space.from_str("d64h2f3/attn,f0,x1/-/-") == space.from_str("d64h2f2/attn,f0,x1/-/-")  # no FFN: ratio unused


def test_the_block_cap_is_enforced(space):
    with pytest.raises(ValueError, match="over the cap of 16"):
        space.from_str("d64h2f2/attn+mamba2@1:3,f2,x2/-/-")
    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(300)]
    assert max(len(space.blocks(a)) for a in archs) <= 16
    assert {k for a in archs for k in space.blocks(a)} == {"attn", "swa", "mamba2", "deltanet", "gdn", "ffn"}
    child = space.mutate(archs[0], rng)
    assert len(space.blocks(child)) <= 16 and child != archs[0]


def test_a_stage_mixer_mutates_to_a_neighbouring_mix(space):
    i = [g.name for g in space.genes].index("s0_mix")
    near = space.neighbours(i, "mamba2+deltanet")
    assert {"mamba2+swa", "gdn+deltanet", "deltanet+mamba2", "mamba2", "deltanet"} <= set(near)
    assert "swa+attn" not in near and "mamba2+deltanet" not in near and set(near) <= set(space.genes[i].options)
    options = space.genes[i].options
    for start in options:  # every mix is at most two steps from any other
        reach = {n for m in space.neighbours(i, start) for n in [m, *space.neighbours(i, m)]}
        assert reach | {start} == set(options), start
    assert space.neighbours(0, 64) == [d for d in space.genes[0].options if d != 64]  # other genes: any other option


def test_decoding_through_the_caches_equals_the_full_forward(space):
    torch.manual_seed(0)
    arch = space.from_str("d64h2f2/attn+mamba2@1:1,f1,x1/swa+gdn@1:2,f0,x1/deltanet,f1,x1")
    model = space.build(arch).eval()
    prompt = torch.randint(0, 256, (2, 20))
    with torch.no_grad():
        full = model(prompt)
    last, caches = model.prefill(prompt)
    assert torch.allclose(last[:, -1], full[:, -1], atol=1e-4)
    assert len(caches) == len(space.blocks(arch))
    out = model.generate(prompt, 5)
    with torch.no_grad():
        assert torch.equal(out[:, 0], full[:, -1].argmax(-1))
    assert out.shape == (2, 5)


def test_the_whole_model_exports_to_onnx_at_a_fixed_length(space):
    import onnxruntime as ort

    from devices.onnx_io import to_onnx

    torch.manual_seed(1)
    arch = space.from_str("d64h2f2/attn+mamba2@1:1,f1,x1/swa+gdn@1:1,f0,x1/deltanet,f0,x1")
    model = space.build(arch).eval()
    tokens = torch.randint(0, 256, space.input_shape(arch))
    sess = ort.InferenceSession(to_onnx(model, space.input_shape(arch), dynamic_batch=False, opset=18))
    got = sess.run(None, {"input": tokens.float().numpy()})[0]
    with torch.no_grad():
        want = model(tokens).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)


def test_short_training_lowers_bits_per_byte_on_the_bundled_text(space):
    data = TextData.from_bytes(load_text())
    assert len(data.train) > 300_000 and len(data.val) > 30_000
    model = space.build(space.from_str("d64h2f2/mamba2,f1,x1/-/-"))
    before = bits_per_byte(model, data.val, 32, max_windows=16)
    result = train_proxy(model, data, ProxyConfig(steps=60, batch=16, seq_len=32, val_windows=16))
    assert 7.5 < before < 8.5  # uniform over 256 symbols is 8 bits
    assert result["val_bpb"] < 5.0
    assert np.mean(result["train_loss"][-10:]) < np.mean(result["train_loss"][:10])


def test_bad_text_sources_get_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="cannot read text .*nope.txt"):
        load_text(tmp_path / "nope.txt")
    (tmp_path / "d").mkdir()
    with pytest.raises(ValueError, match="holds no"):
        load_text(tmp_path / "d")
    (tmp_path / "d" / "a.md").write_text("hello world " * 50)
    assert load_text(tmp_path / "d").startswith(b"hello")
    with pytest.raises(ValueError, match="shorter than one window"):
        bits_per_byte(torch.nn.Identity(), np.zeros(10, np.uint8), 32)


def test_bench_hybrid_times_every_mixer_and_ranks_the_proxy(tmp_path, capsys):
    from nas.cli.main import main

    argv = [
        "bench",
        "hybrid",
        "--device",
        "torch-cpu:threads=1",
        "--contexts",
        "8,32",
        "--prompts",
        "16",
        "--dim",
        "32",
        "--layers",
        "1",
        "--window",
        "8",
        "--archs",
        "3",
        "--short",
        "2",
        "--long",
        "4",
        "--out",
        str(tmp_path),
    ]
    assert main(argv) == 0
    import pandas as pd

    lat = pd.read_csv(tmp_path / "operator_latency.csv")
    assert len(lat) == 5 * 3 and set(lat["mixer"]) == {"attn", "swa", "mamba2", "deltanet", "gdn"}
    assert (lat["ms"] > 0).all()
    assert (tmp_path / "operator_latency.png").stat().st_size > 0
    proxy = pd.read_csv(tmp_path / "proxy_agreement.csv")
    assert len(proxy) == 3 and proxy["short_bpb"].between(1, 12).all() and proxy["long_bpb"].between(1, 12).all()
    assert "Proxy rank agreement" in capsys.readouterr().out


def test_a_tight_cap_shrinks_every_arch_to_fit():
    tight = search_spaces.create("hybrid_lm", max_blocks=2)
    rng = np.random.default_rng(3)
    archs = {tight.sample(rng) for _ in range(200)}
    assert all(1 <= len(tight.blocks(a)) <= 2 for a in archs)
    assert all(tight.from_str(tight.to_str(a)) == a for a in archs)


@pytest.mark.slow
def test_size_counts_the_distinct_architectures_within_the_cap():
    small = search_spaces.create("hybrid_lm", dims=[64], heads=[2], ffn_ratios=[2.0, 3.0], stages=2, max_blocks=4)
    assert small.size() == len(list(small.enumerate())) == 2010
