"""Mixed-precision quantization: fake quantization, Hessian sensitivities, searches, onnxruntime deployment."""

from __future__ import annotations

import itertools
import json

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import devices
from nas.data import batches, digits
from nas.quantize import MixedPrecision, QuantizeConfig, QuantizeData
from nas.quantize.deploy import Deployer, int8_nodes, onnx_accuracy, onnx_format
from nas.quantize.fakequant import FakeQuant, quantize_activation, quantize_weight
from nas.quantize.layers import blocks, module_of_node, onnx_nodes, quantizable_layers
from nas.quantize.search import bisect, greedy_blocks, ilp_select
from nas.quantize.sensitivity import hessian_traces, interlayer_scores, order


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU())
        self.block = nn.Sequential(
            nn.Conv2d(16, 32, 3, 2, 1), nn.BatchNorm2d(32), nn.ReLU(), nn.Conv2d(32, 32, 1), nn.ReLU()
        )
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(self.stem(x)).mean((2, 3)))


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    data = digits(16)
    model = Small()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for epoch in range(6):
        model.train()
        for x, y in batches(data.train, 32, epoch, data):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
    model.eval()
    qd = QuantizeData(
        calib=list(itertools.islice(batches(data.train, 32, None, data), 4)),
        val=list(batches(data.val, 128, None, data)),
        test=list(batches(data.test, 128, None, data)),
        input_shape=(1, 3, 16, 16),
        extra={"dataset": "digits"},
    )
    return model, qd


def test_weights_are_quantized_per_output_channel_to_within_half_a_step():
    w = torch.randn(8, 4, 3, 3) * torch.logspace(-3, 1, 8).view(-1, 1, 1, 1)
    q = quantize_weight(w)
    step = w.abs().amax((1, 2, 3)) / 127
    assert torch.all((q - w).abs().amax((1, 2, 3)) <= step / 2 + 1e-7)
    assert len(torch.unique((q[0] / step[0]).round())) <= 255  # a small channel keeps its own scale


def test_activations_keep_zero_exact_and_clip_to_the_calibrated_range():
    x = torch.linspace(-1, 3, 1001)
    q = quantize_activation(x, -0.5, 2.0)
    assert float(quantize_activation(torch.zeros(1), -0.5, 2.0)) == 0.0
    assert q.min() >= -0.5 - 1e-6 and q.max() <= 2.0 + 1e-6
    inside = (x > -0.5) & (x < 2.0)
    assert float((q - x)[inside].abs().max()) <= 2.5 / 255 / 2 + 1e-6


def test_layers_come_in_forward_order_and_map_to_onnx_nodes(trained):
    from devices.onnx_io import to_onnx

    model, qd = trained
    layers = quantizable_layers(model, qd.calib[0][0])
    assert layers == ["stem.0", "block.0", "block.3", "head"]
    nodes = onnx_nodes(onnx.load_from_string(to_onnx(model, qd.input_shape)), layers)
    assert nodes["block.3"].endswith("/Conv") and nodes["head"].endswith("/Gemm")
    assert module_of_node("/blocks/blocks.1/blocks.1.0/conv_pw/Conv") == "blocks.1.0.conv_pw"
    assert module_of_node("/conv_stem/Conv") == "conv_stem"
    assert module_of_node("/layer2/layer2.0/downsample/downsample.0/Conv") == "layer2.0.downsample.0"
    assert blocks(layers) == [["stem.0"], ["block.0", "block.3"], ["head"]]


def test_fake_quantization_changes_only_the_chosen_layers_and_restores_them(trained):
    model, qd = trained
    layers = quantizable_layers(model, qd.calib[0][0])
    fq = FakeQuant(model, layers).calibrate(x for x, _ in qd.calib)
    x = qd.val[0][0]
    with torch.no_grad():
        ref = model(x)
        before = model.head.weight.clone()
        with fq.active(["head"]) as m:
            q = m(x)
            assert not torch.equal(m.head.weight, before) and torch.equal(m.stem[0].weight, model.stem[0].weight)
        assert torch.equal(model.head.weight, before) and torch.equal(model(x), ref)
    assert 0 < float((q - ref).abs().max()) < 0.5
    with pytest.raises(ValueError, match="not a calibrated"):
        with fq.active(["nope"]):
            pass


