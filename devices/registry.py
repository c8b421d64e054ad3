"""Device backends by name; `get(spec)` parses 'name:key=value,...' (or a table/remote spec)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from devices.base import UnknownNameError

_BACKENDS: dict[str, Any] = {}


def register(name: str) -> Callable[[type], type]:
    def wrap(cls: type) -> type:
        if name in _BACKENDS:
            raise ValueError(f"device backend {name!r} is registered twice")
        cls.name = name
        _BACKENDS[name] = cls
        return cls

    return wrap


def names() -> list[str]:
    return sorted(_BACKENDS)


def parse_spec(spec: str) -> tuple[str, str]:
    """'ort-cpu:threads=1' -> ('ort-cpu', 'threads=1')."""
    name, _, rest = spec.strip().partition(":")
    return name, rest


def parse_options(spec: str, text: str) -> dict[str, str]:
    options: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, eq, value = part.partition("=")
        if not eq:
            if key.isidentifier():  # a bare flag: 'tensorrt:fp16'
                key, value = key, "true"
            else:
                raise ValueError(f"device {spec!r}: option {part!r} must be key=value")
        options[key.strip()] = value.strip()
    return options


def get(spec: str) -> Any:
    """The device a spec string names, e.g. 'ort-cpu:threads=1,batch=1' or 'table:lat.csv:pixel3'."""
    name, rest = parse_spec(spec)
    if name not in _BACKENDS:
        raise UnknownNameError(f"Unknown device {name!r} in {spec!r}; known: {', '.join(names())}")
    cls = _BACKENDS[name]
    if hasattr(cls, "from_spec"):
        return cls.from_spec(spec, rest)
    return cls(spec, **parse_options(spec, rest))


def with_option(spec: str, key: str, value: str) -> str:
    """The spec with one option set, e.g. ('ort-cpu:threads=1', 'precision', 'int8') ->
    'ort-cpu:threads=1,precision=int8'; raises if the backend has no such option."""
    name, rest = parse_spec(spec)
    cls = _BACKENDS.get(name)
    if cls is None or key not in getattr(cls, "options", {}):
        having = ", ".join(n for n in names() if key in getattr(_BACKENDS[n], "options", {}))
        raise ValueError(f"device {spec!r} has no option {key!r}; backends with it: {having}")
    options = {**parse_options(spec, rest), key: value}
    return f"{name}:" + ",".join(f"{k}={v}" for k, v in options.items())
