"""The latency-table format, written once: the columns of a profile CSV (what `hwnas profile` and a run's
measured.csv hold, one row per architecture and device), the one writer of its rows, and every reader of
latency files: a profile's state for resuming, measured latencies by device, calibration measurements, and
HELP's wide tables (one column per device) merged with profiles into one architectures x devices table."""

from __future__ import annotations

import contextlib
import csv
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nas.rundir import drop_partial_line, lock_exclusive, write_text_atomic

FINGERPRINT_COLUMNS = (
    "cpu_model",
    "cpu_cores",
    "cpu_threads",
    "cpu_int8",
    "os",
    "python",
    "torch",
    "onnxruntime",
    "hwnas",
    "threads",
    "gpu",
    "cuda",
    "tensorrt",
)
COLUMNS = (
    "space",
    "arch",
    "device",
    "latency_ms",
    "raw_ms",
    "spread_ms",
    "median_ms",
    "p10_ms",
    "p90_ms",
    "cv",
    "repeats",
    "rounds",
    "outliers",
    "load",
    "noisy",
    "anchor_ms",
    "anchor_ref_ms",
    "group",
    "timestamp",
) + FINGERPRINT_COLUMNS

# profiles written before the noise flag: read as they are, upgraded in place before rows are appended
LEGACY_COLUMNS = tuple(c for c in COLUMNS if c not in ("load", "noisy"))

# no model's latency is this long (about three hours): a larger figure is a unit or parsing mistake
MAX_LATENCY_MS = 1e7

# a hybrid_lm run's measured.csv: one decode step per architecture, at the recipe's context and batch
DECODE_COLUMNS = ("arch", "latency_ms", "context", "batch", "device")

# HELP's query architectures (by the release index): its protocol scores predictors on these rows only,
# so bases are meta-trained on the rows below them
QUERY_RANGE = {"nasbench201": (900, 1900), "fbnet": (4000, 5000), "ofa_mbv3": (4000, 5000)}


@dataclass
class LatencyTable:
    """Y[i, j] is the latency of archs[i] on devices[j] (NaN where not measured)."""

    archs: list[str]
    devices: list[str]
    Y: np.ndarray
    index: np.ndarray  # the HELP release index of each arch, -1 where it has none
    sources: dict[str, str] = field(default_factory=dict)  # device -> the table it was read from (its first)

    def column(self, device: str) -> np.ndarray:
        if device not in self.devices:
            raise ValueError(f"Unknown device {device!r}; the tables have: {', '.join(self.devices)}")
        return self.Y[:, self.devices.index(device)]


# a latency table or profile larger than this is not one (the public tables are a few MB)
MAX_TABLE_BYTES = 1 << 30


def check_readable(path: str | Path, what: str, limit: int = MAX_TABLE_BYTES) -> None:
    """A regular file of at most `limit` bytes (a FIFO, a device such as /dev/zero or a huge file is refused before
    it is opened: reading it would hang or exhaust memory); a missing file is left to the reader to name."""
    import stat

    try:
        info = os.stat(path)
    except OSError:
        return
    if not stat.S_ISREG(info.st_mode):
        kind = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
        raise ValueError(f"{what} {str(path)!r} is {kind}")
    if info.st_size > limit:
        raise ValueError(
            f"{what} {str(path)!r} is {info.st_size >> 20} MiB, over the {limit >> 20} MiB a {what} may be"
        )


def _read(path: str | Path) -> pd.DataFrame:
    check_readable(path, "latency table")
    try:
        return pd.read_csv(path)
    except FileNotFoundError:
        raise ValueError(f"latency table {str(path)!r} does not exist") from None
    except Exception as err:
        raise ValueError(f"cannot read latency table {str(path)!r}: {err}") from None


def read_tables(space: Any, paths: Sequence[str | Path]) -> LatencyTable:
    """Wide tables (arch + one column per device, HELP's) and long ones (`hwnas profile` CSVs)."""
    frames, sources = [], {}
    for path in paths:
        df = _read(path)
        if "arch" not in df.columns:
            raise ValueError(f"latency table {str(path)!r} has no 'arch' column")
        try:
            canon = [space.to_str(space.from_str(s)) for s in df["arch"]]
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None
        df = df.assign(arch=canon)
        df = df[~superseded(df)]
        if {"device", "latency_ms"} <= set(df.columns):
            wide = df.pivot_table(index="arch", columns="device", values="latency_ms", aggfunc="mean")
            wide["index"] = -1
        else:
            devs = [c for c in df.columns if c not in ("index", "arch")]
            if "index" not in df.columns:
                df["index"] = -1
            wide = df.groupby("arch").agg({**{d: "mean" for d in devs}, "index": "min"})
        frames.append(wide)
        for device in wide.columns.drop("index"):
            sources.setdefault(str(device), str(path))
    merged = pd.concat(frames, axis=1)
    index = merged["index"].max(axis=1) if isinstance(merged["index"], pd.DataFrame) else merged["index"]
    merged = merged.drop(columns="index")
    merged = merged.T.groupby(level=0, sort=False).mean().T  # the same device in two tables: one column
    Y = merged.to_numpy(np.float64)
    if np.any(Y[~np.isnan(Y)] <= 0):
        raise ValueError(f"latency tables {', '.join(map(str, paths))} hold non-positive latencies")
    return LatencyTable(
        list(merged.index), [str(c) for c in merged.columns], Y, index.fillna(-1).astype(int).to_numpy(), sources
    )


