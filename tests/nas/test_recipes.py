"""Recipes and the train-supernet / eval-subnet commands."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from nas.cli.main import main
from nas.recipes import load_recipe


def test_quickstart_recipe_validates():
    r = load_recipe("recipes/quickstart.yaml")
    assert r.data.name == "digits-hard" and r.train.epochs > 0 and r.search.strategy == "surrogate"


@pytest.mark.parametrize("path", sorted(str(p) for p in Path(__file__).parents[2].glob("recipes/*.yaml")))
def test_every_shipped_recipe_validates(path, tmp_path, monkeypatch):
    import yaml

    from nas.recipes import HybridRecipe, load_any_recipe

    reused = yaml.safe_load(Path(path).read_text()).get("supernet")
    if reused:  # a recipe that reuses a supernet names a run directory the user makes first
        monkeypatch.chdir(tmp_path)
        (tmp_path / reused).mkdir(parents=True)
        (tmp_path / reused / "checkpoint.pt").write_bytes(b"")  # what import-supernet writes, as far as a recipe checks
    recipe = load_any_recipe(path)
    assert recipe.search.trials > 0 and isinstance(recipe, HybridRecipe) == ("hybrid_lm" in Path(path).name)


def test_a_quantize_section_turns_quantization_on(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("quantize:\n  tolerance: 1.0\n")
    assert load_recipe(path).quantize.enabled and load_recipe(path).quantize.tolerance == 1.0
    path.write_text("search:\n  trials: 5\n")
    assert not load_recipe(path).quantize.enabled


@pytest.mark.parametrize(
    "text, message",
    [
        ("train:\n  epoch: 3\n", "unknown field train.epoch; allowed: epochs,"),
        (
            "data:\n  name: mnist\n",
            "data.name must be one of digits, digits-hard, cifar10, cifar100, imagefolder, but got 'mnist'",
        ),
        ("data:\n  name: cifar10\n", "data.path is required for cifar10"),
        ("train:\n  lr: fast\n", "train.lr must be a number, but got 'fast'"),
        ("colour: red\n", "unknown field colour"),
        ("quantize:\n  search: greedy\n", "quantize.search must be one of bisect, latency, ilp, but got 'greedy'"),
        ("quantize:\n  tolerance: -2\n", "tolerance=-2"),
        (
            "quantize:\n  calibration: kl\n",
            "quantize.calibration must be one of minmax, percentile, entropy, but got 'kl'",
        ),
        ("", "the recipe is empty; start from recipes/quickstart.yaml"),
        ("train:\n  lr: .nan\n", "train.lr must be a finite number, but got nan"),
        ("verify:\n  margin: -5\n", "`verify.margin >= 0` must hold, but got verify.margin=-5.0"),
        ("verify:\n  top: 0\n", "`verify.top >= 1` must hold, but got verify.top=0"),
        ("search:\n  trials: -5\n", "`search.trials >= 1` must hold, but got search.trials=-5"),
        ("search:\n  trials: 3.7\n", "search.trials must be a whole number, but got 3.7"),
        ("train:\n  epochs: 2.5\n", "train.epochs must be a whole number, but got 2.5"),
        ("train:\n  checkpoint_every: 0\n", "`train.checkpoint_every >= 1` must hold"),
        ("train:\n  batch_size: 0\n", "`train.batch_size >= 1` must hold, but got train.batch_size=0"),
        ("budget_fraction: 50\n", "`0 < budget_fraction <= 1` must hold, but got budget_fraction=50.0"),
        ("budget_ms: .inf\n", "budget_ms must be a finite number, but got inf"),
        ("space: 123\n", "space must be a string, but got 123"),
        ("device: [1, 2]\n", "device must be a string, but got [1, 2]"),
        ("space: 'ofa_mbv3:resolutions=[abc'\n", "option 'resolutions=[abc' has a value that is not valid YAML"),
        ("search:\n  storage: 'not a url'\n", "search.storage must be a database URL"),
        ("predictor: /nonexistent/phone.predictor\n", "predictor '/nonexistent/phone.predictor' does not exist"),
        ("references: 3\n", "`references >= 5` must hold, but got references=3"),
    ],
)
def test_bad_recipes_name_the_field(text, message, tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=re.escape(message)):
        load_recipe(path)


@pytest.mark.slow
def test_train_then_eval_a_subnet_from_the_command_line(tmp_path, capsys):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(
        'space: "ofa_mbv3:resolutions=[32],width_mult=0.5,num_classes=10"\n'
        "train:\n  epochs: 1\n  batch_size: 64\n  random_subnets: 1\n"
    )
    run = tmp_path / "run"
    assert main(["train-supernet", str(recipe), "--out", str(run)]) == 0
    for name in ("recipe.yaml", "checkpoint.pt", "metrics.csv", "metrics.png"):
        assert (run / name).exists(), name
    threes = ",".join(["3"] * 20)
    arch = f'{{"ks":[{threes}],"e":[{threes}],"d":[2,2,2,2,2],"r":32}}'
    capsys.readouterr()
    assert main(["eval-subnet", str(run), "--arch", arch, "--split", "test"]) == 0
    first = capsys.readouterr().out.strip()
    assert main(["eval-subnet", str(run), "--arch", arch, "--split", "test"]) == 0
    again = capsys.readouterr().out.strip()
    assert again == first + " (cached)"  # the accuracy cache answers the second time, with the same figure
    assert main(["eval-subnet", str(tmp_path), "--arch", arch]) == 2
    assert "holds no checkpoint.pt" in capsys.readouterr().err
