"""Profiling: measure many architectures on a device, interleaved in groups with a drift anchor.

Rows are appended to a CSV as each group finishes; started again with the same arguments, a
profile measures only what the file does not hold yet.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from devices import Device, TimingPolicy
from nas.latency.tables import FINGERPRINT_COLUMNS, open_for_append, read_latencies, read_state, rounded

ANCHOR_SEED = 20211206


def anchor_arch(space: Any) -> tuple:
    """A fixed architecture of the space, measured in every group to track drift."""
    return space.sample(np.random.default_rng(ANCHOR_SEED))


def check_output(path: str | os.PathLike) -> None:
    """Fail now, with the file's name, if `path` cannot hold a profile."""
    path = Path(path)
    read_state(path, "", "")
    f, _ = open_for_append(path)
    f.close()


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
    space_spec = space.spec
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
    f, writer = open_for_append(path)
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
            names, results = names[len(anchor) :], results[len(anchor) :]
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            for name, m in zip(names, results):
                row = {
                    "space": space_spec,
                    "arch": name,
                    "device": device.spec,
                    "latency_ms": round(m.latency_ms * scale, 5),
                    "raw_ms": round(m.latency_ms, 5),
                    "spread_ms": round(m.p90_ms - m.p10_ms, 5),
                    "median_ms": round(m.median_ms, 5),
                    "p10_ms": round(m.p10_ms, 5),
                    "p90_ms": round(m.p90_ms, 5),
                    "cv": round(m.cv, 5),
                    "repeats": m.repeats,
                    "rounds": m.rounds,
                    "outliers": m.outliers,
                    "anchor_ms": rounded(anchor_ms),
                    "anchor_ref_ms": rounded(anchor_ref_ms),
                    "group": state.groups + g,
                    "timestamp": stamp,
                    **fp,
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


def measure_archs(
    space: Any, device: Device, archs: Sequence[tuple], path: Path, progress: Callable[[int, int], None] | None = None
) -> dict[str, float]:
    """Measured latency of each arch (resumable CSV); returns arch string -> latency_ms.

    A run keeps every device measurement in one file, so each group's anchor rescales it to the
    first group's machine state: the calibration, the budget and the verification agree even when
    the machine runs 20% faster or slower from one minute to the next (seen on shared CPUs)."""
    profile(space, device, archs, path, progress=progress)
    return read_latencies(path)
