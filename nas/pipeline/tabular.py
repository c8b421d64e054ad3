"""`hwnas run` with `accuracy: table:...`: the run's accuracy comes from a table of trained accuracies instead of a
supernet, so training is skipped; everything else is the image run's (references measured on the device,
calibration, budget, search, verification on the device, export of the winner's architecture, report)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nas.accuracy import AccuracyTable, load_accuracy_table
from nas.export import export_model
from nas.pipeline.run import Pipeline
from nas.rundir import BEST
from search_spaces import load_space

# images of the split a table's accuracy was measured on (what one image is worth, in points)
TEST_IMAGES = {"cifar10": 10_000, "cifar100": 10_000, "imagenet16_120": 6_000}


class TableAccuracy:
    """An architecture's accuracy (a fraction) from the table, counted as a supernet's subnet accuracy is."""

    def __init__(self, table: AccuracyTable, space: Any) -> None:
        self.table, self.space, self.hits, self.misses = table, space, 0, 0

    def __call__(self, arch: tuple) -> float:
        self.misses += 1
        return self.table(self.space.to_str(arch)) / 100.0


@dataclass
class _Ends:
    """What the run asks of a supernet besides accuracy: its space and its largest and smallest architectures
    (here: the most and the fewest multiply-adds among the table's architectures that compute something)."""

    space: Any
    big: tuple
    small: tuple

    def largest(self) -> tuple:
        return self.big

    def smallest(self) -> tuple:
        return self.small


@dataclass
class _Split:
    val: range


class TableRun:
    """A supernet run's stand-in for the pipeline: `net` (space and ends), `accuracy(split)`, `path`, `data.val`
    (the size of the split the table's accuracy was measured on). Validation and test are the table's one
    figure: NAS-Bench-201 publishes test accuracy only."""

    def __init__(self, spec: str, space_spec: str) -> None:
        space = load_space(space_spec)
        self.table = load_accuracy_table(spec, space)
        archs = [space.from_str(a) for a in self.table.accuracy]
        flops = np.array([space.flops(a) for a in archs], dtype=float)
        computes = np.array([self.table.accuracy[space.to_str(a)] for a in archs]) > min(self.table.accuracy.values())
        big = archs[int(np.argmax(flops))]
        small = archs[int(np.argmin(np.where(computes, flops, np.inf)))]
        self.net = _Ends(space, big, small)
        self.path = self.table.source
        self.data = _Split(range(TEST_IMAGES.get(self.table.column, 10_000)))
        self.num_classes = getattr(space, "num_classes", 10)

    def accuracy(self, split: str = "val", int8: bool = False, bn_images: int | None = None) -> TableAccuracy:
        return TableAccuracy(self.table, self.net.space)


class TablePipeline(Pipeline):
    """The image run with a table as its accuracy source: no training, and the winner exported as its
    architecture (untrained weights: the table holds what it reaches when trained, not its weights)."""

    def supernet(self) -> TableRun:  # type: ignore[override]
        self.log(f"accuracy: table {self.recipe.accuracy} (no training)")
        return TableRun(self.recipe.accuracy, self.recipe.space)

    def export(self, sn: TableRun) -> dict[str, Any]:  # type: ignore[override]
        result = self.dir.read_result()
        w = result["winner"]
        space = sn.net.space
        arch = space.from_str(w["arch"])
        out = self.run / BEST
        self.log(f"export: {self.recipe.export.format} to {out} (the winner's architecture, untrained weights)")
        torch.manual_seed(0)
        model = space.build(arch).eval()
        shape = tuple(space.input_shape(arch))
        info = {
            "arch": w["arch"],
            "space": space.spec,
            "input_shape": list(shape),
            "num_classes": sn.num_classes,
            "accuracy_source": sn.path,
            "table_top1": w["test_top1"],
            "weights": "untrained: train this architecture to reach table_top1 (the table's accuracy after training)",
            "latency_ms": w.get("measured_ms"),
            "device": result.get("device"),
            "fingerprint": result.get("fingerprint"),
            "timm": space.timm_config(arch, sn.num_classes),
        }
        meta = export_model(model, shape, out, info, torch.randn(4, *shape[1:]), self.recipe.export)
        return {"files": meta["files"], "check": meta["check"]}


def pipeline_for(recipe: Any, run_dir: str | Path, **kwargs: Any) -> Pipeline:
    """The pipeline a recipe asks for: a table's accuracy, or a supernet's."""
    return (TablePipeline if getattr(recipe, "accuracy", None) else Pipeline)(recipe, run_dir, **kwargs)
