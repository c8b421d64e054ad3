"""Profiling: measure many architectures on a device, interleaved in groups with a drift anchor.

Rows are appended to a CSV as each group finishes; started again with the same arguments, a
profile measures only what the file does not hold yet.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from devices import Device, TimingPolicy
from nas.latency.tables import (
    FINGERPRINT_COLUMNS,
    ProfileState,
    anchor_level,
    check_profile,
    noisy_mask,
    open_for_append,
    read_rows,
    read_state,
    rounded,
    spread,
)
from nas.progress import Log

ANCHOR_SEED = 20211206


def anchor_arch(space: Any) -> tuple:
    """A fixed architecture of the space, measured in every group to track drift."""
    return space.sample(np.random.default_rng(ANCHOR_SEED))


def check_output(path: str | os.PathLike) -> None:
    """Fail now, with the file's name, if `path` cannot hold a profile."""
    path = Path(path)
    check_profile(path)
    f, _ = open_for_append(path)
    f.close()


# a row is noisy when its robust spread is this many times the device's usual (the median over its clean rows)
SPREAD_FACTOR = 3.0
# rows of the device needed before its usual spread is known; until then only CPU contention flags a row
MIN_USUAL = 10
# the fingerprint fields that make measurements comparable: rows that differ in one of them do not mix
KEY_FIELDS = ("cpu_model", "cpu_cores", "cpu_threads", "torch", "onnxruntime", "threads", "gpu", "cuda", "tensorrt")


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def check_fingerprint(path: Path, device: Device, recorded: dict[str, str], fingerprint: dict[str, Any]) -> None:
    """Refuse to add rows to a file whose rows of the same device spec were measured on another machine or
    software stack."""
    for key in KEY_FIELDS:
        if recorded.get(key, "") != _text(fingerprint.get(key, "")):
            raise ValueError(
                f"{path} holds rows of {device.spec} measured with {key}={recorded.get(key, '')!r}, but this "
                f"{device.spec} has {key}={_text(fingerprint.get(key, ''))!r}: timings of two machines or software "
                "stacks do not mix; choose another output (--out, or a new run directory) or remove those rows"
            )


def profile(
    space: Any,
    device: Device,
    archs: Sequence[tuple],
    out: str | os.PathLike,
    group_size: int = 10,
    policy: TimingPolicy | None = None,
    anchor_ref_ms: float | None = None,
    progress: Callable[[int, int], None] | None = None,
    retries: int = 2,
    log: Log | None = None,
) -> list[dict[str, Any]]:
    """Measure every arch not yet in `out`, and those whose row there is flagged noisy; returns the rows written.

    `latency_ms` is the raw latency rescaled by anchor_ref_ms / anchor_ms, so rows measured in other groups,
    sessions or days compare; `raw_ms` keeps what was measured. The reference is the anchor's quiet level
    (`tables.anchor_level` of every reading of it in the file so far, after a warm-up reading that is not kept)
    unless `anchor_ref_ms` is given: a group slower than the quietest one is scaled down to it, and a cold first
    reading no longer sets the scale of every later row. Rows, once written, never change.

    A row is flagged `noisy` when other processes
    wanted the cores a CPU device needs while it was measured, or when its robust spread is `SPREAD_FACTOR` times
    the device's usual; noisy architectures are measured again up to `retries` times (every row stays in the file,
    the latest one counts)."""
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, but got {group_size}")
    if retries < 0:
        raise ValueError(f"`retries >= 0` must hold, but got retries={retries}")
    path = Path(out)
    log = log or (lambda message: print(message, file=sys.stderr))
    device.set_key(lambda s: space.to_str(space.from_str(s)))
    check_profile(path)  # before the lock: upgrading an old profile replaces the file
    f, writer = open_for_append(path, waiting=lambda: log(f"waiting for another process writing {path}"))
    try:
        rows = _measure(
            space, device, archs, path, f, writer, group_size, policy, anchor_ref_ms, progress, retries, log
        )
        f.close()
        return rows
    except OSError as err:  # a full disk: the rows synced so far stay, a row cut short is dropped on resume
        reason = err.strerror or err
        raise ValueError(f"cannot write profile file {path}: {reason}; its complete rows are kept") from None
    finally:
        with contextlib.suppress(OSError):
            f.close()


