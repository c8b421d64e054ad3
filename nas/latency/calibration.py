"""Meta-training bases, choosing references, calibrating to a device, predicting: what the CLI runs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import predictors
from nas.latency.features import features
from nas.latency.tables import QUERY_RANGE, read_measurements, read_tables
from search_spaces import load_space, sample_archs

BASES = Path(predictors.__file__).resolve().parent / "bases"
MIN_SAMPLES = 5


def shipped_base(space_name: str) -> Path:
    path = BASES / f"{space_name}.json"
    if not path.exists():
        raise ValueError(
            f"hwnas ships no base predictor for space {space_name!r}; make one with hwnas meta-train and pass --base"
        )
    return path


def meta_train(
    space_spec: str, tables: Sequence[str], out: str, predictor: str = "hwnas", all_rows: bool = False
) -> dict[str, Any]:
    space = load_space(space_spec)
    table = read_tables(space, tables)
    rows = np.ones(len(table.archs), bool)
    if not all_rows and space.name in QUERY_RANGE:
        rows = table.index < QUERY_RANGE[space.name][0]
    archs = np.array(table.archs)[rows]
    X, layout = features(space, [space.from_str(a) for a in archs])
    pred = predictors.create(predictor, layout=layout).fit(X, table.Y[rows])
    meta = {
        "reference_archs": _fixed_references(pred, X, archs),
        "space": space.spec,
        "kind": "base",
        "devices": table.devices,
        "tables": [str(t) for t in tables],
        "rows": int(rows.sum()),
    }
    pred.save(out, meta)
    return meta


def _fixed_references(pred: Any, X: np.ndarray, archs: np.ndarray) -> list[str]:
    """The architectures of a predictor whose references are fixed at meta-training (HELP)."""
    if getattr(pred, "ref_X_", None) is None:
        return []
    return [str(archs[i]) for i in pred.choose_references(X, len(pred.ref_X_))]


def feature_space(meta: dict[str, Any], space: Any) -> Any:
    """The space whose encoding a predictor was fitted on (a base may come from another variant)."""
    spec = meta.get("feature_space") or meta.get("space")
    return space if not spec or spec == space.spec else load_space(spec)


def latency_of(pred: Any, meta: dict[str, Any], space: Any) -> Callable[[tuple], float]:
    """A calibrated predictor's latency of one architecture, remembered by its string (a search asks again for
    the same ones: the budget check of a proposal, then its trial)."""
    fspace, known = feature_space(meta, space), {}

    def latency(arch: tuple) -> float:
        key = space.to_str(arch)
        if key not in known:
            known[key] = float(pred.predict(features(space, [arch], fspace)[0])[0])
        return known[key]

    return latency


def load_base(base: str | None, space_name: str) -> tuple[Any, dict[str, Any], str]:
    path = str(base) if base else str(shipped_base(space_name))
    pred, meta = predictors.load(path)
    if meta.get("kind") != "base":
        raise ValueError(f"{path} is a calibrated predictor, not a base; pass a file made by hwnas meta-train")
    return pred, meta, path


def check_layout(pred: Any, layout: dict[str, Any], space: Any, path: str | Path) -> None:
    """Every block of the predictor's layout sits where `space`'s features (`layout`) put it (an older file may lack
    newer blocks)."""
    for name, where in (pred.layout or {}).items():
        if layout.get(name) != list(where):
            raise ValueError(
                f"{path}: its feature layout does not fit space {space.spec!r} ({name}: {list(where)} in the file, "
                f"{layout.get(name)} for the space): a predictor of another space or version"
            )


def check_fits(pred: Any, meta: dict[str, Any], space: Any, path: str | Path) -> None:
    """A loaded calibrated predictor reads `space`'s features (`check_layout`), and a prediction of one architecture
    runs and is finite."""
    X, layout = features(space, sample_archs(space, 1, 0), feature_space(meta, space))
    check_layout(pred, layout, space, path)
    try:
        y = np.asarray(pred.predict(X), dtype=float)
    except (ValueError, IndexError, TypeError, AttributeError) as err:
        raise ValueError(f"{path}: its weights do not fit its layout ({str(err).splitlines()[0]})") from None
    if y.shape != (1,) or not np.isfinite(y).all():
        raise ValueError(f"{path}: it predicts {y.tolist()} ms for an architecture of {space.spec!r}")


def reference(
    space_spec: str,
    n: int,
    pool: Sequence[tuple] | None = None,
    base: str | None = None,
    pool_size: int = 3000,
    seed: int = 0,
) -> list[tuple]:
    space = load_space(space_spec)
    pred, meta, _ = load_base(base, space.name)
    if meta.get("reference_archs"):
        return [space.from_str(a) for a in meta["reference_archs"]]
    candidates = list(pool) if pool is not None else sample_archs(space, pool_size, seed)
    X, _ = features(space, candidates, feature_space(meta, space))
    return [candidates[i] for i in pred.choose_references(X, n)]


def calibrate(
    space_spec: str,
    measurements: str,
    out: str,
    base: str | None = None,
    device: str | None = None,
    accept_noisy: bool = False,
) -> dict[str, Any]:
    """Adapt a base to a device from its measured rows; rows flagged noisy are refused unless `accept_noisy`."""
    space = load_space(space_spec)
    archs, y, fingerprint = read_measurements(space, measurements, device, accept_noisy)
    if len(archs) < MIN_SAMPLES:
        raise ValueError(
            f"calibration needs at least {MIN_SAMPLES} measured architectures (10 recommended), but {measurements!r} "
            f"has {len(archs)}"
        )
    pred, base_meta, base_path = load_base(base, space.name)
    X, layout = features(space, archs, feature_space(base_meta, space))
    check_layout(pred, layout, space, base_path)
    outliers = outlier_rows(X[:, layout["agnostic"][0]], y)
    pred.adapt(X, y)
    meta = {
        "space": space.spec,
        "feature_space": base_meta.get("space", space.spec),
        "kind": "calibrated",
        "base": base_path,
        "base_devices": base_meta.get("devices", []),
        "fingerprint": fingerprint,
        "samples": len(archs),
        "measurements": str(measurements),
        "outliers": [
            f"{space.to_str(archs[i])} at {y[i]:g} ms is {ratio:.0f}x the others' time per multiply-add"
            if ratio >= 1
            else f"{space.to_str(archs[i])} at {y[i]:g} ms is 1/{1 / ratio:.0f} of the others' time per multiply-add"
            for i, ratio in outliers
        ],
    }
    pred.save(out, meta)
    return meta


# a reference whose time per multiply-add is this far from the others' median (either way) is named: a real
# device spreads it a few times between architectures (memory-bound layers, launch overheads), not 30x
OUTLIER_FACTOR = 30.0


def outlier_rows(mflops: np.ndarray, y: np.ndarray) -> list[tuple[int, float]]:
    """(row, ratio to the median) of the measured rows whose ms per MFLOP is OUTLIER_FACTOR off the median."""
    per = np.asarray(y, float) / np.maximum(np.asarray(mflops, float), 1e-6)
    if len(per) < 3:
        return []
    out = []
    for i in range(len(per)):
        ratio = per[i] / np.median(np.delete(per, i))
        if not 1 / OUTLIER_FACTOR <= ratio <= OUTLIER_FACTOR:
            out.append((i, float(ratio)))
    return out


def predict(predictor_path: str, archs_file: str) -> tuple[list[str], np.ndarray]:
    from search_spaces import read_archs

    pred, meta = predictors.load(predictor_path)
    if meta.get("kind") != "calibrated":
        raise ValueError(f"{predictor_path} is a base, not calibrated to a device; run hwnas calibrate first")
    space = load_space(meta["space"])
    check_fits(pred, meta, space, predictor_path)
    archs = read_archs(space, archs_file)
    X, _ = features(space, archs, feature_space(meta, space))
    return [space.to_str(a) for a in archs], pred.predict(X)
