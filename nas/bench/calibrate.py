"""`hwnas bench calibrate`: the whole few-shot loop on a real device, scored on fresh architectures."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import predictors
from devices import Device
from nas.latency.calibration import feature_space, load_base
from nas.latency.features import features
from nas.latency.profile import profile
from nas.latency.tables import read_measurements
from nas.metrics import rank_scores
from search_spaces import load_space, sample_archs


def bench_calibrate(
    space_spec: str,
    device: Device,
    n_test: int = 60,
    n_ref: int = 10,
    base: str | None = None,
    seed: int = 1,
    names: tuple[str, ...] | None = None,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Default predictors: hwnas (from the base), roofline and flops; without a base for the space,
    roofline, opcount and flops. The references and the test architectures are two profiling runs into two files,
    as a user calibrates from one run and checks a budget against another: the milliseconds must agree across them."""
    space = load_space(space_spec)
    try:
        base_pred, base_meta, _ = load_base(base, space.name)
    except ValueError:
        if base is not None or (names and "hwnas" in names):
            raise
        base_pred = base_meta = None
    if names is None:
        names = ("hwnas", "roofline", "flops") if base_pred is not None else ("roofline", "opcount", "flops")
    pool = sample_archs(space, 3000, seed=seed)
    test = [a for a in sample_archs(space, n_test + n_ref + 50, seed=seed + 1000) if a not in set(pool)][:n_test]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cal, truth_csv = Path(tmp) / "cal.csv", Path(tmp) / "truth.csv"
        fspace = feature_space(base_meta, space) if "hwnas" in names else space  # the base's encoding
        Xp, layout = features(space, pool, fspace)

        def fresh(name: str) -> Any:
            return base_pred if name == "hwnas" else predictors.create(name, layout=layout)

        chosen = {name: [pool[i] for i in fresh(name).choose_references(Xp, n_ref)] for name in names}
        references = [a for refs in chosen.values() for a in refs]
        log(f"measuring {len(set(references))} references, then {len(test)} test architectures on {device.spec}")
        truth = {}
        for archs_, csv in ((references, cal), (test, truth_csv)):
            profile(space, device, archs_, csv)
            archs, y, _ = read_measurements(space, str(csv))
            truth.update({space.to_str(a): v for a, v in zip(archs, y)})
        Xt, _ = features(space, test, fspace)
        yt = np.array([truth[space.to_str(a)] for a in test])
        for name, refs in chosen.items():
            pred = fresh(name)
            Xr, _ = features(space, refs, fspace)
            pred.adapt(Xr, np.array([truth[space.to_str(a)] for a in refs]))
            p = pred.predict(Xt)
            rows.append({"predictor": name, **rank_scores(p, yt), "test_archs": len(test), "mean_ms": float(yt.mean())})
    return rows
