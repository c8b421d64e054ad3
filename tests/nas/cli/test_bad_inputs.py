"""Bad input, table-driven: every row is a command line and the one-line message it must give (exit status 2),
with nothing written that a rerun would trip on."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from nas.cli.main import main

FBNET_ARCH = "-".join(["k3_e1"] * 22)
# recipe file name -> (its content, the field the error names); {tmp} is the fixture's directory
BAD_RECIPES = {
    "margin": ({"verify": {"margin": -5}}, "verify.margin"),
    "top": ({"verify": {"top": 0}}, "verify.top"),
    "trials": ({"search": {"trials": -5}}, "search.trials"),
    "trials_float": ({"search": {"trials": 3.7}}, "search.trials"),
    "epochs": ({"train": {"epochs": 2.5}}, "train.epochs"),
    "fraction": ({"budget_fraction": 50}, "budget_fraction"),
    "budget_inf": ({"budget_ms": float("inf")}, "budget_ms"),
    "checkpoint_every": ({"train": {"checkpoint_every": 0}}, "train.checkpoint_every"),
    "batch": ({"train": {"batch_size": 0}}, "train.batch_size"),
    "space_int": ({"space": 123}, "space"),
    "device_list": ({"device": [1, 2]}, "device"),
    "predictor_missing": ({"predictor": "{tmp}/no-such-predictor.json"}, "predictor"),
    "search_seed": ({"search": {"seed": -1}}, "`0 <= search.seed <= 4294967295` must hold, but got search.seed=-1"),
    "train_seed": ({"train": {"seed": -5}}, "train.seed"),
    "seed_huge": ({"search": {"seed": 10**23}}, "search.seed"),
    "accuracy_column": ({"space": "nasbench201", "accuracy": "table:nasbench201:top5"}, "has no 'top5' column"),
}
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
    (
        ["run", "{tmp}/storage_dir.yaml", "--out", "{tmp}/run_storage_dir"],
        "cannot open search.storage 'sqlite:////nonexistent-hwnas/dir/x.db': unable to open database file",
    ),
    (["run", "{tmp}/storage_garbage.yaml", "--out", "{tmp}/run_storage_garbage"], "db': file is not a database"),
    (
        ["run", "{tmp}/storage_mysql.yaml", "--out", "{tmp}/run_storage_mysql"],
        "cannot open search.storage 'mysql://u:***@127.0.0.1/db': no database driver for mysql:// is installed",
    ),
    (["device", "serve", "--host", "0.0.0.0", "--token", "x", "--port", "0"], "must have at least 16 characters"),
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
        ["calibrate", "--space", "fbnet", "--measurements", "{tmp}/blank.csv", "--out", "{tmp}/p"],
        "blank.csv:5: latency_ms must be a positive number",  # blank lines counted: the line a person opens
    ),
    (
        [
            "profile",
            "--device",
            "ort-cpu",
            "--space",
            "ofa_mbv3",
            "--archs",
            "{tmp}/nested.txt",
            "--out",
            "{tmp}/n.csv",
        ],
        "nested.txt:1: ofa_mbv3: '[[[[",
    ),
    (
        ["calibrate", "--space", "fbnet", "--measurements", "{tmp}/fifo.yaml", "--out", "{tmp}/p"],
        "fifo.yaml' is not a regular file",
    ),
    (["predict", "--predictor", "{tmp}/fbnet_pred", "--archs", "/dev/zero"], "'/dev/zero' is not a regular file"),
    (["predict", "--predictor", "{tmp}/fbnet_pred", "--archs", "{tmp}/fifo.yaml"], "is not a regular file"),
    (
        ["predict", "--predictor", "{tmp}/big", "--archs", "{tmp}/archs.txt"],
        "big.json: params.hidden must be a whole number in [0, 1e+07], but got 'big'",
    ),
    (
        ["predict", "--predictor", "{tmp}/steps", "--archs", "{tmp}/archs.txt"],
        "steps.json: params.steps must be a whole number in [0, 1e+07], but got 1000000000000.0",
    ),
    (
        ["predict", "--predictor", "{tmp}/space_int", "--archs", "{tmp}/archs.txt"],
        "space_int.json': meta.space must be a string, but got 123",
    ),
    (
        ["predict", "--predictor", "{tmp}/other_space", "--archs", "{tmp}/archs.txt"],
        "other_space: its feature layout does not fit space 'nasbench201' (onehot: [0, 198] in the file, [0, 30]",
    ),
    (
        ["train-lm", "--arch", "x", "--out", "{tmp}/lm"],
        "train-lm needs a hybrid_lm run directory, or --arch and --space",
    ),
    *((["run", f"{{tmp}}/{name}.yaml"], field) for name, (_, field) in BAD_RECIPES.items()),
    (["run", "{tmp}/python_tag.yaml"], "python_tag.yaml' is not valid YAML: could not determine a constructor"),
    (["run", "{tmp}/good.yaml", "--out", "/proc/hwnas-run"], "/proc/hwnas-run"),
    (
        ["calibrate", "--space", "fbnet", "--measurements", "{tmp}/inf.csv", "--out", "{tmp}/p"],
        "inf.csv:2: latency_ms must be a positive number, got 'inf'",
    ),
    (
        ["calibrate", "--space", "fbnet", "--measurements", "{tmp}/quote.csv", "--out", "{tmp}/p"],
        "quote.csv",
    ),
    (
        ["calibrate", "--space", "fbnet", "--measurements", "{tmp}/noisy.csv", "--out", "{tmp}/p"],
        "rows are flagged noisy (lines 2",
    ),
    (["profile", "--device", "ort-cpu", "--space", "fbnet", "-n", "1", "--out", "/dev/full"], "/dev/full"),
    (
        ["profile", "--device", "ort-cpu", "--space", "fbnet", "-n", "1", "--retries", "-1", "--out", "{tmp}/r.csv"],
        "--retries >= 0",
    ),
    (["device", "serve", "--host", "no-such-host.invalid", "--port", "0"], "no-such-host.invalid"),
    (["device", "serve", "--max-request-mb", "0"], "`--max-request-mb >= 1` must hold"),
    (["search", "{tmp}/empty.yaml"], "the recipe is empty"),
    (["run", "{tmp}/twice.yaml"], "key 'budget_ms' is given twice (line 3)"),
    (["predict", "--predictor", "{tmp}/fbnet_pred", "--archs", "{tmp}/empty.yaml"], "lists no architecture"),
    (
        [
            "profile",
            "--device",
            "remot:http://x:1,token=SECRET1",
            "--space",
            "fbnet",
            "-n",
            "1",
            "--out",
            "{tmp}/t.csv",
        ],
        "Unknown device 'remot' in 'remot:http://x:1,token=***'",
    ),
    (
        ["profile", "--device", "remote:http://127.0.0.1:1,tokn=SECRET1", "--space", "fbnet", "-n", "1"]
        + ["--out", "{tmp}/t.csv"],
        "tokn=***' needs the agent's token",
    ),
    (["run", "{tmp}/fifo.yaml"], "fifo.yaml' is not a regular file"),
    (["run", "/dev/zero"], "'/dev/zero' is not a regular file"),
    (["run", "{tmp}/big.yaml"], "big.yaml' is over 1024 KiB: not a recipe"),
    (["export", "{tmp}/nothing_here"], "nothing_here"),
    (["quantize", "{tmp}/nothing_here"], "nothing_here"),
]


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    import yaml

    import predictors
    import search_spaces
    from nas.latency.features import features

    d = tmp_path_factory.mktemp("bad")
    (d / "empty.yaml").write_text("")
    (d / "good.yaml").write_text(yaml.safe_dump({"space": "ofa_mbv3:resolutions=[32],width_mult=0.5,num_classes=10"}))
    for name, (content, _) in BAD_RECIPES.items():
        (d / f"{name}.yaml").write_text(yaml.safe_dump(content).replace("{tmp}", str(d)))
    (d / "python_tag.yaml").write_text("space: !!python/object/apply:os.system ['true']\n")
    (d / "inf.csv").write_text(f"arch,latency_ms\n{FBNET_ARCH},inf\n")
    (d / "quote.csv").write_text(f'arch,latency_ms\n"{FBNET_ARCH},1.0\n')
    noisy = "".join(
        f"{FBNET_ARCH.replace('k3_e1', k, 1)},1.0,1\n" for k in ("k3_e3", "k3_e6", "k5_e1", "k5_e3", "k5_e6")
    )
    (d / "noisy.csv").write_text("arch,latency_ms,noisy\n" + noisy)
    (d / "storage.yaml").write_text(yaml.safe_dump({"search": {"storage": "not a url"}}))
    (d / "garbage.db").write_bytes(b"this is not a database file, it is garbage\n" * 100)
    nb201 = {"space": "nasbench201", "accuracy": "table:nasbench201:cifar10", "device": "ort-cpu:threads=1"}
    for name, url in (
        ("storage_dir", "sqlite:////nonexistent-hwnas/dir/x.db"),
        ("storage_garbage", f"sqlite:///{d}/garbage.db"),
        ("storage_mysql", "mysql://u:SECRET1@127.0.0.1/db"),
    ):
        (d / f"{name}.yaml").write_text(yaml.safe_dump({**nb201, "search": {"storage": url}}))
    (d / "lr.yaml").write_text("train:\n  lr: .nan\n")
    (d / "twice.yaml").write_text("space: nasbench201\nbudget_ms: 0.47\nbudget_ms: 900\n")
    os.mkfifo(d / "fifo.yaml")
    (d / "big.yaml").write_text("# " + "x" * (1 << 20) + "\n")
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
    (d / "nested.txt").write_text("[" * 100_000 + "\n")  # json.loads recurses: RecursionError, not a line
    other = FBNET_ARCH.replace("k3_e1", "k5_e6", 1)
    (d / "blank.csv").write_text(f"arch,latency_ms\n{FBNET_ARCH},1.0\n\n\n{other},-3\n")
    (d / "huge.csv").write_text(f"arch,latency_ms\n{FBNET_ARCH},1e308\n")
    (d / "archs.txt").write_text(FBNET_ARCH + "\n")
    space = search_spaces.create("fbnet")
    archs = search_spaces.sample_archs(space, 12, 0)
    X, layout = features(space, archs)
    pred = predictors.create("flops", layout=layout).fit(X, np.ones((12, 2)))
    pred.adapt(X[:6], np.arange(1, 7, dtype=float))
    pred.save(d / "evil", {"kind": "calibrated", "space": "fbnet"})
    pred.save(d / "fbnet_pred", {"kind": "calibrated", "space": "fbnet"})
    doc = json.loads((d / "evil.json").read_text())
    doc["fitted"]["__class__"] = 1
    (d / "evil.json").write_text(json.dumps(doc))
    good = json.loads((d / "fbnet_pred.json").read_text())
    for name, change in (
        ("big", {"predictor": "mlp", "params": {"hidden": "big"}}),
        ("steps", {"predictor": "mlp", "params": {"steps": 1e12}}),
        ("space_int", {"meta": {"kind": "calibrated", "space": 123}}),
        ("other_space", {"meta": {"kind": "calibrated", "space": "nasbench201"}}),
    ):
        (d / f"{name}.json").write_text(json.dumps({**good, **change}))
        (d / f"{name}.safetensors").write_bytes((d / "fbnet_pred.safetensors").read_bytes())
    return d


@pytest.mark.parametrize("argv, message", ROWS, ids=[" ".join(r[0][:3]) for r in ROWS])
def test_a_bad_input_is_one_clear_line(argv, message, tmp, capsys):
    argv = [a.replace("{tmp}", str(tmp)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hwnas: error: ") and message in err and len(err.splitlines()) == 1, err
    assert "SECRET1" not in err  # a token is never printed


def test_a_file_the_profile_refuses_is_left_as_it_was(help_dir, tmp_path, capsys):
    """What a file is is checked before anything touches it: notes without a final newline keep their last line."""
    notes = tmp_path / "notes.txt"
    notes.write_text("line one\nimportant last line")
    device = f"table:{help_dir / 'nasbench201.csv.gz'}:silver_4114"
    assert main(["profile", "--device", device, "--space", "nasbench201", "-n", "3", "--out", str(notes)]) == 2
    assert "notes.txt exists but is not an hwnas profile" in capsys.readouterr().err
    assert notes.read_text() == "line one\nimportant last line"


def test_a_port_in_use_is_one_line(capsys):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["device", "serve", "--port", str(port), "--token", "t"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"hwnas: error: cannot serve on 127.0.0.1:{port}: Address already in use"
