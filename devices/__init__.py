"""Devices: how long a model takes. Imports nothing else of hwnas."""

from __future__ import annotations

# Importing the backends registers them.
from devices import ort_backend, remote, table, tensorrt_backend, torch_backend  # noqa: F401
from devices.base import Device, DeviceError, Measurement, UnknownNameError
from devices.registry import get, names, parse_spec, register, with_option
from devices.timing import Runner, TimingPolicy, interleave

__all__ = [
    "Device",
    "DeviceError",
    "Measurement",
    "UnknownNameError",
    "Runner",
    "TimingPolicy",
    "get",
    "interleave",
    "names",
    "parse_spec",
    "register",
    "with_option",
]
