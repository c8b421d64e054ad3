"""What a measurement was taken on: CPU, cores, int8 features, OS and library versions."""

from __future__ import annotations

import functools
import os
import platform
from importlib import metadata
from typing import Any

INT8_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "amx_bf16", "asimddp", "i8mm")


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return ""


def _cpuinfo() -> tuple[str, set[str]]:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key in ("model name", "hardware", "cpu model") and value.strip():
                    model = value.strip()
                elif key in ("flags", "features"):
                    flags.update(value.split())
    except OSError:
        pass
    return model, flags


@functools.lru_cache(maxsize=1)
def host_fingerprint() -> dict[str, Any]:
    """Host facts that do not depend on the backend (cached: they do not change in a process)."""
    import psutil

    model, flags = _cpuinfo()
    return {
        "cpu_model": model,
        "cpu_cores": psutil.cpu_count(logical=False) or os.cpu_count() or 0,
        "cpu_threads": os.cpu_count() or 0,
        "cpu_int8": "+".join(f for f in INT8_FLAGS if f in flags),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "torch": _version("torch"),
        "onnxruntime": _version("onnxruntime") or _version("onnxruntime-gpu"),
        "hwnas": _version("hwnas"),
    }
