"""hwnas run end to end on this CPU: calibrate, train, search, verify, export, report; and resume."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest

from nas.cli.main import main
from nas.data import batches
from nas.latency.tables import read_rows
from nas.pipeline.run import Pipeline
from nas.recipes import recipe_from_dict
from nas.supernet.run import load_supernet_run

RECIPE = {
    "space": "ofa_mbv3:resolutions=[32],width_mult=0.5,num_classes=10",
    "data": {"name": "digits"},
    "train": {"epochs": 1, "batch_size": 64, "lr": 0.1, "random_subnets": 1, "checkpoint_every": 50},
    "device": "ort-cpu:threads=1",
    "budget_fraction": 0.7,
    "search": {"strategy": "evolution", "objective": "budget", "trials": 12, "population": 6},
    "verify": {"top": 3},
    "quantize": {"tolerance": 1.0, "calib": 64},
}


def accept_noisy_rows(mp: pytest.MonkeyPatch) -> None:
    """Measured live on this CPU: on a busy machine rows stay noisy after their retries and a run rightly refuses
    them; these tests are about the pipeline, so they accept noisy rows (nothing flags them)."""
    import devices.base
    import nas.latency.profile

    mp.setattr(nas.latency.profile, "SPREAD_FACTOR", float("inf"))
    mp.setattr(devices.base.Device, "contended", lambda self, cores, own: False)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    with pytest.MonkeyPatch.context() as mp:
        accept_noisy_rows(mp)
        result = Pipeline(recipe_from_dict(RECIPE, "test"), run, log=lambda s: None).execute()
    return run, result


@pytest.fixture
def quiet(monkeypatch):
    accept_noisy_rows(monkeypatch)


@pytest.mark.slow
def test_the_winner_meets_the_budget_when_measured(finished):
    run, result = finished
    w = result["winner"]
    assert w is not None and w["measured_ms"] <= result["budget_ms"]
    assert pd.read_csv(run / "measured.csv")["arch"].is_unique
    measured = read_rows(run / "measured.csv")  # as every reader sees it: on the anchor's quiet level
    assert float(measured.set_index("arch").loc[w["arch"], "latency_ms"]) == pytest.approx(w["measured_ms"])
    largest = result["largest"]["measured_ms"]
    assert result["budget_ms"] == pytest.approx(0.7 * largest)


@pytest.mark.slow
def test_the_export_is_the_winner_and_describes_itself(finished):
    run, result = finished
    meta = json.loads((run / "best" / "model.json").read_text())
    assert meta["arch"] == result["winner"]["arch"] and meta["input_shape"] == [1, 3, 32, 32]
    assert meta["latency_ms"] == pytest.approx(result["winner"]["measured_ms"])
    assert meta["num_classes"] == 10 and len(meta["normalisation"]["mean"]) == 3
    assert meta["check"]["onnxruntime"]["max_abs_diff"] < 1e-3
    # the ONNX file alone, with the normalisation from model.json, gives the reported test accuracy
    sn = load_supernet_run(run / "supernet")
    sess = ort.InferenceSession(str(run / "best" / "model.onnx"), providers=["CPUExecutionProvider"])
    correct = 0
    for x, y in batches(sn.data.test, 50, None, sn.data):
        correct += int((sess.run(None, {"input": x.numpy()})[0].argmax(1) == y.numpy()).sum())
    assert correct / len(sn.data.test) == pytest.approx(result["winner"]["test_top1"])


@pytest.mark.slow
def test_the_run_directory_holds_the_report_and_plots(finished):
    run, result = finished
    trials = pd.read_csv(run / "trials.csv")
    assert len(trials) == 12 and {"arch", "accuracy", "latency_ms", "measured_ms"} <= set(trials.columns)
    assert trials["measured_ms"].notna().sum() >= 1
    for name in (
        "pareto.csv",
        "pareto.png",
        "predictor.png",
        "report.md",
        "recipe.yaml",
        "study.db",
        "calibration.csv",
    ):
        assert (run / name).stat().st_size > 0, name
    report = (run / "report.md").read_text()
    assert f"{result['budget_ms']:.3f} ms" in report and result["winner"]["arch"] in report
    sep = result["separation"]  # a tiny supernet trained a few steps: the report says what the test split resolves
    assert sep["test_images"] == 360 and sep["ends_resolution_points"] > 0 and sep["paired"]
    net_images = sep["winner_only_right"] - sep["winner_only_smallest_right"]  # the paired counts are the gain
    assert 100 * net_images / 360 == pytest.approx(sep["winner_gain_points"])
    assert sep["trade_off"] or "cannot separate" in report or "is not a trade-off" in report


@pytest.mark.slow
def test_a_quantize_section_quantizes_the_winner_for_the_device(finished, quiet):
    run, result = finished
    q = json.loads((run / "quantized" / "model.json").read_text())
    assert q["arch"] == result["winner"]["arch"] and q["device"] == result["device"]
    assert {c["config"] for c in q["configs"]} == {"fp32", "int8", "mixed"}
    chosen = {c["config"]: c for c in q["configs"]}[q["chosen"]]
    assert chosen["within_tolerance"] and q["test_drop_points"] == result["quantized"]["test_drop_points"]
    assert "## Quantization" in (run / "report.md").read_text()


@pytest.mark.slow
def test_a_joint_search_measures_and_scores_candidates_after_quantization(finished, tmp_path, quiet):
    from nas.supernet.train import evaluate

    run, _ = finished
    argv = [
        "bench",
        "joint",
        str(run),
        "--budget-fraction",
        "0.7",
        "--trials",
        "8",
        "--tolerance",
        "1.0",
        "--out",
        str(tmp_path / "bench"),
    ]
    assert main(argv) == 0
    written = json.loads((tmp_path / "bench" / "bench_joint.json").read_text())
    rows, info = written["rows"], written["info"]
    assert [r["mode"] for r in rows] == ["fp32 search, then quantize", "joint search"]
    assert (
        rows[0]["search_device"] == "ort-cpu:threads=1"
        and rows[1]["search_device"] == "ort-cpu:threads=1,precision=int8"
    )
    for r in rows:
        assert r["within_budget"] == (r["deployed_ms"] is not None and r["deployed_ms"] <= info["final_budget_ms"])
    result = json.loads((tmp_path / "bench" / "joint" / "result.json").read_text())
    assert result["budget_ms"] == pytest.approx(info["budget_ms"])  # one budget, on the deployed latency
    assert result["quantized"]["device"] == "ort-cpu:threads=1" and result["quantized"]["joint"]
    w = result["winner"]
    assert w is not None and w["measured_ms"] <= result["budget_ms"]
    sn = load_supernet_run(run / "supernet")
    arch = sn.net.space.from_str(w["arch"])
    assert w["val_top1"] == pytest.approx(
        evaluate(sn.net, arch, sn.data, "val", int8=True)
    )  # scored as deployed in int8
    rows = [json.loads(line) for line in (run / "supernet" / "accuracy.jsonl").read_text().splitlines()]
    assert any(r["tag"].endswith("-int8-ort-v2") and r["arch"] == w["arch"] for r in rows)
    recipe = {**RECIPE, "quantize": {**RECIPE["quantize"], "joint": True}}
    with pytest.raises(
        ValueError,
        match="quantize.joint: device 'torch-cpu' has no option 'precision'; backends with it: ort-cpu, ort-cuda",
    ):
        recipe_from_dict({**recipe, "device": "torch-cpu"}, "test")


@pytest.mark.slow
def test_a_reused_supernet_is_the_runs_own_and_agrees_with_the_recipe(finished, tmp_path, capsys):
    import shutil

    run, _ = finished
    reuse = recipe_from_dict({**RECIPE, "supernet": str(run)}, "test")  # a whole run: its supernet/ is the one
    other = {**RECIPE, "space": RECIPE["space"].replace("width_mult=0.5", "width_mult=1.0"), "supernet": str(run)}
    with pytest.raises(ValueError, match="was trained with width_mult=0.5, but the recipe says width_mult=1.0"):
        Pipeline(recipe_from_dict(other, "test"), tmp_path / "other", log=lambda s: None).supernet()
    classes = {**RECIPE, "space": RECIPE["space"].replace("num_classes=10", "num_classes=7"), "supernet": str(run)}
    with pytest.raises(ValueError, match="was trained with num_classes=10, but the recipe says num_classes=7"):
        Pipeline(recipe_from_dict(classes, "test"), tmp_path / "classes", log=lambda s: None).supernet()
    assert Pipeline(reuse, tmp_path / "reuse", log=lambda s: None).supernet().path == run / "supernet"
    with pytest.raises(ValueError, match="holds no trained supernet"):
        recipe_from_dict({**RECIPE, "supernet": str(tmp_path)}, "test")
    copy = tmp_path / "copy"  # a copied run whose checkpoint is gone never reads the original's weights
    shutil.copytree(run, copy)
    (copy / "supernet" / "checkpoint.pt").unlink()
    assert main(["export", str(copy), "--out", str(tmp_path / "exported")]) == 2
    assert f"{copy / 'supernet'} holds no checkpoint.pt" in capsys.readouterr().err


@pytest.mark.slow
def test_a_finished_run_resumes_without_new_work(finished, quiet):
    run, result = finished
    before = {p.name: p.stat().st_mtime_ns for p in (run / "supernet").iterdir()}
    calibration = (run / "calibration.csv").read_text()
    quantized = (run / "quantized" / "model.json").stat().st_mtime_ns
    again = Pipeline(recipe_from_dict(RECIPE, "test"), run, log=lambda s: None).execute()
    assert again["winner"]["arch"] == result["winner"]["arch"]
    assert (run / "calibration.csv").read_text() == calibration
    assert {p.name: p.stat().st_mtime_ns for p in (run / "supernet").iterdir() if p.name in before}[
        "checkpoint.pt"
    ] == before["checkpoint.pt"]
    assert len(pd.read_csv(run / "trials.csv")) == 12
    assert (run / "quantized" / "model.json").stat().st_mtime_ns == quantized


def test_a_candidate_that_misses_the_budget_when_measured_is_not_the_winner(tmp_path):
    from search_spaces import load_space

    space = load_space(RECIPE["space"])
    rng = np.random.default_rng(0)
    a, b, c, d = (space.to_str(space.sample(rng)) for _ in range(4))
    table = tmp_path / "lat.csv"
    pd.DataFrame({"arch": [a, b, c, d], "dev": [1.3, 0.9, 0.5, 0.3]}).to_csv(table, index=False)
    trials = [
        {"trial": 0, "arch": a, "accuracy": 0.99, "latency_ms": 0.8},  # predicted feasible, measures 1.3
        {"trial": 1, "arch": b, "accuracy": 0.95, "latency_ms": 0.7},
        {"trial": 2, "arch": c, "accuracy": 0.90, "latency_ms": 0.4},
        {"trial": 3, "arch": d, "accuracy": 0.85, "latency_ms": 0.45},
    ]  # off the front: c beats it in both
    pipe = Pipeline(
        recipe_from_dict({**RECIPE, "device": f"table:{table}:dev", "verify": {"top": 1}}, "test"),
        tmp_path / "run",
        log=lambda s: None,
    )
    winner, measured = pipe.verify(space, trials, budget=1.0)
    assert measured[a] == 1.3 and winner["arch"] == b and winner["measured_ms"] == 0.9 and d not in measured
    logs = []
    winner, measured = Pipeline(
        recipe_from_dict({**RECIPE, "device": f"table:{table}:dev"}, "t"), tmp_path / "r2", log=logs.append
    ).verify(space, trials, budget=0.45)
    assert set(winner) == set(trials[0]) | {"measured_ms"}
    assert winner["arch"] == d and winner["measured_ms"] == 0.3  # the whole front misses; the next candidate meets it
    assert any("no front candidate met the budget" in line for line in logs)
    winner, _ = Pipeline(
        recipe_from_dict({**RECIPE, "device": f"table:{table}:dev"}, "t"), tmp_path / "r3", log=logs.append
    ).verify(space, trials, budget=0.25)
    assert winner is None and "measured within the budget of 0.250 ms" in logs[-1]


@pytest.mark.slow
def test_bench_search_compares_strategies_on_a_finished_run(finished, quiet):
    from nas.bench.search import bench_search

    run, result = finished
    table, info = bench_search(str(run), ["random", "nsga2"], seeds=2, trials=8, population=4, log=lambda s: None)
    assert [r["strategy"] for r in table] == ["random", "nsga2"]
    for r in table:
        assert r["hv_mean"] > 0 and 0 <= r["winners_meet"] <= r["winners"] <= 2
    assert info["budget_ms"] == result["budget_ms"] and info["cached"] > 0  # the run's accuracy cache is reused


@pytest.mark.slow
def test_bench_search_runs_ofas_own_finder_beside_hwnas(finished, quiet):
    pytest.importorskip("ofa", reason="needs the ofa package: pip install -e '.[peers]'")
    from nas.bench.search import bench_search

    run, result = finished
    table, info = bench_search(str(run), ["evolution"], seeds=2, trials=8, population=4, log=lambda s: None, peer="ofa")
    assert [r["strategy"] for r in table] == ["evolution", "ofa-evolution"] and info["objective"] == "budget"
    ofa, hwnas = table[1], table[0]
    assert ofa["evaluations"] == 8 and hwnas["evaluations"] <= 8  # equal budgets: OFA scores population x generations
    assert ofa["winners"] == 2 and ofa["winners_meet"] <= 2 and ofa["measured_ms"] > 0
    assert 0 <= ofa["best_feasible_acc"] <= 1 and ofa["hv_budget_mean"] >= 0
    assert set(info["seed_wins"]) == {"evolution"}


@pytest.mark.slow
def test_bench_search_prints_its_table(finished, capsys, quiet):
    run, _ = finished
    argv = ["bench", "search", str(run), "--strategies", "random", "--seeds", "1", "--trials", "3", "--population", "2"]
    assert main(argv) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "hypervolume" in out and "random" in out and "from the run's cache" in out
    assert main(argv[:-2] + ["--population", "0"]) == 2


@pytest.mark.slow
def test_export_writes_a_checked_model_of_the_winner(finished, tmp_path, capsys):
    run, result = finished
    assert main(["export", str(run), "--out", str(tmp_path / "exp")]) == 0
    meta = json.loads((tmp_path / "exp" / "model.json").read_text())
    assert meta["arch"] == result["winner"]["arch"] and meta["check"]["onnxruntime"]["max_abs_diff"] < 1e-3
    assert "onnxruntime vs PyTorch" in capsys.readouterr().out
    assert main(["export", str(tmp_path), "--out", str(tmp_path / "none")]) == 2


@pytest.mark.slow
def test_quantize_command_writes_the_chosen_deployment(finished, tmp_path, capsys, quiet):
    run, result = finished
    argv = [
        "quantize",
        str(run),
        "--tolerance",
        "1.0",
        "--calib",
        "32",
        "--activations",
        "u8",
        "--out",
        str(tmp_path / "q"),
    ]
    assert main(argv) == 0
    q = json.loads((tmp_path / "q" / "model.json").read_text())
    assert q["arch"] == result["winner"]["arch"] and q["chosen"] in {c["config"] for c in q["configs"]}
    assert "(chosen)" in capsys.readouterr().out


@pytest.mark.slow
def test_a_search_worker_joins_the_runs_study(finished, tmp_path, capsys, quiet):
    import yaml

    run, _ = finished
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))
    assert main(["search", str(recipe), "--out", str(run)]) == 0
    assert "holds 12 finished candidates" in " ".join(capsys.readouterr().err.split())


def test_a_changed_device_recalibrates_and_never_reads_the_other_devices_rows(tmp_path):
    from nas.latency.calibration import reference
    from search_spaces import load_space

    space = load_space(RECIPE["space"])
    refs = [space.to_str(a) for a in reference(space.spec, 10)]
    table = tmp_path / "lat.csv"
    pd.DataFrame({"arch": refs, "one": np.linspace(1, 2, 10), "two": np.linspace(3, 7, 10)}).to_csv(table, index=False)
    logs = []
    for column in ("one", "two", "one"):
        recipe = recipe_from_dict({**RECIPE, "device": f"table:{table}:{column}"}, "test")
        _, meta = Pipeline(recipe, tmp_path / "run", log=logs.append).predictor(space)
        assert meta["fingerprint"]["device"] == f"table:{table}:{column}"
        calibration = pd.read_csv(tmp_path / "run" / "calibration.csv")
        assert set(calibration["device"]) == {f"table:{table}:{column}"} and len(calibration) == 10
    assert sum("calibrating again" in line for line in logs) == 2
    assert len(pd.read_csv(tmp_path / "run" / "measured.csv")) == 20  # the first device's rows were reused


def test_a_study_scored_on_another_device_is_not_resumed(tmp_path):
    from nas.search import Objective, SearchConfig
    from nas.search.study import open_study
    from search_spaces import load_space

    space, storage = load_space("nasbench201"), f"sqlite:///{tmp_path}/s.db"
    objective = Objective("budget", budget_ms=1.0)
    open_study(space, SearchConfig(), objective, storage, key={"device": "ort-cpu:threads=1"})
    open_study(space, SearchConfig(), objective, storage, key={"device": "ort-cpu:threads=1"})
    with pytest.raises(ValueError, match="holds trials scored with device='ort-cpu:threads=1', but this search has "):
        open_study(space, SearchConfig(), objective, storage, key={"device": "ort-cpu:threads=2"})


def test_two_workers_given_one_run_directory_calibrate_once(tmp_path):
    import subprocess
    import sys

    from nas.latency.calibration import reference
    from search_spaces import load_space

    space = load_space(RECIPE["space"])
    refs = [space.to_str(a) for a in reference(space.spec, 10)]
    table = tmp_path / "lat.csv"
    pd.DataFrame({"arch": refs, "one": np.linspace(1, 2, 10)}).to_csv(table, index=False)
    script = (
        "import sys; from nas.pipeline.run import Pipeline; from nas.recipes import recipe_from_dict; "
        "from search_spaces import load_space; "
        f"recipe = recipe_from_dict({{**{RECIPE!r}, 'device': 'table:{table}:one'}}, 'test'); "
        f"Pipeline(recipe, {str(tmp_path / 'run')!r}, log=print).predictor(load_space({RECIPE['space']!r}))"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert len(pd.read_csv(tmp_path / "run" / "measured.csv")) == 10
    assert len(pd.read_csv(tmp_path / "run" / "calibration.csv")) == 10


@pytest.mark.slow
def test_the_exported_winner_rebuilds_with_timm_alone_and_loads_strictly(finished):
    import functools

    import torch
    from safetensors.torch import load_file
    from timm.layers import get_act_layer
    from timm.models._efficientnet_blocks import SqueezeExcite
    from timm.models._efficientnet_builder import decode_arch_def, round_channels
    from timm.models.mobilenetv3 import MobileNetV3

    run, _ = finished
    meta = json.loads((run / "best" / "model.json").read_text())
    cfg = meta["timm"]
    model = MobileNetV3(
        block_args=decode_arch_def(cfg["arch_def"]),
        num_classes=cfg["num_classes"],
        stem_size=cfg["stem_size"],
        fix_stem=cfg["fix_stem"],
        num_features=cfg["num_features"],
        head_bias=cfg["head_bias"],
        act_layer=get_act_layer("hard_swish"),
        se_layer=functools.partial(
            SqueezeExcite, gate_layer="hard_sigmoid", force_act_layer=torch.nn.ReLU, rd_round_fn=round_channels
        ),
    ).eval()
    model.load_state_dict(load_file(run / "best" / meta["files"]["weights"]), strict=True)
    x = np.random.default_rng(0).standard_normal((2, *cfg["input_size"])).astype(np.float32)
    sess = ort.InferenceSession(str(run / "best" / "model.onnx"))
    with torch.no_grad():
        ours = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours, sess.run(None, {"input": x})[0], rtol=1e-3, atol=1e-3)