def test_hutchinson_matches_the_exact_hessian_trace():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3))
    x, y = torch.randn(64, 5), torch.randint(0, 3, (64,))
    est = hessian_traces(model, ["0", "2"], [(x, y)], probes=400)
    for name in ("0", "2"):
        w = dict(model.named_modules())[name].weight

        def loss_of(wv, name=name):
            saved = w.data
            mod = dict(model.named_modules())[name]
            del mod.weight
            mod.weight = wv
            out = F.cross_entropy(model(x), y)
            del mod.weight
            mod.weight = nn.Parameter(saved)
            return out

        exact = float(
            torch.diagonal(torch.autograd.functional.hessian(loss_of, w.detach().clone()).reshape(w.numel(), -1)).sum()
        )
        model_w = dict(model.named_modules())[name].weight
        assert est[name] * model_w.numel() == pytest.approx(exact, rel=0.15, abs=1e-3)


def test_interlayer_scores_add_the_measured_excess_of_neighbouring_pairs(trained):
    model, qd = trained
    layers = quantizable_layers(model, qd.calib[0][0])
    fq = FakeQuant(model, layers).calibrate(x for x, _ in qd.calib)
    base = dict.fromkeys(layers, 0.0)
    scores, single = interlayer_scores(fq, layers, qd.calib[:2], base)
    from nas.quantize.sensitivity import quantized_loss

    ref = quantized_loss(fq, [], qd.calib[:2])
    pair = quantized_loss(fq, ["stem.0", "block.0"], qd.calib[:2]) - ref
    assert scores["stem.0"] == pytest.approx(0.5 * (pair - single["stem.0"] - single["block.0"]), abs=1e-9)
    assert order({"a": 2.0, "b": 1.0, "c": 3.0}) == ["b", "a", "c"]


def test_bisection_finds_the_largest_count_within_the_floor():
    names = [f"l{i}" for i in range(37)]
    for limit in (0, 1, 17, 37):
        tried = []
        k = bisect(names, lambda s, limit=limit: 1.0 if len(s) <= limit else 0.0, 0.5, tried=tried)
        assert k == limit and len(tried) <= 7


def test_ilp_picks_the_least_sensitive_set_that_saves_enough():
    rng = np.random.default_rng(0)
    names = [f"l{i}" for i in range(8)]
    scores = dict(zip(names, rng.uniform(0, 1, 8)))
    gains = dict(zip(names, rng.uniform(-0.2, 1, 8)))
    chosen = ilp_select(scores, gains, 1.5)
    best = min(
        (c for r in range(9) for c in itertools.combinations(names, r) if sum(gains[n] for n in c) >= 1.5),
        key=lambda c: sum(scores[n] for n in c),
    )
    assert sorted(chosen) == sorted(best)


def test_greedy_block_search_takes_measured_moves_that_pay_and_respects_the_floor():
    groups = [["a"], ["b1", "b2"], ["c"]]
    cost = {"a": -1.0, "b1": -1.0, "b2": -1.0, "c": 0.5}  # c is slower in int8; b pays only whole

    def measure(configs):
        out = []
        for s in configs:
            t = 10 + sum(cost[n] for n in s)
            t += 1.5 * (("b1" in s) != ("b2" in s))
            out.append(t)
        return out

    accuracy = lambda s: 0.0 if "a" in s and "b1" in s and "b2" in s else 1.0
    final, history = greedy_blocks({"c"}, groups, accuracy, 0.5, measure)
    assert final == {"b1", "b2"} and len(history) > 3
    screened, few = greedy_blocks({"c"}, groups, accuracy, 0.5, measure, screen=measure, keep=1)
    assert screened == {"b1", "b2"} and len(few) < len(history)  # only the predicted-best move is measured

    calls = []

    def lucky_once(configs):  # every move is 5% slower, but {"c", "a"} measures fast the first time
        calls.append(1)
        return [10.0 if s == {"c"} else 5.0 if s == {"c", "a"} and len(calls) == 1 else 10.5 for s in configs]

    kept, tried = greedy_blocks({"c"}, groups, lambda s: 1.0, 0.5, lucky_once)
    assert kept == {"c"} and len(calls) == 2  # the second measurement did not confirm the move


