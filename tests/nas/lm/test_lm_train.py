"""`hwnas train-lm`: a hybrid_lm architecture trained for real; resumes exactly; torchrun ranks train as one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch
import yaml

from nas.cli.main import main
from nas.lm.proxy import TextData, load_text
from nas.lm.train import LMTrainConfig, train_lm
from search_spaces import load_space

SPACE = "hybrid_lm:dims=[32],heads=[2],max_blocks=4,window=8"
ARCH = "d32h2f2/attn+mamba2@1:1,f1,x1/-/-"
SMALL = dict(steps=6, batch=4, seq_len=16, eval_every=2, checkpoint_every=3, val_windows=4, device="cpu")
FLAGS = [
    "--steps",
    "6",
    "--batch",
    "4",
    "--seq-len",
    "16",
    "--eval-every",
    "2",
    "--checkpoint-every",
    "3",
    "--val-windows",
    "4",
    "--device",
    "cpu",
]


@pytest.fixture(scope="module")
def data() -> TextData:
    return TextData.from_bytes(load_text())


@pytest.fixture(scope="module")
def straight(tmp_path_factory, data):
    out = tmp_path_factory.mktemp("straight")
    meta = train_lm(load_space(SPACE), ARCH, data, LMTrainConfig(**SMALL), out)
    return out, meta


def test_training_writes_the_model_its_metrics_and_a_checked_onnx(straight):
    out, meta = straight
    assert (
        meta["arch"] == ARCH and meta["trained_steps"] == 6 and meta["world_size"] == 1 and meta["onnxruntime_matches"]
    )
    rows = pd.read_csv(out / "metrics.csv")
    assert list(rows["step"]) == [2, 4, 6] and rows["val_bpb"].iloc[-1] == pytest.approx(meta["val_bpb"])
    assert meta["best_step"] == rows["step"][rows["val_bpb"].idxmin()] and meta["best_val_bpb"] == rows["val_bpb"].min()
    assert rows["val_bpb"].iloc[-1] < rows["val_bpb"].iloc[0] < 8.5  # it learns: below uniform guessing (8 bits) soon
    assert json.loads((out / "model.json").read_text())["params"] == load_space(SPACE).params(
        load_space(SPACE).from_str(ARCH)
    )
    assert (out / "metrics.png").stat().st_size > 0 and (out / "model.onnx").stat().st_size > 0


def test_a_stopped_run_resumes_and_ends_with_the_weights_of_an_uninterrupted_one(straight, data, tmp_path):
    out, _ = straight

    def stop(step: int, total: int) -> None:
        if step == 4:  # after the metrics row of step 4, before its checkpoint (every 3 steps)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_lm(load_space(SPACE), ARCH, data, LMTrainConfig(**SMALL), tmp_path, stop)
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == 3
    assert not (tmp_path / "weights.pt").exists()
    train_lm(load_space(SPACE), ARCH, data, LMTrainConfig(**SMALL), tmp_path)
    want, got = (torch.load(d / "weights.pt", weights_only=True) for d in (out, tmp_path))
    for name, t in want.items():
        torch.testing.assert_close(got[name], t, rtol=0, atol=0, msg=name)
    assert list(pd.read_csv(tmp_path / "metrics.csv")["step"]) == [2, 4, 6]  # step 4's row is not written twice


def test_a_checkpoint_of_another_run_is_refused(straight, data):
    out, _ = straight
    with pytest.raises(ValueError, match=r"checkpoint.pt: trained with lr=0.003, but got lr=0.001; use another --out"):
        train_lm(load_space(SPACE), ARCH, data, LMTrainConfig(**{**SMALL, "lr": 1e-3}), out)
    other = "d32h2f2/mamba2,f1,x1/-/-"
    with pytest.raises(ValueError, match=r"checkpoint.pt: trained architecture .*, but got 'd32h2f2/mamba2,f1,x1/-/-'"):
        train_lm(load_space(SPACE), other, data, LMTrainConfig(**SMALL), out)


@pytest.mark.slow
def test_torchrun_ranks_train_as_one_process_with_the_global_batch(straight, tmp_path):
    out, _ = straight
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "nas.cli",
            "train-lm",
            "--arch",
            ARCH,
            "--space",
            SPACE,
            *FLAGS,
            "--out",
            str(tmp_path),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((tmp_path / "model.json").read_text())["world_size"] == 2
    want, got = (torch.load(d / "weights.pt", weights_only=True) for d in (out, tmp_path))
    for name, t in want.items():  # each rank took 2 of the 4 rows, gradients averaged: the same steps
        torch.testing.assert_close(got[name], t, rtol=1e-4, atol=1e-5, msg=name)


def test_the_cli_trains_a_hybrid_runs_winner(straight, tmp_path, capsys):
    out, _ = straight
    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.yaml").write_text(yaml.safe_dump({"space": SPACE, "proxy": {"text": None}}))
    (run / "result.json").write_text(json.dumps({"winner": {"arch": ARCH}}))
    assert main(["train-lm", str(run), *FLAGS, "--out", str(tmp_path / "w")]) == 0
    assert json.loads((tmp_path / "w" / "model.json").read_text())["arch"] == ARCH
    assert "validation" in capsys.readouterr().err
    (run / "result.json").write_text(json.dumps({"winner": None}))
    assert main(["train-lm", str(run), *FLAGS, "--out", str(tmp_path / "x")]) == 2
    assert "result.json: the run has no winner; name one with --arch" in capsys.readouterr().err
    assert main(["train-lm", *FLAGS, "--out", str(tmp_path / "y")]) == 2
    assert "train-lm needs a hybrid_lm run directory, or --arch and --space" in capsys.readouterr().err
    assert main(["train-lm", "--arch", "k3_e6", "--space", "fbnet", *FLAGS, "--out", str(tmp_path / "z")]) == 2
    assert "train-lm trains hybrid_lm architectures, but got space 'fbnet'" in capsys.readouterr().err


def test_the_parameter_matched_baseline_of_an_architecture_trains_too(straight, tmp_path):
    out, meta = straight
    assert main(["train-lm", "--arch", ARCH + "|mamba2-only", "--space", SPACE, *FLAGS, "--out", str(tmp_path)]) == 0
    base = json.loads((tmp_path / "model.json").read_text())
    assert base["arch"] == ARCH + "|mamba2-only" and base["onnxruntime_matches"]
    assert abs(base["params"] - meta["params"]) / meta["params"] < 0.05
