"""`hwnas bench search`: strategies compared at equal numbers of evaluated candidates on a trained
run, by the hypervolume of their accuracy-latency fronts, and by whether their winners meet the
budget when measured on the device; with a peer (`--peer ofa`), Once-for-All's own search beside them."""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import devices
import predictors
from nas.latency.calibration import latency_of
from nas.latency.profile import measure_archs
from nas.rundir import MEASURED, PREDICTOR
from nas.search import Objective, SearchConfig, completed, hypervolume, run_search
from nas.supernet.run import load_search_run

PEERS = ("ofa",)
MAX_TRIALS = 10  # with a peer, a strategy may propose up to this many times its accuracy evaluations


def _evaluations(rows: list[dict]) -> int:
    return sum(1 for r in rows if not math.isnan(r["accuracy"]))


def bench_search(
    run_dir: str,
    strategies: list[str],
    seeds: int,
    trials: int,
    population: int,
    log: Callable[[str], None] = print,
    progress: Any = None,
    peer: str | None = None,
) -> tuple[list[dict], dict]:
    """One row per strategy (and peer). Without a peer the strategies search for the accuracy-latency front
    (objective pareto); with one, every search looks for the most accurate subnet under the run's budget
    (objective budget, OFA's constraint), and a candidate predicted over the budget costs no accuracy
    evaluation (OFA's finder draws again instead): each search goes on until it has made `trials` of them."""
    if peer is not None and peer not in PEERS:
        raise ValueError(f"Unknown peer {peer!r}; known: {', '.join(PEERS)}")
    run = Path(run_dir)
    sn, result = load_search_run(run)
    if "budget_ms" not in result:
        raise ValueError(f"{run} has no finished search (no budget in result.json); run hwnas run first")
    space = sn.net.space
    pred, meta = predictors.load(run / PREDICTOR)
    budget = float(result["budget_ms"])
    acc, test = sn.accuracy("val"), sn.accuracy("test")
    predicted = latency_of(pred, meta, space)

    def evaluate(arch: tuple) -> tuple[float, float]:
        lat = predicted(arch)
        if peer is not None and lat > budget:
            return math.nan, lat
        return acc(arch), lat

    if peer == "ofa":
        from nas.bench.ofa_search import check_space

        check_space(space)
    if peer and predicted(sn.net.smallest()) > budget:
        raise ValueError(f"even the smallest subnet is predicted over the budget of {budget:.3f} ms: nothing to search")
    objective = Objective("budget", budget) if peer else Objective("pareto")
    constraint = (lambda arch: predicted(arch) <= budget) if peer else None  # as `hwnas run` searches a budget
    runs: dict[tuple[str, int], list[dict]] = {}
    names = list(strategies)
    with tempfile.TemporaryDirectory() as tmp:
        for strategy in strategies:
            for seed in range(seeds):
                log(f"{strategy}, seed {seed}: {trials} candidates")
                cfg = SearchConfig(
                    strategy=strategy,
                    trials=trials,
                    population=population,
                    seed=seed,
                    study_name=f"{strategy}-{seed}",
                    objective=objective.kind,
                )
                storage = f"sqlite:///{tmp}/bench.db"
                search = lambda: completed(
                    run_search(space, evaluate, objective, cfg, storage, progress=progress, constraint=constraint)
                )
                rows = search()
                while peer and _evaluations(rows) < trials and cfg.trials < MAX_TRIALS * trials:
                    cfg.trials += trials - _evaluations(rows)  # the study resumes: proposals over the budget were free
                    rows = search()
                runs[(strategy, seed)] = rows
    if peer == "ofa":
        from nas.bench.ofa_search import NAME, ofa_evolution

        names.append(NAME)
        for seed in range(seeds):
            log(f"{NAME} (ofa's EvolutionFinder), seed {seed}: {trials} candidates")
            scored = ofa_evolution(space, acc, predicted, budget, trials, population, seed)
            runs[(NAME, seed)] = [
                {"arch": space.to_str(a), "accuracy": acc(a), "latency_ms": predicted(a)} for a in scored
            ]
    evaluated = [r for rows in runs.values() for r in rows if not math.isnan(r["accuracy"])]
    ref_acc = float(np.min([r["accuracy"] for r in evaluated]))
    ref_lat = predicted(sn.net.largest()) * 1.05
    winners: dict[tuple[str, int], dict] = {}
    for key, rows in runs.items():
        feasible = [r for r in rows if r["latency_ms"] <= budget and not math.isnan(r["accuracy"])]
        if feasible:
            winners[key] = max(feasible, key=lambda r: (r["accuracy"], -r["latency_ms"]))
    device = devices.get(result["device"])
    archs = list(dict.fromkeys(w["arch"] for w in winners.values()))
    measured = measure_archs(space, device, [space.from_str(a) for a in archs], run / MEASURED)  # one group
    table = []
    for name in names:
        rows_of = [[r for r in runs[(name, s)] if not math.isnan(r["accuracy"])] for s in range(seeds)]

        def hv(ref_latency: float) -> list[float]:
            return [
                hypervolume([r["accuracy"] for r in rows], [r["latency_ms"] for r in rows], ref_acc, ref_latency)
                for rows in rows_of
            ]

        hv_all = hv(ref_lat)
        ws = [winners.get((name, s)) for s in range(seeds)]
        found = [w for w in ws if w]
        table.append(
            {
                "strategy": name,
                "hv_mean": float(np.mean(hv_all)),
                "hv_std": float(np.std(hv_all)),
                "hv_budget_mean": float(np.mean(hv(budget))),
                "best_feasible_acc": float(np.mean([w["accuracy"] for w in found] or [np.nan])),
                "best_accs": [w["accuracy"] if w else math.nan for w in ws],
                "test_acc": float(np.mean([test(space.from_str(w["arch"])) for w in found] or [np.nan])),
                "measured_ms": float(np.mean([measured[w["arch"]] for w in found] or [np.nan])),
                "winners_meet": sum(1 for w in found if measured[w["arch"]] <= budget),
                "winners": len(found),
                "evaluations": float(np.mean([len(rows) for rows in rows_of])),
                "proposals": float(np.mean([len(runs[(name, s)]) for s in range(seeds)])),
                "peer": name not in strategies,
                "distinct": float(np.mean([len({r["arch"] for r in runs[(name, s)]}) for s in range(seeds)])),
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
        "objective": objective.kind,
    }
    if peer:
        info["seed_wins"] = seed_wins(table, seeds)
    return table, info


def seed_wins(table: list[dict], seeds: int) -> dict[str, str]:
    """Per hwnas strategy against the peer (the last row): seeds where its winner's validation accuracy is at
    least the peer's, as 'k/seeds'."""
    peer = table[-1]["best_accs"]
    return {
        r["strategy"]: f"{sum(1 for a, b in zip(r['best_accs'], peer) if a >= b or math.isnan(b))}/{seeds}"
        for r in table[:-1]
    }