def test_deployer_puts_exactly_the_chosen_layers_in_int8(trained, tmp_path):
    from devices.onnx_io import to_onnx

    model, qd = trained
    layers = quantizable_layers(model, qd.calib[0][0])
    (tmp_path / "fp32.onnx").write_bytes(to_onnx(model, qd.input_shape))
    dep = Deployer(tmp_path / "fp32.onnx", layers, [x.numpy() for x, _ in qd.calib], tmp_path / "work")
    assert int8_nodes(dep.write([], "none")) == 0
    assert int8_nodes(dep.write(["block.0", "block.3"], "two")) == 2
    full = dep.write(layers, "all")
    assert int8_nodes(full) == len(layers)
    fp32_acc = onnx_accuracy(tmp_path / "fp32.onnx", qd.test)
    assert abs(onnx_accuracy(full, qd.test) - fp32_acc) < 0.05
    with pytest.raises(ValueError, match="unknown layer 'x'"):
        dep.write(["x"], "bad")


def _logits(path, batches) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x.numpy()})[0] for x, _ in batches])


def test_both_int8_forms_of_one_configuration_compute_the_same_model(trained, tmp_path):
    from devices.onnx_io import to_onnx

    model, qd = trained
    layers = quantizable_layers(model, qd.calib[0][0])
    (tmp_path / "fp32.onnx").write_bytes(to_onnx(model, qd.input_shape))
    dep = Deployer(tmp_path / "fp32.onnx", layers, [x.numpy() for x, _ in qd.calib], tmp_path / "work")
    ref = _logits(tmp_path / "fp32.onnx", qd.test)
    for chosen in (layers, ["block.0", "block.3"]):  # uniform, and int8 islands between float layers
        qdq, qop = dep.write(chosen, "qdq", fmt="qdq"), dep.write(chosen, "qop", fmt="qoperator")
        assert (onnx_format(qdq), onnx_format(qop)) == ("qdq", "qoperator")
        assert int8_nodes(qdq) == int8_nodes(qop) == len(chosen)
        a, b = _logits(qdq, qd.test), _logits(qop, qd.test)
        step = np.abs(ref).max() / 127  # one int8 step of the logits' range
        assert np.abs(a - b).max() < 4 * step, np.abs(a - b).max()
        assert (a.argmax(1) == b.argmax(1)).mean() > 0.98
    assert onnx_format(tmp_path / "fp32.onnx") == "float"
    with pytest.raises(ValueError, match="format must be one of qdq, qoperator, but got 'qop'"):
        dep.write(layers, "bad", fmt="qop")


def _activation_zero_points(path) -> list[np.ndarray]:
    proto = onnx.load(str(path))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
    return [inits[n.input[2]] for n in proto.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in inits]


def test_int8_activation_types_reach_the_deployed_graph(trained, tmp_path):
    from devices.onnx_io import to_onnx

    model, qd = trained
    layers = quantizable_layers(model, qd.calib[0][0])
    (tmp_path / "fp32.onnx").write_bytes(to_onnx(model, qd.input_shape))
    dep = Deployer(tmp_path / "fp32.onnx", layers, [x.numpy() for x, _ in qd.calib], tmp_path / "work")
    u8 = _activation_zero_points(dep.write(layers, "u8", "u8"))
    s8 = _activation_zero_points(dep.write(layers, "s8", "s8"))
    sym = _activation_zero_points(dep.write(layers, "sym", "s8sym"))
    assert u8 and all(z.dtype == np.uint8 for z in u8)
    assert s8 and all(z.dtype == np.int8 for z in s8) and any(int(z) != 0 for z in s8)  # asymmetric
    assert sym and all(z.dtype == np.int8 and int(z) == 0 for z in sym)  # TensorRT needs zero points of 0
    with pytest.raises(ValueError, match="activations must be one of u8, s8, s8sym, but got 'u16'"):
        dep.write(layers, "bad", "u16")


