"""`hwnas run`: calibrate a latency predictor on the device, train (or load) the supernet, search,
verify the best candidates on the device, export the winner, write the report.

Every phase writes its results as it goes and is skipped or resumed when its output exists, so a
run that is stopped and started again continues where it was."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
import yaml

import devices
import predictors
from nas.calibration import calibrate, feature_space, reference
from nas.features import features
from nas.profile import profile, read_latencies
from nas.recipes import Recipe, search_device_spec, to_dict
from nas.runs import SupernetRun, load_supernet_run, train_supernet
from nas.search import Objective, completed, pareto_front, run_search
from nas.spaces import parse_space_spec

Log = Callable[[str], None]


def _measure(space: Any, device: Any, archs: list[tuple], path: Path, progress: Any = None) -> dict[str, float]:
    """Measured latency of each arch (resumable CSV); returns arch string -> latency_ms.

    A run keeps every device measurement in one file, so each group's anchor rescales it to the
    first group's machine state: the calibration, the budget and the verification agree even when
    the machine runs 20% faster or slower from one minute to the next (seen on shared CPUs)."""
    profile(space, device, archs, path, progress=progress)
    return read_latencies(path)


class Pipeline:
    """One run directory; each method is one phase."""

    def __init__(self, recipe: Recipe, run_dir: str | Path, log: Log = print, progress: Any = None) -> None:
        self.recipe, self.run, self.log = recipe, Path(run_dir), log
        self.progress = progress  # a context-manager factory: progress(description) -> update(done, total)
        self.run.mkdir(parents=True, exist_ok=True)
        self.device = devices.get(search_device_spec(recipe))  # what the search measures
        self.deploy_device = devices.get(recipe.device)  # where the quantized winner runs (the same without quantize.joint)

    def _bar(self, description: str) -> Any:
        import contextlib

        return self.progress(description) if self.progress else contextlib.nullcontext(None)

    # ---- phases --------------------------------------------------------------------------------
    def supernet(self) -> SupernetRun:
        dev = "cuda" if self.recipe.train.device != "cpu" and torch.cuda.is_available() else "cpu"
        if self.recipe.supernet:
            self.log(f"supernet: using the trained run {self.recipe.supernet}")
            return load_supernet_run(self.recipe.supernet, dev)
        sub = self.run / "supernet"
        done = (sub / "checkpoint.pt").exists() and (sub / "metrics.csv").exists() and \
            len(pd.read_csv(sub / "metrics.csv")) >= self.recipe.train.epochs
        if not done:
            self.log("supernet: training (resumes from its last checkpoint)")
            with self._bar("training supernet") as update:
                train_supernet(self.recipe, sub, update)
        return load_supernet_run(sub, dev)

    def predictor(self, space: Any) -> tuple[Any, dict]:
        if self.recipe.predictor:
            pred, meta = predictors.load(self.recipe.predictor)
            if meta.get("kind") != "calibrated":
                raise ValueError(f"predictor {self.recipe.predictor} is a base; calibrate it with hwnas calibrate first")
            if parse_space_spec(meta.get("space", ""))[0] != space.name:
                raise ValueError(f"predictor {self.recipe.predictor} is for space {meta.get('space')!r}, but the recipe searches {space.spec!r}")
            return pred, meta
        path = self.run / "predictor.json"
        if not path.exists():
            refs = reference(space.spec, self.recipe.references)
            self.log(f"latency: measuring {len(refs)} reference architectures on {self.device.spec}")
            with self._bar("measuring references") as update:
                _measure(space, self.device, refs, self.run / "measured.csv", update)
            rows = pd.read_csv(self.run / "measured.csv")
            rows[rows["arch"].isin([space.to_str(a) for a in refs])].to_csv(self.run / "calibration.csv", index=False)
            calibrate(space.spec, str(self.run / "calibration.csv"), str(path))
        return predictors.load(path)

    def budget(self, space: Any, net: Any) -> tuple[float, dict[str, float]]:
        """The budget in ms, and the measured latency of the largest and smallest subnets."""
        ends = [net.largest(), net.smallest()]
        measured = _measure(space, self.device, ends, self.run / "measured.csv")
        largest = measured[space.to_str(ends[0])]
        budget = self.recipe.budget_ms or (self.recipe.budget_fraction or 0.7) * largest
        return float(budget), measured

    def search(self, sn: SupernetRun, pred: Any, pred_meta: dict, objective: Objective) -> list[dict]:
        space, cfg = sn.net.space, self.recipe.search
        storage = cfg.storage or f"sqlite:///{(self.run / 'study.db').resolve()}"
        acc = sn.accuracy("val", int8=self.recipe.quantize.enabled and self.recipe.quantize.joint)
        fspace = feature_space(pred_meta, space)

        def evaluate(arch: tuple) -> tuple[float, float]:
            X, _ = features(space, [arch], fspace)
            return acc(arch), float(pred.predict(X)[0])

        self.log(f"search: {cfg.strategy}, objective {objective.kind}, {cfg.trials} candidates, study {cfg.study_name!r} in {storage}")
        with self._bar("searching") as update:
            study = run_search(space, evaluate, objective, cfg, storage, progress=update)
        return completed(study)

    def verify(self, space: Any, trials: list[dict], budget: float) -> tuple[dict | None, dict[str, float]]:
        """Measure the front's most accurate predicted-feasible candidates, best first, until one
        meets the budget when measured (at least `verify.top` are measured). When none of the front
        does, the other candidates predicted within the margin follow, most accurate first."""
        df = pd.DataFrame(trials).drop_duplicates("arch")
        cap = budget * (1 + self.recipe.verify.margin)
        on_front = np.zeros(len(df), dtype=bool)
        on_front[pareto_front(df["accuracy"], df["latency_ms"])] = True
        queue = df.assign(front=on_front)[df["latency_ms"] <= cap].sort_values(["front", "accuracy"], ascending=False, kind="stable")
        path = self.run / "measured.csv"
        measured: dict[str, float] = {}
        winner = None
        top = self.recipe.verify.top
        for start in range(0, len(queue), top):
            batch = queue.iloc[start : start + top]
            where = "the front" if batch["front"].all() else "the other candidates (no front candidate met the budget)"
            self.log(f"verify: measuring {len(batch)} candidates of {where} on {self.device.spec}")
            measured.update(_measure(space, self.device, [space.from_str(a) for a in batch["arch"]], path))
            for _, row in queue.iloc[: start + top].iterrows():
                if measured.get(row["arch"], np.inf) <= budget:
                    winner = {**row.drop("front").to_dict(), "measured_ms": measured[row["arch"]]}
                    break
            if winner is not None:
                break
        if winner is None:
            self.log(f"verify: no candidate predicted within {cap:.3f} ms measured within the budget of {budget:.3f} ms")
        return winner, measured

    def execute(self) -> dict[str, Any]:
        recipe = self.recipe
        (self.run / "recipe.yaml").write_text(yaml.safe_dump(to_dict(recipe), sort_keys=False))
        sn = self.supernet()
        space = sn.net.space
        pred, pred_meta = self.predictor(space)
        budget, ends = self.budget(space, sn.net)
        self.log(f"budget: {budget:.3f} ms on {self.device.spec} (largest subnet measures {ends[space.to_str(sn.net.largest())]:.3f} ms)")
        objective = Objective(recipe.search.objective, budget_ms=budget, w=recipe.search.soft_w)
        trials = self.search(sn, pred, pred_meta, objective)
        winner, _ = self.verify(space, trials, budget)
        return self.report(sn, trials, read_latencies(self.run / "measured.csv"), budget, winner, pred, pred_meta)

    # ---- results ---------------------------------------------------------------------------------
    def report(self, sn: SupernetRun, trials: list[dict], measured: dict[str, float], budget: float,
               winner: dict | None, pred: Any, pred_meta: dict) -> dict[str, Any]:
        from nas.report import write_report

        return write_report(self, sn, trials, measured, budget, winner, pred, pred_meta)


def export_run(run_dir: str | Path, arch: str | None = None, fmt: str = "onnx", fp16: bool = False, int8: bool = False,
               out: str | Path | None = None, measured_ms: float | None = None, device: str | None = None,
               fingerprint: dict | None = None, sn: SupernetRun | None = None) -> dict[str, Any]:
    """Extract a subnet of a run (default: its winner), recalibrate BN, export and check it (`sn`: the
    run's supernet, when the caller has it loaded)."""
    from nas.data import batches, resize
    from nas.export import export_model, onnx_accuracy
    from nas.runs import run_subnet
    from nas.supernet.train import evaluate

    run = Path(run_dir)
    sn, a, result = run_subnet(run, arch, "export", sn)
    if arch is None:
        measured_ms = result["winner"].get("measured_ms") if measured_ms is None else measured_ms
        device = device or result.get("device")
        fingerprint = fingerprint or result.get("fingerprint")
    space = sn.net.space
    val = evaluate(sn.net, a, sn.data, "val")  # leaves the subnet's BN statistics recalibrated
    test = evaluate(sn.net, a, sn.data, "test")
    model = sn.net.extract(a).eval()
    shape = space.input_shape(a)
    r = shape[-1]
    check = resize(next(batches(sn.data.val, 16, None, sn.data))[0], r)
    calib = (resize(x, r).numpy() for x, _ in batches(sn.data.train, 32, 7, sn.data, augment=False)) if int8 else None
    info = {"arch": space.to_str(a), "space": space.spec, "input_shape": list(shape), "normalisation": sn.data.normalisation(),
            "num_classes": sn.data.num_classes, "classes_from": sn.data.name, "val_top1": val, "test_top1": test,
            "latency_ms": measured_ms, "device": device, "fingerprint": fingerprint}
    out_dir = Path(out) if out else run / "best"
    meta = export_model(model, shape, out_dir, info, check, fmt, fp16, int8, calib)
    if int8:
        test_batches = ((resize(x, r), y) for x, y in batches(sn.data.test, 64, None, sn.data))
        meta["int8_test_top1"] = onnx_accuracy(out_dir / meta["files"]["int8"], test_batches)
        (out_dir / "model.json").write_text(json.dumps(meta, indent=2))
    return meta
