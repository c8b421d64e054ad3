"""Bad input, table-driven: every row is a command line and the one-line message it must give (exit status 2),
with nothing written that a rerun would trip on."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nas.cli.main import main

FBNET_ARCH = "-".join(["k3_e1"] * 22)
ROWS = [
    (["sample", "--space", "fbnet", "-n", "-3"], "`-n >= 1` must hold, but got -n -3"),
    (["reference", "--space", "fbnet", "-n", "-3"], "`-n >= 1` must hold, but got -n -3"),
    (["sample", "--space", "ofa_mbv3:resolutions=[abc", "-n", "2"], "has a value that is not valid YAML"),
    (["sample", "--space", "ofa_mbv3:num_classes=-1", "-n", "2"], "`num_classes >= 1` must hold"),
    (["sample", "--space", "nope", "-n", "2"], "Unknown search space 'nope'; known:"),
    (["bench", "device", "-n", "0"], "`-n >= 3` must hold"),
    (["bench", "calibrate", "-n", "0"], "`-n >= 3` must hold"),
    (["bench", "quantize", "--methods", "nope"], "--methods must be a comma list of"),
    (["bench", "search", "{tmp}", "--trials", "0"], "`trials >= 1` must hold"),
    (
        ["profile", "--device", "ort-cpu:threads=-3", "--space", "fbnet", "-n", "2", "--out", "{tmp}/o.csv"],
        "option threads='-3' is invalid: `>= 0` must hold",
    ),
    (["profile", "--device", "ort-cpu", "--space", "fbnet", "-n", "2", "--out", "{tmp}"], "Is a directory"),
    (["device", "serve", "--port", "70000"], "`0 <= --port <= 65535` must hold"),
    (["run", "{tmp}/empty.yaml"], "the recipe is empty"),
    (["run", "{tmp}/missing.yaml"], "cannot read recipe"),
    (["run", "{tmp}/storage.yaml"], "search.storage must be a database URL"),
    (["search", "{tmp}/lr.yaml"], "train.lr must be a finite number, but got nan"),
    (["eval-subnet", "{tmp}", "--arch", "x"], "holds no checkpoint.pt"),
    (["eval-subnet", "{tmp}/no_recipe", "--arch", "x"], "holds no recipe.yaml"),
    (["eval-subnet", "{tmp}/empty_checkpoint", "--arch", "x"], "checkpoint.pt: not a checkpoint hwnas wrote"),
    (["eval-subnet", "{tmp}/pickled", "--arch", "x"], "checkpoint.pt: not a checkpoint hwnas wrote"),
    (["export", "{tmp}/empty_checkpoint"], "checkpoint.pt: not a checkpoint hwnas wrote"),
    (
        ["calibrate", "--space", "fbnet", "--measurements", "{tmp}/header.csv", "--out", "{tmp}/p"],
        "has a header but no rows",
    ),
    (
        ["calibrate", "--space", "fbnet", "--measurements", "{tmp}/huge.csv", "--out", "{tmp}/p"],
        "huge.csv:2: latency_ms must be a positive number, got '1e+308'",
    ),
    (["predict", "--predictor", "{tmp}/evil", "--archs", "{tmp}/archs.txt"], "is not the name of a fitted attribute"),
    (
        ["train-lm", "--arch", "x", "--out", "{tmp}/lm"],
        "train-lm needs a hybrid_lm run directory, or --arch and --space",
    ),
]


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    import yaml

    import predictors
    import search_spaces
    from nas.latency.features import features

    d = tmp_path_factory.mktemp("bad")
    (d / "empty.yaml").write_text("")
    (d / "storage.yaml").write_text(yaml.safe_dump({"search": {"storage": "not a url"}}))
    (d / "lr.yaml").write_text("train:\n  lr: .nan\n")
    recipe = yaml.safe_dump({"space": "ofa_mbv3:resolutions=[32],width_mult=0.5,num_classes=10"})
    for name, content in (("no_recipe", None), ("empty_checkpoint", b""), ("pickled", b"pickle")):
        run = d / name
        run.mkdir()
        if content is None:
            torch.save({"model": {}, "step": 0}, run / "checkpoint.pt")
            continue
        (run / "recipe.yaml").write_text(recipe)
        if name == "pickled":
            import pickle

            (run / "checkpoint.pt").write_bytes(pickle.dumps({"model": {}, "step": 0}))
        else:
            (run / "checkpoint.pt").write_bytes(content)
    (d / "header.csv").write_text("arch,latency_ms\n")
    (d / "huge.csv").write_text(f"arch,latency_ms\n{FBNET_ARCH},1e308\n")
    (d / "archs.txt").write_text(FBNET_ARCH + "\n")
    space = search_spaces.create("fbnet")
    archs = search_spaces.sample_archs(space, 12, 0)
    X, layout = features(space, archs)
    pred = predictors.create("flops", layout=layout).fit(X, np.ones((12, 2)))
    pred.adapt(X[:6], np.arange(1, 7, dtype=float))
    pred.save(d / "evil", {"kind": "calibrated", "space": "fbnet"})
    doc = json.loads((d / "evil.json").read_text())
    doc["fitted"]["__class__"] = 1
    (d / "evil.json").write_text(json.dumps(doc))
    return d


@pytest.mark.parametrize("argv, message", ROWS, ids=[" ".join(r[0][:3]) for r in ROWS])
def test_a_bad_input_is_one_clear_line(argv, message, tmp, capsys):
    argv = [a.replace("{tmp}", str(tmp)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hwnas: error: ") and message in err and len(err.splitlines()) == 1, err
