"""Predictors by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class UnknownNameError(KeyError, ValueError):
    """An unknown name: a KeyError for lookups, and a ValueError, the kind of error bad user input raises."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


_REGISTRY: dict[str, type] = {}


def register(name: str) -> Callable[[type], type]:
    def wrap(cls: type) -> type:
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def names() -> list[str]:
    return sorted(_REGISTRY)


def predictor_class(name: str) -> type:
    if name not in _REGISTRY:
        raise UnknownNameError(f"Unknown predictor {name!r}; known: {', '.join(names())}")
    return _REGISTRY[name]


def create(name: str, **params: Any) -> Any:
    return predictor_class(name)(**params)


get = create
