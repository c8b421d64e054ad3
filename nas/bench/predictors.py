"""`hwnas bench predictors`: HELP's few-shot protocol on held-out devices, for every predictor."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

import predictors
from nas.latency.features import features
from nas.latency.tables import QUERY_RANGE, LatencyTable
from nas.metrics import rank_scores
from predictors.linear import LookupTableMixture

SPLIT_KEY = {"nasbench201": "nasbench201", "fbnet": "fbnet", "ofa_mbv3": "ofa"}
PUBLISHED = {
    "nasbench201": "HELP 0.932, BRP-NAS (3,200 samples) 0.805, FLOPs 0.787",
    "fbnet": "HELP 0.910, Meta-SGD 0.806, MAML 0.736",
    "ofa_mbv3": "n/a",
}
PREDICTORS = ("flops", "opcount", "roofline", "lut", "mlp", "gcn", "help", "hwnas")


# devices of the public tables that are one device under two names (outside-latency's README: Spearman 0.998)
SAME_HARDWARE = {"nnmeter_adreno640_gpu": "nnmeter_adreno630_gpu"}


def hardware(device: str) -> str:
    """'1080ti_32' -> '1080ti': devices that share hardware are held out together."""
    device = SAME_HARDWARE.get(device, device)
    head, _, tail = device.rpartition("_")
    return head if head and tail.isdigit() else device


def source(table: LatencyTable, device: str) -> str:
    """The group that measured `device`: the table it came from."""
    return Path(table.sources.get(device, "")).parent.name or table.sources.get(device, "")


def score(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """HELP's scoring: the query archs between the 10th and 90th percentile of the true latency."""
    lo, hi = np.percentile(true, [10, 90])
    keep = (true >= lo) & (true <= hi)
    p, t = pred[keep], true[keep]
    return rank_scores(p, t)


def splits(table: LatencyTable, space_name: str, which: str, splits_file: Path | None) -> list[tuple[str, list[str]]]:
    """(target, sources) pairs."""
    devs = table.devices
    if which == "help":
        if splits_file is None or not splits_file.exists():
            raise ValueError("the 'help' split needs splits.json next to the tables (--splits)")
        s = json.loads(splits_file.read_text())[SPLIT_KEY[space_name]]
        targets = [t for t in s["meta_valid"] if t in devs]
        sources = [d for d in s["meta_train"] if d in devs]
        if not targets or not sources:
            lacking, needed = (
                ("meta-validation", s["meta_valid"]) if not targets else ("meta-training", s["meta_train"])
            )
            raise ValueError(
                f"the 'help' split needs HELP's {lacking} devices ({', '.join(needed)}), "
                f"but the tables have {', '.join(devs)}; use --split loho or dissimilar for other tables"
            )
        return [(t, sources) for t in targets]
    kept = [d for d in devs if SAME_HARDWARE.get(d) not in devs]  # a device under two names is scored once
    if which == "loho":
        return [(t, [d for d in devs if hardware(d) != hardware(t)]) for t in kept]
    if which == "dissimilar":
        corr = np.array([[spearmanr(*_pair(table, a, b)).statistic for b in devs] for a in devs])
        mean = {
            d: np.mean([corr[i, j] for j in range(len(devs)) if hardware(devs[j]) != hardware(d)])
            for i, d in enumerate(devs)
        }
        targets = sorted(devs, key=mean.get)[: max(2, len(devs) // 4)]
        held = {hardware(t) for t in targets}
        return [(t, [d for d in devs if hardware(d) not in held]) for t in targets]
    if which == "loso":
        if len({source(table, d) for d in devs}) < 2:
            raise ValueError(
                "the 'loso' split (leave one source out) needs tables from two sources, e.g. "
                "../shared/data/help-latency/nasbench201.csv.gz ../shared/data/outside-latency/nasbench201.csv.gz"
            )
        return [(t, [d for d in devs if source(table, d) != source(table, t)]) for t in kept]
    raise ValueError(f"split must be one of help, loho, loso, dissimilar, but got {which!r}")


def _pair(table: LatencyTable, a: str, b: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = table.column(a), table.column(b)
    ok = ~np.isnan(x) & ~np.isnan(y)
    return x[ok], y[ok]


def run(
    space: Any,
    table: LatencyTable,
    which: str,
    names: Sequence[str] = PREDICTORS,
    n_ref: int = 10,
    splits_file: Path | None = None,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    q0, q1 = QUERY_RANGE[space.name]
    archs = [space.from_str(a) for a in table.archs]
    X, layout = features(space, archs)
    train_rows = table.index < q0  # HELP: meta-training only below the query range (-1: our own rows)
    pool = np.where((table.index >= 0) & (table.index < q0))[0]
    query = np.where((table.index >= q0) & (table.index < q1))[0]
    rows = []
    for target, sources in splits(table, space.name, which, splits_file):
        y = table.column(target)
        q = query[~np.isnan(y[query])]
        p = pool[~np.isnan(y[pool])]
        Ys = table.Y[train_rows][:, [table.devices.index(s) for s in sources]]
        trunk: dict[str, np.ndarray] = {}
        for name in names:
            pred = predictors.create(name, layout=layout)
            if trunk and name in ("mlp", "hwnas"):  # one trunk per split serves both
                pred.use_trunk(trunk)
                if name == "hwnas":
                    pred.tables_ = LookupTableMixture(layout).fit(X[train_rows], Ys).tables_
            else:
                pred.fit(X[train_rows], Ys)
                if name in ("mlp", "hwnas"):
                    trunk = pred.trunk()
            refs = p[pred.choose_references(X[p], n_ref)]
            pred.adapt(X[refs], y[refs])
            rows.append({"device": target, "predictor": name, **score(pred.predict(X[q]), y[q])})
        own = np.where((table.index >= 0) & ((table.index < q0) | (table.index >= q1)) & ~np.isnan(y))[0]
        rows.append({"device": target, "predictor": "ceiling", **score(ceiling(X, layout, own, y)(X[q]), y[q])})
        log(f"{target}: " + ", ".join(f"{r['predictor']} {r['spearman']:.3f}" for r in rows[-len(names) - 1 :]))
    for r in rows:
        r["source"] = source(table, r["device"])
    return rows


def ceiling(X: np.ndarray, layout: dict, rows: np.ndarray, y: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """What the device's own measurements allow: gradient-boosted trees on log latency, fitted on every measured row
    of the device outside the query range (thousands, not ten)."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    cols = [
        c
        for name in ("onehot", "counts", "agnostic", "costs", "executed")
        if name in layout
        for c in range(*layout[name])
    ]
    model = HistGradientBoostingRegressor(max_iter=300, random_state=0).fit(X[rows][:, cols], np.log(y[rows]))
    return lambda Z: np.exp(model.predict(Z[:, cols]))
