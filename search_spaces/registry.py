"""Name -> search-space factory, the way timm finds models by name."""
from __future__ import annotations

from typing import Any, Callable

_REGISTRY: dict[str, Callable[..., Any]] = {}


def register(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Class decorator: make a search space constructible by `name`."""

    def wrap(factory: Callable[..., Any]) -> Callable[..., Any]:
        if name in _REGISTRY:
            raise ValueError(f"search space {name!r} is registered twice")
        _REGISTRY[name] = factory
        factory.name = name
        return factory

    return wrap


def names() -> list[str]:
    return sorted(_REGISTRY)


def create(name: str, **options: Any) -> Any:
    """Construct the search space `name` with `options` (e.g. resolutions, num_classes)."""
    if name not in _REGISTRY:
        raise KeyError(f"Unknown search space {name!r}; known: {', '.join(names())}")
    return _REGISTRY[name](**options)


def get(name: str, **options: Any) -> Any:
    """Alias of `create`, as DESIGN.md spells it."""
    return create(name, **options)