def noisy_mask(df: pd.DataFrame) -> np.ndarray:
    """The rows flagged noisy (none where the table has no `noisy` column)."""
    if "noisy" not in df.columns:
        return np.zeros(len(df), bool)
    return pd.to_numeric(df["noisy"], errors="coerce").fillna(0).to_numpy() > 0


def superseded(df: pd.DataFrame) -> np.ndarray:
    """Rows flagged noisy that a later row of the same architecture and device measured again."""
    keys = [c for c in ("space", "arch", "device") if c in df.columns]
    return noisy_mask(df) & df.duplicated(subset=keys, keep="last").to_numpy()


def spread(p10_ms: float, p90_ms: float, median_ms: float) -> float:
    """A measurement's robust spread: (p90 - p10) / median (unlike the coefficient of variation, a few slow runs
    barely move it)."""
    return (p90_ms - p10_ms) / median_ms if median_ms > 0 else float("nan")


# the quantile of a device's anchor readings taken as its quiet level (timings run slow under load, never fast)
ANCHOR_QUANTILE = 10


def anchor_level(readings: Sequence[float]) -> float | None:
    """The drift anchor's latency on a quiet machine, from every reading of it on one device (None without any):
    a low quantile, so neither a cold first group nor a busy one sets the scale."""
    values = [float(v) for v in readings if v == v and v]
    return float(np.percentile(values, ANCHOR_QUANTILE, method="lower")) if values else None


@dataclass
class ProfileState:
    """What an existing profile file holds for one (space, device) pair."""

    done: set[str]
    anchor_ref_ms: float | None
    groups: int
    noisy: set[str] = field(default_factory=set)  # architectures whose latest row is flagged noisy
    spreads: list[float] = field(default_factory=list)  # the robust spread of every clean row: the device's usual
    fingerprint: dict[str, str] = field(default_factory=dict)  # of the first row
    anchors: dict[int, float] = field(default_factory=dict)  # group -> its anchor reading


def read_state(path: Path, space_spec: str, device_spec: str) -> ProfileState:
    """What a profile file holds for (space, device); a last row cut short is dropped first, and a profile written
    before the noise flag gets its columns."""
    state = ProfileState(set(), None, 0)
    if not check_profile(path):
        return state
    try:
        with path.open(newline="", encoding="utf-8") as f:
            for line, row in enumerate(csv.DictReader(f), start=2):
                if row["space"] != space_spec or row["device"] != device_spec:
                    continue
                try:
                    _add(state, row)
                except (TypeError, ValueError) as err:
                    raise ValueError(f"{path}:{line}: not a profile row ({err}); remove the line") from None
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise ValueError(f"cannot read profile file {path}: {err}") from None
    return state


def check_profile(path: Path) -> bool:
    """Whether `path` holds a profile (False: no file yet, or an empty one); a last row cut short is dropped, a
    profile written before the noise flag gets its columns, and any other file is refused."""
    if not path.exists() or path.stat().st_size == 0:
        return False
    if not path.is_file():
        what = "Is a directory" if path.is_dir() else "not a regular file"
        raise ValueError(f"cannot write profile file {path}: {what}; choose another --out")
    try:  # what the file is, before anything touches it: a file the command refuses is never changed
        with path.open(newline="", encoding="utf-8") as f:
            header = tuple(next(csv.reader([f.readline()]), []))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise ValueError(f"cannot read profile file {path}: {err}") from None
    if header not in (LEGACY_COLUMNS, COLUMNS):
        raise ValueError(
            f"{path} exists but is not an hwnas profile (its columns are {list(header)[:8]}); "
            "choose another --out or remove it"
        )
    drop_partial_line(path)
    if header == LEGACY_COLUMNS:
        _upgrade(path)
    return True


def _add(state: ProfileState, row: dict[str, str]) -> None:
    arch = row["arch"]
    state.done.add(arch)
    if row["anchor_ms"]:
        state.anchors[int(row["group"])] = float(row["anchor_ms"])
        state.anchor_ref_ms = anchor_level(list(state.anchors.values()))
    state.groups = max(state.groups, int(row["group"]) + 1)
    if not state.fingerprint:
        state.fingerprint = {k: row[k] for k in FINGERPRINT_COLUMNS}
    if row["noisy"] in ("1", "True", "true"):
        state.noisy.add(arch)
    else:
        state.noisy.discard(arch)
        state.spreads.append(spread(float(row["p10_ms"]), float(row["p90_ms"]), float(row["median_ms"])))


def _upgrade(path: Path) -> None:
    """Rewrite a profile written before the noise flag with today's columns (its rows as they were, not noisy)."""
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    df["noisy"], df["load"] = "0", ""
    write_text_atomic(path, df[list(COLUMNS)].to_csv(index=False))


