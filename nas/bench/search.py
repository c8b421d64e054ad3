"""`hwnas bench search`: strategies compared at equal numbers of evaluated candidates on a trained
run, by the hypervolume of their accuracy-latency fronts, and by whether their winners meet the
budget when measured on the device; with a peer (`--peer ofa`), Once-for-All's own search beside them."""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
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


@dataclass
class _Bench:
    """What every search of the bench reads: the run's supernet, its budget, the calibrated predictor and the
    accuracy of a subnet on the validation and test splits."""

    run: Path
    sn: Any
    result: dict
    budget: float
    predicted: Callable[[tuple], float]
    acc: Any
    test: Any

    @property
    def space(self) -> Any:
        return self.sn.net.space


def _open(run_dir: str, peer: str | None) -> _Bench:
    if peer is not None and peer not in PEERS:
        raise ValueError(f"Unknown peer {peer!r}; known: {', '.join(PEERS)}")
    run = Path(run_dir)
    sn, result = load_search_run(run)
    if "budget_ms" not in result:
        raise ValueError(f"{run} has no finished search (no budget in result.json); run hwnas run first")
    pred, meta = predictors.load(run / PREDICTOR)
    bench = _Bench(
        run,
        sn,
        result,
        float(result["budget_ms"]),
        latency_of(pred, meta, sn.net.space),
        sn.accuracy("val"),
        sn.accuracy("test"),
    )
    if peer == "ofa":
        from nas.bench.ofa_search import check_space

        check_space(bench.space)
    if peer and bench.predicted(sn.net.smallest()) > bench.budget:
        raise ValueError(
            f"even the smallest subnet is predicted over the budget of {bench.budget:.3f} ms: nothing to search"
        )
    return bench


def _search(
    b: _Bench, strategy: str, seed: int, trials: int, population: int, peer: str | None, storage: str, progress: Any
) -> list[dict]:
    """One strategy's search with one seed. With a peer, a candidate predicted over the budget costs no accuracy
    evaluation, and the study resumes until it has made `trials` of them."""

    def evaluate(arch: tuple) -> tuple[float, float]:
        lat = b.predicted(arch)
        if peer is not None and lat > b.budget:
            return math.nan, lat
        return b.acc(arch), lat

    objective = Objective("budget", b.budget) if peer else Objective("pareto")
    constraint = (lambda arch: b.predicted(arch) <= b.budget) if peer else None  # as `hwnas run` searches a budget
    cfg = SearchConfig(
        strategy=strategy,
        trials=trials,
        population=population,
        seed=seed,
        study_name=f"{strategy}-{seed}",
        objective=objective.kind,
    )
    search = lambda: completed(
        run_search(b.space, evaluate, objective, cfg, storage, progress=progress, constraint=constraint)
    )
    rows = search()
    while peer and _evaluations(rows) < trials and cfg.trials < MAX_TRIALS * trials:
        cfg.trials += trials - _evaluations(rows)  # the study resumes: proposals over the budget were free
        rows = search()
    return rows


def _winners(b: _Bench, runs: dict[tuple[str, int], list[dict]]) -> dict[tuple[str, int], dict]:
    """Each search's most accurate candidate within the budget (as predicted)."""
    winners = {}
    for key, rows in runs.items():
        feasible = [r for r in rows if r["latency_ms"] <= b.budget and not math.isnan(r["accuracy"])]
        if feasible:
            winners[key] = max(feasible, key=lambda r: (r["accuracy"], -r["latency_ms"]))
    return winners


def _row(
    b: _Bench, name: str, runs: dict, winners: dict, measured: dict, seeds: int, ref_acc: float, ref_lat: float
) -> dict:
    """One strategy's row: hypervolumes (whole range and under the budget), its winners' accuracy, test accuracy
    and measured latency."""
    rows_of = [[r for r in runs[(name, s)] if not math.isnan(r["accuracy"])] for s in range(seeds)]

    def hv(ref_latency: float) -> list[float]:
        return [
            hypervolume([r["accuracy"] for r in rows], [r["latency_ms"] for r in rows], ref_acc, ref_latency)
            for rows in rows_of
        ]

    hv_all = hv(ref_lat)
    ws = [winners.get((name, s)) for s in range(seeds)]
    found = [w for w in ws if w]
    return {
        "strategy": name,
        "hv_mean": float(np.mean(hv_all)),
        "hv_std": float(np.std(hv_all)),
        "hv_budget_mean": float(np.mean(hv(b.budget))),
        "best_feasible_acc": float(np.mean([w["accuracy"] for w in found] or [np.nan])),
        "best_accs": [w["accuracy"] if w else math.nan for w in ws],
        "test_acc": float(np.mean([b.test(b.space.from_str(w["arch"])) for w in found] or [np.nan])),
        "measured_ms": float(np.mean([measured[w["arch"]] for w in found] or [np.nan])),
        "winners_meet": sum(1 for w in found if measured[w["arch"]] <= b.budget),
        "winners": len(found),
        "evaluations": float(np.mean([len(rows) for rows in rows_of])),
        "proposals": float(np.mean([len(runs[(name, s)]) for s in range(seeds)])),
        "distinct": float(np.mean([len({r["arch"] for r in runs[(name, s)]}) for s in range(seeds)])),
    }


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
    b = _open(run_dir, peer)
    runs: dict[tuple[str, int], list[dict]] = {}
    names = list(strategies)
    with tempfile.TemporaryDirectory() as tmp:
        for strategy in strategies:
            for seed in range(seeds):
                log(f"{strategy}, seed {seed}: {trials} candidates")
                storage = f"sqlite:///{tmp}/bench.db"
                runs[(strategy, seed)] = _search(b, strategy, seed, trials, population, peer, storage, progress)
    if peer == "ofa":
        from nas.bench.ofa_search import NAME, ofa_evolution

        names.append(NAME)
        for seed in range(seeds):
            log(f"{NAME} (ofa's EvolutionFinder), seed {seed}: {trials} candidates")
            scored = ofa_evolution(b.space, b.acc, b.predicted, b.budget, trials, population, seed)
            runs[(NAME, seed)] = [
                {"arch": b.space.to_str(a), "accuracy": b.acc(a), "latency_ms": b.predicted(a)} for a in scored
            ]
    evaluated = [r for rows in runs.values() for r in rows if not math.isnan(r["accuracy"])]
    ref_acc = float(np.min([r["accuracy"] for r in evaluated]))
    ref_lat = b.predicted(b.sn.net.largest()) * 1.05
    winners = _winners(b, runs)
    archs = list(dict.fromkeys(w["arch"] for w in winners.values()))
    device = devices.get(b.result["device"])
    measured = measure_archs(b.space, device, [b.space.from_str(a) for a in archs], b.run / MEASURED)  # one group
    table = [
        {**_row(b, name, runs, winners, measured, seeds, ref_acc, ref_lat), "peer": name not in strategies}
        for name in names
    ]
    info = {
        "budget_ms": b.budget,
        "ref_accuracy": ref_acc,
        "ref_latency_ms": ref_lat,
        "trials": trials,
        "seeds": seeds,
        "device": b.result["device"],
        "evaluated": b.acc.misses,
        "cached": b.acc.hits,
        "objective": "budget" if peer else "pareto",
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
