"""`hwnas run` with an accuracy table: no training; references, calibration, budget, search, verification on the
device and export as in the image run; the winner is a real trade-off between the space's ends."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from nas.cli.main import main
from nas.recipes import load_recipe

RECIPE = Path(__file__).resolve().parents[3] / "recipes" / "nb201_cpu.yaml"


def _recipe(tmp_path: Path, **changes) -> Path:
    raw = yaml.safe_load(RECIPE.read_text())
    raw.update(changes)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_a_table_run_on_a_replayed_device_finds_a_trade_off_and_exports_it(help_dir, tmp_path):
    device = f"table:{help_dir / 'nasbench201.csv.gz'}:silver_4114"
    out = tmp_path / "run"
    assert main(["run", str(_recipe(tmp_path, device=device)), "--out", str(out)]) == 0
    result = json.loads((out / "result.json").read_text())
    w, big, small = result["winner"], result["largest"], result["smallest"]
    assert result["accuracy_source"].endswith("nasbench201_accuracy.csv.gz:cifar10")
    assert w["measured_ms"] <= result["budget_ms"] < big["measured_ms"]
    assert w["test_top1"] > small["test_top1"] + 0.02  # more accurate than the cheapest cell by far more than noise
    meta = json.loads((out / "best" / "model.json").read_text())
    assert (
        meta["arch"] == w["arch"]
        and meta["check"]["onnxruntime"]["max_rel_diff"] <= meta["check"]["onnxruntime"]["tolerance"]
        and "untrained" in meta["weights"]
    )
    report = (out / "report.md").read_text()
    assert "accuracy table `table:nasbench201:cifar10`" in report and "no validation split" in report
    assert not (out / "supernet").exists()  # nothing trained
    assert main(["run", str(_recipe(tmp_path, device=device)), "--out", str(out)]) == 0  # resumes, same winner
    assert json.loads((out / "result.json").read_text())["winner"]["arch"] == w["arch"]


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"accuracy": "table:nasbench201:top5"}, "accuracy: accuracy table .* has no 'top5' column"),
        ({"accuracy": "nasbench201"}, "accuracy must be 'table:NAME:COLUMN'"),
        ({"supernet": "."}, "give accuracy \\(a table\\) or supernet \\(a trained run\\), not both"),
        ({"quantize": {"tolerance": 0.5}}, "quantize needs trained weights"),
    ],
)
def test_a_bad_accuracy_source_is_one_line_naming_it(tmp_path, changes, message):
    with pytest.raises(ValueError, match=message):
        load_recipe(str(_recipe(tmp_path, **changes)))


@pytest.mark.slow
def test_the_nb201_recipe_runs_on_this_cpu(tmp_path):
    out = tmp_path / "run"
    assert main(["run", str(RECIPE), "--out", str(out)]) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["winner"]["measured_ms"] <= result["budget_ms"] < result["largest"]["measured_ms"]
    assert (out / "best" / "model.onnx").exists()
