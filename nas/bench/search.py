"""`hwnas bench search`: strategies compared at equal numbers of evaluated candidates on a trained
run, by the hypervolume of their accuracy-latency fronts, and by whether their winners meet the
budget when measured on the device."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import devices
import predictors
from nas.latency.calibration import feature_space
from nas.latency.features import features
from nas.latency.profile import measure_archs
from nas.rundir import MEASURED, PREDICTOR
from nas.search import Objective, SearchConfig, completed, hypervolume, run_search
from nas.supernet.run import load_search_run


def bench_search(
    run_dir: str,
    strategies: list[str],
    seeds: int,
    trials: int,
    population: int,
    log: Callable[[str], None] = print,
    progress: Any = None,
) -> tuple[list[dict], dict]:
    run = Path(run_dir)
    sn, result = load_search_run(run)
    space = sn.net.space
    pred, meta = predictors.load(run / PREDICTOR)
    fspace = feature_space(meta, space)
    budget = float(result["budget_ms"])
    acc = sn.accuracy("val")
    latency: dict[str, float] = {}

    def evaluate(arch: tuple) -> tuple[float, float]:
        key = space.to_str(arch)
        if key not in latency:
            latency[key] = float(pred.predict(features(space, [arch], fspace)[0])[0])
        return acc(arch), latency[key]

    runs: dict[tuple[str, int], list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for strategy in strategies:
            for seed in range(seeds):
                log(f"{strategy}, seed {seed}: {trials} candidates")
                cfg = SearchConfig(
                    strategy=strategy, trials=trials, population=population, seed=seed, study_name=f"{strategy}-{seed}"
                )
                study = run_search(
                    space, evaluate, Objective("pareto"), cfg, f"sqlite:///{tmp}/bench.db", progress=progress
                )
                runs[(strategy, seed)] = completed(study)
    all_acc = [r["accuracy"] for rows in runs.values() for r in rows]
    ref_acc = float(np.min(all_acc))
    ref_lat = evaluate(sn.net.largest())[1] * 1.05
    winners: dict[tuple[str, int], dict] = {}
    for key, rows in runs.items():
        feasible = [r for r in rows if r["latency_ms"] <= budget]
        if feasible:
            winners[key] = max(feasible, key=lambda r: (r["accuracy"], -r["latency_ms"]))
    device = devices.get(result["device"])
    measured = measure_archs(space, device, [space.from_str(w["arch"]) for w in winners.values()], run / MEASURED)
    table = []
    for strategy in strategies:
        hv = [
            hypervolume(
                [r["accuracy"] for r in runs[(strategy, s)]],
                [r["latency_ms"] for r in runs[(strategy, s)]],
                ref_acc,
                ref_lat,
            )
            for s in range(seeds)
        ]
        ws = [winners.get((strategy, s)) for s in range(seeds)]
        meets = sum(1 for w in ws if w is not None and measured[w["arch"]] <= budget)
        table.append(
            {
                "strategy": strategy,
                "hv_mean": float(np.mean(hv)),
                "hv_std": float(np.std(hv)),
                "best_feasible_acc": float(np.mean([w["accuracy"] for w in ws if w] or [np.nan])),
                "winners_meet": meets,
                "winners": sum(1 for w in ws if w),
                "distinct": float(np.mean([len({r["arch"] for r in runs[(strategy, s)]}) for s in range(seeds)])),
            }
        )
    info = {
        "budget_ms": budget,
        "ref_accuracy": ref_acc,
        "ref_latency_ms": ref_lat,
        "trials": trials,
        "seeds": seeds,
        "device": result["device"],
        "evaluated": acc.misses,
        "cached": acc.hits,
    }
    return table, info
