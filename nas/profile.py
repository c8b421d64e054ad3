"""Profiling: measure many architectures on a device, interleaved in groups with a drift anchor.

Rows are appended to a CSV as each group finishes; started again with the same arguments, a
profile measures only what the file does not hold yet.
"""
from __future__ import annotations

import csv
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from devices import Device, TimingPolicy
from devices.table import TableDevice

FINGERPRINT_COLUMNS = (
    "cpu_model", "cpu_cores", "cpu_threads", "cpu_int8", "os", "python", "torch", "onnxruntime",
    "hwnas", "threads", "gpu", "cuda", "tensorrt",
)
COLUMNS = (
    "space", "arch", "device", "latency_ms", "raw_ms", "spread_ms", "median_ms", "p10_ms", "p90_ms",
    "cv", "repeats", "rounds", "outliers", "anchor_ms", "anchor_ref_ms", "group", "timestamp",
) + FINGERPRINT_COLUMNS

ANCHOR_SEED = 20211206


def anchor_arch(space: Any) -> tuple:
    """A fixed architecture of the space, measured in every group to track drift."""
    return space.sample(np.random.default_rng(ANCHOR_SEED))


@dataclass
class ProfileState:
    """What an existing profile file holds for one (space, device) pair."""

    done: set[str]
    anchor_ref_ms: float | None
    groups: int


def read_state(path: Path, space_spec: str, device_spec: str) -> ProfileState:
    state = ProfileState(set(), None, 0)
    if not path.exists() or path.stat().st_size == 0:
        return state
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or tuple(reader.fieldnames) != COLUMNS:
                raise ValueError(
                    f"{path} exists but is not an hwnas profile (its columns are {reader.fieldnames}); "
                    "choose another --out or remove it"
                )
            for row in reader:
                if row["space"] != space_spec or row["device"] != device_spec:
                    continue
                state.done.add(row["arch"])
                if state.anchor_ref_ms is None and row["anchor_ref_ms"]:
                    state.anchor_ref_ms = float(row["anchor_ref_ms"])
                state.groups = max(state.groups, int(row["group"]) + 1)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise ValueError(f"cannot read profile file {path}: {err}") from None
    return state


def read_latencies(path: Path) -> dict[str, float]:
    """arch -> latency_ms of a measurements CSV (empty when the file does not exist yet)."""
    import pandas as pd

    if not path.exists():
        return {}
    df = pd.read_csv(path)
    return dict(zip(df["arch"].astype(str), df["latency_ms"].astype(float)))


def check_output(path: str | os.PathLike) -> None:
    """Fail now, with the file's name, if `path` cannot hold a profile."""
    path = Path(path)
    read_state(path, "", "")
    f, _ = _open_for_append(path)
    f.close()


def _round(value: float | None) -> float | str:
    return "" if value is None else round(value, 5)


def _open_for_append(path: Path) -> Any:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        new = not path.exists() or path.stat().st_size == 0
        f = path.open("a", newline="", encoding="utf-8")
    except OSError as err:
        raise ValueError(f"cannot write profile file {path}: {err.strerror}") from None
    writer = csv.DictWriter(f, fieldnames=COLUMNS)
    if new:
        writer.writeheader()
        f.flush()
    return f, writer


def profile(
    space: Any,
    device: Device,
    archs: Sequence[tuple],
    out: str | os.PathLike,
    group_size: int = 10,
    policy: TimingPolicy | None = None,
    anchor_ref_ms: float | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Measure every arch not yet in `out`; returns the rows written by this call.

    `latency_ms` is the raw latency rescaled by anchor_ref_ms / anchor_ms, so rows measured in
    other groups, sessions or days compare; `raw_ms` keeps what was measured.
    """
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, but got {group_size}")
    path = Path(out)
    space_spec = getattr(space, "spec", space.name)
    if isinstance(device, TableDevice):
        device.set_key(lambda s: space.to_str(space.from_str(s)))
    state = read_state(path, space_spec, device.spec)
    if anchor_ref_ms is None:
        anchor_ref_ms = state.anchor_ref_ms
    todo: list[tuple] = []
    seen: set[str] = set(state.done)
    for arch in archs:
        s = space.to_str(arch)
        if s not in seen:
            seen.add(s)
            todo.append(arch)
    if progress:
        progress(0, len(todo))
    if not todo:
        return []
    fingerprint = device.fingerprint()
    fp = {k: fingerprint.get(k, "") for k in FINGERPRINT_COLUMNS}
    anchor = [anchor_arch(space)] if device.drifts else []
    written: list[dict[str, Any]] = []
    f, writer = _open_for_append(path)
    try:
        for g, start in enumerate(range(0, len(todo), group_size)):
            group = anchor + todo[start : start + group_size]
            names = [space.to_str(a) for a in group]
            models, shapes = map(list, zip(*(space.latency_model(a) for a in group)))
            results = device.measure_many(models, shapes, names, policy=policy, anchor=0 if anchor else None)
            anchor_ms = results[0].latency_ms if anchor else None
            if anchor_ref_ms is None:
                anchor_ref_ms = anchor_ms
            scale = anchor_ref_ms / anchor_ms if anchor else 1.0
            names, results = names[len(anchor):], results[len(anchor):]
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            for name, m in zip(names, results):
                row = {
                    "space": space_spec, "arch": name, "device": device.spec,
                    "latency_ms": round(m.latency_ms * scale, 5), "raw_ms": round(m.latency_ms, 5),
                    "spread_ms": round(m.p90_ms - m.p10_ms, 5), "median_ms": round(m.median_ms, 5),
                    "p10_ms": round(m.p10_ms, 5), "p90_ms": round(m.p90_ms, 5), "cv": round(m.cv, 5),
                    "repeats": m.repeats, "rounds": m.rounds, "outliers": m.outliers,
                    "anchor_ms": _round(anchor_ms), "anchor_ref_ms": _round(anchor_ref_ms),
                    "group": state.groups + g, "timestamp": stamp, **fp,
                }
                writer.writerow(row)
                written.append(row)
            f.flush()
            os.fsync(f.fileno())
            if progress:
                progress(len(written), len(todo))
    finally:
        f.close()
    return written