def test_mixed_precision_end_to_end_on_the_cpu(trained, tmp_path):
    model, qd = trained
    device = devices.get("ort-cpu:threads=1")
    loose = MixedPrecision(model, qd, device, tmp_path / "loose", QuantizeConfig(tolerance=100, method="hessian")).run()
    assert {c["config"]: c for c in loose["configs"]}["mixed"]["int8_layers"] == 4
    fastest = min(loose["configs"], key=lambda c: c["latency_ms"])  # everything holds a 100-point tolerance
    assert {c["config"]: c for c in loose["configs"]}[loose["chosen"]]["int8_layers"] == fastest["int8_layers"]
    r = MixedPrecision(model, qd, device, tmp_path / "q", QuantizeConfig(tolerance=0.0, method="interlayer")).run()
    configs = {c["config"]: c for c in r["configs"]}
    assert configs["mixed"]["val_top1"] >= configs["fp32"]["val_top1"]  # zero tolerance holds on the deployed model
    fastest = min((c for c in configs.values() if c["within_tolerance"]), key=lambda c: c["latency_ms"])
    assert configs[r["chosen"]]["within_tolerance"] and configs[r["chosen"]]["int8_layers"] == fastest["int8_layers"]
    assert configs["int8"]["int8_layers"] == 4 and configs["fp32"]["int8_layers"] == 0
    saved = json.loads((tmp_path / "q" / "model.json").read_text())
    assert saved["precision"] == r["precision"] and saved["dataset"] == "digits"
    trial = saved["int8_activation_trial_ms"]  # auto: both activation types measured, the faster kept
    assert saved["int8_activations"] == min(trial, key=trial.get) and set(trial) == {"u8", "s8"}
    for row in (configs["int8"], configs["mixed"]):  # auto: each measured in both forms, the faster that holds kept
        forms = row["formats"]
        assert set(forms) == {"qdq", "qoperator"} and row["latency_ms"] == forms[row["format"]]["latency_ms"]
        holding = {f: v["latency_ms"] for f, v in forms.items() if v["val_top1"] >= configs["fp32"]["val_top1"]}
        assert not holding or row["format"] == min(holding, key=holding.get)
    assert saved["int8_format"] == configs[r["chosen"]]["format"]
    if saved["int8_format"] != "float":
        assert saved["int8_format_reason"].startswith(saved["int8_format"] + ": ")
    assert onnx_format(tmp_path / "q" / "model.onnx") == saved["int8_format"]
    assert onnx_accuracy(tmp_path / "q" / "model.onnx", qd.test) == pytest.approx(configs[r["chosen"]]["test_top1"])
    assert int8_nodes(tmp_path / "q" / "model.onnx") == sum(p == "int8" for p in r["precision"].values())
    for name in ("quantize.png", "points.csv", "sensitivity.csv"):
        assert (tmp_path / "q" / name).stat().st_size > 0


def test_the_answer_is_measured_in_rotated_groups_so_a_favoured_place_does_not_choose():
    class SlotBiased:
        """The first model of every group measures 20% slow, whatever it is."""

        def measure_files(self, paths):
            return [base[p] * (1.2 if i == 0 else 1.0) for i, p in enumerate(paths)]

    base = {"a": 1.0, "b": 1.05, "c": 2.0}
    assert SlotBiased().measure_files(["a", "b", "c"])[0] > base["b"]  # one group alone ranks a behind b
    times = MixedPrecision.measure_rotated(SlotBiased(), ["a", "b", "c"], 3)
    assert times == pytest.approx([1.0, 1.05, 2.0])  # each model first once: its median is its own time


