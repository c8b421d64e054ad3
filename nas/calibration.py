"""Meta-training bases, choosing references, calibrating to a device, predicting: what the CLI runs."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

import predictors
from nas.bench_predictors import QUERY_RANGE
from nas.features import features
from nas.latency_data import read_tables
from nas.profile import FINGERPRINT_COLUMNS
from nas.spaces import load_space, sample_archs

BASES = Path(predictors.__file__).resolve().parent / "bases"
MIN_SAMPLES = 5


def shipped_base(space_name: str) -> Path:
    path = BASES / f"{space_name}.json"
    if not path.exists():
        raise ValueError(f"hwnas ships no base predictor for space {space_name!r}; make one with hwnas meta-train and pass --base")
    return path


def meta_train(space_spec: str, tables: Sequence[str], out: str, predictor: str = "hwnas",
               all_rows: bool = False) -> dict[str, Any]:
    space = load_space(space_spec)
    table = read_tables(space, tables)
    rows = np.ones(len(table.archs), bool)
    if not all_rows and space.name in QUERY_RANGE:
        rows = table.index < QUERY_RANGE[space.name][0]
    archs = np.array(table.archs)[rows]
    X, layout = features(space, [space.from_str(a) for a in archs])
    pred = predictors.create(predictor, layout=layout).fit(X, table.Y[rows])
    meta = {"reference_archs": _fixed_references(pred, X, archs), "space": space.spec, "kind": "base",
            "devices": table.devices, "tables": [str(t) for t in tables], "rows": int(rows.sum())}
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
    return space if not spec or spec == getattr(space, "spec", space.name) else load_space(spec)


def load_base(base: str | None, space_name: str) -> tuple[Any, dict[str, Any], str]:
    path = str(base) if base else str(shipped_base(space_name))
    pred, meta = predictors.load(path)
    if meta.get("kind") != "base":
        raise ValueError(f"{path} is a calibrated predictor, not a base; pass a file made by hwnas meta-train")
    return pred, meta, path


def reference(space_spec: str, n: int, pool: Sequence[tuple] | None = None, base: str | None = None,
              pool_size: int = 3000, seed: int = 0) -> list[tuple]:
    space = load_space(space_spec)
    pred, meta, _ = load_base(base, space.name)
    if meta.get("reference_archs"):
        return [space.from_str(a) for a in meta["reference_archs"]]
    candidates = list(pool) if pool is not None else sample_archs(space, pool_size, seed)
    X, _ = features(space, candidates, feature_space(meta, space))
    return [candidates[i] for i in pred.choose_references(X, n)]


def read_measurements(space: Any, path: str, device: str | None = None) -> tuple[list[tuple], np.ndarray, dict[str, Any]]:
    """(archs, latencies, fingerprint) from a CSV with columns arch, latency_ms (extra columns allowed)."""
    try:
        df = pd.read_csv(path)
    except FileNotFoundError:
        raise ValueError(f"measurements file {path!r} does not exist") from None
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"cannot read measurements file {path!r}: {err}") from None
    missing = {"arch", "latency_ms"} - set(df.columns)
    if missing:
        raise ValueError(f"measurements file {path!r} lacks the column(s) {', '.join(sorted(missing))}")
    if "device" in df.columns:
        found = sorted(df["device"].astype(str).unique())
        if device is not None:
            df = df[df["device"] == device]
            if df.empty:
                raise ValueError(f"measurements file {path!r} has no rows of device {device!r}; it has {', '.join(found)}")
        elif len(found) > 1:
            raise ValueError(f"measurements file {path!r} holds {len(found)} devices ({', '.join(found)}); choose one with --device")
    archs = []
    for line, s in zip(df.index + 2, df["arch"].astype(str)):
        try:
            archs.append(space.from_str(s))
        except ValueError as err:
            raise ValueError(f"{path}:{line}: {err}") from None
    canon = [space.to_str(a) for a in archs]
    dupes = sorted({c for c in canon if canon.count(c) > 1})
    if dupes:
        raise ValueError(f"measurements file {path!r} lists architecture {dupes[0]!r} more than once")
    y = pd.to_numeric(df["latency_ms"], errors="coerce").to_numpy(float)
    bad = np.where(~(y > 0))[0]
    if len(bad):
        raise ValueError(f"{path}:{int(df.index[bad[0]]) + 2}: latency_ms must be a positive number, got {df['latency_ms'].iloc[bad[0]]!r}")
    fp = {c: df[c].iloc[0] for c in ("device",) + FINGERPRINT_COLUMNS if c in df.columns}
    return archs, y, {k: (v.item() if hasattr(v, "item") else v) for k, v in fp.items()}


def calibrate(space_spec: str, measurements: str, out: str, base: str | None = None,
              device: str | None = None) -> dict[str, Any]:
    space = load_space(space_spec)
    archs, y, fingerprint = read_measurements(space, measurements, device)
    if len(archs) < MIN_SAMPLES:
        raise ValueError(f"calibration needs at least {MIN_SAMPLES} measured architectures (10 recommended), but {measurements!r} has {len(archs)}")
    pred, base_meta, base_path = load_base(base, space.name)
    X, _ = features(space, archs, feature_space(base_meta, space))
    pred.adapt(X, y)
    meta = {"space": space.spec, "feature_space": base_meta.get("space", space.spec), "kind": "calibrated", "base": base_path,
            "base_devices": base_meta.get("devices", []),
            "fingerprint": fingerprint, "samples": len(archs), "measurements": str(measurements)}
    pred.save(out, meta)
    return meta


def predict(predictor_path: str, archs_file: str) -> tuple[list[str], np.ndarray]:
    from nas.spaces import read_archs

    pred, meta = predictors.load(predictor_path)
    if meta.get("kind") != "calibrated":
        raise ValueError(f"{predictor_path} is a base, not calibrated to a device; run hwnas calibrate first")
    space = load_space(meta["space"])
    archs = read_archs(space, archs_file)
    X, _ = features(space, archs, feature_space(meta, space))
    return [space.to_str(a) for a in archs], pred.predict(X)
