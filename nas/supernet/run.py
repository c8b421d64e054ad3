"""A supernet run: training one from a recipe into its directory, and loading a trained one (its recipe, data,
weights and cached subnet accuracies); a search run's supernet and winner."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from nas.data import TaskData
from nas.recipes import Recipe, load_data, recipe_from_dict, to_dict
from nas.rundir import ACCURACY, CHECKPOINT, METRICS, RECIPE, RunDir
from nas.supernet.accuracy import SubnetAccuracy
from nas.supernet.train import BN_IMAGES, EVAL_BATCH
from nas.training.checkpoints import load_checkpoint
from search_spaces import Supernet, load_space


@dataclass
class SupernetRun:
    path: Path
    recipe: Recipe
    net: Supernet
    data: TaskData
    step: int

    def accuracy(self, split: str = "val", int8: bool = False, bn_images: int | None = None) -> SubnetAccuracy:
        """Subnet accuracy (of its uniform int8 deployment with `int8`), BN statistics recalibrated on
        `bn_images` training images (default: the run's recipe's), cached in the run directory for this
        checkpoint."""
        bn_images = self.recipe.bn_images if bn_images is None else bn_images
        tag = f"step{self.step}" + ("" if bn_images == BN_IMAGES else f"-bn{bn_images}")
        calib_batches = -(-bn_images // EVAL_BATCH)
        return SubnetAccuracy(self.net, self.data, split, self.path / ACCURACY, tag, calib_batches, int8)


def train_supernet(recipe: Recipe, run: Path, progress: Callable[[int, int], None] | None = None) -> list[dict]:
    """Train (or resume) the recipe's supernet in `run`; the recipe is written there first."""
    from nas.supernet.train import train

    run.mkdir(parents=True, exist_ok=True)
    data = load_data(recipe.data)
    if int(os.environ.get("RANK", "0")) == 0:
        RunDir(run).write_recipe({**to_dict(recipe), "resolved_data": data.describe()})
    torch.manual_seed(recipe.train.seed)
    net = load_space(recipe.space).supernet(num_classes=data.num_classes)
    metrics = train(net, data, recipe.train, run, progress=progress)
    if int(os.environ.get("RANK", "0")) == 0 and (run / METRICS).exists():
        plot_metrics(run)
    return metrics


def load_supernet_run(run_dir: str | Path, device: str = "cpu") -> SupernetRun:
    run = Path(run_dir)
    if not (run / CHECKPOINT).exists():
        raise ValueError(f"{run} holds no {CHECKPOINT}; train it with hwnas train-supernet")
    if not (run / RECIPE).exists():
        raise ValueError(f"{run} holds no {RECIPE}: not a run directory hwnas wrote")
    raw = RunDir(run).read_recipe()
    raw.pop("resolved_data", None)
    recipe = recipe_from_dict(raw, str(run / RECIPE))
    data = load_data(recipe.data)
    net = load_space(recipe.space).supernet(num_classes=data.num_classes)
    state = load_checkpoint(run / CHECKPOINT)
    net.load_state_dict(state["model"])
    return SupernetRun(run, recipe, net.to(device), data, int(state["step"]))


def load_search_run(run_dir: str | Path) -> tuple[SupernetRun, dict]:
    """A `hwnas run` directory: its supernet (RUN/supernet, or the run the recipe reused) and
    result.json ({} before the run has finished)."""
    run = RunDir(run_dir)
    if not run.path.is_dir():
        raise ValueError(f"{run}: no such run directory")
    return load_supernet_run(run.supernet_dir()), run.read_result()


def run_subnet(
    run_dir: str | Path, arch: str | None, purpose: str, sn: SupernetRun | None = None
) -> tuple[SupernetRun, tuple, dict]:
    """`load_search_run` plus the subnet `arch` (default: the run's winner) as a tuple; `sn`, when the
    caller holds the run's supernet already, saves loading it again."""
    run = RunDir(run_dir)
    if sn is None:
        sn, result = load_search_run(run_dir)
    else:
        result = run.read_result()
    return sn, sn.net.space.from_str(run.winner(arch, purpose)), result


def plot_metrics(run: Path) -> None:
    from nas.plots import pyplot

    plt = pyplot()
    import pandas as pd

    df = pd.read_csv(run / METRICS)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(df["epoch"], df["acc_largest"], marker="o", label="largest subnet")
    ax.plot(df["epoch"], df["acc_smallest"], marker="o", label="smallest subnet")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation top-1")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(run / "metrics.png", dpi=120)
    plt.close(fig)