def test_config_errors_name_the_rule():
    with pytest.raises(ValueError, match="search must be one of bisect, latency, ilp"):
        QuantizeConfig(search="greedy")
    with pytest.raises(ValueError, match="tolerance=-1"):
        QuantizeConfig(tolerance=-1)
    with pytest.raises(ValueError, match="activations must be one of u8, s8, s8sym, but got 'int4'"):
        QuantizeConfig(activations="int4")
    with pytest.raises(ValueError, match="calibration must be one of minmax, percentile, entropy, but got 'kl'"):
        QuantizeConfig(calibration="kl")
    with pytest.raises(ValueError, match="format must be one of qdq, qoperator, but got 'qop'"):
        QuantizeConfig(format="qop")
    with pytest.raises(ValueError, match="`final_groups >= 1` must hold, but got final_groups=0"):
        QuantizeConfig(final_groups=0)


def test_the_precision_latency_model_counts_borders_and_weights_and_recovers_a_linear_device():
    from nas.quantize.latency import PrecisionLatency, additive, random_configs

    layers = [f"l{i}" for i in range(12)]
    profile = {n: (("depthwise", "pointwise", "conv")[i % 3], 1.0 + i, 0.2 * (i % 4)) for i, n in enumerate(layers)}
    model = PrecisionLatency(layers, profile)
    f = model.features([set(), set(layers), {"l3", "l4"}])
    assert list(f[:, -3]) == [0, 2, 2] and list(f[:, -1]) == [0, 12, 2]

    def device(c):  # int8 pays on conv and pointwise, costs on depthwise; each border costs 0.3 ms
        s = set(c)  # and reading weights costs 4x as much in fp32
        flags = [n in s for n in layers]
        t = 2.0 + sum(profile[n][1] * (0.05 if n in s and profile[n][0] != "depthwise" else 0.1) for n in layers)
        t += sum(profile[n][2] * (0.5 if n in s else 2.0) for n in layers)
        return t + 0.3 * (sum(a != b for a, b in zip(flags, flags[1:])) + flags[0] + flags[-1])

    train = [set(), set(layers)] + random_configs(layers, 10, seed=0)
    held = random_configs(layers, 10, seed=5)
    fitted = model.fit(train, [device(c) for c in train])
    assert np.allclose(fitted.predict(held), [device(c) for c in held], rtol=1e-3)
    gains = {n: device(set()) - device({n}) for n in layers}
    assert not np.allclose(additive(device(set()), gains, held), [device(c) for c in held], rtol=0.02)


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 3, 3, padding=1), nn.Conv2d(3, 3, 3, padding=1)
        self.fc = nn.Linear(3, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(torch.relu(self.conv1(x))) + x
        return self.fc(y.mean((2, 3)))


def test_layer_edges_follow_the_data_flow_through_joins_and_borders_count_what_crosses(tmp_path):
    from devices.int8 import prepare_int8
    from devices.onnx_io import to_onnx
    from nas.quantize.latency import PrecisionLatency, layer_profile
    from nas.quantize.layers import JOIN, layer_edges

    model = Residual().eval()
    example = torch.zeros(1, 3, 8, 8)
    (tmp_path / "m.onnx").write_bytes(to_onnx(model, example.shape))
    prepare_int8(tmp_path / "m.onnx", tmp_path / "m.pre.onnx")
    proto = onnx.load(str(tmp_path / "m.pre.onnx"))
    layers = quantizable_layers(model, example)
    edges = layer_edges(proto, onnx_nodes(proto, layers))
    add = (JOIN, frozenset({"conv2", "fc"}))  # the residual add touches conv2 and, through the mean, fc
    assert edges == [(None, "conv1", 192.0), ("conv1", "conv2", 192.0), (add, "fc", 3.0), ("fc", None, 10.0)]
    latency = PrecisionLatency(layers, layer_profile(model, layers, example), edges)
    f = latency.features([set(), {"conv1"}, {"conv2"}, set(layers)])
    # conv1 alone: its input and its output cross (192 + 192); conv2 alone: its input, and the add turns int8
    assert list(f[:, -3]) == [0, 2, 2, 2] and np.allclose(f[:, -2] * 1e6, [0, 384, 195, 202])
    dep = Deployer(
        tmp_path / "m.onnx",
        layers,
        [np.random.default_rng(0).standard_normal((4, 3, 8, 8), dtype=np.float32)],
        tmp_path / "work",
    )
    quantized_adds = lambda p: sum(
        n.op_type == "Add"
        and n.output[0] in {m.input[0] for m in onnx.load(str(p)).graph.node if m.op_type == "QuantizeLinear"}
        for n in onnx.load(str(p)).graph.node
    )
    assert quantized_adds(dep.write({"conv1"}, "c1")) == 0  # the add touches only float layers: it stays float
    assert quantized_adds(dep.write({"conv2"}, "c2")) == 1


class Saturating(nn.Module):
    """A convolution whose outputs reach far below -3 into hard-swish (two spellings) and a hard-sigmoid gate."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 1), nn.Conv2d(8, 8, 1)
        self.fc = nn.Linear(8, 4)
        with torch.no_grad():
            self.a.bias[0] = -1000.0  # one channel far below hard-swish's flat end, as in MobileNetV3's head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.hardswish(self.a(x))
        z = self.b(y)
        z = z * F.hardsigmoid(z)
        return self.fc((z * F.hardsigmoid(self.c(z))).mean((2, 3)))


def test_ranges_that_saturating_consumers_cut_are_tightened_and_int8_stays_close(tmp_path, monkeypatch):
    import onnxruntime as ort

    import devices.int8 as int8
    from devices.onnx_io import to_onnx

    torch.manual_seed(0)
    model = Saturating().eval()
    (tmp_path / "m.onnx").write_bytes(to_onnx(model, (1, 3, 8, 8)))
    int8.prepare_int8(tmp_path / "m.onnx", tmp_path / "m.pre.onnx")
    proto = onnx.load(str(tmp_path / "m.pre.onnx"))
    bounds = int8.saturation_bounds(proto)
    consumers = lambda t: {n.op_type for n in proto.graph.node if t in n.input}
    conv_out = {n.name.split("/")[1]: n.output[0] for n in proto.graph.node if n.op_type == "Conv"}
    assert bounds[conv_out["a"]][0] == pytest.approx(-3.0) and bounds[conv_out["a"]][1] == np.inf  # hard-swish
    assert bounds[conv_out["b"]] == (pytest.approx(-3.0), np.inf)  # z * hardsigmoid(z)
    assert bounds[conv_out["c"]] == (pytest.approx(-3.0), pytest.approx(3.0))  # a gate alone saturates both ways
    assert not any("Add" in consumers(t) or "MatMul" in consumers(t) or "Gemm" in consumers(t) for t in bounds)

    rng = np.random.default_rng(0)
    calib = [rng.standard_normal((8, 3, 8, 8)).astype(np.float32) for _ in range(4)]
    ranges = int8.activation_ranges(tmp_path / "m.pre.onnx", calib)
    assert ranges[conv_out["a"]][0] < -900  # what onnxruntime would quantize over
    tight = int8.tightened_ranges(ranges, bounds)
    assert tight[conv_out["a"]] == (pytest.approx(-3.0), ranges[conv_out["a"]][1])

    x = rng.standard_normal((16, 3, 8, 8)).astype(np.float32)
    ref = model(torch.from_numpy(x)).detach().numpy()

    def error(name: str) -> float:
        int8.quantize_int8(tmp_path / "m.pre.onnx", tmp_path / name, calib)
        out = ort.InferenceSession(str(tmp_path / name), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
        return float(np.abs(out - ref).max() / np.abs(ref).max())

    tightened = error("tight.onnx")
    monkeypatch.setattr(int8, "saturation_bounds", lambda proto: {})
    assert tightened < 0.05 and error("loose.onnx") > 10 * tightened
