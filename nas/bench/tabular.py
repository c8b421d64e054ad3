"""`hwnas bench tabular`: hardware-aware search scored where the truth is known. Accuracy comes from a tabular
benchmark (NAS-Bench-201's trained accuracies), each device is replayed from its measured latency table, and each
search runs as `hwnas run` does: ten references measured, the predictor calibrated on them (its base meta-trained
without the device's hardware), a search under the budget with a fixed number of accuracy queries, the most
accurate candidates verified on the device until one meets the budget. The winner is scored exactly: its true
accuracy and latency, and its regret (the best true accuracy within the budget minus the winner's)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna

import predictors
from nas.accuracy import AccuracyTable, load_accuracy_table
from nas.bench.peers import need
from nas.bench.predictors import hardware
from nas.latency.features import features
from nas.latency.tables import QUERY_RANGE, LatencyTable, read_tables
from nas.lm.verdicts import paired_verdict
from nas.search import Objective, SearchConfig, completed, run_search
from search_spaces import load_space

OFA = "ofa-evolution"  # Once-for-All's EvolutionFinder (`.[peers]`), on the space's genes
STRATEGIES = ("surrogate", "evolution", "nsga2", "random", "optuna-tpe", "optuna-nsga2", OFA)
HWNAS_OWN = ("surrogate", "evolution", "nsga2", "random")  # ours draw again for proposals predicted over the budget
ABLATIONS = ("true-latency", "flops")  # the default strategy with the device's true latency; with a FLOPs proxy
DEFAULT = "surrogate"
MARGIN = 0.1  # the search explores candidates predicted up to 10% over the budget, as `hwnas run` (verify.margin)
MAX_PROPOSALS = 20  # a search may propose up to this many times its accuracy queries (over-budget ones are free)
VERIFY_TOP = 5  # candidates measured per verification round, as the recipe's verify.top


@dataclass
class Device:
    """One replayed device: its true latency of every measured architecture and the predictors calibrated on its
    ten references (hwnas's base adapted, and the FLOPs proxy on the same references)."""

    name: str
    true: dict[str, float]
    predicted: dict[str, float]
    flops: dict[str, float]


def _calibrated(space: Any, table: LatencyTable, X: np.ndarray, layout: dict, target: str, refs: int) -> Device:
    """Meta-train hwnas's base on the devices of other hardware (rows below the query range), choose `refs`
    references among the device's measured architectures, calibrate, and predict every measured one."""
    y = table.column(target)
    measured = np.flatnonzero(~np.isnan(y))
    sources = [j for j, d in enumerate(table.devices) if hardware(d) != hardware(target)]
    train = table.index < QUERY_RANGE.get(space.name, (np.inf,))[0]
    base = predictors.create("hwnas", layout=layout).fit(X[train], table.Y[train][:, sources])
    chosen = measured[base.choose_references(X[measured], refs)]
    base.adapt(X[chosen], y[chosen])
    flops = predictors.create("flops", layout=layout).adapt(X[chosen], y[chosen])
    names = [table.archs[i] for i in measured]
    return Device(
        target,
        dict(zip(names, y[measured].tolist())),
        dict(zip(names, base.predict(X[measured]).tolist())),
        dict(zip(names, flops.predict(X[measured]).tolist())),
    )


def _evaluated(
    space: Any,
    acc: AccuracyTable,
    latency: dict[str, float],
    true: dict[str, float],
    believed_budget: float,
    strategy: str,
    queries: int,
    population: int,
    seed: int,
) -> tuple[list[dict], int]:
    """The candidates a search evaluates, in order (at most `queries`, each believed within `believed_budget`;
    a cell the device never ran is never evaluated), and how many it proposed."""

    if strategy == OFA:
        from nas.bench.ofa_search import ofa_gene_evolution

        def believed(arch: tuple) -> float:
            key = space.to_str(arch)
            return latency.get(key, math.inf) if key in true else math.inf

        archs, drawn = ofa_gene_evolution(
            space,
            lambda a: acc(space.to_str(a)),
            believed,
            believed_budget,
            queries,
            population,
            seed,
            draws=MAX_PROPOSALS * queries * population,
        )
        return [{"arch": key, "accuracy": acc(key)} for key in map(space.to_str, archs)], drawn

    spent: list[str] = []

    def evaluate(arch: tuple) -> tuple[float, float]:
        key = space.to_str(arch)
        ms = latency.get(key, math.inf)
        if ms > believed_budget or key not in true:  # free: not spent on accuracy
            return math.nan, ms
        spent.append(key)
        return acc(key), ms

    constraint = (
        (lambda arch: latency.get(space.to_str(arch), math.inf) <= believed_budget) if strategy in HWNAS_OWN else None
    )
    cfg = SearchConfig(
        strategy=strategy, trials=MAX_PROPOSALS * queries, population=population, seed=seed, objective="budget"
    )
    study = run_search(
        space,
        evaluate,
        Objective("budget", believed_budget),
        cfg,
        optuna.storages.InMemoryStorage(),
        constraint=constraint,
        stop=lambda: len(spent) >= queries,
    )
    done = completed(study)
    return [r for r in done if not math.isnan(r["accuracy"])][:queries], len(done)


def search_once(
    space: Any,
    acc: AccuracyTable,
    latency: dict[str, float],
    true: dict[str, float],
    budget: float,
    strategy: str,
    queries: int,
    population: int,
    seed: int,
    margin: float = MARGIN,
) -> dict[str, Any]:
    """One search as `hwnas run` makes it: `latency` is what the search believes (a calibrated predictor, or the
    truth for the ablation), `queries` accuracy evaluations of candidates believed within the budget (times
    1 + `margin`, the predictor's error), then verification on the device (`true`): the most accurate candidates,
    best first, until one meets the budget when measured."""
    evaluated, proposals = _evaluated(
        space, acc, latency, true, budget * (1 + margin), strategy, queries, population, seed
    )
    queue = sorted({r["arch"]: r for r in evaluated}.values(), key=lambda r: -r["accuracy"])
    believed = queue[0] if queue else None
    winner, verified = None, 0
    for start in range(0, len(queue), VERIFY_TOP):
        verified += len(queue[start : start + VERIFY_TOP])
        winner = next((r for r in queue[: start + VERIFY_TOP] if true[r["arch"]] <= budget), None)
        if winner:
            break
    best = acc.best_within(true, budget)
    curve, incumbent = [], -math.inf
    for r in evaluated:  # regret after each query: the best candidate so far that the device verifies
        if true[r["arch"]] <= budget:
            incumbent = max(incumbent, r["accuracy"])
        curve.append(best - incumbent if incumbent > -math.inf else math.nan)
    out = {
        "curve": curve,
        "queries": len(evaluated),
        "proposals": proposals,
        "verified": verified,
        "unverified_meets": bool(believed and true[believed["arch"]] <= budget),
        "best_acc": best,
    }
    if winner is None:
        return {**out, "winner": None, "acc": math.nan, "true_ms": math.nan, "meets": False, "regret": math.nan}
    w = winner["arch"]
    return {**out, "winner": w, "acc": acc(w), "true_ms": true[w], "meets": true[w] <= budget, "regret": best - acc(w)}


def bench_tabular(
    latency_tables: Sequence[str],
    accuracy: str = "table:nasbench201:cifar10",
    space_spec: str = "nasbench201",
    devices: Sequence[str] | None = None,
    quantiles: Sequence[float] = (0.1, 0.3, 0.5),
    seeds: int = 3,
    queries: int = 100,
    strategies: Sequence[str] = STRATEGIES,
    ablations: bool = True,
    population: int = 20,
    refs: int = 10,
    log: Callable[[str], None] = print,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[dict], dict]:
    """One row per (device, budget quantile, seed, method); and the run's settings."""
    for q in quantiles:
        if not 0 < q < 1:
            raise ValueError(f"budget quantiles must lie in (0, 1), but got {q}")
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        raise ValueError(f"Unknown search strategy {unknown[0]!r}; known: {', '.join(STRATEGIES)}")
    if OFA in strategies:
        need("ofa", "ofa.nas.search_algorithm")  # before any device is calibrated: one line saying what to install
    space = load_space(space_spec)
    acc = load_accuracy_table(accuracy, space)
    table = read_tables(space, latency_tables)
    targets = list(devices) if devices else [d for d in table.devices if d != "nnmeter_adreno640_gpu"]
    for d in targets:
        table.column(d)  # an unknown device: one line naming the ones the tables have
    X, layout = features(space, [space.from_str(a) for a in table.archs])
    methods = [*strategies, *(f"{DEFAULT}+{a}" for a in ABLATIONS if ablations)]
    total, done, rows = len(targets) * len(quantiles) * seeds * len(methods), 0, []
    for target in targets:
        log(f"{target}: meta-training without its hardware, ten references, calibration")
        dev = _calibrated(space, table, X, layout, target, refs)
        for q in quantiles:
            budget = float(np.quantile(list(dev.true.values()), q))
            for seed in range(seeds):
                for method in methods:
                    strategy, _, ablation = method.partition("+")
                    belief = (
                        dev.true if ablation == "true-latency" else dev.flops if ablation == "flops" else dev.predicted
                    )
                    r = search_once(space, acc, belief, dev.true, budget, strategy, queries, population, seed)
                    rows.append(
                        {"device": target, "quantile": q, "budget_ms": budget, "seed": seed, "method": method, **r}
                    )
                    done += 1
                    if progress:
                        progress(done, total)
    info = {"accuracy": acc.source, "queries": queries, "seeds": seeds, "quantiles": list(quantiles), "refs": refs}
    return rows, info


def plot_regret(rows: list[dict], methods: Sequence[str], path: Any) -> None:
    """Mean regret (verified incumbent) against accuracy queries, one line per method and budget quantile."""
    from nas.plots import pyplot

    plt = pyplot()

    quantiles = sorted({r["quantile"] for r in rows})
    fig, axes = plt.subplots(1, len(quantiles), figsize=(4.5 * len(quantiles), 3.6), squeeze=False)
    for ax, q in zip(axes[0], quantiles):
        for m in methods:
            curves = [r["curve"] for r in rows if r["method"] == m and r["quantile"] == q and r["curve"]]
            if not curves:
                continue
            n = max(len(c) for c in curves)  # a search that ran out of proposals keeps its last regret
            with warnings.catch_warnings():  # early queries where no run has a verified candidate yet
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean([[*c, *[c[-1]] * (n - len(c))] for c in curves], axis=0)
            ax.plot(np.arange(1, n + 1), mean, label=m)
        ax.set(title=f"budget: latency quantile {q}", xlabel="accuracy queries", ylabel="mean regret (points)")
        ax.set_yscale("log")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def reference_method(rows: list[dict], methods: Sequence[str]) -> str:
    """The method the others are compared with: the default strategy, or the first method when it did not run."""
    return DEFAULT if any(r["method"] == DEFAULT for r in rows) else methods[0]


def summary(rows: list[dict], methods: Sequence[str]) -> list[dict]:
    """Per method and budget quantile: mean regret, winners within the budget, and the paired verdict of the
    default strategy (the first method when the default did not run) against it over every (device, seed) pair
    (sign test; tied pairs dropped)."""
    out = []
    by = {(r["method"], r["quantile"], r["device"], r["seed"]): r for r in rows}
    ref = reference_method(rows, methods)
    for q in sorted({r["quantile"] for r in rows}):
        for m in methods:
            mine = [r for r in rows if r["method"] == m and r["quantile"] == q]
            pairs = [(by[(ref, q, r["device"], r["seed"])]["regret"], r["regret"]) for r in mine]
            pairs = [(a, b) for a, b in pairs if not (math.isnan(a) or math.isnan(b)) and a != b]
            verdict = paired_verdict(*zip(*pairs)) if pairs and m != ref else "-"
            out.append(
                {
                    "quantile": q,
                    "method": m,
                    "regret": float(np.nanmean([r["regret"] for r in mine])),
                    "meets_pct": 100.0 * sum(r["meets"] for r in mine) / len(mine),
                    "unverified_meets_pct": 100.0 * sum(r["unverified_meets"] for r in mine) / len(mine),
                    "found": sum(r["winner"] is not None for r in mine),
                    "runs": len(mine),
                    "default_vs": verdict,
                }
            )
    return out