def _measure(
    space: Any,
    device: Device,
    archs: Sequence[tuple],
    path: Path,
    f: Any,
    writer: Any,
    group_size: int,
    policy: TimingPolicy | None,
    anchor_ref_ms: float | None,
    progress: Callable[[int, int], None] | None,
    retries: int,
    log: Log,
) -> list[dict[str, Any]]:
    """`profile`'s work, with the file open and locked (what it holds is read under the lock)."""
    space_spec = space.spec
    state = read_state(path, space_spec, device.spec)
    fixed_ref = anchor_ref_ms
    anchors = list(state.anchors.values())
    todo = _pending(space, archs, state)
    if progress:
        progress(0, len(todo))
    if not todo and not state.fingerprint:
        return []
    fingerprint = device.fingerprint()
    if state.fingerprint:
        check_fingerprint(path, device, state.fingerprint, fingerprint)
    if not todo:
        return []
    fp = {k: fingerprint.get(k, "") for k in FINGERPRINT_COLUMNS}
    anchor = [anchor_arch(space)] if device.drifts else []
    written: list[dict[str, Any]] = []
    spreads = list(state.spreads)
    group = state.groups
    total = len(todo)
    if anchor:
        _warm_up(space, device, anchor[0], policy)
    for attempt in range(retries + 1):
        noisy: list[tuple] = []
        for start in range(0, len(todo), group_size):
            members = todo[start : start + group_size]
            names = [space.to_str(a) for a in anchor + members]
            models, shapes = map(list, zip(*(space.latency_model(a) for a in anchor + members)))
            results = device.measure_many(models, shapes, names, policy=policy, anchor=0 if anchor else None)
            anchor_ms = results[0].latency_ms if anchor else None
            if anchor_ms is not None:
                anchors.append(anchor_ms)
            anchor_ref_ms = fixed_ref if fixed_ref is not None else anchor_level(anchors)
            scale = anchor_ref_ms / anchor_ms if anchor else 1.0
            usual = float(np.median(spreads)) if len(spreads) >= MIN_USUAL else None
            columns = {
                "space": space_spec,
                "device": device.spec,
                "anchor_ms": rounded(anchor_ms),
                "anchor_ref_ms": rounded(anchor_ref_ms),
                "group": group,
                "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            rows, flagged, quiet = _group_rows(
                members, names[len(anchor) :], results[len(anchor) :], scale, usual, fp, columns
            )
            for row in rows:  # one writerow each: tests/nas/test_kills.py kills the process inside one
                writer.writerow(row)
            written += rows
            spreads += quiet
            f.flush()
            os.fsync(f.fileno())
            group += 1
            if flagged:
                noisy += [a for a, _ in flagged]
                log(_noise_message(device, group - 1, flagged, len(members), usual, results[-1], attempt, retries))
            if progress:
                progress(min(len(written), total), total)
        if not noisy:
            break
        todo = noisy
    return written


def _group_rows(
    members: Sequence[tuple],
    names: Sequence[str],
    results: Sequence[Any],
    scale: float,
    usual: float | None,
    fp: dict[str, str],
    columns: dict[str, Any],
) -> tuple[list[dict[str, Any]], list[tuple[tuple, float]], list[float]]:
    """A measured group's rows (each member's `_row`, its arch after the space, then the `columns` the group
    shares), the members flagged noisy with their spreads, and the spreads of the quiet ones."""
    rows, flagged, quiet = [], [], []
    for arch, name, m in zip(members, names, results):
        rs = spread(m.p10_ms, m.p90_ms, m.median_ms)
        is_noisy = m.contended or (usual is not None and rs > SPREAD_FACTOR * usual)
        rows.append(_row(m, scale, is_noisy, fp) | {"space": columns["space"], "arch": name} | columns)
        if is_noisy:
            flagged.append((arch, rs))
        else:
            quiet.append(rs)
    return rows, flagged, quiet


def _pending(space: Any, archs: Sequence[tuple], state: ProfileState) -> list[tuple]:
    """What is left to measure, once each: the architectures the file has no row of, or only noisy rows."""
    todo: list[tuple] = []
    seen: set[str] = set()
    for arch in archs:
        s = space.to_str(arch)
        if s not in seen and (s not in state.done or s in state.noisy):
            todo.append(arch)
        seen.add(s)
    return todo


def _warm_up(space: Any, device: Device, anchor: tuple, policy: TimingPolicy | None) -> None:
    """Measure the anchor once in a group of its own, not kept: a cold first reading must not set the scale."""
    model, shape = space.latency_model(anchor)
    device.measure_many([model], [shape], [space.to_str(anchor)], policy=policy)


def _row(m: Any, scale: float, is_noisy: bool, fingerprint: dict[str, Any]) -> dict[str, Any]:
    """A measurement's columns of a profile row (the caller adds what it was and where)."""
    return {
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
        "load": "" if np.isnan(m.load) else round(m.load, 2),
        "noisy": int(is_noisy),
        **fingerprint,
    }


def _noise_message(
    device: Device, group: int, flagged: list, size: int, usual: float | None, m: Any, attempt: int, retries: int
) -> str:
    why = []
    if m.contended:
        why.append(f"other processes used {m.load:.1f} of {os.cpu_count()} cores")
    rs = float(np.median([r for _, r in flagged]))
    why.append(f"timings spread {rs:.2f}x their median" + (f", the device's usual is {usual:.2f}x" if usual else ""))
    then = f"measuring them again ({attempt + 1} of {retries})" if attempt < retries else "kept, flagged noisy"
    return (
        f"warning: {len(flagged)} of {size} architectures of group {group} measured noisy on {device.spec} "
        f"({'; '.join(why)}): the machine is likely busy with other work; {then}"
    )


def measure_archs(
    space: Any,
    device: Device,
    archs: Sequence[tuple],
    path: Path,
    progress: Callable[[int, int], None] | None = None,
    log: Log | None = None,
    retries: int = 2,
) -> dict[str, float]:
    """Measured latency of each arch (resumable CSV); returns arch string -> latency_ms.

    A run keeps every device measurement in one file, so each group's anchor rescales it to the
    device's quiet level: the calibration, the budget and the verification agree even when
    the machine runs 20% faster or slower from one minute to the next (seen on shared CPUs)."""
    profile(space, device, archs, path, progress=progress, log=log, retries=retries)
    rows = read_rows(path, space=space.spec, device=device.spec)  # the latest row of each architecture
    wanted = rows["arch"].isin({space.to_str(a) for a in archs}).to_numpy()
    noisy = rows[wanted & noisy_mask(rows)]["arch"]
    if len(noisy):
        raise ValueError(
            f"{path}: {len(noisy)} architectures stayed noisy on {device.spec} after {retries + 1} attempts (see the "
            "warnings above): other work is likely loading the machine; stop it and start again (only those are "
            "measured again)"
        )
    return dict(zip(rows["arch"].astype(str), rows["latency_ms"].astype(float)))
