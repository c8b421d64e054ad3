"""`hwnas run`: calibrate a latency predictor on the device, train (or load) the supernet, search,
verify the best candidates on the device, export the winner, write the report.

Every phase writes its results as it goes and is skipped or resumed when its output exists, so a
run that is stopped and started again continues where it was."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

import devices
import predictors
from nas.latency.calibration import calibrate, check_fits, latency_of, reference
from nas.latency.profile import measure_archs
from nas.latency.tables import read_latencies, read_rows
from nas.pipeline.export import export_run
from nas.pipeline.quantize import quantize_run
from nas.pipeline.report import (
    Outcome,
    quantized_summary,
    separation_line,
    trade_off_line,
    write_markdown,
    write_results,
)
from nas.progress import Log, bar
from nas.quantize import QuantizeConfig
from nas.recipes import DEFAULT_BUDGET_FRACTION, Recipe, search_device_spec, to_dict
from nas.rundir import BEST, CALIBRATION, MEASURED, PREDICTOR, QUANTIZED, SUPERNET, RunDir, supernet_checkpoint_dir
from nas.search import Objective, completed, pareto_front, run_search
from nas.search.study import check_storage_opens
from nas.supernet.run import SupernetRun, load_supernet_run, train_supernet
from search_spaces import load_space, parse_space_spec


def check_same_space(recipe: Recipe, trained: Recipe, what: str) -> None:
    """A recipe that reuses a trained supernet searches the space and task it was trained on: every setting of the
    space (width, classes, resolutions, ...) and the data's name and resolution agree, or one line names the first
    that differs."""
    mine, theirs = load_space(recipe.space), load_space(trained.space)
    if mine.name != theirs.name:
        differ = [("space", mine.name, theirs.name)]
    else:
        differ = [(k, v, vars(theirs)[k]) for k, v in vars(mine).items() if k != "spec" and v != vars(theirs)[k]]
    differ += [
        (f"data.{k}", getattr(recipe.data, k), getattr(trained.data, k))
        for k in ("name", "resolution")
        if getattr(recipe.data, k) != getattr(trained.data, k)
    ]
    if differ:
        k, a, b = differ[0]
        raise ValueError(
            f"{what} was trained with {k}={b!r}, but the recipe says {k}={a!r}: make the recipe's space and data "
            f"those of the supernet ({trained.space!r})"
        )


class Pipeline:
    """One run directory; each method is one phase."""

    def __init__(self, recipe: Recipe, run_dir: str | Path, log: Log = print, progress: Any = None) -> None:
        self.recipe, self.log = recipe, log
        self.progress = progress  # a context-manager factory: progress(description) -> update(done, total)
        self.dir = RunDir(run_dir).create()
        self.run = self.dir.path
        # what the search measures, and where the quantized winner runs (the same without quantize.joint)
        self.device = devices.get(search_device_spec(recipe))
        self.deploy_device = devices.get(recipe.device)

    def _bar(self, description: str) -> Any:
        return bar(self.progress, description)

    # ---- phases --------------------------------------------------------------------------------
    def supernet(self) -> SupernetRun:
        dev = "cuda" if self.recipe.train.device != "cpu" and torch.cuda.is_available() else "cpu"
        if self.recipe.supernet:
            self.log(f"supernet: using the trained run {self.recipe.supernet}")
            sn = load_supernet_run(supernet_checkpoint_dir(self.recipe.supernet), dev)
            check_same_space(self.recipe, sn.recipe, f"supernet {self.recipe.supernet}")
            return sn
        sub = self.run / SUPERNET
        # the checkpoint says how far training got (metrics rows can outlive a checkpoint when a run is killed)
        self.log("supernet: training (resumes from its last checkpoint; returns at once when it is finished)")
        with self._bar("training supernet") as update:
            train_supernet(self.recipe, sub, update)
        return load_supernet_run(sub, dev)

    def predictor(self, space: Any) -> tuple[Any, dict]:
        if self.recipe.predictor:
            pred, meta = predictors.load(self.recipe.predictor)
            if meta.get("kind") != "calibrated":
                raise ValueError(
                    f"predictor {self.recipe.predictor} is a base; calibrate it with hwnas calibrate first"
                )
            if parse_space_spec(meta.get("space", ""))[0] != space.name:
                raise ValueError(
                    f"predictor {self.recipe.predictor} is for space {meta.get('space')!r}, but the recipe searches "
                    f"{space.spec!r}"
                )
            check_fits(pred, meta, space, self.recipe.predictor)
            return pred, meta
        path = self.run / PREDICTOR
        if path.exists():
            pred, meta = predictors.load(path)
            calibrated_on = meta.get("fingerprint", {}).get("device")
            if calibrated_on == self.device.spec:
                return pred, meta
            self.log(
                f"latency: {path.name} was calibrated on {calibrated_on}, but the recipe's device is "
                f"{self.device.spec}: calibrating again"
            )
        refs = reference(space.spec, self.recipe.references)
        self.log(f"latency: measuring {len(refs)} reference architectures on {self.device.spec}")
        with self._bar("measuring references") as update:
            measure_archs(space, self.device, refs, self.run / MEASURED, update, log=self.log)
        rows = read_rows(self.run / MEASURED, space=space.spec, device=self.device.spec)
        rows[rows["arch"].isin([space.to_str(a) for a in refs])].to_csv(self.run / CALIBRATION, index=False)
        for line in calibrate(space.spec, str(self.run / CALIBRATION), str(path))["outliers"]:
            self.log(f"latency: warning: reference {line}; delete {CALIBRATION} and {PREDICTOR} to measure again")
        return predictors.load(path)

    def budget(self, space: Any, net: Any) -> tuple[float, dict[str, float]]:
        """The budget in ms, and the measured latency of the largest and smallest subnets."""
        ends = [net.largest(), net.smallest()]
        measured = measure_archs(space, self.device, ends, self.run / MEASURED, log=self.log)
        largest = measured[space.to_str(ends[0])]
        budget = self.recipe.budget_ms or (self.recipe.budget_fraction or DEFAULT_BUDGET_FRACTION) * largest
        return float(budget), measured

    def search(self, sn: SupernetRun, pred: Any, pred_meta: dict, objective: Objective) -> list[dict]:
        space, cfg = sn.net.space, self.recipe.search
        storage = cfg.storage or self.dir.default_storage
        acc = sn.accuracy(
            "val", int8=self.recipe.quantize.enabled and self.recipe.quantize.joint, bn_images=self.recipe.bn_images
        )
        predicted = latency_of(pred, pred_meta, space)

        def evaluate(arch: tuple) -> tuple[float, float]:
            return acc(arch), predicted(arch)

        if objective.kind == "budget":  # the search explores up to the verification margin; the device decides
            objective = Objective("budget", objective.budget_ms * (1 + self.recipe.verify.margin), objective.w)
        # under a budget, hwnas's strategies draw again for proposals predicted over it before spending accuracy
        constraint = (lambda arch: predicted(arch) <= objective.budget_ms) if objective.kind == "budget" else None

        self.log(
            f"search: {cfg.strategy}, objective {objective.kind}, {cfg.trials} candidates, study {cfg.study_name!r} "
            f"in {storage}"
        )
        with self._bar("searching") as update:
            study_key = {"device": self.device.spec, "predictor": pred_meta.get("fingerprint", {}).get("device", "")}
            study = run_search(
                space, evaluate, objective, cfg, storage, progress=update, key=study_key, constraint=constraint
            )
        return completed(study)

    def verify(self, space: Any, trials: list[dict], budget: float) -> tuple[dict | None, dict[str, float]]:
        """Measure the front's most accurate predicted-feasible candidates, best first, until one
        meets the budget when measured (at least `verify.top` are measured). When none of the front
        does, the other candidates predicted within the margin follow, most accurate first."""
        df = pd.DataFrame(trials).drop_duplicates("arch")
        cap = budget * (1 + self.recipe.verify.margin)
        on_front = np.zeros(len(df), dtype=bool)
        on_front[pareto_front(df["accuracy"], df["latency_ms"])] = True
        queue = df.assign(front=on_front)[df["latency_ms"] <= cap].sort_values(
            ["front", "accuracy"], ascending=False, kind="stable"
        )
        path = self.run / MEASURED
        measured: dict[str, float] = {}
        winner = None
        top = self.recipe.verify.top
        for start in range(0, len(queue), top):
            batch = queue.iloc[start : start + top]
            where = "the front" if batch["front"].all() else "the other candidates (no front candidate met the budget)"
            self.log(f"verify: measuring {len(batch)} candidates of {where} on {self.device.spec}")
            archs = [space.from_str(a) for a in batch["arch"]]
            measured.update(measure_archs(space, self.device, archs, path, log=self.log))
            for _, row in queue.iloc[: start + top].iterrows():
                if measured.get(row["arch"], np.inf) <= budget:
                    winner = {**row.drop("front").to_dict(), "measured_ms": measured[row["arch"]]}
                    break
            if winner is not None:
                break
        if winner is None:
            self.log(
                f"verify: no candidate predicted within {cap:.3f} ms measured within the budget of {budget:.3f} ms"
            )
        return winner, measured

    def export(self, sn: SupernetRun) -> dict[str, Any]:
        """The winner exported and checked (best/); result.json's `export` entry."""
        self.log(f"export: {self.recipe.export.format} to {self.run / BEST}")
        meta = export_run(self.run, self.recipe.export, sn=sn)
        return {"files": meta["files"], "check": meta["check"]}

    def quantize(self, sn: SupernetRun, winner: dict, budget: float) -> dict[str, Any]:
        """The winner's per-layer precision for the deployment device (quantized/, reused when its settings match);
        result.json's `quantized` entry."""
        q, device = self.recipe.quantize, self.deploy_device
        self.log(f"quantize: per-layer precision for {device.spec}, tolerance {q.tolerance} points")
        done = self.run / QUANTIZED / "model.json"
        previous = json.loads(done.read_text()) if done.exists() else {}
        same = {
            "arch": winner["arch"],
            "device": device.spec,
            "tolerance_points": q.tolerance,
            "method": q.method,
            "search": q.search,
            "activations": q.activations,
            "int8_format_setting": q.format,
            "calibration": q.calibration,
        }
        if all(previous.get(k) == v for k, v in same.items()):
            qr = previous
        else:
            config = QuantizeConfig(
                tolerance=q.tolerance,
                method=q.method,
                search=q.search,
                activations=q.activations,
                format=q.format,
                calibration=q.calibration,
            )
            qr = quantize_run(self.run, config, device.spec, winner["arch"], q.calib, log=self.log, sn=sn)
        return quantized_summary(qr, device.spec, q.joint, budget)

    def prepare(self) -> tuple[SupernetRun, Any, dict, float, Objective]:
        """What every search of the recipe needs: the supernet, the predictor calibrated to the device, the
        budget in ms and the objective (one process at a time per run directory: workers sharing one take turns)."""
        check_storage_opens(self.recipe.search.storage or self.dir.default_storage)
        with self.dir.lock(self.log):
            sn = self.supernet()
            space = sn.net.space
            pred, pred_meta = self.predictor(space)
            budget, ends = self.budget(space, sn.net)
        self.log(
            f"budget: {budget:.3f} ms on {self.device.spec} "
            f"(largest subnet measures {ends[space.to_str(sn.net.largest())]:.3f} ms)"
        )
        cfg = self.recipe.search
        return sn, pred, pred_meta, budget, Objective(cfg.objective, budget_ms=budget, w=cfg.soft_w)

    def search_worker(self) -> list[dict]:
        """`hwnas search`: one worker of the recipe's study; several may share one storage. Returns the study's
        finished candidates."""
        sn, pred, pred_meta, _, objective = self.prepare()
        return self.search(sn, pred, pred_meta, objective)

    @staticmethod
    def summary(result: dict[str, Any]) -> list[str]:
        """What the CLI prints of a finished run."""
        w = result["winner"]
        if not w:
            return [f"no candidate met the {result['budget_ms']:.3f} ms budget when measured"]
        verdict = separation_line(result) or trade_off_line(result)
        return [
            f"winner: test top-1 {w['test_top1']:.4f}, measured {w['measured_ms']:.3f} ms "
            f"(budget {result['budget_ms']:.3f} ms, predicted {w['predicted_ms']:.3f} ms)"
        ] + ([verdict] if verdict else [])

    def execute(self) -> dict[str, Any]:
        recipe, run = self.recipe, self.dir
        run.write_recipe(to_dict(recipe))
        sn, pred, pred_meta, budget, objective = self.prepare()
        trials = self.search(sn, pred, pred_meta, objective)
        with self.dir.lock(self.log):
            return self._finish(sn, pred, pred_meta, budget, trials)

    def _finish(self, sn: SupernetRun, pred: Any, pred_meta: dict, budget: float, trials: list[dict]) -> dict:
        """Verify, write the results, export, quantize and report."""
        recipe, run = self.recipe, self.dir
        winner, _ = self.verify(sn.net.space, trials, budget)
        measured = read_latencies(self.run / MEASURED, space=sn.net.space.spec, device=self.device.spec)
        result, front, pm = write_results(
            run, recipe, self.device, sn, Outcome(trials, measured, budget, winner), (pred, pred_meta)
        )
        run.write_result(result)
        if winner:
            result["export"] = self.export(sn)
            run.write_result(result)
        if winner and recipe.quantize.enabled:
            result["quantized"] = self.quantize(sn, winner, budget)
            run.write_result(result)
        write_markdown(run, result, recipe, front, pm)
        return result
