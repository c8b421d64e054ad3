"""Predictors by name."""
from __future__ import annotations

from typing import Any, Callable

_REGISTRY: dict[str, type] = {}


def register(name: str) -> Callable[[type], type]:
    def wrap(cls: type) -> type:
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def names() -> list[str]:
    return sorted(_REGISTRY)


def create(name: str, **params: Any) -> Any:
    if name not in _REGISTRY:
        raise KeyError(f"Unknown predictor {name!r}; known: {', '.join(names())}")
    return _REGISTRY[name](**params)


get = create
