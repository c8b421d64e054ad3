"""Latency predictors: features in, milliseconds out; few-shot adaptation. Imports nothing else of hwnas."""

from __future__ import annotations

from predictors import graph, help, linear, neural  # noqa: F401  (registers the predictors)
from predictors.base import Predictor, load, read_meta
from predictors.reference import select_references
from predictors.registry import create, get, names, register

__all__ = ["Predictor", "create", "get", "load", "names", "read_meta", "register", "select_references"]
