"""What the training loops share: checkpoints written whole or not at all, read without unpickling; the
learning-rate schedule; metrics trimmed back to the checkpoint on resume."""

from __future__ import annotations

import math
import pickle

import pandas as pd
import pytest
import torch

from nas.training.checkpoints import load_checkpoint, save_checkpoint
from nas.training.metrics import append_metrics, trim_metrics
from nas.training.schedules import cosine


def test_a_save_that_fails_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"model": {"w": torch.ones(2)}, "step": 1}, path)

    def full_disk(obj, f, *args, **kwargs):
        with open(f, "wb") as out:
            out.write(b"PK\x03\x04 half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(
        ValueError, match=r"checkpoint.pt: cannot write the checkpoint \(No space left on device\); the previous"
    ):
        save_checkpoint({"model": {"w": torch.zeros(2)}, "step": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1 and not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("content", [b"", b"not a zip", pickle.dumps({"model": 1, "step": 2})])
def test_a_file_that_is_not_our_checkpoint_is_a_one_line_error(tmp_path, content):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="checkpoint.pt: not a checkpoint hwnas wrote"):
        load_checkpoint(path)


def test_cosine_warms_up_then_decays_to_zero():
    assert cosine(0, 100) == 1.0 and cosine(100, 100) == pytest.approx(0.0)
    assert cosine(0, 100, warmup=10) == pytest.approx(0.1 * 0.5 * (1 + math.cos(0)))
    assert cosine(50, 100) == pytest.approx(0.5)


def test_metrics_rows_after_the_checkpoint_are_dropped(tmp_path):
    path = tmp_path / "metrics.csv"
    for step in (10, 20, 30):
        append_metrics(path, {"step": step, "loss": 1.0 / step})
    trim_metrics(path, 20)
    assert pd.read_csv(path)["step"].tolist() == [10, 20]