def append_decode_rows(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Append decode measurements (`DECODE_COLUMNS`) to a hybrid_lm run's measured.csv, synced to disk."""
    f, writer = open_for_append(path, DECODE_COLUMNS)
    with f:
        writer.writerows(rows)
        f.flush()
        os.fsync(f.fileno())


def read_rows(path: Path, **match: Any) -> pd.DataFrame:
    """The rows of a latency file whose columns equal `match` (device=..., space=...), the latest row of each
    architecture only (empty when the file does not exist yet); a last row cut short is dropped first."""
    if not path.exists():
        return pd.DataFrame(columns=["arch", "latency_ms"])
    drop_partial_line(path)
    df = pd.read_csv(path, dtype={"arch": str, "device": str, "space": str})
    for column, value in match.items():
        if column not in df.columns:
            raise ValueError(f"{path} has no column {column!r} (it has {', '.join(map(str, df.columns))})")
        df = df[df[column].astype(str) == str(value)]
    return df.drop_duplicates("arch", keep="last")


def read_latencies(path: Path, **match: Any) -> dict[str, float]:
    """arch -> latency_ms of the rows of a latency file whose columns equal `match` (see `read_rows`)."""
    df = read_rows(path, **match)
    return dict(zip(df["arch"].astype(str), df["latency_ms"].astype(float)))


def rounded(value: float | None) -> float | str:
    return "" if value is None else round(value, 5)


def open_for_append(path: Path, columns: Sequence[str] = COLUMNS, waiting: Callable[[], None] | None = None) -> Any:
    """A latency file open for appending rows of `columns` (a profile's by default), locked against other
    processes until it is closed, with its header when new and a cut last row dropped."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        f = path.open("a", newline="", encoding="utf-8")
    except OSError as err:
        raise ValueError(f"cannot write profile file {path}: {err.strerror}") from None
    lock_exclusive(f, waiting)
    try:
        drop_partial_line(path)
        f.seek(0, os.SEEK_END)
        writer = csv.DictWriter(f, fieldnames=columns)
        if f.tell() == 0:
            writer.writeheader()
            f.flush()
    except OSError as err:
        with contextlib.suppress(OSError):
            f.close()
        raise ValueError(f"cannot write profile file {path}: {err.strerror}") from None
    return f, writer


def read_measurements(
    space: Any, path: str, device: str | None = None, accept_noisy: bool = False
) -> tuple[list[tuple], np.ndarray, dict[str, Any]]:
    """(archs, latencies, fingerprint) from a CSV with columns arch, latency_ms (extra columns allowed); rows
    flagged noisy are refused unless `accept_noisy`."""
    check_readable(path, "measurements file")
    try:
        # blank lines kept as empty rows, then dropped: the index stays the file's line number - 2
        df = pd.read_csv(path, skip_blank_lines=False).dropna(how="all")
    except FileNotFoundError:
        raise ValueError(f"measurements file {path!r} does not exist") from None
    except Exception as err:
        raise ValueError(f"cannot read measurements file {path!r}: {err}") from None
    missing = {"arch", "latency_ms"} - set(df.columns)
    if missing:
        raise ValueError(f"measurements file {path!r} lacks the column(s) {', '.join(sorted(missing))}")
    if df.empty:
        raise ValueError(f"measurements file {path!r} has a header but no rows")
    df = df[~superseded(df)]
    if "device" in df.columns:
        found = sorted(df["device"].astype(str).unique())
        if device is not None:
            df = df[df["device"] == device]
            if df.empty:
                raise ValueError(
                    f"measurements file {path!r} has no rows of device {device!r}; it has {', '.join(found)}"
                )
        elif len(found) > 1:
            raise ValueError(
                f"measurements file {path!r} holds {len(found)} devices ({', '.join(found)}); choose one with --device"
            )
    noisy = noisy_mask(df)
    if noisy.any() and not accept_noisy:
        lines = ", ".join(str(i + 2) for i in df.index[noisy][:5]) + (", ..." if noisy.sum() > 5 else "")
        raise ValueError(
            f"{path}: {int(noisy.sum())} of {len(df)} rows are flagged noisy (lines {lines}: their timings spread "
            "far beyond the device's usual, or other processes held the CPUs; the machine was likely busy with "
            "other work); measure them again with hwnas profile (same --out) on a quiet machine, or pass "
            "--accept-noisy"
        )
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
    bad = np.where(~((y > 0) & (y < MAX_LATENCY_MS)))[0]
    if len(bad):
        raise ValueError(
            f"{path}:{int(df.index[bad[0]]) + 2}: latency_ms must be a positive number, got "
            f"{df['latency_ms'].astype(str).iloc[bad[0]]!r} (`0 < latency_ms < {MAX_LATENCY_MS:g}` must hold)"
        )
    fp = {c: df[c].iloc[0] for c in ("device",) + FINGERPRINT_COLUMNS if c in df.columns}
    return archs, y, {k: (v.item() if hasattr(v, "item") else v) for k, v in fp.items()}
