"""Devices: how long a model takes. Imports nothing else of hwnas."""
from __future__ import annotations

from devices.base import Device, Measurement
from devices.registry import get, names, parse_spec, register, with_option
from devices.timing import Runner, TimingPolicy, interleave

# Importing the backends registers them.
from devices import ort_backend, remote, table, tensorrt_backend, torch_backend  # noqa: E402,F401

__all__ = ["Device", "Measurement", "Runner", "TimingPolicy", "get", "interleave", "names", "parse_spec", "register"]
