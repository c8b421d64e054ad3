"""Name -> search-space factory, the way timm finds models by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import yaml


class UnknownNameError(KeyError, ValueError):
    """An unknown name: a KeyError for lookups, and a ValueError, the kind of error bad user input raises."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


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
        raise UnknownNameError(f"Unknown search space {name!r}; known: {', '.join(names())}")
    return _REGISTRY[name](**options)


def get(name: str, **options: Any) -> Any:
    """Alias of `create`, as DESIGN.md spells it."""
    return create(name, **options)


def parse_space_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """'ofa_mbv3:resolutions=[160],num_classes=10' -> ('ofa_mbv3', {'resolutions': [160], 'num_classes': 10})."""
    name, _, rest = spec.strip().partition(":")
    options: dict[str, Any] = {}
    depth, part, parts = 0, "", []
    for ch in rest:  # split on commas outside brackets
        depth += ch in "[("
        depth -= ch in "])"
        if ch == "," and depth == 0:
            parts.append(part)
            part = ""
        else:
            part += ch
    parts.append(part)
    for p in filter(None, (p.strip() for p in parts)):
        key, eq, value = p.partition("=")
        if not eq:
            raise ValueError(f"space {spec!r}: option {p!r} must be key=value")
        try:
            options[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ValueError(f"space {spec!r}: option {p!r} has a value that is not valid YAML") from None
    return name, options


def load_space(spec: str) -> Any:
    """The search space a spec names, with its options (its `spec` is the string); errors name the spec."""
    name, options = parse_space_spec(spec)
    if name not in _REGISTRY:
        raise UnknownNameError(f"Unknown search space {name!r}; known: {', '.join(names())}")
    try:
        return _REGISTRY[name](**options, spec=spec.strip())
    except TypeError as err:
        raise ValueError(f"space {spec!r}: {err}") from None
