"""Run directories: the resolved recipe, the supernet checkpoint, metrics and their plot, the accuracy cache."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import yaml

from nas.data import TaskData
from nas.recipes import Recipe, load_data, recipe_from_dict, to_dict
from nas.spaces import load_space
from nas.supernet import OFASupernet
from nas.supernet.accuracy import SubnetAccuracy


@dataclass
class SupernetRun:
    path: Path
    recipe: Recipe
    net: OFASupernet
    data: TaskData
    step: int

    def accuracy(self, split: str = "val", int8: bool = False) -> SubnetAccuracy:
        """Subnet accuracy (of its uniform int8 deployment with `int8`), cached in the run directory for this checkpoint."""
        return SubnetAccuracy(self.net, self.data, split, self.path / "accuracy.jsonl", tag=f"step{self.step}", int8=int8)


def train_supernet(recipe: Recipe, run: Path, progress: Callable[[int, int], None] | None = None) -> list[dict]:
    """Train (or resume) the recipe's supernet in `run`; the recipe is written there first."""
    from nas.supernet.train import train

    run.mkdir(parents=True, exist_ok=True)
    data = load_data(recipe.data)
    if int(os.environ.get("RANK", "0")) == 0:
        (run / "recipe.yaml").write_text(yaml.safe_dump({**to_dict(recipe), "resolved_data": data.describe()}, sort_keys=False))
    torch.manual_seed(recipe.train.seed)
    net = load_space(recipe.space).supernet(num_classes=data.num_classes)
    metrics = train(net, data, recipe.train, run, progress=progress)
    if int(os.environ.get("RANK", "0")) == 0 and (run / "metrics.csv").exists():
        plot_metrics(run)
    return metrics


def load_supernet_run(run_dir: str | Path, device: str = "cpu") -> SupernetRun:
    run = Path(run_dir)
    if not (run / "checkpoint.pt").exists():
        raise ValueError(f"{run} holds no checkpoint.pt; train it with hwnas train-supernet")
    raw = yaml.safe_load((run / "recipe.yaml").read_text())
    raw.pop("resolved_data", None)
    recipe = recipe_from_dict(raw, str(run / "recipe.yaml"))
    data = load_data(recipe.data)
    net = load_space(recipe.space).supernet(num_classes=data.num_classes)
    state = torch.load(run / "checkpoint.pt", weights_only=True, map_location="cpu")
    net.load_state_dict(state["model"])
    return SupernetRun(run, recipe, net.to(device), data, int(state["step"]))


def load_search_run(run_dir: str | Path) -> tuple[SupernetRun, dict]:
    """A `hwnas run` directory: its supernet (RUN/supernet, or the run the recipe reused) and
    result.json ({} before the run has finished)."""
    run = Path(run_dir)
    if not run.is_dir():
        raise ValueError(f"{run}: no such run directory")
    result = json.loads((run / "result.json").read_text()) if (run / "result.json").exists() else {}
    sub = run / "supernet" if (run / "supernet" / "checkpoint.pt").exists() else Path(result.get("supernet", run))
    return load_supernet_run(sub), result


def run_subnet(run_dir: str | Path, arch: str | None, purpose: str, sn: SupernetRun | None = None
               ) -> tuple[SupernetRun, tuple, dict]:
    """`load_search_run` plus the subnet `arch` (default: the run's winner) as a tuple; `sn`, when the
    caller holds the run's supernet already, saves loading it again."""
    if sn is None:
        sn, result = load_search_run(run_dir)
    else:
        path = Path(run_dir) / "result.json"
        result = json.loads(path.read_text()) if path.exists() else {}
    if arch is None:
        if not result.get("winner"):
            raise ValueError(f"{run_dir} has no winner to {purpose} (no result.json with a winner); pass --arch")
        arch = result["winner"]["arch"]
    return sn, sn.net.space.from_str(arch), result


def plot_metrics(run: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    df = pd.read_csv(run / "metrics.csv")
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
